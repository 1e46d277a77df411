"""Pretrained backbones and mmdet 2.x zoo checkpoints.

``checkpoint_path(spec)`` resolves mmdet's checkpoint names — ``torchvision://NAME``,
``open-mmlab://NAME`` (mmcv 1.x's model-zoo tables), an ``http(s)://`` URL
or a file path — to a file in torch hub's cache (``$TORCH_HOME/hub/checkpoints``, the file name
of the URL, as torchvision and mmcv name them). A missing file is downloaded unless
``RAYDET_OFFLINE=1`` or the network fails; then :class:`ConfigError` names the file to place.

:func:`from_mmdet` renames an mmdet zoo state dict (``backbone.*``, ``neck.lateral_convs``/
``fpn_convs``, ``rpn_head.rpn_conv/rpn_cls/rpn_reg``, ``roi_head.bbox_head.shared_fcs/fc_cls/
fc_reg``, ``roi_head.mask_head.*``, RetinaNet/FCOS ``bbox_head.*``) onto raydet's modules and
moves mmdet's background-last classes to torchvision's background-first; :func:`to_mmdet` is its
inverse. Anchor order per location is the same in both (ratio-major).
"""
from __future__ import annotations

import json
import logging
import os
import re

import torch

from ..errors import CheckpointError, ConfigError

logger = logging.getLogger("raydet")
ZOO_PREFIXES = ("backbone.", "neck.", "rpn_head.", "roi_head.", "bbox_head.")


def _hub_table(name: str) -> dict:
    import mmcv
    path = os.path.join(os.path.dirname(mmcv.__file__), "model_zoo", name)
    with open(path) as f:
        return json.load(f)


def checkpoint_url(spec: str) -> str | None:
    """The download URL of ``spec`` (``None`` for a file path)."""
    if spec.startswith("torchvision://"):
        name = spec[len("torchvision://"):]
        table = _hub_table("torchvision_0.12.json")
        if name not in table:
            raise ConfigError(f"unknown checkpoint {spec!r}; torchvision:// names: {', '.join(sorted(table))}")
        return table[name]
    if spec.startswith(("open-mmlab://", "openmmlab://")):
        name = spec.split("://", 1)[1]
        name = _hub_table("deprecated.json").get(name, name)
        table = _hub_table("open_mmlab.json")
        if name not in table:
            raise ConfigError(f"unknown checkpoint {spec!r}; open-mmlab:// names: {', '.join(sorted(table))}")
        return table[name]
    if spec.startswith(("http://", "https://")):
        return spec
    return None


def checkpoint_path(spec: str) -> str:
    """A local file for ``spec`` (see the module doc); raises :class:`ConfigError` naming the
    file when it is absent and cannot be downloaded."""
    url = checkpoint_url(spec)
    if url is None:
        path = os.path.expanduser(spec)
        if not os.path.isfile(path):
            raise ConfigError(f"checkpoint file not found: {path}")
        return path
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url.split("?")[0]))
    if os.path.isfile(path):
        return path
    if os.environ.get("RAYDET_OFFLINE") == "1":
        raise ConfigError(f"{spec} is not in the cache and RAYDET_OFFLINE=1: download {url} and place it at {path}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, path, progress=False)
    except Exception as exc:  # no network, proxy refusal, HTTP error: the remedy is the same
        raise ConfigError(f"could not download {spec} ({type(exc).__name__}: {str(exc)[:120]}); "
                          f"download {url} and place it at {path}") from None
    return path


def read_state_dict(path: str) -> dict:
    from ..engine.checkpoint import load_file, strip_prefix
    ckpt = load_file(path)
    state = ckpt.get("state_dict", ckpt.get("model", ckpt))
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} has no state_dict of tensors")
    return strip_prefix(state)


def load_pretrained(module: torch.nn.Module, spec: str, where: str, prefix: str | None = None) -> None:
    """mmcv's non-strict ``Pretrained`` init of ``module`` from ``spec``: keys are matched by
    name (after ``prefix``, e.g. ``'backbone.'``, is taken off), shape mismatches skipped, and
    missing/unexpected/mismatched keys logged."""
    path = checkpoint_path(spec)
    state = read_state_dict(path)
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not state:
            raise CheckpointError(f"{where}: checkpoint {path} has no keys starting with {prefix!r}")
    from ..engine.checkpoint import load_state_non_strict
    load_state_non_strict(module, state, f"load {where} from {spec} ({path})", logger)


