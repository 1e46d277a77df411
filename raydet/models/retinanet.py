"""mmdet's ``RetinaNet`` (``RetinaHead``) on torchvision's ``RetinaNet``.

torchvision's head, anchors replaced by mmdet's (:mod:`raydet.models.anchors`), its matcher by
``MaxIoUAssigner``, its loss by mmdet's: focal loss with the config's gamma/alpha over
non-ignored anchors and the box loss over positives, both summed over the batch and divided by
the batch's number of positives (torchvision averages per image).
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models.detection import RetinaNet as TVRetinaNet
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops.misc import Conv2dNormActivation

from ..errors import ConfigError
from .anchors import BoxLoss, FocalLoss, build_anchor_generator, build_assigner, build_box_coder, nms_iou
from .cfg import Keys, norm_layer
from .init import apply_init_cfg


class RetinaHead(RetinaNetHead):
    """torchvision's RetinaNet head with ``stacked_convs`` tower convs and mmdet's loss."""

    def __init__(self, in_channels, num_anchors, num_classes, stacked_convs, norm, focal: FocalLoss,
                 box_loss: BoxLoss, decoded: bool):
        super().__init__(in_channels, num_anchors, num_classes, norm_layer=norm)
        for tower in (self.classification_head, self.regression_head):
            tower.conv = nn.Sequential(*[Conv2dNormActivation(in_channels, in_channels, norm_layer=norm)
                                         for _ in range(stacked_convs)])
        self.focal, self.box_loss, self.decoded = focal, box_loss, decoded

    def compute_loss(self, targets, head_outputs, anchors, matched_idxs):
        coder = self.regression_head.box_coder
        cls_sum, box_sum, num_pos = 0.0, 0.0, 0
        for t, logits, deltas, a, m in zip(targets, head_outputs["cls_logits"], head_outputs["bbox_regression"],
                                           anchors, matched_idxs):
            fg = m >= 0
            valid = m != -2  # Matcher.BETWEEN_THRESHOLDS: ignored anchors
            onehot = torch.zeros_like(logits)
            onehot[fg, t["labels"][m[fg]]] = 1.0
            cls_sum = cls_sum + self.focal(logits[valid], onehot[valid])
            gt = t["boxes"][m[fg]]
            if self.decoded:
                box_sum = box_sum + self.box_loss(coder.decode_single(deltas[fg].float(), a[fg]), gt)
            else:
                box_sum = box_sum + self.box_loss(deltas[fg], coder.encode_single(gt, a[fg]))
            num_pos += int(fg.sum())
        n = max(num_pos, 1)
        return dict(loss_cls=cls_sum / n, loss_bbox=box_sum / n)


def dense_test_cfg(cfg: dict, where: str = "model.test_cfg") -> dict:
    """A single-stage ``test_cfg``: ``nms_pre`` (per level), ``score_thr``, NMS IoU, ``max_per_img``."""
    k = Keys(cfg, where, "test_cfg")
    out = dict(nms_pre=k("nms_pre", 1000, kind=int), score_thr=float(k("score_thr", 0.05, kind=(int, float))),
               iou=nms_iou(k("nms"), f"{where}.nms"), max_per_img=k("max_per_img", 100, kind=int))
    k("min_bbox_size", 0, choices=(0,))
    k("mask_thr_binary", 0.5)
    k.done()
    return out


def dense_train_cfg(cfg: dict | None, where: str = "model.train_cfg"):
    """The assigner of a single-stage ``train_cfg`` (``None`` when absent)."""
    if cfg is None:
        return None
    k = Keys(cfg, where, "train_cfg")
    assigner = build_assigner(k("assigner"), f"{where}.assigner")
    sampler = k("sampler", dict(type="PseudoSampler"))
    if sampler != dict(type="PseudoSampler"):
        raise ConfigError(f"{where}.sampler={sampler!r} is not supported; single-stage heads use every anchor "
                          "(PseudoSampler)")
    k.only("allowed_border", -1, "every anchor is trained, inside the image or not")
    k.only("pos_weight", -1, "positives weigh as much as negatives")
    k("debug", False)
    k.done()
    return assigner


def dense_head(k: Keys, body, kind: str):
    """``(Keys of model.bbox_head, num_classes, in_channels)``; ``in_channels`` must be the neck's."""
    h = Keys(k("bbox_head"), "model.bbox_head")
    h.type((kind,))
    num_classes = h("num_classes", kind=int)
    in_channels = h("in_channels", kind=(int, list, tuple))
    as_list = lambda c: list(c) if isinstance(c, (list, tuple)) else c
    if as_list(in_channels) != as_list(body.out_channels):
        raise ConfigError(f"model.bbox_head.in_channels={in_channels} differs from the neck's {body.out_channels}")
    return h, num_classes, as_list(in_channels)


def build_retinanet(k: Keys, body):
    head_cfg, num_classes, in_channels = dense_head(k, body, "RetinaHead")
    head_cfg.only("feat_channels", in_channels, "torchvision's towers keep in_channels channels")
    stacked = head_cfg("stacked_convs", 4, kind=int)
    head_cfg.only("conv_cfg", None, "only plain Conv2d")
    norm, _ = norm_layer(head_cfg("norm_cfg", None), "model.bbox_head.norm_cfg")
    anchors = build_anchor_generator(head_cfg("anchor_generator"), "model.bbox_head.anchor_generator", body.strides)
    coder = build_box_coder(head_cfg("bbox_coder", None), "model.bbox_head.bbox_coder", (1.0, 1.0, 1.0, 1.0))
    decoded = head_cfg("reg_decoded_bbox", False, kind=bool)
    focal = FocalLoss(head_cfg("loss_cls"), "model.bbox_head.loss_cls")
    box_loss = BoxLoss(head_cfg("loss_bbox", dict(type="L1Loss")), "model.bbox_head.loss_bbox", decoded,
                       allowed=("L1Loss", "SmoothL1Loss", "GIoULoss", "IoULoss"))
    head = RetinaHead(in_channels, anchors.num_anchors_per_location()[0], num_classes, stacked, norm, focal,
                      box_loss, decoded)
    head.regression_head.box_coder = coder
    apply_init_cfg(head.classification_head, head_cfg("init_cfg", dict(
        type="Normal", layer="Conv2d", std=0.01, override=dict(type="Normal", name="cls_logits", std=0.01,
                                                              bias_prob=0.01))), "model.bbox_head.init_cfg")
    apply_init_cfg(head.regression_head, dict(type="Normal", layer="Conv2d", std=0.01), "model.bbox_head.init_cfg")
    head_cfg.only("train_cfg", None, "mmdet sets a head's train_cfg/test_cfg from the model's; set model.train_cfg / model.test_cfg")
    head_cfg.only("test_cfg", None, "mmdet sets a head's train_cfg/test_cfg from the model's; set model.train_cfg / model.test_cfg")
    head_cfg.done()
    test = dense_test_cfg(k("test_cfg"))
    det = TVRetinaNet(body, num_classes, anchor_generator=anchors, head=head, score_thresh=test["score_thr"],
                      nms_thresh=test["iou"], detections_per_img=test["max_per_img"], topk_candidates=test["nms_pre"])
    det.box_coder = coder
    assigner = dense_train_cfg(k("train_cfg", None))
    if assigner is not None:
        det.proposal_matcher = assigner
    return det, num_classes
