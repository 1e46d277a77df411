"""torchvision detectors behind mmdet 2.x's model contract.

``model(img, img_metas, return_loss=True, gt_bboxes=[...], gt_labels=[...], gt_masks=[...])``
returns a dict of scalar losses. ``model(img, img_metas, return_loss=False)`` returns, per image,
a list over classes of float32 ``[N, 5]`` arrays ``(x1, y1, x2, y2, score)`` in original image
pixels (for Mask R-CNN a tuple ``(bbox_result, segm_result)`` with ``segm_result[c]`` a list of
boolean ``HxW`` masks). raydet's pipeline owns resizing and normalisation, so the torchvision
model's ``GeneralizedRCNNTransform`` is replaced by a pass-through that only reports each image's
valid size (``img_shape``) inside the padded batch.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.models.detection.ssdlite import ssdlite320_mobilenet_v3_large
from torchvision.ops import MultiScaleRoIAlign, batched_nms

from ..errors import ConfigError
from ..registry import Registry, check_keys
from .backbones import build_backbone, feature_strides

MODELS = Registry("model")
TEST_CFG_KEYS = {"score_thr", "nms", "max_per_img", "nms_pre", "mask_thr_binary"}


class PassThroughTransform(nn.Module):
    """Stands in for ``GeneralizedRCNNTransform``: no resize, no normalisation.

    The wrapper sets ``image_sizes`` (the ``img_shape`` of each image) before each call."""

    def __init__(self):
        super().__init__()
        self.image_sizes: list[tuple[int, int]] = []

    def forward(self, images, targets=None):
        return ImageList(images, list(self.image_sizes)), targets

    def postprocess(self, result, image_shapes, original_image_sizes):
        return result


def _test_cfg(test_cfg: dict | None) -> dict:
    cfg = dict(score_thr=0.05, nms=dict(iou_threshold=0.5), max_per_img=100, nms_pre=1000,
               mask_thr_binary=0.5)
    cfg.update(test_cfg or {})
    check_keys(cfg.keys(), TEST_CFG_KEYS, "model.test_cfg")
    return cfg


class Detector(nn.Module):
    """Wraps a torchvision detector. Labels are shifted by one inside (torchvision reserves 0)."""

    def __init__(self, detector: nn.Module, num_classes: int, test_cfg: dict, with_mask: bool = False):
        super().__init__()
        detector.transform = PassThroughTransform()
        self.detector, self.num_classes, self.with_mask = detector, num_classes, with_mask
        self.test_cfg = test_cfg
        self.CLASSES = None

    def forward(self, img, img_metas, return_loss=True, **kwargs):
        if return_loss:
            return self.forward_train(img, img_metas, **kwargs)
        return self.forward_test(img, img_metas, **kwargs)

    def _run(self, img: torch.Tensor, img_metas, targets=None):
        self.detector.transform.image_sizes = [tuple(m["img_shape"][:2]) for m in img_metas]
        return self.detector(img, targets)

    def forward_train(self, img, img_metas, gt_bboxes, gt_labels, gt_masks=None, gt_bboxes_ignore=None):
        """``img``: float ``[B, 3, H, W]``; ``gt_bboxes[i]``: ``[N_i, 4]`` pixels of the resized image;
        ``gt_labels[i]``: ``[N_i]`` in ``[0, num_classes)``; ``gt_masks[i]``: ``uint8 [N_i, H, W]``."""
        targets = []
        for i, (boxes, labels) in enumerate(zip(gt_bboxes, gt_labels)):
            t = dict(boxes=boxes.to(img.device, torch.float32), labels=labels.to(img.device) + 1)
            if self.with_mask:
                if gt_masks is None:
                    raise ValueError("Mask R-CNN needs gt_masks: add with_mask=True to LoadAnnotations "
                                     "and 'gt_masks' to Collect.keys")
                t["masks"] = gt_masks[i].to(img.device)
            targets.append(t)
        losses = self._run(img, img_metas, targets)
        # mmdet's parse_losses sums the entries whose key contains "loss"
        return {k if "loss" in k else f"loss_{k}": v for k, v in losses.items()}

    @torch.no_grad()
    def forward_test(self, img, img_metas, rescale=True, **_):
        """``img`` is a batch tensor, or a list of them (one per test-time augmentation, with
        ``img_metas`` a matching list); augmentations are merged by class-wise NMS."""
        if isinstance(img, torch.Tensor):
            img, img_metas = [img], [img_metas]
        if len(img) > 1 and self.with_mask:
            raise ValueError("test-time augmentation is not supported for Mask R-CNN: "
                             "use one scale and flip=False in MultiScaleFlipAug")
        per_aug = [self._run(i, m) for i, m in zip(img, img_metas)]
        results = []
        for b in range(len(img_metas[0])):
            boxes, scores, labels, masks = [], [], [], []
            for dets, metas in zip(per_aug, img_metas):
                meta = metas[b]
                d = dets[b]
                keep = d["labels"] > 0
                box = d["boxes"][keep].float()
                if meta.get("flip"):
                    box = _unflip(box, meta["img_shape"], meta["flip_direction"])
                if rescale:
                    box = box / box.new_tensor(np.asarray(meta["scale_factor"], np.float32))
                    h, w = meta["ori_shape"][:2]
                    box[:, 0::2] = box[:, 0::2].clamp(0, w)
                    box[:, 1::2] = box[:, 1::2].clamp(0, h)
                boxes.append(box)
                scores.append(d["scores"][keep].float())
                labels.append(d["labels"][keep] - 1)
                if self.with_mask:
                    m = d["masks"][keep].float()
                    if meta.get("flip") and meta["flip_direction"] in ("horizontal", "diagonal"):
                        m = m.flip(-1)
                    if meta.get("flip") and meta["flip_direction"] in ("vertical", "diagonal"):
                        m = m.flip(-2)
                    shape = meta["ori_shape"][:2] if rescale else meta["img_shape"][:2]
                    m = paste_masks_in_image(m, box, tuple(shape)) if len(m) else m.new_zeros((0, 1, *shape))
                    masks.append(m[:, 0] > self.test_cfg["mask_thr_binary"])
            box, score, label = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
            if len(per_aug) > 1:
                keep = batched_nms(box, score, label, self.test_cfg["nms"]["iou_threshold"])
                keep = keep[: self.test_cfg["max_per_img"]]
                box, score, label = box[keep], score[keep], label[keep]
            dets = torch.cat([box, score[:, None]], 1).cpu().numpy().astype(np.float32)
            label_np = label.cpu().numpy()
            bbox_result = [dets[label_np == c] for c in range(self.num_classes)]
            if self.with_mask:
                mask_np = torch.cat(masks).cpu().numpy()
                segm = [list(mask_np[label_np == c]) for c in range(self.num_classes)]
                results.append((bbox_result, segm))
            else:
                results.append(bbox_result)
        return results


def _unflip(box: torch.Tensor, img_shape, direction: str) -> torch.Tensor:
    h, w = img_shape[:2]
    out = box.clone()
    if direction in ("horizontal", "diagonal"):
        out[:, 0], out[:, 2] = w - box[:, 2], w - box[:, 0]
    if direction in ("vertical", "diagonal"):
        out[:, 1], out[:, 3] = h - box[:, 3], h - box[:, 1]
    return out


def _level_sizes(strides, scale: float, octaves: int = 1):
    return tuple(tuple(int(round(s * scale * 2 ** (k / octaves))) for k in range(octaves)) for s in strides)


def _anchor_generator(cfg: dict | None, strides, default_scale: float, octaves: int, ratios):
    cfg = dict(cfg or {})
    check_keys(cfg.keys(), {"sizes", "aspect_ratios"}, "model.anchor_generator")
    sizes = tuple(tuple(s) for s in cfg.get("sizes", _level_sizes(strides, default_scale, octaves)))
    if len(sizes) != len(strides):
        raise ConfigError(f"model.anchor_generator.sizes has {len(sizes)} levels but the backbone "
                          f"gives {len(strides)} feature maps")
    aspect = cfg.get("aspect_ratios", (ratios,) * len(sizes))
    return AnchorGenerator(sizes, tuple(tuple(a) for a in aspect))


def _train_cfg(train_cfg, allowed, where="model.train_cfg"):
    train_cfg = dict(train_cfg or {})
    check_keys(train_cfg.keys(), allowed, where)
    return train_cfg


@MODELS.register("FCOS")
def fcos(num_classes, backbone, neck=None, anchor_generator=None, bbox_head=None, train_cfg=None, test_cfg=None,
         init_cfg=None):
    """torchvision's FCOS. ``bbox_head=dict(num_convs=4, reg_bias_init=1.0)``: conv layers in each
    of the head's two towers, and the initial bias of the box-regression output.

    The regression output is a ReLU of (l, t, r, b) distances in anchor-size units (positive,
    typically 0.5-4). torchvision starts its bias at 0, where one early AdamW step can push a
    channel below zero for every input; that channel is then dead for good (seen here: the ``t``
    channel died in the first epoch and bbox mAP stayed at 0.007). Starting at 1.0 keeps all four
    alive; ``reg_bias_init=0.0`` restores torchvision's initialisation."""
    body = build_backbone(backbone, neck)
    strides = list(feature_strides(body).values())
    t = _test_cfg(test_cfg)
    head_cfg = dict(bbox_head or {})
    check_keys(head_cfg.keys(), {"num_convs", "reg_bias_init"}, "model.bbox_head")
    head = FCOSHead(body.out_channels, 1, num_classes + 1, num_convs=head_cfg.get("num_convs", 4))
    nn.init.constant_(head.regression_head.bbox_reg.bias, head_cfg.get("reg_bias_init", 1.0))
    det = FCOS(body, num_classes + 1, anchor_generator=_anchor_generator(anchor_generator, strides, 1.0, 1, (1.0,)),
               head=head,
               score_thresh=t["score_thr"], nms_thresh=t["nms"]["iou_threshold"],
               detections_per_img=t["max_per_img"], topk_candidates=t["nms_pre"],
               **_train_cfg(train_cfg, {"center_sampling_radius"}))
    return Detector(det, num_classes, t)


