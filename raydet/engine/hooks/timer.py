"""Iteration timing and the per-epoch sampler seeding."""
from __future__ import annotations

import time

from .base import PRIORITIES, Hook


class IterTimerHook(Hook):
    """Logs ``data_time`` (waiting for the batch) and ``time`` (whole iteration) in seconds."""

    priority = PRIORITIES["LOW"]

    def before_run(self, runner):  # IterBasedRunner has no epoch starts
        self.t = time.time()

    def before_train_epoch(self, runner):
        self.t = time.time()

    def before_train_iter(self, runner):
        runner.log_buffer.update({"data_time": time.time() - self.t})

    def after_train_iter(self, runner):
        runner.log_buffer.update({"time": time.time() - self.t})
        self.t = time.time()

    before_val_epoch, before_val_iter, after_val_iter = before_train_epoch, before_train_iter, after_train_iter


class DistSamplerSeedHook(Hook):
    """Calls ``sampler.set_epoch(epoch, start_batch)`` before each training epoch.

    Registered in every mode, not only distributed: raydet's samplers draw their order from
    ``seed + epoch``, and ``start_batch`` (non-zero only for the epoch a run resumes in) makes them
    skip the batches the checkpoint already consumed."""

    priority = PRIORITIES["NORMAL"]

    def before_train_epoch(self, runner):
        sampler = getattr(runner.data_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(runner.epoch, runner.start_batch)
