"""LR and momentum updaters with mmcv 1.x's formulas (``mmcv/runner/hooks/{lr,momentum}_updater.py``).

Regular values come from the policy; during warm-up (per iteration, also when ``by_epoch``) the
LR is ``linear``: ``regular * (1 - (1 - i / W) * (1 - ratio))``, ``constant``: ``regular * ratio``,
``exp``: ``regular * ratio ** (1 - i / W)`` (momentum divides by the same factor).
"""
from __future__ import annotations

import inspect

import math

from ...registry import Registry
from .base import PRIORITIES, Hook

LR_POLICIES = Registry("lr_config policy", key="policy")
MOMENTUM_POLICIES = Registry("momentum_config policy", key="policy")


def annealing_cos(start: float, end: float, factor: float, weight: float = 1.0) -> float:
    cos_out = math.cos(math.pi * factor) + 1
    return end + 0.5 * weight * (start - end) * cos_out


def annealing_linear(start: float, end: float, factor: float) -> float:
    return start + (end - start) * factor


_ANNEAL = {"cos": annealing_cos, "linear": annealing_linear}


class _ScheduleHook(Hook):
    """Shared warm-up and per-epoch / per-iteration update logic of LR and momentum hooks."""

    def __init__(self, by_epoch=True, warmup=None, warmup_iters=0, warmup_ratio=0.1, warmup_by_epoch=False):
        if warmup is not None:
            if warmup not in ("constant", "linear", "exp"):
                raise ValueError(f'"{warmup}" is not a supported warmup type; use constant, linear or exp')
            if warmup_iters <= 0:
                raise ValueError('"warmup_iters" must be a positive integer')
            if not 0 < warmup_ratio <= 1.0:
                raise ValueError('"warmup_ratio" must be in range (0,1]')
        self.by_epoch, self.warmup, self.warmup_iters = by_epoch, warmup, warmup_iters
        self.warmup_ratio, self.warmup_by_epoch = warmup_ratio, warmup_by_epoch
        self.warmup_epochs = warmup_iters if warmup_by_epoch else None
        self.base = []
        self.regular = []

    # subclasses: which param-group field, how to compute values
    def _get(self, group) -> float: raise NotImplementedError
    def _put(self, group, value: float) -> None: raise NotImplementedError
    def _initial_key(self) -> str: raise NotImplementedError
    def get_value(self, runner, base: float) -> float: raise NotImplementedError
    def _warmup_factor(self, cur_iter: int) -> float: raise NotImplementedError

    def before_run(self, runner):
        key = self._initial_key()
        for group in runner.optimizer.param_groups:
            group.setdefault(key, self._get(group))
        self.base = [group[key] for group in runner.optimizer.param_groups]

    def _set(self, runner, values):
        for group, v in zip(runner.optimizer.param_groups, values):
            self._put(group, v)

    def _regular(self, runner):
        return [self.get_value(runner, b) for b in self.base]

    def before_train_epoch(self, runner):
        if self.warmup_epochs is not None:
            self.warmup_iters = self.warmup_epochs * runner.iters_per_epoch
        if not self.by_epoch:
            return
        self.regular = self._regular(runner)
        self._set(runner, self.regular)

    def before_train_iter(self, runner):
        cur = runner.iter
        if not self.by_epoch:
            self.regular = self._regular(runner)
            if self.warmup is None or cur >= self.warmup_iters:
                self._set(runner, self.regular)
            else:
                self._set(runner, self._warmup(cur, self.regular))
        else:
            if self.warmup is None or cur > self.warmup_iters:
                return
            if cur == self.warmup_iters:
                self._set(runner, self.regular)
            else:
                self._set(runner, self._warmup(cur, self.regular))


class LrUpdaterHook(_ScheduleHook):
    priority = PRIORITIES["VERY_HIGH"]

    def _get(self, group): return group["lr"]
    def _put(self, group, value): group["lr"] = value
    def _initial_key(self): return "initial_lr"

    def _warmup(self, cur, regular):
        if self.warmup == "constant":
            return [v * self.warmup_ratio for v in regular]
        if self.warmup == "linear":
            k = (1 - cur / self.warmup_iters) * (1 - self.warmup_ratio)
            return [v * (1 - k) for v in regular]
        k = self.warmup_ratio ** (1 - cur / self.warmup_iters)
        return [v * k for v in regular]


