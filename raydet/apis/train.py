"""mmdet 2.x's ``apis/train.py``: seeding, loss parsing, the batch processor and ``train_detector``."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..data.loader import batch_to_device
from ..engine.dist import all_reduce_mean, broadcast_object, get_rank, is_dist
from ..engine.seed import set_random_seed
from ..errors import ConfigError
from ..run import build_parts, plan_run, train
from ..run.train import run_meta

__all__ = ["set_random_seed", "init_random_seed", "parse_losses", "batch_processor", "train_detector"]


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


def train_detector(model, dataset, cfg, distributed=False, validate=False, timestamp=None, meta=None):
    """mmdet 2.x's entry point, in this process. ``distributed=False`` trains alone;
    ``distributed=True`` trains as this process's rank of an initialised process group (torchrun,
    or a Ray Train worker), as mmdet's does. The caller seeds (mmdet's ``set_random_seed``). Resumes
    from ``cfg.resume_from``, else with ``cfg.auto_resume`` from the work_dir's newest checkpoint
    (see :mod:`raydet.run.plan`). Returns the runner. To ship ``model`` and ``dataset`` to Ray
    workers from a driver, use ``raydet.train_detector`` (:mod:`raydet.launch`)."""
    from ..config.frozen import freeze
    if distributed and not is_dist():
        raise ConfigError("train_detector(distributed=True) runs as one rank of an initialised process group; "
                          "none is initialised here. To train on Ray workers, call raydet.train_detector("
                          "model, dataset, cfg) instead")
    cfg = freeze(cfg)
    plan = plan_run(cfg, validate=validate, auto_resume=False)
    if timestamp:
        plan = dataclasses.replace(plan, timestamp=timestamp)
    datasets = dataset if isinstance(dataset, (list, tuple)) else [dataset]
    parts = build_parts(cfg, plan.seed, model=model, datasets=datasets, meta=run_meta(plan, meta), validate=validate)
    return train(parts, plan)