# (mmdet pattern, raydet replacement) and the inverse; {n} groups are numbers
_RULES = [
    (r"backbone\.(.+)", r"detector.backbone.body.\1", r"detector\.backbone\.body\.(.+)", r"backbone.\1"),
    (r"neck\.lateral_convs\.(\d+)\.conv\.(.+)", r"detector.backbone.fpn.inner_blocks.\1.0.\2",
     r"detector\.backbone\.fpn\.inner_blocks\.(\d+)\.0\.(.+)", r"neck.lateral_convs.\1.conv.\2"),
    (r"neck\.lateral_convs\.(\d+)\.(?:bn|gn)\.(.+)", r"detector.backbone.fpn.inner_blocks.\1.1.\2",
     r"detector\.backbone\.fpn\.inner_blocks\.(\d+)\.1\.(.+)", r"neck.lateral_convs.\1.{norm}.\2"),
    (r"rpn_head\.rpn_conv\.(weight|bias)", r"detector.rpn.head.conv.0.0.\1",
     r"detector\.rpn\.head\.conv\.0\.0\.(.+)", r"rpn_head.rpn_conv.\1"),
    (r"rpn_head\.rpn_conv\.(\d+)\.conv\.(.+)", r"detector.rpn.head.conv.\1.0.\2",
     r"detector\.rpn\.head\.conv\.(\d+)\.0\.(.+)", r"rpn_head.rpn_conv.\1.conv.\2"),
    (r"rpn_head\.rpn_cls\.(.+)", r"detector.rpn.head.cls_logits.\1",
     r"detector\.rpn\.head\.cls_logits\.(.+)", r"rpn_head.rpn_cls.\1"),
    (r"rpn_head\.rpn_reg\.(.+)", r"detector.rpn.head.bbox_pred.\1",
     r"detector\.rpn\.head\.bbox_pred\.(.+)", r"rpn_head.rpn_reg.\1"),
    (r"roi_head\.bbox_head\.shared_fcs\.0\.(.+)", r"detector.roi_heads.box_head.fc6.\1",
     r"detector\.roi_heads\.box_head\.fc6\.(.+)", r"roi_head.bbox_head.shared_fcs.0.\1"),
    (r"roi_head\.bbox_head\.shared_fcs\.1\.(.+)", r"detector.roi_heads.box_head.fc7.\1",
     r"detector\.roi_heads\.box_head\.fc7\.(.+)", r"roi_head.bbox_head.shared_fcs.1.\1"),
    (r"roi_head\.bbox_head\.fc_cls\.(.+)", r"detector.roi_heads.box_predictor.cls_score.\1",
     r"detector\.roi_heads\.box_predictor\.cls_score\.(.+)", r"roi_head.bbox_head.fc_cls.\1"),
    (r"roi_head\.bbox_head\.fc_reg\.(.+)", r"detector.roi_heads.box_predictor.bbox_pred.\1",
     r"detector\.roi_heads\.box_predictor\.bbox_pred\.(.+)", r"roi_head.bbox_head.fc_reg.\1"),
    (r"roi_head\.mask_head\.convs\.(\d+)\.conv\.(.+)", r"detector.roi_heads.mask_head.\1.0.\2",
     r"detector\.roi_heads\.mask_head\.(\d+)\.0\.(.+)", r"roi_head.mask_head.convs.\1.conv.\2"),
    (r"roi_head\.mask_head\.upsample\.(.+)", r"detector.roi_heads.mask_predictor.conv5_mask.\1",
     r"detector\.roi_heads\.mask_predictor\.conv5_mask\.(.+)", r"roi_head.mask_head.upsample.\1"),
    (r"roi_head\.mask_head\.conv_logits\.(.+)", r"detector.roi_heads.mask_predictor.mask_fcn_logits.\1",
     r"detector\.roi_heads\.mask_predictor\.mask_fcn_logits\.(.+)", r"roi_head.mask_head.conv_logits.\1"),
    (r"bbox_head\.(cls|reg)_convs\.(\d+)\.conv\.(.+)", r"detector.head.{retina_\1}.conv.\2.0.\3",
     r"detector\.head\.(classification|regression)_head\.conv\.(\d+)\.0\.(.+)", r"bbox_head.{\1}_convs.\2.conv.\3"),
    (r"bbox_head\.retina_cls\.(.+)", r"detector.head.classification_head.cls_logits.\1",
     r"detector\.head\.classification_head\.cls_logits\.(.+)", r"bbox_head.retina_cls.\1"),
    (r"bbox_head\.retina_reg\.(.+)", r"detector.head.regression_head.bbox_reg.\1",
     r"detector\.head\.regression_head\.bbox_reg\.(.+)", r"bbox_head.retina_reg.\1"),
    (r"bbox_head\.(cls|reg)_convs\.(\d+)\.(?:gn|bn)\.(.+)", r"detector.head.\1_convs.\2.1.\3",
     r"detector\.head\.(cls|reg)_convs\.(\d+)\.1\.(.+)", r"bbox_head.\1_convs.\2.{norm}.\3"),
    (r"bbox_head\.(cls|reg)_convs\.(\d+)\.conv\.(.+)", r"detector.head.\1_convs.\2.0.\3",
     r"detector\.head\.(cls|reg)_convs\.(\d+)\.0\.(.+)", r"bbox_head.\1_convs.\2.conv.\3"),
    (r"bbox_head\.(conv_cls|conv_reg|conv_centerness|scales)\.(.+)", r"detector.head.\1.\2",
     r"detector\.head\.(conv_cls|conv_reg|conv_centerness|scales)\.(.+)", r"bbox_head.\1.\2"),
]
_TOWER = {"cls": "classification_head", "reg": "regression_head", "classification": "cls", "regression": "reg"}


