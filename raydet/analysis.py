"""Training curves and iteration times from ``.log.json`` files: mmdet 2.x's
``tools/analysis_tools/analyze_logs.py`` (``plot_curve``, ``cal_train_time``)."""
from __future__ import annotations

import json
import os
from collections import defaultdict

import numpy as np


def load_json_log(path: str) -> dict:
    """``{'train': {key: [(iteration, value)]}, 'val': {key: [(epoch, value)]}, 'time':
    {epoch: [seconds per iteration]}, 'val_x': 'epoch'}`` from one raydet/mmdet ``.log.json``
    (the first line, the run's meta, and torn lines are skipped). A train record's iteration counts
    from the start of the run, with the log's own iterations per epoch; in a log by iteration
    (``IterBasedRunner``) val records are placed by iteration too (``val_x='iter'``)."""
    records = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and "mode" in rec and "epoch" in rec:
                    records.append(rec)
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a json log (not text; a checkpoint?): give a run's *.log.json") from None
    train = [r for r in records if r["mode"] == "train"]
    # the epoch's length, as its val record or its last train record gives it
    per_epoch = max([r["iter"] for r in records if r["mode"] == "val"] or [r["iter"] for r in train] or [1])
    # a log by iteration (IterBasedRunner, by_epoch=False) counts on where an epoch log restarts
    by_iter = any(b["epoch"] > a["epoch"] and b["iter"] > a["iter"] for a, b in zip(train, train[1:]))
    out = {"train": defaultdict(list), "val": defaultdict(list), "time": defaultdict(list),
           "val_x": "iter" if by_iter else "epoch"}
    for rec in records:
        if by_iter:
            step = rec["iter"]
        else:
            step = (rec["epoch"] - 1) * per_epoch + rec["iter"] if rec["mode"] == "train" else rec["epoch"]
        for key, value in rec.items():
            if key not in ("mode", "epoch", "iter") and isinstance(value, (int, float)) and not isinstance(value, bool):
                out[rec["mode"]][key].append((step, value))
        if rec["mode"] == "train" and "time" in rec:
            out["time"][rec["epoch"]].append(rec["time"])
    return out


def plot_curves(logs: list[str], keys: list[str], out: str | None = None, legend: list[str] | None = None,
                title: str | None = None):
    """One panel per key, one line per log: a train value (``loss``, ``lr``) by iteration, a val
    metric (``bbox_mAP``) by epoch with markers. Returns the matplotlib figure; ``out`` (.png,
    .jpg, .pdf) also writes it. ``legend``: a name per log (default: the file names). Raises
    ``KeyError`` naming a key no log has, with the keys present."""
    import matplotlib
    if out is not None:
        matplotlib.use("Agg")  # a file: no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    loaded = [load_json_log(p) for p in logs]
    names = legend or [os.path.basename(p) for p in logs]
    if len(names) != len(logs):
        raise ValueError(f"{len(names)} legend entries for {len(logs)} logs")
    fig, axes = plt.subplots(len(keys), 1, figsize=(8, 3 * len(keys)), squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        found = False
        for log, name in zip(loaded, names):
            # a key both have (lr) by iteration, from the train records; a metric by its val records
            mode = "train" if key in log["train"] else "val" if key in log["val"] else None
            if mode is None:
                continue
            found = True
            xs, ys = zip(*log[mode][key])
            ax.plot(xs, ys, label=name, marker="o" if mode == "val" else None, linewidth=1 if mode == "val" else 0.5)
            ax.set_xlabel(log["val_x"] if mode == "val" else "iter")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "epoch 1.25"
        if not found:
            plt.close(fig)
            present = sorted({k for log in loaded for mode in ("train", "val") for k in log[mode]})
            raise KeyError(f"no log has the key {key!r}; the keys present: {', '.join(present)}")
        ax.set_ylabel(key)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if out is not None:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        fig.savefig(out, dpi=100)
    return fig


def train_time(path: str, include_outliers: bool = False) -> dict:
    """mmdet's ``cal_train_time`` for one log: per epoch the mean seconds per iteration (the
    first logged iteration of each epoch left out unless ``include_outliers``: it holds the
    loader's start), the slowest and fastest epochs, the spread over epochs and the mean."""
    times = load_json_log(path)["time"]
    per_epoch = {e: float(np.mean(t if include_outliers or len(t) < 2 else t[1:])) for e, t in sorted(times.items())}
    if not per_epoch:
        raise ValueError(f"{path} has no training records with a time")
    means = np.array(list(per_epoch.values()))
    epochs = list(per_epoch)
    return dict(per_epoch=per_epoch, slowest_epoch=epochs[int(means.argmax())], fastest_epoch=epochs[int(means.argmin())],
                std_over_epochs=float(means.std()), mean_iter_time=float(means.mean()))


def write_run_curves(runner, logger=None) -> str | None:
    """``<work_dir>/curves.png`` of a finished run: its loss and, if it evaluated, its first
    val metric, from the run's json log. Returns the path, or ``None`` when there is no log (or,
    with a warning, when it cannot be drawn: a finished training does not fail over a plot)."""
    from .engine.hooks import TextLoggerHook
    hooks = [h for h in runner.hooks if isinstance(h, TextLoggerHook) and h.timestamp]
    path = hooks[0]._paths()[1] if hooks else None
    if path is None or not os.path.exists(path):
        return None
    log = load_json_log(path)
    keys = (["loss"] if "loss" in log["train"] else []) + [k for k in log["val"] if k.endswith("mAP")][:1]
    if not keys:
        return None
    out = os.path.join(runner.work_dir, "curves.png")
    try:
        import matplotlib.pyplot as plt

        from .engine.checkpoint import move_aside
        if not runner.resumed_from:  # a fresh start: a user's or an earlier run's curves are kept
            move_aside(out, logger)
        plt.close(plot_curves([path], keys, out=out, legend=[os.path.basename(runner.work_dir)]))
    except (OSError, ValueError, ImportError) as exc:
        if logger is not None:
            logger.warning(f"curves.png not written: {exc}")
        return None
    return out
