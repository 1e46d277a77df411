"""mmdet 2.x's ``apis/train.py``: seeding, loss parsing, the batch processor and ``train_detector``."""
from __future__ import annotations

import copy
import logging
import os
import random
import time
import warnings

import numpy as np
import torch

from ..data import build_dataloader, build_dataset
from ..data.loader import batch_to_device
from ..engine import (CheckpointHook, DistSamplerSeedHook, EvalHook, IterBasedRunner, IterTimerHook, OptimizerHook,
                      Precision, Runner, TensorboardLoggerHook, TextLoggerHook, build_lr_hook,
                      build_optimizer, find_latest_checkpoint, load_file)
from ..engine.checkpoint import CheckpointWriter, checkpoint_dirs
from ..engine.dist import (StepModule, all_reduce_mean, broadcast_object, get_rank, get_world_size, is_dist,
                           unwrap)
from ..engine.hooks import HOOKS, MOMENTUM_POLICIES
from ..engine.hooks.model_state import ModelStateHook
from ..config import import_custom_modules
from ..config.loader import save_run_config
from ..config.schema import EVALUATE_KEYS, OPTIMIZER_HOOKS
from ..engine.hooks.evaluation import check_metrics
from ..errors import ConfigError, DataError
from ..models.training_state import load_training_state, training_state

logger = logging.getLogger("raydet")


def _register_step_module() -> None:
    """mmcv's ``is_module_wrapper`` (which mmdet's hooks use to reach the detector) knows raydet's
    :class:`StepModule` as a wrapper, as it knows DDP."""
    from mmcv.parallel import MODULE_WRAPPERS
    if "StepModule" not in MODULE_WRAPPERS.module_dict:
        MODULE_WRAPPERS.register_module(module=StepModule)


_register_step_module()


