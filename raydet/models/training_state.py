"""What some of mmdet's modules learn while training that is neither a parameter nor a buffer.

A resume restores weights, optimizer, schedules and generators; a module that keeps plain Python
attributes which change as it trains would start them again from their initial values, and the
resumed run would no longer be the uninterrupted one. mmdet 2.28 has two such modules:

- ``YOLOX``: its current multi-scale input size and the iteration counter that says when the
  next size is drawn (``_input_size``, ``_progress_in_iter``);
- ``DynamicRoIHead``: the IoU and beta statistics of the iterations since its last update and
  the IoU threshold and SmoothL1 beta they set (``iou_history``, ``beta_history``, the assigner's
  thresholds, the loss's ``beta``). Each rank keeps its own (mmdet does not synchronise them).

:func:`training_state` reads them, per module path, as json-able values; :func:`load_training_state`
puts them back. The runner keeps them in each rank's own part of a checkpoint.
"""
from __future__ import annotations

import numbers


def _tracked() -> list:
    """``(mmdet class, attribute paths)`` of the modules whose training state is tracked."""
    from mmdet.models.detectors.yolox import YOLOX
    from mmdet.models.roi_heads.dynamic_roi_head import DynamicRoIHead
    return [(YOLOX, ("_input_size", "_progress_in_iter")),
            (DynamicRoIHead, ("iou_history", "beta_history", "bbox_assigner.pos_iou_thr",
                              "bbox_assigner.neg_iou_thr", "bbox_assigner.min_pos_iou", "bbox_head.loss_bbox.beta"))]


def _plain(value):
    """``value`` with numpy scalars as Python numbers (a checkpoint loads with ``weights_only``)."""
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return value


def _get(obj, path: str):
    for name in path.split("."):
        obj = getattr(obj, name)
    return obj


def _set(obj, path: str, value) -> None:
    *parents, name = path.split(".")
    for parent in parents:
        obj = getattr(obj, parent)
    setattr(obj, name, value)


def training_state(model) -> dict:
    """``{module path: {attribute path: value}}`` of ``model``'s tracked modules (empty when it
    has none)."""
    tracked = _tracked()
    out = {}
    for path, module in model.named_modules():
        for cls, attrs in tracked:
            if isinstance(module, cls):
                out[path] = {a: _plain(_get(module, a)) for a in attrs}
    return out


def load_training_state(model, state: dict) -> None:
    """Put back what :func:`training_state` read (from a model of the same structure)."""
    modules = dict(model.named_modules())
    for path, attrs in state.items():
        for attr, value in attrs.items():
            _set(modules[path], attr, value)
