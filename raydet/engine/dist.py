"""Thin helpers over ``torch.distributed`` that degrade to no-ops in a single process.

Every rank must call the collective helpers (``all_reduce_mean``, ``broadcast_object``,
``gather_objects``, ``all_gather_objects``, ``barrier``) the same number of times and in the same order.

**GPU groups.** raydet's own collectives carry host data: a handful of loss floats per step
(needed on the host anyway, for the log and the finite check), pickled objects (the resume
choice, RNG states, evaluation results) and flags. They travel as CPU tensors, on a group with a
CPU backend:

* raydet's Ray launcher asks for ``"cpu:gloo,cuda:nccl"`` on GPU workers, one process group in
  which torch sends CPU tensors through gloo and CUDA tensors (DDP's gradient buckets) through
  NCCL; Ray still sets NCCL's environment for it (``_is_backend_nccl`` accepts the list);
* a group someone else initialised with only a CUDA backend (``init_process_group("nccl")``,
  as torchrun scripts do) would refuse CPU tensors (``No backend type associated with device
  type cpu``), so :func:`host_group` then creates one gloo group beside it, once, on every rank.

Host data over gloo rather than device tensors over NCCL because the values start and end on the
host: a device round trip would add two copies and a stream sync per call for a few bytes, and
object collectives over NCCL need the current CUDA device set correctly on every rank.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

_HOST_GROUP = [None, None]  # [default group, the group raydet's host collectives use with it]


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return get_rank() == 0


def has_cpu_backend(group=None) -> bool:
    """Whether ``group`` (default: the default group) takes CPU tensors: ``gloo``, or a device
    list naming ``cpu`` (``"cpu:gloo,cuda:nccl"``)."""
    config = str(dist.get_backend_config(group)).lower()
    return "cpu:" in config or config in ("gloo", "mpi")


def host_group():
    """The group for CPU tensors: the default group when it has a CPU backend, else a gloo group
    over the same ranks, created on first use. A collective: the first call must happen on every
    rank (all of raydet's callers are collectives themselves, so it does)."""
    world = dist.group.WORLD
    if _HOST_GROUP[0] is not world:  # first use, or a new default group in this process
        _HOST_GROUP[:] = [world, None if has_cpu_backend() else dist.new_group(backend="gloo")]
    return _HOST_GROUP[1]


def barrier() -> None:
    if is_dist():
        dist.barrier(group=host_group())


def all_reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """Average python floats over ranks (one collective for the whole dict; keys must match)."""
    if not is_dist():
        return values
    keys = list(values)  # the same order on every rank: models build their loss dicts alike
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t, group=host_group())
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=host_group(), device=torch.device("cpu"))
    return box[0]


def gather_objects(obj, dst: int = 0):
    """On ``dst``: the list of every rank's ``obj`` in rank order; elsewhere ``None``."""
    if not is_dist():
        return [obj]
    group = host_group()
    out = [None] * dist.get_world_size() if get_rank() == dst else None
    # gather_object takes the destination's rank in the default group, which is also its rank in
    # a gloo group made over every rank
    dist.gather_object(obj, out, dst=dst, group=group)
    return out


def all_gather_objects(obj) -> list:
    """On every rank: the list of every rank's ``obj`` in rank order."""
    if not is_dist():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj, group=host_group())
    return out


class StepModule(torch.nn.Module):
    """The detector as DistributedDataParallel wraps it: ``forward(data, optimizer, step='train')``
    is the detector's own ``train_step`` (``'val'``: ``val_step``), which runs its forward and
    mmdet's loss parsing, so DDP sees that forward and synchronises its gradients (mmcv's
    ``MMDistributedDataParallel.train_step``, as a module); any other call is the detector's
    ``forward`` (inference)."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)  # parameters, buffers, submodules: self.module
        except AttributeError:
            return getattr(super().__getattr__("module"), name)

    def forward(self, *args, step: str | None = None, **kwargs):
        if step == "train":
            return self.module.train_step(*args, **kwargs)
        if step == "val":
            return self.module.val_step(*args, **kwargs)
        return self.module(*args, **kwargs)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The detector inside DistributedDataParallel and :class:`StepModule` (or ``model``)."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model
