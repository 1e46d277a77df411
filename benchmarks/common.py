"""Helpers shared by the benchmark scripts (not a benchmark itself)."""
from __future__ import annotations

import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs/fcos/fcos_gn_tiny_shapes.py")
# Ray started by a benchmark stays on loopback; worker prints are not teed twice.
RAY_ENV = dict(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_TRAIN_ENABLE_PRINT_PATCH="0")


def scratch() -> str:
    """Point this process's temporary files at one directory that is removed when the benchmark
    exits: work dirs, stamp files, Ray's session directory of a Ray it starts (``TMPDIR``, which
    Ray reads too), and the same for the benchmark processes it starts, which inherit it. The
    first benchmark process makes it; a child benchmark finds it in ``RAYDET_BENCH_SCRATCH`` and
    leaves it to its parent. Files kept for the next run (generated datasets) live under
    :func:`bench_home` instead. Returns the directory."""
    path = os.environ.get("RAYDET_BENCH_SCRATCH")
    if not path:
        path = tempfile.mkdtemp(prefix="rdb-")  # short: socket paths under it end at 108 bytes
        os.environ["RAYDET_BENCH_SCRATCH"] = path
        atexit.register(shutil.rmtree, path, True)  # after Ray's own exit handler (registered later)
    os.environ["TMPDIR"] = tempfile.tempdir = path
    return path


def bench_home(*parts: str) -> str:
    """A path under ``$RAYDET_DATA/bench`` (default ``~/.cache/raydet/bench``): generated inputs
    the benchmarks reuse from run to run."""
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    from raydet.data.index import data_home
    return os.path.join(data_home(), "bench", *parts)


def shapes_subset(train: int, val: int = 16) -> dict:
    """Dataset keys for the first ``train``/``val`` images of the shapes set (same images as the
    full set's first ones), generated once into a directory of their own under :func:`bench_home`."""
    root = bench_home(f"shapes-{train}-{val}")
    return {"data.train.root": root, "data.train.num_images": {"train": train, "val": val},
            "data.val.root": root, "data.val.num_images": {"train": train, "val": val}}


def on_shapes(config: str, images: int, img_scale=None) -> dict:
    """Overrides that train any config on the first ``images`` shapes images: its train pipeline
    kept (at ``img_scale`` (w, h) if given), no ImageNet weights to fetch (speed does not depend
    on them), the heads predicting the data's 3 classes (raydet refuses another num_classes)."""
    from raydet.config import load_config
    cfg = load_config(config)
    pipeline = [dict(step) for step in cfg.train_pipeline]
    for step in pipeline:
        if step["type"] == "Resize" and img_scale:
            step["img_scale"] = tuple(img_scale)
    subset = shapes_subset(images)
    extra = {"data.train": dict(_delete_=True, type="ShapesDataset", split="train", pipeline=pipeline,
                                root=subset["data.train.root"], num_images=subset["data.train.num_images"])}
    if (cfg.model.get("backbone") or {}).get("init_cfg"):
        extra["model.backbone.init_cfg"] = None
    for head in ("model.bbox_head", "model.roi_head.bbox_head", "model.roi_head.mask_head"):
        node = cfg
        for part in head.split("."):
            node = (node or {}).get(part)
        if node is not None and "num_classes" in node:
            extra[f"{head}.num_classes"] = 3
    return extra


def stamp_hook(path: str) -> dict:
    """A hook config that appends ``rank epoch iter unix_time`` after every training iteration
    (raydet's ChaosHook with nothing to inject): the images/s of a run, read from outside."""
    return dict(type="ChaosHook", marker=path + ".never", at_iter=10 ** 9, count_file=path)


def read_stamps(path: str, rank: int = 0) -> list[tuple[int, float]]:
    """``[(iter, unix_time)]`` of one rank from a stamp file."""
    rows = [line.split() for line in open(path)]
    return [(int(r[2]), float(r[3])) for r in rows if int(r[0]) == rank]


def images_per_s(stamps: list[tuple[int, float]], images_per_iter: int, skip: int) -> float:
    """Throughput between the end of iteration ``skip`` and the end of the last one, so start-up
    (Ray, loader workers, the first iterations' allocations) is left out but everything between
    iterations (logging, checkpoints, epoch ends) is in."""
    (i0, t0), (i1, t1) = stamps[skip - 1], stamps[-1]
    return (i1 - i0) * images_per_iter / (t1 - t0)


def run_json(args: list[str], env: dict | None = None) -> dict:
    """Run ``python ARGS`` in a fresh process; its last stdout line is a JSON result."""
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=REPO, **RAY_ENV, **(env or {})))
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summary(values, fmt="8.2f") -> str:
    return (f"median {statistics.median(values):{fmt}}  min {min(values):{fmt}}  "
            f"max {max(values):{fmt}}  (n={len(values)})")
