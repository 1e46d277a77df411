"""What runs on every Ray Train worker."""
from __future__ import annotations

import dataclasses
import errno
import logging
import os
import shutil
import tempfile
import threading
import time

import ray
import ray.train
import torch
from mmcv import Config

from ..engine.hooks import Hook, ReportHook

CKPT_FILE = "checkpoint.pth"


def _setup_logging(rank: int) -> logging.Logger:
    log = logging.getLogger("raydet")
    if rank == 0 and not log.handlers:
        from ..logs import console_handler
        log.addHandler(console_handler())
    log.propagate = False
    return log


def _local_file(ckpt, work_dir: str) -> str:
    """This node's path to the file of Ray's checkpoint ``ckpt``: in place when the run dir is on
    a filesystem this node sees (the work_dir itself, or a shared volume), otherwise downloaded
    from the storage (a bucket) into ``work_dir/downloaded/``."""
    path = os.path.join(ckpt.path, CKPT_FILE)
    if getattr(ckpt.filesystem, "type_name", "local") == "local" and os.path.exists(path):
        return path
    target = os.path.join(work_dir, "downloaded", os.path.basename(ckpt.path.rstrip("/")))
    if not os.path.exists(os.path.join(target, CKPT_FILE)):
        # into a temporary sibling, then renamed: ranks sharing this node never read a partial file
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".download-", dir=os.path.dirname(target))
        ckpt.to_directory(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another rank of this node was first
            shutil.rmtree(tmp, ignore_errors=True)
    return os.path.join(target, CKPT_FILE)


def _ray_candidates() -> list:
    """Ray's checkpoints of this run, newest first: ``get_checkpoint()``, then every other one it
    still keeps (``num_to_keep``), latest report first."""
    from ray.train import CheckpointConsistencyMode
    latest = ray.train.get_checkpoint()
    # at an attempt's start nothing of it is in flight, so this returns at once
    kept = [r.checkpoint for r in ray.train.get_all_reported_checkpoints(
        consistency_mode=CheckpointConsistencyMode.COMMITTED)]
    ordered = ([latest] if latest is not None else []) + kept[::-1]
    seen, out = set(), []
    for ckpt in ordered:
        if ckpt.path not in seen:
            seen.add(ckpt.path)
            out.append(ckpt)
    return out


def _newest_valid_ray_checkpoint(work_dir: str, log: logging.Logger, launch: str | None = None):
    """``(checkpoint, local path)`` of Ray's newest checkpoint whose file loads (corrupt ones are
    skipped with a warning, and the next older one Ray keeps is tried) and, with ``launch``,
    that this launch wrote; or ``None``."""
    from ..engine.checkpoint import load_file
    from ..errors import CheckpointError
    for ckpt in _ray_candidates():
        try:
            path = _local_file(ckpt, work_dir)
            if launch is not None and load_file(path, mmap=True)["meta"].get("launch") != launch:
                continue
            load_file(path)
            return ckpt, path
        except (CheckpointError, OSError) as exc:
            log.warning(f"skipping Ray's checkpoint {ckpt.path}: {exc}")
    return None


def choose_resume(plan) -> str | None:
    """Where this attempt starts, agreed by all ranks (collectives: every rank calls this).

    Rank 0 applies :func:`raydet.run.plan.choose_start` (the plan's one precedence rule) to the
    newest loadable checkpoint of the work_dir (and any ``out_dir``) and Ray's newest loadable
    one — of this launch only when the plan resumes from an explicit checkpoint: Ray's can be
    one behind the last one written (its controller polls reports every ~2 s), and resuming is
    idempotent either way; a corrupt newest checkpoint on either side falls back to the next
    older one. A work_dir file is used only if every rank can read it (a node-local work_dir
    with ``ray.storage_path`` on a bucket: other nodes then load Ray's checkpoint, each
    downloading its own copy)."""
    from ..engine.checkpoint import find_latest_checkpoint
    from ..engine.dist import all_reduce_mean, broadcast_object, get_rank
    from ..run.plan import choose_start
    choice = None
    if get_rank() == 0:
        # on a tie the work_dir's file (the first): Ray's is its hard link
        latest = find_latest_checkpoint(*plan.checkpoint_dirs, launch=plan.own_only)
        found = _newest_valid_ray_checkpoint(plan.work_dir, logging.getLogger("raydet"), plan.own_only)
        path = choose_start(plan, [latest, found and found[1]])
        choice = None if path is None else ("ray", found[0], path) if found and path == found[1] and path != latest \
            else ("file", None, path)
    choice = broadcast_object(choice)
    if choice is None:
        return None
    kind, ckpt, path = choice
    if kind == "file" and all_reduce_mean({"ok": float(os.path.exists(path))})["ok"] < 1.0:
        found = _newest_valid_ray_checkpoint(plan.work_dir, logging.getLogger("raydet")) if get_rank() == 0 else None
        ckpt = broadcast_object(found[0] if found else None)
        if ckpt is None:
            from ..errors import CheckpointError
            raise CheckpointError(f"{path}: not readable on every node and Ray has no checkpoint of this run")
        kind = "ray"
    if kind == "ray":  # each node needs its own copy (rank 0 has it already unless it fell back here)
        path = _local_file(ckpt, plan.work_dir)
    return path


def _link_or_copy(src: str, dst: str) -> None:
    """``dst`` as a hard link to ``src`` (no copy), or a copy where they are on different
    filesystems (``checkpoint_config.out_dir`` on another volume)."""
    if os.path.exists(dst):
        if os.path.samefile(src, dst):  # Ray's own directory of the checkpoint, reported again
            return
        os.remove(dst)
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copyfile(src, dst)


#: the run's log files, copied into each checkpoint Ray uploads (see :class:`RayReportHook`)
LOG_SUFFIXES = (".log", ".log.json")


def restore_logs_from(checkpoint_path: str, work_dir: str) -> list[str]:
    """Bring back the logs a checkpoint carries (``<checkpoint dir>/logs/``) where the work_dir's
    copy is missing or shorter, e.g. on a new machine whose logs came back from a bucket copy that
    lagged behind the checkpoint. The resumed run then cuts them at the checkpoint's position.
    Returns the restored paths."""
    source = os.path.join(os.path.dirname(checkpoint_path), "logs")
    restored = []
    for name in sorted(os.listdir(source)) if os.path.isdir(source) else []:
        local = os.path.join(work_dir, name)
        if name.endswith(LOG_SUFFIXES) and (not os.path.exists(local)
                                            or os.path.getsize(local) < os.path.getsize(os.path.join(source, name))):
            os.makedirs(work_dir, exist_ok=True)
            shutil.copyfile(os.path.join(source, name), local)
            restored.append(local)
    return restored


class LeaveLoop(Exception):
    """Raised out of the runner on every rank once a preemption checkpoint is committed;
    ``deadline`` (epoch seconds) is when Ray will have ended this attempt at the latest."""

    def __init__(self, reason: str, deadline: float):
        super().__init__(reason)
        self.deadline = deadline


class RayAdapter(ReportHook):
    """raydet's one hook on Ray Train: reports checkpoints, leaves the loop on a preemption,
    hands checkpoints to the evaluation off the loop, and makes the final report.

    **Reports.** Each checkpoint is reported once its file is complete, at the same iteration on
    every rank (see :class:`ReportHook`: after that iteration's log line, at LOWEST priority, so a
    worker killed while blocked in the report has already logged it). Rank 0 attaches the file,
    hard-linked into a directory of the work_dir (no copy). ``job.upload``: ``'none'`` when the
    work_dir is Ray's run dir (the checkpoint is already in place), else ``'sync'`` (the report
    returns once the copy in the storage is complete) or ``'async'`` (copied by a background
    thread while training goes on; Ray removes the hard-linked directory afterwards, never the
    checkpoint file itself). The time each report held up training is logged.

    **Preemption.** Every ``job.preemption_check_interval`` iterations all ranks ask Ray
    (``ray.train.get_preemption_info()``, a collective: 7.7 ms on 2 CPU workers, 2% of the
    default recipe's step, hence not every iteration; Ray itself looks for drains every 5 s).
    When this worker group is about to lose a node (a spot reclaim: Ray marks it as draining),
    the state before the next iteration is checkpointed, reported and waited for until Ray has
    committed it, and :class:`LeaveLoop` is raised on every rank; the restart Ray makes at the
    drain's deadline (counted against ``max_preemption_failures``) resumes from it.

    **Evaluation off the loop** (``job.async_eval``, see :class:`raydet.launch.validation.Validation`):
    a checkpoint of an evaluation point is reported for Ray to evaluate (``report(...,
    validation=...)``); ``save_best``'s key gets its worst value in the metrics of every report
    until its evaluation replaces it, so that Ray's score-ordered retention has a number for each.
    """

    def __init__(self, job, plan, logs: "LogUploader | None" = None, taken=()):
        super().__init__()
        if job.upload not in ("none", "sync", "async"):
            raise ValueError(f"upload must be none, sync or async, got {job.upload!r}")
        if job.preemption_check_interval < 1:
            raise ValueError(f"ray.preemption_check_interval must be >= 1, got {job.preemption_check_interval}")
        self.upload, self.logs, self.interval = job.upload, logs, job.preemption_check_interval
        self.taken = set(taken)  # rank 0: directory names of the checkpoints Ray keeps
        schedule = job.async_eval
        self.score = schedule and schedule["best"]
        self.validation_timeout_s = schedule and schedule["timeout_s"]
        self.validation = None
        if schedule:
            from .validation import Validation
            self.validation = Validation(self, job.run_dir or plan.work_dir, schedule)

    # ------------------------------------------------------------------ the loop
    def state_dict(self):
        return self.validation.state_dict() if self.validation is not None else {}

    def load_state_dict(self, state):
        if self.validation is not None:
            self.validation.load_state_dict(state)
        else:
            super().load_state_dict(state)

    def before_run(self, runner):
        if self.validation is not None:
            self.validation.before_run(runner)

    def before_train_iter(self, runner):
        # between iterations, once every hook of the previous one has run (its log line, its
        # periodic checkpoint's report)
        if runner.iter % self.interval == 0:
            self.leave_if_preempted(runner)

    def after_train_iter(self, runner):
        super().after_train_iter(runner)
        if self.validation is not None:
            self.validation.after_train_iter(runner)

    def after_train_epoch(self, runner):
        super().after_train_epoch(runner)
        if self.validation is not None:
            self.validation.after_train_epoch(runner)

    def on_saved(self, runner, path, ready_at):
        super().on_saved(runner, path, ready_at)
        if self.validation is not None and self.validation.due(runner):  # the evaluation point's record, now
            self.pending[-1]["validation"] = dict(record=self.validation.record(runner), step=runner.progress()[1])

    def _unique(self, name: str) -> str:
        """``name``, or ``name-2``, ``-3``, ... if a checkpoint Ray keeps has it: an attempt that
        resumed before an iteration an earlier attempt reported (whose file proved corrupt)
        reports that iteration again, and Ray, pruning the older entry, would delete the
        directory both share."""
        unique, n = name, 1
        while unique in self.taken:
            n += 1
            unique = f"{name}-{n}"
        self.taken.add(unique)
        return unique

    def report(self, runner, path, metrics=None, name=None, validation=None):
        """Report ``path`` (``None``: metrics only) as Ray checkpoint ``name``; every rank calls
        this (a barrier). ``validation`` (``dict(record, step)`` of an evaluation point): Ray is
        to evaluate it."""
        from ray.train import Checkpoint, CheckpointUploadMode, ValidationTaskConfig

        from ..engine.dist import get_rank
        start = time.perf_counter()
        waited = runner.wait_for_checkpoints()  # rank 0: the file is complete
        name = name or "checkpoint_" + os.path.basename(path)[: -len(".pth")]
        metrics = metrics or self.metrics(runner)
        checkpoint = None
        if get_rank() == 0:  # Ray takes rank 0's directory name for every rank's report
            name = self._unique(name)
        if get_rank() == 0 and path is not None:
            directory = os.path.join(runner.work_dir, name)
            os.makedirs(directory, exist_ok=True)
            _link_or_copy(path, os.path.join(directory, CKPT_FILE))
            if self.upload != "none":
                os.makedirs(os.path.join(directory, "logs"), exist_ok=True)
                for log_name in os.listdir(runner.work_dir):
                    if log_name.endswith(LOG_SUFFIXES):
                        shutil.copyfile(os.path.join(runner.work_dir, log_name),
                                        os.path.join(directory, "logs", log_name))
            checkpoint = Checkpoint.from_directory(directory)
        mode = {"none": CheckpointUploadMode.NO_UPLOAD, "sync": CheckpointUploadMode.SYNC,
                "async": CheckpointUploadMode.ASYNC}[self.upload]
        if self.score is not None and self.score["key"] not in metrics:  # the worst, until evaluated
            metrics = dict(metrics, **{self.score["key"]: float("-inf" if self.score["rule"] == "greater" else "inf")})
        task = False
        if validation is not None and checkpoint is not None:  # Ray takes rank 0's
            at = self.validation.at(validation["record"])
            task = ValidationTaskConfig(fn_kwargs=dict(name=name, at=at), timeout_s=self.validation_timeout_s)
        # after an upload the hard-linked directory goes, or it would keep every old checkpoint alive
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name, checkpoint_upload_mode=mode,
                         delete_local_checkpoint_after_upload=self.upload != "none", validation=task)
        if validation is not None:
            self.validation.sent(name, validation["record"], validation["step"])
        self.reported_iter = metrics["iter"]
        written = runner.writer.seconds.get(path) if get_rank() == 0 and path else None
        runner.logger.info(f"{name} reported to Ray in {time.perf_counter() - start:.3f} s (upload: {self.upload}"
                           + (", to be evaluated" if task else "") + ")"
                           + (f", its file took {written:.3f} s to write, {waited:.3f} s of it waited for here"
                              if written is not None else ""))
        if self.logs is not None and get_rank() == 0:
            self.logs.sync(wait=self.upload == "sync")

    # ------------------------------------------------------------------ preemption
    def leave_if_preempted(self, runner) -> None:
        """Every rank: ask Ray (a collective); on a preemption checkpoint, report, wait for Ray's
        commit, then raise :class:`LeaveLoop`."""
        info = ray.train.get_preemption_info()  # a collective: same iterations on every rank
        if info is None:
            return
        start = time.perf_counter()
        self.flush(runner, force=True)  # checkpoints whose writes are still in flight
        _, iters = runner.progress()
        if self.reported_iter != iters:
            path = os.path.join(runner.work_dir, f"iter_{iters}.pth")
            runner.save_checkpoint(path)  # every rank: a collective
            self.report(runner, path, name=f"checkpoint_iter_{iters}")  # waits for the file
        ray.train.get_all_reported_checkpoints()  # returns once Ray has committed every report
        deadline = info.deadline_ms / 1000 if info.deadline_ms else time.time() + 120
        runner.logger.info(
            f"preemption of ranks {sorted(info.preempted_ranks)}: checkpoint of iter {iters} committed in "
            f"{time.perf_counter() - start:.2f} s, {deadline - time.time():.1f} s before the deadline; "
            f"leaving the loop until Ray restarts the worker group")
        raise LeaveLoop("preemption", deadline)

    def wait_to_be_ended(self, stop: "LeaveLoop") -> None:
        """After :class:`LeaveLoop`: the logs uploaded, wait, holding no collective, for Ray to
        end this attempt (Ray 2.60 counts a worker that exits by itself during a drain as an
        ordinary failure); not being ended by the deadline is a bug to report."""
        if self.logs is not None:
            self.logs.sync(wait=True)
        while time.time() < stop.deadline + 60:
            time.sleep(1)
        raise RuntimeError(f"{stop}: Ray did not restart the worker group within 60 s of the deadline") from None

    # ------------------------------------------------------------------ the end
    def finish(self, runner) -> dict | None:
        """Every rank, after training: report the final state with the final evaluation once more
        (Ray's ``Result.metrics`` are those of the last reported checkpoint), upload the logs.
        Returns, on rank 0, what the driver's summary names (``Result.return_value``)."""
        from ..engine.dist import get_rank
        evals = [h.last_metrics for h in runner.hooks if getattr(h, "last_metrics", None)]
        if self.validation is not None and self.validation.last_metrics:
            evals.insert(0, self.validation.last_metrics)
        final = dict(epoch=runner.epoch, iter=runner.iter, done=True,
                     **{k: v for k, v in (evals[0] if evals else {}).items() if isinstance(v, (int, float))})
        # The name carries the iteration: a run extended later reports another final checkpoint, and
        # Ray's pruning of the older one must not delete a directory of the same name.
        if not (runner.resumed_from and runner.iter == runner.saved_position[1]):  # else nothing new to report
            # this attempt's newest checkpoint, wherever checkpoint_config put it (out_dir, no
            # latest.pth); metrics alone where it saved none at the end (save_last=False)
            path = self.last_saved if self.reported_iter == runner.iter else None
            self.report(runner, path, metrics=final, name=f"checkpoint_final_{runner.iter}")
        if self.logs is not None:
            self.logs.sync(wait=True)
        if get_rank() != 0:
            return None
        msgs = dict(runner.meta.get("hook_msgs") or {})
        if self.validation is not None and self.validation.best:  # kept by the evaluation tasks
            msgs.update(best_ckpt=self.validation.best["uri"], best_score=self.validation.best["score"])
        return dict(final, best_checkpoint=msgs.get("best_ckpt"), best_score=msgs.get("best_score"),
                    last_checkpoint=self.last_saved or runner.resumed_from)




