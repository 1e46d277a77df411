"""Checkpoint files: atomic writes, weights-only loads, RNG capture, pretrained loading.

Layout (mmcv 1.x plus what exact resume needs)::

    {'meta': {epoch, iter, time, config, CLASSES, raydet_version, torch_version, seed,
              hook_msgs, fp16: {loss_scaler}, timestamp, ...},
     'state_dict': model weights on CPU, no 'module.' prefix,
     'optimizer': optimizer.state_dict(),
     'hooks': {hook class name: hook.state_dict()},
     'sampler': {'epoch', 'start_batch'},
     'rng': [{'python', 'numpy', 'torch', 'cuda'} of rank 0, of rank 1, ...]}

``rng`` holds every rank's generators, in rank order (a model's forward draws on its own rank's:
proposal sampling, dropout). A resume restores rank ``r``'s own state. After a restart on more
ranks than the checkpoint has states for, a rank without one is seeded from
``(seed, rank, iteration)`` (:func:`restore_rng`); on fewer ranks the surplus states are unused.
A checkpoint of an older raydet holds one dict: rank 0's.

Every value is a tensor or a plain python type, so ``torch.load(weights_only=True)`` reads it.
"""
from __future__ import annotations

import glob
import logging
import math
import os
import random
import re
import tempfile
import threading
import time
from typing import Callable, Iterable

import numpy as np
import torch

from ..errors import CheckpointError
from .dist import unwrap

logger = logging.getLogger("raydet")


#: names of the temporary files :func:`save_file` and :func:`link_latest` rename into place; a
#: process killed before the rename leaves one behind (:func:`remove_orphans` clears them)
_TMP_FILE = re.compile(r"^(\.tmp-.*\.pth|.+\.pth\.tmp-\d+)$")


