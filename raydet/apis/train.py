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
from ..engine import (CheckpointHook, DistSamplerSeedHook, EvalHook, IterTimerHook, OptimizerHook,
                      Precision, Runner, TensorboardLoggerHook, TextLoggerHook, build_lr_hook,
                      build_optimizer, find_latest_checkpoint)
from ..engine.dist import all_reduce_mean, broadcast_object, get_rank, get_world_size, is_dist
from ..engine.hooks import HOOKS, MOMENTUM_POLICIES
from ..errors import ConfigError

logger = logging.getLogger("raydet")


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


def parse_losses(losses: dict) -> tuple[torch.Tensor, dict]:
    """``(loss, log_vars)`` from a model's loss dict.

    A tensor value becomes its mean; a list of tensors the sum of their means; anything else
    raises ``TypeError`` naming the key. ``loss`` is the sum of the entries whose key contains
    ``"loss"``. With torch.distributed initialised, every log var is averaged over ranks (one
    all_reduce; every rank must call this). ``log_vars`` holds python floats.
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
    floats = {k: float(v.detach()) for k, v in log_vars.items()}
    return loss, all_reduce_mean(floats) if is_dist() else floats


def _to_device(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, list):
        return [_to_device(v, device) for v in value]
    return value


def batch_processor(model, data: dict, train_mode: bool) -> dict:
    """One batch's losses: ``dict(loss, log_vars, num_samples)``."""
    device = next(model.parameters()).device
    data = {k: (v if k == "img_metas" else _to_device(v, device)) for k, v in data.items()}
    loss, log_vars = parse_losses(model(**data))
    return dict(loss=loss, log_vars=log_vars, num_samples=len(data["img_metas"]))


def _device(cfg) -> torch.device:
    name = cfg.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and is_dist():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)


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
                  pin_memory=data.get("pin_memory", False))
    loader.update(data.get("train_dataloader", {}))
    return loader


def build_training(model, dataset, cfg, validate=False, timestamp=None, meta=None, on_checkpoint=None,
                   extra_hooks=()):
    """Everything ``train_detector`` runs, in this process (rank ``get_rank()`` of the initialised
    process group, or alone): loaders, DDP, optimizer, precision, hooks, resume/load. Returns the
    runner and its loaders; ``runner.run(loaders, cfg.workflow)`` trains. ``on_checkpoint(runner,
    path)`` runs on every rank after each periodic checkpoint; ``extra_hooks`` are registered after
    mmdet's training hooks and before ``custom_hooks``."""
    datasets = dataset if isinstance(dataset, (list, tuple)) else [dataset]
    rank, world = get_rank(), get_world_size()
    # mmcv's get_root_logger: the configured level on rank 0, errors only elsewhere
    logger.setLevel(cfg.get("log_level", "INFO") if rank == 0 else "ERROR")
    loader_cfg = _data_cfg(cfg)
    loaders = [build_dataloader(ds, loader_cfg["samples_per_gpu"], loader_cfg["workers_per_gpu"],
                                num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed,
                                persistent_workers=loader_cfg["persistent_workers"],
                                pin_memory=loader_cfg["pin_memory"]) for ds in datasets]
    device = _device(cfg)
    if cfg.get("cudnn_benchmark"):
        torch.backends.cudnn.benchmark = True
    model = model.to(device)
    if is_dist() and world > 1:  # a group of one has nothing to synchronise
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False,
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
    precision = Precision(cfg.get("fp16"), device)
    runner = Runner(model, batch_processor, optimizer, cfg.work_dir, cfg.runner.max_epochs, logger=logger,
                    meta=meta, autocast=precision.autocast, timestamp=timestamp)

    # mmcv's register_training_hooks, in its order
    if lr_cfg:
        runner.register_hook(build_lr_hook(lr_cfg))
    if cfg.get("momentum_config"):
        runner.register_hook(build_lr_hook(cfg.momentum_config, MOMENTUM_POLICIES, "momentum_config"))
    opt_cfg = dict(cfg.get("optimizer_config") or {})
    opt_cfg.pop("type", None)
    runner.register_hook(OptimizerHook(precision, **opt_cfg))
    ckpt_cfg = dict(cfg.get("checkpoint_config") or {})
    ckpt_cfg["meta"] = dict(ckpt_cfg.get("meta") or {}, config=cfg.pretty_text,
                            CLASSES=list(getattr(datasets[0], "CLASSES", None) or []))
    runner.register_hook(CheckpointHook(**ckpt_cfg, on_saved=on_checkpoint))
    runner.register_hook(IterTimerHook())
    log_cfg = dict(cfg.get("log_config") or dict(interval=50, hooks=[dict(type="TextLoggerHook")]))
    for info in log_cfg.get("hooks", []):
        info = dict(info)
        kind = {"TextLoggerHook": TextLoggerHook, "TensorboardLoggerHook": TensorboardLoggerHook}[info.pop("type")]
        info.setdefault("interval", log_cfg.get("interval", 50))
        runner.register_hook(kind(**info))
    runner.register_hook(DistSamplerSeedHook())
    if validate:
        if cfg.data.get("val") is None:
            raise ConfigError("validation is on but data.val is not set (use --no-validate)")
        val_ds = build_dataset(cfg.data.val, seed=cfg.seed, test_mode=True)
        val_loader_cfg = dict(cfg.data.get("val_dataloader", {}))
        val_loader = build_dataloader(val_ds, val_loader_cfg.get("samples_per_gpu", 1),
                                      val_loader_cfg.get("workers_per_gpu", loader_cfg["workers_per_gpu"]),
                                      num_replicas=world, rank=rank, shuffle=False,
                                      persistent_workers=False)
        eval_cfg = dict(cfg.get("evaluation") or {})
        runner.register_hook(EvalHook(val_loader, autocast=precision.autocast, **eval_cfg))
    for hook in extra_hooks:
        runner.register_hook(hook)
    for i, hook_cfg in enumerate(cfg.get("custom_hooks") or []):
        hook_cfg = dict(hook_cfg)
        priority = hook_cfg.pop("priority", None)  # default: the hook class's own (NORMAL for most)
        runner.register_hook(HOOKS.build(hook_cfg, f"custom_hooks.{i}"), priority=priority)

    resume = cfg.get("resume_from")
    if resume is None and cfg.get("auto_resume"):
        resume = find_latest_checkpoint(cfg.work_dir)
    if resume:
        runner.resume(resume)
    elif cfg.get("load_from"):
        runner.load_checkpoint(cfg.load_from)
    return runner, loaders


