"""Where mmdetection 2.28's own code assumes a GPU or an older numpy, made to run here too.

mmdet's prior generators (anchors and points) and a few heads default ``device='cuda'`` and some
callers leave it out (RepPoints' ``get_points`` asks for valid flags without a device): on a
machine without CUDA that raises "Found no NVIDIA driver". :func:`apply` makes those defaults
``'cpu'`` when CUDA is unavailable (on a GPU machine nothing changes).

mmdet's proposal recall (``eval_recalls``, the ``proposal``/``proposal_fast`` metrics) makes one
array of every image's IoU matrix, of different shapes: numpy >= 1.24 refuses such ragged arrays,
which older numpy made object arrays. :func:`apply` gives that module a numpy whose ``array``
does what older numpy did.

Applied when :mod:`raydet.models` is imported.
"""
from __future__ import annotations

import inspect

import numpy as np
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


class _RaggedNumpy:
    """numpy, except that ``array`` of a list of arrays of different shapes is an object array
    (numpy < 1.24's result) instead of a ValueError."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def array(obj, *args, **kwargs):
        try:
            return np.array(obj, *args, **kwargs)
        except ValueError:
            if not (isinstance(obj, list) and all(isinstance(o, np.ndarray) for o in obj)) or args or kwargs:
                raise
            out = np.empty(len(obj), dtype=object)
            out[:] = obj
            return out


def apply() -> list[str]:
    """Apply once; returns what was changed (``Class.method`` names, ``eval_recalls``)."""
    global _applied
    if _applied:
        return []
    _applied = True
    import mmdet.core.evaluation.recall as recall
    recall.np = _RaggedNumpy()
    if torch.cuda.is_available():
        return ["eval_recalls"]
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
