"""``train(parts, plan)``: the one place a run is trained, by the CLI's in-process launcher, every
Ray worker and mmdet's ``train_detector`` alike (detectron2's ``do_train``)."""
from __future__ import annotations

import logging
import os
import platform
import sys

import torch

from ..config.frozen import freeze
from ..config.loader import run_config_text, save_run_config
from ..engine import EvalHook, Runner
from ..engine.dist import get_rank
from ..engine.seed import set_random_seed
from ..engine.step import train_step
from .build import Parts, build_parts
from .plan import RunPlan, plan_run

logger = logging.getLogger("raydet")


def env_info() -> dict:
    """The facts of this process's machine a checkpoint records (mmdet's ``collect_env``, short)."""
    import torchvision
    info = {"sys.platform": sys.platform, "Python": sys.version.replace("\n", ""),
            "PyTorch": torch.__version__, "TorchVision": torchvision.__version__,
            "CUDA available": torch.cuda.is_available(), "machine": platform.machine(),
            "torch threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["GPU 0"] = torch.cuda.get_device_name(0)
    return info


def run_meta(plan: RunPlan, meta: dict | None = None) -> dict:
    """The meta every checkpoint of the run carries: ``meta`` (a caller's), the environment, the
    seed, the experiment's name and the launch (see :attr:`RunPlan.launch`)."""
    return dict(meta or {}, env_info="\n".join(f"{k}: {v}" for k, v in env_info().items()), seed=plan.seed,
                exp_name=plan.exp_name, launch=plan.launch)


def build_from_config(cfg, plan: RunPlan, **kwargs) -> Parts:
    """Seed this process for ``plan``, then build the parts of ``cfg`` (see :func:`build_parts`;
    ``kwargs`` go there). Every rank calls it."""
    set_random_seed(plan.seed, plan.deterministic)
    parts = build_parts(cfg, plan.seed, meta=run_meta(plan, kwargs.pop("meta", None)), validate=plan.validate,
                        **kwargs)
    parts.config_text = run_config_text(cfg)
    return parts


def make_runner(parts: Parts, plan: RunPlan) -> Runner:
    """The runner of ``parts`` in ``plan.work_dir``, its hooks registered in mmcv's order."""
    length = dict(max_epochs=parts.length) if parts.by_epoch else dict(max_iters=parts.length)
    runner = Runner(parts.model, train_step, parts.optimizer, plan.work_dir, logger=logger, meta=parts.meta,
                    autocast=parts.precision.autocast, timestamp=plan.timestamp, checkpoint_writer=parts.writer,
                    **length)
    for hook, priority in parts.hooks:
        runner.register_hook(hook, priority=priority)
    return runner


def train(parts: Parts, plan: RunPlan) -> Runner:
    """Train ``parts`` as ``plan`` says: from ``plan.start`` (exactly: strict resume) or from
    ``parts.load_from``'s weights or from scratch, into ``plan.work_dir``. Every rank calls it.
    Rank 0 keeps the run's config in the work_dir once every input has proven usable, and at the
    end draws the curves and a few predictions. Returns the finished runner."""
    runner = make_runner(parts, plan)
    logger.info(f"seed {plan.seed} ({plan.seed_from})")
    if plan.start:
        runner.resume(plan.start)
    elif parts.load_from:
        runner.load_checkpoint(parts.load_from)
    if get_rank() == 0 and parts.config_text:
        save_run_config(parts.config_text, plan.work_dir, plan.exp_name, logger, source=plan.source)
    runner.run(parts.loaders, parts.workflow)
    if get_rank() == 0:
        show(runner, plan)
    return runner


def show(runner, plan: RunPlan) -> None:
    """What a person looks at first: the curves, and a few predictions of the evaluation set."""
    from ..analysis import write_run_curves
    from ..visualization import draw_predictions
    write_run_curves(runner, logger)
    evals = [h for h in runner.hooks if isinstance(h, EvalHook)]
    if evals:
        draw_predictions(runner.model, evals[0].dataloader.dataset, os.path.join(plan.work_dir, "vis"),
                         keep_existing=not runner.resumed_from)
        runner.model.train()


def train_from_config(cfg, validate: bool = True, **kwargs) -> Runner:
    """Build and train ``cfg`` (a loaded config; the run takes a read-only copy) in this process,
    as rank ``get_rank()`` of an initialised process group or alone. ``kwargs``: :func:`plan_run`'s
    (``work_dir``, ``seed``, ``auto_resume`` — off by default here, as in mmdet —, ...) and
    :func:`build_parts`'s (``on_checkpoint``, ``extra_hooks``). Returns the finished runner."""
    build = {k: kwargs.pop(k) for k in ("on_checkpoint", "extra_hooks") if k in kwargs}
    cfg = freeze(cfg)
    kwargs.setdefault("auto_resume", False)
    plan = plan_run(cfg, validate=validate, **kwargs)
    return train(build_from_config(cfg, plan, **build), plan)
