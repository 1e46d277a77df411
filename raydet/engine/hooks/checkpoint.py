"""Periodic checkpoints: ``epoch_N.pth`` / ``iter_N.pth``, ``latest.pth``, ``max_keep_ckpts``."""
from __future__ import annotations

import os

from ..checkpoint import checkpoint_dirs, remove_orphans
from ..dist import is_main
from .base import PRIORITIES, Hook


class CheckpointHook(Hook):
    """Save every ``interval`` epochs (``by_epoch``) or iterations, and at the end with
    ``save_last``. Files go to the work_dir, or with ``out_dir`` to ``out_dir/<work_dir's name>``
    (mmcv 1.x's layout; a resume looks there too, see :func:`checkpoint_dirs`); ``latest.pth``
    points at the newest (``create_symlink``); only the newest ``max_keep_ckpts`` numbered files
    are kept (``-1``: all). At the start, rank 0 removes the temporary files of writes that a
    killed attempt left unfinished.

    Every rank takes part (each rank's RNG state is gathered into the file); only rank 0 writes
    and prunes. ``on_saved(runner, path)``, if given, is then called on *every* rank (the Ray
    launcher reports the checkpoint there, which is a collective).
    """

    priority = PRIORITIES["NORMAL"]

    def __init__(self, interval=-1, by_epoch=True, save_optimizer=True, out_dir=None, max_keep_ckpts=-1,
                 save_last=True, meta=None, create_symlink=True, on_saved=None):
        self.interval, self.by_epoch, self.save_optimizer = interval, by_epoch, save_optimizer
        self.out_dir, self.max_keep_ckpts, self.save_last = out_dir, max_keep_ckpts, save_last
        self.meta, self.create_symlink, self.on_saved = meta or {}, create_symlink, on_saved

    def before_run(self, runner):
        self.out_dir = checkpoint_dirs(runner.work_dir, self.out_dir)[-1]
        if is_main():
            for directory in {runner.work_dir, self.out_dir}:  # the work_dir holds best_*.pth
                remove_orphans(directory)

    def after_train_epoch(self, runner):
        if self.by_epoch and (self.every_n_epochs(runner, self.interval)
                              or (self.save_last and self.is_last_epoch(runner))):
            self._save(runner, f"epoch_{runner.epoch + 1}.pth", runner.epoch + 1)

    def after_train_iter(self, runner):
        if not self.by_epoch and (self.every_n_iters(runner, self.interval)
                                  or (self.save_last and self.is_last_iter(runner))):
            self._save(runner, f"iter_{runner.iter + 1}.pth", runner.iter + 1)

    def _save(self, runner, name, number):
        path = os.path.join(self.out_dir, name)
        runner.save_checkpoint(path, save_optimizer=self.save_optimizer, meta=self.meta,
                               create_symlink=self.create_symlink)
        if is_main():
            runner.meta.setdefault("hook_msgs", {})["last_ckpt"] = path
            if self.max_keep_ckpts > 0:
                step = self.interval if self.interval > 0 else 1
                prefix = "epoch" if self.by_epoch else "iter"
                for old in range(number - self.max_keep_ckpts * step, 0, -step):
                    old_path = os.path.join(self.out_dir, f"{prefix}_{old}.pth")
                    if not os.path.exists(old_path):
                        break
                    os.remove(old_path)
        if self.on_saved is not None:
            self.on_saved(runner, path)