def _fsync_dir(directory: str) -> None:
    """Make a rename in ``directory`` durable: without it a power loss can undo the rename
    although the file's data was synced."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_file(obj: dict, path: str) -> None:
    """``torch.save`` to a temp file in the same directory, fsync, rename over ``path``, fsync the
    directory: a crash leaves either the old file or the new one, never half of one."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pth", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def to_cpu(state, copy: bool = False, buffers: list | None = None):
    """``state`` (nested dicts, lists, tuples) with every tensor on the CPU.

    ``copy=False``: CUDA tensors are copied, CPU tensors are the live ones (a write that finishes
    before training goes on). ``copy=True``: no tensor shares memory with the live state, so
    training may change it while a background thread writes the copy. The copies go into
    ``buffers`` when given (page-locked for CUDA tensors), reused from one checkpoint to the next
    where shape and dtype agree: fresh memory costs a page fault per page, page-locked memory far
    more, and both more than the copy itself; the CUDA copies are asynchronous, with one device
    sync for all of them."""
    reuse = iter(buffers) if buffers is not None and copy else iter(())
    kept, used_cuda = [], [False]

    def convert(obj):
        if isinstance(obj, torch.Tensor):
            obj = obj.detach()
            if not copy:
                return obj if obj.device.type == "cpu" else obj.to("cpu", copy=True)
            cuda = obj.device.type == "cuda"
            buf = next(reuse, None)
            if buf is None or buf.shape != obj.shape or buf.dtype != obj.dtype or buf.is_pinned() != cuda:
                buf = torch.empty(obj.shape, dtype=obj.dtype, pin_memory=cuda)
            kept.append(buf)
            buf.copy_(obj, non_blocking=cuda)
            used_cuda[0] |= cuda
            return buf
        if isinstance(obj, dict):
            return {k: convert(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(convert(v) for v in obj)
        return obj

    out = convert(state)
    if used_cuda[0]:
        torch.cuda.synchronize()  # the non-blocking copies have landed before anyone reads them
    if buffers is not None and copy:
        buffers[:] = kept
    return out


def tensor_bytes(state) -> int:
    """Bytes of the tensors in nested dicts/lists/tuples ``state``."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(tensor_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(tensor_bytes(v) for v in state)
    return 0


class CheckpointWriter:
    """Writes rank 0's checkpoint files: in the caller's thread, or (``background=True``) in a
    thread of its own while training goes on.

    :meth:`write` saves atomically (:func:`save_file`), then runs the ``then`` actions (re-link
    ``latest.pth``, prune old files), in that order, so a kill at any moment leaves the newest
    complete checkpoint in place. One checkpoint is in flight at a time: :meth:`begin`, called
    before the state is taken, waits for the writes of earlier iteration boundaries; the files
    of one boundary (e.g. ``best_*.pth`` and ``epoch_N.pth``) are written one after the other,
    each from its own copy. State given to a background write must not change afterwards (see
    :meth:`snapshot`). A failed background write is raised by the next :meth:`wait` or
    :meth:`write` as :class:`CheckpointError` naming the file, and the writes queued behind it
    are dropped. The thread is not a daemon: a process that ends on an exception elsewhere first
    finishes its files.
    """

    #: assumed write speed before the first write has measured one (a local SSD with fsync)
    DEFAULT_BYTES_PER_S = 200e6

    def __init__(self, background: bool = True):
        self.background = background
        self.bytes_per_s = None  # measured by the last write
        self.seconds: dict[str, float] = {}  # path -> how long its write took
        self.buffers: list = []  # the last snapshot's tensors, reused by the next one (see to_cpu)
        self._queue: list = []
        self._thread = None
        self._running = False
        self._boundary = None
        self._queued_bytes = 0  # of the writes queued or in flight
        self._error = None
        self._lock = threading.Lock()

    @property
    def busy(self) -> bool:
        """Whether a background write is in flight."""
        with self._lock:
            return self._running

    def snapshot(self, state):
        """``state`` as :meth:`write` needs it: copied off the live tensors when writing in the
        background, else the tensors moved to the CPU. The last snapshot's memory is reused, but
        not while a write is in flight (a second file of the same boundary)."""
        return to_cpu(state, copy=self.background, buffers=self.buffers if not self.busy else None)

    def begin(self, boundary) -> None:
        """Start the checkpoint files of iteration boundary ``boundary`` (any comparable value):
        wait for the writes of another boundary."""
        if boundary != self._boundary:
            self.wait()
            self._boundary = boundary

    def write(self, state: dict, path: str, then: Iterable[Callable[[], None]] = ()) -> None:
        job = (state, path, list(then), tensor_bytes(state))
        if not self.background:
            self._write(*job)
            return
        with self._lock:
            self._queue.append(job)
            self._queued_bytes += job[3]
            if self._running:
                return
            self._running = True
        self._thread = threading.Thread(target=self._run, daemon=False, name="raydet-checkpoint-writer")
        self._thread.start()

    def _write(self, state, path, then, nbytes):
        start = time.perf_counter()
        save_file(state, path)
        for action in then:
            action()
        seconds = time.perf_counter() - start
        self.seconds[path] = seconds
        self.bytes_per_s = max(nbytes, 1) / max(seconds, 1e-6)

    def _run(self):
        while True:
            with self._lock:
                if not self._queue:
                    self._running = False
                    return
                job = self._queue.pop(0)
            try:
                self._write(*job)
            except BaseException as exc:  # raised in the training thread by the next wait()
                with self._lock:
                    self._error = (job[1], exc)
                    self._queue.clear()
            with self._lock:
                self._queued_bytes = sum(j[3] for j in self._queue)

    def wait(self) -> float:
        """Block until no write is in flight; raise the error of a failed one. Returns the
        seconds spent waiting."""
        start = time.perf_counter()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            error, self._error = self._error, None
        if error is not None:
            path, exc = error
            raise CheckpointError(f"writing checkpoint {path} failed: {type(exc).__name__}: {exc}") from exc
        return time.perf_counter() - start

    def iterations_needed(self, nbytes: int, step_seconds: float | None) -> int:
        """How many training iterations a write of ``nbytes`` will likely take (at least 1: the
        file is never taken as written in the iteration that started it), from the speed of the
        last write and ``step_seconds`` per iteration, with a quarter's margin; the writes queued
        before it count too. ``0`` when writing in the foreground."""
        if not self.background:
            return 0
        with self._lock:
            nbytes += self._queued_bytes
        seconds = 1.25 * nbytes / (self.bytes_per_s or self.DEFAULT_BYTES_PER_S)
        return 1 + math.ceil(seconds / max(step_seconds or 1.0, 1e-3))


def link_latest(target: str, link: str) -> None:
    """Atomically point ``link`` (e.g. ``latest.pth``) at ``target`` (a relative symlink)."""
    tmp = f"{link}.tmp-{os.getpid()}"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(os.path.basename(target), tmp)
    os.replace(tmp, link)
    _fsync_dir(os.path.dirname(os.path.abspath(link)))


def remove_orphans(directory: str) -> list[str]:
    """Delete the temporary files of checkpoint writes that a killed process left in
    ``directory`` (only names :func:`save_file`/:func:`link_latest` make). Call it where no write
    is in flight: at the start of a run, on the rank that writes. Returns the removed paths."""
    removed = []
    if os.path.isdir(directory):
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if _TMP_FILE.match(name) and (os.path.islink(path) or os.path.isfile(path)):
                os.unlink(path)
                removed.append(path)
    if removed:
        logger.info(f"removed {len(removed)} unfinished checkpoint write(s) of an earlier attempt: "
                    + ", ".join(os.path.basename(p) for p in removed))
    return removed


def load_file(path: str, map_location="cpu", mmap: bool = False) -> dict:
    """Load a checkpoint with ``weights_only=True``; :class:`CheckpointError` names the file when
    it is missing, truncated or not a checkpoint. ``mmap``: map the tensors instead of reading
    them (for a look at ``meta`` without reading the weights)."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # zip/pickle/EOF errors all mean the same thing to the user
        text = str(exc) or type(exc).__name__
        if "WeightsUnpickler error:" in text and "global" in text:  # a readable pickle naming code to run
            detail = text.split("WeightsUnpickler error:")[1].strip().splitlines()[0]
            # torch's own text goes on to suggest weights_only=False: not a thing to tell a user
            detail = detail.split(". ")[0].split(" was not an allowed global")[0]
            raise CheckpointError(f"checkpoint {path} is refused for safety: it holds Python objects other than "
                                  f"tensors and plain values ({detail}), and loading them could run code. raydet "
                                  f"loads checkpoints weights-only; re-save it as a plain state dict") from None
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt "
                              f"({type(exc).__name__}: {text.splitlines()[0][:200]})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict")
    return obj


def strip_prefix(state_dict: dict, prefix: str = "module.") -> dict:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state_dict.items()}


