"""mmdet's ``FPN`` (on torchvision's ``FeaturePyramidNetwork``) and ``SSDNeck``.

A neck takes the backbone's list of feature maps and returns an ordered dict ``{'0': P_first,
'1': ..., }`` with ``out_channels`` (an int for FPN, a list for SSDNeck) and ``strides``.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
import torch.nn.functional as F
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock
from torchvision.ops.misc import Conv2dNormActivation

from ..errors import ConfigError
from .cfg import Keys, act_layer, freeze_norms, norm_layer
from .init import apply_init_cfg


class ExtraLevels(ExtraFPNBlock):
    """FPN levels above the backbone's: mmdet's ``add_extra_convs`` (``False``: stride-2 max-pool
    of the last output; ``'on_input'``: a stride-2 3x3 conv of the last backbone input;
    ``'on_lateral'``: of its lateral; ``'on_output'``: of the last output; each further level a
    conv of the previous one, after a ReLU when ``relu_before_extra_convs``)."""

    def __init__(self, num: int, mode, in_channels: int, out_channels: int, relu_before: bool, norm):
        super().__init__()
        self.num, self.mode, self.relu_before = num, mode, relu_before
        self.convs = nn.ModuleList(
            Conv2dNormActivation(in_channels if i == 0 and mode == "on_input" else out_channels, out_channels,
                                 3, stride=2, padding=1, norm_layer=norm, activation_layer=None)
            for i in range(num if mode else 0))
        self._lateral: list[nn.Module] = []  # the FPN's last lateral conv, kept out of the module tree

    def forward(self, results, x, names):
        for i in range(self.num):
            if not self.mode:
                level = F.max_pool2d(results[-1], 1, stride=2)
            elif i == 0:
                source = {"on_input": lambda: x[-1], "on_lateral": lambda: self._lateral[0](x[-1]),
                          "on_output": lambda: results[-1]}[self.mode]()
                level = self.convs[0](source)
            else:
                level = self.convs[i](F.relu(results[-1]) if self.relu_before else results[-1])
            results.append(level)
            names.append(str(len(names)))
        return results, names


class FPN(FeaturePyramidNetwork):
    """mmdet's ``FPN``: backbone levels ``start_level..end_level`` (v2.25's inclusive
    ``end_level``; -1 = the last), ``num_outs`` outputs, extra levels as :class:`ExtraLevels`."""

    def __init__(self, k: Keys, backbone_channels, backbone_strides):
        in_channels = list(k("in_channels", kind=(list, tuple)))
        if in_channels != list(backbone_channels):
            raise ConfigError(f"{k.where}.in_channels={in_channels} does not match the backbone's output channels "
                              f"{list(backbone_channels)} (check model.backbone.out_indices)")
        out_channels = k("out_channels", kind=int)
        num_outs = k("num_outs", kind=int)
        start = k("start_level", 0, kind=int)
        end = k("end_level", -1, kind=int)
        num_ins = len(in_channels)
        stop = num_ins if end in (-1, num_ins - 1) else end + 1
        if not 0 <= start < stop <= num_ins or num_outs < stop - start or (stop < num_ins and num_outs != stop - start):
            raise ConfigError(f"{k.where}: start_level={start}, end_level={end}, num_outs={num_outs} do not fit "
                              f"{num_ins} backbone levels")
        extra = k("add_extra_convs", False, choices=(False, True, "on_input", "on_lateral", "on_output"))
        extra = "on_input" if extra is True else extra
        relu_before = k("relu_before_extra_convs", False, kind=bool)
        norm, requires_grad = norm_layer(k("norm_cfg", None), f"{k.where}.norm_cfg")
        if k("no_norm_on_lateral", False, kind=bool) and norm is not None:
            raise ConfigError(f"{k.where}.no_norm_on_lateral=True is not supported with norm_cfg "
                              "(torchvision's FPN normalises laterals and outputs alike)")
        k.only("conv_cfg", None, "only plain Conv2d")
        k.only("act_cfg", None, "torchvision's FPN convs have no activation")
        upsample = k("upsample_cfg", dict(mode="nearest"))
        if upsample != dict(mode="nearest"):
            raise ConfigError(f"{k.where}.upsample_cfg={upsample!r} is not supported; torchvision's FPN upsamples "
                              "with dict(mode='nearest') to the lower level's size")
        num_extra = num_outs - (stop - start)
        levels = ExtraLevels(num_extra, extra, in_channels[stop - 1], out_channels, relu_before, norm)
        super().__init__(in_channels[start:stop], out_channels, extra_blocks=levels if num_extra else None,
                         norm_layer=norm)
        self.start, self.stop = start, stop
        levels._lateral = [self.inner_blocks[-1]]
        apply_init_cfg(self, k("init_cfg", dict(type="Xavier", layer="Conv2d", distribution="uniform")),
                       f"{k.where}.init_cfg")
        if not requires_grad:
            freeze_norms(self)
        self.out_channels = out_channels
        self.strides = list(backbone_strides[start:stop]) + [backbone_strides[stop - 1] * 2 ** (i + 1)
                                                             for i in range(num_extra)]

    def forward(self, feats: list[torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
        return super().forward(OrderedDict((str(i), f) for i, f in enumerate(feats[self.start:self.stop])))


class L2Norm(nn.Module):
    """SSD's channel-wise L2 normalisation with a learned per-channel scale."""

    def __init__(self, channels: int, scale: float, eps: float = 1e-10):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))
        self.eps = eps

    def forward(self, x):
        norm = x.float().pow(2).sum(1, keepdim=True).sqrt() + self.eps
        return (self.weight[None, :, None, None].float() * x.float() / norm).type_as(x)


