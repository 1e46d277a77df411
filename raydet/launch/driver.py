"""Driver side: config -> ``TorchTrainer`` -> ``Result``; fail-fast and error unwrapping."""
from __future__ import annotations

import logging
import os
import re
import tempfile
import time

import ray
import ray.train
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from .. import errors
from ..config import load_config
from ..config.frozen import freeze
from ..run.plan import RunPlan, finished_notice, locate, plan_run, run_dir
from . import validation
from .worker import WorkerJob, test_loop, train_loop

logger = logging.getLogger("raydet")

#: Errors that recur identically on every retry: the run fails at once instead of burning
#: ``max_failures`` restarts (each costs a worker-group start).
DETERMINISTIC = ("ConfigError", "DataError", "NonFiniteLossError", "CheckpointError")
_ERROR_LINE = re.compile(r"raydet\.errors\.(" + "|".join(DETERMINISTIC) + r"): (.*)")
WORKER_ENV = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0", "PYTHONUNBUFFERED": "1"}


class DeterministicFailure(errors.RaydetError):
    """Raised on Ray's controller when a worker fails with a deterministic raydet error."""

    def __init__(self, kind: str, message: str, rank: int):
        self.kind, self.message, self.rank = kind, message, rank
        super().__init__(f"{kind} on rank {rank}: {message}")

    def __reduce__(self):
        return (type(self), (self.kind, self.message, self.rank))


class FailFast(ray.train.UserCallback):
    """Stops the run at the first deterministic worker error (a config error, a missing or corrupt
    file, a non-finite fp32 loss): raising here makes Ray's controller fail instead of retrying."""

    def after_exception(self, run_context, worker_exceptions):
        for rank, exc in sorted(worker_exceptions.items()):
            found = _deterministic(exc)
            if found:
                raise DeterministicFailure(*found, rank)


def _deterministic(exc: BaseException) -> tuple[str, str] | None:
    """``(error class name, message)`` when ``exc`` is, or carries the traceback of, a
    deterministic raydet error; ``None`` otherwise."""
    if type(exc).__name__ in DETERMINISTIC and isinstance(exc, errors.RaydetError):
        return type(exc).__name__, str(exc)
    found = _ERROR_LINE.findall(str(exc))  # a wrapper whose str() is the worker's traceback
    return (found[-1][0], found[-1][1].strip()) if found else None


def _as_raydet_error(kind: str, message: str) -> errors.RaydetError:
    if kind == "NonFiniteLossError":  # its constructor takes the loss dict; keep the message
        return errors.RaydetError(f"non-finite loss: {message}")
    return getattr(errors, kind)(message)


def _unwrap(exc: BaseException) -> BaseException:
    """One clear exception for the user: the raydet error a worker raised, if any."""
    cause = getattr(exc, "controller_failure", None)
    if isinstance(cause, DeterministicFailure):
        return _as_raydet_error(cause.kind, cause.message)
    for failure in (getattr(exc, "worker_failures", None) or {}).values():
        if isinstance(failure, errors.RaydetError):
            return failure
        found = _deterministic(failure)
        if found:
            return _as_raydet_error(*found)
    return exc


#: how long an address is tried before a run gives up on it (a head that is starting answers within it)
REACH_TIMEOUT_S = 30.0


def check_reachable(address: str) -> None:
    """Raise :class:`~raydet.errors.RaydetError` naming ``address`` when nothing accepts a connection at its
    ``host:port`` within :data:`REACH_TIMEOUT_S` (Ray itself retries an absent GCS for minutes).
    ``auto`` and addresses without a port are left to Ray."""
    import socket
    import time
    target = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = target.rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return
    deadline, last = time.monotonic() + REACH_TIMEOUT_S, None
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=min(3.0, REACH_TIMEOUT_S)):
                return
        except OSError as exc:
            last = exc
        if time.monotonic() >= deadline:
            break
        time.sleep(min(1.0, max(deadline - time.monotonic(), 0)))
    raise errors.RaydetError(f"no Ray cluster answers at {address} ({last.strerror or last} for {REACH_TIMEOUT_S:g} s): "
                      "start one there (ray start --head), or fix --address / ray.address / RAY_ADDRESS")


