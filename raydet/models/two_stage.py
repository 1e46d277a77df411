"""mmdet's ``FasterRCNN``, ``MaskRCNN`` and ``RPN`` on torchvision's ``GeneralizedRCNN``.

``rpn_head=RPNHead`` becomes torchvision's ``RPNHead`` inside :class:`RPN` (mmdet's assigner,
box loss and separate train/test NMS); ``roi_head=StandardRoIHead`` becomes :class:`RoIHeads`
with :class:`SingleRoIExtractor` (mmdet's level mapping and RoIAlign ``aligned``), torchvision's
``TwoMLPHead``/``FastRCNNConvFCHead`` + ``FastRCNNPredictor`` and ``MaskRCNNHeads`` +
``MaskRCNNPredictor``. Class 0 of the torchvision modules is the background (mmdet: the last).
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads as TVRoIHeads, maskrcnn_loss
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import roi_align

from ..errors import ConfigError
from .anchors import (BoxLoss, build_anchor_generator, build_assigner, build_box_coder, build_sampler,
                      cross_entropy_weight, nms_iou)
from .cfg import Keys, norm_layer
from .init import apply_init_cfg


class RPN(RegionProposalNetwork):
    """torchvision's RPN with mmdet's box loss (``L1Loss`` by default where torchvision hard-codes
    smooth-L1 with beta 1/9), ``loss_weight``s, and NMS thresholds per phase (``train_cfg.
    rpn_proposal`` vs ``test_cfg.rpn``). Proposal scores of the last forward stay in
    ``last_scores`` for the ``RPN`` detector."""

    def __init__(self, *args, cls_weight: float, box_loss: BoxLoss, nms: dict, min_size: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.cls_weight, self.box_loss, self.nms = cls_weight, box_loss, nms
        self.min_size = max(min_size, 1e-3)
        self.last_scores: list[torch.Tensor] = []

    def filter_proposals(self, proposals, objectness, image_shapes, num_anchors_per_level):
        self.nms_thresh = self.nms["training" if self.training else "testing"]
        boxes, scores = super().filter_proposals(proposals, objectness, image_shapes, num_anchors_per_level)
        self.last_scores = scores
        return boxes, scores

    def compute_loss(self, objectness, pred_bbox_deltas, labels, regression_targets):
        pos, neg = self.fg_bg_sampler(labels)
        pos = torch.where(torch.cat(pos))[0]
        neg = torch.where(torch.cat(neg))[0]
        sampled = torch.cat([pos, neg])
        labels, targets = torch.cat(labels), torch.cat(regression_targets)
        box = self.box_loss(pred_bbox_deltas[pos], targets[pos]) / max(sampled.numel(), 1)
        cls = F.binary_cross_entropy_with_logits(objectness.flatten()[sampled].float(), labels[sampled]) * self.cls_weight
        return cls, box


class SingleRoIExtractor(nn.Module):
    """mmdet's ``SingleRoIExtractor``: a RoI of ``w x h`` pixels is pooled from level
    ``floor(log2(sqrt(w*h) / finest_scale + 1e-6))`` (clamped to the levels) with
    ``torchvision.ops.roi_align(output_size, 1/stride, sampling_ratio, aligned)``."""

    def __init__(self, names: list[str], strides: list[int], output_size: int, sampling_ratio: int,
                 aligned: bool, finest_scale: float):
        super().__init__()
        self.names, self.strides = names, strides
        self.output_size, self.sampling_ratio, self.aligned = (output_size, output_size), sampling_ratio, aligned
        self.finest_scale = finest_scale

    def map_levels(self, rois: torch.Tensor) -> torch.Tensor:
        """Level index per RoI row ``(batch_idx, x1, y1, x2, y2)``."""
        scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
        return torch.floor(torch.log2(scale / self.finest_scale + 1e-6)).clamp(0, len(self.names) - 1).long()

    def forward(self, x, boxes: list[torch.Tensor], image_shapes=None) -> torch.Tensor:
        feats = [x[n] for n in self.names]
        rois = torch.cat([torch.cat([b.new_full((len(b), 1), i), b], 1) for i, b in enumerate(boxes)])
        if len(feats) == 1:
            return roi_align(feats[0], rois, self.output_size, 1.0 / self.strides[0], self.sampling_ratio, self.aligned)
        levels = self.map_levels(rois)
        out = feats[0].new_zeros((len(rois), feats[0].shape[1], *self.output_size))
        for i, (f, s) in enumerate(zip(feats, self.strides)):
            idx = torch.where(levels == i)[0]
            if len(idx):
                out[idx] = roi_align(f, rois[idx], self.output_size, 1.0 / s, self.sampling_ratio,
                                     self.aligned).to(out.dtype)
        return out


def build_roi_extractor(cfg: dict, where: str, neck_strides: list[int], neck_channels: int) -> SingleRoIExtractor:
    k = Keys(cfg, where)
    k.type(("SingleRoIExtractor",))
    layer = k.sub("roi_layer", component="RoIAlign")
    layer.type(("RoIAlign",))
    size = layer("output_size", kind=(int, tuple, list))
    if isinstance(size, (tuple, list)):
        if len(set(size)) != 1:
            raise ConfigError(f"{where}.roi_layer.output_size={size}: only square outputs")
        size = size[0]
    sampling = layer("sampling_ratio", 0, kind=int)
    aligned = layer("aligned", True, kind=bool)
    layer("pool_mode", "avg", choices=("avg",))
    layer("use_torchvision", False)
    layer.done()
    out_channels = k("out_channels", kind=int)
    if out_channels != neck_channels:
        raise ConfigError(f"{where}.out_channels={out_channels} differs from the neck's out_channels {neck_channels}")
    strides = list(k("featmap_strides", kind=(list, tuple)))
    finest = k("finest_scale", 56, kind=(int, float))
    k("init_cfg", None)  # the extractor has no parameters
    k.done()
    if strides != list(neck_strides[:len(strides)]):
        raise ConfigError(f"{where}.featmap_strides={strides} are not the neck's first levels {list(neck_strides)}")
    return SingleRoIExtractor([str(i) for i in range(len(strides))], strides, size, sampling, aligned, finest)


class ClassAgnosticPredictor(FastRCNNPredictor):
    """``reg_class_agnostic=True``: one box per RoI, repeated for every class so torchvision's
    per-class loss and decoding use it unchanged."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, 4)
        self.num_classes = num_classes

    def forward(self, x):
        scores, deltas = super().forward(x)
        return scores, deltas.repeat(1, self.num_classes)


