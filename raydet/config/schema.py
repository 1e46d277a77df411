"""Every config key raydet knows, in one place.

mmdet 2.x's top-level keys (v2.25, older aliases included), the keys of each section, and raydet's
``ray`` section. Typed sub-configs (``model``, ``optimizer``, ``lr_config``, datasets, pipeline
steps, ``custom_hooks``) are checked against the signature of the class their ``type`` names.
An unknown key is a :class:`ConfigError` naming the dotted key and the closest valid name.
"""
from __future__ import annotations

from mmengine import Config

from ..errors import ConfigError
from ..registry import check_keys

#: mmdet 2.x top-level keys, plus raydet's ``ray`` section.
TOP_LEVEL = {
    "model", "data", "evaluation", "optimizer", "optimizer_config", "lr_config", "momentum_config",
    "runner", "total_epochs", "checkpoint_config", "log_config", "custom_hooks", "workflow",
    "dist_params", "log_level", "load_from", "resume_from", "auto_resume", "work_dir", "gpu_ids",
    "seed", "deterministic", "fp16", "find_unused_parameters", "cudnn_benchmark", "auto_scale_lr",
    "mp_start_method", "opencv_num_threads", "device", "train_cfg", "test_cfg", "ray", "custom_imports",
}
#: Helper variables that mmdet configs define at top level and reference elsewhere.
HELPERS = {
    "dataset_type", "data_root", "img_norm_cfg", "train_pipeline", "test_pipeline", "val_pipeline",
    "classes", "img_scale", "norm_cfg", "file_client_args", "albu_train_transforms",
}
SECTIONS = {
    "data": {"samples_per_gpu", "workers_per_gpu", "imgs_per_gpu", "persistent_workers",
             "pin_memory", "train", "val", "test", "train_dataloader", "val_dataloader",
             "test_dataloader"},
    "runner": {"type", "max_epochs", "max_iters"},
    "checkpoint_config": {"interval", "by_epoch", "save_optimizer", "out_dir", "max_keep_ckpts",
                          "save_last", "meta", "create_symlink"},
    "log_config": {"interval", "hooks"},
    "evaluation": {"interval", "start", "by_epoch", "metric", "save_best", "rule", "classwise",
                   "gpu_collect", "tmpdir", "greater_keys", "less_keys"},
    "optimizer_config": {"type", "grad_clip", "loss_scale", "distributed", "coalesce", "bucket_size_mb"},
    "fp16": {"loss_scale", "dtype", "max_consecutive_nonfinite"},
    "auto_scale_lr": {"enable", "base_batch_size"},
    "dist_params": {"backend", "port"},
    "ray": {"num_workers", "use_gpu", "resources_per_worker", "max_failures", "num_to_keep",
            "checkpoint_upload_mode", "address", "storage_path", "elastic_resize_monitor_interval_s",
            "max_preemption_failures", "preemption_check_interval"},
}
#: mmcv 1.x's optimizer hook types (``optimizer_config.type``) raydet honours
#: (see :func:`raydet.apis.train.optimizer_hook_config`).
OPTIMIZER_HOOKS = ("OptimizerHook", "Fp16OptimizerHook", "DistOptimizerHook")
DATALOADER_KEYS = {"samples_per_gpu", "workers_per_gpu", "persistent_workers", "pin_memory",
                   "shuffle"}
GRAD_CLIP_KEYS = {"max_norm", "norm_type"}
LOGGER_TYPES = {"TextLoggerHook": {"interval", "by_epoch", "ignore_last", "reset_flag"},
                "TensorboardLoggerHook": {"interval", "log_dir", "by_epoch", "ignore_last",
                                          "reset_flag"}}


def normalize_config(cfg: Config) -> Config:
    """Fold old aliases into their v2.25 form, in place.

    ``total_epochs`` and ``runner.max_epochs`` must agree when both are given; the result always
    has ``runner = dict(type='EpochBasedRunner', max_epochs=N)``. ``workflow`` becomes a list of
    ``(phase, epochs)`` tuples.
    """
    runner = cfg.get("runner")
    total = cfg.get("total_epochs")
    if runner is None:
        if total is None:
            raise ConfigError("config sets neither 'runner.max_epochs' nor 'total_epochs'")
        cfg.runner = dict(type="EpochBasedRunner", max_epochs=int(total))
    else:
        runner.setdefault("type", "EpochBasedRunner")
        if runner.get("type") != "EpochBasedRunner":
            raise ConfigError(f"runner.type='{runner['type']}' is not supported; raydet's runner is "
                              "EpochBasedRunner (set runner.max_epochs)")
        if "max_iters" in runner:
            raise ConfigError("runner.max_iters belongs to IterBasedRunner; use runner.max_epochs")
        if "max_epochs" not in runner:
            if total is None:
                raise ConfigError("runner.max_epochs is missing")
            runner.max_epochs = int(total)
        elif total is not None and int(total) != int(runner.max_epochs):
            raise ConfigError(f"total_epochs={total} and runner.max_epochs={runner.max_epochs} "
                              "disagree; set one of them")
    if "total_epochs" in cfg:
        cfg.pop("total_epochs")
    cfg.workflow = [tuple(w) for w in cfg.get("workflow", [("train", 1)])]
    return cfg


