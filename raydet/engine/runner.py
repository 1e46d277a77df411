"""The runner: mmcv 1.x's EpochBasedRunner and IterBasedRunner semantics in one loop, in
detectron2's shape.

It takes built objects (model, batch processor, optimizer, loaders, hooks), never a config.
Its counters (:class:`Position`: data epochs, iterations, global batches of the data epoch done)
advance at one point after each step and at each data epoch's end, so :meth:`Runner.state_dict`
reads them as they are, from any hook. Everything stateful is collected by
:meth:`Runner.state_dict` into one checkpoint, and :meth:`Runner.resume` restores it strictly and
continues at the next iteration, mid-epoch included. See :class:`raydet.engine.hooks.Hook` for the
loop.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import platform
import time

import torch

from .._version import __version__
from ..errors import CheckpointError, DataError
from .checkpoint import (CheckpointWriter, link_latest, load_file, load_weights, restore_rng, rng_state,
                         strip_prefix, tensor_bytes)
from .dist import all_gather_objects, gather_objects, get_rank, get_world_size, is_main, unwrap
from .hooks import Hook, LogBuffer, get_priority
from ..logs import FILE_ONLY

STAGES = ("before_run", "before_train_epoch", "before_train_iter", "after_train_iter",
          "after_train_epoch", "before_val_epoch", "before_val_iter", "after_val_iter",
          "after_val_epoch", "after_run")
CHECKPOINT_KEYS = {"meta", "state_dict", "optimizer", "hooks", "sampler", "rng"}
#: keys a checkpoint may lack (written before they existed): ``ranks``, each rank's own hook state
OPTIONAL_KEYS = {"ranks"}


def _hook_state(hook) -> dict:
    """A hook's checkpointed state; hooks of mmcv's own kind (no ``state_dict``) have none."""
    state_dict = getattr(hook, "state_dict", None)
    return state_dict() if callable(state_dict) else {}


def _acts(hook, stage: str) -> bool:
    """Whether ``hook`` does something at ``stage`` (mmcv's hooks say so themselves)."""
    if isinstance(hook, Hook):
        return getattr(type(hook), stage) is not getattr(Hook, stage)
    triggered = getattr(hook, "get_triggered_stages", None)
    return stage in triggered() if callable(triggered) else True


@dataclasses.dataclass(frozen=True)
class Position:
    """Work done: ``epoch`` data epochs, ``iter`` iterations, and ``batch`` global batches of the
    current data epoch (its sampler position; a step consumes one a rank). World-size free
    except ``iter``, which a resume on another world size re-counts (see :meth:`Runner.run`)."""

    epoch: int = 0
    iter: int = 0
    batch: int = 0

    def stepped(self, world_size: int) -> "Position":
        return dataclasses.replace(self, iter=self.iter + 1, batch=self.batch + world_size)

    def next_epoch(self) -> "Position":
        return dataclasses.replace(self, epoch=self.epoch + 1, batch=0)


class _Stream:
    """Batches of ``loader``, pass after pass. A training stream sets its sampler to the runner's
    position at each pass (``set_epoch(epoch, start_batch)``, as mmcv's ``IterLoader`` does), and
    the runner's data epoch ends when a pass does."""

    def __init__(self, runner: "Runner", loader, train: bool):
        self.runner, self.loader, self.train, self.it = runner, loader, train, None

    def start(self):
        sampler = getattr(self.loader, "sampler", None)
        if self.train and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.runner.done.epoch, self.runner.done.batch)
        self.it = iter(self.loader)

    def next(self):
        """The next batch; a pass that ends at once is followed by a fresh one (IterBasedRunner)."""
        for _ in range(2):
            if self.it is None:
                self.start()
            try:
                return next(self.it)
            except StopIteration:
                self.it = None
                if self.train:
                    self.runner.end_data_epoch()
        raise DataError(f"the {'training' if self.train else 'validation'} loader yields no batch")

    def one_pass(self):
        """An iterator over one pass (an epoch of EpochBasedRunner), the sampler set now."""
        self.start()
        it, self.it = self.it, None
        return it