class LogUploader:
    """Copies rank 0's logs (text, json, tensorboard, the dumped config) and the ``best_*.pth``
    checkpoint from the local work_dir to ``<run_dir>/logs/`` when Ray's run dir is elsewhere
    (``ray.storage_path``, a bucket work_dir), so that a run's logs and its best model outlive
    its nodes. Periodic checkpoints are Ray's to upload and are skipped; a file unchanged since
    its last upload is not sent again; a best checkpoint the run replaced (and so deleted
    locally) is deleted from there too, unless the evaluation tasks keep the best checkpoint
    there themselves (``owns_best=False``, see :mod:`raydet.launch.validation`). One copy runs at a time in a background thread; a
    request made while one runs is served by the next one."""

    def __init__(self, work_dir: str, run_dir: str, owns_best: bool = True):
        from pyarrow import fs
        self.work_dir, self.owns_best = work_dir, owns_best
        self.fs, root = fs.FileSystem.from_uri(run_dir)
        self.root = root.rstrip("/") + "/logs"
        self.thread = None
        self.sent: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime) at its last upload

    @staticmethod
    def _is_best(name: str) -> bool:
        return name.startswith("best_") and name.endswith(".pth")

    def _files(self):
        for top, dirs, files in os.walk(self.work_dir):
            dirs[:] = [d for d in dirs if d != "downloaded" and not d.startswith(("checkpoint_", "."))]
            for name in files:
                if not name.endswith(".pth") or (top == self.work_dir and self._is_best(name)):
                    yield os.path.join(top, name)

    def restore(self) -> None:
        """Download the files this run already has in the storage but not here (a restart on
        another machine), so that the run keeps one log, and its best checkpoint, across machines."""
        from pyarrow import fs
        for info in self.fs.get_file_info(fs.FileSelector(self.root, allow_not_found=True, recursive=True)):
            local = os.path.join(self.work_dir, *info.path[len(self.root) + 1:].split("/"))
            if info.type == fs.FileType.File and not os.path.exists(local):
                os.makedirs(os.path.dirname(local), exist_ok=True)
                tmp = f"{local}.download-{os.getpid()}"
                with self.fs.open_input_stream(info.path) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.replace(tmp, local)  # never a partial best checkpoint under its real name
                stat = os.stat(local)
                self.sent[os.path.relpath(local, self.work_dir)] = (stat.st_size, stat.st_mtime_ns)

    def _copy(self):
        from pyarrow import fs
        for path in self._files():
            relative = os.path.relpath(path, self.work_dir)
            try:
                stat = os.stat(path)
            except FileNotFoundError:  # a best checkpoint replaced meanwhile
                continue
            if self.sent.get(relative) == (stat.st_size, stat.st_mtime_ns):
                continue
            target = self.root + "/" + relative.replace(os.sep, "/")
            self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            with open(path, "rb") as src, self.fs.open_output_stream(target) as dst:
                shutil.copyfileobj(src, dst)
            self.sent[relative] = (stat.st_size, stat.st_mtime_ns)
        for info in self.fs.get_file_info(fs.FileSelector(self.root, allow_not_found=True)):
            name = info.path.rsplit("/", 1)[-1]
            if self.owns_best and self._is_best(name) and not os.path.exists(os.path.join(self.work_dir, name)):
                self.fs.delete_file(info.path)  # this run's own earlier best, replaced
                self.sent.pop(name, None)

    def sync(self, wait: bool = False) -> None:
        """Copy now (``wait``: before returning; it then also waits for a running copy)."""
        if wait:
            if self.thread is not None:
                self.thread.join()
            self._copy()
        elif self.thread is None or not self.thread.is_alive():
            self.thread = threading.Thread(target=self._copy, name="raydet-log-upload", daemon=True)
            self.thread.start()