def _init_ray(address: str | None, num_cpus: int | None = None) -> None:
    """Join ``address`` (or ``RAY_ADDRESS``), or start a local instance: on loopback only
    (Ray otherwise binds the machine's interface address), with its dashboard on 127.0.0.1
    (Ray Train's placement-group cleaner polls the State API it serves, and logs a warning every
    few seconds without it), and no preemption watcher (one machine has no node that a cloud
    could drain; the watcher's actor logs an error line at every start). Nothing happens when
    Ray is already initialised (a notebook's own ``ray.init``)."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        check_reachable(address)
        ray.init(address=address, runtime_env={"env_vars": WORKER_ENV}, log_to_driver=True)
        return
    # loopback: set when raydet.launch was imported, before ray (see raydet.launch)
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")  # Ray passes it to its controller
    for key, value in WORKER_ENV.items():
        os.environ.setdefault(key, value)
    # logging_level: Ray's INFO lines on this driver ("Started a local Ray instance ...") left out
    ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
             runtime_env={"env_vars": WORKER_ENV}, logging_level=logging.WARNING)


def _num_workers(value) -> int | tuple[int, int]:
    """``ray.num_workers``: a fixed count, or ``(min, max)`` for an elastic group (checked as
    the config schema checks it: a config given as a dict reaches here too)."""
    from ..config.schema import NUM_WORKERS
    if not NUM_WORKERS.check(value):
        raise errors.ConfigError(f"ray.num_workers={value!r}: expected {NUM_WORKERS.text}")
    return value if isinstance(value, int) else tuple(value)


def refuse_a_second_run_in_storage(plan: RunPlan) -> None:
    """A fresh start (``--no-auto-resume``) on storage apart from the work_dir (a bucket): raydet
    does not move or delete a run there, and Ray would resume it, so this raises
    :class:`ConfigError` asking for another work_dir name when the storage holds one."""
    from pyarrow import fs
    storage, path = fs.FileSystem.from_uri(run_dir(plan))
    if storage.get_file_info(path + "/checkpoint_manager_snapshot.json").type != fs.FileType.NotFound:
        raise errors.ConfigError(f"--no-auto-resume: {run_dir(plan)} already holds a run, which raydet does not "
                                 f"delete from storage; give the new run another work_dir name")


def share_indexes(cfg, validate: bool = True):
    """Build on the driver (or load from the index cache) the annotation index of every dataset
    the run reads, and put them into Ray's object store once: each node then holds one copy,
    which all its workers and their loader processes map zero-copy (see
    :mod:`raydet.data.index`). Returns the ``ObjectRef`` of ``{key: AnnIndex}``, or ``None``
    when the driver does not see an annotation file (a notebook attached to a remote cluster):
    then each worker builds its own. Bad data raises here, before any worker starts."""
    from ..data import build_dataset
    from ..data.index import collecting
    start = time.perf_counter()
    try:
        with collecting() as got:
            build_dataset(cfg.data.train)
            if len(cfg.get("workflow") or ()) == 2:  # the workflow's val set: training mode (filtering as in training)
                build_dataset(dict(cfg.data.val, test_mode=False))
            if validate and cfg.data.get("val") is not None:
                build_dataset(cfg.data.val, test_mode=True)
    except errors.MissingFileError as exc:
        logger.info(f"the driver does not see {exc.path}: each worker builds its own annotation index")
        return None
    if not got:
        return None
    ref = ray.put(got)
    size = sum(index.nbytes for index in got.values())
    logger.info(f"{len(got)} annotation index(es), {size / 2**20:.1f} MiB, shared with the workers through Ray's "
                f"object store ({time.perf_counter() - start:.2f} s on the driver)")
    return ref


def build_trainer(cfg, plan: RunPlan, objects=None, meta=None, indexes=None) -> TorchTrainer:
    """The ``TorchTrainer`` of a loaded config and its plan (Ray's run dir: :func:`run_dir`);
    ``indexes``: what :func:`share_indexes` returned; ``objects``: the ``ObjectRef`` of
    ``(model, datasets)`` given to ``train_detector``."""
    rc = dict(cfg.get("ray") or {})
    upload = rc.get("checkpoint_upload_mode", "async")
    if upload not in ("sync", "async"):
        raise errors.ConfigError(f"ray.checkpoint_upload_mode must be 'sync' or 'async', got {upload!r}")
    evaluation = validation.plan(cfg, plan.validate) if objects is None else None
    if objects is not None and plan.validate and (cfg.get("evaluation") or {}).get("async_eval"):
        raise errors.ConfigError("evaluation.async_eval=True is for configs raydet builds (raydet.train); "
                                 "train_detector(model, dataset, cfg) evaluates in the loop")
    job = WorkerJob(cfg=cfg.to_dict(), plan=plan, objects=objects, indexes=indexes, meta=meta,
                    upload=upload if plan.storage else "none", run_dir=run_dir(plan) if plan.storage else None,
                    preemption_check_interval=rc.get("preemption_check_interval", 10), async_eval=evaluation)
    score = {} if not (evaluation and evaluation["best"]) else dict(
        checkpoint_score_attribute=evaluation["best"]["key"],
        checkpoint_score_order="max" if evaluation["best"]["rule"] == "greater" else "min")
    elastic = {} if rc.get("elastic_resize_monitor_interval_s") is None else dict(
        elastic_resize_monitor_interval_s=float(rc["elastic_resize_monitor_interval_s"]))
    use_gpu = bool(rc.get("use_gpu", False))
    return TorchTrainer(
        train_loop,
        train_loop_config={"job": job},
        # GPU workers: NCCL for DDP's CUDA tensors, gloo for raydet's host-side collectives in the
        # same group (see raydet.engine.dist); Ray still sets NCCL's environment for this list.
        torch_config=TorchConfig(backend="cpu:gloo,cuda:nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=_num_workers(rc.get("num_workers", 2)), use_gpu=use_gpu,
                                     resources_per_worker=rc.get("resources_per_worker"), **elastic),
        run_config=RunConfig(
            name=os.path.basename(plan.work_dir), storage_path=plan.storage or os.path.dirname(plan.work_dir),
            failure_config=FailureConfig(max_failures=rc.get("max_failures", 3),
                                         max_preemption_failures=rc.get("max_preemption_failures", -1)),
            checkpoint_config=CheckpointConfig(num_to_keep=rc.get("num_to_keep"), **score),
            # Ray Train's INFO lines: its failure-policy decisions (why a group restarts) and every
            # rank's "Reporting training result ..." at each checkpoint; 'WARNING' drops both
            logging_config=LoggingConfig(log_level=rc.get("log_level", "INFO")),
            callbacks=[FailFast()]),
        validation_config=None if evaluation is None else validation.validation_config(
            dict(cfg=cfg.to_dict(), run_dir=run_dir(plan)), evaluation))


def _fit(trainer: TorchTrainer):
    try:
        return trainer.fit()
    except ray.train.TrainingFailedError as exc:
        raise _unwrap(exc) from None


def plan_on_driver(cfg, validate: bool = True, auto_resume: bool = True) -> RunPlan:
    """The run's plan (:func:`raydet.run.plan_run`), with the Ray-only refusal of a fresh start
    over a run kept in storage."""
    if not cfg.get("auto_resume", auto_resume) and cfg.get("resume_from") is None:
        where = locate(cfg)
        if where[1]:
            refuse_a_second_run_in_storage(RunPlan(work_dir=where[0], checkpoint_dirs=(), storage=where[1]))
    return plan_run(cfg, validate=validate, auto_resume=auto_resume, launcher="ray")


def train(config_or_path, address: str | None = None, validate: bool = True, **overrides) -> "ray.train.Result":
    """Train on Ray Train (the Python API; also from a notebook attached to a cluster).

    ``overrides`` are dotted config keys (``**{'optimizer.lr': 0.01}`` or ``work_dir='...'``).
    Config errors are raised here, before any worker starts. Which checkpoint the run starts from
    follows :mod:`raydet.run.plan`'s rule (re-running with the same work_dir resumes; a finished
    run is not retrained: its final metrics are returned). The config is not changed. Returns
    Ray's ``Result`` (``metrics``, ``checkpoint``, ``path``); raises the raydet error a worker hit,
    or Ray's ``TrainingFailedError`` after ``ray.max_failures`` retries.
    """
    cfg = freeze(load_config(config_or_path, overrides))
    plan = plan_on_driver(cfg, validate)
    if plan.finished is not None:
        logger.info(f"the run in {plan.work_dir} is complete ({plan.finished['iter']}/{plan.finished['max_iters']} "
                    "iterations)")
        result = ray.train.Result.from_path(run_dir(plan))
        print(finished_notice(plan, cfg))
        print(f"final metrics: { {k: v for k, v in (result.metrics or {}).items() if 'mAP' in k} }")
        return result
    _init_ray(address or (cfg.get("ray") or {}).get("address"))
    return _fit(build_trainer(cfg, plan, indexes=share_indexes(cfg, validate)))


def train_detector_on_ray(model, dataset, cfg, validate=False, timestamp=None, meta=None):
    """mmdet's ``train_detector(..., distributed=True)``: ``model`` and ``dataset`` travel once
    through Ray's object store (never in a closure); each worker trains its copy."""
    import dataclasses
    cfg = freeze(load_config(cfg))
    plan = plan_on_driver(cfg, validate)
    if timestamp:
        plan = dataclasses.replace(plan, timestamp=timestamp)
    _init_ray((cfg.get("ray") or {}).get("address"))
    datasets = dataset if isinstance(dataset, (list, tuple)) else [dataset]
    objects = ray.put((model, list(datasets)))
    return _fit(build_trainer(cfg, plan, objects=objects, meta=meta))


