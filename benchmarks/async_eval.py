"""Evaluation in the loop vs off the loop (Ray validation tasks) vs none: what it costs a run.

    .venv/bin/python benchmarks/async_eval.py [--epochs 4] [--train 320] [--val 160] [--repeats 2]
                                              [--workers 2 --val-cpus 0]

The default detector (configs/fcos/fcos_gn_tiny_shapes.py) on local Ray, ``--workers`` workers x
1 CPU, 8 images per worker step, on the first ``--train``/``--val`` shapes images, evaluated
(bbox) after every epoch, three ways, each run in a fresh process, alternating:

* ``inloop``: mmdet's way: every rank stops training, predicts its half of the val set, rank 0
  computes the COCO metrics;
* ``async``: ``evaluation.async_eval=True``: each epoch's checkpoint is evaluated by a Ray
  validation task (``ray.validation_resources=dict(num_cpus=--val-cpus)``) while training goes
  on; the run waits for the last one before it returns;
* ``none``: ``--no-validate``.

Two times per run: **wall**, ``raydet.train`` from call to return (Ray's start included, the
same for all three), and **loop**, from the end of the first iteration to the end of the last
(stamped by every rank; what evaluation in the loop stalls). Prints each side's median, min and
max and the ratios to ``none``. Two layouts say different things: ``--workers 2 --val-cpus 0``
(the default) fills this machine's 2 cores with training, so an evaluation off the loop takes
its CPU from training; ``--workers 1 --val-cpus 1`` gives the evaluation a core of its own, as a
cluster gives the task a GPU or CPUs the workers do not use.
"""
import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import CONFIG, read_stamps, run_json, scratch, shapes_subset, stamp_hook, summary  # noqa: E402

SIDES = ("inloop", "async", "none")


def one_run(args):
    """In a fresh process: train one side, print its wall and loop seconds and mAP as JSON."""
    import raydet
    work_dir = tempfile.mkdtemp(prefix=f"bench-eval-{args.side}-")
    stamps = os.path.join(work_dir, "stamps.txt")
    overrides = {**shapes_subset(args.train, args.val), "seed": 0, "ray.num_workers": args.workers,
                 "ray.validation_resources": {"num_cpus": args.val_cpus},
                 "ray.resources_per_worker": {"CPU": 1}, "data.samples_per_gpu": 8, "data.workers_per_gpu": 0,
                 "runner.max_epochs": args.epochs, "log_config.interval": 10,
                 "checkpoint_config": dict(interval=1), "custom_hooks": [stamp_hook(stamps)],
                 "evaluation": dict(interval=1, metric="bbox", save_best="auto", async_eval=args.side == "async")}
    start = time.perf_counter()
    result = raydet.train(CONFIG, validate=args.side != "none", work_dir=work_dir, **overrides)
    wall = time.perf_counter() - start
    ends = read_stamps(stamps)
    print(json.dumps(dict(wall=wall, loop=ends[-1][1] - ends[0][1], iters=len(ends),
                          mAP=result.metrics.get("bbox_mAP"))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train", type=int, default=320)
    parser.add_argument("--val", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--val-cpus", type=float, default=0)
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        one_run(args)
        return
    scratch()
    runs = {side: [] for side in SIDES}
    for repeat in range(args.repeats):
        for side in SIDES:
            out = run_json([__file__, "--side", side, "--epochs", str(args.epochs), "--train", str(args.train),
                            "--val", str(args.val), "--workers", str(args.workers), "--val-cpus", str(args.val_cpus)])
            runs[side].append(out)
            print(f"repeat {repeat} {side:6s}: wall {out['wall']:7.1f} s, loop {out['loop']:7.1f} s, "
                  f"{out['iters']} iterations, bbox_mAP {out['mAP']}", flush=True)
    print(f"\n{args.epochs} epochs of {args.train} images, evaluation of {args.val} images after each; "
          f"{args.workers} Ray worker(s) x 1 CPU, the evaluation task {args.val_cpus:g} CPU, on {os.cpu_count()} cores")
    import statistics
    for measure in ("wall", "loop"):
        base = statistics.median(r[measure] for r in runs["none"])
        for side in SIDES:
            values = [r[measure] for r in runs[side]]
            print(f"{measure:4s} {side:6s} {summary(values, '7.1f')} s   ratio to none "
                  f"{statistics.median(values) / base:.3f}")


if __name__ == "__main__":
    main()