def _check_dataset(ds, where: str, datasets, pipelines) -> None:
    """A dataset config, a list of them, or a wrapper (``RepeatDataset``, ``ConcatDataset``,
    ``ClassBalancedDataset``) around them, with every pipeline step."""
    from ..data.wrappers import WRAPPERS
    if isinstance(ds, (list, tuple)):
        for i, one in enumerate(ds):
            _check_dataset(one, f"{where}.{i}", datasets, pipelines)
        return
    if not isinstance(ds, dict):
        raise ConfigError(f"{where} must be a dataset dict, got {type(ds).__name__}")
    field = WRAPPERS.get(ds.get("type"))
    if field is not None:
        datasets.check(ds, where)
        needs = {"RepeatDataset": ("times",), "ClassBalancedDataset": ("oversample_thr",)}.get(ds["type"], ())
        for key in (field, *needs):
            if key not in ds:
                raise ConfigError(f"{where}: {ds['type']} needs '{key}'")
        _check_dataset(ds[field], f"{where}.{field}", datasets, pipelines)
        return
    datasets.check({k: v for k, v in ds.items() if k != "separate_eval"}, where, skip=("seed",))
    for j, step in enumerate(ds.get("pipeline", [])):
        pipelines.check(step, f"{where}.pipeline.{j}")
        for k, sub in enumerate(step.get("transforms", [])):
            pipelines.check(sub, f"{where}.pipeline.{j}.transforms.{k}")


def validate_config(cfg, source: str | None = None) -> None:
    """Raise :class:`ConfigError` for the first unknown or ill-typed key of ``cfg``."""
    from ..data import DATASETS, PIPELINES
    from ..engine.hooks import HOOKS, LR_POLICIES, MOMENTUM_POLICIES
    from ..engine.optim import OPTIMIZERS
    from ..models import validate_model

    try:
        keys = [k for k in cfg.keys() if not k.startswith("_") and k not in HELPERS]
        check_keys(keys, TOP_LEVEL | HELPERS, "")
        for section, allowed in SECTIONS.items():
            value = cfg.get(section)
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"'{section}' must be a dict, got {type(value).__name__}")
            check_keys(value.keys(), allowed, section)
        for name, value in cfg.get("data", {}).items():
            if name.endswith("_dataloader"):
                check_keys(value.keys(), DATALOADER_KEYS, f"data.{name}")
            elif name in ("train", "val", "test"):
                _check_dataset(value, f"data.{name}", DATASETS, PIPELINES)
        if cfg.get("model") is not None:
            validate_model(cfg.model, cfg.get("train_cfg"), cfg.get("test_cfg"))
        if cfg.get("optimizer") is not None:
            OPTIMIZERS.check(cfg.optimizer, "optimizer", skip=("paramwise_cfg",))
            check_keys(cfg.optimizer.get("paramwise_cfg", {}).keys(),
                       {"bias_lr_mult", "bias_decay_mult", "norm_decay_mult", "custom_keys"},
                       "optimizer.paramwise_cfg")
        kind = (cfg.get("optimizer_config") or {}).get("type", "OptimizerHook")
        if kind not in OPTIMIZER_HOOKS:
            raise ConfigError(f"optimizer_config.type={kind!r} is not supported; supported: {', '.join(OPTIMIZER_HOOKS)}")
        clip = (cfg.get("optimizer_config") or {}).get("grad_clip")
        if clip:
            check_keys(clip.keys(), GRAD_CLIP_KEYS, "optimizer_config.grad_clip")
        for section, table in (("lr_config", LR_POLICIES), ("momentum_config", MOMENTUM_POLICIES)):
            if cfg.get(section):
                sub = dict(cfg[section])
                policy = sub.pop("policy", None)
                if policy is None:
                    raise ConfigError(f"{section}.policy is missing; known: {', '.join(table.names())}")
                table.check(dict(type=policy, **sub), section)
        for i, hook in enumerate((cfg.get("log_config") or {}).get("hooks", [])):
            htype = hook.get("type")
            check_keys([htype], LOGGER_TYPES, f"log_config.hooks.{i}.type")
            check_keys([k for k in hook if k != "type"], LOGGER_TYPES[htype], f"log_config.hooks.{i}")
        for i, hook in enumerate(cfg.get("custom_hooks") or []):
            HOOKS.check(hook, f"custom_hooks.{i}", skip=("priority",))
        if cfg.get("fp16") is not None:
            from ..engine.precision import Precision
            Precision(cfg.fp16)  # raises ConfigError for a bad dtype, loss_scale or patience
        for phase, _ in cfg.get("workflow", []):
            if phase not in ("train", "val"):
                raise ConfigError(f"workflow phase '{phase}' must be 'train' or 'val'")
    except ConfigError as exc:
        if source:
            raise ConfigError(f"{source}: {exc}") from None
        raise
