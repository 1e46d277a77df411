"""What runs on every Ray Train worker."""
from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time

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


def _local_file(ckpt, work_dir: str) -> str:
    """This node's path to the file of Ray's checkpoint ``ckpt``: in place when the run dir is on
    a filesystem this node sees (the work_dir itself, or a shared volume), otherwise downloaded
    from the storage (a bucket) into ``work_dir/downloaded/``."""
    path = os.path.join(ckpt.path, CKPT_FILE)
    if getattr(ckpt.filesystem, "type_name", "local") == "local" and os.path.exists(path):
        return path
    target = os.path.join(work_dir, "downloaded", os.path.basename(ckpt.path.rstrip("/")))
    if not os.path.exists(os.path.join(target, CKPT_FILE)):
        # into a temporary sibling, then renamed: ranks sharing this node never read a partial file
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".download-", dir=os.path.dirname(target))
        ckpt.to_directory(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another rank of this node was first
            shutil.rmtree(tmp, ignore_errors=True)
    return os.path.join(target, CKPT_FILE)


def choose_resume(work_dir: str, resume_from: str | None) -> str | None:
    """Where to continue, agreed by all ranks (collectives: every rank calls this).

    Rank 0 picks the newer (by meta iter) of Ray's ``get_checkpoint()`` and the work_dir's newest
    loadable checkpoint: Ray's can be one behind the last one written (its controller polls
    reports every ~2 s), and resuming is idempotent either way. The driver moves an old run aside
    unless it is meant to be resumed, so whatever the work_dir holds belongs to this run. With
    neither, ``resume_from``. A work_dir file is used only if every rank can read it (a node-local
    work_dir with ``ray.storage_path`` on a bucket: other nodes then load Ray's checkpoint, each
    downloading its own copy)."""
    from ..engine.checkpoint import find_latest_checkpoint
    from ..engine.dist import all_reduce_mean, broadcast_object, get_rank
    choice = None
    if get_rank() == 0:
        candidates = []
        ckpt = ray.train.get_checkpoint()
        if ckpt is not None:
            candidates.append(("ray", _local_file(ckpt, work_dir)))
        latest = find_latest_checkpoint(work_dir) if os.path.isdir(work_dir) else None
        if latest:
            candidates.append(("file", latest))
        choice = max(candidates, key=lambda c: _meta_iter(c[1])) if candidates else (
            ("file", resume_from) if resume_from else None)
    choice = broadcast_object(choice)
    if choice is None:
        return None
    kind, path = choice
    if kind == "file" and all_reduce_mean({"ok": float(os.path.exists(path))})["ok"] < 1.0:
        if ray.train.get_checkpoint() is None:
            from ..errors import CheckpointError
            raise CheckpointError(f"{path}: not readable on every node and Ray has no checkpoint of this run")
        kind, path = "ray", None
    if kind == "ray" and (get_rank() != 0 or path is None):  # each node needs its own copy
        path = _local_file(ray.train.get_checkpoint(), work_dir)
    return path


class RayReportHook(Hook):
    """Reports each checkpoint to Ray Train, after the iteration's or epoch's log line is written.

    The :class:`CheckpointHook` calls :meth:`on_saved` (on every rank); the report itself, a
    barrier that blocks once the driver is gone, waits for this hook's turn at LOWEST priority, so
    a worker killed while blocked there has already logged the checkpointed iteration. Every rank
    reports once per checkpoint; rank 0 attaches the file, hard-linked into a directory of the
    work_dir (no copy). ``upload``: ``'none'`` when the work_dir is Ray's run dir (the checkpoint
    is already in place), else ``'sync'`` (the report returns once the copy in ``storage_path`` is
    complete) or ``'async'`` (copied by a background thread while training goes on; Ray removes
    the hard-linked directory afterwards, never the checkpoint file itself). The time each report
    held up training is logged.
    """

    priority = PRIORITIES["LOWEST"]

    def __init__(self, upload: str):
        if upload not in ("none", "sync", "async"):
            raise ValueError(f"upload must be none, sync or async, got {upload!r}")
        self.upload, self.pending = upload, []

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
        start = time.perf_counter()
        name = name or "checkpoint_" + os.path.basename(path)[: -len(".pth")]
        epochs, iters = runner.progress()
        metrics = metrics or dict(epoch=epochs, iter=iters, **{
            k: v for k, v in runner.log_buffer.output.items() if isinstance(v, (int, float))})
        checkpoint = None
        if get_rank() == 0:
            directory = os.path.join(runner.work_dir, name)
            os.makedirs(directory, exist_ok=True)
            target = os.path.join(directory, CKPT_FILE)
            if os.path.exists(target):
                os.remove(target)
            os.link(path, target)
            checkpoint = Checkpoint.from_directory(directory)
        mode = {"none": CheckpointUploadMode.NO_UPLOAD, "sync": CheckpointUploadMode.SYNC,
                "async": CheckpointUploadMode.ASYNC}[self.upload]
        # after an upload the hard-linked directory goes, or it would keep every old checkpoint alive
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name, checkpoint_upload_mode=mode,
                         delete_local_checkpoint_after_upload=self.upload != "none")
        runner.logger.info(f"{name} reported to Ray in {time.perf_counter() - start:.3f} s (upload: {self.upload})")


def train_loop(config: dict) -> dict:
    """The Ray Train worker function: rebuild the config, resume, train, report final metrics."""
    from ..apis import build_training, train_from_config
    from ..apis.train import init_random_seed, set_random_seed
    from ..engine.dist import get_rank

    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    log = _setup_logging(rank)
    log.info(f"worker group of {ctx.get_world_size()} started (rank {rank} here, pid {os.getpid()})")
    cfg = Config(config["cfg"])  # a plain dict: the config file need not exist on this node
    if cfg.get("device") == "cuda" or (cfg.get("device") is None and torch.cuda.is_available()):
        from ray.train.torch import get_device
        torch.cuda.set_device(get_device())
    resume = choose_resume(cfg.work_dir, cfg.get("resume_from"))
    cfg.resume_from = resume
    cfg.auto_resume = False
    reporter = RayReportHook(config.get("upload", "none"))
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
