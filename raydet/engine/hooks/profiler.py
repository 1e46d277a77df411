"""``torch.profiler`` over the first iterations or epochs: mmcv 1.x's ``ProfilerHook``."""
from __future__ import annotations

import os
import warnings

import torch

from ...errors import ConfigError
from ..dist import is_main
from .base import HOOKS, Hook

ACTIVITIES = {"cpu": torch.profiler.ProfilerActivity.CPU, "cuda": torch.profiler.ProfilerActivity.CUDA}


@HOOKS.register()
class ProfilerHook(Hook):
    """Profile the run's first ``profile_iters`` epochs (``by_epoch``) or iterations, on rank 0
    (mmcv's ``master_only``), with mmcv 1.x's keys: ``activities`` (``'cpu'``, ``'cuda'``; CUDA
    is left out on a machine without it), ``schedule`` (``torch.profiler.schedule``'s arguments:
    ``wait``, ``warmup``, ``active``, ``repeat``, ``skip_first``), ``record_shapes``,
    ``profile_memory``, ``with_stack``, ``with_flops``, and what is done with the result:

    * ``on_trace_ready=dict(type='tb_trace', dir_name=...)``: Chrome trace files
      (``*.pt.trace.json``, one per active window; TensorBoard's profiler plugin reads them) in
      ``dir_name``, by default ``<work_dir>/profiler``;
    * ``on_trace_ready=dict(type='log_trace', sort_by=..., row_limit=...)``: the operator table
      (``key_averages().table(...)``'s arguments) in the log;
    * ``json_trace_path``: one Chrome trace of the whole profiled stretch; with neither,
      ``<work_dir>/profiler/trace.json``.

    Each iteration is a ``ProfilerStep#N`` span in the trace. A run resumed past the profiled
    stretch profiles nothing; one that ends inside it writes what it has.
    """

    def __init__(self, by_epoch=True, profile_iters=1, activities=("cpu", "cuda"), schedule=None,
                 on_trace_ready=None, record_shapes=False, profile_memory=False, with_stack=False,
                 with_flops=False, json_trace_path=None):
        if not isinstance(by_epoch, bool):
            raise ConfigError(f"ProfilerHook.by_epoch must be a bool, got {by_epoch!r}")
        if not isinstance(profile_iters, int) or profile_iters < 1:
            raise ConfigError(f"ProfilerHook.profile_iters must be a positive int, got {profile_iters!r}")
        unknown = [a for a in activities if str(a).lower() not in ACTIVITIES]
        if unknown:
            raise ConfigError(f"ProfilerHook.activities: {unknown} (use 'cpu' and/or 'cuda')")
        if on_trace_ready is not None and (not isinstance(on_trace_ready, dict)
                                           or on_trace_ready.get("type") not in ("tb_trace", "log_trace")):
            raise ConfigError(f"ProfilerHook.on_trace_ready must be dict(type='tb_trace' or 'log_trace', ...), "
                              f"got {on_trace_ready!r}")
        self.by_epoch, self.profile_iters = by_epoch, profile_iters
        self.activities = [ACTIVITIES[str(a).lower()] for a in activities
                           if str(a).lower() == "cpu" or torch.cuda.is_available()]
        self.schedule = torch.profiler.schedule(**schedule) if schedule else None
        self.on_trace_ready, self.json_trace_path = on_trace_ready, json_trace_path
        self.options = dict(record_shapes=record_shapes, profile_memory=profile_memory, with_stack=with_stack,
                            with_flops=with_flops)
        self.profiler = None

    def _handler(self, runner):
        if self.on_trace_ready is None:
            return None
        cfg = dict(self.on_trace_ready)
        kind = cfg.pop("type")
        if kind == "tb_trace":
            cfg.setdefault("dir_name", os.path.join(runner.work_dir, "profiler"))
            return torch.profiler.tensorboard_trace_handler(**cfg)
        return lambda prof: runner.logger.info("profiler:\n" + prof.key_averages().table(**cfg))

    def before_run(self, runner):
        total = runner.max_epochs if self.by_epoch else runner.max_iters
        if self.profile_iters > total:
            raise ConfigError(f"ProfilerHook.profile_iters={self.profile_iters} exceeds the run's {total} "
                              f"{'epochs' if self.by_epoch else 'iterations'}")
        done = runner.epoch if self.by_epoch else runner.iter
        if not is_main() or done >= self.profile_iters:
            return
        if self.json_trace_path is None and self.on_trace_ready is None:
            self.json_trace_path = os.path.join(runner.work_dir, "profiler", "trace.json")
        schedule = self.schedule
        if schedule is None:  # record the whole stretch; a schedule is what makes torch mark each step
            end = self.profile_iters * (runner.iters_per_epoch if self.by_epoch else 1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "won't be using warmup": nothing is skipped, by intent
                schedule = torch.profiler.schedule(wait=0, warmup=0, active=end - runner.iter, repeat=1)
        self.profiler = torch.profiler.profile(activities=self.activities, schedule=schedule,
                                               on_trace_ready=self._handler(runner), **self.options)
        self.profiler.__enter__()
        unit = "epochs" if self.by_epoch else "iterations"
        runner.logger.info(f"profiler: profiling {unit} {done + 1}-{self.profile_iters} on rank 0")

    def _stop(self, runner):
        self.profiler.__exit__(None, None, None)
        if self.json_trace_path is not None:
            os.makedirs(os.path.dirname(os.path.abspath(self.json_trace_path)), exist_ok=True)
            self.profiler.export_chrome_trace(self.json_trace_path)
            runner.logger.info(f"profiler: Chrome trace written to {self.json_trace_path}")
        self.profiler = None

    def after_train_iter(self, runner):
        if self.profiler is None:
            return
        self.profiler.step()
        if not self.by_epoch and runner.iter + 1 >= self.profile_iters:
            self._stop(runner)

    def after_train_epoch(self, runner):
        if self.profiler is not None and self.by_epoch and runner.epoch + 1 >= self.profile_iters:
            self._stop(runner)

    def after_run(self, runner):
        if self.profiler is not None:
            self._stop(runner)