@dataclasses.dataclass
class WorkerJob:
    """What the driver hands every Ray worker (``train_loop_config={'job': WorkerJob}``): the
    config as a plain dict (its file need not exist on the worker's node), the driver's
    :class:`~raydet.run.plan.RunPlan`, the ``ObjectRef`` of the shared annotation indexes and of
    ``train_detector``'s ``(model, datasets)``, the caller's ``meta``, how checkpoints reach
    Ray's storage (``upload``: none, sync or async; ``run_dir``: Ray's run dir when it is not the
    work_dir), how often preemption is looked for, and the plan of evaluation off the loop
    (:func:`raydet.launch.validation.plan`) or ``None``."""

    cfg: dict
    plan: object
    objects: object = None
    indexes: object = None
    meta: dict | None = None
    upload: str = "none"
    run_dir: str | None = None
    preemption_check_interval: int = 10
    async_eval: dict | None = None


def _start(job: WorkerJob, log):
    """The read-only config and this attempt's plan (its start agreed by every rank), with the
    logs a bucket run keeps restored; and the log uploader (rank 0, a bucket run)."""
    from ..config.frozen import freeze
    from ..config.loader import import_custom_modules
    cfg = freeze(job.cfg)
    import_custom_modules(cfg)  # a worker gets the config as a dict: import what it registers
    if job.indexes is not None:  # the driver's annotation indexes, mapped from the object store
        from ..data.index import provide
        provide(ray.get(job.indexes))
    if cfg.get("device") == "cuda" or (cfg.get("device") is None and torch.cuda.is_available()):
        from ray.train.torch import get_device
        torch.cuda.set_device(get_device())
    plan = job.plan.starting_from(choose_resume(job.plan))
    rank = ray.train.get_context().get_world_rank()
    logs = (LogUploader(plan.work_dir, job.run_dir, owns_best=not job.async_eval)
            if job.run_dir and rank == 0 else None)
    if logs is not None:
        logs.restore()
        for path in restore_logs_from(plan.start, plan.work_dir) if plan.start else []:
            log.info(f"log {os.path.basename(path)} restored from the checkpoint {plan.start}")
    if plan.start:
        log.info(f"attempt on world size {ray.train.get_context().get_world_size()} resumes from {plan.start}")
    return cfg, plan, logs