class SSDNeck(nn.Module):
    """mmdet's ``SSDNeck``: the backbone's maps, then extra levels of a 1x1 conv to half the
    channels and a strided 3x3 conv (depthwise-separable when ``use_depthwise``)."""

    def __init__(self, k: Keys, backbone_channels, backbone_strides):
        super().__init__()
        in_channels = list(k("in_channels", kind=(list, tuple)))
        if in_channels != list(backbone_channels):
            raise ConfigError(f"{k.where}.in_channels={in_channels} does not match the backbone's output channels "
                              f"{list(backbone_channels)}")
        out_channels = list(k("out_channels", kind=(list, tuple)))
        if out_channels[:len(in_channels)] != in_channels:
            raise ConfigError(f"{k.where}.out_channels must start with in_channels {in_channels}")
        strides = list(k("level_strides", kind=(list, tuple)))
        paddings = list(k("level_paddings", kind=(list, tuple)))
        extra = out_channels[len(in_channels):]
        if not len(extra) == len(strides) == len(paddings):
            raise ConfigError(f"{k.where}: level_strides and level_paddings need one entry per extra level ({len(extra)})")
        scale = k("l2_norm_scale", 20.0)
        last_kernel = k("last_kernel_size", 3, kind=int)
        depthwise = k("use_depthwise", False, kind=bool)
        k.only("conv_cfg", None, "only plain Conv2d")
        norm, requires_grad = norm_layer(k("norm_cfg", None), f"{k.where}.norm_cfg")
        act = act_layer(k("act_cfg", dict(type="ReLU")), f"{k.where}.act_cfg")
        self.l2_norm = L2Norm(in_channels[0], scale) if scale is not None else None
        layers, cin = [], in_channels[-1]
        for i, (c, s, p) in enumerate(zip(extra, strides, paddings)):
            kernel = last_kernel if i == len(extra) - 1 else 3
            mid = c // 2
            if depthwise:
                tail = [Conv2dNormActivation(mid, mid, kernel, s, p, groups=mid, norm_layer=norm, activation_layer=act),
                        Conv2dNormActivation(mid, c, 1, norm_layer=norm, activation_layer=act)]
            else:
                tail = [Conv2dNormActivation(mid, c, kernel, s, p, norm_layer=norm, activation_layer=act)]
            layers.append(nn.Sequential(Conv2dNormActivation(cin, mid, 1, norm_layer=norm, activation_layer=act), *tail))
            cin = c
        self.extra_layers = nn.ModuleList(layers)
        apply_init_cfg(self, k("init_cfg", None), f"{k.where}.init_cfg")
        if not requires_grad:
            freeze_norms(self)
        self.out_channels = out_channels
        probe = list(backbone_strides)
        for s in strides:
            probe.append(probe[-1] * s)
        self.strides = probe

    def forward(self, feats):
        outs = list(feats)
        if self.l2_norm is not None:
            outs[0] = self.l2_norm(outs[0])
        x = outs[-1]
        for layer in self.extra_layers:
            x = layer(x)
            outs.append(x)
        return OrderedDict((str(i), f) for i, f in enumerate(outs))


class BackboneWithNeck(nn.Module):
    """``body`` (a backbone) then its neck; the names ``body``/``fpn`` are torchvision's, so its
    detection checkpoints load by name. ``out_channels`` and ``strides`` are the neck's."""

    def __init__(self, body: nn.Module, neck: nn.Module):
        super().__init__()
        self.body = body
        self.fpn = neck
        self.out_channels, self.strides = neck.out_channels, neck.strides

    def forward(self, x):
        return self.fpn(self.body(x))


def build_neck(cfg: dict, backbone: nn.Module, where: str = "model.neck") -> BackboneWithNeck:
    """``backbone`` followed by the neck ``cfg`` (``FPN`` or ``SSDNeck``)."""
    if isinstance(cfg, (list, tuple)):
        raise ConfigError(f"{where}: a list of necks is not supported; give one FPN or SSDNeck dict")
    k = Keys(cfg, where)
    kind = k.type(("FPN", "SSDNeck"))
    neck = (FPN if kind == "FPN" else SSDNeck)(k, backbone.out_channels, backbone.strides)
    k.done()
    return BackboneWithNeck(backbone, neck)
