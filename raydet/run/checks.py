"""Checks of a run's inputs before its first iteration: each a named error, or a logged note."""
from __future__ import annotations

import logging

from ..errors import ConfigError, DataError

logger = logging.getLogger("raydet")


#: mmdet keys that have no effect under raydet, and why; each one present is logged once per run.
INAPPLICABLE = {
    "gpu_ids": "devices are Ray's: ray.num_workers and ray.use_gpu choose them (--launcher none: one device, "
               "the config's `device`)",
    "dist_params": "the process group is set up by Ray's TorchConfig (gloo on CPU workers, cpu:gloo,cuda:nccl on "
                   "GPU workers), or by whoever initialised it",
    "evaluation.gpu_collect": "results are always gathered through the process group's CPU (gloo) side",
    "evaluation.tmpdir": "results are gathered through the process group, never through files",
}


def note_inapplicable_keys(cfg) -> list[str]:
    """Log, once per run, each key of :data:`INAPPLICABLE` the config sets and why it has no
    effect, and ``reset_flag`` of the logger hooks (raydet's runner clears the log buffer's output
    after every iteration, which is what ``reset_flag=True`` asks for). Returns the keys."""
    found = [key for key in INAPPLICABLE
             if (cfg.get(key) if "." not in key else (cfg.get(key.split(".")[0]) or {}).get(key.split(".")[1]))
             is not None]
    for key in found:
        logger.info(f"config key {key}: no effect under raydet: {INAPPLICABLE[key]}")
    if any("reset_flag" in h for h in (cfg.get("log_config") or {}).get("hooks", [])):
        found.append("log_config.hooks.reset_flag")
        logger.info("config key log_config.hooks.reset_flag: no effect: raydet's runner clears the log buffer's "
                    "output after every iteration (reset_flag=True's behaviour) whatever its value")
    return found


def describe(dataset) -> str:
    """What a dataset was built from, for an error message."""
    inner = dataset
    while hasattr(inner, "dataset") and not hasattr(inner, "ann_file"):
        inner = inner.dataset
    source = getattr(inner, "ann_file", None)
    dropped = {k: v for k, v in (getattr(inner, "filtered", None) or {}).items() if k != "images" and v}
    held = (getattr(inner, "filtered", None) or {}).get("images")
    out = f"{type(dataset).__name__}" + (f" from {source}" if source else "")
    if held is not None:
        out += f": {held} images" + ("".join(f", {v} dropped as {k}" for k, v in dropped.items()))
    return out


def run_iterations(cfg, loader) -> int:
    """The run's length in iterations at this world size."""
    if cfg.runner.type == "IterBasedRunner":
        return int(cfg.runner.max_iters)
    sampler = getattr(loader, "sampler", None)
    per_epoch = sampler.num_batches() if hasattr(sampler, "num_batches") else len(loader)
    return int(cfg.runner.max_epochs) * per_epoch


def run_length(cfg, loader, cumulative_iters: int) -> None:
    """Gradient accumulation over more iterations than the run has would step once, at its end
    (with the mean of everything): a :class:`ConfigError` instead."""
    total = run_iterations(cfg, loader)
    if cumulative_iters > total:
        raise ConfigError(f"optimizer_config.cumulative_iters={cumulative_iters} is more than the run's {total} "
                          f"iterations: the optimizer would step once, at the end; lower cumulative_iters")


def evaluation_happens(cfg, eval_cfg: dict, by_iter: bool) -> None:
    """An evaluation schedule that never falls inside the run (``interval`` or ``start`` past its
    end) would train without a single evaluation or best checkpoint: a :class:`ConfigError`."""
    length = int(cfg.runner.max_iters if by_iter else cfg.runner.max_epochs)
    interval, start = int(eval_cfg.get("interval", 1)), eval_cfg.get("start")
    due = (0 < interval <= length) if start is None else (int(start) <= length)
    if not due:
        unit = "iterations" if by_iter else "epochs"
        when = f"interval={interval}" + (f", start={start}" if start is not None else "")
        raise ConfigError(f"evaluation.{when} never falls within the run's {length} {unit}: nothing would be "
                          f"evaluated and no best checkpoint kept; lower evaluation.interval (or use --no-validate)")


def same_classes(train, val) -> None:
    """Label ``i`` must name the same class in training and evaluation."""
    a, b = tuple(getattr(train, "CLASSES", None) or ()), tuple(getattr(val, "CLASSES", None) or ())
    if a and b and a != b:
        raise DataError(f"the classes of data.val ({describe(val)}) are {b}, those of data.train "
                        f"({describe(train)}) are {a}: label i would be another class in evaluation; give both "
                        f"datasets classes=(...) in one order")


def training_inputs(model, datasets) -> None:
    """What can be known wrong before the first iteration, each a named error: a training set is
    empty (after filtering); the detector's ``num_classes`` is not the training set's number of
    classes. Runs on every rank, holds no collective."""
    from ..engine.hooks.num_class import check_num_classes
    for i, ds in enumerate(datasets):
        if len(ds) == 0:
            which = "data.train" if i == 0 else f"workflow phase {i} (data.val with the train pipeline)"
            raise DataError(f"{which} is empty, nothing to train on: {describe(ds)}")
    check_num_classes(model, datasets[0], logger)
