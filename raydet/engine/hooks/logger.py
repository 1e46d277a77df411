"""Logging: mmcv's ``LogBuffer``, text + JSON logs (``{timestamp}.log``, ``.log.json``) and TensorBoard.

Exactly-once lines: a resumed run continues the log files of the run it resumes (their timestamp
is in the checkpoint) after cutting them at the first training record past the resumed iteration,
so iterations recomputed after a crash (or after Ray hands back an older checkpoint) are never
logged twice, and nothing up to the checkpoint is lost.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import re
from collections import OrderedDict

import numpy as np
import torch

from ..dist import is_main
from .base import PRIORITIES, Hook


class LogBuffer:
    """Running values of the current logging interval, averaged weighted by sample count."""

    def __init__(self):
        self.val_history, self.n_history = OrderedDict(), OrderedDict()
        self.output, self.ready = OrderedDict(), False

    def clear(self):
        self.val_history.clear()
        self.n_history.clear()
        self.clear_output()

    def clear_output(self):
        self.output.clear()
        self.ready = False

    def update(self, vars: dict, count: int = 1):
        for key, var in vars.items():
            self.val_history.setdefault(key, []).append(var)
            self.n_history.setdefault(key, []).append(count)

    def average(self, n: int = 0):
        """Average the latest ``n`` values of each key (all when ``n == 0``) into ``output``."""
        for key in self.val_history:
            values = np.array(self.val_history[key][-n:])
            nums = np.array(self.n_history[key][-n:])
            self.output[key] = float(np.sum(values * nums) / np.sum(nums))
        self.ready = True


class LoggerHook(Hook):
    priority = PRIORITIES["VERY_LOW"]

    def __init__(self, interval=10, ignore_last=True, reset_flag=False, by_epoch=True):
        self.interval, self.ignore_last, self.reset_flag, self.by_epoch = interval, ignore_last, reset_flag, by_epoch

    def log(self, runner):
        raise NotImplementedError

    def before_train_epoch(self, runner):
        runner.log_buffer.clear()

    def after_train_iter(self, runner):
        if self.by_epoch and self.every_n_inner_iters(runner, self.interval):
            runner.log_buffer.average(self.interval)
        elif not self.by_epoch and self.every_n_iters(runner, self.interval):
            runner.log_buffer.average(self.interval)
        elif self.end_of_epoch(runner) and not self.ignore_last:
            runner.log_buffer.average(self.interval)
        if runner.log_buffer.ready:
            self.log(runner)

    def after_train_epoch(self, runner):
        if runner.log_buffer.ready:  # evaluation results
            self.log(runner)

    def after_val_epoch(self, runner):
        runner.log_buffer.average()
        self.log(runner)

    @staticmethod
    def current_lr(runner) -> float:
        return runner.optimizer.param_groups[0]["lr"]

    @staticmethod
    def tag_values(runner) -> dict:
        return {k: v for k, v in runner.log_buffer.output.items()
                if isinstance(v, (int, float)) and k not in ("time", "data_time")}


class TextLoggerHook(LoggerHook):
    """``Epoch [e][i/n]\\tlr: ..., eta: ..., time: ..., data_time: ..., [memory: ...,] loss_x: ...``
    lines to the runner's logger and ``{timestamp}.log``, and mmdet's JSON records to
    ``{timestamp}.log.json`` (first line: the run's meta). Rank 0 only writes files."""

    TEXT_ITER = re.compile(r"Epoch \[(\d+)\]\[(\d+)/(\d+)\]")

    def __init__(self, interval=10, ignore_last=True, reset_flag=False, by_epoch=True):
        super().__init__(interval, ignore_last, reset_flag, by_epoch)
        self.timestamp = None
        self.handler = None

    def _paths(self):
        base = os.path.join(self.work_dir, f"{self.timestamp}.log")
        return base, base + ".json"

    def before_run(self, runner):
        self.timestamp = self.timestamp or runner.timestamp
        self.work_dir = runner.work_dir
        self.start_iter = None  # set at the first iteration, once a resume has counted its iterations
        self.time_sec_tot = 0.0
        if not is_main():
            return
        os.makedirs(runner.work_dir, exist_ok=True)
        text_path, json_path = self._paths()
        self._cut_after(runner, text_path, json_path)  # a retried attempt re-logs what it recomputes
        self.handler = logging.FileHandler(text_path, mode="a")
        self.handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
        runner.logger.addHandler(self.handler)
        if not os.path.exists(json_path) or os.path.getsize(json_path) == 0:
            self._dump_json(json_path, {k: v for k, v in runner.meta.items() if k in ("env_info", "seed", "exp_name")})

    @staticmethod
    def _cut(path, past) -> None:
        """Truncate ``path`` at its first line for which ``past(line)`` is true."""
        if not os.path.exists(path):
            return
        offset = 0
        with open(path, "rb") as f:
            for raw in f:
                if past(raw.decode("utf-8", "replace")):
                    break
                offset += len(raw)
        if offset < os.path.getsize(path):
            os.truncate(path, offset)

    def _cut_after(self, runner, text_path, json_path):
        # A line is past the checkpoint if it was logged at the checkpoint's world size (its
        # iterations per epoch) after the checkpoint's iteration; lines of other world sizes came
        # from earlier attempts, before it. The json file holds the same train records in the same
        # order, so it keeps as many.
        ipe, done = runner.saved_position
        kept = 0

        def text_past(line):
            nonlocal kept
            m = self.TEXT_ITER.search(line)
            if m is None:
                return False
            epoch, i, n = map(int, m.groups())
            if (ipe is None or n == ipe) and (epoch - 1) * n + i > done:
                return True
            kept += 1
            return False

        seen = 0

        def json_past(line):
            nonlocal seen
            try:
                rec = json.loads(line)
            except ValueError:
                return True  # a torn last line
            seen += rec.get("mode") == "train"
            return seen > kept

        self._cut(text_path, text_past)
        self._cut(json_path, json_past)

    def before_train_iter(self, runner):
        if self.start_iter is None:
            self.start_iter = runner.iter

    def after_run(self, runner):
        if self.handler is not None:
            runner.logger.removeHandler(self.handler)
            self.handler.close()
            self.handler = None

    @staticmethod
    def _round(value):
        return round(value, 5) if isinstance(value, float) else value

    def _dump_json(self, path, record):
        with open(path, "a") as f:
            f.write(json.dumps({k: self._round(v) for k, v in record.items()}) + "\n")

    def log(self, runner):
        out = runner.log_buffer.output
        mode = "train" if runner.mode == "train" and "time" in out else "val"
        record = OrderedDict(mode=mode, epoch=runner.epoch + 1, iter=runner.inner_iter + 1)
        record["lr"] = self.current_lr(runner)
        if torch.cuda.is_available() and mode == "train":
            mem = torch.cuda.max_memory_allocated()
            record["memory"] = int(mem / (1024 * 1024))
        record.update(out)
        if mode == "train":
            self.time_sec_tot += out["time"] * self.interval
            done = runner.iter - self.start_iter + 1
            eta_sec = self.time_sec_tot / done * (runner.max_iters - runner.iter - 1)
            eta = str(datetime.timedelta(seconds=int(eta_sec)))
            head = (f"Epoch [{record['epoch']}][{record['iter']}/{runner.iters_per_epoch}]\t"
                    f"lr: {record['lr']:.3e}, eta: {eta}, time: {out['time']:.3f}, "
                    f"data_time: {out['data_time']:.3f}, ")
            if "memory" in record:
                head += f"memory: {record['memory']}, "
            skip = {"time", "data_time"}
        else:
            head = f"Epoch(val) [{record['epoch']}][{runner.inner_iter + 1}]\t"
            skip = set()
        items = [f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}"
                 for k, v in out.items() if k not in skip]
        runner.logger.info(head + ", ".join(items))
        if is_main():
            self._dump_json(self._paths()[1], record)

    def state_dict(self):
        return {"timestamp": self.timestamp or ""}

    def load_state_dict(self, state):
        self.timestamp = state["timestamp"] or None


class TensorboardLoggerHook(LoggerHook):
    """Scalars to ``{work_dir}/tf_logs`` (``log_dir``); a resumed run purges events past its
    iteration so a recomputed stretch is not plotted twice."""

    def __init__(self, interval=10, log_dir=None, ignore_last=True, reset_flag=False, by_epoch=True):
        super().__init__(interval, ignore_last, reset_flag, by_epoch)
        self.log_dir, self.writer = log_dir, None

    def before_run(self, runner):
        if not is_main():
            return
        from torch.utils.tensorboard import SummaryWriter
        self.log_dir = self.log_dir or os.path.join(runner.work_dir, "tf_logs")
        self.writer = SummaryWriter(self.log_dir, purge_step=runner.iter if runner.iter > 0 else None)

    def log(self, runner):
        if self.writer is None:
            return
        step = runner.iter + 1 if runner.mode == "train" else runner.iter
        for key, value in self.tag_values(runner).items():
            self.writer.add_scalar(f"{runner.mode}/{key}", value, step)
        self.writer.add_scalar("learning_rate", self.current_lr(runner), step)

    def after_run(self, runner):
        if self.writer is not None:
            self.writer.close()
            self.writer = None
