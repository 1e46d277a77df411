"""The epoch-based runner: mmcv 1.x's EpochBasedRunner semantics in detectron2's shape.

It takes built objects (model, batch processor, optimizer, loaders, hooks), never a config.
Everything stateful is collected by :meth:`Runner.state_dict` into one checkpoint, and
:meth:`Runner.resume` restores it strictly and continues at the next iteration, mid-epoch
included. See :class:`raydet.engine.hooks.Hook` for the loop.
"""
from __future__ import annotations

import logging
import os
import platform
import time

import torch

from .. import __version__
from ..errors import CheckpointError
from .checkpoint import (CheckpointWriter, link_latest, load_file, load_weights, restore_rng, rng_state,
                         strip_prefix, tensor_bytes)
from .dist import all_gather_objects, gather_objects, get_rank, get_world_size, is_main, unwrap
from .hooks import Hook, LogBuffer, get_priority
from .hooks.logger import FILE_ONLY

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


class Runner:
    """Runs ``workflow`` (e.g. ``[('train', 1), ('val', 1)]``) until ``max_epochs``.

    ``batch_processor(model, data, train_mode) -> dict(loss, log_vars, num_samples)`` computes a
    batch's losses (:func:`raydet.apis.batch_processor`); its forward runs under
    ``autocast()`` (see :class:`raydet.engine.precision.Precision`). ``epoch``, ``iter`` and
    ``inner_iter`` count completed epochs / iterations in mmcv's way: inside ``after_train_iter``
    ``iter`` is still the index of the iteration that just finished. ``checkpoint_writer``
    writes rank 0's checkpoint files (default: in the foreground; see :meth:`save_checkpoint`).
    """

    def __init__(self, model, batch_processor, optimizer, work_dir: str, max_epochs: int,
                 logger: logging.Logger | None = None, meta: dict | None = None, autocast=None,
                 timestamp: str | None = None, checkpoint_writer: CheckpointWriter | None = None):
        self.model, self.batch_processor, self.optimizer = model, batch_processor, optimizer
        self.work_dir = os.path.abspath(work_dir)
        self.logger = logger or logging.getLogger("raydet")
        self.meta = dict(meta or {})
        self.autocast = autocast or (lambda: torch.autocast("cpu", enabled=False))
        self.timestamp = timestamp or time.strftime("%Y%m%d_%H%M%S", time.localtime())
        self._max_epochs = max_epochs
        self._epoch = self._iter = self._inner_iter = 0
        self._max_iters = 0
        self.iters_per_epoch = 0
        self.start_batch = 0  # global batches of the current epoch already consumed (resume)
        self._epoch_start = (0, 0)  # (first step, start_batch) of the running epoch
        self.saved_position = (None, 0)  # (iterations per epoch, iteration) of the resumed checkpoint
        self.mode, self.data_loader, self.outputs, self.data_batch = None, None, {}, None
        self.log_buffer = LogBuffer()
        self._hooks: list[Hook] = []
        self.writer = checkpoint_writer or CheckpointWriter(background=False)
        self.step_seconds = None  # moving average of a training iteration's wall time
        self._stage = None
        self.resumed_from = None
        self.resumed_lr = None  # the first param group's LR in the resumed checkpoint

    epoch = property(lambda self: self._epoch)
    iter = property(lambda self: self._iter)
    inner_iter = property(lambda self: self._inner_iter)
    max_epochs = property(lambda self: self._max_epochs)
    max_iters = property(lambda self: self._max_iters)
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
        self._stage = stage
        for hook in self._hooks:
            getattr(hook, stage)(self)
        self._stage = None

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
        """Run the phases of ``workflow`` with the matching loaders until ``max_epochs``."""
        if len(data_loaders) != len(workflow):
            raise ValueError(f"{len(data_loaders)} loaders for a workflow of {len(workflow)} phases")
        for (phase, _), loader in zip(workflow, data_loaders):
            if phase == "train":
                sampler = getattr(loader, "sampler", None)
                self.iters_per_epoch = sampler.num_batches() if hasattr(sampler, "num_batches") else len(loader)
        self._set_length()
        self.call_hook("before_run")  # first: the text logger hook opens the run's log file here
        self.logger.info(f"Start running, work_dir: {self.work_dir}")
        self.logger.info(self.hook_order(), extra=FILE_ONLY)
        self.logger.info(f"{len(self._hooks)} hooks: " + ", ".join(type(h).__name__ for h in self._hooks)
                         + " (the order at each stage: in the log file)")
        self.logger.info(f"workflow: {workflow}, max: {self._length()}, world size {get_world_size()}: "
                         f"{self.iters_per_epoch} iterations per epoch")
        if self.resumed_from:
            self.logger.info(f"resumed from {self.resumed_from} at epoch {self._epoch + 1}, iter {self._iter + 1} "
                             f"(completed: {self._epoch} epochs, {self._iter} iterations)")
        try:
            self._loop(data_loaders, workflow)
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

    def _set_length(self) -> None:
        self._max_iters = self._max_epochs * self.iters_per_epoch

    def _length(self) -> str:
        return f"{self._max_epochs} epochs"

    def _loop(self, data_loaders: list, workflow: list[tuple[str, int]]) -> None:
        while self._epoch < self._max_epochs:
            for (phase, epochs), loader in zip(workflow, data_loaders):
                for _ in range(epochs):
                    if phase == "train" and self._epoch >= self._max_epochs:
                        break
                    getattr(self, phase)(loader)

    def run_iter(self, data_batch: dict, train_mode: bool) -> None:
        with self.autocast():
            outputs = self.batch_processor(self.model, data_batch, train_mode=train_mode)
        if not isinstance(outputs, dict):
            raise TypeError("batch_processor must return a dict")
        self.log_buffer.update(outputs["log_vars"], outputs["num_samples"])
        self.outputs = outputs

    def train(self, data_loader) -> None:
        self.model.train()
        self.mode, self.data_loader = "train", data_loader
        self.call_hook("before_train_epoch")  # the sampler learns its epoch and resume position here
        # Steps are counted at this run's world size: after a resume on another number of
        # workers the epoch's remaining batches are re-sharded, and the iteration-based
        # schedules see the same fraction of training done.
        first = self.iters_per_epoch - len(data_loader)
        self._epoch_start = (first, self.start_batch)
        iters = self._epoch * self.iters_per_epoch + first
        if iters != self._iter:
            self.logger.info(f"iterations counted on world size {get_world_size()}: {self._iter} -> {iters} "
                             f"(epoch {self._epoch + 1}, {self.start_batch} batches of it done)")
            self._iter = iters
        self._inner_iter = first - 1
        tick = time.perf_counter()
        for i, data_batch in enumerate(data_loader, start=first):
            self._inner_iter = i
            self.data_batch = data_batch  # for hooks, as in mmcv
            self.call_hook("before_train_iter")
            self.run_iter(data_batch, train_mode=True)
            self.call_hook("after_train_iter")
            self.log_buffer.clear_output()
            self._iter += 1
            tock = time.perf_counter()
            self.step_seconds = tock - tick if self.step_seconds is None else 0.8 * self.step_seconds + 0.2 * (tock - tick)
            tick = tock
        self.data_batch = None
        self.start_batch = 0
        self.call_hook("after_train_epoch")
        self.log_buffer.clear_output()
        self._epoch += 1

    @torch.no_grad()
    def val(self, data_loader) -> None:
        """Losses on ``data_loader`` without gradients. torchvision detectors only compute losses
        in train mode, so the model is in train mode with its BatchNorm layers frozen."""
        self.model.train()
        norms = [m for m in self.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for m in norms:
            m.eval()
        self.mode, self.data_loader = "val", data_loader
        self.call_hook("before_val_epoch")
        for i, data_batch in enumerate(data_loader):
            self._inner_iter = i
            self.call_hook("before_val_iter")
            self.run_iter(data_batch, train_mode=False)
            self.call_hook("after_val_iter")
        self.call_hook("after_val_epoch")
        self.log_buffer.clear_output()

    # ------------------------------------------------------------------ state
    def _module(self):
        return unwrap(self.model)

    def progress(self) -> tuple[int, int]:
        """Completed ``(epochs, iterations)``; from ``after_train_iter``/``after_train_epoch`` the
        iteration or epoch that just finished counts as completed."""
        return (self._epoch + int(self._stage == "after_train_epoch"),
                self._iter + int(self._stage == "after_train_iter"))

    def _sampler_position(self, done_epochs: int) -> dict:
        """The training sampler's position at this boundary: its epoch and the global batches of
        it already trained."""
        if self._stage in ("after_train_iter", "before_train_iter"):
            first, start_batch = self._epoch_start
            steps = self._inner_iter + int(self._stage == "after_train_iter") - first
            return dict(epoch=self._epoch, start_batch=start_batch + steps * get_world_size())
        return dict(epoch=done_epochs, start_batch=0)

    def state_dict(self, save_optimizer: bool = True, meta: dict | None = None, rng: list | None = None,
                   ranks: list | None = None) -> dict:
        """Everything a resume needs, tensors as the live ones (on their devices). Called from a
        hook, it counts the iteration or epoch that just finished as done (in
        ``before_train_iter``: the iterations before this one). ``rng`` and ``ranks``: every
        rank's generator states and own hook state, in rank order (default: this process's
        alone)."""
        done_epochs, done_iters = self.progress()
        sampler = self._sampler_position(done_epochs)
        full_meta = dict(self.meta)
        full_meta.update(meta or {})
        full_meta.update(epoch=done_epochs, iter=done_iters, max_epochs=self._max_epochs, max_iters=self._max_iters,
                         time=time.asctime(), timestamp=self.timestamp, raydet_version=__version__,
                         torch_version=str(torch.__version__), python_version=platform.python_version(),
                         world_size=get_world_size())
        state = dict(meta=full_meta,
                     state_dict=strip_prefix(self._module().state_dict()),
                     hooks={type(h).__name__: s for h in self._hooks if (s := _hook_state(h))},
                     sampler=sampler, rng=rng if rng is not None else [rng_state()])
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
        own_weights = self._module().state_dict()
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
            self._module().load_state_dict(saved, strict=True)
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
        self._iter = int(meta["iter"])
        epochs = int(meta.get("max_epochs") or 0)
        self.saved_position = (int(meta["max_iters"]) // epochs if epochs else None, self._iter)
        self._epoch = int(state["sampler"]["epoch"])
        self.start_batch = int(state["sampler"]["start_batch"])
        seed = self.meta.get("seed", meta.get("seed")) or 0
        how = restore_rng(state["rng"], get_rank(), seed, self._iter)
        if how == "seeded":
            self.logger.info(f"rank {get_rank()} has no saved RNG state (the checkpoint has {len(state['rng'])} "
                             f"ranks'): seeded from (seed {seed}, rank {get_rank()}, iteration {self._iter})")

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
        _, done = self.progress()
        boundary = (self._epoch, done, self._stage)
        state = plan = None
        if is_main():
            self.writer.begin(boundary)
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
