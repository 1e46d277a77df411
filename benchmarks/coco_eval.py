"""COCO bbox evaluation on a COCO-val-sized result set: raydet's evaluator beside plain pycocotools.

    .venv/bin/python benchmarks/coco_eval.py [--images 5000] [--dets 100] [--repeats 3]

A synthetic ground truth (``--images`` images of 640x480, 80 categories, 1-15 objects each, ~7.3 on
average as in COCO val) and a result set of ``--dets`` detections per image (each object found
with probability 0.8 as a jittered box, mostly of the right class, the rest false positives at
random places), the same for every side, fixed by a seed. Sides, alternating, ``--repeats`` times:

* ``pycocotools``: ``COCO.loadRes(detections)`` + ``COCOeval`` evaluate/accumulate/summarize,
  from the detections as COCO json dicts (the ground truth is loaded once, outside the timing);
* ``faster-coco-eval``: the same calls with ``faster_coco_eval.COCOeval_faster``, if installed;
* ``raydet``: ``CocoDataset.evaluate(results)`` from mmdet-style per-class ``[N, 5]`` arrays, so
  it also converts them to json dicts.

Prints seconds per evaluation, the ratios, and whether the 12 COCO stats agree exactly.
"""
import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import scratch  # noqa: E402

W, H, CATS = 640, 480, 80


def synthetic(num_images, dets_per_image, seed=0):
    """``(coco_gt_dict, per-image results as lists over classes of [N, 5] arrays)``."""
    rng = np.random.default_rng(seed)
    images, anns, results = [], [], []
    for img_id in range(1, num_images + 1):
        images.append(dict(id=img_id, file_name=f"{img_id:012d}.jpg", width=W, height=H))
        n = int(rng.integers(1, 16))
        wh = rng.uniform(8, 300, size=(n, 2))
        xy = rng.uniform(0, 1, size=(n, 2)) * (np.array([W, H]) - wh)
        cats = rng.integers(0, CATS, size=n)
        for (x, y), (w, h), c in zip(xy, wh, cats):
            anns.append(dict(id=len(anns) + 1, image_id=img_id, category_id=int(c) + 1, bbox=[x, y, w, h],
                             area=float(w * h), iscrowd=0))
        per_class = [[] for _ in range(CATS)]
        found = rng.random(n) < 0.8
        for (x, y), (w, h), c in zip(xy[found], wh[found], cats[found]):
            jx, jy, jw, jh = rng.normal(0, 0.08, size=4) * np.array([w, h, w, h])
            label = int(c) if rng.random() < 0.9 else int(rng.integers(0, CATS))
            per_class[label].append([x + jx, y + jy, x + jx + w + jw, y + jy + h + jh, rng.uniform(0.3, 1.0)])
        for _ in range(dets_per_image - int(found.sum())):
            w, h = rng.uniform(8, 300, size=2)
            x, y = rng.uniform(0, W - w), rng.uniform(0, H - h)
            per_class[int(rng.integers(0, CATS))].append([x, y, x + w, y + h, rng.uniform(0.0, 0.6)])
        results.append([np.asarray(b, np.float32).reshape(-1, 5) for b in per_class])
    gt = dict(images=images, annotations=anns,
              categories=[dict(id=c + 1, name=f"class{c}") for c in range(CATS)])
    return gt, results


def as_json(results):
    return [dict(image_id=i + 1, category_id=c + 1, score=float(b[4]),
                 bbox=[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])])
            for i, per_class in enumerate(results) for c, boxes in enumerate(per_class) for b in boxes]


def run_cocoeval(coco_cls, eval_cls, gt, dets):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = coco_cls(gt) if not isinstance(gt, str) else coco_cls(gt)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        ev = eval_cls(coco_gt, coco_gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return time.perf_counter() - start, [float(s) for s in ev.stats[:12]]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--dets", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import logging

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from raydet.data import CocoDataset
    logging.getLogger("raydet").setLevel(logging.WARNING)
    gt, results = synthetic(args.images, args.dets)
    dets = as_json(results)
    ann_file = os.path.join(tempfile.mkdtemp(prefix="bench-coco-"), "gt.json")
    with open(ann_file, "w") as f:
        json.dump(gt, f)
    dataset = CocoDataset(ann_file, pipeline=[], test_mode=True)
    print(f"{len(gt['images'])} images, {len(gt['annotations'])} objects, {len(dets)} detections")

    sides = {"pycocotools": lambda: run_cocoeval(COCO, COCOeval, ann_file, dets)}
    try:
        from faster_coco_eval import COCO as FasterCOCO
        from faster_coco_eval import COCOeval_faster
        sides["faster-coco-eval"] = lambda: run_cocoeval(FasterCOCO, COCOeval_faster, ann_file, dets)
    except ImportError:
        print("faster-coco-eval is not installed: that side is skipped")

    def raydet_side():
        start = time.perf_counter()
        out = dataset.evaluate(results, metric="bbox")
        return time.perf_counter() - start, [out[f"bbox_{k}"] for k in ("mAP", "mAP_50", "mAP_75")]

    sides["raydet"] = raydet_side
    times, stats = {s: [] for s in sides}, {}
    for _ in range(args.repeats):
        for side, fn in sides.items():
            seconds, stats[side] = fn()
            times[side].append(seconds)
            print(f"{side}: {seconds:.2f} s", flush=True)
    print("\nseconds per bbox evaluation:")
    for side, values in times.items():
        print(f"  {side:17s} median {statistics.median(values):7.2f}  min {min(values):7.2f}  max {max(values):7.2f}")
    base = statistics.median(times["pycocotools"])
    for side in sides:
        if side != "pycocotools":
            print(f"  speed-up {side} vs pycocotools (medians): {base / statistics.median(times[side]):.2f}x")
    if "faster-coco-eval" in stats:
        same = stats["faster-coco-eval"] == stats["pycocotools"]
        print(f"  faster-coco-eval's 12 stats identical to pycocotools': {same}")
        if not same:
            print(f"    pycocotools      {stats['pycocotools']}\n    faster-coco-eval {stats['faster-coco-eval']}")
    print(f"  AP, AP50, AP75 raydet {stats['raydet']}, pycocotools "
          f"{[round(s, 3) for s in stats['pycocotools'][:3]]}")


if __name__ == "__main__":
    scratch()
    main()