class Runner:
    """Runs ``workflow`` until ``max_epochs`` (EpochBasedRunner: ``[('train', 1), ('val', 1)]``
    counts epochs) or, with ``max_iters``, until that many training iterations are done
    (IterBasedRunner: ``[('train', N), ('val', M)]`` alternates N training iterations with M
    validation batches, over endless streams; epoch hooks are not called).

    ``batch_processor(model, data, train_mode) -> dict(loss, log_vars, num_samples)`` computes a
    batch's losses; its forward runs under ``autocast()`` (see
    :class:`raydet.engine.precision.Precision`). ``done`` (:class:`Position`) is the work done;
    ``epoch``, ``iter`` and ``inner_iter`` are mmcv's indices: inside an iteration's hooks
    ``iter`` is that iteration's index (its step already counted in ``done.iter``), inside
    ``after_train_epoch`` ``epoch`` is the finished epoch's; under ``max_iters`` ``epoch`` is the
    data epoch (mmcv's ``IterLoader.epoch``). ``checkpoint_writer`` writes rank 0's checkpoint
    files (default: in the foreground; see :meth:`save_checkpoint`).
    """

    def __init__(self, model, batch_processor, optimizer, work_dir: str, max_epochs: int | None = None,
                 logger: logging.Logger | None = None, meta: dict | None = None, autocast=None,
                 timestamp: str | None = None, checkpoint_writer: CheckpointWriter | None = None,
                 max_iters: int | None = None):
        if (max_epochs is None) == (max_iters is None):
            raise ValueError("give one of max_epochs (epoch-based) and max_iters (iteration-based)")
        self.model, self.batch_processor, self.optimizer = model, batch_processor, optimizer
        self.work_dir = os.path.abspath(work_dir)
        self.logger = logger or logging.getLogger("raydet")
        self.meta = dict(meta or {})
        self.autocast = autocast or (lambda: torch.autocast("cpu", enabled=False))
        self.timestamp = timestamp or time.strftime("%Y%m%d_%H%M%S", time.localtime())
        self.by_epoch = max_iters is None
        self._max_epochs, self._max_iters = max_epochs, int(max_iters or 0)
        self.done = Position()
        self.epoch = self.iter = self.inner_iter = 0
        self.iters_per_epoch = 0
        self.saved_position = (None, 0)  # (iterations per epoch, iteration) of the resumed checkpoint
        self.mode, self.data_loader, self.outputs, self.data_batch = None, None, {}, None
        self.log_buffer = LogBuffer()
        self._hooks: list[Hook] = []
        self.writer = checkpoint_writer or CheckpointWriter(background=False)
        self.step_seconds = None  # moving average of a training iteration's wall time
        self.resumed_from = None
        self.resumed_lr = None  # the first param group's LR in the resumed checkpoint

    max_epochs = property(lambda self: self._max_epochs)
    max_iters = property(lambda self: self._max_iters)
    start_batch = property(lambda self: self.done.batch, doc="global batches of the data epoch done")
    hooks = property(lambda self: list(self._hooks))
    rank = property(lambda self: get_rank())
    world_size = property(lambda self: get_world_size())

    # ------------------------------------------------------------------ hooks
    def register_hook(self, hook: Hook, priority=None) -> None:
        """Insert ``hook`` after every hook of lower-or-equal priority (mmcv's order)."""
        if priority is not None:
            hook.priority = get_priority(priority)
        elif not hasattr(hook, "priority"):  # an mmcv hook: mmcv's register_hook default
            hook.priority = get_priority("NORMAL")
        index = len(self._hooks)
        while index > 0 and self._hooks[index - 1].priority > hook.priority:
            index -= 1
        self._hooks.insert(index, hook)

    def call_hook(self, stage: str) -> None:
        for hook in self._hooks:
            getattr(hook, stage)(self)

    def hook_order(self) -> str:
        """The hooks that act at each stage, in order (logged at the start of a run)."""
        lines = []
        for stage in STAGES:
            acting = [h for h in self._hooks if _acts(h, stage)]
            if acting:
                lines.append(f"{stage}:\n" + "\n".join(f"({h.priority:<3}) {type(h).__name__}" for h in acting))
        return "Hooks will be executed in the following order:\n" + "\n".join(lines)

    # ------------------------------------------------------------------ the loop
    def run(self, data_loaders: list, workflow: list[tuple[str, int]]) -> None:
        """Run the phases of ``workflow`` with the matching loaders until the run's end."""
        if len(data_loaders) != len(workflow):
            raise ValueError(f"{len(data_loaders)} loaders for a workflow of {len(workflow)} phases")
        if not any(phase == "train" for phase, _ in workflow):
            raise ValueError("the workflow needs a 'train' phase")
        streams = [_Stream(self, loader, phase == "train") for (phase, _), loader in zip(workflow, data_loaders)]
        train = next(s.loader for s in streams if s.train)
        sampler = getattr(train, "sampler", None)
        self.iters_per_epoch = sampler.num_batches() if hasattr(sampler, "num_batches") else len(train)
        if self.by_epoch:
            self._max_iters = self._max_epochs * self.iters_per_epoch
        self.call_hook("before_run")  # first: the text logger hook opens the run's log file here
        self._log_start(workflow)
        try:
            while not self.finished():
                for (phase, count), stream in zip(workflow, streams):
                    getattr(self, f"_{phase}_phase")(stream, count)
        except BaseException:
            # a checkpoint taken before the failure is still written: a retry in this process (a
            # notebook, auto_resume) finds it
            try:
                self.wait_for_checkpoints()
            except CheckpointError as exc:
                self.logger.error(str(exc))
            raise
        self.wait_for_checkpoints()  # the last checkpoint is complete before after_run and the return
        self.call_hook("after_run")

    def _log_start(self, workflow) -> None:
        self.logger.info(f"Start running, work_dir: {self.work_dir}")
        self.logger.info(self.hook_order(), extra=FILE_ONLY)
        self.logger.info(f"{len(self._hooks)} hooks: " + ", ".join(type(h).__name__ for h in self._hooks)
                         + " (the order at each stage: in the log file)")
        length = f"{self._max_epochs} epochs" if self.by_epoch else f"{self._max_iters} iterations"
        self.logger.info(f"workflow: {workflow}, max: {length}, world size {get_world_size()}: "
                         f"{self.iters_per_epoch} iterations per epoch")
        if self.resumed_from:
            self.logger.info(f"resumed from {self.resumed_from} at epoch {self.done.epoch + 1}, iter "
                             f"{self.done.iter + 1} (completed: {self.done.epoch} epochs, {self.done.iter} iterations)")

    def finished(self) -> bool:
        return self.done.epoch >= self._max_epochs if self.by_epoch else self.done.iter >= self._max_iters

    def run_iter(self, data_batch: dict, train_mode: bool) -> None:
        with self.autocast():
            outputs = self.batch_processor(self.model, data_batch, train_mode=train_mode)
        if not isinstance(outputs, dict):
            raise TypeError("batch_processor must return a dict")
        self.log_buffer.update(outputs["log_vars"], outputs["num_samples"])
        self.outputs = outputs

    def end_data_epoch(self) -> None:
        """A pass over the training data ended (the training stream calls this)."""
        self.done = self.done.next_epoch()
        if not self.by_epoch:
            self.epoch = self.done.epoch

    def _train_phase(self, stream: _Stream, count: int) -> None:
        """``count`` epochs, or iterations under ``max_iters``."""
        self.model.train()
        self.mode, self.data_loader = "train", stream.loader
        for i in range(count):
            if self.finished():
                break
            if self.by_epoch:
                self._train_epoch(stream)
            else:
                self._iteration(stream.next(), i)
        self.data_batch = None

    def _train_epoch(self, stream: _Stream) -> None:
        self.epoch = self.done.epoch
        self.call_hook("before_train_epoch")
        # Steps are counted at this run's world size: after a resume on another number of
        # workers the epoch's remaining batches are re-sharded, and the iteration-based
        # schedules see the same fraction of training done.
        batches = stream.one_pass()
        first = self.iters_per_epoch - len(stream.loader)
        iters = self.done.epoch * self.iters_per_epoch + first
        if iters != self.done.iter:
            self.logger.info(f"iterations counted on world size {get_world_size()}: {self.done.iter} -> {iters} "
                             f"(epoch {self.done.epoch + 1}, {self.done.batch} batches of it done)")
            self.done = dataclasses.replace(self.done, iter=iters)
        self.iter, self.inner_iter = self.done.iter, first - 1
        for i, data_batch in enumerate(batches, start=first):
            self._iteration(data_batch, i)
        self.end_data_epoch()
        self.call_hook("after_train_epoch")
        self.log_buffer.clear_output()
        self.epoch = self.done.epoch

    def _iteration(self, data_batch, inner_iter: int) -> None:
        tick = time.perf_counter()
        self.iter, self.inner_iter, self.data_batch = self.done.iter, inner_iter, data_batch
        self.call_hook("before_train_iter")
        self.run_iter(data_batch, train_mode=True)
        self.done = self.done.stepped(get_world_size())  # the one point: after the step
        self.call_hook("after_train_iter")
        self.log_buffer.clear_output()
        self.iter = self.done.iter
        took = time.perf_counter() - tick
        self.step_seconds = took if self.step_seconds is None else 0.8 * self.step_seconds + 0.2 * took

    @torch.no_grad()
    def _val_phase(self, stream: _Stream, count: int) -> None:
        """Losses without gradients over ``count`` epochs of the loader (or, under ``max_iters``,
        ``count`` batches of its stream), logged as one val record. mmdet's detectors only compute
        losses in train mode, so the model is in train mode with its BatchNorm layers frozen."""
        self.model.train()
        for m in self.model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
        self.mode, self.data_loader = "val", stream.loader
        for _ in range(count if self.by_epoch else 1):
            self.call_hook("before_val_epoch")
            batches = stream.one_pass() if self.by_epoch else (stream.next() for _ in range(count))
            for i, data_batch in enumerate(batches):
                self.inner_iter = i
                self.call_hook("before_val_iter")
                self.run_iter(data_batch, train_mode=False)
                self.call_hook("after_val_iter")
            self.call_hook("after_val_epoch")
            self.log_buffer.clear_output()

    # ------------------------------------------------------------------ state
    def progress(self) -> tuple[int, int]:
        """Completed ``(epochs, iterations)``."""
        return self.done.epoch, self.done.iter

    def state_dict(self, save_optimizer: bool = True, meta: dict | None = None, rng: list | None = None,
                   ranks: list | None = None) -> dict:
        """Everything a resume needs, tensors as the live ones (on their devices), at the work
        done so far (:attr:`done`). ``rng`` and ``ranks``: every rank's generator states and own
        hook state, in rank order (default: this process's alone)."""
        full_meta = dict(self.meta)
        full_meta.update(meta or {})
        full_meta.update(epoch=self.done.epoch, iter=self.done.iter, max_epochs=self._max_epochs,
                         max_iters=self._max_iters, time=time.asctime(), timestamp=self.timestamp,
                         raydet_version=__version__, torch_version=str(torch.__version__),
                         python_version=platform.python_version(), world_size=get_world_size())
        state = dict(meta=full_meta,
                     state_dict=strip_prefix(unwrap(self.model).state_dict()),
                     hooks={type(h).__name__: s for h in self._hooks if (s := _hook_state(h))},
                     sampler=dict(epoch=self.done.epoch, start_batch=self.done.batch),
                     rng=rng if rng is not None else [rng_state()])
        if self._rank_hooks():
            state["ranks"] = ranks if ranks is not None else [self._rank_state()]
        if save_optimizer:
            state["optimizer"] = self.optimizer.state_dict()
        return state

    def _rank_hooks(self) -> list:
        """The hooks with state of each rank's own (``rank_state_dict``), in order."""
        return [h for h in self._hooks if callable(getattr(h, "rank_state_dict", None))]

    def _rank_state(self) -> dict:
        """This rank's own hook states, by hook class name."""
        return {type(h).__name__: h.rank_state_dict() for h in self._rank_hooks()}

    def load_state_dict(self, state: dict) -> None:
        """Strict: missing or leftover keys, hooks or weights raise :class:`CheckpointError`.
        The optimizer's state is the checkpoint's except each group's base LR, which stays the
        configured one (mmcv kept the checkpoint's ``initial_lr``)."""
        keys = set(state)
        if not CHECKPOINT_KEYS <= keys <= CHECKPOINT_KEYS | OPTIONAL_KEYS:
            missing, extra = sorted(CHECKPOINT_KEYS - keys), sorted(keys - CHECKPOINT_KEYS - OPTIONAL_KEYS)
            hint = " (saved with save_optimizer=False?)" if "optimizer" in missing else ""
            raise CheckpointError(f"cannot resume: checkpoint missing keys {missing}, leftover keys {extra}{hint}")
        own = {type(h).__name__: h for h in self._hooks if _hook_state(h)}
        if set(own) != set(state["hooks"]):
            raise CheckpointError(f"cannot resume: checkpoint has state of hooks {sorted(state['hooks'])}, "
                                  f"this run has stateful hooks {sorted(own)}")
        configured = [group["lr"] for group in self.optimizer.param_groups]
        # the LR at the checkpoint's iteration (the schedule's, before this run sets its own): what
        # a val record of that point logs
        groups = (state.get("optimizer") or {}).get("param_groups") or [{}]
        self.resumed_lr = groups[0].get("lr")
        own_weights = unwrap(self.model).state_dict()
        saved = state["state_dict"]
        missing = [k for k in own_weights if k not in saved]
        extra = [k for k in saved if k not in own_weights]
        shaped = [f"{k} {tuple(saved[k].shape)} vs the model's {tuple(v.shape)}" for k, v in own_weights.items()
                  if k in saved and hasattr(saved[k], "shape") and saved[k].shape != v.shape]
        if missing or extra or shaped:
            parts = [f"{label} {', '.join(items[:3])}" + (f" and {len(items) - 3} more" if len(items) > 3 else "")
                     for label, items in (("missing weights", missing), ("leftover weights", extra),
                                          ("other shapes:", shaped)) if items]
            raise CheckpointError("cannot resume: the checkpoint's model is not this model: " + "; ".join(parts))
        try:
            unwrap(self.model).load_state_dict(saved, strict=True)
            self.optimizer.load_state_dict(state["optimizer"])
            # The LR schedules start again from this run's configured LR, not the checkpoint's: with
            # auto_scale_lr it depends on the world size, which may differ after a restart.
            for group, lr in zip(self.optimizer.param_groups, configured):
                group["lr"] = lr
                group.pop("initial_lr", None)
            for name, hook in own.items():
                hook.load_state_dict(state["hooks"][name])
            ranks = state.get("ranks") or []
            mine = ranks[get_rank()] if get_rank() < len(ranks) else None
            for hook in self._rank_hooks():
                hook.load_rank_state_dict(None if mine is None else mine.get(type(hook).__name__, {}))
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"cannot resume: {exc}") from None
        meta = state["meta"]
        self.meta["hook_msgs"] = dict(meta.get("hook_msgs", {}))
        self.done = Position(epoch=int(state["sampler"]["epoch"]), iter=int(meta["iter"]),
                             batch=int(state["sampler"]["start_batch"]))
        self.epoch, self.iter = self.done.epoch, self.done.iter
        epochs = int(meta.get("max_epochs") or 0)
        self.saved_position = (int(meta["max_iters"]) // epochs if epochs else None, self.done.iter)
        seed = self.meta.get("seed", meta.get("seed")) or 0
        how = restore_rng(state["rng"], get_rank(), seed, self.done.iter)
        if how == "seeded":
            self.logger.info(f"rank {get_rank()} has no saved RNG state (the checkpoint has {len(state['rng'])} "
                             f"ranks'): seeded from (seed {seed}, rank {get_rank()}, iteration {self.done.iter})")

    def save_checkpoint(self, path: str, save_optimizer: bool = True, meta: dict | None = None,
                        create_symlink: bool = True, then=()) -> int:
        """Checkpoint the state of this iteration boundary to ``path``. Every rank calls this (a
        collective: each rank's RNG state, and rank 0's plan, go to every rank). Rank 0 takes the
        state and its writer writes it atomically, points ``latest.pth`` at it and then runs the
        ``then`` callables (e.g. pruning old files); with a background writer the state is copied
        first and training goes on while the file is written (the writes of an earlier boundary
        are waited for first: one checkpoint in flight at a time).

        Returns the number of completed iterations from which every rank may take the file as
        complete (the same number on every rank): the current one with a foreground writer; with
        a background one rank 0's estimate of when the write ends. Whoever acts on the file then
        (a report to Ray) calls :meth:`wait_for_checkpoints` first, which blocks rank 0 alone for
        whatever of the write is left."""
        start = time.perf_counter()
        done = self.done.iter
        state = plan = None
        if is_main():
            self.writer.begin(self.done)
            # the live tensors; every rank's RNG and own state below
            state = self.state_dict(save_optimizer, meta, rng=[], ranks=[])
            plan = done + self.writer.iterations_needed(tensor_bytes(state), self.step_seconds)
        gathered = all_gather_objects((rng_state(), plan))
        # every rank's own state (accumulated gradients) to rank 0, taken once per rank
        ranks = gather_objects(self._rank_state()) if self._rank_hooks() else None
        if is_main():
            state["rng"] = [g[0] for g in gathered]
            if ranks is not None:
                state["ranks"] = ranks
            state = self.writer.snapshot(state)
            link = os.path.join(os.path.dirname(path), "latest.pth")
            self.writer.write(state, path, ([lambda: link_latest(path, link)] if create_symlink else []) + list(then))
            how = "the state copied, the file written in the background" if self.writer.background else "written"
            self.logger.info(f"checkpoint {os.path.basename(path)}: the loop held {time.perf_counter() - start:.3f} s "
                             f"({how})", extra=FILE_ONLY)
        return gathered[0][1]

    def wait_for_checkpoints(self) -> float:
        """Return once rank 0's checkpoint writes are complete (elsewhere at once), with the
        seconds waited; the error of a failed write is raised here as :class:`CheckpointError`.
        Not a collective."""
        return self.writer.wait()

    def resume(self, path: str) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint` and continue after it."""
        state = load_file(path)
        try:
            self.load_state_dict(state)
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        self.resumed_from = path

    def load_checkpoint(self, path: str) -> dict:
        """Load weights only (mmdet's ``load_from``), logging mismatched keys; at least the
        backbone must load (see :func:`load_weights`)."""
        return load_weights(self.model, path, self.logger, require="backbone")