def train_detector(model, dataset, cfg, distributed=False, validate=False, timestamp=None, meta=None):
    """mmdet 2.x's entry point. ``distributed=False`` trains in this process and returns the
    runner; ``distributed=True`` ships ``model`` and ``dataset`` once through Ray's object store
    to ``cfg.ray.num_workers`` workers (see :mod:`raydet.launch`) and returns Ray's ``Result``."""
    if distributed and not is_dist():
        from ..launch import train_detector_on_ray
        return train_detector_on_ray(model, dataset, cfg, validate=validate, timestamp=timestamp, meta=meta)
    cfg.seed = init_random_seed(cfg.get("seed"))
    runner, loaders = build_training(model, dataset, cfg, validate=validate,
                                     timestamp=timestamp or time.strftime("%Y%m%d_%H%M%S"), meta=meta)
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
                      exp_name=None):
    """Build the detector and datasets from ``cfg`` in this process and train (the body of
    ``raydet train --launcher none`` and of every Ray worker). Returns the finished runner."""
    from ..models import build_detector
    cfg.seed = init_random_seed(cfg.get("seed"))
    det = cfg.get("deterministic", False) if deterministic is None else deterministic
    set_random_seed(cfg.seed, det)
    timestamp = timestamp or time.strftime("%Y%m%d_%H%M%S")
    meta = dict(env_info="\n".join(f"{k}: {v}" for k, v in env_info().items()), seed=cfg.seed,
                exp_name=exp_name or os.path.basename(cfg.filename or "config.py"))
    model = build_detector(cfg.model, logger=logger)
    datasets = [build_dataset(cfg.data.train, seed=cfg.seed)]
    if len(cfg.workflow) == 2:
        val = copy.deepcopy(dict(cfg.data.val))
        val["pipeline"] = cfg.data.train.pipeline
        val.pop("test_mode", None)
        datasets.append(build_dataset(val, seed=cfg.seed))
    model.CLASSES = datasets[0].CLASSES
    runner, loaders = build_training(model, datasets, cfg, validate=validate, timestamp=timestamp, meta=meta,
                                     on_checkpoint=on_checkpoint, extra_hooks=extra_hooks)
    runner.run(loaders, cfg.workflow)
    return runner
