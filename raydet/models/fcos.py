"""mmdet's ``FCOS`` (``FCOSHead``) on torchvision's ``FCOS``.

The head is mmdet's (module names ``cls_convs``, ``reg_convs``, ``conv_cls``, ``conv_reg``,
``conv_centerness``, ``scales``), and so are the targets and losses (:meth:`FCOS.targets`):
points at ``(x + 0.5) * stride``, a point is positive for the smallest-area gt that contains it
(or, with ``center_sampling``, whose centre region of ``center_sample_radius * stride``
contains it) and whose largest distance lies in the level's ``regress_ranges``; focal loss over
all points / num_pos, IoU/GIoU loss weighted by the centerness targets / their sum, centerness
BCE / num_pos. ``norm_on_bbox`` predicts ``relu(scale * x)`` in stride units, otherwise
``exp(scale * x)`` pixels; ``centerness_on_reg`` takes centerness from the regression tower.
The head's regression output is in stride units either way, so torchvision's decoder applies.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F
from torchvision.models.detection import FCOS as TVFCOS
from torchvision.ops import batched_nms, clip_boxes_to_image
from torchvision.ops.misc import Conv2dNormActivation

from ..errors import ConfigError
from .anchors import Anchors, BoxLoss, FocalLoss, cross_entropy_weight
from .cfg import Keys, norm_layer
from .init import apply_init_cfg
from .retinanet import dense_head, dense_test_cfg, dense_train_cfg

INF = 1e8


class Scale(nn.Module):
    """A learnable scalar multiplier (mmcv's ``Scale``)."""

    def __init__(self, value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(value)))

    def forward(self, x):
        return x * self.scale


