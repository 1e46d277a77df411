"""mmcv's ``init_cfg`` initialisers, applied to a built module.

``init_cfg`` is a dict or a list of dicts, each ``dict(type=..., layer=[...], override=...)``
with ``type`` one of ``Normal``, ``TruncNormal``, ``Xavier``, ``Kaiming``, ``Constant``
(their mmcv arguments: ``mean``/``std``/``a``/``b``, ``gain``/``distribution``, ``mode``/
``nonlinearity``/``a``, ``val``, ``bias``/``bias_prob``) or ``Pretrained`` (see
:mod:`raydet.models.weights`). ``layer`` names torch layer classes (``Conv2d``, ``Linear``,
``BatchNorm2d``, ``GroupNorm``, ``_BatchNorm``); ``override`` re-initialises named children.
"""
from __future__ import annotations

import math

from torch import nn

from ..errors import ConfigError
from .cfg import Keys

LAYERS = {"Conv2d": (nn.Conv2d,), "Conv": (nn.Conv2d,), "Linear": (nn.Linear,), "ConvTranspose2d": (nn.ConvTranspose2d,),
          "BatchNorm2d": (nn.BatchNorm2d,), "_BatchNorm": (nn.BatchNorm2d,), "BN": (nn.BatchNorm2d,),
          "GroupNorm": (nn.GroupNorm,), "GN": (nn.GroupNorm,)}


def bias_init_with_prob(prior_prob: float) -> float:
    """The bias whose sigmoid is ``prior_prob`` (mmcv's ``bias_init_with_prob``)."""
    return float(-math.log((1 - prior_prob) / prior_prob))


def _init_one(m: nn.Module, k: Keys, kind: str) -> None:
    bias = k("bias", 0.0)
    if "bias_prob" in k:
        bias = bias_init_with_prob(k("bias_prob"))
    if kind == "Normal":
        nn.init.normal_(m.weight, k("mean", 0.0), k("std", 1.0))
    elif kind == "TruncNormal":
        mean, std = k("mean", 0.0), k("std", 1.0)
        nn.init.trunc_normal_(m.weight, mean, std, k("a", -2.0), k("b", 2.0))
    elif kind == "Xavier":
        gain, dist = k("gain", 1.0), k("distribution", "normal", choices=("normal", "uniform"))
        (nn.init.xavier_uniform_ if dist == "uniform" else nn.init.xavier_normal_)(m.weight, gain)
    elif kind == "Kaiming":
        args = dict(a=k("a", 0), mode=k("mode", "fan_out"), nonlinearity=k("nonlinearity", "relu"))
        dist = k("distribution", "normal", choices=("normal", "uniform"))
        (nn.init.kaiming_uniform_ if dist == "uniform" else nn.init.kaiming_normal_)(m.weight, **args)
    elif kind == "Constant":
        nn.init.constant_(m.weight, k("val"))
    if getattr(m, "bias", None) is not None:
        nn.init.constant_(m.bias, bias)
    k.done()


def apply_init_cfg(module: nn.Module, init_cfg, where: str) -> None:
    """Apply every non-``Pretrained`` entry of ``init_cfg`` to ``module`` (see the module doc)."""
    if init_cfg is None:
        return
    for i, cfg in enumerate(init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]):
        at = f"{where}[{i}]" if isinstance(init_cfg, (list, tuple)) else where
        k = Keys(cfg, at, "init_cfg")
        kind = k.type(("Normal", "TruncNormal", "Xavier", "Kaiming", "Constant", "Pretrained"))
        if kind == "Pretrained":
            k("checkpoint"), k("prefix", None), k("map_location", None)
            continue
        layers = k("layer", None)
        overrides = k("override", None)
        params = {key: v for key, v in k.cfg.items() if key not in ("type", "layer", "override")}
        if layers is not None:
            names = [layers] if isinstance(layers, str) else list(layers)
            unknown = [n for n in names if n not in LAYERS]
            if unknown:
                raise ConfigError(f"{at}.layer={unknown[0]!r} is not supported; raydet supports "
                                  + ", ".join(sorted(LAYERS)))
            types = tuple(t for n in names for t in LAYERS[n])
            for m in module.modules():
                if isinstance(m, types):
                    _init_one(m, Keys(dict(params), at, "init_cfg"), kind)
        for j, ov in enumerate([overrides] if isinstance(overrides, dict) else overrides or []):
            ok = Keys(ov, f"{at}.override[{j}]", "init_cfg")
            name = ok("name")
            child = getattr(module, name, None)
            if child is None:
                raise ConfigError(f"{at}.override[{j}].name={name!r}: {type(module).__name__} has no such layer")
            sub = {key: v for key, v in ov.items() if key not in ("name", "type")}
            targets = [m for m in child.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
            for m in targets:
                _init_one(m, Keys({**params, **sub}, f"{at}.override[{j}]", "init_cfg"), ov.get("type", kind))
        for key in params:
            k(key)
        k.done()