@MODELS.register("RetinaNet")
def retinanet(num_classes, backbone, neck=None, anchor_generator=None, train_cfg=None, test_cfg=None, init_cfg=None):
    body = build_backbone(backbone, neck)
    strides = list(feature_strides(body).values())
    t = _test_cfg(test_cfg)
    det = RetinaNet(body, num_classes + 1,
                    anchor_generator=_anchor_generator(anchor_generator, strides, 4.0, 3, (0.5, 1.0, 2.0)),
                    score_thresh=t["score_thr"], nms_thresh=t["nms"]["iou_threshold"],
                    detections_per_img=t["max_per_img"], topk_candidates=t["nms_pre"],
                    **_train_cfg(train_cfg, {"fg_iou_thresh", "bg_iou_thresh"}))
    return Detector(det, num_classes, t)


RCNN_TRAIN_KEYS = {"rpn_fg_iou_thresh", "rpn_bg_iou_thresh", "rpn_batch_size_per_image",
                   "rpn_positive_fraction", "rpn_pre_nms_top_n_train", "rpn_post_nms_top_n_train",
                   "box_fg_iou_thresh", "box_bg_iou_thresh", "box_batch_size_per_image",
                   "box_positive_fraction", "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test",
                   "rpn_nms_thresh"}


def _rcnn(cls, with_mask, num_classes, backbone, neck, anchor_generator, train_cfg, test_cfg):
    body = build_backbone(backbone, neck)
    names_strides = feature_strides(body)
    strides = list(names_strides.values())
    roi_names = [n for n in names_strides if n != "pool"]
    t = _test_cfg(test_cfg)
    kwargs = dict(rpn_anchor_generator=_anchor_generator(anchor_generator, strides, 8.0, 1, (0.5, 1.0, 2.0)),
                  box_roi_pool=MultiScaleRoIAlign(roi_names, 7, 2),
                  box_score_thresh=t["score_thr"], box_nms_thresh=t["nms"]["iou_threshold"],
                  box_detections_per_img=t["max_per_img"],
                  **_train_cfg(train_cfg, RCNN_TRAIN_KEYS))
    if with_mask:
        kwargs["mask_roi_pool"] = MultiScaleRoIAlign(roi_names, 14, 2)
    return Detector(cls(body, num_classes + 1, **kwargs), num_classes, t, with_mask=with_mask)


