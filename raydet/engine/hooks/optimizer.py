"""The optimizer step as a hook: backward, optional clipping, step, through one scaler path."""
from __future__ import annotations

import contextlib
import math

import torch

from ...errors import NonFiniteLossError
from .base import PRIORITIES, Hook
from ..dist import unwrap


class OptimizerHook(Hook):
    """``scaler.scale(loss / k).backward()``, and every ``cumulative_iters`` iterations
    ``[unscale; clip]; scaler.step; update; zero_grad``.

    ``precision`` is a :class:`raydet.engine.precision.Precision`; with fp32 or bf16 its scaler is
    disabled and every scaler call is a pass-through. With float16 loss scaling, a step whose
    gradients are not finite is skipped and the scale backed off (GradScaler's rule), and the scale
    is logged as ``loss_scale``; a non-finite loss is tolerated for
    ``precision.max_consecutive_nonfinite - 1`` consecutive iterations (the scale recovers from an
    overflow), and the next one raises :class:`NonFiniteLossError`. Without a scaler the first
    non-finite loss raises. The error names epoch, iteration and the loss dict; the check uses the
    rank-averaged ``log_vars['loss']`` so all ranks raise together. ``grad_clip=dict(max_norm,
    norm_type=2)`` clips the unscaled gradients and logs ``grad_norm``.

    ``cumulative_iters`` (mmcv 1.x's ``GradientCumulativeOptimizerHook``): gradients of
    ``cumulative_iters`` consecutive iterations are summed, each loss divided by
    ``cumulative_iters``, and the optimizer steps at every ``cumulative_iters``-th iteration of
    the run and at its last; the last, incomplete group divides by its own length (mmcv's rule),
    so a step always sees the mean over the batches it sums. Under DDP the accumulating
    iterations run forward and backward in ``no_sync()``: gradients are all-reduced once per
    step. A checkpoint written inside a group carries every rank's own partial sums
    (:meth:`rank_state_dict`; the runner gathers them), and each rank gets its own back, so a
    resume there is exact.
    """

    priority = PRIORITIES["ABOVE_NORMAL"]

    def __init__(self, precision, grad_clip: dict | None = None, cumulative_iters: int = 1):
        if not isinstance(cumulative_iters, int) or isinstance(cumulative_iters, bool) or cumulative_iters < 1:
            raise ValueError(f"cumulative_iters must be a positive int, got {cumulative_iters!r}")
        self.precision, self.grad_clip, self.cumulative_iters = precision, grad_clip, cumulative_iters
        self.nonfinite = 0  # consecutive iterations with a non-finite loss
        self.model = None
        self.saved_grads = None  # partial sums from a checkpoint, applied at before_run
        self.no_sync = contextlib.ExitStack()

    def _steps_now(self, runner) -> bool:
        return self.every_n_iters(runner, self.cumulative_iters) or self.is_last_iter(runner)

    def _loss_factor(self, runner) -> int:
        remainder = runner.max_iters % self.cumulative_iters
        return remainder if runner.iter >= runner.max_iters - remainder else self.cumulative_iters

    def before_run(self, runner):
        self.model = runner.model
        if self.cumulative_iters > 1 and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training
                                             for m in runner.model.modules()):
            runner.logger.warning(f"gradient accumulation over {self.cumulative_iters} iterations with BatchNorm "
                                  "layers in training mode: their statistics see one iteration's batch, not the "
                                  "accumulated one (mmcv's caveat)")
        if self.saved_grads is not None:
            params = dict(self._named_params())
            for name, grad in self.saved_grads.items():
                params[name].grad = grad.to(params[name].device)
            self.saved_grads = None

    def before_train_iter(self, runner):
        if not self._steps_now(runner) and hasattr(runner.model, "no_sync"):
            self.no_sync.enter_context(runner.model.no_sync())  # the forward is inside too, as DDP needs

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
                self.no_sync.close()
                detail = (f" ({self.nonfinite} consecutive iterations under float16 loss scaling, scale "
                          f"{scaler.get_scale():g})" if scaler.is_enabled() else "")
                raise NonFiniteLossError(runner.epoch, runner.inner_iter, log_vars, detail)
        if self.cumulative_iters > 1:
            loss = loss / self._loss_factor(runner)
        scaler.scale(loss).backward()
        self.no_sync.close()
        if not self._steps_now(runner):
            return
        if self.grad_clip is not None:
            scaler.unscale_(runner.optimizer)
            params = [p for g in runner.optimizer.param_groups for p in g["params"]
                      if p.requires_grad and p.grad is not None]
            if params:
                norm = torch.nn.utils.clip_grad_norm_(params, **self.grad_clip)
                runner.log_buffer.update({"grad_norm": float(norm)}, runner.outputs["num_samples"])
        scaler.step(runner.optimizer)
        self.precision.update()
        runner.optimizer.zero_grad(set_to_none=True)
        if scaler.is_enabled():
            runner.log_buffer.update({"loss_scale": scaler.get_scale()}, runner.outputs["num_samples"])

    def _named_params(self):
        return unwrap(self.model).named_parameters()

    def state_dict(self):
        return {"loss_scaler": self.precision.scaler.state_dict(), "nonfinite": self.nonfinite}

    def load_state_dict(self, state):
        self.precision.scaler.load_state_dict(state["loss_scaler"])
        self.nonfinite = int(state.get("nonfinite", 0))
        if state.get("grads"):  # a checkpoint of raydet <= 2026-12-06: rank 0's partial sums, for every rank
            self.load_rank_state_dict({"grads": state["grads"]})

    def rank_state_dict(self) -> dict:
        """This rank's own state: inside an accumulation group, its partial gradient sums (under
        DDP each rank accumulates its own until the step's all-reduce), as CPU tensors."""
        if self.cumulative_iters > 1 and self.model is not None:
            grads = {n: p.grad.detach().cpu() for n, p in self._named_params() if p.grad is not None}
            if grads:
                return {"grads": grads}
        return {}

    def load_rank_state_dict(self, state: dict | None) -> None:
        """Restore this rank's partial sums; ``None``: the checkpoint has no state for this rank
        (it was written by fewer ranks), which then starts its group's sums at zero."""
        self.saved_grads = (state or {}).get("grads") or None
        if self.saved_grads and self.cumulative_iters == 1:
            raise ValueError("the checkpoint was written inside a gradient-accumulation group; resume it with "
                             "the same optimizer_config.cumulative_iters")
