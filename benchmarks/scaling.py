"""Scaling: images/s of raydet on Ray with N workers x C CPUs beside 1 worker.

    .venv/bin/python benchmarks/scaling.py [--repeats 2] [--workers 2] [--iters 30] [--use-gpu]

Sides (each a fresh process starting its own local Ray, alternating, ``--repeats`` times):

* ``1x1``: 1 worker x 1 CPU (Ray sets one torch thread per CPU of the worker),
* ``Nx1``: ``--workers`` workers x 1 CPU each (DDP over gloo, or NCCL with ``--use-gpu``),
* ``1xN``: 1 worker x ``--workers`` CPUs, for reference: the same cores used by one process.

Every worker trains the default config's detector on 8 images per step (the default's per-worker
batch), so N workers process N x 8 images per step; images/s is taken from per-iteration stamps
(iterations after the 3rd), checkpoints and logging as in the default config. On a real cluster
pass ``--address`` of the cluster and ``--use-gpu``: the sides then use GPUs instead of CPUs.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import CONFIG, images_per_s, read_stamps, run_json, scratch, shapes_subset, stamp_hook, summary  # noqa: E402

PER_WORKER, SKIP = 8, 3


def run(args, workers, cpus, out):
    import raydet
    work_dir = tempfile.mkdtemp(prefix="bench-scaling-")
    resources = None if args.use_gpu else {"CPU": cpus}
    raydet.train(CONFIG, address=args.address, validate=False, work_dir=work_dir,
                 **{"ray.num_workers": workers, "ray.use_gpu": args.use_gpu, "ray.resources_per_worker": resources},
                 **shapes_subset(PER_WORKER * workers * args.iters), **{
                     "data.samples_per_gpu": PER_WORKER, "runner.max_epochs": 1,
                     **({"data.workers_per_gpu": args.workers_per_gpu} if args.workers_per_gpu is not None else {}),
                     "custom_hooks": [stamp_hook(out)]})
    return {}


def _allreduce_rank(rank, world, port, numel, queue):
    import time

    import torch
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    grads, times = torch.randn(numel), []
    for _ in range(40):
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(grads)
        times.append(time.perf_counter() - start)
    if rank == 0:
        queue.put(statistics.median(times[5:]))
    dist.destroy_process_group()


def allreduce_ms(world: int) -> tuple[float, int]:
    """Median time of one gloo all-reduce of the default model's gradients over ``world``
    processes on loopback (what DDP adds to a CPU step, without the waiting), and the size."""
    import socket

    import torch.multiprocessing as mp

    from raydet.config import load_config
    from raydet.models import build_detector
    model = build_detector(load_config(CONFIG).model)
    numel = sum(p.numel() for p in model.parameters() if p.requires_grad)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_allreduce_rank, args=(world, port, numel, queue), nprocs=world)
    return queue.get() * 1000, numel


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--iters", type=int, default=30, help="iterations per run")
    parser.add_argument("--use-gpu", action="store_true")
    parser.add_argument("--workers-per-gpu", type=int, default=None,
                        help="dataloader processes per worker (default: the config's, 1)")
    parser.add_argument("--address", default=None, help="a Ray cluster's address (default: local Ray)")
    parser.add_argument("--allreduce-only", action="store_true", help="only time the gradient all-reduce")
    parser.add_argument("--side")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.side:
        workers, cpus = map(int, args.side.split("x"))
        print(json.dumps(run(args, workers, cpus, args.out)))
        return
    n = args.workers
    if not args.use_gpu:
        ms, numel = allreduce_ms(n)
        print(f"gloo all-reduce of the default model's {numel} float32 gradients over {n} processes "
              f"on loopback: {ms:.1f} ms (median of 35)", flush=True)
    if args.allreduce_only:
        return
    sides = ["1x1", f"{n}x1"] + ([] if args.use_gpu else [f"1x{n}"])  # one worker holds one GPU
    results = {side: [] for side in sides}
    for _ in range(args.repeats):
        for side in sides:
            workers = int(side.split("x")[0])
            out = tempfile.mktemp(prefix=f"bench-scaling-{side}-", suffix=".txt")
            extra = ["--use-gpu"] if args.use_gpu else []
            extra += ["--workers-per-gpu", str(args.workers_per_gpu)] if args.workers_per_gpu is not None else []
            extra += ["--address", args.address] if args.address else []
            run_json([__file__, "--side", side, "--out", out, "--iters", str(args.iters), *extra])
            results[side].append(images_per_s(read_stamps(out), PER_WORKER * workers, SKIP))
            print(f"{side}: {results[side][-1]:.2f} images/s", flush=True)
    unit = "GPU" if args.use_gpu else "CPU"
    print(f"\nimages/s, workers x {unit}s per worker, {PER_WORKER} images per worker-step:")
    for side in sides:
        print(f"  {side:5s} {summary(results[side])}")
    base = statistics.median(results["1x1"])
    print(f"  speed-up {n}x1 / 1x1 (medians): {statistics.median(results[f'{n}x1']) / base:.2f}  (goal >= 1.7 for N=2)")
    if f"1x{n}" in results:
        print(f"  speed-up 1x{n} / 1x1 (medians): {statistics.median(results[f'1x{n}']) / base:.2f}")


if __name__ == "__main__":
    scratch()
    main()