@MODELS.register("FasterRCNN")
def faster_rcnn(num_classes, backbone, neck=None, anchor_generator=None, train_cfg=None, test_cfg=None, init_cfg=None):
    return _rcnn(FasterRCNN, False, num_classes, backbone, neck, anchor_generator, train_cfg, test_cfg)


@MODELS.register("MaskRCNN")
def mask_rcnn(num_classes, backbone, neck=None, anchor_generator=None, train_cfg=None, test_cfg=None, init_cfg=None):
    return _rcnn(MaskRCNN, True, num_classes, backbone, neck, anchor_generator, train_cfg, test_cfg)


@MODELS.register("SSDLite")
def ssdlite(num_classes, backbone=None, train_cfg=None, test_cfg=None, init_cfg=None):
    """SSDlite with torchvision's MobileNetV3-Large extractor (its only backbone)."""
    if backbone not in (None, dict(type="MobileNetV3")):
        raise ConfigError("SSDLite uses torchvision's MobileNetV3-Large extractor; "
                          "model.backbone must be omitted or dict(type='MobileNetV3')")
    t = _test_cfg(test_cfg)
    det = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes + 1,
                                        score_thresh=t["score_thr"], nms_thresh=t["nms"]["iou_threshold"],
                                        detections_per_img=t["max_per_img"], topk_candidates=t["nms_pre"],
                                        **_train_cfg(train_cfg, {"iou_thresh", "positive_fraction"}))
    return Detector(det, num_classes, t)
