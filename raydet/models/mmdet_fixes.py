"""Where mmdetection 2.28's own code assumes a GPU, made to run on CPU-only machines too.

mmdet's prior generators (anchors and points) and a few heads default ``device='cuda'`` and some
callers leave it out (RepPoints' ``get_points`` asks for valid flags without a device): on a
machine without CUDA that raises "Found no NVIDIA driver". :func:`apply` makes those defaults
``'cpu'`` when CUDA is unavailable (on a GPU machine nothing changes). Applied when
:mod:`raydet.models` is imported.
"""
from __future__ import annotations

import inspect

import torch

_applied = False


def _cpu_default(func) -> bool:
    """Turn ``func``'s ``device='cuda'`` default into ``'cpu'``; whether it had one."""
    func = getattr(func, "__func__", func)
    defaults = getattr(func, "__defaults__", None)
    if not defaults or "cuda" not in defaults:
        return False
    names = [p.name for p in inspect.signature(func).parameters.values() if p.default is not inspect.Parameter.empty]
    func.__defaults__ = tuple("cpu" if name == "device" and value == "cuda" else value
                              for name, value in zip(names, defaults))
    return True


def apply() -> list[str]:
    """Apply once; returns the functions changed (``Class.method``)."""
    global _applied
    if _applied or torch.cuda.is_available():
        return []
    _applied = True
    import mmdet.core.anchor as anchor
    import mmdet.core.utils.misc as misc
    import mmdet.models.dense_heads as heads
    changed = []
    for module in (anchor, heads):
        for name, cls in vars(module).items():
            if inspect.isclass(cls):
                for attr, func in vars(cls).items():
                    if inspect.isfunction(func) and _cpu_default(func):
                        changed.append(f"{name}.{attr}")
    if _cpu_default(misc.generate_coordinate):
        changed.append("generate_coordinate")
    return changed
