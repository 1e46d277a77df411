"""The optimizer step as a hook: backward, optional clipping, step, through one scaler path."""
from __future__ import annotations

import math

import torch

from ...errors import NonFiniteLossError
from .base import PRIORITIES, Hook


class OptimizerHook(Hook):
    """``zero_grad; scaler.scale(loss).backward(); [unscale; clip]; scaler.step; update``.

    ``precision`` is a :class:`raydet.engine.precision.Precision`; with fp32 or bf16 its scaler is
    disabled and every scaler call is a pass-through. A step whose gradients are not finite is
    skipped by an enabled scaler (dynamic fp16). Without a scaler a non-finite loss raises
    :class:`NonFiniteLossError` naming epoch, iteration and the loss dict; the check uses the
    rank-averaged ``log_vars['loss']`` so all ranks raise together. ``grad_clip=dict(max_norm,
    norm_type=2)`` clips the unscaled gradients and logs ``grad_norm``.
    """

    priority = PRIORITIES["ABOVE_NORMAL"]

    def __init__(self, precision, grad_clip: dict | None = None):
        self.precision, self.grad_clip = precision, grad_clip

    def after_train_iter(self, runner):
        scaler = self.precision.scaler
        loss = runner.outputs["loss"]
        if not scaler.is_enabled() and not math.isfinite(runner.outputs["log_vars"]["loss"]):
            raise NonFiniteLossError(runner.epoch, runner.inner_iter, runner.outputs["log_vars"])
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

    def state_dict(self):
        return {"loss_scaler": self.precision.scaler.state_dict()}

    def load_state_dict(self, state):
        self.precision.scaler.load_state_dict(state["loss_scaler"])