class ZooNames:
    """Name and tensor conversion between an mmdet 2.x checkpoint and one raydet :class:`Detector`."""

    def __init__(self, model: torch.nn.Module):
        from .fcos import FCOSHead
        from .necks import FPN
        det = model.detector
        if type(det).__name__ == "SSD":
            raise CheckpointError("mmdet SSD checkpoints are not converted (their heads' class layout differs "
                                  "per anchor); train SSD from ImageNet or torchvision weights")
        self.fcos = isinstance(getattr(det, "head", None), FCOSHead)
        fpn = det.backbone.fpn
        self.levels = len(fpn.layer_blocks) if isinstance(fpn, FPN) else 0
        norm = lambda m: "gn" if any(isinstance(x, torch.nn.GroupNorm) for x in m.modules()) else "bn"
        self.norms = dict(backbone=norm(det.backbone.body), neck=norm(fpn),
                          head=norm(det.head) if hasattr(det, "head") else "gn")
        self.two_stage = hasattr(det, "roi_heads")

    def raydet_name(self, name: str) -> str | None:
        m = re.fullmatch(r"neck\.fpn_convs\.(\d+)\.(conv|bn|gn)\.(.+)", name)
        if m:
            i, part, rest = int(m.group(1)), "0" if m.group(2) == "conv" else "1", m.group(3)
            where = f"layer_blocks.{i}" if i < self.levels else f"extra_blocks.convs.{i - self.levels}"
            return f"detector.backbone.fpn.{where}.{part}.{rest}"
        for src, dst, *_ in _RULES:
            if self.fcos and src.startswith(r"bbox_head\.(cls|reg)_convs\.(\d+)\.conv") and "retina" in dst:
                continue
            m = re.fullmatch(src, name)
            if m:
                out = m.expand(dst.replace("{retina_\\1}", _TOWER.get(m.group(1), "")))
                if src.startswith(r"backbone"):
                    out = re.sub(r"(^|\.)gn(\d)", r"\1bn\2", out)
                return out
        return None

    def mmdet_name(self, name: str) -> str | None:
        m = re.fullmatch(r"detector\.backbone\.fpn\.(layer_blocks|extra_blocks\.convs)\.(\d+)\.([01])\.(.+)", name)
        if m:
            i = int(m.group(2)) + (self.levels if m.group(1) != "layer_blocks" else 0)
            part = "conv" if m.group(3) == "0" else self.norms["neck"]
            return f"neck.fpn_convs.{i}.{part}.{m.group(4)}"
        for _, _, src, dst in _RULES:
            m = re.fullmatch(src, name)
            if m:
                out = m.expand(dst.replace("{\\1}", _TOWER.get(m.group(1), "")).replace("{norm}", "NORM"))
                kind = "neck" if out.startswith("neck") else "head"
                out = out.replace("NORM", self.norms[kind])
                if out.startswith("backbone") and self.norms["backbone"] == "gn":
                    out = re.sub(r"(^|\.)bn(\d)", r"\1gn\2", out)
                return out
        return None

    @staticmethod
    def to_raydet_tensor(name: str, t: torch.Tensor) -> torch.Tensor:
        if name.startswith("detector.roi_heads.box_predictor.cls_score."):
            return torch.cat([t[-1:], t[:-1]])  # background last -> first
        if name.startswith("detector.roi_heads.box_predictor.bbox_pred.") and len(t) % 4 == 0 and len(t) > 4:
            return torch.cat([t.new_zeros((4, *t.shape[1:])), t])  # no regression for the background
        if name.startswith("detector.roi_heads.mask_predictor.mask_fcn_logits."):
            return torch.cat([t.new_zeros((1, *t.shape[1:])), t])
        return t

    @staticmethod
    def to_mmdet_tensor(name: str, t: torch.Tensor) -> torch.Tensor:
        if name.startswith("detector.roi_heads.box_predictor.cls_score."):
            return torch.cat([t[1:], t[:1]])
        if name.startswith("detector.roi_heads.box_predictor.bbox_pred.") and len(t) > 4:
            return t[4:]
        if name.startswith("detector.roi_heads.mask_predictor.mask_fcn_logits."):
            return t[1:]
        return t


