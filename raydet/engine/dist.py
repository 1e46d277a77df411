"""Thin helpers over ``torch.distributed`` that degrade to no-ops in a single process.

Every rank must call the collective helpers (``all_reduce_mean``, ``broadcast_object``,
``gather_objects``, ``barrier``) the same number of times and in the same order.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """Average python floats over ranks (one collective for the whole dict; keys must match)."""
    if not is_dist():
        return values
    keys = list(values)  # the same order on every rank: models build their loss dicts alike
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj, dst: int = 0):
    """On ``dst``: the list of every rank's ``obj`` in rank order; elsewhere ``None``."""
    if not is_dist():
        return [obj]
    out = [None] * dist.get_world_size() if get_rank() == dst else None
    dist.gather_object(obj, out, dst=dst)
    return out
