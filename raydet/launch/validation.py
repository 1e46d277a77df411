"""Evaluation off the training loop (``evaluation=dict(..., async_eval=True)``).

Each evaluation the config asks for becomes a Ray Train validation task on the checkpoint just
reported (``ray.train.report(..., validation=...)``), with its own resources
(``ray.validation_resources``, default ``dict(num_cpus=0)``), while the workers train on. Ray
runs these tasks one at a time, in report order, and merges what they return into that
checkpoint's metrics (``Result.metrics``, ``best_checkpoints``, and the retention of
``CheckpointConfig(checkpoint_score_attribute=<save_best key>)``).

The task (:func:`validate_checkpoint`) writes its result to
``<run_dir>/validation/<checkpoint name>.json``; with ``save_best`` it also keeps the best
checkpoint (``best_{key}_epoch_N.pth`` in the work_dir, or ``<run_dir>/logs/`` when the run dir
is a bucket) and its record ``validation/best.json``, so that the best survives restarts of the
workers and of the driver. On rank 0, :class:`Validation` (driven by the worker's :class:`RayAdapter`) writes each result into the logs
(text, json, TensorBoard) in checkpoint order, as the ``Epoch(val)`` record of the point it
evaluates, and at the end of training waits for every evaluation before the final report.
"""
from __future__ import annotations

import functools
import io
import json
import logging
import os
import time

import ray.train

from ..config.schema import EVALUATE_KEYS
from ..engine.hooks.evaluation import eval_due
from ..errors import ConfigError

logger = logging.getLogger("raydet")

RESULTS_DIR = "validation"
BEST_FILE = "best.json"
CKPT_FILE = "checkpoint.pth"
#: Ray's remote-task keywords among ``ray.validation_resources``; any other key is a custom resource
TASK_KEYS = ("num_cpus", "num_gpus", "memory")


def plan(cfg, validate: bool = True) -> dict | None:
    """The asynchronous evaluation ``cfg`` asks for, checked before any worker starts; ``None``
    when evaluation is off or in the loop. A dict with ``start``, ``interval``, ``by_epoch`` (the
    schedule), ``best`` (``dict(key, rule)`` of ``save_best``, or ``None``), ``remote`` (the
    task's ``ray.remote`` keywords), ``timeout_s`` and ``shards`` (how many tasks, each with
    ``remote``'s resources, predict a contiguous part of the val set).

    The task evaluates a reported checkpoint, so every evaluation point must be a checkpoint
    point: the same unit (``by_epoch``) and intervals that divide. Raises :class:`ConfigError`
    naming the keys otherwise."""
    ev = dict(cfg.get("evaluation") or {})
    if not validate or not ev.get("async_eval"):
        return None
    if cfg.data.get("val") is None:
        raise ConfigError("validation is on but data.val is not set (use --no-validate)")
    iter_based = cfg.runner.get("type") == "IterBasedRunner"
    ck = dict(cfg.get("checkpoint_config") or {})
    by_epoch, ck_by_epoch = ev.get("by_epoch", not iter_based), ck.get("by_epoch", not iter_based)
    unit = "epochs" if by_epoch else "iterations"
    if by_epoch != ck_by_epoch:
        raise ConfigError(f"evaluation.async_eval=True evaluates the checkpoints, so evaluation.by_epoch ({by_epoch}) "
                          f"and checkpoint_config.by_epoch ({ck_by_epoch}) must agree")
    interval, start, every = ev.get("interval", 1), ev.get("start"), ck.get("interval", -1)
    if every <= 0 or interval % every or (start is not None and start % every):
        raise ConfigError(f"evaluation.async_eval=True evaluates the checkpoints: every evaluation point "
                          f"(evaluation.interval={interval}" + (f", start={start}" if start is not None else "")
                          + f" {unit}) must be a checkpoint point (checkpoint_config.interval={every})")
    best = None
    if ev.get("save_best"):
        from ..engine.hooks.evaluation import GREATER_KEYS, LESS_KEYS, key_and_rule
        keys = _metric_keys(cfg.data.val, ev.get("metric", "bbox"))
        best = dict(zip(("key", "rule"), key_and_rule(
            ev["save_best"], ev.get("rule"), keys if keys is not None else [ev["save_best"]],
            ev.get("greater_keys") or GREATER_KEYS, ev.get("less_keys") or LESS_KEYS)))
    resources = dict((cfg.get("ray") or {}).get("validation_resources") or {"num_cpus": 0})
    remote = {k: resources.pop(k) for k in TASK_KEYS if k in resources}
    remote.setdefault("num_cpus", 0)
    if resources:
        remote["resources"] = resources
    return dict(start=start, interval=interval, by_epoch=by_epoch, best=best, remote=remote,
                timeout_s=(cfg.get("ray") or {}).get("validation_timeout_s"),
                shards=(cfg.get("ray") or {}).get("validation_shards") or 1)


