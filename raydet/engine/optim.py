"""``build_optimizer``: mmcv's DefaultOptimizerConstructor rules on torch optimizers."""
from __future__ import annotations

import torch
from torch import nn

from ..registry import Registry
from .dist import unwrap

OPTIMIZERS = Registry("optimizer")
for _cls in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop):
    OPTIMIZERS.register(obj=_cls)

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def build_optimizer(model: nn.Module, cfg: dict) -> torch.optim.Optimizer:
    """``cfg = dict(type='SGD', lr=..., ..., paramwise_cfg=dict(bias_lr_mult, bias_decay_mult,
    norm_decay_mult, custom_keys={'name': dict(lr_mult, decay_mult)}))``. One param group per
    parameter when ``paramwise_cfg`` is given (as mmcv does), else one group."""
    cfg = dict(cfg)
    paramwise = cfg.pop("paramwise_cfg", None)
    module = unwrap(model)
    if not paramwise:
        params = [p for p in module.parameters() if p.requires_grad]
        return OPTIMIZERS.build(dict(cfg, params=params), "optimizer")
    base_lr, base_wd = cfg["lr"], cfg.get("weight_decay", 0.0)
    custom = paramwise.get("custom_keys", {})
    groups = []
    for mod_name, mod in module.named_modules():
        for name, p in mod.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            full = f"{mod_name}.{name}" if mod_name else name
            group = dict(params=[p], lr=base_lr, weight_decay=base_wd)
            for key in sorted(custom, key=len, reverse=True):
                if key in full:
                    group["lr"] = base_lr * custom[key].get("lr_mult", 1.0)
                    group["weight_decay"] = base_wd * custom[key].get("decay_mult", 1.0)
                    break
            else:
                if isinstance(mod, _NORMS):
                    group["weight_decay"] = base_wd * paramwise.get("norm_decay_mult", 1.0)
                elif name == "bias":
                    group["lr"] = base_lr * paramwise.get("bias_lr_mult", 1.0)
                    group["weight_decay"] = base_wd * paramwise.get("bias_decay_mult", 1.0)
            groups.append(group)
    return OPTIMIZERS.build(dict(cfg, params=groups), "optimizer")