class MomentumUpdaterHook(_ScheduleHook):
    priority = PRIORITIES["HIGH"]

    def __init__(self, by_epoch=True, warmup=None, warmup_iters=0, warmup_ratio=0.9, warmup_by_epoch=False):
        super().__init__(by_epoch, warmup, warmup_iters, warmup_ratio, warmup_by_epoch)  # mmcv's 0.9 here

    def _get(self, group): return group["momentum"] if "momentum" in group else group["betas"][0]
    def _initial_key(self): return "initial_momentum"

    def _put(self, group, value):
        if "momentum" in group:
            group["momentum"] = value
        elif "betas" in group:
            group["betas"] = (value, group["betas"][1])

    def _warmup(self, cur, regular):
        if self.warmup == "constant":
            return [v / self.warmup_ratio for v in regular]
        if self.warmup == "linear":
            k = (1 - cur / self.warmup_iters) * (1 - self.warmup_ratio)
            return [v / (1 - k) for v in regular]
        k = self.warmup_ratio ** (1 - cur / self.warmup_iters)
        return [v / k for v in regular]


def _progress(hook, runner):
    return (runner.epoch, runner.max_epochs) if hook.by_epoch else (runner.iter, runner.max_iters)


@LR_POLICIES.register("Fixed")
class FixedLrUpdaterHook(LrUpdaterHook):
    def get_value(self, runner, base):
        return base


class _Step:
    """``value = base * gamma ** (number of milestones <= progress)``, at least ``minimum``;
    ``step`` an int means every ``step`` epochs/iterations. A subclass names ``minimum`` as its
    config key (``min_lr``, ``min_momentum``)."""

    def __init__(self, step, gamma, minimum, /, **kwargs):
        _check_step(step)
        self.step, self.gamma, self.minimum = step, gamma, minimum
        super().__init__(**kwargs)

    def get_value(self, runner, base):
        value = base * self.gamma ** _step_exponent(self.step, _progress(self, runner)[0])
        return max(value, self.minimum) if self.minimum is not None else value


@LR_POLICIES.register("Step")
class StepLrUpdaterHook(_Step, LrUpdaterHook):
    """mmcv's ``StepLrUpdaterHook`` (see :class:`_Step`)."""

    def __init__(self, step, gamma=0.1, min_lr=None, **kwargs):
        super().__init__(step, gamma, min_lr, **kwargs)


def _check_step(step):
    if isinstance(step, list):
        if not all(isinstance(s, int) and s > 0 for s in step):
            raise ValueError('"step" must be a list of positive integers')
    elif not (isinstance(step, int) and step > 0):
        raise ValueError('"step" must be a positive integer or a list of them')


def _step_exponent(step, progress: int) -> int:
    """How many decays ``step`` (every ``step`` units, or a list of milestones) has made by ``progress``."""
    return progress // step if isinstance(step, int) else sum(1 for s in step if progress >= s)


def _target(base, absolute, ratio):
    """The end value of an annealing: ``absolute``, or ``base * ratio``; exactly one is given."""
    return base * ratio if ratio is not None else absolute


def _one_of(absolute, ratio, name: str, policy: str):
    if (absolute is None) == (ratio is None):
        raise ValueError(f"{policy} needs exactly one of min_{name} and min_{name}_ratio")


@LR_POLICIES.register("Exp")
class ExpLrUpdaterHook(LrUpdaterHook):
    """``lr = base * gamma ** progress`` (epochs or iterations)."""

    def __init__(self, gamma, **kwargs):
        self.gamma = gamma
        super().__init__(**kwargs)

    def get_value(self, runner, base):
        return base * self.gamma ** _progress(self, runner)[0]


@LR_POLICIES.register("Poly")
class PolyLrUpdaterHook(LrUpdaterHook):
    """``lr = (base - min_lr) * (1 - progress / total) ** power + min_lr``."""

    def __init__(self, power=1.0, min_lr=0.0, **kwargs):
        self.power, self.min_lr = power, min_lr
        super().__init__(**kwargs)

    def get_value(self, runner, base):
        progress, total = _progress(self, runner)
        return (base - self.min_lr) * (1 - progress / total) ** self.power + self.min_lr