CLASS_LAYERS = ("box_predictor.cls_score.", "box_predictor.bbox_pred.", "mask_predictor.mask_fcn_logits.",
                "classification_head.cls_logits.", "head.conv_cls.")


def to_mmdet(model: torch.nn.Module) -> dict:
    """``model``'s weights under mmdet 2.x's names and class layout (a zoo-style state dict)."""
    names = ZooNames(model)
    out = {}
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        name = names.mmdet_name(k)
        if name is None:
            raise CheckpointError(f"no mmdet name for raydet parameter {k}")
        out[name] = names.to_mmdet_tensor(k, v)
    return out


def from_mmdet(model: torch.nn.Module, state: dict, source: str) -> dict:
    """mmdet 2.x zoo ``state`` as a state dict for ``model``. Raises :class:`CheckpointError`
    listing the keys that do not map or the model parameters left uncovered; class layers whose
    shapes differ (another ``num_classes``) are left to their initialisation and reported."""
    names = ZooNames(model)
    own = model.state_dict()
    out, unmatched, reinit = {}, [], []
    for k, v in state.items():
        name = names.raydet_name(k)
        if name is None or name not in own:
            unmatched.append(k)
            continue
        v = names.to_raydet_tensor(name, v)
        if v.shape != own[name].shape:
            if any(c in name for c in CLASS_LAYERS):
                reinit.append(f"{k} {tuple(v.shape)} -> {tuple(own[name].shape)}")
                continue
            unmatched.append(f"{k} (shape {tuple(v.shape)}, model {tuple(own[name].shape)})")
            continue
        out[name] = v
    missing = [k for k in own if k not in out and not k.endswith("num_batches_tracked")
               and not any(c in k for c in CLASS_LAYERS)]
    if unmatched or missing:
        parts = [f"checkpoint {source} does not match the model:"]
        if unmatched:
            parts.append(f"  {len(unmatched)} checkpoint keys without a counterpart: {', '.join(unmatched[:20])}")
        if missing:
            parts.append(f"  {len(missing)} model parameters not in the checkpoint: {', '.join(missing[:20])}")
        raise CheckpointError("\n".join(parts))
    if reinit:
        logger.info(f"{source}: class layers re-initialised (num_classes differs): {'; '.join(reinit)}")
    return out


TORCHVISION_PREFIXES = ("backbone.body.", "backbone.fpn.", "rpn.", "roi_heads.", "head.")


def is_mmdet_state(state: dict) -> bool:
    """mmdet's names (``backbone.conv1``, ``neck.``...), not raydet's (``detector.``) or
    torchvision's (``backbone.body.``, ``rpn.``...)."""
    return (any(k.startswith(ZOO_PREFIXES) for k in state)
            and not any(k.startswith(("detector.",) + TORCHVISION_PREFIXES) for k in state))
