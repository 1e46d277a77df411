"""mmdet 2.x backbones on torchvision's networks.

Each builder takes the ``model.backbone`` dict as :class:`~raydet.models.cfg.Keys` and returns a
module whose ``forward(img)`` gives the list of feature maps in ``out_indices`` (0-based, as
mmdet), with ``out_channels`` and ``strides`` (pixels) per output. Module names are torchvision's
(``conv1``, ``bn1``, ``layer1``... / ``features.N``) so ImageNet checkpoints load by name.
"""
from __future__ import annotations

import torch
from torch import nn
import torchvision
from torchvision.models.resnet import BasicBlock, Bottleneck

from ..errors import ConfigError
from ..registry import Registry
from .cfg import Keys, freeze_norms, norm_layer
from .init import apply_init_cfg

BACKBONES = Registry("backbone")
_BN = nn.modules.batchnorm._BatchNorm


class _Backbone(nn.Module):
    """Shared by the backbones: frozen stages and ``norm_eval`` survive ``model.train()``."""

    norm_eval = False
    frozen: list[nn.Module]

    def freeze(self, modules: list[nn.Module]) -> None:
        self.frozen = modules
        for m in modules:
            for p in m.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        for m in getattr(self, "frozen", []):
            m.eval()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BN):
                    m.eval()
        return self


RESNET_DEPTHS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)), 50: (Bottleneck, (3, 4, 6, 3)),
                 101: (Bottleneck, (3, 4, 23, 3)), 152: (Bottleneck, (3, 8, 36, 3))}


class ResNet(_Backbone):
    """mmdet's ``ResNet``/``ResNeXt`` on torchvision's blocks. ``style='pytorch'`` puts a stage's
    stride on the 3x3 conv (torchvision's), ``'caffe'`` on the first 1x1 conv."""

    def __init__(self, k: Keys, groups: int = 1, base_width: int = 64):
        super().__init__()
        depth = k("depth", choices=tuple(RESNET_DEPTHS))
        k.only("in_channels", 3, "torchvision's stem takes RGB images")
        base = k.only("base_channels", 64, "torchvision's ResNets are 64 channels wide at the stem")
        k.only("stem_channels", None, "torchvision's stem has base_channels channels")
        num_stages = k("num_stages", 4, choices=(1, 2, 3, 4))
        strides = tuple(k("strides", (1, 2, 2, 2), kind=(tuple, list)))
        dilations = tuple(k("dilations", (1, 1, 1, 1), kind=(tuple, list)))
        if strides != (1, 2, 2, 2)[:len(strides)] or set(dilations) != {1}:
            raise ConfigError(f"{k.where}: strides={strides}, dilations={dilations} are not supported (only "
                              "torchvision's (1, 2, 2, 2) strides without dilation are built)")
        out_indices = tuple(k("out_indices", (0, 1, 2, 3), kind=(tuple, list)))
        if not out_indices or any(not 0 <= i < num_stages for i in out_indices):
            raise ConfigError(f"{k.where}.out_indices={out_indices} must be stage numbers 0..{num_stages - 1}")
        style = k("style", "pytorch", choices=("pytorch", "caffe"))
        k.only("deep_stem", False, "torchvision has no ResNetV1c/V1d deep stem")
        k.only("avg_down", False, "torchvision has no ResNetV1d average-pool shortcut")
        frozen_stages = k("frozen_stages", -1, kind=int)
        k.only("conv_cfg", None, "only plain Conv2d")
        norm, requires_grad = norm_layer(k("norm_cfg", dict(type="BN", requires_grad=True)), f"{k.where}.norm_cfg")
        self.norm_eval = k("norm_eval", True, kind=bool)
        k.only("dcn", None, "torchvision's ResNet blocks have no deformable convolution")
        stage_with_dcn = k("stage_with_dcn", (False,) * 4)
        if any(stage_with_dcn):
            raise ConfigError(f"{k.where}.stage_with_dcn={stage_with_dcn!r} is not supported "
                              "(torchvision has no deformable convolution blocks)")
        k.only("plugins", None, "torchvision's blocks take no plugins")
        k.only("with_cp", False, "activation checkpointing is not wired into torchvision's blocks")
        zero_init = k("zero_init_residual", True, kind=bool)
        block, layers = RESNET_DEPTHS[depth]
        if block is BasicBlock and (groups != 1 or base_width != 64):
            raise ConfigError(f"{k.where}: ResNeXt needs a Bottleneck depth (50, 101, 152), got {depth}")
        net = torchvision.models.resnet.ResNet(block, list(layers), zero_init_residual=zero_init, groups=groups,
                                               width_per_group=base_width, norm_layer=norm)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.stages = [f"layer{i + 1}" for i in range(num_stages)]
        for name in self.stages:
            self.add_module(name, getattr(net, name))
        if style == "caffe" and block is Bottleneck:
            for name in self.stages:
                first = getattr(self, name)[0]
                first.conv1.stride, first.conv2.stride = first.conv2.stride, (1, 1)
        if not requires_grad:
            freeze_norms(self)
        self.out_indices = out_indices
        expansion = block.expansion
        self.out_channels = [base * 2 ** i * expansion for i in out_indices]
        self.strides = [4 * 2 ** i for i in out_indices]
        if frozen_stages > num_stages:
            raise ConfigError(f"{k.where}.frozen_stages={frozen_stages} exceeds num_stages={num_stages}")
        self.freeze(([self.conv1, self.bn1] if frozen_stages >= 0 else [])
                    + [getattr(self, f"layer{i}") for i in range(1, frozen_stages + 1)])
        apply_init_cfg(self, k("init_cfg", None), f"{k.where}.init_cfg")
        k("pretrained", None)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = []
        for i, name in enumerate(self.stages):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                out.append(x)
        return out