@LR_POLICIES.register("Inv")
class InvLrUpdaterHook(LrUpdaterHook):
    """``lr = base * (1 + gamma * progress) ** -power``."""

    def __init__(self, gamma, power=1.0, **kwargs):
        self.gamma, self.power = gamma, power
        super().__init__(**kwargs)

    def get_value(self, runner, base):
        return base * (1 + self.gamma * _progress(self, runner)[0]) ** (-self.power)


class _Annealing:
    """From ``base`` to ``min_<kind>`` (or ``base * min_<kind>_ratio``; exactly one is given) over
    the run, along ``anneal`` (:func:`annealing_linear` or :func:`annealing_cos`). A subclass sets
    ``policy`` and ``kind`` (``'lr'`` or ``'momentum'``) and gets an ``__init__`` taking those two
    keyword arguments by their names (the config's keys), the rest going to its base class."""

    kind, policy, anneal = "lr", "", staticmethod(annealing_linear)

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if "__init__" in cls.__dict__:  # its own (YOLOX's): the base's is called through it
            return
        names = (f"min_{cls.kind}", f"min_{cls.kind}_ratio")

        def __init__(self, **kwargs):
            minimum, ratio = kwargs.pop(names[0], None), kwargs.pop(names[1], None)
            _one_of(minimum, ratio, cls.kind, cls.policy)
            self.target = (minimum, ratio)
            super(cls, self).__init__(**kwargs)

        P = inspect.Parameter
        __init__.__signature__ = inspect.Signature(  # what the config check (accepted_kwargs) reads
            [P("self", P.POSITIONAL_OR_KEYWORD)] + [P(n, P.KEYWORD_ONLY, default=None) for n in names]
            + [P("kwargs", P.VAR_KEYWORD)])
        cls.__init__ = __init__

    def get_value(self, runner, base):
        progress, total = _progress(self, runner)
        return self.anneal(base, _target(base, *self.target), progress / total)


@LR_POLICIES.register("LinearAnnealing")
class LinearAnnealingLrUpdaterHook(_Annealing, LrUpdaterHook):
    """Linear from ``base`` to ``min_lr`` (or ``base * min_lr_ratio``) over the run."""

    policy = "LinearAnnealing"


@LR_POLICIES.register("FlatCosineAnnealing")
class FlatCosineAnnealingLrUpdaterHook(LrUpdaterHook):
    """``base`` until ``start_percent`` of the run (rounded to whole epochs/iterations), then
    cosine to ``min_lr`` (or ``base * min_lr_ratio``) over the rest."""

    def __init__(self, start_percent=0.75, min_lr=None, min_lr_ratio=None, **kwargs):
        _one_of(min_lr, min_lr_ratio, "lr", "FlatCosineAnnealing")
        if isinstance(start_percent, bool) or not isinstance(start_percent, float) or not 0 <= start_percent <= 1:
            raise ValueError(f"expected a float between 0 and 1 for start_percent, got {start_percent!r}")
        self.start_percent, self.min_lr, self.min_lr_ratio = start_percent, min_lr, min_lr_ratio
        super().__init__(**kwargs)

    def get_value(self, runner, base):
        progress, total = _progress(self, runner)
        start = round(total * self.start_percent)
        if progress < start:
            return base
        return annealing_cos(base, _target(base, self.min_lr, self.min_lr_ratio), (progress - start) / (total - start))


@LR_POLICIES.register("CosineRestart")
class CosineRestartLrUpdaterHook(LrUpdaterHook):
    """Cosine cycles of ``periods`` epochs/iterations, restarting at ``restart_weights[i]`` of
    the way from the target back to ``base``; the periods must cover the run."""

    def __init__(self, periods, restart_weights=(1,), min_lr=None, min_lr_ratio=None, **kwargs):
        _one_of(min_lr, min_lr_ratio, "lr", "CosineRestart")
        periods, restart_weights = list(periods), list(restart_weights)
        if len(periods) != len(restart_weights):
            raise ValueError("periods and restart_weights should have the same length")
        if not all(isinstance(p, int) and p > 0 for p in periods):
            raise ValueError(f"periods must be positive integers, got {periods}")
        self.periods, self.restart_weights = periods, restart_weights
        self.min_lr, self.min_lr_ratio = min_lr, min_lr_ratio
        self.cumulative = [sum(periods[:i + 1]) for i in range(len(periods))]
        super().__init__(**kwargs)

    def before_run(self, runner):
        super().before_run(runner)
        total = runner.max_epochs if self.by_epoch else runner.max_iters
        if self.cumulative[-1] < total:  # mmcv fails there mid-run; say so before the first step
            unit = "epochs" if self.by_epoch else "iterations"
            raise ValueError(f"CosineRestart periods {self.periods} cover {self.cumulative[-1]} {unit}, "
                             f"the run has {total}")

    def get_value(self, runner, base):
        progress = _progress(self, runner)[0]
        idx = next(i for i, end in enumerate(self.cumulative) if progress < end)
        restart = 0 if idx == 0 else self.cumulative[idx - 1]
        alpha = min((progress - restart) / self.periods[idx], 1)
        return annealing_cos(base, _target(base, self.min_lr, self.min_lr_ratio), alpha, self.restart_weights[idx])