def load_weights(model: torch.nn.Module, path: str, logger: logging.Logger | None = None,
                 require: str = "nothing") -> dict:
    """Weight loading by name (mmdet's ``load_from`` / ``init_cfg``): shapes that disagree are
    skipped, and missing/unexpected/mismatched keys are logged. Returns the checkpoint.

    ``require`` says what must load, else :class:`CheckpointError` lists what did not (nothing is
    half-applied: the check runs before the weights are copied): ``'nothing'`` (``init_cfg``
    Pretrained: load what matches), ``'backbone'`` (``load_from``: at least every backbone
    tensor, so that a checkpoint of another architecture is not silently a run from scratch;
    heads of another ``num_classes`` are re-initialised and reported), ``'all'`` (``raydet
    test``: every tensor of the model, at its shape)."""
    log = logger or globals()["logger"]
    ckpt = load_file(path)
    state = strip_prefix(ckpt.get("state_dict", ckpt))
    module = unwrap(model)
    if require != "nothing":
        own = module.state_dict()
        needed = list(own) if require == "all" else _backbone_keys(own)
        lacking = [k for k in needed if k not in state or state[k].shape != own[k].shape]
        if lacking or not needed:
            what = "the model" if require == "all" else "the model's backbone"
            shown = ", ".join(f"{k} ({'missing' if k not in state else 'shape ' + str(tuple(state[k].shape))})"
                              for k in lacking[:5])
            more = f" and {len(lacking) - 5} more" if len(lacking) > 5 else ""
            hint = ("" if require == "all" else "; to start from whatever matches, load it as "
                    "model.init_cfg=dict(type='Pretrained', checkpoint=...) instead of load_from")
            raise CheckpointError(f"{path} does not fit {what}: {len(lacking)} of its {len(needed)} tensors do not "
                                  f"load: {shown}{more}{hint}")
    load_state_non_strict(module, state, f"load weights from {path}", log)
    return ckpt