def set_random_seed(seed: int, deterministic: bool = False) -> None:
    """Seed ``random``, numpy, torch and every CUDA device. ``deterministic`` also sets
    ``cudnn.deterministic=True``, ``cudnn.benchmark=False`` and
    ``torch.use_deterministic_algorithms(True)``: a CPU run is then bitwise repeatable (on CUDA
    the algorithms without a deterministic kernel only warn)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=torch.cuda.is_available())


def init_random_seed(seed: int | None = None) -> int:
    """``seed`` if given, else a random one drawn on rank 0 and broadcast, so that all ranks agree
    (mmdet #6339: different seeds per rank gave different samplers)."""
    if seed is not None:
        return int(seed)
    return int(broadcast_object(np.random.randint(2 ** 31) if get_rank() == 0 else None))


def run_seed(cfg, resume: str | None = None, drawn: int | None = None) -> int:
    """The one seed of a run, agreed by every rank (a collective), logged with where it came from.

    In order: the config's ``seed`` (or ``--seed``); the ``meta.seed`` of the checkpoint the run
    resumes from, so a config without a seed keeps the seed it started with across restarts;
    ``drawn``, a seed the launcher drew once for the whole run (the Ray driver does, so that a
    worker group restarted before its first checkpoint draws no other); else one drawn on rank 0
    and broadcast (mmdet's ``init_random_seed``). The result goes into the run's meta and so into
    every checkpoint.
    """
    choice = None
    if get_rank() == 0:
        # meta only: the weights are read once, by the resume itself
        saved = load_file(resume, mmap=True)["meta"].get("seed") if resume and cfg.get("seed") is None else None
        if cfg.get("seed") is not None:
            choice = (int(cfg.seed), "from the config")
        elif saved is not None:
            choice = (int(saved), f"from the checkpoint {resume}")
        elif drawn is not None:
            choice = (int(drawn), "drawn once for this run by the launcher")
    choice = broadcast_object(choice)
    if choice is None:
        choice = (init_random_seed(None), "drawn on rank 0: the config sets no seed")
    logger.info(f"seed {choice[0]} ({choice[1]})")
    return choice[0]


def checkpoint_dirs_of(cfg) -> list[str]:
    """The directories of ``cfg``'s run that hold its periodic checkpoints: the work_dir, and
    ``checkpoint_config.out_dir``'s sub-directory for it (see :func:`checkpoint_dirs`)."""
    return checkpoint_dirs(cfg.work_dir, (cfg.get("checkpoint_config") or {}).get("out_dir"))


def finished_notice(cfg, meta: dict) -> str:
    """What to tell a person who re-runs a finished run: that it is complete and, when this
    config differs from the one it was trained with, how (and how to train this one afresh)."""
    from ..config.loader import config_differences
    lines = [f"raydet: {cfg.work_dir} is already complete ({meta['iter']}/{meta['max_iters']} iterations)"]
    diff = config_differences(meta.get("config") or "", cfg)
    if diff:
        lines.append("raydet: this config differs from the one that run was trained with: " + "; ".join(diff))
        lines.append("raydet: to train this config, use --no-auto-resume (the finished run is moved aside) or "
                     "another --work-dir")
    return "\n".join(lines)


def resume_path(cfg) -> str | None:
    """``resume_from``, else with ``auto_resume`` the run's newest loadable checkpoint."""
    resume = cfg.get("resume_from")
    if resume is None and cfg.get("auto_resume"):
        resume = find_latest_checkpoint(*checkpoint_dirs_of(cfg))
    return resume


def parse_losses(losses: dict) -> tuple[torch.Tensor, dict]:
    """``(loss, log_vars)`` from a model's loss dict.

    A tensor value becomes its mean; a list of tensors the sum of their means; anything else
    raises ``TypeError`` naming the key. ``loss`` is the sum of the entries whose key contains
    ``"loss"``. With torch.distributed initialised, every log var is averaged over ranks (one
    all_reduce; every rank must call this). ``log_vars`` holds python floats, copied from the
    device in one transfer (one stream sync per step on a GPU, not one per loss).
    """
    log_vars = {}
    for name, value in losses.items():
        if isinstance(value, torch.Tensor):
            log_vars[name] = value.mean()
        elif isinstance(value, list) and all(isinstance(v, torch.Tensor) for v in value):
            log_vars[name] = sum(v.mean() for v in value)
        else:
            raise TypeError(f"{name} is not a tensor or list of tensors")
    loss = sum(v for k, v in log_vars.items() if "loss" in k)
    log_vars["loss"] = loss
    host = torch.stack([torch.as_tensor(v).detach().float().reshape(()) for v in log_vars.values()]).cpu()
    floats = dict(zip(log_vars, host.tolist()))
    return loss, all_reduce_mean(floats) if is_dist() else floats


def batch_processor(model, data: dict, train_mode: bool) -> dict:
    """mmdet 2.0's batch processor: one batch's losses from ``model(**data)`` and
    :func:`parse_losses`: ``dict(loss, log_vars, num_samples)``."""
    device = next(model.parameters()).device
    data = batch_to_device(data, device)
    loss, log_vars = parse_losses(model(**data))
    return dict(loss=loss, log_vars=log_vars, num_samples=len(data["img_metas"]))


def train_step(model, data: dict, train_mode: bool) -> dict:
    """The runner's step: the detector's own ``train_step`` (``val_step`` outside training: mmdet's
    forward and its ``_parse_losses``, log vars averaged over ranks), called through ``model``, a
    :class:`~raydet.engine.dist.StepModule` or the DistributedDataParallel around one, so that
    DDP synchronises the gradients. Returns ``dict(loss, log_vars, num_samples)``; every rank
    must call it (the log vars' all_reduce)."""
    device = next(model.parameters()).device
    data = batch_to_device(data, device)
    return model(data, None, step="train" if train_mode else "val")


def _device(cfg) -> torch.device:
    name = cfg.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and is_dist():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)


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