def _metric_keys(val_cfg, metric) -> list | None:
    """The metric names the val set's evaluation returns, in order (``None``: not known here)."""
    from ..data import DATASETS, build_dataset
    from ..errors import MissingFileError
    metrics = [metric] if isinstance(metric, str) else list(metric)
    try:
        dataset = build_dataset(val_cfg, test_mode=True)
    except MissingFileError:  # a driver that does not see the data: the class knows its keys
        kind = val_cfg.get("type") if isinstance(val_cfg, dict) else None
        dataset = DATASETS.get(kind) if kind in DATASETS else None
    keys = getattr(dataset, "metric_keys", None)
    return keys(metrics) if keys is not None else None


def _fs(run_dir: str):
    """``(pyarrow filesystem, root path)`` of Ray's run dir (a directory or a bucket URI)."""
    from pyarrow import fs
    return fs.FileSystem.from_uri(run_dir)


def _read_json(filesystem, path: str) -> dict | None:
    from pyarrow import fs
    if filesystem.get_file_info(path).type != fs.FileType.File:
        return None
    with filesystem.open_input_stream(path) as f:
        return json.loads(f.read().decode())


def _write_json(filesystem, path: str, obj: dict) -> None:
    """Write ``obj`` whole or not at all (a reader never sees half a file)."""
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with filesystem.open_output_stream(tmp) as f:
        f.write(json.dumps(obj, indent=1).encode())
    filesystem.move(tmp, path)


