"""mmdet's SSD (``SingleStageDetector`` with ``SSDHead``; ssdlite with ``use_depthwise``) on
torchvision's ``SSD``: mmdet's ``SSDAnchorGenerator`` boxes, torchvision's ``SSDHead`` /
``SSDLiteHead`` (3x3 conv, or depthwise 3x3 + BN + ReLU6 + 1x1, per level), softmax
cross-entropy with hard negative mining at ``neg_pos_ratio`` and smooth-L1 (beta 1) box loss,
both / the batch's positives — as mmdet's ``SSDHead.loss``. Class 0 is the background.
"""
from __future__ import annotations

from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.ssd import SSD, SSDHead
from torchvision.models.detection.ssdlite import SSDLiteHead

from ..errors import ConfigError
from .anchors import build_anchor_generator, build_assigner, build_box_coder
from .cfg import Keys, act_layer, norm_layer
from .init import apply_init_cfg
from .retinanet import dense_head, dense_test_cfg


def build_ssd(k: Keys, body):
    h, num_classes, in_channels = dense_head(k, body, "SSDHead")
    h.only("stacked_convs", 0, "torchvision's SSD heads predict from the level's map directly")
    h("feat_channels", 256)
    depthwise = h("use_depthwise", False, kind=bool)
    h.only("conv_cfg", None, "only plain Conv2d")
    norm, _ = norm_layer(h("norm_cfg", None), "model.bbox_head.norm_cfg")
    act = act_layer(h("act_cfg", dict(type="ReLU")), "model.bbox_head.act_cfg")
    if depthwise and (norm is None or act is None or act.__name__ != "ReLU6"):
        raise ConfigError("model.bbox_head: use_depthwise=True needs norm_cfg and act_cfg=dict(type='ReLU6') "
                          "(torchvision's SSDLite head: depthwise conv + norm + ReLU6)")
    anchors = build_anchor_generator(h("anchor_generator"), "model.bbox_head.anchor_generator", body.strides)
    coder = build_box_coder(h("bbox_coder", None), "model.bbox_head.bbox_coder", (0.1, 0.1, 0.2, 0.2))
    h.only("reg_decoded_bbox", False, "SSD regresses encoded deltas")
    num_anchors = anchors.num_anchors_per_location()
    head = (SSDLiteHead(in_channels, num_anchors, num_classes + 1, norm) if depthwise
            else SSDHead(in_channels, num_anchors, num_classes + 1))
    apply_init_cfg(head, h("init_cfg", dict(type="Xavier", layer="Conv2d", distribution="uniform")),
                   "model.bbox_head.init_cfg")
    h.only("train_cfg", None, "mmdet sets a head's train_cfg/test_cfg from the model's; set model.train_cfg / model.test_cfg")
    h.only("test_cfg", None, "mmdet sets a head's train_cfg/test_cfg from the model's; set model.train_cfg / model.test_cfg")
    h.done()
    test = dense_test_cfg(k("test_cfg"))
    iou, frac = 0.5, 0.25
    train = k("train_cfg", None)
    if train is not None:
        t = Keys(train, "model.train_cfg", "train_cfg")
        assign = build_assigner(t("assigner"), "model.train_cfg.assigner")
        if assign.high_threshold != assign.low_threshold or assign.allow_low_quality_matches is False \
                or assign.gt_max_assign_all or assign.min_pos_iou != 0:
            raise ConfigError("model.train_cfg.assigner: SSD needs pos_iou_thr == neg_iou_thr, min_pos_iou=0 and "
                              "gt_max_assign_all=False (torchvision's SSDMatcher: each gt keeps its best anchor)")
        iou = assign.high_threshold
        t.only("smoothl1_beta", 1.0, "torchvision's SSD box loss is smooth-L1 with beta 1")
        ratio = t("neg_pos_ratio", 3, kind=(int, float))
        frac = 1.0 / (1.0 + ratio)
        t.only("allowed_border", -1, "every anchor is trained")
        t.only("pos_weight", -1, "positives weigh as much as negatives")
        t("debug", False)
        t.done()
    det = SSD(body, anchors, (320, 320), num_classes + 1, head=head, score_thresh=test["score_thr"],
              nms_thresh=test["iou"], detections_per_img=test["max_per_img"], iou_thresh=iou,
              topk_candidates=test["nms_pre"], positive_fraction=frac)
    det.box_coder = coder
    det.proposal_matcher = det_utils.SSDMatcher(iou)
    return det, num_classes
