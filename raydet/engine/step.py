"""The runner's step: the detector's own ``train_step``, through DDP."""
from __future__ import annotations

from ..data.loader import batch_to_device


def train_step(model, data: dict, train_mode: bool) -> dict:
    """The runner's step: the detector's own ``train_step`` (``val_step`` outside training: mmdet's
    forward and its ``_parse_losses``, log vars averaged over ranks), called through ``model``, a
    :class:`~raydet.engine.dist.StepModule` or the DistributedDataParallel around one, so that
    DDP synchronises the gradients. Returns ``dict(loss, log_vars, num_samples)``; every rank
    must call it (the log vars' all_reduce)."""
    device = next(model.parameters()).device
    data = batch_to_device(data, device)
    return model(data, None, step="train" if train_mode else "val")


def _register_step_module() -> None:
    """mmcv's ``is_module_wrapper`` (which mmdet's hooks use to reach the detector) knows raydet's
    :class:`StepModule` as a wrapper, as it knows DDP."""
    from mmcv.parallel import MODULE_WRAPPERS

    from .dist import StepModule
    if "StepModule" not in MODULE_WRAPPERS.module_dict:
        MODULE_WRAPPERS.register_module(module=StepModule)


_register_step_module()
