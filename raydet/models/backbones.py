"""Backbones with FPN for torchvision detectors; nothing is downloaded (``weights=None``)."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
import torchvision
from torchvision.models.detection.backbone_utils import mobilenet_backbone
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from ..errors import ConfigError
from ..registry import Registry, check_keys

BACKBONES = Registry("backbone")


def norm_layer(norm: str):
    """``'BN'``, ``'SyncBN'`` (built as BatchNorm; the trainer converts it where ranks can
    synchronise, see :func:`raydet.apis.train.sync_batchnorm`), ``'GN'`` (32 groups, fewer when
    channels are few), or ``'FrozenBN'``."""
    if norm in ("BN", "SyncBN"):
        return nn.BatchNorm2d
    if norm == "GN":
        return lambda c: nn.GroupNorm(min(32, c // 4) if c % 32 else 32, c)
    if norm == "FrozenBN":
        return FrozenBatchNorm2d
    raise ConfigError(f"unknown norm '{norm}'; use 'BN', 'SyncBN', 'GN' or 'FrozenBN'")


def _extra_blocks(extra: str | None, out_channels: int):
    if extra is None:
        return None
    if extra == "pool":
        return LastLevelMaxPool()
    if extra == "p6p7":
        return LastLevelP6P7(out_channels, out_channels)
    raise ConfigError(f"neck.extra must be None, 'pool' or 'p6p7', got {extra!r}")


class GNConvNet(nn.Module):
    """A small CPU-friendly backbone: ``len(channels)`` stages, each two 3x3 conv-GroupNorm-ReLU,
    the first of a stage with stride 2 (stage ``i`` has stride ``2**(i+1)``). Returns an ordered
    dict of the stages in ``out_indices`` named ``'0'``, ``'1'``, ..."""

    def __init__(self, channels=(32, 64, 96, 128), out_indices=(1, 2, 3), groups: int = 8):
        super().__init__()
        stages, cin = [], 3
        for c in channels:
            stages.append(nn.Sequential(
                nn.Conv2d(cin, c, 3, 2, 1, bias=False), nn.GroupNorm(groups, c), nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.GroupNorm(groups, c), nn.ReLU(inplace=True)))
            cin = c
        self.stages = nn.ModuleList(stages)
        self.out_indices = tuple(out_indices)
        self.out_channels_list = [channels[i] for i in self.out_indices]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        out = OrderedDict()
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                out[str(len(out))] = x
        return out


class WithFPN(nn.Module):
    """``body`` followed by torchvision's FPN; exposes ``out_channels`` as detectors require."""

    def __init__(self, body: nn.Module, in_channels_list, out_channels: int, extra_blocks=None):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(in_channels_list, out_channels, extra_blocks=extra_blocks)
        self.out_channels = out_channels

    def forward(self, x):
        return self.fpn(self.body(x))


@BACKBONES.register("GNConvNet")
def gn_convnet(neck, channels=(32, 64, 96, 128), out_indices=(1, 2, 3), groups=8):
    body = GNConvNet(channels, out_indices, groups)
    return WithFPN(body, body.out_channels_list, neck["out_channels"],
                   _extra_blocks(neck.get("extra"), neck["out_channels"]))


class ResNetBody(nn.Module):
    """A torchvision ResNet's stem and stages; returns stages ``out_indices`` (1-4) as ``'0'``, ..."""

    def __init__(self, depth: int, norm: str, out_indices=(1, 2, 3, 4), frozen_stages: int = -1):
        super().__init__()
        net = getattr(torchvision.models, f"resnet{depth}")(weights=None, norm_layer=norm_layer(norm))
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layers = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        self.out_indices = tuple(out_indices)
        widths = [layer[-1].conv3.out_channels if hasattr(layer[-1], "conv3") else layer[-1].conv2.out_channels
                  for layer in self.layers]
        self.out_channels_list = [widths[i - 1] for i in self.out_indices]
        frozen = ([self.stem] if frozen_stages >= 0 else []) + list(self.layers[:max(frozen_stages, 0)])
        for module in frozen:
            for p in module.parameters():
                p.requires_grad_(False)

    def forward(self, x):
        out = OrderedDict()
        x = self.stem(x)
        for i, layer in enumerate(self.layers, start=1):
            x = layer(x)
            if i in self.out_indices:
                out[str(len(out))] = x
        return out


@BACKBONES.register("ResNet")
def resnet(neck, depth=50, norm="BN", out_indices=(1, 2, 3, 4), frozen_stages=-1):
    if depth not in (18, 34, 50):
        raise ConfigError(f"model.backbone.depth must be 18, 34 or 50, got {depth}")
    body = ResNetBody(depth, norm, out_indices, frozen_stages)
    return WithFPN(body, body.out_channels_list, neck["out_channels"],
                   _extra_blocks(neck.get("extra", "pool"), neck["out_channels"]))


@BACKBONES.register("MobileNetV3")
def mobilenet_v3(neck, arch="large", norm="BN", out_indices=None):
    if arch not in ("large", "small"):
        raise ConfigError(f"model.backbone.arch must be 'large' or 'small', got {arch!r}")
    if neck["out_channels"] != 256:
        raise ConfigError("torchvision's MobileNetV3 FPN has 256 channels; set model.neck.out_channels=256")
    model = mobilenet_backbone(backbone_name=f"mobilenet_v3_{arch}", weights=None, fpn=True,
                               norm_layer=norm_layer(norm), trainable_layers=6,
                               returned_layers=None if out_indices is None else list(out_indices),
                               extra_blocks=_extra_blocks(neck.get("extra", "pool"), neck["out_channels"]))
    return model


def build_backbone(backbone: dict, neck: dict | None):
    """Backbone + FPN from mmdet-style ``backbone`` and ``neck=dict(type='FPN', out_channels, extra)``."""
    neck = dict(neck or dict(type="FPN", out_channels=256))
    if neck.pop("type", "FPN") != "FPN":
        raise ConfigError("model.neck.type must be 'FPN'")
    check_keys(neck.keys(), {"out_channels", "extra"}, "model.neck")
    neck.setdefault("out_channels", 256)
    return BACKBONES.build(dict(backbone), "model.backbone", neck=neck)


@torch.no_grad()
def feature_strides(backbone: nn.Module, probe: int = 256) -> "OrderedDict[str, int]":
    """Stride of each named feature map, measured with one forward of a ``probe``-px image."""
    was_training = backbone.training
    backbone.eval()
    feats = backbone(torch.zeros(1, 3, probe, probe))
    backbone.train(was_training)
    return OrderedDict((k, probe // v.shape[-1]) for k, v in feats.items())


