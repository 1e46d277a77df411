"""Exponential moving averages of the weights: mmdet 2.x's ``ExpMomentumEMAHook`` and
``LinearMomentumEMAHook`` (YOLOX-style recipes) and mmcv 1.x's ``EMAHook``.

Every ``interval`` iterations ``ema = ema * (1 - m) + weight * m`` for each floating-point
tensor of the model (parameters, and buffers unless ``skip_buffers``), ``m`` being ``momentum``
or a schedule of the iteration. At the end of each epoch the averaged weights are swapped into
the model, so that evaluation, the epoch's checkpoint (its ``state_dict``) and the final model
are the averaged ones, as in mmdet; the next epoch swaps the trained weights back. The other copy
and whether the model holds the average travel in the hook's own checkpoint state, so a resume —
mid-epoch or at an epoch's end — continues exactly (mmdet registers the copy as model buffers
and swaps unconditionally, which breaks a strict resume and a mid-epoch one).

These hooks run at priority 49 (mmdet's configs set ``priority=49``): before evaluation and the
checkpoint of an epoch.
"""
from __future__ import annotations

import math

import torch

from ...errors import ConfigError
from .base import HOOKS, PRIORITIES, Hook
from ..dist import unwrap


@HOOKS.register()
class BaseEMAHook(Hook):
    """``momentum`` in (0, 1): the weight of the new value; ``momentum_fun(iteration) -> m``
    overrides it; ``resume_from`` is mmdet's own resume path, which raydet leaves to the run's
    ``resume_from``/auto-resume (they restore this hook's state too)."""

    priority = PRIORITIES["NORMAL"] - 1
    #: update when ``(iter + offset) % interval == 0`` (mmdet: after every interval-th iteration)
    offset = 1

    def __init__(self, momentum=0.0002, interval=1, skip_buffers=False, resume_from=None, momentum_fun=None):
        if not 0 < momentum < 1:
            raise ConfigError(f"{type(self).__name__}.momentum must be in (0, 1), got {momentum!r}")
        if not isinstance(interval, int) or interval < 1:
            raise ConfigError(f"{type(self).__name__}.interval must be a positive int, got {interval!r}")
        if resume_from is not None:
            raise ConfigError(f"{type(self).__name__}.resume_from: set the config's top-level resume_from instead "
                              "(the run's resume restores the averaged weights with everything else)")
        self.momentum, self.interval, self.skip_buffers = momentum, interval, skip_buffers
        self.momentum_fun = momentum_fun
        self.live: dict[str, torch.Tensor] = {}  # the model's own tensors, by name
        self.ema: dict[str, torch.Tensor] = {}
        self.swapped = False  # the model holds the averages (from an epoch's end to the next start)
        self.saved = None

    def get_momentum(self, iteration: int) -> float:
        return self.momentum_fun(iteration) if self.momentum_fun else self.momentum

    def before_run(self, runner):
        module = unwrap(runner.model)
        tensors = dict(module.named_parameters()) if self.skip_buffers else module.state_dict(keep_vars=True)
        self.live = {k: v for k, v in tensors.items() if v.dtype.is_floating_point}
        self.ema = {k: v.detach().clone() for k, v in self.live.items()}
        if self.saved is not None:
            missing = sorted(set(self.live) ^ set(self.saved["ema"]))
            if missing:
                raise ValueError(f"the checkpoint's averaged weights do not match the model: {missing[:3]}")
            for name, value in self.saved["ema"].items():
                self.ema[name].copy_(value)
            self.swapped, self.saved = bool(self.saved["swapped"]), None

    def after_train_iter(self, runner):
        if (runner.iter + self.offset) % self.interval:
            return
        m = self.get_momentum(runner.iter)
        ema = list(self.ema.values())
        torch._foreach_mul_(ema, 1 - m)
        torch._foreach_add_(ema, [v.detach() for v in self.live.values()], alpha=m)

    def _swap(self):
        with torch.no_grad():
            for name, value in self.live.items():
                held = value.detach().clone()
                value.copy_(self.ema[name])
                self.ema[name].copy_(held)
        self.swapped = not self.swapped

    def after_train_epoch(self, runner):
        if not self.swapped:
            self._swap()

    def before_train_epoch(self, runner):
        if self.swapped:
            self._swap()

    def state_dict(self):
        state = {"swapped": self.swapped}
        if self.ema:
            state["ema"] = {k: v.detach().cpu() for k, v in self.ema.items()}
        return state

    def load_state_dict(self, state):
        self.saved = state if "ema" in state else None
        self.swapped = bool(state["swapped"])


@HOOKS.register()
class ExpMomentumEMAHook(BaseEMAHook):
    """``m = (1 - momentum) * exp(-(1 + iteration) / total_iter) + momentum``: close to 1 at
    first, so the average follows the weights early on, then ``momentum``."""

    def __init__(self, total_iter=2000, **kwargs):
        super().__init__(**kwargs)
        self.total_iter = total_iter
        self.momentum_fun = lambda x: (1 - self.momentum) * math.exp(-(1 + x) / self.total_iter) + self.momentum


@HOOKS.register()
class LinearMomentumEMAHook(BaseEMAHook):
    """``m = min(momentum ** interval, (1 + iteration) / (warm_up + iteration))``."""

    def __init__(self, warm_up=100, **kwargs):
        super().__init__(**kwargs)
        self.warm_up = warm_up
        self.momentum_fun = lambda x: min(self.momentum ** self.interval, (1 + x) / (self.warm_up + x))


@HOOKS.register()
class EMAHook(BaseEMAHook):
    """mmcv 1.x's ``EMAHook``: parameters only, ``m = min(momentum ** interval, (1 + iteration)
    / (warm_up + iteration))``, updated at iterations divisible by ``interval``."""

    offset = 0

    def __init__(self, momentum=0.0002, interval=1, warm_up=100, resume_from=None):
        super().__init__(momentum=momentum, interval=interval, skip_buffers=True, resume_from=resume_from)
        self.warm_up = warm_up
        self.momentum_fun = lambda x: min(self.momentum ** self.interval, (1 + x) / (self.warm_up + x))
