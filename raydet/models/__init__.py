"""torchvision detectors behind mmdet's model contract. Imports no ray.

Register your own model with :func:`register_model`; a factory takes the ``model`` config's
keys (minus ``type``) as keyword arguments and returns an ``nn.Module`` honouring the contract in
:mod:`raydet.models.detectors`.
"""
import logging

from .backbones import BACKBONES, GNConvNet
from .detectors import MODELS, Detector, PassThroughTransform


def register_model(name: str):
    """Decorator: ``@register_model('MyDet') def my_det(num_classes, ...): ...``."""
    return MODELS.register(name)


def build_detector(cfg: dict, logger: logging.Logger | None = None):
    """Build ``cfg['type']``; ``init_cfg=dict(type='Pretrained', checkpoint=PATH)`` then loads
    local weights non-strictly, logging missing and unexpected keys."""
    model = MODELS.build(dict(cfg), "model")
    init_cfg = cfg.get("init_cfg")
    if init_cfg:
        from ..errors import ConfigError
        if init_cfg.get("type") != "Pretrained" or "checkpoint" not in init_cfg:
            raise ConfigError("model.init_cfg must be dict(type='Pretrained', checkpoint=PATH)")
        from ..engine.checkpoint import load_weights
        load_weights(model, init_cfg["checkpoint"], logger=logger)
    return model


__all__ = ["MODELS", "BACKBONES", "Detector", "GNConvNet", "PassThroughTransform",
           "build_detector", "register_model"]
