"""The builders: plain functions from a (read-only) config to the built parts of a run.

Only this module and the builders below it (``raydet.data``, ``raydet.models``, the hooks'
own constructors) read the config; :func:`raydet.run.train` takes the :class:`Parts` they return.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import warnings

import torch

from ..config.schema import EVALUATE_KEYS, OPTIMIZER_HOOKS
from ..data import build_dataloader, build_dataset
from ..engine import (CheckpointHook, DistSamplerSeedHook, EvalHook, IterTimerHook, OptimizerHook, Precision,
                      TensorboardLoggerHook, TextLoggerHook, build_lr_hook, build_optimizer)
from ..engine.checkpoint import CheckpointWriter
from ..engine.dist import StepModule, get_rank, get_world_size, is_dist, unwrap
from ..engine.hooks import HOOKS, MOMENTUM_POLICIES
from ..engine.hooks.evaluation import check_metrics
from ..engine.hooks.model_state import ModelStateHook
from ..errors import ConfigError, DataError
from ..models import build_detector
from ..models.training_state import load_training_state, training_state
from . import checks

logger = logging.getLogger("raydet")


@dataclasses.dataclass
class Parts:
    """What :func:`raydet.run.train` runs. ``model`` is the detector wrapped for the step (a
    :class:`StepModule`, in DDP with more than one rank) on its device; ``loaders`` has one loader a
    ``workflow`` phase; ``hooks`` are ``(hook, priority or None)`` in registration order (mmcv's
    ``register_training_hooks``, then raydet's, then ``custom_hooks``, then evaluation);
    ``length`` is ``max_epochs``, or ``max_iters`` when ``by_epoch`` is False; ``load_from``: weights
    to load when the run starts from no checkpoint (mmdet's ``load_from``); ``config_text``: the
    config to keep in the work_dir, if any."""

    model: torch.nn.Module
    loaders: list
    workflow: list
    optimizer: torch.optim.Optimizer
    precision: Precision
    hooks: list
    by_epoch: bool
    length: int
    writer: CheckpointWriter
    meta: dict
    load_from: str | None = None
    config_text: str | None = None  # the run's config, kept in the work_dir (see run_config_text)

    @property
    def detector(self) -> torch.nn.Module:
        return unwrap(self.model)


def device_of(cfg) -> torch.device:
    """The config's ``device``, else CUDA where there is one; this rank's GPU in a process group."""
    name = cfg.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and is_dist():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)


def build_model(cfg) -> torch.nn.Module:
    """mmdet's detector of ``cfg.model`` (``train_cfg``/``test_cfg`` merged in, weights initialised)."""
    return build_detector(copy.deepcopy(cfg.model), logger=logger, train_cfg=cfg.get("train_cfg"),
                          test_cfg=cfg.get("test_cfg"))


def trained_detector(cfg, checkpoint=None, logger=None) -> tuple[torch.nn.Module, list | None]:
    """mmdet's detector of ``cfg.model`` with every tensor of ``checkpoint`` — a file (strict:
    :class:`CheckpointError` names what does not fit) or a dict ``{state_dict, meta}`` already in
    memory —, nothing initialised or downloaded (the checkpoint brings every weight; mmdet's
    ``init_detector`` sets ``pretrained=None`` for the same reason). ``checkpoint=None`` keeps the
    initial weights. Returns ``(model, classes)``: the class names the checkpoint records, or
    ``None``; ``model.CLASSES`` is the caller's to set."""
    from ..engine.checkpoint import load_weights
    model = build_detector(copy.deepcopy(cfg.model), train_cfg=cfg.get("train_cfg"), test_cfg=cfg.get("test_cfg"),
                           init=False)
    if isinstance(checkpoint, dict):  # already in memory (raydet infer ships it to its actors)
        model.load_state_dict(checkpoint["state_dict"])
        meta = checkpoint.get("meta") or {}
    elif checkpoint is not None:
        meta = load_weights(model, checkpoint, logger, require="all").get("meta") or {}
    else:
        meta = {}
    return model, meta.get("CLASSES")


def build_datasets(cfg, seed: int) -> list:
    """``data.train``, and for a two-phase workflow ``data.val`` with the training pipeline
    (mmdet's rule: the train pipeline, or a wrapper's dataset's), in workflow order."""
    datasets = [build_dataset(cfg.data.train, seed=seed)]
    if len(cfg.workflow) == 2:
        val = copy.deepcopy(dict(cfg.data.val))
        train = cfg.data.train
        val["pipeline"] = copy.deepcopy(train.get("pipeline", (train.get("dataset") or {}).get("pipeline")))
        val.pop("test_mode", None)
        datasets.append(build_dataset(val, seed=seed))
    return datasets


def loader_settings(cfg, device: torch.device) -> dict:
    """The training loaders' settings, with mmdet's deprecated ``imgs_per_gpu`` overriding
    ``samples_per_gpu``; pinned memory by default on a GPU (asynchronous copies)."""
    data = cfg.data
    spg = data.get("samples_per_gpu", 2)
    if "imgs_per_gpu" in data:
        warnings.warn(f'"imgs_per_gpu" is deprecated in MMDet V2.0. Please use "samples_per_gpu" instead; '
                      f'samples_per_gpu={data["imgs_per_gpu"]} (from imgs_per_gpu) is used', DeprecationWarning)
        logger.warning(f"Got imgs_per_gpu={data['imgs_per_gpu']} and samples_per_gpu={spg}; imgs_per_gpu="
                       f"{data['imgs_per_gpu']} is used in training")
        spg = data["imgs_per_gpu"]
    settings = dict(samples_per_gpu=spg, workers_per_gpu=data.get("workers_per_gpu", 2),
                    persistent_workers=data.get("persistent_workers", True), pin_memory=data.get("pin_memory"))
    settings.update(data.get("train_dataloader", {}))
    if settings["pin_memory"] is None:
        settings["pin_memory"] = device.type == "cuda"
    return settings


def process_settings(cfg) -> dict:
    """``mp_start_method`` and ``opencv_num_threads`` of the loader processes (and, for OpenCV,
    of this process: inline loading and evaluation)."""
    procs = dict(mp_start_method=cfg.get("mp_start_method"), opencv_num_threads=cfg.get("opencv_num_threads"))
    if procs["opencv_num_threads"] is not None:
        import cv2
        cv2.setNumThreads(int(procs["opencv_num_threads"]))
    return procs


def build_loaders(cfg, datasets: list, seed: int, settings: dict) -> list:
    """One sharded training loader a dataset, for this rank of the world (``settings``:
    :func:`loader_settings`)."""
    procs = process_settings(cfg)
    return [build_dataloader(ds, settings["samples_per_gpu"], settings["workers_per_gpu"],
                             num_replicas=get_world_size(), rank=get_rank(), shuffle=True, seed=seed,
                             persistent_workers=settings["persistent_workers"], pin_memory=settings["pin_memory"],
                             **procs) for ds in datasets]


def _asks_sync_bn(model_cfg) -> bool:
    """Whether any norm of the model config is ``SyncBN`` (``norm_cfg=dict(type='SyncBN')``)."""
    if isinstance(model_cfg, dict):
        return any(v == "SyncBN" or _asks_sync_bn(v) for v in model_cfg.values())
    if isinstance(model_cfg, (list, tuple)):
        return any(_asks_sync_bn(v) for v in model_cfg)
    return False


def sync_batchnorm(model: torch.nn.Module, model_cfg, device: torch.device, world_size: int) -> torch.nn.Module:
    """mmdet builds ``SyncBN`` as ``torch.nn.SyncBatchNorm``; it stays so where it has something
    to synchronise: CUDA devices and more than one rank. In a group of one, and on CPU (where
    SyncBatchNorm refuses to run in a process group), it becomes plain BatchNorm (mmcv's
    ``revert_sync_batchnorm``), which computes the same statistics over the rank's own batch; the
    choice is logged."""
    if not _asks_sync_bn(model_cfg) and not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules()):
        return model
    if device.type == "cuda" and world_size > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        count = sum(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
        logger.info(f"SyncBN: {count} BatchNorm layers synchronised over {world_size} ranks")
    else:
        from mmcv.cnn.utils import revert_sync_batchnorm
        model = revert_sync_batchnorm(model)
        why = "a group of one rank" if world_size == 1 else f"{device.type} device: SyncBatchNorm needs CUDA"
        logger.info(f"SyncBN: kept as plain BatchNorm ({why}); statistics are per rank")
    return model


def wants_fp16(cfg) -> bool:
    return cfg.get("fp16") is not None or (cfg.get("optimizer_config") or {}).get("type", "").endswith(
        "Fp16OptimizerHook")


def wrap_model(model: torch.nn.Module, cfg, device: torch.device) -> torch.nn.Module:
    """The detector on ``device``, ready for the step: SyncBN resolved, mmdet's fp16 regions on
    under fp16, in a :class:`StepModule`, in DDP when the world has more than one rank."""
    world = get_world_size()
    if cfg.get("cudnn_benchmark"):
        torch.backends.cudnn.benchmark = True
    model = sync_batchnorm(model, cfg.get("model"), device, world).to(device)
    if wants_fp16(cfg):
        from mmcv.runner import wrap_fp16_model
        wrap_fp16_model(model)  # mmdet's @auto_fp16/@force_fp32 regions: its losses stay float32
    model = StepModule(model)
    if is_dist() and world > 1:
        # mmdet's broadcast_buffers=False, by its new name: each rank's BatchNorm statistics stay its
        # own between steps (they are equal at the start: same seed, same checkpoint)
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, forward_sync_buffers=False,
            find_unused_parameters=cfg.get("find_unused_parameters", False))
    return model


def scaled_schedule(cfg, samples_per_gpu: int) -> tuple[dict, dict]:
    """``(optimizer config, lr_config)``; with ``auto_scale_lr.enable`` mmdet's rule, applied on
    every (re)start (the world size may have changed): LR (and OneCycle's ``max_lr``) times the
    total batch over ``base_batch_size``."""
    optimizer_cfg = copy.deepcopy(dict(cfg.optimizer))
    lr_cfg = copy.deepcopy(dict(cfg.get("lr_config") or {}))
    auto = cfg.get("auto_scale_lr") or {}
    if not auto.get("enable"):
        return optimizer_cfg, lr_cfg
    world = get_world_size()
    batch = world * samples_per_gpu
    scale = batch / auto.get("base_batch_size", 16)
    optimizer_cfg["lr"] *= scale
    if lr_cfg.get("policy") == "OneCycle":  # its peak is given apart from the optimizer's LR
        peak = lr_cfg["max_lr"]
        lr_cfg["max_lr"] = [v * scale for v in peak] if isinstance(peak, (list, tuple)) else peak * scale
    logger.info(f"world size {world}: LR scaled by {scale:.4g} to {optimizer_cfg['lr']:.6g}"
                + (f" (OneCycle max_lr {lr_cfg['max_lr']})" if "max_lr" in lr_cfg else "")
                + f" for a total batch of {batch} ({world} x {samples_per_gpu}) against "
                f"base_batch_size {auto.get('base_batch_size', 16)}")
    return optimizer_cfg, lr_cfg


def optimizer_hook_config(cfg) -> tuple[dict, dict | None]:
    """``(optimizer_config, fp16)`` as the optimizer hook and precision take them.

    ``optimizer_config.type``: ``OptimizerHook`` (the default) and mmdet 1.x's
    ``DistOptimizerHook`` are raydet's :class:`OptimizerHook`; ``Fp16OptimizerHook`` means fp16
    with its ``loss_scale`` (mmcv's default 512), merged under a top-level ``fp16`` as mmdet does;
    ``GradientCumulativeOptimizerHook`` and ``GradientCumulativeFp16OptimizerHook`` add
    ``cumulative_iters`` (gradient accumulation, see :class:`OptimizerHook`).
    Any other type is a :class:`ConfigError`. ``distributed``, ``coalesce`` and ``bucket_size_mb``
    (mmcv's own gradient all-reduce) do not apply: DDP buckets and reduces gradients; they are
    logged once and ignored."""
    opt = dict(cfg.get("optimizer_config") or {})
    kind = opt.pop("type", "OptimizerHook")
    if kind not in OPTIMIZER_HOOKS:
        raise ConfigError(f"optimizer_config.type={kind!r} is not supported; supported: {', '.join(OPTIMIZER_HOOKS)}")
    fp16 = cfg.get("fp16")
    loss_scale = opt.pop("loss_scale", None)
    if kind in ("Fp16OptimizerHook", "GradientCumulativeFp16OptimizerHook"):
        fp16 = dict({"loss_scale": 512.0 if loss_scale is None else loss_scale}, **dict(fp16 or {}))
    elif loss_scale is not None:
        raise ConfigError(f"optimizer_config.loss_scale belongs to Fp16OptimizerHook, not {kind}; set fp16=dict(loss_scale=...)")
    if "cumulative_iters" in opt and not kind.startswith("GradientCumulative"):
        raise ConfigError(f"optimizer_config.cumulative_iters belongs to GradientCumulativeOptimizerHook, not {kind}")
    ignored = [k for k in ("distributed", "coalesce", "bucket_size_mb") if k in opt]
    if ignored:
        logger.info(f"optimizer_config.{', '.join(ignored)}: ignored, DistributedDataParallel buckets and reduces "
                    "gradients itself")
    return {k: v for k, v in opt.items() if k not in ignored}, fp16


def training_hooks(cfg, lr_cfg: dict, opt_cfg: dict, precision: Precision, classes, on_checkpoint) -> list:
    """mmcv's ``register_training_hooks``, in its order: LR, momentum, optimizer, checkpoint, timer,
    loggers; then the sampler's. Sections the config leaves out act by iteration under
    ``IterBasedRunner``."""
    by_iter = cfg.runner.type == "IterBasedRunner"
    hooks = [build_lr_hook(lr_cfg)] if lr_cfg else []
    if cfg.get("momentum_config"):
        hooks.append(build_lr_hook(dict(cfg.momentum_config), MOMENTUM_POLICIES, "momentum_config"))
    hooks.append(OptimizerHook(precision, grad_clip=opt_cfg.get("grad_clip"),
                               cumulative_iters=opt_cfg.get("cumulative_iters", 1)))
    ckpt_cfg = copy.deepcopy(dict(cfg.get("checkpoint_config") or {}))
    ckpt_cfg.pop("async_save", None)  # the writer's (see build_parts)
    ckpt_cfg["meta"] = dict(ckpt_cfg.get("meta") or {}, config=cfg.pretty_text, CLASSES=list(classes or []))
    if by_iter:
        ckpt_cfg.setdefault("by_epoch", False)
    hooks += [CheckpointHook(**ckpt_cfg, on_saved=on_checkpoint), IterTimerHook()]
    log_cfg = dict(cfg.get("log_config") or dict(interval=50, hooks=[dict(type="TextLoggerHook")]))
    for info in log_cfg.get("hooks", []):
        info = dict(info, **({"by_epoch": False} if by_iter else {}))
        kind = {"TextLoggerHook": TextLoggerHook, "TensorboardLoggerHook": TensorboardLoggerHook}[info.pop("type")]
        info.setdefault("interval", log_cfg.get("interval", 50))
        hooks.append(kind(**info))
    return [(hook, None) for hook in hooks + [DistSamplerSeedHook()]]


def custom_hooks(cfg) -> list:
    """``custom_hooks``: ``(hook, priority)``, a hook's own class priority unless the entry gives one."""
    out = []
    for i, hook_cfg in enumerate(cfg.get("custom_hooks") or []):
        hook_cfg = copy.deepcopy(dict(hook_cfg))
        priority = hook_cfg.pop("priority", None)
        out.append((HOOKS.build(hook_cfg, f"custom_hooks.{i}"), priority))
    return out


def evaluation_hook(cfg, model, train_set, precision: Precision, seed: int, async_eval: bool) -> EvalHook | None:
    """The in-loop :class:`EvalHook` of ``evaluation`` over ``data.val``, its settings checked
    before training (metrics the dataset has, a schedule that falls within the run, the same
    classes as training); ``None`` when the Ray launcher evaluates off the loop (``async_eval``)."""
    if cfg.data.get("val") is None:
        raise ConfigError("validation is on but data.val is not set (use --no-validate)")
    val_ds = build_dataset(cfg.data.val, seed=seed, test_mode=True)
    if len(val_ds) == 0:
        raise DataError(f"data.val is empty, nothing to evaluate on: {checks.describe(val_ds)} (or use --no-validate)")
    eval_cfg = copy.deepcopy(dict(cfg.get("evaluation") or {}))
    if eval_cfg.pop("async_eval", False) and not async_eval:
        raise ConfigError("evaluation.async_eval=True evaluates each checkpoint as a Ray validation task: it "
                          "needs the Ray launcher (not --launcher none, nor train_detector in this process)")
    by_iter = cfg.runner.type == "IterBasedRunner"
    if by_iter and "interval" not in eval_cfg:  # mmdet's default would evaluate every iteration
        raise ConfigError("IterBasedRunner evaluates every evaluation.interval iterations: set "
                          "evaluation=dict(interval=N) (or use --no-validate)")
    check_metrics(val_ds, eval_cfg.get("metric", "bbox"), model, save_best=eval_cfg.get("save_best"),
                  eval_kwargs={k: v for k, v in eval_cfg.items() if k in EVALUATE_KEYS})
    checks.evaluation_happens(cfg, eval_cfg, by_iter)
    checks.same_classes(train_set, val_ds)
    if async_eval:
        return None
    val_loader_cfg = dict(cfg.data.get("val_dataloader", {}))
    loader = build_dataloader(val_ds, val_loader_cfg.get("samples_per_gpu", 1),
                              val_loader_cfg.get("workers_per_gpu", cfg.data.get("workers_per_gpu", 2)),
                              num_replicas=get_world_size(), rank=get_rank(), shuffle=False,
                              persistent_workers=False, **process_settings(cfg))
    return EvalHook(loader, autocast=precision.autocast, **eval_cfg)


def build_parts(cfg, seed: int, model=None, datasets=None, meta=None, on_checkpoint=None, extra_hooks=(),
                validate: bool = False, async_eval: bool = False) -> Parts:
    """Everything a run trains with, in this process (rank ``get_rank()`` of the initialised
    process group, or alone), from ``cfg`` and the run's ``seed`` — ``model`` and ``datasets``
    given (mmdet's ``train_detector``) or built here. ``on_checkpoint(runner, path, ready_at)``
    runs on every rank after each periodic checkpoint (see :class:`ReportHook`); ``extra_hooks``
    come after mmdet's training hooks and before ``custom_hooks``. ``async_eval``: the caller
    evaluates checkpoints off the loop (the Ray launcher), so no :class:`EvalHook` is made.
    Raises :class:`ConfigError`/:class:`DataError` for what can be known wrong before training."""
    # mmcv's get_root_logger: the configured level on rank 0, errors only elsewhere
    logger.setLevel(cfg.get("log_level", "INFO") if get_rank() == 0 else "ERROR")
    datasets = build_datasets(cfg, seed) if datasets is None else list(datasets)
    if model is None:
        model = build_model(cfg)
        model.CLASSES = datasets[0].CLASSES
    checks.training_inputs(model, datasets)
    checks.note_inapplicable_keys(cfg)
    device = device_of(cfg)
    settings = loader_settings(cfg, device)  # once: imgs_per_gpu's deprecation is said once
    loaders = build_loaders(cfg, datasets, seed, settings)
    wrapped = wrap_model(model, cfg, device)
    optimizer_cfg, lr_cfg = scaled_schedule(cfg, settings["samples_per_gpu"])
    optimizer = build_optimizer(wrapped, optimizer_cfg)
    opt_cfg, fp16 = optimizer_hook_config(cfg)
    checks.run_length(cfg, loaders[0], opt_cfg.get("cumulative_iters", 1))
    precision = Precision(fp16, device)
    hooks = training_hooks(cfg, lr_cfg, opt_cfg, precision, datasets[0].CLASSES if hasattr(datasets[0], "CLASSES")
                           else None, on_checkpoint)
    detector = unwrap(wrapped)
    if training_state(detector):  # YOLOX's input size, Dynamic R-CNN's statistics: exact resume
        hooks.append((ModelStateHook(lambda: training_state(detector), lambda s: load_training_state(detector, s)),
                      None))
    evaluation = evaluation_hook(cfg, wrapped, datasets[0], precision, seed, async_eval) if validate else None
    hooks += [(hook, None) for hook in extra_hooks] + custom_hooks(cfg)
    if evaluation is not None:
        # after the custom hooks: one of the evaluation's priority (49, mmdet's choice for its EMA
        # hooks, to come before evaluation) then acts first, as it does in mmdet (EvalHook at 70)
        hooks.append((evaluation, None))
    by_epoch = cfg.runner.type != "IterBasedRunner"
    return Parts(model=wrapped, loaders=loaders, workflow=[tuple(w) for w in cfg.workflow], optimizer=optimizer,
                 precision=precision, hooks=hooks, by_epoch=by_epoch,
                 length=int(cfg.runner.max_epochs if by_epoch else cfg.runner.max_iters),
                 # raydet's key: rank 0 writes checkpoint files in a background thread unless it is False
                 writer=CheckpointWriter(background=(cfg.get("checkpoint_config") or {}).get("async_save", True)),
                 meta=dict(meta or {}), load_from=cfg.get("load_from"))
