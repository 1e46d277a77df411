"""Every config key raydet knows, in one place.

mmdet 2.x's top-level keys (v2.25, older aliases included), the keys of each section, and raydet's
``ray`` section. Typed sub-configs (``model``, ``optimizer``, ``lr_config``, datasets, pipeline
steps, ``custom_hooks``) are checked against the signature of the class their ``type`` names.
An unknown key is a :class:`ConfigError` naming the dotted key and the closest valid name.
"""
from __future__ import annotations

from mmcv import Config

from ..errors import ConfigError
from ..registry import check_keys, suggest

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
#: ``evaluation`` keys that go to the val dataset's ``evaluate`` (mmdet's ``EvalHook`` passes them on)
EVALUATE_KEYS = ("classwise", "iou_thr", "iou_thrs", "proposal_nums", "metric_items", "scale_ranges",
                 "jsonfile_prefix")

SECTIONS = {
    "data": {"samples_per_gpu", "workers_per_gpu", "imgs_per_gpu", "persistent_workers",
             "pin_memory", "train", "val", "test", "train_dataloader", "val_dataloader",
             "test_dataloader"},
    "runner": {"type", "max_epochs", "max_iters"},
    "checkpoint_config": {"interval", "by_epoch", "save_optimizer", "out_dir", "max_keep_ckpts",
                          "save_last", "meta", "create_symlink", "async_save"},
    "log_config": {"interval", "hooks"},
    "evaluation": {"interval", "start", "by_epoch", "metric", "save_best", "rule",
                   "gpu_collect", "tmpdir", "greater_keys", "less_keys", "async_eval", *EVALUATE_KEYS},
    "optimizer_config": {"type", "grad_clip", "loss_scale", "distributed", "coalesce", "bucket_size_mb",
                         "cumulative_iters"},
    "fp16": {"loss_scale", "dtype", "max_consecutive_nonfinite"},
    "auto_scale_lr": {"enable", "base_batch_size"},
    "dist_params": {"backend", "port"},
    "ray": {"num_workers", "use_gpu", "resources_per_worker", "max_failures", "num_to_keep",
            "checkpoint_upload_mode", "address", "storage_path", "elastic_resize_monitor_interval_s",
            "max_preemption_failures", "preemption_check_interval", "validation_resources",
            "validation_timeout_s", "validation_shards", "log_level"},
}
#: mmcv 1.x's optimizer hook types (``optimizer_config.type``) raydet honours
#: (see :func:`raydet.run.build.optimizer_hook_config`).
OPTIMIZER_HOOKS = ("OptimizerHook", "Fp16OptimizerHook", "DistOptimizerHook", "GradientCumulativeOptimizerHook",
                   "GradientCumulativeFp16OptimizerHook")
DATALOADER_KEYS = {"samples_per_gpu", "workers_per_gpu", "persistent_workers", "pin_memory",
                   "shuffle"}
GRAD_CLIP_KEYS = {"max_norm", "norm_type"}
LOGGER_TYPES = {"TextLoggerHook": {"interval", "by_epoch", "ignore_last", "reset_flag"},
                "TensorboardLoggerHook": {"interval", "log_dir", "by_epoch", "ignore_last",
                                          "reset_flag"}}


class Expect:
    """What a config value must be: ``check(value)`` says whether it is, ``text`` says it in words.

    ``Expect.int(1)``: an int >= 1; ``Expect.num(0, strict=True)``: a number > 0; ``also`` lists
    other accepted values (``-1``, ``None``, ``'dynamic'``). Booleans are never numbers here: a
    ``True`` where an int belongs is a mistake."""

    def __init__(self, check, text: str):
        self.check, self.text = check, text

    @classmethod
    def _number(cls, integer, lo, hi, strict, also):
        def ok(v):
            if any(v is a or (type(v) is type(a) and v == a) for a in also):
                return True
            if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
                return False
            return (lo is None or (v > lo if strict else v >= lo)) and (hi is None or v <= hi)
        bounds = [f"{'>' if strict else '>='} {lo}" if lo is not None else "", f"<= {hi}" if hi is not None else ""]
        text = ("an int" if integer else "a number") + " " + " and ".join(b for b in bounds if b)
        return cls(ok, text.strip() + "".join(f" or {a!r}" for a in also))

    @classmethod
    def int(cls, lo=None, hi=None, also=()):
        return cls._number(True, lo, hi, False, also)

    @classmethod
    def num(cls, lo=None, hi=None, strict=False, also=()):
        return cls._number(False, lo, hi, strict, also)

    @classmethod
    def of(cls, *choices):
        return cls(lambda v: any(v == c and type(v) is type(c) for c in choices),
                   "one of " + ", ".join(repr(c) for c in choices))