def test_on_ray(cfg, checkpoint: str, num_workers: int, use_gpu: bool = False, address: str | None = None) -> list:
    """``raydet test --num-workers``: the test set of ``cfg`` sharded over ``num_workers`` Ray
    workers (one image per batch, as in one process, so the results are the same), gathered in
    dataset order. ``checkpoint`` and the data must be readable on every worker's node; Ray's run
    record goes to ``ray.storage_path`` or a temporary directory, removed afterwards. Raises the
    worker's raydet error, or Ray's ``TrainingFailedError``."""
    import shutil
    rc = dict(cfg.get("ray") or {})
    scratch = None if rc.get("storage_path") else tempfile.mkdtemp(prefix="raydet-test-")
    _init_ray(address or rc.get("address"))
    trainer = TorchTrainer(
        test_loop,
        train_loop_config=dict(cfg=cfg.to_dict(), checkpoint=os.path.abspath(checkpoint), use_gpu=use_gpu),
        torch_config=TorchConfig(backend="cpu:gloo,cuda:nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
        run_config=RunConfig(name=f"raydet-test-{time.strftime('%Y%m%d_%H%M%S')}-{os.getpid()}",
                             storage_path=rc.get("storage_path") or scratch,
                             failure_config=FailureConfig(max_failures=0), callbacks=[FailFast()]))
    try:
        return _fit(trainer).return_value
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