def _backbone_keys(state: dict) -> list[str]:
    """The keys of the detector's ``backbone`` (mmdet's names)."""
    return [k for k in state if k.startswith("backbone.")]


def load_state_non_strict(module: torch.nn.Module, state: dict, title: str, log: logging.Logger) -> None:
    """Load ``state`` into ``module`` by name, skipping shapes that disagree; log ``title`` with the
    missing, unexpected and mismatched keys."""
    own = module.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    result = module.load_state_dict({k: v for k, v in state.items() if k not in mismatched}, strict=False)
    parts = []
    if result.missing_keys:
        parts.append(f"missing keys in source state_dict: {', '.join(result.missing_keys)}")
    if result.unexpected_keys:
        parts.append(f"unexpected keys in source state_dict: {', '.join(result.unexpected_keys)}")
    if mismatched:
        parts.append(f"size mismatch (skipped): {', '.join(mismatched)}")
    log.info(title + ("" if not parts else "\n" + "\n".join(parts)))


def rng_state() -> dict:
    """Python, numpy, torch and CUDA generator states as tensors/python types."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = dict(python=[version, list(mt), gauss],
                 numpy=[kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
                 torch=torch.get_rng_state())
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        states = state["cuda"][:torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)


def derived_seed(seed: int, rank: int, iteration: int) -> int:
    """A 31-bit seed that is a pure function of ``(seed, rank, iteration)``."""
    return int(np.random.SeedSequence([int(seed), int(rank), int(iteration)]).generate_state(1)[0] >> 1)


def restore_rng(saved, rank: int, seed: int, iteration: int) -> str:
    """Set this rank's generators from a checkpoint's ``rng`` (see the module docstring). Returns
    how: ``'restored'`` or ``'seeded'``."""
    states = [saved] if isinstance(saved, dict) else list(saved)
    if rank < len(states):
        set_rng_state(states[rank])
        return "restored"
    s = derived_seed(seed, rank, iteration)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)  # every CUDA device too
    return "seeded"


NUMBERED = re.compile(r"^(epoch|iter)_(\d+)\.pth$")


def checkpoint_progress(path: str) -> tuple[int, int]:
    """How far the training checkpoint ``path`` got, in units that do not depend on the world
    size: ``(epoch, global batches of it consumed)``, read from its sampler position without
    reading the weights. :class:`CheckpointError` when it is unreadable or not a raydet training
    checkpoint."""
    try:
        sampler = load_file(path, mmap=True)["sampler"]
        return int(sampler["epoch"]), int(sampler["start_batch"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path} has no sampler position: not a raydet training checkpoint") from None


def launch_of(path: str) -> str | None:
    """The launch (see :class:`raydet.run.plan.RunPlan`) that wrote the checkpoint ``path``."""
    try:
        return load_file(path, mmap=True)["meta"].get("launch")
    except (KeyError, TypeError):
        return None


def checkpoint_dirs(work_dir: str, out_dir: str | None = None) -> list[str]:
    """Where a run's periodic checkpoints are: the work_dir, and with ``checkpoint_config.out_dir``
    that directory's ``<work_dir's name>`` sub-directory (mmcv 1.x's layout, so that runs sharing
    an ``out_dir`` stay apart)."""
    dirs = [work_dir]
    if out_dir:
        dirs.append(os.path.join(out_dir, os.path.basename(os.path.normpath(work_dir))))
    return dirs


def find_latest_checkpoint(*dirs: str, launch: str | None = None) -> str | None:
    """The newest loadable checkpoint in ``dirs``: of the ``epoch_N.pth``/``iter_N.pth`` files
    (and ``latest.pth``'s target), the one that got furthest by its own sampler position
    (:func:`checkpoint_progress`), not by ``latest.pth``: a kill between writing a checkpoint
    and re-linking leaves the link at the one before. Corrupt files are skipped with a warning.
    ``launch``: only the checkpoints whose ``meta['launch']`` is that launch's. ``None`` when
    there is none."""
    paths = set()
    for directory in dirs:
        for path in glob.glob(os.path.join(directory, "*.pth")) if directory and os.path.isdir(directory) else []:
            name = os.path.basename(path)
            if NUMBERED.match(name) or (name == "latest.pth" and os.path.exists(path)):
                paths.add(os.path.realpath(path))
    ranked = []
    for path in paths:
        try:
            if launch is not None and launch_of(path) != launch:
                continue
            ranked.append((checkpoint_progress(path), path))
        except CheckpointError as exc:
            logger.warning(f"skipping unusable checkpoint: {exc}")
    for _, path in sorted(ranked, reverse=True):
        try:
            load_file(path)  # the whole file: mmap reads no tensor bytes, so corruption there shows only now
            return path
        except CheckpointError as exc:
            logger.warning(f"skipping unusable checkpoint: {exc}")
    return None


def check_work_dir(work_dir: str) -> None:
    """Make sure ``work_dir`` is, or can become, a directory this process writes in (created if
    absent; a probe file is written and removed). :class:`ConfigError` names it otherwise: a
    file in its place, a read-only or full filesystem, no permission. Called before anything is
    built or moved."""
    from ..errors import ConfigError
    if os.path.exists(work_dir) and not os.path.isdir(work_dir):
        raise ConfigError(f"work_dir {work_dir} is a file, not a directory")
    try:
        os.makedirs(work_dir, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=work_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"work_dir {work_dir} is not writable: {exc.strerror or exc}") from None


def move_aside(path: str, log: logging.Logger | None = None) -> str | None:
    """Keep the file at ``path`` that a run is about to write over (a user's picture, an earlier
    attempt's best checkpoint): rename it to ``<stem>.old-<its time><ext>`` (never over another
    file) and log it. Returns the new name, ``None`` when nothing is there."""
    if not os.path.lexists(path):
        return None
    stem, ext = os.path.splitext(path)
    stamp = time.strftime("%Y%m%d_%H%M%S", time.localtime(os.path.getmtime(path)))
    new, n = f"{stem}.old-{stamp}{ext}", 1
    while os.path.lexists(new):
        new, n = f"{stem}.old-{stamp}-{n}{ext}", n + 1
    os.rename(path, new)
    (log or logger).warning(f"{path} was not written by this run: kept as {new}")
    return new


def set_aside(work_dir: str) -> str | None:
    """A fresh start on a used work_dir: rename it to ``<work_dir>.old-<time>`` (never deleted,
    never overwritten) and return the new name; ``None`` when there is nothing to keep."""
    if not (os.path.isdir(work_dir) and os.listdir(work_dir)):
        return None
    old = f"{work_dir}.old-{time.strftime('%Y%m%d_%H%M%S')}"
    n = 1
    while os.path.exists(old):
        old, n = f"{work_dir}.old-{time.strftime('%Y%m%d_%H%M%S')}-{n}", n + 1
    os.rename(work_dir, old)
    logger.warning(f"fresh start: the previous run in {work_dir} was moved to {old}")
    return old


def finished(meta: dict, runner: dict) -> dict | None:
    """``meta`` (a checkpoint's) when its run reached the end ``runner`` (the config's ``runner``
    dict) sets: ``max_epochs``, or ``max_iters`` for ``IterBasedRunner``; else ``None``."""
    if runner.get("type") == "IterBasedRunner":
        done = meta.get("max_epochs") is None and meta["iter"] >= meta.get("max_iters", float("inf")) == runner["max_iters"]
    else:
        done = meta["iter"] >= meta.get("max_iters", float("inf")) and meta.get("max_epochs") == runner["max_epochs"]
    return meta if done else None