class RoIHeads(TVRoIHeads):
    """torchvision's RoIHeads with mmdet's losses in training: softmax CE (``loss_cls``, plus
    ``acc``), ``loss_bbox`` (L1 by default) summed over positives / sampled RoIs, mask BCE
    (``loss_mask``), each times its ``loss_weight``."""

    def __init__(self, *args, cls_weight: float, box_loss: BoxLoss, mask_weight: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.cls_weight, self.box_loss, self.mask_weight = cls_weight, box_loss, mask_weight

    def forward(self, features, proposals, image_shapes, targets=None):
        if not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        x = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(x)
        label = torch.cat(labels)
        target = torch.cat(regression_targets)
        pos = torch.where(label > 0)[0]
        deltas = box_regression.reshape(len(label), -1, 4)[pos, label[pos]]
        losses = dict(loss_cls=F.cross_entropy(class_logits.float(), label) * self.cls_weight,
                      acc=(class_logits.argmax(1) == label).float().mean().detach() * 100,
                      loss_bbox=self.box_loss(deltas, target[pos]) / max(len(label), 1))
        if self.has_mask():
            keep = [torch.where(lab > 0)[0] for lab in labels]
            boxes = [p[i] for p, i in zip(proposals, keep)]
            logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, boxes, image_shapes)))
            losses["loss_mask"] = maskrcnn_loss(logits, boxes, [t["masks"] for t in targets],
                                                [t["labels"] for t in targets],
                                                [m[i] for m, i in zip(matched_idxs, keep)]) * self.mask_weight
        return [], losses