def _data_cfg(cfg) -> dict:
    """The loader settings, with mmdet's deprecated ``imgs_per_gpu`` overriding ``samples_per_gpu``."""
    data = cfg.data
    spg = data.get("samples_per_gpu", 2)
    if "imgs_per_gpu" in data:
        warnings.warn(f'"imgs_per_gpu" is deprecated in MMDet V2.0. Please use "samples_per_gpu" instead; '
                      f'samples_per_gpu={data["imgs_per_gpu"]} (from imgs_per_gpu) is used', DeprecationWarning)
        logger.warning(f"Got imgs_per_gpu={data['imgs_per_gpu']} and samples_per_gpu={spg}; imgs_per_gpu="
                       f"{data['imgs_per_gpu']} is used in training")
        spg = data["imgs_per_gpu"]
    loader = dict(samples_per_gpu=spg, workers_per_gpu=data.get("workers_per_gpu", 2),
                  persistent_workers=data.get("persistent_workers", True),
                  pin_memory=data.get("pin_memory"))
    loader.update(data.get("train_dataloader", {}))
    return loader


#: mmdet keys that have no effect under raydet, and why; each one present is logged once per run.
INAPPLICABLE = {
    "gpu_ids": "devices are Ray's: ray.num_workers and ray.use_gpu choose them (--launcher none: one device, "
               "the config's `device`)",
    "dist_params": "the process group is set up by Ray's TorchConfig (gloo on CPU workers, cpu:gloo,cuda:nccl on "
                   "GPU workers), or by whoever initialised it",
    "evaluation.gpu_collect": "results are always gathered through the process group's CPU (gloo) side",
    "evaluation.tmpdir": "results are gathered through the process group, never through files",
}


def note_inapplicable_keys(cfg) -> list[str]:
    """Log, once per run, each key of :data:`INAPPLICABLE` the config sets and why it has no
    effect, and ``reset_flag`` of the logger hooks (raydet's runner clears the log buffer's output
    after every iteration, which is what ``reset_flag=True`` asks for). Returns the keys."""
    found = [key for key in INAPPLICABLE
             if (cfg.get(key) if "." not in key else (cfg.get(key.split(".")[0]) or {}).get(key.split(".")[1]))
             is not None]
    for key in found:
        logger.info(f"config key {key}: no effect under raydet: {INAPPLICABLE[key]}")
    if any("reset_flag" in h for h in (cfg.get("log_config") or {}).get("hooks", [])):
        found.append("log_config.hooks.reset_flag")
        logger.info("config key log_config.hooks.reset_flag: no effect: raydet's runner clears the log buffer's "
                    "output after every iteration (reset_flag=True's behaviour) whatever its value")
    return found


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


def _describe(dataset) -> str:
    """What a dataset was built from, for an error message."""
    inner = dataset
    while hasattr(inner, "dataset") and not hasattr(inner, "ann_file"):
        inner = inner.dataset
    source = getattr(inner, "ann_file", None)
    dropped = {k: v for k, v in (getattr(inner, "filtered", None) or {}).items() if k != "images" and v}
    held = (getattr(inner, "filtered", None) or {}).get("images")
    out = f"{type(dataset).__name__}" + (f" from {source}" if source else "")
    if held is not None:
        out += f": {held} images" + ("".join(f", {v} dropped as {k}" for k, v in dropped.items()))
    return out


def _run_iterations(cfg, loader) -> int:
    """The run's length in iterations at this world size."""
    if cfg.runner.type == "IterBasedRunner":
        return int(cfg.runner.max_iters)
    sampler = getattr(loader, "sampler", None)
    per_epoch = sampler.num_batches() if hasattr(sampler, "num_batches") else len(loader)
    return int(cfg.runner.max_epochs) * per_epoch


def _check_run_length(cfg, loader, cumulative_iters: int) -> None:
    """Gradient accumulation over more iterations than the run has would step once, at its end
    (with the mean of everything): a :class:`ConfigError` instead."""
    total = _run_iterations(cfg, loader)
    if cumulative_iters > total:
        raise ConfigError(f"optimizer_config.cumulative_iters={cumulative_iters} is more than the run's {total} "
                          f"iterations: the optimizer would step once, at the end; lower cumulative_iters")