@BACKBONES.register("ResNet")
def resnet(k: Keys) -> ResNet:
    return ResNet(k)


@BACKBONES.register("ResNeXt")
def resnext(k: Keys) -> ResNet:
    groups, base_width = k("groups", 1, kind=int), k("base_width", 4, kind=int)
    # mmdet's ResNeXt block is plain (width = planes) when groups == 1
    return ResNet(k, groups=groups, base_width=base_width if groups > 1 else 64)


# torchvision's mobilenet_v2.features index that ends each of mmdet's stages: conv1, layer1..7, conv2
_MBV2_STAGE_END = (0, 1, 3, 6, 10, 13, 16, 17, 18)


class MobileNetV2(_Backbone):
    """mmdet's ``MobileNetV2`` (out_indices 0..6 are layer1..layer7, 7 is the final 1x1 conv) on
    torchvision's ``mobilenet_v2().features``."""

    def __init__(self, k: Keys):
        super().__init__()
        widen = k("widen_factor", 1.0, kind=(int, float))
        out_indices = tuple(k("out_indices", (1, 2, 4, 7), kind=(tuple, list)))
        if any(not 0 <= i <= 7 for i in out_indices):
            raise ConfigError(f"{k.where}.out_indices={out_indices} must be in 0..7")
        frozen_stages = k("frozen_stages", -1, kind=int)
        k.only("conv_cfg", None, "only plain Conv2d")
        norm, requires_grad = norm_layer(k("norm_cfg", dict(type="BN")), f"{k.where}.norm_cfg")
        act = k("act_cfg", dict(type="ReLU6"))
        if (act or {}).get("type") != "ReLU6":
            raise ConfigError(f"{k.where}.act_cfg={act!r} is not supported (torchvision's MobileNetV2 uses ReLU6)")
        self.norm_eval = k("norm_eval", False, kind=bool)
        k.only("with_cp", False, "activation checkpointing is not wired into torchvision's blocks")
        self.features = torchvision.models.mobilenet_v2(weights=None, width_mult=widen, norm_layer=norm).features
        if not requires_grad:
            freeze_norms(self)
        self.ends = [_MBV2_STAGE_END[i + 1] for i in out_indices]
        self.out_channels = [self.features[e].out_channels for e in self.ends]
        strides = (2, 4, 8, 16, 16, 32, 32, 32)
        self.strides = [strides[i] for i in out_indices]
        self.freeze([self.features[j] for j in range(_MBV2_STAGE_END[frozen_stages + 1] + 1)]
                    if frozen_stages >= 0 else [])
        apply_init_cfg(self, k("init_cfg", None), f"{k.where}.init_cfg")
        k("pretrained", None)

    def forward(self, x):
        out = []
        for j, layer in enumerate(self.features[: max(self.ends) + 1]):
            x = layer(x)
            if j in self.ends:
                out.append(x)
        return out


@BACKBONES.register("MobileNetV2")
def mobilenet_v2(k: Keys) -> MobileNetV2:
    return MobileNetV2(k)


class GNConvNet(_Backbone):
    """raydet's small CPU backbone for the built-in demo: ``len(channels)`` stages of two 3x3
    conv-GroupNorm-ReLU, the first with stride 2 (stage ``i`` has stride ``2**(i+1)``)."""

    def __init__(self, k: Keys):
        super().__init__()
        channels = tuple(k("channels", (32, 64, 96, 128), kind=(tuple, list)))
        out_indices = tuple(k("out_indices", (1, 2, 3), kind=(tuple, list)))
        if any(not 0 <= i < len(channels) for i in out_indices):
            raise ConfigError(f"{k.where}.out_indices={out_indices} must be stage numbers 0..{len(channels) - 1}")
        groups = k("groups", 8, kind=int)
        if groups < 1 or any(c % groups for c in channels):
            raise ConfigError(f"{k.where}.groups={groups} does not divide every stage's channels {channels}")
        stages, cin = [], 3
        for c in channels:
            stages.append(nn.Sequential(
                nn.Conv2d(cin, c, 3, 2, 1, bias=False), nn.GroupNorm(groups, c), nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.GroupNorm(groups, c), nn.ReLU(inplace=True)))
            cin = c
        self.stages = nn.ModuleList(stages)
        self.out_indices = out_indices
        self.out_channels = [channels[i] for i in out_indices]
        self.strides = [2 ** (i + 1) for i in out_indices]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        apply_init_cfg(self, k("init_cfg", None), f"{k.where}.init_cfg")

    def forward(self, x):
        out = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                out.append(x)
        return out


@BACKBONES.register("GNConvNet")
def gn_convnet(k: Keys) -> GNConvNet:
    return GNConvNet(k)


def build_backbone(cfg: dict, where: str = "model.backbone") -> nn.Module:
    """The backbone for ``cfg`` (a ``model.backbone`` dict); every key is read or rejected."""
    k = Keys(cfg, where)
    k.type(BACKBONES.names())
    module = BACKBONES.get(cfg["type"], where)(k)
    k.done()
    return module
