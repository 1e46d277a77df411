"""Fault injection for tests and drills (``custom_hooks=[dict(type='ChaosHook', ...)]``).

``ChaosHook(at_iter=K, action='raise'|'sigkill'|'sigterm'|'corrupt', rank=0, marker=PATH,
count_file=PATH)`` fails once, in ``after_train_iter`` of global iteration ``K`` (1-based) on rank
``rank``, after that iteration's checkpoint (if any) was taken (with a background writer its file
may still be in flight: a kill then lands during the write). ``'corrupt'`` (on rank 0, which
writes the checkpoints) first truncates the newest checkpoint file to half its size, as a disk
that lost its last write would leave it, then raises. ``at_epoch=E`` instead fails at the end of epoch
``E``. The ``marker`` file is created just before failing and, while it exists, the hook never
fails again, so a restarted run goes through. ``count_file``, if set, gets one line per executed
training iteration (``rank epoch iter unix_time``), counting the work a failure costs.
``delay_s`` sleeps after every training iteration (a slower step, to give a drill time to act);
with neither ``at_iter`` nor ``at_epoch`` the hook only counts and delays.
"""
from __future__ import annotations

import os
import signal
import time

from ...errors import RaydetError
from .base import HOOKS, PRIORITIES, Hook


class ChaosError(RaydetError, RuntimeError):
    """The failure a :class:`ChaosHook` injects with ``action='raise'``."""


@HOOKS.register()
class ChaosHook(Hook):
    priority = PRIORITIES["LOWEST"]

    def __init__(self, marker: str | None = None, at_iter: int | None = None, at_epoch: int | None = None,
                 action: str = "raise", rank: int = 0, count_file: str | None = None, delay_s: float = 0.0):
        if at_iter is not None and at_epoch is not None:
            raise ValueError("ChaosHook takes at most one of at_iter and at_epoch")
        if (at_iter is not None or at_epoch is not None) and not marker:
            raise ValueError("ChaosHook needs a marker file to fail only once")
        if action not in ("raise", "sigkill", "sigterm", "corrupt"):
            raise ValueError(f"ChaosHook.action must be raise, sigkill, sigterm or corrupt, got {action!r}")
        self.marker, self.at_iter, self.at_epoch = marker, at_iter, at_epoch
        self.action, self.rank, self.count_file, self.delay_s = action, rank, count_file, delay_s

    def _fail(self, runner, where: str):
        from ..dist import get_rank
        if get_rank() != self.rank or os.path.exists(self.marker):
            return
        with open(self.marker, "w") as f:
            f.write(f"{where}\n")
        if self.action == "corrupt":
            runner.wait_for_checkpoints()  # the file it truncates is complete
            path = (runner.meta.get("hook_msgs") or {}).get("last_ckpt")
            if path is None:
                raise ValueError("ChaosHook(action='corrupt'): no checkpoint has been written yet")
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
        if self.action == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif self.action == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            raise ChaosError(f"ChaosHook: injected failure at {where}")

    def after_train_iter(self, runner):
        if self.count_file:
            from ..dist import get_rank
            with open(self.count_file, "a") as f:
                f.write(f"{get_rank()} {runner.epoch + 1} {runner.iter + 1} {time.time():.3f}\n")
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.at_iter is not None and runner.iter + 1 == self.at_iter:
            self._fail(runner, f"iter {self.at_iter}")

    def after_train_epoch(self, runner):
        if self.at_epoch is not None and runner.epoch + 1 == self.at_epoch:
            self._fail(runner, f"epoch {self.at_epoch}")