def _check_evaluation_happens(cfg, eval_cfg: dict, by_iter: bool) -> None:
    """An evaluation schedule that never falls inside the run (``interval`` or ``start`` past its
    end) would train without a single evaluation or best checkpoint: a :class:`ConfigError`."""
    length = int(cfg.runner.max_iters if by_iter else cfg.runner.max_epochs)
    interval, start = int(eval_cfg.get("interval", 1)), eval_cfg.get("start")
    due = (0 < interval <= length) if start is None else (int(start) <= length)
    if not due:
        unit = "iterations" if by_iter else "epochs"
        when = f"interval={interval}" + (f", start={start}" if start is not None else "")
        raise ConfigError(f"evaluation.{when} never falls within the run's {length} {unit}: nothing would be "
                          f"evaluated and no best checkpoint kept; lower evaluation.interval (or use --no-validate)")


def _check_same_classes(train, val) -> None:
    """Label ``i`` must name the same class in training and evaluation."""
    a, b = tuple(getattr(train, "CLASSES", None) or ()), tuple(getattr(val, "CLASSES", None) or ())
    if a and b and a != b:
        raise DataError(f"the classes of data.val ({_describe(val)}) are {b}, those of data.train "
                        f"({_describe(train)}) are {a}: label i would be another class in evaluation; give both "
                        f"datasets classes=(...) in one order")


def check_training_inputs(model, datasets, cfg) -> None:
    """What can be known wrong before the first iteration, each a named error: the work_dir is
    not writable; a training set is empty (after filtering); the detector's ``num_classes`` is not
    the training set's number of classes. Runs on every rank, holds no collective."""
    from ..engine.checkpoint import check_work_dir
    from ..engine.hooks.num_class import check_num_classes
    check_work_dir(cfg.work_dir)
    for i, ds in enumerate(datasets):
        if len(ds) == 0:
            which = "data.train" if i == 0 else f"workflow phase {i} (data.val with the train pipeline)"
            raise DataError(f"{which} is empty, nothing to train on: {_describe(ds)}")
    check_num_classes(model, datasets[0], logger)


