"""mmdet's ``NumClassCheckHook``: the detector's classes must be the dataset's."""
from __future__ import annotations

from ...errors import ConfigError
from .base import HOOKS, Hook
from ..dist import unwrap


def check_num_classes(model, dataset, logger=None) -> None:
    """The dataset's ``CLASSES`` must be a tuple of names (a bare string is the classic mistake:
    ``classes='person'`` gives 6 "classes"), and every part of the detector that has a
    ``num_classes`` must have their number (mmdet's rule: its RPN heads, ``VGG`` and the fused
    semantic head are skipped); otherwise :class:`ConfigError` naming the part. A dataset without
    ``CLASSES`` is warned about and let through."""
    classes = getattr(dataset, "CLASSES", None)
    name = type(dataset).__name__
    if classes is None:
        if logger is not None:
            logger.warning(f"NumClassCheckHook: {name} has no CLASSES; the number of classes is not checked")
        return
    if isinstance(classes, str):
        raise ConfigError(f"{name}.CLASSES is the string {classes!r}; give classes as a tuple, e.g. ({classes!r},)")
    from mmcv.cnn import VGG
    from mmdet.models.dense_heads import GARPNHead, RPNHead
    from mmdet.models.roi_heads.mask_heads import FusedSemanticHead
    for part, module in unwrap(model).named_modules():
        num = getattr(module, "num_classes", None)
        if num is None or isinstance(module, (RPNHead, VGG, FusedSemanticHead, GARPNHead)):
            continue
        if num != len(classes):
            raise ConfigError(f"model.{part or 'num_classes'} num_classes={num} does not match the {len(classes)} "
                              f"CLASSES of {name} {tuple(classes)}: set the model's num_classes to {len(classes)} "
                              "(or the dataset's classes)")


@HOOKS.register()
class NumClassCheckHook(Hook):
    """Before each training and validation epoch: :func:`check_num_classes` (raydet also checks
    the training set once before anything runs)."""

    def _check(self, runner):
        check_num_classes(runner.model, runner.data_loader.dataset, runner.logger)

    def before_train_epoch(self, runner):
        self._check(runner)

    def before_val_epoch(self, runner):
        self._check(runner)