@LR_POLICIES.register("CosineAnnealing")
class CosineAnnealingLrUpdaterHook(_Annealing, LrUpdaterHook):
    """Cosine from ``base`` to ``min_lr`` (or ``base * min_lr_ratio``); exactly one is given."""

    policy, anneal = "CosineAnnealing", staticmethod(annealing_cos)


@LR_POLICIES.register("YOLOX")
class YOLOXLrUpdaterHook(CosineAnnealingLrUpdaterHook):
    """mmdet's ``YOLOXLrUpdaterHook``: the ``exp`` warm-up is ``warmup_ratio * ((i + 1) /
    warmup_iters) ** 2`` times the regular LR, then a cosine from ``base`` to the target over the
    rest of the run but its last ``num_last_epochs`` epochs, where the target is held. The epoch
    length is the run's (``runner.iters_per_epoch``), so a resumed epoch counts as a whole one."""

    def __init__(self, num_last_epochs: int, **kwargs):
        self.num_last_epochs = num_last_epochs
        super().__init__(**kwargs)

    def _warmup(self, cur, regular):
        if self.warmup != "exp":
            return super()._warmup(cur, regular)
        k = self.warmup_ratio * ((cur + 1) / self.warmup_iters) ** 2
        return [v * k for v in regular]

    def get_value(self, runner, base):
        last = runner.iters_per_epoch * self.num_last_epochs
        progress, total = (runner.epoch, runner.max_epochs) if self.by_epoch else (runner.iter, runner.max_iters)
        progress += 1
        target = _target(base, *self.target)
        if progress >= total - last:
            return target
        return annealing_cos(base, target, (progress - self.warmup_iters) / (total - self.warmup_iters - last))


def _one_cycle_checks(kwargs: dict, pct_start, anneal_strategy, policy: str):
    """OneCycle's arguments checked (``ValueError``), ``kwargs['by_epoch']`` set to False (it
    updates per iteration); returns the anneal function of ``anneal_strategy``."""
    if kwargs.get("by_epoch", False):
        raise ValueError(f"{policy} updates per iteration; by_epoch must be False")
    kwargs["by_epoch"] = False
    if not 0 <= pct_start <= 1:
        raise ValueError(f"pct_start must be in [0, 1], got {pct_start}")
    if anneal_strategy not in _ANNEAL:
        raise ValueError(f"anneal_strategy must be 'cos' or 'linear', got {anneal_strategy}")
    return _ANNEAL[anneal_strategy]


@LR_POLICIES.register("OneCycle")
class OneCycleLrUpdaterHook(LrUpdaterHook):
    """Per iteration: from ``max_lr / div_factor`` up to ``max_lr`` over ``pct_start`` of
    ``total_steps`` (default ``runner.max_iters``), then down to ``initial / final_div_factor``."""

    def __init__(self, max_lr, total_steps=None, pct_start=0.3, anneal_strategy="cos", div_factor=25.0,
                 final_div_factor=1e4, three_phase=False, **kwargs):
        self.anneal = _one_cycle_checks(kwargs, pct_start, anneal_strategy, "OneCycle")
        self.max_lr, self.total_steps, self.pct_start = max_lr, total_steps, pct_start
        self.div_factor, self.final_div_factor, self.three_phase = div_factor, final_div_factor, three_phase
        super().__init__(**kwargs)

    def before_run(self, runner):
        total = self.total_steps or runner.max_iters
        if total < runner.max_iters:
            raise ValueError(f"OneCycle total_steps {total} < the run's {runner.max_iters} iterations")
        groups = runner.optimizer.param_groups
        max_lrs = self.max_lr if isinstance(self.max_lr, (list, tuple)) else [self.max_lr] * len(groups)
        self.base = [lr / self.div_factor for lr in max_lrs]
        for group, lr in zip(groups, self.base):
            group.setdefault("initial_lr", lr)
        p = self.pct_start
        if self.three_phase:
            self.phases = [[float(p * total) - 1, 1, self.div_factor],
                           [float(2 * p * total) - 2, self.div_factor, 1],
                           [total - 1, 1, 1 / self.final_div_factor]]
        else:
            self.phases = [[float(p * total) - 1, 1, self.div_factor],
                           [total - 1, self.div_factor, 1 / self.final_div_factor]]

    def get_value(self, runner, base):
        cur, start = runner.iter, 0
        for end, start_mult, end_mult in self.phases:
            if cur <= end:
                return self.anneal(base * start_mult, base * end_mult, (cur - start) / (end - start))
            start = end
        return base * self.phases[-1][2]