def _proposal_cfg(cfg: dict, where: str) -> dict:
    """``nms_pre``, ``max_per_img``, NMS IoU and ``min_bbox_size`` of ``rpn_proposal`` /
    ``test_cfg.rpn`` (older names ``nms_thr``, ``max_num``, ``nms_post`` accepted)."""
    k = Keys(cfg, where, "rpn_proposal", aliases={"max_num": "max_per_img"})
    if "nms_thr" in k:
        if "nms" in k:
            raise ConfigError(f"{where} sets both 'nms_thr' (older mmdet name) and 'nms'; keep 'nms'")
        iou = float(k("nms_thr", kind=(int, float)))
    else:
        iou = nms_iou(k("nms"), f"{where}.nms")
    out = dict(nms_pre=k("nms_pre", 1000, kind=int), max_per_img=k("max_per_img", 1000, kind=int), iou=iou,
               min_bbox_size=k("min_bbox_size", 0, kind=(int, float)))
    post = k("nms_post", None)
    if post is not None and post != out["max_per_img"]:
        raise ConfigError(f"{where}.nms_post={post} differs from max_per_img={out['max_per_img']}; "
                          "raydet keeps max_per_img proposals after NMS over all levels")
    k.only("nms_across_levels", False, "NMS runs per level, batched, as mmdet 2.x does")
    k.done()
    return out


def build_rpn(head_cfg: dict, train_cfg: Keys | None, test_cfg: Keys, neck, where: str = "model.rpn_head") -> RPN:
    k = Keys(head_cfg, where)
    k.type(("RPNHead",))
    in_channels = k("in_channels", kind=int)
    if in_channels != neck.out_channels:
        raise ConfigError(f"{where}.in_channels={in_channels} differs from the neck's out_channels {neck.out_channels}")
    k.only("feat_channels", in_channels, "torchvision's RPN conv keeps in_channels channels")
    num_convs = k("num_convs", 1, kind=int)
    anchors = build_anchor_generator(k("anchor_generator"), f"{where}.anchor_generator", neck.strides)
    coder = build_box_coder(k("bbox_coder", None), f"{where}.bbox_coder", (1.0, 1.0, 1.0, 1.0))
    k.only("reg_decoded_bbox", False, "the RPN regresses encoded deltas")
    cls_weight = cross_entropy_weight(k("loss_cls", dict(type="CrossEntropyLoss", use_sigmoid=True)),
                                      f"{where}.loss_cls", use_sigmoid=True)
    box_loss = BoxLoss(k("loss_bbox", dict(type="L1Loss")), f"{where}.loss_bbox")
    head = RPNHead(in_channels, anchors.num_anchors_per_location()[0], conv_depth=num_convs)
    apply_init_cfg(head, k("init_cfg", dict(type="Normal", layer="Conv2d", std=0.01)), f"{where}.init_cfg")
    k.done()
    test = _proposal_cfg(test_cfg("rpn"), "model.test_cfg.rpn")
    assign, (num, frac), proposal = None, (256, 0.5), test
    if train_cfg is not None:
        rpn = train_cfg.sub("rpn", component="train_cfg.rpn")
        assign = build_assigner(rpn("assigner"), "model.train_cfg.rpn.assigner")
        num, frac = build_sampler(rpn("sampler"), "model.train_cfg.rpn.sampler", add_gt=False)
        rpn.only("allowed_border", -1, "torchvision's RPN trains on every anchor, inside the image or not")
        rpn.only("pos_weight", -1, "positives weigh as much as negatives")
        rpn("debug", False)
        rpn.done()
        if train_cfg("rpn_proposal", None) is not None:
            proposal = _proposal_cfg(train_cfg("rpn_proposal"), "model.train_cfg.rpn_proposal")
    if proposal["min_bbox_size"] != test["min_bbox_size"]:
        raise ConfigError("model.train_cfg.rpn_proposal.min_bbox_size and model.test_cfg.rpn.min_bbox_size differ; "
                          "torchvision's RPN has one minimum size")
    rpn_module = RPN(anchors, head, 0.7, 0.3, num, frac,
                     dict(training=proposal["nms_pre"], testing=test["nms_pre"]),
                     dict(training=proposal["max_per_img"], testing=test["max_per_img"]), test["iou"],
                     cls_weight=cls_weight, box_loss=box_loss,
                     nms=dict(training=proposal["iou"], testing=test["iou"]), min_size=test["min_bbox_size"])
    rpn_module.box_coder = coder
    if assign is not None:
        rpn_module.proposal_matcher = assign
    return rpn_module


