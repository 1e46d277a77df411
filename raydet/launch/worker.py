"""What runs on every Ray Train worker."""
from __future__ import annotations

import logging
import os
import sys

import ray
import ray.train
import torch
from mmengine import Config

from ..engine.hooks import PRIORITIES, Hook

CKPT_FILE = "checkpoint.pth"


def _setup_logging(rank: int) -> logging.Logger:
    log = logging.getLogger("raydet")
    if rank == 0 and not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
        log.addHandler(handler)
    log.propagate = False
    return log


def _meta_iter(path: str) -> int:
    from ..engine.checkpoint import load_file
    return int(load_file(path)["meta"]["iter"])


def choose_resume(work_dir: str, resume_from: str | None) -> str | None:
    """Rank 0's choice of where to continue, broadcast to all ranks (a collective).

    The newer of Ray's ``get_checkpoint()`` and the work_dir's newest loadable checkpoint:
    Ray's can be one behind the last one written (its controller polls reports every ~2 s), and
    resuming is idempotent either way. The driver moves an old run aside unless it is meant to be
    resumed, so whatever the work_dir holds belongs to this run. With neither, ``resume_from``."""
    from ..engine.checkpoint import find_latest_checkpoint
    from ..engine.dist import broadcast_object, get_rank
    choice = None
    if get_rank() == 0:
        candidates = []
        ckpt = ray.train.get_checkpoint()
        if ckpt is not None and os.path.exists(os.path.join(ckpt.path, CKPT_FILE)):
            candidates.append(os.path.join(ckpt.path, CKPT_FILE))
        latest = find_latest_checkpoint(work_dir) if os.path.isdir(work_dir) else None
        if latest:
            candidates.append(latest)
        choice = max(candidates, key=_meta_iter) if candidates else resume_from
    return broadcast_object(choice)


class RayReportHook(Hook):
    """Reports each checkpoint to Ray Train, after the iteration's or epoch's log line is written.

    The :class:`CheckpointHook` calls :meth:`on_saved` (on every rank); the report itself, a
    barrier that blocks once the driver is gone, waits for this hook's turn at LOWEST priority, so
    a worker killed while blocked there has already logged the checkpointed iteration. Every rank
    reports once per checkpoint; rank 0 attaches the file, hard-linked into a Ray checkpoint
    directory of the run dir so that Ray's bookkeeping costs no copy.
    """

    priority = PRIORITIES["LOWEST"]

    def __init__(self, upload_mode: str):
        self.upload_mode, self.pending = upload_mode, []

    def on_saved(self, runner, path):
        self.pending.append(path)

    def _flush(self, runner):
        for path in self.pending:
            self.report(runner, path)
        self.pending = []

    after_train_iter = after_train_epoch = _flush

    def report(self, runner, path, metrics=None, name=None):
        from ray.train import Checkpoint, CheckpointUploadMode

        from ..engine.dist import get_rank
        name = name or "checkpoint_" + os.path.basename(path)[: -len(".pth")]
        epochs, iters = runner.progress()
        metrics = metrics or dict(epoch=epochs, iter=iters, **{
            k: v for k, v in runner.log_buffer.output.items() if isinstance(v, (int, float))})
        checkpoint, mode = None, CheckpointUploadMode.SYNC
        if get_rank() == 0:
            directory = os.path.join(runner.work_dir, name)
            os.makedirs(directory, exist_ok=True)
            target = os.path.join(directory, CKPT_FILE)
            if os.path.exists(target):
                os.remove(target)
            os.link(path, target)
            checkpoint = Checkpoint.from_directory(directory)
            mode = CheckpointUploadMode.NO_UPLOAD if self.upload_mode == "sync" else CheckpointUploadMode.ASYNC
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name, checkpoint_upload_mode=mode)


def train_loop(config: dict) -> dict:
    """The Ray Train worker function: rebuild the config, resume, train, report final metrics."""
    from ..apis import build_training, train_from_config
    from ..apis.train import init_random_seed, set_random_seed
    from ..engine.dist import get_rank

    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    log = _setup_logging(rank)
    cfg = Config(config["cfg"])  # a plain dict: the config file need not exist on this node
    if cfg.get("device") == "cuda" or (cfg.get("device") is None and torch.cuda.is_available()):
        from ray.train.torch import get_device
        torch.cuda.set_device(get_device())
    resume = choose_resume(cfg.work_dir, cfg.get("resume_from"))
    cfg.resume_from = resume
    cfg.auto_resume = False
    reporter = RayReportHook(config.get("upload_mode", "sync"))
    if resume:
        log.info(f"attempt on world size {ctx.get_world_size()} resumes from {resume}")
    if config.get("objects") is not None:  # train_detector(model, dataset, cfg, distributed=True)
        model, datasets = ray.get(config["objects"])
        cfg.seed = init_random_seed(cfg.get("seed"))
        set_random_seed(cfg.seed, cfg.get("deterministic", False))
        runner, loaders = build_training(model, datasets, cfg, validate=config["validate"],
                                         timestamp=config["timestamp"], meta=config.get("meta"),
                                         on_checkpoint=reporter.on_saved, extra_hooks=[reporter])
        runner.run(loaders, cfg.workflow)
    else:
        runner = train_from_config(cfg, validate=config["validate"], timestamp=config["timestamp"],
                                   on_checkpoint=reporter.on_saved, extra_hooks=[reporter],
                                   exp_name=os.path.basename(config.get("filename") or "config.py"))
    evals = [h.last_metrics for h in runner.hooks if getattr(h, "last_metrics", None)]
    final = dict(epoch=runner.epoch, iter=runner.iter, done=True,
                 **{k: v for k, v in (evals[0] if evals else {}).items() if isinstance(v, (int, float))})
    # Ray's Result.metrics are those of the last reported checkpoint: report the final state with
    # the final evaluation once more.
    latest = os.path.realpath(os.path.join(runner.work_dir, "latest.pth"))
    reporter.report(runner, latest, metrics=final, name="checkpoint_final")
    return final if get_rank() == 0 else None