@MOMENTUM_POLICIES.register("CosineAnnealing")
class CosineAnnealingMomentumUpdaterHook(_Annealing, MomentumUpdaterHook):
    """Cosine from ``base`` to ``min_momentum`` (or ``base * min_momentum_ratio``); exactly one is given."""

    kind, policy, anneal = "momentum", "CosineAnnealing", staticmethod(annealing_cos)


class _Cyclic:
    """mmcv's cyclic schedule (per iteration): ``cyclic_times`` cycles, each from ``base`` to
    ``base * target_ratio[0]`` over ``step_ratio_up`` of the cycle, then to ``base *
    target_ratio[1]``; ``gamma`` shrinks the swing each cycle. A single ratio ``r`` means
    ``(r, r / 1e5)``."""

    def __init__(self, by_epoch=False, target_ratio=(10, 1e-4), cyclic_times=1, step_ratio_up=0.4,
                 anneal_strategy="cos", gamma=1.0, **kwargs):
        if by_epoch:
            raise ValueError('the cyclic policy updates per iteration: "by_epoch" must be False')
        if isinstance(target_ratio, (int, float)):
            target_ratio = (target_ratio, target_ratio / 1e5)
        target_ratio = tuple(target_ratio)
        if len(target_ratio) == 1:
            target_ratio = (target_ratio[0], target_ratio[0] / 1e5)
        if len(target_ratio) != 2:
            raise ValueError('"target_ratio" must be a number or a list/tuple of two numbers')
        if not 0 <= step_ratio_up < 1:
            raise ValueError('"step_ratio_up" must be in range [0,1)')
        if not 0 < gamma <= 1:
            raise ValueError('"gamma" must be in range (0, 1]')
        if anneal_strategy not in _ANNEAL:
            raise ValueError(f"anneal_strategy must be 'cos' or 'linear', got {anneal_strategy}")
        self.target_ratio, self.cyclic_times, self.step_ratio_up = target_ratio, cyclic_times, step_ratio_up
        self.gamma, self.anneal = gamma, _ANNEAL[anneal_strategy]
        super().__init__(by_epoch=False, **kwargs)

    def before_run(self, runner):
        super().before_run(runner)
        per_phase = runner.max_iters // self.cyclic_times
        up = int(self.step_ratio_up * per_phase)
        self.max_iter_per_phase = per_phase
        self.phases = [[0, up, 1, self.target_ratio[0]],
                       [up, per_phase, self.target_ratio[0], self.target_ratio[1]]]

    def get_value(self, runner, base):
        cur = runner.iter % self.max_iter_per_phase
        scale = self.gamma ** (runner.iter // self.max_iter_per_phase)
        for start, end, start_ratio, end_ratio in self.phases:
            if start <= cur < end:
                if start == 0:
                    end_ratio = 1 - scale * (1 - end_ratio)
                else:
                    start_ratio = 1 - scale * (1 - start_ratio)
                return self.anneal(base * start_ratio, base * end_ratio, (cur - start) / (end - start))
        return base


@LR_POLICIES.register("Cyclic")
class CyclicLrUpdaterHook(_Cyclic, LrUpdaterHook):
    """mmcv's ``CyclicLrUpdaterHook`` (default ``target_ratio=(10, 1e-4)``); its usual partner is
    ``momentum_config=dict(policy='cyclic')``."""


@MOMENTUM_POLICIES.register("Cyclic")
class CyclicMomentumUpdaterHook(_Cyclic, MomentumUpdaterHook):
    """mmcv's ``CyclicMomentumUpdaterHook`` (default ``target_ratio=(0.85 / 0.95, 1)``)."""

    def __init__(self, by_epoch=False, target_ratio=(0.85 / 0.95, 1), cyclic_times=1, step_ratio_up=0.4,
                 anneal_strategy="cos", gamma=1.0, **kwargs):
        super().__init__(by_epoch, target_ratio, cyclic_times, step_ratio_up, anneal_strategy, gamma, **kwargs)


@MOMENTUM_POLICIES.register("Step")
class StepMomentumUpdaterHook(_Step, MomentumUpdaterHook):
    """mmcv's ``StepMomentumUpdaterHook``: gamma 0.5 by default (see :class:`_Step`)."""

    def __init__(self, step, gamma=0.5, min_momentum=None, **kwargs):
        super().__init__(step, gamma, min_momentum, **kwargs)


@MOMENTUM_POLICIES.register("LinearAnnealing")
class LinearAnnealingMomentumUpdaterHook(_Annealing, MomentumUpdaterHook):
    """Linear from ``base`` to ``min_momentum`` (or ``base * min_momentum_ratio``) over the run."""

    kind, policy = "momentum", "LinearAnnealing"


@MOMENTUM_POLICIES.register("OneCycle")
class OneCycleMomentumUpdaterHook(MomentumUpdaterHook):
    """Partner of the OneCycle LR (per iteration): from ``max_momentum`` down to
    ``base_momentum`` while the LR rises (``pct_start`` of the run), then back up; with
    ``three_phase`` down, up, then flat. Values per param group (a number or a list)."""

    def __init__(self, base_momentum=0.85, max_momentum=0.95, pct_start=0.3, anneal_strategy="cos",
                 three_phase=False, **kwargs):
        self.anneal = _one_cycle_checks(kwargs, pct_start, anneal_strategy, "OneCycle momentum")
        self.base_momentum, self.max_momentum, self.pct_start = base_momentum, max_momentum, pct_start
        self.three_phase = three_phase
        super().__init__(**kwargs)

    def before_run(self, runner):
        groups = runner.optimizer.param_groups
        if not all("momentum" in g or "betas" in g for g in groups):
            raise ValueError(f"OneCycle momentum: {type(runner.optimizer).__name__} has no momentum or betas")
        per_group = lambda v: list(v) if isinstance(v, (list, tuple)) else [v] * len(groups)  # noqa: E731
        for group, low, high in zip(groups, per_group(self.base_momentum), per_group(self.max_momentum)):
            group.setdefault("base_momentum", low)  # a resumed optimizer keeps its own
            group.setdefault("max_momentum", high)
            self._put(group, group["max_momentum"])
        self.base = [g["base_momentum"] for g in groups]
        p, total = self.pct_start, runner.max_iters
        if self.three_phase:
            self.phases = [(float(p * total) - 1, "max_momentum", "base_momentum"),
                           (float(2 * p * total) - 2, "base_momentum", "max_momentum"),
                           (total - 1, "max_momentum", "max_momentum")]
        else:
            self.phases = [(float(p * total) - 1, "max_momentum", "base_momentum"),
                           (total - 1, "base_momentum", "max_momentum")]

    def _regular(self, runner):
        values, cur = [], runner.iter
        for group in runner.optimizer.param_groups:
            start = 0
            for i, (end, low_key, high_key) in enumerate(self.phases):
                if cur <= end or i == len(self.phases) - 1:
                    values.append(self.anneal(group[low_key], group[high_key], (cur - start) / (end - start)))
                    break
                start = end
        return values


def policy_name(policy: str) -> str:
    """mmcv's lookup: an all-lowercase policy is title-cased (``'step'`` -> ``Step``,
    ``'cyclic'`` -> ``Cyclic``); any other spelling is taken as it is (``CosineAnnealing``)."""
    return policy.title() if policy == policy.lower() else policy


def build_lr_hook(cfg: dict, table: Registry = LR_POLICIES, where: str = "lr_config") -> Hook:
    """``dict(policy='step', step=[8, 11], warmup='linear', ...)`` -> the policy's hook."""
    cfg = dict(cfg)
    policy = policy_name(cfg.pop("policy"))
    return table.build(dict(type=policy, **cfg), where)
