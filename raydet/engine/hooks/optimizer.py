"""The optimizer step as a hook: backward, optional clipping, step, through one scaler path."""
from __future__ import annotations

import math

import torch

from ...errors import NonFiniteLossError
from .base import PRIORITIES, Hook


class OptimizerHook(Hook):
    """``zero_grad; scaler.scale(loss).backward(); [unscale; clip]; scaler.step; update``.

    ``precision`` is a :class:`raydet.engine.precision.Precision`; with fp32 or bf16 its scaler is
    disabled and every scaler call is a pass-through. With float16 loss scaling, a step whose
    gradients are not finite is skipped and the scale backed off (GradScaler's rule), and the scale
    is logged as ``loss_scale``; a non-finite loss is tolerated for
    ``precision.max_consecutive_nonfinite - 1`` consecutive iterations (the scale recovers from an
    overflow), and the next one raises :class:`NonFiniteLossError`. Without a scaler the first
    non-finite loss raises. The error names epoch, iteration and the loss dict; the check uses the
    rank-averaged ``log_vars['loss']`` so all ranks raise together. ``grad_clip=dict(max_norm,
    norm_type=2)`` clips the unscaled gradients and logs ``grad_norm``.
    """

    priority = PRIORITIES["ABOVE_NORMAL"]

    def __init__(self, precision, grad_clip: dict | None = None):
        self.precision, self.grad_clip = precision, grad_clip
        self.nonfinite = 0  # consecutive iterations with a non-finite loss

    def after_train_iter(self, runner):
        scaler = self.precision.scaler
        loss = runner.outputs["loss"]
        log_vars = runner.outputs["log_vars"]
        if math.isfinite(log_vars["loss"]):
            self.nonfinite = 0
        else:
            self.nonfinite += 1
            limit = self.precision.max_consecutive_nonfinite if scaler.is_enabled() else 1
            if self.nonfinite >= limit:
                detail = (f" ({self.nonfinite} consecutive iterations under float16 loss scaling, scale "
                          f"{scaler.get_scale():g})" if scaler.is_enabled() else "")
                raise NonFiniteLossError(runner.epoch, runner.inner_iter, log_vars, detail)
        runner.optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if self.grad_clip is not None:
            scaler.unscale_(runner.optimizer)
            params = [p for g in runner.optimizer.param_groups for p in g["params"]
                      if p.requires_grad and p.grad is not None]
            if params:
                norm = torch.nn.utils.clip_grad_norm_(params, **self.grad_clip)
                runner.log_buffer.update({"grad_norm": float(norm)}, runner.outputs["num_samples"])
        scaler.step(runner.optimizer)
        self.precision.update()
        if scaler.is_enabled():
            runner.log_buffer.update({"loss_scale": scaler.get_scale()}, runner.outputs["num_samples"])

    def state_dict(self):
        return {"loss_scaler": self.precision.scaler.state_dict(), "nonfinite": self.nonfinite}

    def load_state_dict(self, state):
        self.precision.scaler.load_state_dict(state["loss_scaler"])
        self.nonfinite = int(state.get("nonfinite", 0))
