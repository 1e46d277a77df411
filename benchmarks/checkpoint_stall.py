"""Checkpoint stall: how long training waits per checkpoint, sync vs async upload to storage_path.

    .venv/bin/python benchmarks/checkpoint_stall.py [--repeats 2] [--iters 30] [--interval 5]
                                                   [--storage-path DIR_OR_URI]

raydet on local Ray (1 worker), the default config with a checkpoint every ``--interval``
iterations and ``ray.storage_path`` set (default: a fresh temporary directory; pass an
``s3://...`` URI to measure a bucket), once with ``checkpoint_upload_mode='sync'`` and once with
``'async'``, alternating, each in a fresh process. The stall of one checkpoint is the time its
``ray.train.report`` held up the training loop, as raydet logs it ("... reported to Ray in X s");
writing the checkpoint file itself is the same in both modes and not included.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import CONFIG, REPO, RAY_ENV, shapes_subset, summary  # noqa: E402

LINE = re.compile(r"checkpoint_iter_\d+ reported to Ray in ([\d.]+) s \(upload: (\w+)\)")


def run(mode, args):
    work_dir = tempfile.mkdtemp(prefix=f"bench-stall-{mode}-")
    storage = args.storage_path or tempfile.mkdtemp(prefix="bench-stall-storage-")
    code = (f"import raydet; raydet.train({CONFIG!r}, validate=False, work_dir={work_dir!r}, "
            f"**{{'ray.num_workers': 1, 'ray.storage_path': {storage!r}, "
            f"'ray.checkpoint_upload_mode': {mode!r}, 'data.samples_per_gpu': 16, 'runner.max_epochs': 1, "
            f"'checkpoint_config': dict(interval={args.interval}, by_epoch=False), "
            f"'log_config.interval': {args.interval}}}, **{shapes_subset(16 * args.iters)!r})")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=REPO, **RAY_ENV))
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    stalls = [float(s) for s, m in LINE.findall(proc.stdout + proc.stderr) if m == mode]
    if not stalls:
        raise RuntimeError(f"no report timings in the {mode} run's output")
    size = max(os.path.getsize(os.path.join(work_dir, f)) for f in os.listdir(work_dir) if f.startswith("iter_"))
    return stalls, size


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--interval", type=int, default=5)
    parser.add_argument("--storage-path", default=None)
    args = parser.parse_args()
    results = {"sync": [], "async": []}
    for _ in range(args.repeats):
        for mode in results:
            stalls, size = run(mode, args)
            results[mode] += stalls
            print(f"{mode}: {len(stalls)} checkpoints of {size / 2 ** 20:.1f} MiB, stall per checkpoint (s): "
                  + " ".join(f"{s:.3f}" for s in stalls), flush=True)
    where = args.storage_path or "a local temporary directory"
    print(f"\nstall per checkpoint in seconds, upload to {where}:")
    for mode, values in results.items():
        print(f"  {mode:5s} {summary(values, '7.3f')}")
    ratio = statistics.median(results["async"]) / statistics.median(results["sync"])
    print(f"  ratio async / sync (medians): {ratio:.3f}  (goal <= 0.10)")


if __name__ == "__main__":
    main()