def _numbers(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def validate_checkpoint(checkpoint, name: str, at: str, spec: dict) -> dict:
    """The Ray validation task: evaluate ``checkpoint`` (Ray's, reported as ``name``, of the
    point ``at``, e.g. ``epoch_3``) on the config's ``data.val`` as the in-loop evaluation does
    (same loader settings, metric and precision), on this task's device, alone or, with
    ``spec['shards'] > 1``, with that many tasks predicting a contiguous part each (resources
    ``spec['remote']`` each). Writes the result file, keeps the best checkpoint
    (``spec['best']``), and returns the numeric metrics, which Ray merges into the checkpoint's.
    A failure is written into the result file too (so that the workers stop waiting for it)
    and raised."""
    from mmcv import Config
    root_fs, root = _fs(spec["run_dir"])
    result_path = f"{root}/{RESULTS_DIR}/{name}.json"
    start = time.perf_counter()
    try:
        cfg = Config(spec["cfg"])
        with checkpoint.as_directory() as directory:
            path = os.path.join(directory, CKPT_FILE)
            parts = None
            if spec.get("shards", 1) > 1:
                task = ray.remote(_predict_part).options(**spec["remote"])
                parts = ray.get([task.remote(spec["cfg"], checkpoint, i, spec["shards"]) for i in range(spec["shards"])])
            metrics, lines = _evaluate(cfg, path, parts)
            best = _keep_best(root_fs, root, spec, name, at, metrics, path) if spec.get("best") else None
    except Exception as exc:
        _write_json(root_fs, result_path, dict(checkpoint=name, at=at, error=f"{type(exc).__name__}: {exc}"))
        raise
    seconds = time.perf_counter() - start
    _write_json(root_fs, result_path, dict(checkpoint=name, at=at, metrics=metrics, seconds=round(seconds, 3),
                                           shards=len(parts) if parts else 1, log=lines, best=best))
    shown = {k: round(v, 4) for k, v in _numbers(metrics).items() if k.endswith("mAP") or k == (best or {}).get("key")}
    print(f"raydet: validation of {name}: {shown} ({seconds:.1f} s)", flush=True)
    return _numbers(metrics)


def _predict_part(cfg_dict: dict, checkpoint, part: int, parts: int) -> list:
    """A sharding task's predictions: part ``part`` of ``parts`` contiguous parts of the val set."""
    from mmcv import Config
    with checkpoint.as_directory() as directory:
        return _predict(Config(cfg_dict), os.path.join(directory, CKPT_FILE), part, parts)[1]


def _predict(cfg, path: str, part: int = 0, parts: int = 1):
    """``(val dataset, predictions of its part)`` of the checkpoint file ``path``, with the
    in-loop evaluation's loader settings and precision, on this process's device."""
    import torch

    from ..run.build import optimizer_hook_config
    from ..config import import_custom_modules
    from ..data import build_dataloader, build_dataset
    from ..engine.inference import inference
    from ..engine.precision import Precision
    from ..run.build import trained_detector
    import_custom_modules(cfg)
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    dataset = build_dataset(cfg.data.val, test_mode=True)
    model, classes = trained_detector(cfg, path, logging.getLogger("raydet.validation"))
    model.CLASSES = list(classes or dataset.CLASSES)
    model.to(device)
    loader_cfg = dict(cfg.data.get("val_dataloader") or {})
    loader = build_dataloader(dataset, loader_cfg.get("samples_per_gpu", 1),
                              loader_cfg.get("workers_per_gpu", cfg.data.get("workers_per_gpu", 2)),
                              num_replicas=parts, rank=part, shuffle=False, persistent_workers=False)
    return dataset, inference(model, loader, autocast=Precision(optimizer_hook_config(cfg)[1], device).autocast)


def _evaluate(cfg, path: str, parts: list | None = None) -> tuple[dict, list[str]]:
    """``(metrics, the evaluator's log lines)`` of the checkpoint file ``path``: predicted here,
    or gathered from ``parts`` (the sharding tasks' predictions, in order)."""
    from ..data import build_dataset
    ev = dict(cfg.get("evaluation") or {})
    if parts is None:
        dataset, results = _predict(cfg, path)
    else:
        dataset, results = build_dataset(cfg.data.val, test_mode=True), [r for p in parts for r in p]
    # the evaluator's tables go into the result, and from there into the run's log file
    captured = io.StringIO()
    log = logging.getLogger("raydet.validation.tables")
    log.propagate = False
    handler = logging.StreamHandler(captured)
    log.addHandler(handler)
    try:
        metrics = dataset.evaluate(results, logger=log, metric=ev.get("metric", "bbox"),
                                   **{k: v for k, v in ev.items() if k in EVALUATE_KEYS})
    finally:
        log.removeHandler(handler)
    return dict(metrics), [line for line in captured.getvalue().splitlines() if line.strip()]


def _keep_best(root_fs, root: str, spec: dict, name: str, at: str, metrics: dict, path: str) -> dict:
    """``save_best``: when ``metrics`` beat the best so far (``validation/best.json``), the
    checkpoint becomes ``best_{key}_{at}.pth`` (a hard link in a local run dir, an upload to
    ``logs/`` of a bucket one), then the record is updated, then this run's previous best file is
    removed. Returns the record."""
    from pyarrow import fs
    key, rule = spec["best"]["key"], spec["best"]["rule"]
    if key not in metrics:
        raise ConfigError(f"evaluation.save_best='{key}' is not among the metrics {sorted(metrics)}")
    record_path = f"{root}/{RESULTS_DIR}/{BEST_FILE}"
    state = _read_json(root_fs, record_path) or {}
    score = metrics[key]
    if state.get("score") is not None and not (score > state["score"] if rule == "greater" else score < state["score"]):
        return state
    local = isinstance(root_fs, fs.LocalFileSystem)
    target = (os.path.join(root, f"best_{key}_{at}.pth") if local else f"{root}/logs/best_{key}_{at}.pth")
    if local:
        tmp = os.path.join(root, f".best-{os.getpid()}.tmp")
        try:
            os.link(path, tmp)
        except OSError:  # another filesystem than Ray's copy of the checkpoint
            import shutil
            shutil.copyfile(path, tmp)
        os.replace(tmp, target)
    else:
        root_fs.create_dir(f"{root}/logs", recursive=True)
        with open(path, "rb") as src, root_fs.open_output_stream(target) as dst:
            dst.write(src.read())
    new = dict(key=key, rule=rule, score=score, checkpoint=name, at=at, file=target,
               uri=target if local else spec["run_dir"].split("?")[0].rstrip("/") + target[len(root):])
    _write_json(root_fs, record_path, new)
    old = state.get("file")
    if old and old != target and root_fs.get_file_info(old).type == fs.FileType.File:
        root_fs.delete_file(old)  # this run's own earlier best (the record names only files it wrote)
    return new


def validation_config(spec: dict, plan_: dict):
    """Ray's ``ValidationConfig`` of a plan (see :func:`plan`): ``spec`` (the config as a dict,
    ``run_dir``, ``best``) travels with the function."""
    from ray.train import ValidationConfig, ValidationTaskConfig
    return ValidationConfig(fn=functools.partial(validate_checkpoint, spec=dict(
                                spec, best=plan_["best"], shards=plan_["shards"], remote=plan_["remote"])),
                            task_config=ValidationTaskConfig(timeout_s=plan_["timeout_s"]),
                            ray_remote_kwargs=plan_["remote"])


class Validation:
    """The training side of the evaluations off the loop, driven by :class:`RayAdapter` (its
    ``before_run``, ``after_train_iter`` and ``after_train_epoch`` run at the adapter's turn;
    its state is the adapter's): which checkpoints were sent to be
    evaluated (``requested``, in report order, each with the val record of its point) and how
    many of their results are in the logs (``logged``); both are in every checkpoint, so a resumed
    attempt logs each result once (the text logger drops a record its cut-back log still holds).

    ``due(runner)`` tells the report hook, at a periodic checkpoint, whether to send it (see
    :func:`plan`). Results are looked for at epoch ends and at most every ``poll_s`` seconds
    between; they are logged in order. At the last epoch (or iteration) every rank waits for all
    evaluations (Ray's ``get_all_reported_checkpoints``, which returns once none is pending):
    the final report then carries the last one's metrics. A resumed attempt whose checkpoint is
    an evaluation point that Ray never received (the previous attempt died between writing and
    reporting it) sends it again: no evaluation is lost.
    """

    def __init__(self, reporter, run_dir: str, schedule: dict, poll_s: float = 10.0):
        self.reporter, self.run_dir, self.poll_s = reporter, run_dir, poll_s
        self.start, self.interval, self.by_epoch = schedule["start"], schedule["interval"], schedule["by_epoch"]
        self.requested: list[dict] = []  # [{name, record: {epoch, iter, lr}, step}]
        self.logged = 0
        self.last_metrics: dict = {}
        self.best: dict | None = None
        self._polled = 0.0
        self._fs = None

    # what a checkpoint carries
    def state_dict(self):
        return {"requested": [dict(r) for r in self.requested], "logged": self.logged}

    def load_state_dict(self, state):
        self.requested, self.logged = [dict(r) for r in state["requested"]], int(state["logged"])

    def due(self, runner) -> bool:
        """At a periodic checkpoint (``after_train_epoch``/``after_train_iter``): evaluate it?"""
        if self.by_epoch:
            return runner.max_epochs is not None and eval_due(runner.epoch + 1, self.start, self.interval)
        return eval_due(runner.iter + 1, self.start, self.interval)

    def record(self, runner) -> dict:
        """The val record of the current point, as the in-loop evaluation writes it."""
        return dict(epoch=runner.epoch + 1, iter=runner.inner_iter + 1 if self.by_epoch else runner.iter + 1,
                    lr=runner.optimizer.param_groups[0]["lr"])

    def at(self, record: dict) -> str:
        return f"epoch_{record['epoch']}" if self.by_epoch else f"iter_{record['iter']}"

    def sent(self, name: str, record: dict, step: int) -> None:
        """The report hook sent checkpoint ``name`` to be evaluated."""
        self.requested.append(dict(name=name, record=record, step=step))

    def _filesystem(self):
        if self._fs is None:
            self._fs = _fs(self.run_dir)
        return self._fs

    def result(self, name: str) -> dict | None:
        filesystem, root = self._filesystem()
        return _read_json(filesystem, f"{root}/{RESULTS_DIR}/{name}.json")

    # the loop
    def before_run(self, runner):
        from ..engine.dist import broadcast_object, get_rank
        self._polled = time.monotonic()
        if not runner.resumed_from:
            return
        # the resumed checkpoint may be an evaluation point that this state does not list yet:
        # it was reported (or not) after it was written
        ipe, done = runner.saved_position
        number = runner.epoch if self.by_epoch else done
        at_point = number > 0 and (runner.start_batch == 0 if self.by_epoch else True)
        name = "checkpoint_" + (f"epoch_{number}" if self.by_epoch else f"iter_{number}")
        action = None
        if get_rank() == 0 and at_point and eval_due(number, self.start, self.interval) and not any(
                r["name"].split("-")[0] == name for r in self.requested):
            lr = runner.resumed_lr if runner.resumed_lr is not None else runner.optimizer.param_groups[0]["lr"]
            record = dict(epoch=runner.epoch if self.by_epoch else runner.epoch + 1,
                          iter=(ipe or done) if self.by_epoch else done, lr=lr)  # the point's own LR
            known = [n for n in self.reporter.taken if n.split("-")[0] == name]
            if self.result(name) is not None or known:  # evaluated, or waiting in Ray's queue
                action = ("known", known[-1] if known and self.result(name) is None else name, record)
            else:
                action = ("send", name, record)
        action = broadcast_object(action)  # every rank: a report is a collective
        if action is None:
            return
        kind, name, record = action
        if kind == "known":
            self.sent(name, record, done)
        else:
            runner.logger.info(f"{name} (resumed from) was not evaluated: sending it now")
            self.reporter.report(runner, runner.resumed_from, name=name, validation=dict(record=record, step=done))

    def after_train_iter(self, runner):
        if not self.by_epoch and runner.iter + 1 == runner.max_iters:
            self.finish(runner)
        elif time.monotonic() - self._polled >= self.poll_s:
            self.poll(runner)

    def after_train_epoch(self, runner):
        if self.by_epoch and runner.epoch + 1 == runner.max_epochs:
            self.finish(runner)
        else:
            self.poll(runner)

    def poll(self, runner, final: bool = False) -> None:
        """Rank 0: log the results that came in, in order (``final``: a missing one is skipped
        with a warning instead of waited for)."""
        from ..engine.dist import is_main
        from ..engine.hooks.logger import LoggerHook
        from ..logs import FILE_ONLY
        self._polled = time.monotonic()
        if not is_main():
            return
        loggers = [h for h in runner.hooks if isinstance(h, LoggerHook)]
        while self.logged < len(self.requested):
            entry = self.requested[self.logged]
            result = self.result(entry["name"])
            if result is None and not final:
                return
            self.logged += 1
            if result is None or "error" in result:
                why = result["error"] if result else "no result (timed out or cancelled; see the driver's log)"
                runner.logger.warning(f"evaluation of {entry['name']} failed: {why}")
                continue
            for line in result.get("log") or []:
                runner.logger.info(line, extra=FILE_ONLY)
            for hook in loggers:
                hook.log_val(runner, entry["record"], result["metrics"], entry["step"])
            self.last_metrics = dict(result["metrics"])
            if result.get("best"):
                self.best = result["best"]

    def finish(self, runner) -> None:
        """Every rank, at the end of training: send what is due, wait for every evaluation,
        log them all."""
        self.reporter.flush(runner, force=True)
        pending = len(self.requested) - self.logged
        if pending:
            runner.logger.info(f"waiting for {pending} evaluation(s) of checkpoints to finish")
        ray.train.get_all_reported_checkpoints()  # returns once no validation is pending
        self.poll(runner, final=True)
        if self.best is None and self.requested:  # the best may come from an earlier attempt's result
            filesystem, root = self._filesystem()
            self.best = _read_json(filesystem, f"{root}/{RESULTS_DIR}/{BEST_FILE}")