BBOX_HEADS = ("Shared2FCBBoxHead", "Shared4Conv1FCBBoxHead", "ConvFCBBoxHead")


def _box_head(k: Keys, where: str, in_channels: int):
    """(box_head, predictor, coder, loss weights) of a ``ConvFCBBoxHead`` family member."""
    kind = k.type(BBOX_HEADS)
    preset = {"Shared2FCBBoxHead": (0, 2), "Shared4Conv1FCBBoxHead": (4, 1)}.get(kind)
    n_conv = k("num_shared_convs", preset[0] if preset else 0, kind=int)
    n_fc = k("num_shared_fcs", preset[1] if preset else 0, kind=int)
    if preset and (n_conv, n_fc) != preset:
        raise ConfigError(f"{where}: {kind} fixes num_shared_convs={preset[0]}, num_shared_fcs={preset[1]}")
    for branch in ("num_cls_convs", "num_cls_fcs", "num_reg_convs", "num_reg_fcs"):
        k.only(branch, 0, "torchvision's box head has shared layers only")
    k.only("with_avg_pool", False, "torchvision's box head flattens the RoI features")
    k.only("with_cls", True, "the head classifies")
    k.only("with_reg", True, "the head regresses")
    size = k("roi_feat_size", 7, kind=int)
    if k("in_channels", 256, kind=int) != in_channels:
        raise ConfigError(f"{where}.in_channels differs from the RoI extractor's out_channels {in_channels}")
    conv_out, fc_out = k("conv_out_channels", 256, kind=int), k("fc_out_channels", 1024, kind=int)
    k.only("conv_cfg", None, "only plain Conv2d")
    norm, _ = norm_layer(k("norm_cfg", None), f"{where}.norm_cfg")
    num_classes = k("num_classes", kind=int)
    coder = build_box_coder(k("bbox_coder", None), f"{where}.bbox_coder", (0.1, 0.1, 0.2, 0.2))
    agnostic = k("reg_class_agnostic", False, kind=bool)
    k.only("reg_decoded_bbox", False, "torchvision's box head regresses encoded deltas")
    k.only("reg_predictor_cfg", dict(type="Linear"), "the predictors are Linear layers")
    k.only("cls_predictor_cfg", dict(type="Linear"), "the predictors are Linear layers")
    cls_weight = cross_entropy_weight(k("loss_cls", dict(type="CrossEntropyLoss", use_sigmoid=False)),
                                      f"{where}.loss_cls", use_sigmoid=False)
    box_loss = BoxLoss(k("loss_bbox", dict(type="L1Loss")), f"{where}.loss_bbox")
    if n_conv == 0 and n_fc == 2:
        head = TwoMLPHead(in_channels * size * size, fc_out)
    else:
        head = FastRCNNConvFCHead((in_channels, size, size), [conv_out] * n_conv, [fc_out] * n_fc, norm_layer=norm)
    out = fc_out if n_fc else conv_out * size * size
    predictor = (ClassAgnosticPredictor if agnostic else FastRCNNPredictor)(out, num_classes + 1)
    # mmdet's ConvFCBBoxHead init: Xavier-uniform fcs, N(0, 0.01) classifier, N(0, 0.001) regressor
    for m in head.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    nn.init.normal_(predictor.cls_score.weight, 0, 0.01)
    nn.init.normal_(predictor.bbox_pred.weight, 0, 0.001)
    nn.init.zeros_(predictor.cls_score.bias)
    nn.init.zeros_(predictor.bbox_pred.bias)
    apply_init_cfg(head, k("init_cfg", None), f"{where}.init_cfg")
    k.done()
    return head, predictor, coder, cls_weight, box_loss, num_classes, size


