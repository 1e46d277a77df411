"""mmdet's ``YOLOXModeSwitchHook``, exact on resume."""
from __future__ import annotations

from mmdet.core.hook import YOLOXModeSwitchHook as MMDetYOLOXModeSwitchHook

from .base import HOOKS


class _AtEpoch:
    """``runner`` as a hook sees it at epoch ``epoch`` (0-based)."""

    def __init__(self, runner, epoch: int):
        self._runner, self.epoch = runner, epoch

    def __getattr__(self, name):
        return getattr(self._runner, name)


@HOOKS.register()
class YOLOXModeSwitchHook(MMDetYOLOXModeSwitchHook):
    """mmdet's hook (for the last ``num_last_epochs`` epochs: the dataset's Mosaic and MixUp off,
    YOLOX's L1 loss on), which switches only in the epoch where exactly ``num_last_epochs``
    remain: a run resumed after that point, in a new process, would train with Mosaic, MixUp and
    without the L1 loss again (mmdet's own resume does). Here the first epoch this process runs
    at or after that point switches, through mmdet's own code."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._switched = False

    def before_train_epoch(self, runner):
        switch = runner.max_epochs - self.num_last_epochs - 1  # the (0-based) epoch mmdet's switches at
        if runner.epoch > switch and not self._switched:  # resumed past it
            super().before_train_epoch(_AtEpoch(runner, switch))
        else:
            super().before_train_epoch(runner)
        self._switched = self._switched or runner.epoch >= switch
