"""Evaluation during training, with ``save_best``."""
from __future__ import annotations

import inspect
import os

from ...errors import ConfigError
from ..checkpoint import move_aside
from ..dist import is_main
from ..inference import evaluate_distributed
from .base import PRIORITIES, Hook
from ...logs import file_only_logger

GREATER_KEYS = ("mAP", "AR", "acc", "top")
LESS_KEYS = ("loss",)


def eval_due(number: int, start: int | None, interval: int) -> bool:
    """Whether an evaluation every ``interval`` epochs or iterations from ``start`` (mmcv's rule;
    ``None``: every ``interval``-th) is due at epoch or iteration ``number`` (1-based: the one just
    completed)."""
    if start is None:
        return interval > 0 and number % interval == 0
    return number >= start and (number - start) % interval == 0


def key_and_rule(save_best: str, rule: str | None, keys, greater_keys=GREATER_KEYS, less_keys=LESS_KEYS):
    """``(key, rule)`` of ``save_best``: ``'auto'`` is the first of ``keys`` (the metrics'
    names, in the order the dataset returns them); ``rule`` (``'greater'``/``'less'``) is
    inferred from the key when ``None``. Raises :class:`ConfigError` naming the key."""
    keys = list(keys)
    key = save_best
    if key == "auto":
        if not keys:
            raise ConfigError("evaluation.save_best='auto': the evaluation returns no metric")
        key = keys[0]
    if key not in keys:
        raise ConfigError(f"evaluation.save_best='{key}' is not among the metrics {sorted(keys)}")
    if rule is None:
        if any(k in key for k in greater_keys):
            rule = "greater"
        elif any(k in key for k in less_keys):
            rule = "less"
        else:
            raise ConfigError(f"cannot infer evaluation.rule for '{key}'; set rule='greater' or 'less'")
    return key, rule


def check_metrics(dataset, metric, model=None, save_best=None, key: str = "evaluation.metric",
                  eval_kwargs: dict | None = None, kwargs_key: str = "evaluation.") -> list[str]:
    """The metrics ``metric`` asks of ``dataset`` (a name or a list), checked before any
    prediction is made: each must be one the dataset computes (``dataset.METRICS``), ``segm``
    needs a model with a mask head, ``save_best`` (other than ``'auto'``) must be one of the
    keys they produce (``dataset.metric_keys``), and ``eval_kwargs`` arguments its ``evaluate``
    takes (named ``<kwargs_key><argument>`` in the error). Raises :class:`ConfigError` naming the key."""
    metrics = [metric] if isinstance(metric, str) else list(metric)
    known = getattr(dataset, "METRICS", None)
    name = type(dataset).__name__
    if known is not None:
        for m in metrics:
            if m not in known:
                raise ConfigError(f"{key}={m!r}: {name} computes {', '.join(map(repr, known))}")
    module = getattr(model, "module", model)
    if "segm" in metrics and module is not None and not getattr(module, "with_mask", False):
        raise ConfigError(f"{key}='segm': the model predicts no masks (it has no mask head); use 'bbox'")
    params = inspect.signature(dataset.evaluate).parameters if eval_kwargs else {}
    open_ended = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for arg in eval_kwargs or {}:  # the other keys go to the dataset's evaluate: it must take them
        if arg not in params and not open_ended:
            takes = ", ".join(p for p in params if p not in ("self", "results", "logger"))
            raise ConfigError(f"{kwargs_key}{arg}: {name}.evaluate takes no '{arg}' (it takes {takes})")
    keys = dataset.metric_keys(metrics) if hasattr(dataset, "metric_keys") else None
    if save_best not in (None, "auto") and keys is not None and save_best not in keys:
        raise ConfigError(f"evaluation.save_best={save_best!r} is not among the metrics {', '.join(keys)}")
    return metrics


