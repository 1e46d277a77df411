"""What checking for a spot reclaim costs each iteration, on 2 Ray workers of this machine.

raydet's Ray hook (RayAdapter) calls ``ray.train.get_preemption_info()`` (a Ray collective: rank 0's
answer broadcast through Ray) every ``ray.preemption_check_interval`` iterations. Both sides run
in the same 2-worker group, alternating in rounds: that call, and a one-float gloo all_reduce
(the cheapest collective the step already makes). Prints ms per call and the share of a default
training step (``--step-s``, the default recipe's ~0.36 s on this machine).

    .venv/bin/python benchmarks/preemption_poll.py [--calls 200] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RAY_ENV, scratch, summary  # noqa: E402


def loop(config):
    import time

    import ray.train
    import torch
    import torch.distributed as dist
    out = {"ray": [], "gloo": []}
    t = torch.zeros(1)
    for _ in range(config["rounds"]):
        for side in ("ray", "gloo"):
            start = time.perf_counter()
            for _ in range(config["calls"]):
                if side == "ray":
                    ray.train.get_preemption_info()
                else:
                    dist.all_reduce(t)
            out[side].append((time.perf_counter() - start) / config["calls"] * 1000)
    return out if ray.train.get_context().get_world_rank() == 0 else None


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--step-s", type=float, default=0.36)
    args = p.parse_args()
    os.environ.update(RAY_ENV)
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    ray.init(num_cpus=2, include_dashboard=False)
    result = TorchTrainer(loop, train_loop_config=dict(calls=args.calls, rounds=args.rounds),
                          scaling_config=ScalingConfig(num_workers=2),
                          run_config=RunConfig(storage_path=tempfile.mkdtemp())).fit()
    ms = result.return_value
    for side, label in (("ray", "get_preemption_info"), ("gloo", "gloo all_reduce, 1 float")):
        print(f"{label:28s} ms/call, {args.calls} calls a round: {summary(ms[side], '.3f')}")
    ratio = statistics.median(ms["ray"]) / statistics.median(ms["gloo"])
    share = statistics.median(ms["ray"]) / 1000 / args.step_s
    print(f"get_preemption_info / all_reduce: {ratio:.1f}x; per default step of {args.step_s} s: {share:.2%}")
    print(json.dumps({k: statistics.median(v) for k, v in ms.items()}))


if __name__ == "__main__":
    scratch()
    main()
