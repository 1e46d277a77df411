"""Checkpoint stall: what each checkpoint costs the training loop, written in the loop vs in the background.

    .venv/bin/python benchmarks/checkpoint_stall.py [--models default r50fpn] [--storages local s3]
                                                   [--repeats 1]

raydet on local Ray, 2 workers x 1 CPU (DDP over gloo), on the shapes images, per model:

* ``default``: the default detector (configs/fcos/fcos_gn_tiny_shapes.py), 8 images per worker step;
* ``r50fpn``: Faster R-CNN R50-FPN (configs/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.py, SGD with
  momentum: its checkpoint holds ~2 x 160 MB of weights and momentum), 1 image per worker at 256x192;

each run in a fresh process: once without checkpoints, then for each storage (``local``: the
work_dir is Ray's run dir, the file is reported in place; ``s3``: ``ray.storage_path`` on a local S3
server, moto, on 127.0.0.1, upload in the background as raydet's default) with
``checkpoint_config.async_save=False`` (written in the loop, as mmcv does) and ``True`` (raydet's
default), a checkpoint every 10 (default) or 6 (R50-FPN) iterations: more than Ray Train's 2 s
between reports, as real intervals are (a report made sooner than that after the one before waits
for the controller to collect it, up to 2 s, which is Ray's and no write's).

Two measures of the stall per checkpoint, as the slowest rank sees it:

* **held**: the time rank 0 (the one that writes; the others wait for it at the next collective)
  spends in the checkpoint and its report, from raydet's log: ``checkpoint iter_N.pth: the loop
  held X s`` (gathering the RNG states, taking the state, and writing the file when it is written
  in the loop, or copying the state when it is not) plus ``checkpoint_iter_N reported to Ray in Y
  s`` (Ray's report, with rank 0's wait for a background write still in flight).
* **window**: every rank stamps the end of each iteration, an iteration ends when the last rank
  ends it; a checkpoint at iteration ``c`` owns the interval ``c .. c + interval - 1`` and its
  stall is that interval's time beyond the run's median step. It catches what ``held`` cannot
  (the writer thread's or Ray's upload thread's share of the CPU) but is noisy: step times drift
  by tens of percent within a run here, so the same measure on the run without checkpoints is
  printed as its noise floor.
"""
import argparse
import json
import os
import re
import socket
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import CONFIG, REPO, on_shapes, run_json, scratch, stamp_hook  # noqa: E402