BOOL = Expect(lambda v: isinstance(v, bool), "True or False")
NUM_WORKERS = Expect(lambda v: Expect.int(1).check(v) or (
    isinstance(v, (list, tuple)) and len(v) == 2 and all(Expect.int(1).check(x) for x in v) and v[0] <= v[1]),
    "an int >= 1, or (min, max) with 1 <= min <= max")
LOSS_SCALE = Expect(lambda v: Expect.num(0, strict=True).check(v) or v == "dynamic" or isinstance(v, dict),
                    "a number > 0, 'dynamic' or a dict of GradScaler arguments")
_LOADER = {"samples_per_gpu": Expect.int(1), "workers_per_gpu": Expect.int(0), "persistent_workers": BOOL,
           "pin_memory": Expect(lambda v: v is None or isinstance(v, bool), "True, False or None"), "shuffle": BOOL}
#: The type and range of every known key that has one (dotted; ``None`` means "not set" and is
#: accepted for every key but ``runner.max_epochs``). Checked before anything is built.
VALUES = {
    "total_epochs": Expect.int(1),
    "runner.max_epochs": Expect.int(1),
    "runner.max_iters": Expect.int(1),
    "seed": Expect.int(0, 2 ** 32 - 1),  # numpy's and torch's seeds
    "deterministic": BOOL, "find_unused_parameters": BOOL, "cudnn_benchmark": BOOL, "auto_resume": BOOL,
    "log_level": Expect.of("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
    "optimizer.lr": Expect.num(0),
    "optimizer.weight_decay": Expect.num(0),
    "optimizer.momentum": Expect.num(0, 1),
    "optimizer_config.grad_clip.max_norm": Expect.num(0, strict=True),
    "optimizer_config.grad_clip.norm_type": Expect.num(0, strict=True, also=("inf",)),
    "optimizer_config.loss_scale": LOSS_SCALE,
    "optimizer_config.cumulative_iters": Expect.int(1),
    "fp16.loss_scale": LOSS_SCALE,
    "fp16.max_consecutive_nonfinite": Expect.int(1),
    "lr_config.warmup_iters": Expect.int(0),
    "lr_config.warmup_ratio": Expect.num(0, 1, strict=True),
    "lr_config.warmup": Expect.of("constant", "linear", "exp"),
    "lr_config.by_epoch": BOOL, "lr_config.warmup_by_epoch": BOOL,
    "lr_config.gamma": Expect.num(0, strict=True),
    "checkpoint_config.interval": Expect.int(1, also=(-1,)),
    "checkpoint_config.max_keep_ckpts": Expect.int(1, also=(-1,)),
    "checkpoint_config.by_epoch": BOOL, "checkpoint_config.save_optimizer": BOOL,
    "checkpoint_config.save_last": BOOL, "checkpoint_config.create_symlink": BOOL,
    "checkpoint_config.async_save": BOOL,
    "log_config.interval": Expect.int(1),
    "evaluation.interval": Expect.int(1),
    "evaluation.start": Expect.int(0),
    "evaluation.rule": Expect.of("greater", "less"),
    "evaluation.by_epoch": BOOL, "evaluation.classwise": BOOL, "evaluation.async_eval": BOOL,
    "evaluation.metric": Expect(lambda v: isinstance(v, str) or (
        isinstance(v, (list, tuple)) and v and all(isinstance(m, str) for m in v)), "a metric name or a list of them"),
    "auto_scale_lr.enable": BOOL,
    "auto_scale_lr.base_batch_size": Expect.int(1),
    "data.samples_per_gpu": Expect.int(1), "data.imgs_per_gpu": Expect.int(1),
    "data.workers_per_gpu": Expect.int(0), "data.persistent_workers": BOOL, "data.pin_memory": _LOADER["pin_memory"],
    **{f"data.{phase}_dataloader.{k}": v for phase in ("train", "val", "test") for k, v in _LOADER.items()},
    "ray.num_workers": NUM_WORKERS,
    "ray.use_gpu": BOOL,
    "ray.max_failures": Expect.int(-1),
    "ray.max_preemption_failures": Expect.int(-1),
    "ray.num_to_keep": Expect.int(1),
    "ray.checkpoint_upload_mode": Expect.of("sync", "async"),
    "ray.preemption_check_interval": Expect.int(1),
    "ray.validation_resources": Expect(lambda v: isinstance(v, dict) and all(
        isinstance(k, str) and Expect.num(0).check(x) for k, x in v.items()),
        "a dict of Ray resources, e.g. dict(num_cpus=1) or dict(num_gpus=1)"),
    "ray.validation_timeout_s": Expect.num(0, strict=True),
    "ray.validation_shards": Expect.int(1),
    "ray.log_level": Expect.of("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
    "ray.elastic_resize_monitor_interval_s": Expect.num(0, strict=True),
}


def check_values(cfg) -> None:
    """Raise :class:`ConfigError` for the first key of :data:`VALUES` whose value has the wrong
    type or range, naming the key, the value and what it must be; and for a ``workflow`` that is
    not ``[(phase, epochs), ...]``."""
    for key, expect in VALUES.items():
        node, parts = cfg, key.split(".")
        for part in parts:
            node = node.get(part) if isinstance(node, (dict, Config)) else None
            if node is None:
                break
        if node is None or expect.check(node):
            continue
        got = "" if isinstance(node, (int, float)) and not isinstance(node, bool) else f" (a {type(node).__name__})"
        raise ConfigError(f"{key}={node!r}{got}: expected {expect.text}")
    workflow = cfg.get("workflow")
    if workflow is not None and not (isinstance(workflow, (list, tuple)) and workflow and all(
            isinstance(w, (list, tuple)) and len(w) == 2 and isinstance(w[0], str) and Expect.int(1).check(w[1])
            for w in workflow)):
        raise ConfigError(f"workflow={workflow!r}: expected a list of (phase, epochs) pairs (iterations with "
                          "IterBasedRunner), e.g. [('train', 1)]")


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
        if runner.get("type") == "IterBasedRunner":
            _iter_based(cfg, runner, total)
            cfg.workflow = [tuple(w) for w in cfg.get("workflow", [("train", 1)])]
            return cfg
        if runner.get("type") != "EpochBasedRunner":
            raise ConfigError(f"runner.type='{runner['type']}' is not supported; raydet's runners are "
                              "EpochBasedRunner (runner.max_epochs) and IterBasedRunner (runner.max_iters)")
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


#: custom hooks that act at epoch ends only, so never under IterBasedRunner
EPOCH_ONLY_HOOKS = ("ExpMomentumEMAHook", "LinearMomentumEMAHook", "EMAHook")


def _iter_based(cfg, runner, total) -> None:
    """``runner = dict(type='IterBasedRunner', max_iters=N)``: hooks act by iteration, as mmcv's
    ``IterBasedRunner.register_training_hooks`` (checkpoint, LR, momentum, logger hooks) and mmdet's
    ``train_detector`` (evaluation) make them: ``by_epoch`` defaults to False there, and an
    explicit True is refused (no epoch ends: it would never act), as are hooks that act only at
    epoch ends."""
    if "max_epochs" in runner:
        raise ConfigError("runner.max_epochs belongs to EpochBasedRunner; IterBasedRunner takes runner.max_iters")
    if total is not None:
        raise ConfigError("total_epochs does not apply to IterBasedRunner; set runner.max_iters")
    if "max_iters" not in runner:
        raise ConfigError("runner.max_iters is missing (IterBasedRunner)")
    places = [(name, cfg.get(name)) for name in ("checkpoint_config", "lr_config", "momentum_config", "evaluation")]
    places += [(f"log_config.hooks.{i}", h) for i, h in enumerate((cfg.get("log_config") or {}).get("hooks") or [])]
    places += [(f"custom_hooks.{i}", h) for i, h in enumerate(cfg.get("custom_hooks") or [])
               if isinstance(h, dict) and h.get("type") == "ProfilerHook"]
    for where, section in places:
        if not isinstance(section, dict):
            continue
        if section.get("by_epoch") is True:
            raise ConfigError(f"{where}.by_epoch=True: IterBasedRunner has no epoch ends, it would never act; "
                              "use by_epoch=False (the default under IterBasedRunner)")
        section["by_epoch"] = False
    if (cfg.get("lr_config") or {}).get("warmup_by_epoch"):
        raise ConfigError("lr_config.warmup_by_epoch=True: IterBasedRunner has no epochs; give warmup_iters")
    for i, hook in enumerate(cfg.get("custom_hooks") or []):
        if isinstance(hook, dict) and hook.get("type") in EPOCH_ONLY_HOOKS:
            raise ConfigError(f"custom_hooks.{i}: {hook['type']} evaluates and saves its averaged weights at epoch "
                              "ends, which IterBasedRunner does not have; use EpochBasedRunner")


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
    from ..data.dataset import mmdet_datasets, own_dataset
    if own_dataset(ds):
        datasets.check({k: v for k, v in ds.items() if k != "separate_eval"}, where, skip=("seed",))
    else:  # mmdet's own class (a CocoDataset with mmdet-only arguments, or a type raydet has not)
        from ..registry import check_call
        kind = ds.get("type")
        if kind not in mmdet_datasets():
            datasets.get(kind, where)  # the error, with the closest name
        check_call(mmdet_datasets()[kind], {k: v for k, v in ds.items() if k != "type"}, where)
        if kind == "MultiImageMixDataset":  # mmdet's wrapper: its dataset is mmdet's too
            _check_dataset(ds.get("dataset") or {}, f"{where}.dataset", datasets, pipelines)
    for j, step in enumerate(ds.get("pipeline", [])):
        pipelines.check(step, f"{where}.pipeline.{j}")
        if step.get("type") == "MultiScaleFlipAug":  # Albu's transforms are albumentations', not mmdet's
            for k, sub in enumerate(step.get("transforms", [])):
                pipelines.check(sub, f"{where}.pipeline.{j}.transforms.{k}")


def _check_metric_names(cfg, datasets) -> None:
    """``evaluation.metric`` must name metrics the val dataset's class computes (its ``METRICS``;
    through wrappers, the wrapped dataset's), so that a typo is not found after an epoch."""
    from ..data.wrappers import WRAPPERS
    metric = (cfg.get("evaluation") or {}).get("metric")
    ds = (cfg.get("data") or {}).get("val")
    while isinstance(ds, dict) and ds.get("type") in WRAPPERS:
        ds = ds.get(WRAPPERS[ds["type"]])
        ds = ds[0] if isinstance(ds, (list, tuple)) and ds else ds
    if metric is None or not isinstance(ds, dict) or ds.get("type") not in datasets:
        return
    known = getattr(datasets.get(ds["type"]), "METRICS", None)
    for m in [metric] if isinstance(metric, str) else metric:
        if known is not None and m not in known:
            raise ConfigError(f"evaluation.metric={m!r}: {ds['type']} computes {', '.join(map(repr, known))}"
                              f"{suggest(m, known)}")


def _check_top_level(keys) -> list[str]:
    """mmdet configs define helper variables at top level (``input_size``, ``conv_cfg``,
    ``train_dataset``, ``max_epochs``, ...) and mmdet accepts any: so does raydet, except a name
    that is a near-miss of a key it knows (``optimzer``), which is the typo it looks like.
    Returns the helper names accepted."""
    import difflib
    helpers = []
    for key in keys:
        if key in TOP_LEVEL:
            continue
        close = difflib.get_close_matches(key, TOP_LEVEL | HELPERS, n=1, cutoff=0.8)
        if close:
            raise ConfigError(f"unknown config key '{key}' (did you mean '{close[0]}'?)")
        helpers.append(key)
    return helpers


def validate_config(cfg, source: str | None = None) -> None:
    """Raise :class:`ConfigError` for the first unknown or ill-typed key of ``cfg`` (prefixed with
    ``source``, the config file, when given)."""
    from ..data import DATASETS
    from ..models import validate_model
    try:
        if cfg.get("model") is None:
            raise ConfigError("the config has no model: it is a shared base (as mmdetection's configs/common/*.py "
                              "are), not a runnable config; inherit it with _base_ and add a model")
        _check_sections(cfg)
        validate_model(cfg.model, cfg.get("train_cfg"), cfg.get("test_cfg"))
        _check_optimization(cfg)
        _check_hooks(cfg)
        _check_metric_names(cfg, DATASETS)
        for phase, _ in cfg.get("workflow", []):
            if phase not in ("train", "val"):
                raise ConfigError(f"workflow phase '{phase}' must be 'train' or 'val'")
    except ConfigError as exc:
        if source:
            raise ConfigError(f"{source}: {exc}") from None
        raise


def _check_sections(cfg) -> None:
    """The top-level keys, each known section's keys, and ``data``'s loaders and datasets."""
    from ..data import DATASETS, PIPELINES
    _check_top_level(k for k in cfg.keys() if not k.startswith("_") and k not in HELPERS)
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


def _check_optimization(cfg) -> None:
    """``optimizer``, ``optimizer_config`` (its type and ``grad_clip``), ``fp16``, and the LR and
    momentum schedules against their policies."""
    from ..engine.hooks import LR_POLICIES, MOMENTUM_POLICIES
    from ..engine.hooks.lr import policy_name
    from ..engine.optim import OPTIMIZERS
    if cfg.get("optimizer") is not None:
        OPTIMIZERS.check(cfg.optimizer, "optimizer", skip=("paramwise_cfg", "constructor"))
        check_keys(cfg.optimizer.get("paramwise_cfg", {}).keys(),
                   {"bias_lr_mult", "bias_decay_mult", "norm_decay_mult", "dwconv_decay_mult",
                    "dcn_offset_lr_mult", "bypass_duplicate", "custom_keys"},
                   "optimizer.paramwise_cfg")
    kind = (cfg.get("optimizer_config") or {}).get("type", "OptimizerHook")
    if kind not in OPTIMIZER_HOOKS:
        raise ConfigError(f"optimizer_config.type={kind!r} is not supported; supported: {', '.join(OPTIMIZER_HOOKS)}")
    clip = (cfg.get("optimizer_config") or {}).get("grad_clip")
    if clip:
        check_keys(clip.keys(), GRAD_CLIP_KEYS, "optimizer_config.grad_clip")
    if cfg.get("fp16") is not None:
        from ..engine.precision import Precision
        Precision(cfg.fp16)  # raises ConfigError for a bad dtype, loss_scale or patience
    for section, table in (("lr_config", LR_POLICIES), ("momentum_config", MOMENTUM_POLICIES)):
        if cfg.get(section):
            sub = dict(cfg[section])
            policy = sub.pop("policy", None)
            if policy is None:
                raise ConfigError(f"{section}.policy is missing; known: {', '.join(table.names())}")
            if policy_name(policy) not in table:
                table.get(policy, section)  # the error, naming the policy as written
            table.check(dict(type=policy_name(policy), **sub), section)


def _check_hooks(cfg) -> None:
    """``log_config.hooks`` (raydet's logger types) and ``custom_hooks`` (any registered hook)."""
    from ..engine.hooks import HOOKS
    for i, hook in enumerate((cfg.get("log_config") or {}).get("hooks", [])):
        htype = hook.get("type")
        check_keys([htype], LOGGER_TYPES, f"log_config.hooks.{i}.type")
        check_keys([k for k in hook if k != "type"], LOGGER_TYPES[htype], f"log_config.hooks.{i}")
    for i, hook in enumerate(cfg.get("custom_hooks") or []):
        HOOKS.check(hook, f"custom_hooks.{i}", skip=("priority",))