class FCOSHead(nn.Module):
    def __init__(self, num_classes, in_channels, feat_channels, stacked_convs, strides, norm, conv_bias,
                 norm_on_bbox, centerness_on_reg):
        super().__init__()

        def tower():
            return nn.ModuleList(Conv2dNormActivation(in_channels if i == 0 else feat_channels, feat_channels, 3,
                                                      norm_layer=norm, bias=conv_bias) for i in range(stacked_convs))

        self.cls_convs, self.reg_convs = tower(), tower()
        self.conv_cls = nn.Conv2d(feat_channels, num_classes, 3, padding=1)
        self.conv_reg = nn.Conv2d(feat_channels, 4, 3, padding=1)
        self.conv_centerness = nn.Conv2d(feat_channels, 1, 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in strides)
        self.strides, self.norm_on_bbox, self.centerness_on_reg = list(strides), norm_on_bbox, centerness_on_reg
        self.num_classes = num_classes

    def forward(self, feats: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """``cls_logits [N, sum HW, C]``, ``bbox_regression [N, sum HW, 4]`` (l, t, r, b distances
        in units of the level's stride), ``bbox_ctrness [N, sum HW, 1]``."""
        cls_out, reg_out, ctr_out = [], [], []
        for x, scale, stride in zip(feats, self.scales, self.strides):
            cls_feat, reg_feat = x, x
            for conv in self.cls_convs:
                cls_feat = conv(cls_feat)
            for conv in self.reg_convs:
                reg_feat = conv(reg_feat)
            pred = scale(self.conv_reg(reg_feat)).float()
            pred = F.relu(pred) if self.norm_on_bbox else pred.exp() / stride
            ctr = self.conv_centerness(reg_feat if self.centerness_on_reg else cls_feat)
            flat = lambda t: t.flatten(2).transpose(1, 2)
            cls_out.append(flat(self.conv_cls(cls_feat)))
            reg_out.append(flat(pred))
            ctr_out.append(flat(ctr))
        return dict(cls_logits=torch.cat(cls_out, 1), bbox_regression=torch.cat(reg_out, 1),
                    bbox_ctrness=torch.cat(ctr_out, 1))


class FCOS(TVFCOS):
    """torchvision's FCOS with mmdet's targets, losses and post-processing."""

    def __init__(self, *args, regress_ranges, center_sampling: bool, radius: float, focal: FocalLoss,
                 box_loss: BoxLoss, ctr_weight: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.regress_ranges, self.center_sampling, self.radius = regress_ranges, center_sampling, radius
        self.focal, self.box_loss, self.ctr_weight = focal, box_loss, ctr_weight

    def targets(self, points: torch.Tensor, strides: torch.Tensor, ranges: torch.Tensor, boxes: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mmdet's ``FCOSHead._get_target_single``: per point ``[N, 2]`` (pixels, with its level's
        ``strides [N]`` and regress ``ranges [N, 2]``), the label (``num_classes`` = background)
        and the ``(l, t, r, b)`` pixel distances to its gt."""
        n, num_classes = len(points), self.head.num_classes
        if len(boxes) == 0:
            return labels.new_full((n,), num_classes), points.new_zeros((n, 4))
        areas = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[None].repeat(n, 1)
        xs, ys = points[:, 0, None], points[:, 1, None]
        dist = torch.stack([xs - boxes[:, 0], ys - boxes[:, 1], boxes[:, 2] - xs, boxes[:, 3] - ys], -1)
        if self.center_sampling:
            r = (strides * self.radius)[:, None]
            cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
            x1, y1 = torch.maximum(cx - r, boxes[:, 0]), torch.maximum(cy - r, boxes[:, 1])
            x2, y2 = torch.minimum(cx + r, boxes[:, 2]), torch.minimum(cy + r, boxes[:, 3])
            inside = torch.stack([xs - x1, ys - y1, x2 - xs, y2 - ys], -1).min(-1).values > 0
        else:
            inside = dist.min(-1).values > 0
        longest = dist.max(-1).values
        in_range = (longest >= ranges[:, :1]) & (longest <= ranges[:, 1:])
        areas[~inside] = INF
        areas[~in_range] = INF
        min_area, idx = areas.min(1)
        out_labels = labels[idx].clone()
        out_labels[min_area == INF] = num_classes
        return out_labels, dist[torch.arange(n, device=points.device), idx]

    def _point_info(self, anchors: torch.Tensor, num_per_level: list[int]):
        points = (anchors[:, :2] + anchors[:, 2:]) / 2
        strides = torch.cat([points.new_full((n,), float(s)) for n, s in zip(num_per_level, self.head.strides)])
        ranges = torch.cat([points.new_tensor(r).expand(n, 2) for n, r in zip(num_per_level, self.regress_ranges)])
        return points, strides, ranges

    def compute_loss(self, targets, head_outputs, anchors, num_anchors_per_level):
        points, strides, ranges = self._point_info(anchors[0], num_anchors_per_level)
        labels, dists = zip(*[self.targets(points, strides, ranges, t["boxes"], t["labels"]) for t in targets])
        labels, dists = torch.cat(labels), torch.cat(dists)
        cls = head_outputs["cls_logits"].flatten(0, 1)
        reg = head_outputs["bbox_regression"].flatten(0, 1)
        ctr = head_outputs["bbox_ctrness"].flatten(0, 1)[:, 0]
        num_classes = self.head.num_classes
        pos = torch.where(labels < num_classes)[0]
        num_pos = max(float(len(pos)), 1.0)
        onehot = torch.zeros_like(cls)
        onehot[pos, labels[pos]] = 1.0
        loss_cls = self.focal(cls, onehot) / num_pos
        if len(pos) == 0:
            return dict(loss_cls=loss_cls, loss_bbox=reg[pos].sum(), loss_centerness=ctr[pos].sum())
        target = dists[pos] / strides.repeat(len(targets))[pos, None]
        lr, tb = target[:, 0::2], target[:, 1::2]
        centerness = torch.sqrt((lr.min(-1).values / lr.max(-1).values) * (tb.min(-1).values / tb.max(-1).values))
        as_box = lambda d: torch.cat([-d[:, :2], d[:, 2:]], 1)  # IoU is unchanged by the shared point and scale
        loss_bbox = self.box_loss(as_box(reg[pos]), as_box(target), centerness) / max(float(centerness.sum()), 1e-6)
        loss_ctr = F.binary_cross_entropy_with_logits(ctr[pos].float(), centerness, reduction="sum") / num_pos
        return dict(loss_cls=loss_cls, loss_bbox=loss_bbox, loss_centerness=loss_ctr * self.ctr_weight)

    def postprocess_detections(self, head_outputs, anchors, image_shapes):
        """mmdet's ``get_bboxes``: per level, class scores above ``score_thr``, the top
        ``nms_pre``, times centerness; NMS per class; ``max_per_img``."""
        out = []
        for i, shape in enumerate(image_shapes):
            boxes, scores, labels = [], [], []
            for logits, deltas, ctr, a in zip(head_outputs["cls_logits"], head_outputs["bbox_regression"],
                                              head_outputs["bbox_ctrness"], anchors[i]):
                s = torch.sigmoid(logits[i].float())
                cand = torch.nonzero(s > self.score_thresh)
                vals = s[cand[:, 0], cand[:, 1]]
                vals, order = vals.sort(descending=True)
                cand = cand[order[: self.topk_candidates]]
                vals = vals[: self.topk_candidates]
                loc, cls = cand[:, 0], cand[:, 1]
                boxes.append(clip_boxes_to_image(self.box_coder.decode(deltas[i][loc].float(), a[loc]), shape))
                scores.append(vals * torch.sigmoid(ctr[i][loc, 0].float()))
                labels.append(cls)
            boxes, scores, labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
            keep = batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
            out.append(dict(boxes=boxes[keep], scores=scores[keep], labels=labels[keep]))
        return out


def build_fcos(k: Keys, body):
    h, num_classes, in_channels = dense_head(k, body, "FCOSHead")
    feat = h("feat_channels", 256, kind=int)
    stacked = h("stacked_convs", 4, kind=int)
    strides = list(h("strides", (4, 8, 16, 32, 64), kind=(list, tuple)))
    if strides != list(body.strides):
        raise ConfigError(f"model.bbox_head.strides={strides} differ from the neck's feature strides {body.strides}")
    ranges = [tuple(r) for r in h("regress_ranges", ((-1, 64), (64, 128), (128, 256), (256, 512), (512, INF)))]
    if len(ranges) != len(strides):
        raise ConfigError(f"model.bbox_head.regress_ranges has {len(ranges)} levels for {len(strides)} strides")
    center_sampling = h("center_sampling", False, kind=bool)
    radius = h("center_sample_radius", 1.5, kind=(int, float))
    norm_on_bbox = h("norm_on_bbox", False, kind=bool)
    ctr_on_reg = h("centerness_on_reg", False, kind=bool)
    h.only("dcn_on_last_conv", False, "torchvision has no deformable convolution")
    conv_bias = h("conv_bias", "auto", choices=("auto", True, False))
    h.only("conv_cfg", None, "only plain Conv2d")
    norm, _ = norm_layer(h("norm_cfg", dict(type="GN", num_groups=32, requires_grad=True)), "model.bbox_head.norm_cfg")
    focal = FocalLoss(h("loss_cls", dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25)),
                      "model.bbox_head.loss_cls")
    box_loss = BoxLoss(h("loss_bbox", dict(type="IoULoss")), "model.bbox_head.loss_bbox", decoded=True,
                       allowed=("IoULoss", "GIoULoss"))
    ctr_weight = cross_entropy_weight(h("loss_centerness", dict(type="CrossEntropyLoss", use_sigmoid=True)),
                                      "model.bbox_head.loss_centerness", use_sigmoid=True)
    h.only("bbox_coder", dict(type="DistancePointBBoxCoder"), "FCOS decodes point distances")
    head = FCOSHead(num_classes, in_channels, feat, stacked, strides, norm,
                    norm is None if conv_bias == "auto" else conv_bias, norm_on_bbox, ctr_on_reg)
    apply_init_cfg(head, h("init_cfg", dict(type="Normal", layer="Conv2d", std=0.01, override=dict(
        type="Normal", name="conv_cls", std=0.01, bias_prob=0.01))), "model.bbox_head.init_cfg")
    h.only("train_cfg", None, "mmdet sets a head's train_cfg/test_cfg from the model's; set model.train_cfg / model.test_cfg")
    h.only("test_cfg", None, "mmdet sets a head's train_cfg/test_cfg from the model's; set model.train_cfg / model.test_cfg")
    h.done()
    # one "anchor" per point: a stride-sized box centred at (x + 0.5) * stride; torchvision's
    # decoder scales the head's stride-unit distances by its width
    anchors = Anchors([torch.tensor([[0.0, 0.0, s, s]]) for s in strides], strides)
    test = dense_test_cfg(k("test_cfg"))
    dense_train_cfg(k("train_cfg", None))  # validated; FCOS assigns by its own rule, as in mmdet
    det = FCOS(body, num_classes, anchor_generator=anchors, head=head, score_thresh=test["score_thr"],
               nms_thresh=test["iou"], detections_per_img=test["max_per_img"], topk_candidates=test["nms_pre"],
               regress_ranges=ranges, center_sampling=center_sampling, radius=radius, focal=focal,
               box_loss=box_loss, ctr_weight=ctr_weight)
    return det, num_classes
