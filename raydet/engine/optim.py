"""``build_optimizer``: mmcv 1.x's own (``DefaultOptimizerConstructor`` and its ``paramwise_cfg``:
``bias_lr_mult``, ``bias_decay_mult``, ``norm_decay_mult``, ``dwconv_decay_mult``,
``dcn_offset_lr_mult``, ``bypass_duplicate``, ``custom_keys``; a registered ``constructor``),
over the detector inside any wrapper."""
from __future__ import annotations

import torch

from ..registry import Registry
from .dist import unwrap


def _mmcv_optimizers() -> dict:
    from mmcv.runner.optimizer import OPTIMIZERS as MMCV_OPTIMIZERS
    return MMCV_OPTIMIZERS.module_dict


#: the optimizer types a config may name: mmcv's registry (every torch.optim optimizer, and a user's)
OPTIMIZERS = Registry("optimizer", fallback=_mmcv_optimizers)


def build_optimizer(model: torch.nn.Module, cfg: dict) -> torch.optim.Optimizer:
    """mmcv's ``build_optimizer(model, cfg)`` for the detector inside ``model``'s wrappers;
    parameters that do not require a gradient are left out of plain (not ``paramwise_cfg``)
    groups, so the optimizer holds only what it steps."""
    from mmcv.runner import build_optimizer as mmcv_build_optimizer
    cfg = dict(cfg)
    module = unwrap(model)
    if not cfg.get("paramwise_cfg") and not cfg.get("constructor"):
        params = [p for p in module.parameters() if p.requires_grad]
        cls = OPTIMIZERS.get(cfg.pop("type"), "optimizer")
        return cls(params, **cfg)
    return mmcv_build_optimizer(module, cfg)