def _mask_head(k: Keys, where: str, num_classes: int, roi_size: int):
    k.type(("FCNMaskHead",))
    n = k("num_convs", 4, kind=int)
    if k("roi_feat_size", 14, kind=int) != roi_size:
        raise ConfigError(f"{where}.roi_feat_size={k.cfg['roi_feat_size']} differs from the mask extractor's "
                          f"output_size {roi_size}")
    in_channels = k("in_channels", 256, kind=int)
    k.only("conv_kernel_size", 3, "torchvision's mask head uses 3x3 convs")
    out = k("conv_out_channels", 256, kind=int)
    if k("num_classes", kind=int) != num_classes:
        raise ConfigError(f"{where}.num_classes differs from the bbox head's num_classes {num_classes}")
    k.only("class_agnostic", False, "torchvision predicts one mask per class")
    up = k("upsample_cfg", dict(type="deconv", scale_factor=2))
    if up != dict(type="deconv", scale_factor=2):
        raise ConfigError(f"{where}.upsample_cfg={up!r} is not supported; torchvision's mask head upsamples with "
                          "dict(type='deconv', scale_factor=2)")
    k.only("conv_cfg", None, "only plain Conv2d")
    norm, _ = norm_layer(k("norm_cfg", None), f"{where}.norm_cfg")
    k.only("predictor_cfg", dict(type="Conv"), "the mask predictor is a 1x1 conv")
    loss = Keys(k("loss_mask", dict(type="CrossEntropyLoss", use_mask=True, loss_weight=1.0)), f"{where}.loss_mask")
    loss.type(("CrossEntropyLoss",))
    loss.only("use_mask", True, "torchvision's mask loss is per-pixel BCE on the label's mask")
    loss.only("use_sigmoid", False, "the mask loss is per-pixel BCE on the label's mask (use_mask)")
    loss("reduction", "mean", choices=("mean",))
    weight = loss("loss_weight", 1.0, kind=(int, float))
    loss.done()
    init = k("init_cfg", None)
    k.done()
    head = MaskRCNNHeads(in_channels, [out] * n, 1, norm_layer=norm)
    predictor = MaskRCNNPredictor(out, out, num_classes + 1)
    apply_init_cfg(head, init, f"{where}.init_cfg")
    return head, predictor, float(weight)