class EvalHook(Hook):
    """Evaluate on ``dataloader`` every ``interval`` epochs (from ``start``), on all ranks; by
    iterations (``by_epoch=False``, ``best_{key}_iter_{n}.pth``) under ``IterBasedRunner``.

    Metrics go into the log buffer (logged as ``Epoch(val)`` lines). ``save_best`` (``'auto'``
    = the first metric, e.g. ``bbox_mAP``) keeps ``best_{key}_epoch_{n}.pth`` and records
    ``best_score``/``best_ckpt`` in ``runner.meta['hook_msgs']``, which checkpoints carry, so the
    best score survives a resume. ``rule`` is ``'greater'``/``'less'``, inferred from the key.

    Runs at priority 49, just before :class:`CheckpointHook` (mmcv ran it after, at LOW), so that
    an epoch's checkpoint already holds that epoch's best score: resuming from it never forgets a
    best that was reached in the checkpointed epoch. It is registered after the custom hooks, so
    that one at the same priority (mmdet's EMA hooks, ``priority=49``) acts before it, as in
    mmdet. The model is in train mode again afterwards.
    """

    priority = PRIORITIES["NORMAL"] - 1

    def __init__(self, dataloader, start=None, interval=1, by_epoch=True, save_best=None, rule=None,
                 metric="bbox", gpu_collect=False, tmpdir=None, greater_keys=None,
                 less_keys=None, autocast=None, **eval_kwargs):
        if rule not in (None, "greater", "less"):
            raise ConfigError(f"evaluation.rule must be 'greater' or 'less', got {rule!r}")
        if start is not None and start < 0:
            raise ConfigError(f"evaluation.start must be >= 0, got {start}")
        check_metrics(dataloader.dataset, metric, save_best=save_best, eval_kwargs=eval_kwargs)
        self.dataloader, self.start, self.interval, self.by_epoch = dataloader, start, interval, by_epoch
        self.save_best, self.rule = save_best, rule
        self.greater_keys = tuple(greater_keys or GREATER_KEYS)
        self.less_keys = tuple(less_keys or LESS_KEYS)
        # as mmdet's EvalHook: the other keys (classwise, iou_thr, proposal_nums, ...) are the dataset's
        # evaluate's, given only when the config sets them (VOC's evaluate has no classwise)
        self.eval_kwargs = dict(metric=metric, **eval_kwargs)
        self.autocast = autocast
        self.last_metrics: dict = {}

    def before_run(self, runner):
        if self.by_epoch != (runner.max_epochs is not None):
            raise ConfigError(f"evaluation.by_epoch={self.by_epoch}: "
                              + ("the epoch-based runner evaluates at epoch ends" if runner.max_epochs is not None
                                 else "IterBasedRunner has no epoch ends"))

    def _should_evaluate(self, runner) -> bool:
        return eval_due(runner.epoch + 1 if self.by_epoch else runner.iter + 1, self.start, self.interval)

    def after_train_epoch(self, runner):
        if self.by_epoch and self._should_evaluate(runner):
            self._evaluate(runner)

    def after_train_iter(self, runner):
        if not self.by_epoch and self._should_evaluate(runner):
            self._evaluate(runner)

    def _evaluate(self, runner):
        # the evaluator's tables (COCO's 12 lines, per-class APs) to the log file; the console gets
        # the epoch's one Epoch(val) line from the logger hook
        # progress: a bar on a terminal, else a line per 10% in the log file
        metrics, _ = evaluate_distributed(runner.model, self.dataloader, self.eval_kwargs,
                                          logger=file_only_logger(runner.logger),
                                          autocast=self.autocast, progress=True, progress_log=runner.logger)
        runner.model.train()
        self.last_metrics = metrics
        if self.by_epoch:  # the logger's after_train_epoch writes the val record
            runner.log_buffer.output.update(metrics)
            runner.log_buffer.ready = True
        else:  # the loggers' after_train_iter write it, before the iteration's own line
            runner.log_buffer.eval_output.update(metrics)
        # in the checkpoint written next (the checkpoint hook runs after this one): a resume from it
        # writes this val record if a kill came before the logger did
        runner.meta.setdefault("hook_msgs", {})["last_eval"] = dict(
            epoch=runner.epoch + 1, iter=runner.inner_iter + 1 if self.by_epoch else runner.iter + 1,
            lr=runner.optimizer.param_groups[0]["lr"],
            metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float, str))},
            **({} if self.by_epoch else {"by_iter": True}))
        if self.save_best:
            self._save_best(runner, metrics)

    def _key_and_rule(self, metrics):
        floats = [k for k, v in metrics.items() if isinstance(v, float)]
        key = floats[0] if self.save_best == "auto" and floats else self.save_best
        return key_and_rule(key, self.rule, metrics, self.greater_keys, self.less_keys)

    def _save_best(self, runner, metrics):
        key, rule = self._key_and_rule(metrics)
        score = metrics[key]
        msgs = runner.meta.setdefault("hook_msgs", {})
        best = msgs.get("best_score")
        if best is not None and not (score > best if rule == "greater" else score < best):
            return
        msgs["best_score"] = score
        at = f"epoch_{runner.epoch + 1}" if self.by_epoch else f"iter_{runner.iter + 1}"
        path = os.path.join(runner.work_dir, f"best_{key}_{at}.pth")
        old = msgs.get("best_ckpt")
        msgs["best_ckpt"] = path
        # only a best checkpoint of this work_dir goes, once the new one is complete: one named by a
        # checkpoint this run resumed from may belong to another run
        replaced = []
        if (is_main() and old and old != path and os.path.isfile(old)
                and os.path.dirname(os.path.abspath(old)) == os.path.abspath(runner.work_dir)):
            replaced.append(lambda: os.path.isfile(old) and os.remove(old))
        if is_main() and path != old and not runner.resumed_from:
            # a fresh start: a file of that name is an earlier run's or the user's, and is kept (a
            # resumed run's files are its own, from its earlier attempts, restored or left here)
            move_aside(path, runner.logger)
        runner.save_checkpoint(path, create_symlink=False, then=replaced)  # every rank: a collective
        if is_main():
            runner.logger.info(f"Now best checkpoint is saved as {os.path.basename(path)}. "
                               f"Best {key} is {score:.4f} at {at.replace('_', ' ')}.")
