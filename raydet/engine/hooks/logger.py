"""Logging: mmcv's ``LogBuffer``, text + JSON logs (``{timestamp}.log``, ``.log.json``) and TensorBoard.

Exactly-once lines: a resumed run continues the log files of the run it resumes (their timestamp
is in the checkpoint). Each checkpoint records how long the files were when it was written; the
resume keeps that much, then the lines the checkpointing attempt wrote for the checkpointed
iteration itself (they come after the checkpoint: the logger runs last), and cuts at the first
training record past it. So iterations recomputed after a crash (or after Ray hands back an older
checkpoint), and lines of any later attempt that died before its first checkpoint, at whatever
world size, are never logged twice, and nothing up to the checkpoint is lost. An epoch's val
record that a kill kept from being written after its checkpoint is written from the checkpoint.
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

from ...logs import FORMAT


class LogBuffer:
    """Running values of the current logging interval, averaged weighted by sample count."""

    def __init__(self):
        self.val_history, self.n_history = OrderedDict(), OrderedDict()
        self.output, self.ready = OrderedDict(), False
        self.eval_output = OrderedDict()  # an evaluation's metrics within an iteration (by_epoch=False)

    def clear(self):
        self.val_history.clear()
        self.n_history.clear()
        self.clear_output()

    def clear_output(self):
        self.output.clear()
        self.eval_output.clear()
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
        if runner.log_buffer.eval_output:  # an evaluation by iteration: its val record comes first
            self.log_eval(runner)
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

    def log_eval(self, runner):
        """Log ``log_buffer.eval_output`` as a val record (what :meth:`log` does with ``output``)."""
        buffer, mode = runner.log_buffer, runner.mode
        output, ready = buffer.output, buffer.ready
        buffer.output, runner.mode = OrderedDict(buffer.eval_output), "val"
        try:
            self.log(runner)
        finally:
            buffer.output, buffer.ready, runner.mode = output, ready, mode

    def log_val(self, runner, record: dict, metrics: dict, step: int) -> None:
        """Log an evaluation made elsewhere (an asynchronous one, of an earlier checkpoint):
        ``record`` holds its ``epoch``, ``iter`` and ``lr`` as a val record of that point has them,
        ``step`` the iterations done there (TensorBoard's x axis). Rank 0 calls this alone."""
        raise NotImplementedError

    @staticmethod
    def current_lr(runner) -> float:
        return runner.optimizer.param_groups[0]["lr"]

    @staticmethod
    def tag_values(runner) -> dict:
        return {k: v for k, v in runner.log_buffer.output.items()
                if isinstance(v, (int, float)) and k not in ("time", "data_time")}

    @staticmethod
    def mode_of(runner) -> str:
        """mmcv's ``get_mode``: ``'train'`` for a training record (it has ``time``), else ``'val'``
        (an evaluation's metrics, logged while the runner is in training mode)."""
        return "train" if runner.mode == "train" and "time" in runner.log_buffer.output else "val"


class TextLoggerHook(LoggerHook):
    """``Epoch [e][i/n]\\tlr: ..., eta: ..., time: ..., data_time: ..., [memory: ...,] loss_x: ...``
    lines to the runner's logger and ``{timestamp}.log``, and mmdet's JSON records to
    ``{timestamp}.log.json`` (first line: the run's meta). Rank 0 only writes files."""

    TEXT_ITER = re.compile(r"Epoch \[(\d+)\]\[(\d+)/(\d+)\]")
    TEXT_RUN_ITER = re.compile(r"Iter \[(\d+)/\d+\]\t")  # by_epoch=False

    def __init__(self, interval=10, ignore_last=True, reset_flag=False, by_epoch=True):
        super().__init__(interval, ignore_last, reset_flag, by_epoch)
        self.timestamp = None
        self.handler = None
        self.sizes = None  # [text, json] lengths recorded by the checkpoint this run resumes from
        self.logged_val = set()  # epochs whose val record the resumed log holds after the checkpoint

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
        val_epochs = self._cut_after(runner, text_path, json_path)  # a retried attempt re-logs what it recomputes
        for stale in [h for h in runner.logger.handlers if isinstance(h, logging.FileHandler)
                      and h.baseFilename == os.path.abspath(text_path)]:
            runner.logger.removeHandler(stale)  # left by an earlier run in this process that raised
            stale.close()
        self.handler = logging.FileHandler(text_path, mode="a")
        self.handler.setFormatter(logging.Formatter(FORMAT))
        runner.logger.addHandler(self.handler)
        if not os.path.exists(json_path) or os.path.getsize(json_path) == 0:
            self._dump_json(json_path, {k: v for k, v in runner.meta.items() if k in ("env_info", "seed", "exp_name")})
        last = (runner.meta.get("hook_msgs") or {}).get("last_eval")
        if val_epochs is not None and last:
            if last.get("by_iter"):  # the evaluation at the checkpoint's iteration
                missing = last["iter"] == runner.iter and last["iter"] not in val_epochs
            else:  # the evaluation at the end of the checkpoint's epoch
                missing = runner.start_batch == 0 and last["epoch"] == runner.epoch and last["epoch"] not in val_epochs
            if missing:
                self._write(runner, dict(mode="val", epoch=last["epoch"], iter=last["iter"], lr=last["lr"]),
                            last["metrics"])
        # A checkpoint of an epoch's last iteration comes before that epoch's evaluation, which a
        # resume from it runs again; its record is written once.
        self.logged_val = set(val_epochs or ())

    @staticmethod
    def _val_key(runner, record) -> int:
        """What tells val records apart: the epoch (one evaluation per epoch), or the iteration
        under ``IterBasedRunner`` (no epochs: ``max_epochs`` is None)."""
        return record.get("epoch") if runner.max_epochs is not None else record.get("iter")

    @staticmethod
    def _cut(path, past, start=0) -> None:
        """Truncate ``path`` at its first line at or after byte ``start`` for which ``past(line)``
        is true."""
        if not os.path.exists(path):
            return
        offset = start = min(start, os.path.getsize(path))
        with open(path, "rb") as f:
            f.seek(start)
            for raw in f:
                if past(raw.decode("utf-8", "replace")):
                    break
                offset += len(raw)
        if offset < os.path.getsize(path):
            os.truncate(path, offset)

    def _cut_after(self, runner, text_path, json_path) -> set | None:
        """Cut the logs back to the resumed checkpoint (see the module docstring). Returns the
        epochs of the val records kept after the checkpoint's position (``None`` for a checkpoint
        of an older raydet, which recorded no position)."""
        if self.sizes is None:
            self._cut_by_world_size(runner, text_path, json_path)
            return None
        ipe, done = runner.saved_position
        text_size, json_size = self.sizes
        val_epochs = set()

        def text_after(line):
            if not self.by_epoch:
                m = self.TEXT_RUN_ITER.search(line)
                return m is not None and int(m[1]) > done
            m = self.TEXT_ITER.search(line)
            return m is not None and (int(m[1]) - 1) * int(m[3]) + int(m[2]) > done

        def json_after(line):
            try:
                rec = json.loads(line)
            except ValueError:
                return True  # a torn last line
            if rec.get("mode") == "val":
                val_epochs.add(self._val_key(runner, rec))
            if not self.by_epoch:
                return rec.get("mode") == "train" and rec["iter"] > done
            return rec.get("mode") == "train" and ipe is not None and (rec["epoch"] - 1) * ipe + rec["iter"] > done

        self._cut(text_path, text_after, text_size)
        self._cut(json_path, json_after, json_size)
        return val_epochs

    def _cut_by_world_size(self, runner, text_path, json_path) -> None:
        """The cut for a checkpoint of an older raydet, which recorded no log sizes: a line is past
        it if it was logged at the checkpoint's world size (its iterations per epoch) after the
        checkpoint's iteration; lines of other world sizes are taken as earlier attempts'. The
        json file holds the same train records in the same order, so it keeps as many."""
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
        mode = self.mode_of(runner)
        # by_epoch=False: mmcv's iteration count of the run, not of the epoch
        record = OrderedDict(mode=mode, epoch=runner.epoch + 1,
                             iter=runner.inner_iter + 1 if self.by_epoch else runner.progress()[1])
        record["lr"] = self.current_lr(runner)
        if torch.cuda.is_available() and mode == "train":
            mem = torch.cuda.max_memory_allocated()
            record["memory"] = int(mem / (1024 * 1024))
        self._write(runner, record, out)

    def log_val(self, runner, record, metrics, step):
        self._write(runner, dict(mode="val", **record), metrics)

    def _write(self, runner, record: dict, out: dict) -> None:
        """One record: a text line through the runner's logger, a json line on rank 0."""
        record = OrderedDict(record)
        record.update(out)
        val_key = self._val_key(runner, record)
        if record["mode"] == "val" and val_key in self.logged_val:
            self.logged_val.discard(val_key)
            return
        if record["mode"] == "train":
            self.time_sec_tot += out["time"] * self.interval
            done = runner.iter - self.start_iter + 1
            eta_sec = self.time_sec_tot / done * (runner.max_iters - runner.iter - 1)
            eta = str(datetime.timedelta(seconds=int(eta_sec)))
            where = (f"Epoch [{record['epoch']}][{record['iter']}/{runner.iters_per_epoch}]" if self.by_epoch
                     else f"Iter [{record['iter']}/{runner.max_iters}]")
            head = (f"{where}\tlr: {record['lr']:.3e}, eta: {eta}, time: {out['time']:.3f}, "
                    f"data_time: {out['data_time']:.3f}, ")
            if "memory" in record:
                head += f"memory: {record['memory']}, "
            skip = {"time", "data_time"}
        else:
            head = (f"Epoch(val) [{record['epoch']}][{record['iter']}]\t" if self.by_epoch
                    else f"Iter(val) [{record['iter']}]\t")
            skip = set()
        items = [f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}"
                 for k, v in out.items() if k not in skip]
        runner.logger.info(head + ", ".join(items))
        if is_main():
            self._dump_json(self._paths()[1], record)

    def state_dict(self):
        state = {"timestamp": self.timestamp or ""}
        if self.handler is not None:  # rank 0, running: where the files end as this checkpoint is written
            self.handler.flush()
            state["sizes"] = [os.path.getsize(p) if os.path.exists(p) else 0 for p in self._paths()]
        return state

    def load_state_dict(self, state):
        self.timestamp = state["timestamp"] or None
        self.sizes = state.get("sizes")


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
        step = runner.progress()[1]  # iterations done: the one that just ended counts
        mode = self.mode_of(runner)
        self._scalars(mode, self.tag_values(runner), step)
        if mode == "train":
            self.writer.add_scalar("learning_rate", self.current_lr(runner), step)

    def log_val(self, runner, record, metrics, step):
        if self.writer is not None:
            self._scalars("val", metrics, step)

    def _scalars(self, mode: str, values: dict, step: int) -> None:
        """``<mode>/<key>`` scalars (mmcv's layout: ``train/loss``, ``val/bbox_mAP``), leaving out
        COCO's -1 (no object of that size in the evaluation set: a flat line saying nothing)."""
        for key, value in values.items():
            if isinstance(value, (int, float)) and not (mode == "val" and value == -1):
                self.writer.add_scalar(f"{mode}/{key}", value, step)

    def after_run(self, runner):
        if self.writer is not None:
            self.writer.close()
            self.writer = None
