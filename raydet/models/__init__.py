"""mmdet 2.x model configs translated onto torchvision's detectors. Imports no ray.

``build_detector(cfg)`` reads an mmdet model dict — ``FasterRCNN``, ``MaskRCNN``, ``RPN``,
``RetinaNet``, ``FCOS``, ``SingleStageDetector`` (SSD) — with mmdet's keys and defaults; each
key is mapped onto the torchvision module (``docs/mmdet_compat.md``) or rejected by name. Register
your own model with :func:`register_model`; its factory takes the ``model`` config's keys (minus
``type``) as keyword arguments and returns an ``nn.Module`` honouring the contract of
:class:`raydet.models.detectors.Detector`.
"""
from __future__ import annotations

import logging

import torch

from ..errors import ConfigError
from ..registry import Registry
from .backbones import BACKBONES, GNConvNet, build_backbone
from .cfg import Keys
from .detectors import Detector, PassThroughTransform
from .necks import build_neck

MODELS = Registry("model")
logger = logging.getLogger("raydet")


def register_model(name: str):
    """Decorator: ``@register_model('MyDet') def my_det(num_classes, ...): ...``."""
    return MODELS.register(name)


def _backbone_and_neck(k: Keys):
    backbone_cfg = dict(k("backbone"))
    # mmdet < 2.12: model.pretrained (or backbone.pretrained) is the backbone's checkpoint
    for where, pretrained in (("model.pretrained", k("pretrained", None)),
                              ("model.backbone.pretrained", backbone_cfg.pop("pretrained", None))):
        if pretrained is not None:
            if backbone_cfg.get("init_cfg") is not None:
                raise ConfigError(f"{where} and model.backbone.init_cfg are both set; keep init_cfg")
            backbone_cfg["init_cfg"] = dict(type="Pretrained", checkpoint=pretrained)
    body = build_backbone(backbone_cfg)
    return build_neck(k("neck"), body), backbone_cfg.get("init_cfg")


def _translate(k: Keys, family: str) -> Detector:
    from .fcos import build_fcos
    from .retinanet import build_retinanet
    from .ssd import build_ssd
    from .two_stage import build_two_stage
    model_init = k("init_cfg", None)
    if model_init is not None:
        if not isinstance(model_init, dict) or model_init.get("type") != "Pretrained":
            raise ConfigError(f"model.init_cfg={model_init!r}: a detector's init_cfg must be "
                              "dict(type='Pretrained', checkpoint=...); initialise parts through their own init_cfg")
        init_keys = Keys(model_init, "model.init_cfg", "init_cfg")
        init_keys("checkpoint", kind=str), init_keys("map_location", None)
        init_keys.only("prefix", None, "the whole detector is loaded; a prefix belongs to a backbone's init_cfg")
        init_keys.done()
    body, init = _backbone_and_neck(k)
    if family in ("FasterRCNN", "MaskRCNN", "RPN"):
        det, num_classes, mask_thr, roi = build_two_stage(k, body, with_roi=family != "RPN")
        with_mask = family != "RPN" and roi.has_mask()
        if family == "MaskRCNN" and not with_mask:
            raise ConfigError("model.roi_head: MaskRCNN needs mask_roi_extractor and mask_head")
        model = Detector(det, num_classes, 1, with_mask, roi.nms_thresh if family != "RPN" else 0.7,
                         roi.detections_per_img if family != "RPN" else 1000, mask_thr)
        model.checks_classes = family != "RPN"  # one class-agnostic "proposal" class
    else:
        kind = (k.cfg.get("bbox_head") or {}).get("type")
        build = {"RetinaHead": build_retinanet, "FCOSHead": build_fcos, "SSDHead": build_ssd}.get(kind)
        if build is None or (family != "SingleStageDetector"
                             and kind != {"RetinaNet": "RetinaHead", "FCOS": "FCOSHead"}[family]):
            raise ConfigError(f"model.bbox_head.type={kind!r} is not supported for model type {family}; "
                              "raydet builds RetinaNet/RetinaHead, FCOS/FCOSHead, SingleStageDetector/SSDHead")
        det, num_classes = build(k, body)
        model = Detector(det, num_classes, 1 if kind == "SSDHead" else 0, False, det.nms_thresh,
                         det.detections_per_img)
    k.done()
    if init is not None and not _on_meta(model):
        from .weights import load_pretrained
        for entry in init if isinstance(init, (list, tuple)) else [init]:
            if entry.get("type") == "Pretrained":
                load_pretrained(model.detector.backbone.body, entry["checkpoint"], "model.backbone",
                                prefix=entry.get("prefix"))
    if model_init is not None and not _on_meta(model):
        from ..engine.checkpoint import load_weights
        from .weights import checkpoint_path
        load_weights(model, checkpoint_path(model_init["checkpoint"]), logger)
    return model


def _on_meta(model: torch.nn.Module) -> bool:
    return any(p.is_meta for p in model.parameters())


def _family(name: str):
    def factory(**cfg):
        return _translate(Keys(dict(cfg, type=name), "model"), name)
    factory.__name__ = name
    return factory


for _name in ("FasterRCNN", "MaskRCNN", "RPN", "RetinaNet", "FCOS", "SingleStageDetector"):
    MODELS.register(_name, _family(_name))


def build_detector(cfg: dict, logger: logging.Logger | None = None, train_cfg=None, test_cfg=None):
    """Build ``cfg['type']`` (mmdet's ``build_detector``; the older top-level ``train_cfg``/
    ``test_cfg`` are merged into the model dict). Pretrained backbone weights are loaded
    non-strictly with a report."""
    cfg = dict(cfg)
    for key, value in (("train_cfg", train_cfg), ("test_cfg", test_cfg)):
        if value is not None:
            if cfg.get(key) is not None:
                raise ConfigError(f"{key} is set both at the top level and in model; keep model.{key}")
            cfg[key] = value
    return MODELS.build(cfg, "model")


def validate_model(cfg: dict, train_cfg=None, test_cfg=None) -> None:
    """Translate ``cfg`` on the meta device: every key is checked (ConfigError otherwise) without
    allocating or loading weights."""
    with torch.device("meta"):
        build_detector(cfg, train_cfg=train_cfg, test_cfg=test_cfg)


__all__ = ["MODELS", "BACKBONES", "Detector", "GNConvNet", "PassThroughTransform", "build_detector",
           "register_model", "validate_model"]
