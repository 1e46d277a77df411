"""One precision path: an autocast context and a ``GradScaler`` that is a no-op when disabled.

``fp16=None``: full precision (autocast and scaler disabled). ``fp16=dict(loss_scale=...)`` on
CUDA: float16 autocast with a ``GradScaler`` (``'dynamic'``, a number for a static scale, or a dict
of GradScaler arguments). On CPU: bfloat16 autocast, which needs no loss scaling, so the scaler
stays disabled.
"""
from __future__ import annotations

import torch


class Precision:
    def __init__(self, fp16: dict | None, device: torch.device | str = "cpu"):
        self.device_type = torch.device(device).type
        self.enabled = fp16 is not None
        self.dtype = torch.float16 if self.device_type == "cuda" else torch.bfloat16
        loss_scale = (fp16 or {}).get("loss_scale", "dynamic")
        self.static_scale = None
        kwargs = {}
        if isinstance(loss_scale, (int, float)):
            self.static_scale = float(loss_scale)
            kwargs = dict(init_scale=self.static_scale)
        elif isinstance(loss_scale, dict):
            kwargs = dict(loss_scale)
        elif loss_scale != "dynamic":
            raise ValueError(f"fp16.loss_scale must be 'dynamic', a number or a dict, got {loss_scale!r}")
        use_scaler = self.enabled and self.dtype == torch.float16
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=use_scaler, **kwargs)

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled)

    def update(self) -> None:
        """After ``scaler.step``: grow/backoff the dynamic scale, or pin a static one."""
        self.scaler.update(self.static_scale)

    def __repr__(self):
        mode = f"{self.dtype} autocast" if self.enabled else "fp32"
        return f"Precision({mode}, loss scaling {'on' if self.scaler.is_enabled() else 'off'})"
