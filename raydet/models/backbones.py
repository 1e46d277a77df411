"""raydet's small CPU backbone for the built-in demo, registered in mmdet's ``BACKBONES``."""
from __future__ import annotations

from mmcv.runner import BaseModule
from mmdet.models.builder import BACKBONES
from torch import nn


@BACKBONES.register_module()
class GNConvNet(BaseModule):
    """``len(channels)`` stages of two 3x3 conv-GroupNorm-ReLU, the first with stride 2 (stage
    ``i`` has stride ``2**(i+1)``). ``forward(img [N, 3, H, W])`` returns the feature maps of the
    stages in ``out_indices`` (0-based, as mmdet's backbones), ``channels[i]`` channels each.
    Raises ``ValueError`` for an ``out_indices`` entry outside the stages or a ``groups`` that
    does not divide every stage's channels."""

    def __init__(self, channels=(32, 64, 96, 128), out_indices=(1, 2, 3), groups: int = 8,
                 init_cfg=dict(type="Kaiming", layer="Conv2d", mode="fan_out", nonlinearity="relu",
                               distribution="normal")):
        super().__init__(init_cfg)
        channels, out_indices = tuple(channels), tuple(out_indices)
        if not out_indices or any(not 0 <= i < len(channels) for i in out_indices):
            raise ValueError(f"out_indices={out_indices} must be stage numbers 0..{len(channels) - 1}")
        if groups < 1 or any(c % groups for c in channels):
            raise ValueError(f"groups={groups} does not divide every stage's channels {channels}")
        stages, cin = [], 3
        for c in channels:
            stages.append(nn.Sequential(
                nn.Conv2d(cin, c, 3, 2, 1, bias=False), nn.GroupNorm(groups, c), nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.GroupNorm(groups, c), nn.ReLU(inplace=True)))
            cin = c
        self.stages = nn.ModuleList(stages)
        self.out_indices = out_indices

    def forward(self, x):
        out = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                out.append(x)
        return tuple(out)
