"""Does training start? One iteration of each of mmdetection's own configs through raydet.

    python benchmarks/mmdet_configs_train.py --configs /path/to/mmdetection/configs [--out r.json]

Run it from the mmdetection checkout's root (its distillation configs name their teacher's config
by a path relative to it). For every config outside ``_base_`` that raydet's config check takes
and whose datasets are COCO-format (``CocoDataset`` and the wrappers around it): its own model,
pipelines, optimizer, schedule and hooks, trained in-process for one iteration
(``IterBasedRunner``, ``max_iters=1``, no evaluation) on a two-image COCO copy of raydet's shapes
data whose categories are COCO's 80, with only these changed: the data paths, every scale of the
pipelines (``img_scale``/``crop_size`` to about 128 pixels, so that a CPU can run 500 configs),
YOLOX's ``input_size``, pretrained weights (none: nothing is downloaded), one image per batch and
no loader workers. Prints the counts and every failure, grouped by reason.
"""
import argparse
import glob
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

COCO_TYPES = ("CocoDataset", "RepeatDataset", "ClassBalancedDataset", "ConcatDataset", "MultiImageMixDataset")
SMALL = (128, 96)


def coco_copy(root: str) -> dict:
    """Two shapes images as a COCO file with COCO's 80 categories (the shapes as 1, 2, 3)."""
    from mmdet.datasets import CocoDataset

    from raydet.data.shapes import generate
    shapes = generate(os.path.join(root, "shapes"), seed=0, num_images=dict(train=2, val=2))
    with open(os.path.join(shapes, "annotations", "instances_train.json")) as f:
        data = json.load(f)
    data["categories"] = [dict(id=i + 1, name=n) for i, n in enumerate(CocoDataset.CLASSES)]
    path = os.path.join(root, "coco80.json")
    with open(path, "w") as f:
        json.dump(data, f)
    return dict(ann_file=path, img_prefix=os.path.join(shapes, "train"))


def _small(step: dict) -> dict:
    step = dict(step)
    for key in ("img_scale", "crop_size"):
        value = step.get(key)
        if isinstance(value, tuple) and len(value) == 2:
            step[key] = SMALL if key == "img_scale" else (64, 64)
        elif isinstance(value, list) and value and all(isinstance(v, tuple) for v in value):
            step[key] = [SMALL] * len(value)
    if "transforms" in step:
        step["transforms"] = [_small(t) for t in step["transforms"]]
    if "policies" in step:  # AutoAugment: lists of lists of steps
        step["policies"] = [[_small(t) for t in p] for p in step["policies"]]
    return step


def retarget(ds, files: dict):
    """The dataset config with the COCO copy's files and small pipelines; ``None`` when it is not
    COCO-format."""
    if isinstance(ds, (list, tuple)):
        parts = [retarget(d, files) for d in ds]
        return None if any(p is None for p in parts) else parts
    ds = dict(ds)
    if ds.get("type") not in COCO_TYPES:
        return None
    for key in ("dataset", "datasets"):
        if key in ds:
            inner = retarget(ds[key], files)
            if inner is None:
                return None
            ds[key] = inner
    if ds.get("type") == "CocoDataset":
        ds.update(files, classes=None, data_root=None, seg_prefix=None, proposal_file=None)
        ds = {k: v for k, v in ds.items() if v is not None or k in ("classes",)}
        ds.pop("classes")
    if "pipeline" in ds:
        ds["pipeline"] = [_small(s) for s in ds["pipeline"]]
    return ds


def no_pretrained(node):
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "pretrained" or (key == "init_cfg" and isinstance(value, dict) and value.get("type") == "Pretrained"):
                out[key] = None
            else:
                out[key] = no_pretrained(value)
        return out
    if isinstance(node, (list, tuple)):
        return type(node)(no_pretrained(v) for v in node)
    return node


class Timeout(Exception):
    pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", required=True)
    parser.add_argument("--out")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--timeout", type=int, default=180, help="seconds a config may take")
    parser.add_argument("--shard", default="0/1", help="I/N: every N-th config from the I-th (parallel runs)")
    parser.add_argument("--start", type=int, default=0, help="skip the shard's first N configs (a resumed survey)")
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="these configs only (paths relative to --configs: re-running an earlier survey's failures)")
    args = parser.parse_args()
    import logging

    import torch

    import raydet  # noqa: F401
    from raydet.run import train_from_config
    from raydet.config import load_config
    os.environ["RAYDET_OFFLINE"] = "1"
    for name in ("raydet", "mmdet", "mmcv"):
        logging.getLogger(name).setLevel(logging.ERROR)
    torch.set_num_threads(1)
    scratch = tempfile.mkdtemp(prefix="raydet-mmdet-configs-")
    files = coco_copy(scratch)
    paths = sorted(p for p in glob.glob(os.path.join(args.configs, "**", "*.py"), recursive=True)
                   if "_base_" not in p.split(os.sep))[:args.limit or None]
    if args.only:
        missing = set(args.only) - {os.path.relpath(p, args.configs) for p in paths}
        if missing:
            parser.error(f"--only: not configs under {args.configs}: {sorted(missing)}")
        paths = [p for p in paths if os.path.relpath(p, args.configs) in args.only]
    shard, shards = map(int, args.shard.split("/"))
    paths = paths[shard::shards][args.start:]

    def alarm(*_):
        raise Timeout(f"over {args.timeout} s")
    signal.signal(signal.SIGALRM, alarm)
    results, start = {}, time.time()
    for i, path in enumerate(paths):
        name = os.path.relpath(path, args.configs)
        try:
            cfg = load_config(path)
            train = retarget(cfg.data.train, files)
            if train is None:
                raise LookupError("not COCO-format data: not measured")
            opts = dict(cfg.to_dict())
            opts["data"] = dict(opts["data"], train=train, samples_per_gpu=1, workers_per_gpu=0, persistent_workers=False)
            opts["data"].pop("train_dataloader", None)
            opts["model"] = no_pretrained(opts["model"])
            if "input_size" in opts["model"]:
                opts["model"]["input_size"] = (128, 128)
            opts.update(runner=dict(type="IterBasedRunner", max_iters=1), workflow=[("train", 1)], load_from=None,
                        resume_from=None, auto_resume=False, work_dir=os.path.join(scratch, "work", str(i)),
                        checkpoint_config=dict(interval=10 ** 6), log_config=dict(interval=1, hooks=[
                            dict(type="TextLoggerHook")]), seed=0, total_epochs=None,
                        custom_hooks=[h for h in opts.get("custom_hooks") or []
                                      if h.get("type") not in ("NumClassCheckHook",)])
            opts.pop("evaluation", None)
            signal.alarm(args.timeout)
            try:
                train_from_config(load_config(opts), validate=False)
            finally:
                signal.alarm(0)
                shutil.rmtree(opts["work_dir"], ignore_errors=True)  # a big model's checkpoint each: disk
            results[name] = "ok"
        except LookupError as exc:
            results[name] = f"skipped: {exc}"
        except BaseException as exc:  # every failure is counted with its reason
            if isinstance(exc, KeyboardInterrupt):
                raise
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            results[name] = re.sub(r"^\S+\.py: ", "", f"{type(exc).__name__}: {text}")[:300]
        print(f"[{i + 1}/{len(paths)}] {name}: {results[name][:120]}", flush=True)
    from mmdet_configs import report
    report("training started", results)
    print(f"\n{len(results)} configs in {time.time() - start:.0f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
