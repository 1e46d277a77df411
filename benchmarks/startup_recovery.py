"""Cold start and recovery on a local Ray instance: raydet beside a bare ``TorchTrainer``.

    .venv/bin/python benchmarks/startup_recovery.py [--repeats 2]

Each repetition runs the sides, alternating, each in a fresh process (Ray started and stopped
inside it), with 2 workers on this machine:

* start: seconds from process start to the first line of user code (bare: the train function
  is entered; raydet: its worker function is entered, i.e. after config checks, ``ray.init`` and
  the worker group start), and to raydet's first finished training iteration; beside
  ``raydet train --launcher none`` (no Ray) to its first finished iteration;
* recovery: SIGKILL of rank 1 mid-run -> the first iteration run by the restarted group, and how
  many iterations were executed twice.

Prints median/min/max of each side and the differences (raydet - bare).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from benchmarks.common import bench_home, scratch  # noqa: E402


def bare_side(out_dir: str) -> dict:
    """A TorchTrainer whose loop does nothing but tick, all-reduce one float per tick (as DDP's
    gradient all-reduce does in every training step, so a rank cannot run on alone after its
    peer died), report every 4 ticks and die once."""
    import ray
    import ray.train
    from ray.train import Checkpoint, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    def loop(config):
        import signal

        import torch
        import torch.distributed as dist
        ctx = ray.train.get_context()
        rank = ctx.get_world_rank()
        start = 0
        ckpt = ray.train.get_checkpoint()
        if ckpt is not None:
            start = int(open(os.path.join(ckpt.path, "step")).read())
        for step in range(start, 24):
            time.sleep(0.2)
            dist.all_reduce(torch.ones(1))
            with open(os.path.join(config["out"], "ticks"), "a") as f:
                f.write(f"{rank} {step + 1} {time.time():.3f}\n")
            if rank == 1 and step + 1 == 10 and not os.path.exists(config["marker"]):
                open(config["marker"], "w").write(str(time.time()))
                os.kill(os.getpid(), signal.SIGKILL)
            if (step + 1) % 4 == 0:
                d = tempfile.mkdtemp()
                open(os.path.join(d, "step"), "w").write(str(step + 1))
                ray.train.report({"step": step + 1}, checkpoint=Checkpoint.from_directory(d) if rank == 0 else None)

    ray.init(num_cpus=2, include_dashboard=False)
    TorchTrainer(loop, train_loop_config=dict(out=out_dir, marker=os.path.join(out_dir, "marker")),
                 scaling_config=ScalingConfig(num_workers=2),
                 run_config=RunConfig(name="bare", storage_path=out_dir,
                                      failure_config=FailureConfig(max_failures=1))).fit()
    ray.shutdown()
    return _ticks(os.path.join(out_dir, "ticks"), os.path.join(out_dir, "marker"), col=1, time_col=2)


def _tiny_config(out_dir, **overrides):
    sys.path.insert(0, REPO)
    from raydet.data.shapes import generate
    from tests.conftest import tiny_config
    root = generate(bench_home("shapes-48-16"), 0, dict(train=48, val=16))
    return tiny_config(root, os.path.join(out_dir, "run"), runner=dict(max_epochs=2),
                       checkpoint_config=dict(interval=4, by_epoch=False), auto_resume=True, **overrides)


def raydet_side(out_dir: str) -> dict:
    import raydet
    marker, count = os.path.join(out_dir, "marker"), os.path.join(out_dir, "count")
    cfg = _tiny_config(out_dir, ray=dict(num_workers=2, max_failures=1), custom_hooks=[
        dict(type="ChaosHook", marker=marker, at_iter=10, action="sigkill", rank=1, count_file=count)])
    raydet.train(cfg, validate=False)
    return _ticks(count, marker, col=2, time_col=3)


def none_side(out_dir: str) -> dict:
    """``raydet train --launcher none``: the same run in this process, without Ray."""
    from raydet.run import train_from_config
    from raydet.config import load_config
    count = os.path.join(out_dir, "count")
    cfg = load_config(_tiny_config(out_dir, custom_hooks=[
        dict(type="ChaosHook", marker=count + ".never", at_iter=10 ** 9, count_file=count)]))
    train_from_config(cfg, validate=False)
    return dict(first=float(open(count).readline().split()[3]))


def _ticks(path, marker, col, time_col):
    """From rank 0's (step, time) rows: the first row, the restart (the first row whose step does
    not exceed its predecessor's: the old group kept running until Ray tore it down), and the
    steps executed more than once."""
    rows = [line.split() for line in open(path)]
    rank0 = [(int(r[col]), float(r[time_col])) for r in rows if r[0] == "0"]
    killed = os.path.getmtime(marker)
    restart = next(i for i in range(1, len(rank0)) if rank0[i][0] <= rank0[i - 1][0])
    steps = [step for step, _ in rank0]
    return dict(first=rank0[0][1], recovery=rank0[restart][1] - killed,
                redone=len(steps) - len(set(steps)))


def run_side(side: str) -> dict:
    out_dir = tempfile.mkdtemp(prefix=f"bench-{side}-")
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_TRAIN_ENABLE_PRINT_PATCH="0",
               PYTHONPATH=REPO)
    start = time.time()
    proc = subprocess.run([sys.executable, __file__, "--side", side, "--out", out_dir], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} side failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["start"] = result.pop("first") - start
    if side == "raydet":  # the worker function's first log line, "worker group of 2 started"
        stamp = re.search(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) - raydet - INFO - worker group of",
                          proc.stdout + proc.stderr)
        entered = time.mktime(time.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S")) + int(stamp.group(2)) / 1000
        result["user"] = entered - start
    return result


def summary(values):
    return f"median {statistics.median(values):6.2f}  min {min(values):6.2f}  max {max(values):6.2f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--side", choices=["bare", "raydet", "none"])
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.side:
        print(json.dumps(dict(bare=bare_side, raydet=raydet_side, none=none_side)[args.side](args.out)))
        return
    results = {"bare": [], "raydet": [], "none": []}
    for _ in range(args.repeats):
        for side in results:
            results[side].append(run_side(side))
    for side in results:  # the bare side's "start" is its first line of user code
        for r in results[side]:
            r.setdefault("user", r["start"])
    rows = [("user", "process start -> first line of user code (s)", ("bare", "raydet")),
            ("start", "process start -> first finished training iteration (s)", ("raydet", "none")),
            ("recovery", "SIGKILL of rank 1 -> first resumed iteration (s)", ("bare", "raydet")),
            ("redone", "iterations executed twice", ("bare", "raydet"))]
    for key, label, sides in rows:
        print(label)
        for side in sides:
            print(f"  {side:7s} {summary([r[key] for r in results[side]])}")
        a, b = sides
        diff = statistics.median([r[key] for r in results[b]]) - statistics.median([r[key] for r in results[a]])
        print(f"  {b} - {a} (medians): {diff:+.2f}")


if __name__ == "__main__":
    scratch()
    main()
