"""Periodic checkpoints (``epoch_N.pth`` / ``iter_N.pth``, ``latest.pth``, ``max_keep_ckpts``),
and the hook that hands each one on once its file is complete."""
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
    are kept (``-1``: all), pruned once the new file is complete. At the start, rank 0 removes
    the temporary files of writes that a killed attempt left unfinished.

    Every rank takes part (each rank's RNG state goes into the file); only rank 0 writes and
    prunes, with the runner's writer (in the background by default: see
    :meth:`Runner.save_checkpoint`). ``on_saved(runner, path, ready_at)``, if given, is then
    called on *every* rank, with the completed-iteration count from which the file may be taken
    as complete (see :class:`ReportHook`).
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

    def _prune(self, number):
        step = self.interval if self.interval > 0 else 1
        prefix = "epoch" if self.by_epoch else "iter"
        for old in range(number - self.max_keep_ckpts * step, 0, -step):
            old_path = os.path.join(self.out_dir, f"{prefix}_{old}.pth")
            if not os.path.exists(old_path):
                break
            os.remove(old_path)

    def _save(self, runner, name, number):
        path = os.path.join(self.out_dir, name)
        prune = [lambda: self._prune(number)] if self.max_keep_ckpts > 0 else []
        ready_at = runner.save_checkpoint(path, save_optimizer=self.save_optimizer, meta=self.meta,
                                          create_symlink=self.create_symlink, then=prune)
        if is_main():
            runner.meta.setdefault("hook_msgs", {})["last_ckpt"] = path
        if self.on_saved is not None:
            self.on_saved(runner, path, ready_at)


class ReportHook(Hook):
    """Hands each checkpoint of the :class:`CheckpointHook` to :meth:`report` once its file is
    complete, at the same iteration on every rank, so that :meth:`report` may be a collective
    (Ray's ``report`` is a barrier) without the writer thread taking part in one.

    Pass :meth:`on_saved` as the checkpoint hook's ``on_saved``. A checkpoint is reported at
    this hook's turn (LOWEST: after the iteration's log line) of the first iteration or epoch end
    whose completed iterations reach its ``ready_at``; at the next save at the latest (whose
    write waited for it); and at the end of the run. Its metrics are those of the iteration or
    epoch it checkpoints (``epoch``, ``iter`` and the log buffer's numbers, evaluation included),
    taken at this hook's turn there.
    """

    priority = PRIORITIES["LOWEST"]

    def __init__(self):
        self.pending: list[dict] = []  # [{path, ready_at, metrics}], oldest first
        self.reported_iter = None  # ``iter`` of the newest checkpoint reported
        self.last_saved = None  # the newest periodic checkpoint of this attempt

    def on_saved(self, runner, path, ready_at):
        _, done = runner.progress()
        for entry in self.pending:  # this save waited for their writes
            entry["ready_at"] = min(entry["ready_at"], done)
        self.pending.append(dict(path=path, ready_at=ready_at, metrics=None, validation=None))
        self.last_saved = path

    @staticmethod
    def metrics(runner) -> dict:
        epochs, iters = runner.progress()
        return dict(epoch=epochs, iter=iters, **{
            k: v for k, v in runner.log_buffer.output.items() if isinstance(v, (int, float))})

    def flush(self, runner, force: bool = False) -> None:
        """Report every pending checkpoint that is due (``force``: all of them)."""
        _, done = runner.progress()
        for entry in self.pending:
            if entry["metrics"] is None:
                entry["metrics"] = self.metrics(runner)
        while self.pending and (force or self.pending[0]["ready_at"] <= done):
            entry = self.pending.pop(0)
            self.report(runner, entry["path"], metrics=entry["metrics"], validation=entry["validation"])

    def after_train_iter(self, runner):
        self.flush(runner)

    def after_train_epoch(self, runner):
        self.flush(runner)

    def after_run(self, runner):
        self.flush(runner, force=True)

    def report(self, runner, path, metrics=None, name=None, validation=None) -> None:
        """Hand on the checkpoint file ``path`` (``None``: only ``metrics``; default: :meth:`metrics`
        now); called on every rank at the same point. ``validation``: what an implementation
        that evaluates checkpoints off the loop needs to evaluate this one (set on a pending
        entry's ``validation`` by its ``on_saved``), else ``None``. On rank 0 the file may still be in flight
        until :meth:`Runner.wait_for_checkpoints` returns: call it before using the file (the
        other ranks, not writing, wait in the collective). Sets ``reported_iter``."""
        raise NotImplementedError