def build_training(model, dataset, cfg, validate=False, timestamp=None, meta=None, on_checkpoint=None,
                   extra_hooks=(), async_eval=False):
    """Everything ``train_detector`` runs, in this process (rank ``get_rank()`` of the initialised
    process group, or alone): loaders, DDP, optimizer, precision, hooks, resume/load. Returns the
    runner and its loaders; ``runner.run(loaders, cfg.workflow)`` trains. ``on_checkpoint(runner,
    path, ready_at)`` runs on every rank after each periodic checkpoint (see :class:`ReportHook`); ``extra_hooks`` are registered after
    mmdet's training hooks and before ``custom_hooks``. ``async_eval``: the caller evaluates
    checkpoints off the loop (the Ray launcher, for ``evaluation.async_eval=True``), so no
    :class:`EvalHook` is registered; without it that key is a :class:`ConfigError`."""
    import_custom_modules(cfg)  # custom hooks may live in the user's modules
    datasets = dataset if isinstance(dataset, (list, tuple)) else [dataset]
    check_training_inputs(model, datasets, cfg)
    rank, world = get_rank(), get_world_size()
    # mmcv's get_root_logger: the configured level on rank 0, errors only elsewhere
    logger.setLevel(cfg.get("log_level", "INFO") if rank == 0 else "ERROR")
    loader_cfg = _data_cfg(cfg)
    device = _device(cfg)
    if loader_cfg["pin_memory"] is None:  # page-locked batches make the copies to a GPU asynchronous
        loader_cfg["pin_memory"] = device.type == "cuda"
    procs = dict(mp_start_method=cfg.get("mp_start_method"), opencv_num_threads=cfg.get("opencv_num_threads"))
    if procs["opencv_num_threads"] is not None:
        import cv2
        cv2.setNumThreads(int(procs["opencv_num_threads"]))  # this process too (inline loading, evaluation)
    note_inapplicable_keys(cfg)
    loaders = [build_dataloader(ds, loader_cfg["samples_per_gpu"], loader_cfg["workers_per_gpu"],
                                num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed,
                                persistent_workers=loader_cfg["persistent_workers"],
                                pin_memory=loader_cfg["pin_memory"], **procs) for ds in datasets]
    if cfg.get("cudnn_benchmark"):
        torch.backends.cudnn.benchmark = True
    model = sync_batchnorm(model, cfg.get("model"), device, world).to(device)
    if cfg.get("fp16") is not None or (cfg.get("optimizer_config") or {}).get("type", "").endswith("Fp16OptimizerHook"):
        from mmcv.runner import wrap_fp16_model
        # mmdet's @auto_fp16/@force_fp32 regions come alive: its losses stay in float32 under autocast
        wrap_fp16_model(model)
    model = StepModule(model)
    if is_dist() and world > 1:  # a group of one has nothing to synchronise
        # mmdet's broadcast_buffers=False, by its new name: each rank's BatchNorm statistics stay its
        # own between steps (they are equal at the start: same seed, same checkpoint)
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, forward_sync_buffers=False,
            find_unused_parameters=cfg.get("find_unused_parameters", False))
    optimizer_cfg = copy.deepcopy(dict(cfg.optimizer))
    lr_cfg = copy.deepcopy(dict(cfg.get("lr_config") or {}))
    auto = cfg.get("auto_scale_lr") or {}
    if auto.get("enable"):
        # mmdet's rule, re-applied on every (re)start: the world size may have changed
        batch = world * loader_cfg["samples_per_gpu"]
        scale = batch / auto.get("base_batch_size", 16)
        optimizer_cfg["lr"] *= scale
        if lr_cfg.get("policy") == "OneCycle":  # its peak is given apart from the optimizer's LR
            peak = lr_cfg["max_lr"]
            lr_cfg["max_lr"] = [v * scale for v in peak] if isinstance(peak, (list, tuple)) else peak * scale
        logger.info(f"world size {world}: LR scaled by {scale:.4g} to {optimizer_cfg['lr']:.6g}"
                    + (f" (OneCycle max_lr {lr_cfg['max_lr']})" if "max_lr" in lr_cfg else "")
                    + f" for a total batch of {batch} ({world} x {loader_cfg['samples_per_gpu']}) against "
                    f"base_batch_size {auto.get('base_batch_size', 16)}")
    optimizer = build_optimizer(model, optimizer_cfg)
    opt_cfg, fp16 = optimizer_hook_config(cfg)
    _check_run_length(cfg, loaders[0], opt_cfg.get("cumulative_iters", 1))
    precision = Precision(fp16, device)
    ckpt_cfg = dict(cfg.get("checkpoint_config") or {})
    # raydet's key: rank 0 writes checkpoint files in a background thread unless it is False
    writer = CheckpointWriter(background=ckpt_cfg.pop("async_save", True))
    common = dict(logger=logger, meta=meta, autocast=precision.autocast, timestamp=timestamp, checkpoint_writer=writer)
    if cfg.runner.type == "IterBasedRunner":
        runner = IterBasedRunner(model, train_step, optimizer, cfg.work_dir, cfg.runner.max_iters, **common)
    else:
        runner = Runner(model, train_step, optimizer, cfg.work_dir, cfg.runner.max_epochs, **common)

    # mmcv's register_training_hooks, in its order
    if lr_cfg:
        runner.register_hook(build_lr_hook(lr_cfg))
    if cfg.get("momentum_config"):
        runner.register_hook(build_lr_hook(cfg.momentum_config, MOMENTUM_POLICIES, "momentum_config"))
    runner.register_hook(OptimizerHook(precision, grad_clip=opt_cfg.get("grad_clip"),
                                       cumulative_iters=opt_cfg.get("cumulative_iters", 1)))
    ckpt_cfg["meta"] = dict(ckpt_cfg.get("meta") or {}, config=cfg.pretty_text,
                            CLASSES=list(getattr(datasets[0], "CLASSES", None) or []))
    by_iter = cfg.runner.type == "IterBasedRunner"  # sections the config leaves out act by iteration too
    if by_iter:
        ckpt_cfg.setdefault("by_epoch", False)
    runner.register_hook(CheckpointHook(**ckpt_cfg, on_saved=on_checkpoint))
    runner.register_hook(IterTimerHook())
    log_cfg = dict(cfg.get("log_config") or dict(interval=50, hooks=[dict(type="TextLoggerHook")]))
    for info in log_cfg.get("hooks", []):
        info = dict(info, **({"by_epoch": False} if by_iter else {}))
        kind = {"TextLoggerHook": TextLoggerHook, "TensorboardLoggerHook": TensorboardLoggerHook}[info.pop("type")]
        info.setdefault("interval", log_cfg.get("interval", 50))
        runner.register_hook(kind(**info))
    runner.register_hook(DistSamplerSeedHook())
    detector = unwrap(model)
    if training_state(detector):  # YOLOX's input size, Dynamic R-CNN's statistics: exact resume
        runner.register_hook(ModelStateHook(lambda: training_state(detector),
                                            lambda state: load_training_state(detector, state)))
    if validate:
        if cfg.data.get("val") is None:
            raise ConfigError("validation is on but data.val is not set (use --no-validate)")
        val_ds = build_dataset(cfg.data.val, seed=cfg.seed, test_mode=True)
        if len(val_ds) == 0:
            raise DataError(f"data.val is empty, nothing to evaluate on: {_describe(val_ds)} (or use --no-validate)")
        eval_cfg = dict(cfg.get("evaluation") or {})
        if eval_cfg.pop("async_eval", False) and not async_eval:
            raise ConfigError("evaluation.async_eval=True evaluates each checkpoint as a Ray validation task: it "
                              "needs the Ray launcher (not --launcher none, nor train_detector in this process)")
        if by_iter and "interval" not in eval_cfg:  # mmdet's default would evaluate every iteration
            raise ConfigError("IterBasedRunner evaluates every evaluation.interval iterations: set "
                              "evaluation=dict(interval=N) (or use --no-validate)")
        check_metrics(val_ds, eval_cfg.get("metric", "bbox"), model, save_best=eval_cfg.get("save_best"),
                      eval_kwargs={k: v for k, v in eval_cfg.items() if k in EVALUATE_KEYS})
        _check_evaluation_happens(cfg, eval_cfg, by_iter)
        _check_same_classes(datasets[0], val_ds)
    if validate and not async_eval:
        val_loader_cfg = dict(cfg.data.get("val_dataloader", {}))
        val_loader = build_dataloader(val_ds, val_loader_cfg.get("samples_per_gpu", 1),
                                      val_loader_cfg.get("workers_per_gpu", loader_cfg["workers_per_gpu"]),
                                      num_replicas=world, rank=rank, shuffle=False,
                                      persistent_workers=False, **procs)
        eval_hook = EvalHook(val_loader, autocast=precision.autocast, **eval_cfg)
    for hook in extra_hooks:
        runner.register_hook(hook)
    for i, hook_cfg in enumerate(cfg.get("custom_hooks") or []):
        hook_cfg = dict(hook_cfg)
        priority = hook_cfg.pop("priority", None)  # default: the hook class's own (NORMAL for most)
        runner.register_hook(HOOKS.build(hook_cfg, f"custom_hooks.{i}"), priority=priority)
    if validate and not async_eval:
        # after the custom hooks: one of the evaluation's priority (49, mmdet's choice for its EMA
        # hooks, to come before evaluation) then acts first, as it does in mmdet (EvalHook at 70)
        runner.register_hook(eval_hook)

    resume = resume_path(cfg)
    if resume:
        runner.resume(resume)
    elif cfg.get("load_from"):
        runner.load_checkpoint(cfg.load_from)
    return runner, loaders


