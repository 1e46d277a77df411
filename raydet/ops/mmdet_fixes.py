"""Where mmdetection 2.28's own code assumes a GPU or an older numpy, made to run here too.

mmdet's prior generators (anchors and points), a few heads and ``SyncRandomSizeHook`` default
``device='cuda'`` and some callers leave it out (RepPoints' ``get_points`` asks for valid flags
without a device): on a machine without CUDA that raises "Found no NVIDIA driver". :func:`apply` makes those defaults
``'cpu'`` when CUDA is unavailable (on a GPU machine nothing changes).

numpy >= 1.24 removed what some of mmdet's modules use: the aliases ``np.int``/``np.float``/
``np.bool`` (Libra R-CNN's IoU-balanced sampler, ``CustomDataset.get_cat_ids`` that mmdet's
``ClassBalancedDataset`` calls) and ragged ``np.array`` calls (its proposal recall makes one array
of every image's IoU matrix, of different shapes). :func:`apply` gives those modules a numpy that
has the aliases and makes ragged lists object arrays, as numpy < 1.24 did.

Applied when :mod:`raydet.models` or :mod:`raydet.data` is imported.
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


class _LegacyNumpy:
    """numpy, with numpy < 1.24's aliases (``int``, ``float``, ``bool``) and its ``array`` of a
    list of arrays of different shapes: an object array instead of a ValueError."""

    int, float, bool = int, float, bool

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
    import importlib
    legacy = _LegacyNumpy()
    for name in ("mmdet.core.evaluation.recall", "mmdet.core.bbox.samplers.iou_balanced_neg_sampler",
                 "mmdet.datasets.custom", "mmdet.datasets.openimages"):
        importlib.import_module(name).np = legacy
    if torch.cuda.is_available():
        return ["numpy < 1.24 for mmdet"]
    import mmdet.core.anchor as anchor
    import mmdet.core.hook as hooks
    import mmdet.core.utils.misc as misc
    import mmdet.models.dense_heads as heads
    changed = []
    for module in (anchor, heads, hooks):  # hooks: SyncRandomSizeHook's device
        for name, cls in vars(module).items():
            if inspect.isclass(cls):
                for attr, func in vars(cls).items():
                    if inspect.isfunction(func) and _cpu_default(func):
                        changed.append(f"{name}.{attr}")
    if _cpu_default(misc.generate_coordinate):
        changed.append("generate_coordinate")
    return changed