MODELS = {
    "default": dict(config=CONFIG, batch=8, iters=60, interval=10, img_scale=None),
    "r50fpn": dict(config=os.path.join(REPO, "configs/faster_rcnn/faster_rcnn_r50_fpn_1x_coco.py"), batch=1,
                   iters=26, interval=6, img_scale=(256, 192)),
}
S3_ENV = dict(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")


def one_run(args):
    """In a fresh process: train, and print the stamp file's path and the checkpoint size as JSON."""
    import raydet
    model = MODELS[args.model]
    work_dir = tempfile.mkdtemp(prefix=f"bench-stall-{args.model}-{args.mode}-")
    stamps = os.path.join(work_dir, "stamps.txt")
    interval = model["interval"] if args.mode != "none" else 10 ** 6
    overrides = {**on_shapes(model["config"], 2 * model["batch"] * model["iters"], model["img_scale"]),
                 "seed": 0, "ray.num_workers": 2, "ray.resources_per_worker": {"CPU": 1},
                 "data.samples_per_gpu": model["batch"], "data.workers_per_gpu": 0, "runner.max_epochs": 1,
                 "checkpoint_config": dict(interval=interval, by_epoch=False, save_last=False,
                                           async_save=args.mode == "async"),
                 "log_config.interval": model["interval"], "custom_hooks": [stamp_hook(stamps)]}
    if args.storage_path:
        overrides["ray.storage_path"] = args.storage_path
    raydet.train(model["config"], validate=False, work_dir=work_dir, **overrides)
    sizes = [os.path.getsize(os.path.join(work_dir, f)) for f in os.listdir(work_dir) if f.startswith("iter_")]
    print(json.dumps(dict(stamps=stamps, held=held(work_dir), size=max(sizes) if sizes else 0)))


def iteration_ends(path):
    """``{iteration: time the slowest rank ended it}`` from a stamp file."""
    ends = {}
    for line in open(path):
        _, _, it, t = line.split()
        ends[int(it)] = max(ends.get(int(it), 0.0), float(t))
    return ends


def windows(ends, interval):
    """``{c: seconds the interval of checkpoint iteration c took beyond the run's median step}``,
    for each ``c`` whose interval lies within the run."""
    step = {i: ends[i] - ends[i - 1] for i in ends if i - 1 in ends}
    median = statistics.median(step.values())
    return {c: sum(step[i] - median for i in range(c, c + interval))
            for c in range(interval, max(ends) + 1, interval) if all(i in step for i in range(c, c + interval))}


HELD = re.compile(r"checkpoint iter_(\d+)\.pth: the loop held ([\d.]+) s")
REPORTED = re.compile(r"checkpoint_iter_(\d+) reported to Ray in ([\d.]+) s")


def held(work_dir):
    """``{c: seconds rank 0 spent in checkpoint c and its report}`` from the run's log file."""
    text = "".join(open(os.path.join(work_dir, n)).read() for n in os.listdir(work_dir) if n.endswith(".log"))
    out = {}
    for pattern in (HELD, REPORTED):
        for c, seconds in pattern.findall(text):
            out[int(c)] = out.get(int(c), 0.0) + float(seconds)
    return out


def s3_server():
    import logging

    from moto.server import ThreadedMotoServer
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    from pyarrow import fs
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3 = fs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1",
                         access_key="testing", secret_key="testing", allow_bucket_creation=True)
    s3.create_dir("raydet-bench")
    return server, f"?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--storages", nargs="+", default=["local", "s3"], choices=["local", "s3"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--storage-path", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        args.model, args.mode = args.one
        one_run(args)
        return
    server, query = s3_server() if "s3" in args.storages else (None, "")
    held_of, window_of = {}, {}  # (model, storage, mode) or (model, "none") -> [seconds per checkpoint]
    try:
        for model in args.models:
            for repeat in range(args.repeats):

                def run(mode, storage=None):
                    passed = [__file__, "--one", model, mode]
                    if storage == "s3":
                        passed += ["--storage-path", f"s3://raydet-bench/{model}-{mode}-{repeat}-{os.getpid()}{query}"]
                    return run_json(passed, env=S3_ENV)

                interval = MODELS[model]["interval"]
                noise = list(windows(iteration_ends(run("none")["stamps"]), interval).values())
                window_of.setdefault((model, "none"), []).extend(noise)
                print(f"{model} without checkpoints, window (noise floor): " + " ".join(f"{s:.3f}" for s in noise),
                      flush=True)
                for storage in args.storages:
                    for mode in ("sync", "async"):
                        info = run(mode, storage)
                        per = list(windows(iteration_ends(info["stamps"]), interval).values())
                        window_of.setdefault((model, storage, mode), []).extend(per)
                        held_of.setdefault((model, storage, mode), []).extend(info["held"].values())
                        print(f"{model} {storage} {mode}: checkpoint {info['size'] / 2 ** 20:.1f} MiB; per checkpoint, "
                              f"held (s): " + " ".join(f"{s:.3f}" for s in info["held"].values())
                              + "; window (s): " + " ".join(f"{s:.3f}" for s in per), flush=True)
    finally:
        if server is not None:
            server.stop()
    print("\nstall per checkpoint, slowest of 2 ranks, seconds (mean over checkpoints and repeats):")
    for model in args.models:
        print(f"  {model:8s} no checkpoints: window (noise floor) {statistics.mean(window_of[(model, 'none')]):7.3f}")
        for storage in args.storages:
            for name, table in (("held", held_of), ("window", window_of)):
                sync, asyn = (statistics.mean(table[(model, storage, m)]) for m in ("sync", "async"))
                ratio = f"{asyn / sync:.3f}" if sync > 0 else "n/a"
                print(f"  {model:8s} {storage:6s} {name:6s} written in the loop {sync:7.3f}  in the background "
                      f"{asyn:7.3f}  ratio {ratio}  (goal <= 0.10; n={len(table[(model, storage, 'sync')])})")


if __name__ == "__main__":
    scratch()
    main()