def train_detector(model, dataset, cfg, distributed=False, validate=False, timestamp=None, meta=None):
    """mmdet 2.x's entry point, in this process. ``distributed=False`` trains alone;
    ``distributed=True`` trains as this process's rank of an initialised process group (torchrun,
    or a Ray Train worker), as mmdet's does. Returns the runner. To ship ``model`` and ``dataset``
    to Ray workers from a driver, use ``raydet.train_detector`` (:mod:`raydet.launch`)."""
    if distributed and not is_dist():
        raise ConfigError("train_detector(distributed=True) runs as one rank of an initialised process group; "
                          "none is initialised here. To train on Ray workers, call raydet.train_detector("
                          "model, dataset, cfg) instead")
    resume = resume_path(cfg)
    cfg.resume_from, cfg.auto_resume = resume, False
    cfg.seed = run_seed(cfg, resume)
    runner, loaders = build_training(model, dataset, cfg, validate=validate,
                                     timestamp=timestamp or time.strftime("%Y%m%d_%H%M%S"),
                                     meta=dict(meta or {}, seed=cfg.seed))
    runner.run(loaders, cfg.workflow)
    return runner


def env_info() -> dict:
    import platform
    import sys

    import torchvision
    info = {"sys.platform": sys.platform, "Python": sys.version.replace("\n", ""),
            "PyTorch": torch.__version__, "TorchVision": torchvision.__version__,
            "CUDA available": torch.cuda.is_available(), "machine": platform.machine(),
            "torch threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["GPU 0"] = torch.cuda.get_device_name(0)
    return info


def train_from_config(cfg, validate=True, timestamp=None, on_checkpoint=None, deterministic=None, extra_hooks=(),
                      exp_name=None, drawn_seed=None, source=None, async_eval=False):
    """Build the detector and datasets from ``cfg`` in this process and train (the body of
    ``raydet train --launcher none`` and of every Ray worker; every rank of the process group
    calls it). ``source``: the config file's path where this process sees it (to never write the
    work_dir's config copy over it). ``drawn_seed``: the launcher's seed for a config without one (see
    :func:`run_seed`). Returns the finished runner."""
    from ..models import build_detector
    import_custom_modules(cfg)  # a Ray worker gets the config as a dict: import what it registers
    resume = resume_path(cfg)
    cfg.resume_from, cfg.auto_resume = resume, False
    cfg.seed = run_seed(cfg, resume, drawn_seed)
    det = cfg.get("deterministic", False) if deterministic is None else deterministic
    set_random_seed(cfg.seed, det)
    timestamp = timestamp or time.strftime("%Y%m%d_%H%M%S")
    meta = dict(env_info="\n".join(f"{k}: {v}" for k, v in env_info().items()), seed=cfg.seed,
                exp_name=exp_name or os.path.basename(cfg.filename or "config.py"))
    model = build_detector(cfg.model, logger=logger, train_cfg=cfg.get("train_cfg"), test_cfg=cfg.get("test_cfg"))
    datasets = [build_dataset(cfg.data.train, seed=cfg.seed)]
    if len(cfg.workflow) == 2:
        val = copy.deepcopy(dict(cfg.data.val))
        train = cfg.data.train  # mmdet's rule: the train pipeline, or a wrapper's dataset's
        val["pipeline"] = train.get("pipeline", (train.get("dataset") or {}).get("pipeline"))
        val.pop("test_mode", None)
        datasets.append(build_dataset(val, seed=cfg.seed))
    model.CLASSES = datasets[0].CLASSES
    saved = copy.deepcopy(cfg)  # as given: build_training adds nothing a re-run would not
    runner, loaders = build_training(model, datasets, cfg, validate=validate, timestamp=timestamp, meta=meta,
                                     on_checkpoint=on_checkpoint, extra_hooks=extra_hooks, async_eval=async_eval)
    if get_rank() == 0:  # once every input has proven usable
        save_run_config(saved, cfg.work_dir, meta["exp_name"], logger, source=source or cfg.filename)
    runner.run(loaders, cfg.workflow)
    if get_rank() == 0:  # what a person looks at first: the curves, and a few predictions
        from ..analysis import write_run_curves
        from ..visualization import draw_predictions
        write_run_curves(runner, logger)
        evals = [h for h in runner.hooks if isinstance(h, EvalHook)]
        if evals:
            draw_predictions(runner.model, evals[0].dataloader.dataset, os.path.join(cfg.work_dir, "vis"),
                             keep_existing=not runner.resumed_from)
            runner.model.train()
    return runner