def build_roi_heads(cfg: dict, train_cfg: Keys | None, test_cfg: Keys, neck, where: str = "model.roi_head"):
    k = Keys(cfg, where)
    k.type(("StandardRoIHead",))
    box_pool = build_roi_extractor(k("bbox_roi_extractor"), f"{where}.bbox_roi_extractor", neck.strides,
                                   neck.out_channels)
    head, predictor, coder, cls_w, box_loss, num_classes, size = _box_head(
        Keys(k("bbox_head"), f"{where}.bbox_head"), f"{where}.bbox_head", neck.out_channels)
    if box_pool.output_size[0] != size:
        raise ConfigError(f"{where}.bbox_head.roi_feat_size={size} differs from the extractor's output_size "
                          f"{box_pool.output_size[0]}")
    mask = None
    if k("mask_head", None) is not None:
        mask_pool = build_roi_extractor(k("mask_roi_extractor"), f"{where}.mask_roi_extractor", neck.strides,
                                        neck.out_channels)
        mask = (mask_pool,) + _mask_head(Keys(k("mask_head"), f"{where}.mask_head"), f"{where}.mask_head", num_classes,
                                         mask_pool.output_size[0])
    else:
        k("mask_roi_extractor", None)
    k.only("shared_head", None, "no shared RoI head (ResNet C4 models are not built)")
    for key, why in (("train_cfg", "set model.train_cfg.rcnn"), ("test_cfg", "set model.test_cfg.rcnn"),
                     ("init_cfg", "initialise bbox_head / mask_head through their own init_cfg"),
                     ("pretrained", "set model.backbone.init_cfg")):
        k.only(key, None, why)
    k.done()
    rcnn_test = Keys(test_cfg("rcnn"), "model.test_cfg.rcnn", "test_cfg.rcnn")
    score = rcnn_test("score_thr", 0.05, kind=(int, float))
    iou = nms_iou(rcnn_test("nms"), "model.test_cfg.rcnn.nms")
    per_img = rcnn_test("max_per_img", 100, kind=int)
    mask_thr = rcnn_test("mask_thr_binary", 0.5, kind=(int, float))
    rcnn_test.done()
    assign, (num, frac) = None, (512, 0.25)
    if train_cfg is not None:
        rcnn = train_cfg.sub("rcnn", component="train_cfg.rcnn")
        assign = build_assigner(rcnn("assigner"), "model.train_cfg.rcnn.assigner")
        num, frac = build_sampler(rcnn("sampler"), "model.train_cfg.rcnn.sampler", add_gt=True)
        mask_size = rcnn("mask_size", 28, kind=int)
        if mask is not None and mask_size != 2 * mask[0].output_size[0]:
            raise ConfigError(f"model.train_cfg.rcnn.mask_size={mask_size}: torchvision's mask targets are twice the "
                              f"mask RoI size ({2 * mask[0].output_size[0]})")
        rcnn.only("pos_weight", -1, "positives weigh as much as negatives")
        rcnn("debug", False)
        rcnn.done()
    heads = RoIHeads(box_pool, head, predictor, 0.5, 0.5, num, frac, None,
                     score, iou, per_img, *(mask or (None, None, None))[:3],
                     cls_weight=cls_w, box_loss=box_loss, mask_weight=mask[3] if mask else 1.0)
    heads.box_coder = coder
    if assign is not None:
        heads.proposal_matcher = assign
    return heads, num_classes, mask_thr


class RPNOnly(nn.Module):
    """Second stage of the ``RPN`` detector: the proposals are the detections (one class)."""

    def __init__(self, rpn: RPN):
        super().__init__()
        self._rpn = [rpn]

    def forward(self, features, proposals, image_shapes, targets=None):
        if self.training:
            return [], {}
        return [dict(boxes=p, scores=s, labels=torch.ones(len(p), dtype=torch.int64, device=p.device))
                for p, s in zip(proposals, self._rpn[0].last_scores)], {}


def build_two_stage(k: Keys, body, with_roi: bool):
    """``GeneralizedRCNN`` (names ``backbone``, ``rpn``, ``roi_heads`` as torchvision's Faster
    R-CNN) and ``(num_classes, mask_thr_binary)`` for a model config read by ``k``."""
    train = k.sub("train_cfg", None, component="train_cfg") if k("train_cfg", None) is not None else None
    test = Keys(k("test_cfg"), "model.test_cfg", "test_cfg")
    rpn = build_rpn(k("rpn_head"), train, test, body)
    if with_roi:
        roi, num_classes, mask_thr = build_roi_heads(k("roi_head"), train, test, body)
    else:
        roi, num_classes, mask_thr = RPNOnly(rpn), 1, 0.5
    if train is not None:
        train.done()
    test.done()
    from .detectors import PassThroughTransform
    return GeneralizedRCNN(body, rpn, roi, PassThroughTransform()), num_classes, mask_thr, roi
