"""One precision path: an autocast context and a ``GradScaler`` that is a no-op when disabled.

mmdet's ``fp16`` key, with one raydet addition (``dtype``, named as mmengine's AmpOptimWrapper
names it)::

    fp16 = None                                   # full precision: autocast and scaler off
    fp16 = dict(loss_scale='dynamic')             # CUDA: float16 autocast + dynamic GradScaler
    fp16 = dict(loss_scale=512.)                  # a static scale (mmcv's default when omitted)
    fp16 = dict(loss_scale=dict(init_scale=2.**16, growth_interval=1000))   # GradScaler's args
    fp16 = dict(dtype='bfloat16')                 # bfloat16 autocast: no loss scaling needed
    fp16 = dict(..., max_consecutive_nonfinite=5) # see OptimizerHook

``dtype`` defaults to ``'float16'`` on CUDA and ``'bfloat16'`` on CPU (CPU autocast is made for
bfloat16); ``'float16'`` on CPU is honoured (slow; the scaler then runs there too, which is how
the skip rule is tested without a GPU). Loss scaling is on exactly when the dtype is float16.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError

DTYPES = {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
#: mmcv 1.x's Fp16OptimizerHook default when ``fp16`` gives no ``loss_scale``.
DEFAULT_LOSS_SCALE = 512.0


class Precision:
    """``autocast()`` for the forward pass and ``scaler`` for backward/step, from ``fp16``.

    Raises :class:`ConfigError` for an unknown dtype or loss_scale, and for bfloat16 on a GPU
    that lacks it.
    """

    def __init__(self, fp16: dict | None, device: torch.device | str = "cpu"):
        self.device_type = torch.device(device).type
        self.enabled = fp16 is not None
        cfg = dict(fp16 or {})
        name = cfg.get("dtype") or ("float16" if self.device_type == "cuda" else "bfloat16")
        if name not in DTYPES:
            raise ConfigError(f"fp16.dtype={name!r}: use 'float16' or 'bfloat16'")
        self.dtype = DTYPES[name]
        if (self.enabled and self.dtype == torch.bfloat16 and self.device_type == "cuda"
                and not torch.cuda.is_bf16_supported()):
            raise ConfigError("fp16.dtype='bfloat16': this GPU has no bfloat16 support; use 'float16'")
        patience = cfg.get("max_consecutive_nonfinite", 5)
        if not isinstance(patience, int) or isinstance(patience, bool) or patience < 1:
            raise ConfigError(f"fp16.max_consecutive_nonfinite must be an int >= 1, got {patience!r}")
        self.max_consecutive_nonfinite = patience
        loss_scale = cfg.get("loss_scale", DEFAULT_LOSS_SCALE)
        self.static_scale = None
        kwargs = {}
        if isinstance(loss_scale, (int, float)) and not isinstance(loss_scale, bool) and loss_scale > 0:
            self.static_scale = float(loss_scale)
            kwargs = dict(init_scale=self.static_scale)
        elif isinstance(loss_scale, dict):
            kwargs = dict(loss_scale)
        elif loss_scale != "dynamic":
            raise ConfigError(f"fp16.loss_scale must be 'dynamic', a positive number or a dict of GradScaler "
                              f"arguments, got {loss_scale!r}")
        use_scaler = self.enabled and self.dtype == torch.float16
        if not use_scaler:
            self.static_scale = None
        try:
            self.scaler = torch.amp.GradScaler(self.device_type, enabled=use_scaler, **kwargs)
        except TypeError as exc:
            raise ConfigError(f"fp16.loss_scale={loss_scale!r}: {exc}") from None

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled)

    def update(self) -> None:
        """After ``scaler.step``: grow/backoff the dynamic scale, or pin a static one."""
        self.scaler.update(self.static_scale)

    def __repr__(self):
        mode = f"{self.dtype} autocast" if self.enabled else "fp32"
        return f"Precision({mode}, loss scaling {'on' if self.scaler.is_enabled() else 'off'})"
