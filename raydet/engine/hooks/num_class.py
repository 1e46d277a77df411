"""mmdet's ``NumClassCheckHook``: the detector's classes must be the dataset's."""
from __future__ import annotations

from ...errors import ConfigError
from .base import HOOKS, Hook


def check_num_classes(model, dataset, logger=None) -> None:
    """The dataset's ``CLASSES`` must be a tuple of names (a bare string is the classic mistake:
    ``classes='person'`` gives 6 "classes"), and the detector's ``num_classes`` must equal their
    number; otherwise :class:`ConfigError`. A dataset without ``CLASSES`` (warned about), or a
    model with ``checks_classes=False`` (the ``RPN``: class-agnostic proposals, which mmdet's
    check skips), is let through."""
    classes = getattr(dataset, "CLASSES", None)
    name = type(dataset).__name__
    if classes is None:
        if logger is not None:
            logger.warning(f"NumClassCheckHook: {name} has no CLASSES; the number of classes is not checked")
        return
    if isinstance(classes, str):
        raise ConfigError(f"{name}.CLASSES is the string {classes!r}; give classes as a tuple, e.g. ({classes!r},)")
    model = model.module if hasattr(model, "module") else model
    num = getattr(model, "num_classes", None) if getattr(model, "checks_classes", True) else None
    if num is not None and num != len(classes):
        raise ConfigError(f"model num_classes={num} does not match the {len(classes)} CLASSES of {name} "
                          f"{tuple(classes)}: set the model's num_classes to {len(classes)} (or the dataset's classes)")


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