def train_loop(config: dict) -> dict:
    """The Ray Train worker function: agree where to start, build, train, report the final state."""
    from ..run import build_from_config, train
    job: WorkerJob = config["job"]
    ctx = ray.train.get_context()
    log = _setup_logging(ctx.get_world_rank())
    log.info(f"worker group of {ctx.get_world_size()} started (rank {ctx.get_world_rank()} here, pid {os.getpid()}, "
             f"node {ray.get_runtime_context().get_node_id()})")
    cfg, plan, logs = _start(job, log)
    taken = [os.path.basename(c.path.rstrip("/")) for c in _ray_candidates()] if ctx.get_world_rank() == 0 else []
    adapter = RayAdapter(job, plan, logs, taken)
    objects = dict(zip(("model", "datasets"), ray.get(job.objects))) if job.objects is not None else {}
    try:
        parts = build_from_config(cfg, plan, meta=job.meta, on_checkpoint=adapter.on_saved, extra_hooks=[adapter],
                                  async_eval=bool(job.async_eval), **objects)
        runner = train(parts, plan)
    except LeaveLoop as stop:
        adapter.wait_to_be_ended(stop)
    return adapter.finish(runner)


def test_loop(config: dict):
    """The Ray Train worker function of ``raydet test --num-workers``: every rank predicts its
    contiguous shard of the test set; rank 0 returns all results in dataset order."""
    from ..apis.test import build_test, predict_test_set
    from ..engine.dist import get_rank
    rank = ray.train.get_context().get_world_rank()
    log = _setup_logging(rank)
    if config.get("use_gpu"):
        from ray.train.torch import get_device
        torch.cuda.set_device(get_device())
    cfg = Config(config["cfg"])
    dataset, model = build_test(cfg, config["checkpoint"], log)
    results = predict_test_set(cfg, dataset, model, progress=rank == 0)
    return results if get_rank() == 0 else None
