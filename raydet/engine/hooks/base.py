"""Hook base class, mmcv's priorities and the custom-hook registry."""
from __future__ import annotations

from ...registry import Registry

def _mmcv_hooks() -> dict:
    """mmcv 1.x's hook registry, with mmdet's hooks registered into it: ``custom_hooks`` of mmcv
    and mmdet ``Hook`` types raydet does not implement itself are theirs."""
    import mmdet.core  # noqa: F401  (registers mmdet's hooks)
    from mmcv.runner import HOOKS as MMCV_HOOKS
    return MMCV_HOOKS.module_dict


HOOKS = Registry("hook", fallback=_mmcv_hooks)

PRIORITIES = {"HIGHEST": 0, "VERY_HIGH": 10, "HIGH": 30, "ABOVE_NORMAL": 40, "NORMAL": 50,
              "BELOW_NORMAL": 60, "LOW": 70, "VERY_LOW": 90, "LOWEST": 100}


def get_priority(priority) -> int:
    if isinstance(priority, str):
        return PRIORITIES[priority.upper()]
    if not 0 <= int(priority) <= 100:
        raise ValueError(f"priority must be in [0, 100], got {priority}")
    return int(priority)


class Hook:
    """Extension point of :class:`raydet.engine.Runner`. The runner's loop *is*::

        before_run
        for each (phase, epochs) of the workflow, until max_epochs:
            before_{phase}_epoch
            for each batch:  before_{phase}_iter;  forward (+ loss);  after_{phase}_iter
            after_{phase}_epoch
        after_run

    In ``after_train_iter`` the batch's outputs are in ``runner.outputs`` (``loss``,
    ``log_vars``, ``num_samples``); the optimizer step itself is a hook
    (:class:`OptimizerHook`). Hooks run in ascending ``priority`` (mmcv's numbers; equal
    priorities in registration order). A hook with state to survive a resume implements
    ``state_dict``/``load_state_dict``; the runner's checkpoint collects them by class name.
    """

    priority = PRIORITIES["NORMAL"]

    def before_run(self, runner): pass
    def after_run(self, runner): pass
    def before_train_epoch(self, runner): pass
    def after_train_epoch(self, runner): pass
    def before_train_iter(self, runner): pass
    def after_train_iter(self, runner): pass
    def before_val_epoch(self, runner): pass
    def after_val_epoch(self, runner): pass
    def before_val_iter(self, runner): pass
    def after_val_iter(self, runner): pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise KeyError(f"{type(self).__name__} has no state but the checkpoint holds {sorted(state)}")

    @staticmethod
    def every_n_epochs(runner, n: int) -> bool:
        return n > 0 and (runner.epoch + 1) % n == 0

    @staticmethod
    def every_n_iters(runner, n: int) -> bool:
        return n > 0 and (runner.iter + 1) % n == 0

    @staticmethod
    def every_n_inner_iters(runner, n: int) -> bool:
        return n > 0 and (runner.inner_iter + 1) % n == 0

    @staticmethod
    def end_of_epoch(runner) -> bool:
        return runner.inner_iter + 1 == runner.iters_per_epoch

    @staticmethod
    def is_last_epoch(runner) -> bool:
        return runner.epoch + 1 == runner.max_epochs

    @staticmethod
    def is_last_iter(runner) -> bool:
        return runner.iter + 1 == runner.max_iters
