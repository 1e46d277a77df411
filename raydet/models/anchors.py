"""mmdet's anchor generators, box coder, assigner and box losses behind torchvision's interfaces.

Anchors follow mmdet 2.x exactly: base anchors per level are ``(ratio, scale)`` pairs
(ratio-major when ``scale_major``) of ``base_size * scale`` with ``h/w = ratio``, centred at
``center_offset * stride`` (mmdet's default 0), unrounded; a level's anchors are location-major,
``shift = (x * stride, y * stride)``, with the configured strides (torchvision's own generator
rounds the base anchors and infers strides from image/feature sizes, which is off for levels whose
size was rounded up).
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.ops import generalized_box_iou_loss

from ..errors import ConfigError
from .cfg import Keys


class Anchors(TVAnchorGenerator):
    """Fixed base anchors per level, shifted over each feature map. ``base[i]``: ``[A_i, 4]``
    (x1, y1, x2, y2) around the level's first cell; ``strides[i]`` in pixels."""

    def __init__(self, base: list[torch.Tensor], strides: list[int]):
        nn.Module.__init__(self)  # torchvision's __init__ builds its own (rounded) cell anchors
        self.base = [b.float() for b in base]
        self.strides = list(strides)
        self.sizes = self.aspect_ratios = tuple((0,) * len(b) for b in base)  # read by torchvision's checks

    def num_anchors_per_location(self) -> list[int]:
        return [len(b) for b in self.base]

    def grid(self, sizes, device, dtype=torch.float32) -> list[torch.Tensor]:
        """Anchors per level, ``[H*W*A, 4]``, for feature maps of ``sizes`` ``[(H, W), ...]``."""
        out = []
        for (h, w), base, s in zip(sizes, self.base, self.strides):
            ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32) * s,
                                    torch.arange(w, device=device, dtype=torch.float32) * s, indexing="ij")
            shifts = torch.stack([xs, ys, xs, ys], -1).reshape(-1, 1, 4)
            out.append((shifts + base.to(device)[None]).reshape(-1, 4).to(dtype))
        return out

    def forward(self, image_list, feature_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(feature_maps) != len(self.base):
            raise ValueError(f"{len(feature_maps)} feature maps for {len(self.base)} anchor levels")
        f = feature_maps[0]
        anchors = torch.cat(self.grid([m.shape[-2:] for m in feature_maps], f.device, f.dtype))
        return [anchors for _ in range(len(image_list.image_sizes))]


def base_anchors(base_size: float, scales, ratios, center, scale_major: bool = True) -> torch.Tensor:
    """mmdet's ``gen_single_level_base_anchors``: ``[len(ratios) * len(scales), 4]``."""
    scales = torch.as_tensor(scales, dtype=torch.float64)
    ratios = torch.as_tensor(ratios, dtype=torch.float64)
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    if scale_major:
        ws = (base_size * w_ratios[:, None] * scales[None, :]).reshape(-1)
        hs = (base_size * h_ratios[:, None] * scales[None, :]).reshape(-1)
    else:
        ws = (base_size * scales[:, None] * w_ratios[None, :]).reshape(-1)
        hs = (base_size * scales[:, None] * h_ratios[None, :]).reshape(-1)
    cx, cy = center
    return torch.stack([cx - 0.5 * ws, cy - 0.5 * hs, cx + 0.5 * ws, cy + 0.5 * hs], -1).float()


def _strides(k: Keys, where_levels: int | None = None) -> list[int]:
    strides = list(k("strides", kind=(list, tuple)))
    for s in strides:
        if isinstance(s, (list, tuple)) and len(set(s)) != 1:
            raise ConfigError(f"{k.where}.strides: non-square stride {s} is not supported")
    strides = [s[0] if isinstance(s, (list, tuple)) else s for s in strides]
    if where_levels is not None and len(strides) != where_levels:
        raise ConfigError(f"{k.where}.strides has {len(strides)} levels but the neck gives {where_levels}")
    return strides


def build_anchor_generator(cfg: dict, where: str, feature_strides: list[int]) -> Anchors:
    """``AnchorGenerator`` (its strides must be the neck's) or ``SSDAnchorGenerator`` from
    mmdet's config."""
    k = Keys(cfg, where)
    kind = k.type(("AnchorGenerator", "SSDAnchorGenerator"))
    strides = _strides(k, len(feature_strides))
    if kind == "SSDAnchorGenerator":  # nominal strides (320 / 3 = 107 for a 3x3 map), used as given
        return _ssd_anchors(k, strides)
    if strides != list(feature_strides):
        raise ConfigError(f"{where}.strides={strides} differ from the neck's feature strides {list(feature_strides)}")
    ratios = list(k("ratios", kind=(list, tuple)))
    scales = k("scales", None)
    octave, per_octave = k("octave_base_scale", None), k("scales_per_octave", None)
    if (scales is None) == (octave is None):
        raise ConfigError(f"{where}: give either scales or octave_base_scale with scales_per_octave")
    if scales is None:
        if per_octave is None:
            raise ConfigError(f"{where}.scales_per_octave is required with octave_base_scale")
        scales = [octave * 2 ** (i / per_octave) for i in range(per_octave)]
    base_sizes = list(k("base_sizes", None) or strides)
    scale_major = k("scale_major", True, kind=bool)
    centers = k("centers", None)
    offset = k("center_offset", 0.0, kind=(int, float))
    if centers is not None and offset != 0:
        raise ConfigError(f"{where}: centers and center_offset are exclusive")
    base = [base_anchors(b, scales, ratios, centers[i] if centers else (offset * b, offset * b), scale_major)
            for i, b in enumerate(base_sizes)]
    k.done()
    return Anchors(base, strides)


def _ssd_anchors(k: Keys, strides: list[int]) -> Anchors:
    """mmdet's ``SSDAnchorGenerator`` with explicit ``min_sizes``/``max_sizes``: per level the
    ratio-1 anchors at min size and at sqrt(min*max), then ``1/r, r`` for each ratio."""
    ratios = k("ratios", kind=(list, tuple))
    min_sizes, max_sizes = k("min_sizes", None), k("max_sizes", None)
    if min_sizes is None or max_sizes is None:
        k("basesize_ratio_range", None), k("input_size", 300)
        raise ConfigError(f"{k.where}: give min_sizes and max_sizes (the basesize_ratio_range form of SSD300/512 "
                          "is not supported)")
    k("basesize_ratio_range", None), k("input_size", 300)
    scale_major = k("scale_major", True, kind=bool)
    base = []
    for i, s in enumerate(strides):
        ctr = ((s - 1) / 2.0,) * 2 if scale_major else (s / 2.0,) * 2
        level_ratios = [1.0] + [x for r in ratios[i] for x in (1 / r, r)]
        anchors = base_anchors(min_sizes[i], [1.0, math.sqrt(max_sizes[i] / min_sizes[i])], level_ratios, ctr,
                               scale_major)
        order = list(range(len(level_ratios)))
        order.insert(1, len(order))
        base.append(anchors[order])
    k.done()
    return Anchors(base, strides)


def build_box_coder(cfg: dict | None, where: str, default_stds) -> det_utils.BoxCoder:
    """mmdet's ``DeltaXYWHBBoxCoder`` as torchvision's ``BoxCoder`` with weights ``1/target_stds``
    (both clamp dw, dh at ``log(1000/16)``)."""
    k = Keys(cfg or dict(type="DeltaXYWHBBoxCoder"), where)
    k.type(("DeltaXYWHBBoxCoder",))
    means = list(k("target_means", (0.0, 0.0, 0.0, 0.0)))
    if any(means):
        raise ConfigError(f"{where}.target_means={means} is not supported (torchvision's coder has zero means)")
    stds = list(k("target_stds", default_stds))
    k("clip_border", True, choices=(True,))
    k.only("add_ctr_clamp", False, "torchvision's coder does not clamp centre shifts")
    wh_ratio_clip = k("wh_ratio_clip", 16 / 1000)
    k.done()
    return det_utils.BoxCoder(tuple(1.0 / s for s in stds), bbox_xform_clip=abs(math.log(wh_ratio_clip)))


class MaxIoUMatcher(det_utils.Matcher):
    """mmdet's ``MaxIoUAssigner`` on torchvision's ``Matcher``: IoU >= pos_iou_thr is positive,
    < neg_iou_thr negative, between ignored; then, with ``match_low_quality``, each gt whose best
    IoU is >= ``min_pos_iou`` takes its best anchors (all ties when ``gt_max_assign_all``, gts in
    order, a later one winning) — torchvision restores the anchor's own best gt instead and has no
    ``min_pos_iou``."""

    def __init__(self, pos: float, neg: float, min_pos_iou: float, match_low_quality: bool, gt_max_assign_all: bool):
        super().__init__(pos, neg, allow_low_quality_matches=match_low_quality)
        self.min_pos_iou, self.gt_max_assign_all = min_pos_iou, gt_max_assign_all

    def set_low_quality_matches_(self, matches, all_matches, match_quality_matrix):
        best, best_idx = match_quality_matrix.max(dim=1)
        ok = best >= self.min_pos_iou
        if self.gt_max_assign_all:
            pairs = (match_quality_matrix == best[:, None]) & ok[:, None]
        else:
            pairs = torch.zeros_like(match_quality_matrix, dtype=torch.bool)
            pairs[torch.arange(len(best), device=pairs.device), best_idx] = ok
        # the last gt of a prediction's pairs wins, as in mmdet's loop over gts in order
        gts = torch.arange(len(best), device=pairs.device)[:, None].expand_as(pairs)
        winner = torch.where(pairs, gts, torch.full_like(gts, -1)).max(dim=0).values
        take = winner >= 0
        matches[take] = winner[take]


def build_assigner(cfg: dict, where: str) -> MaxIoUMatcher:
    k = Keys(cfg, where)
    k.type(("MaxIoUAssigner",))
    pos = k("pos_iou_thr", kind=(int, float))
    neg = k("neg_iou_thr", kind=(int, float, tuple, list))
    if isinstance(neg, (tuple, list)):
        raise ConfigError(f"{where}.neg_iou_thr={neg!r}: a (low, high) range is not supported; give one number")
    if neg > pos:
        raise ConfigError(f"{where}: neg_iou_thr={neg} exceeds pos_iou_thr={pos}")
    min_pos = k("min_pos_iou", 0.0, kind=(int, float))
    all_ties = k("gt_max_assign_all", True, kind=bool)
    k.only("ignore_iof_thr", -1, "gt_bboxes_ignore are not assigned; ignored boxes are dropped from training")
    k("ignore_wrt_candidates", True, kind=bool)
    low_quality = k("match_low_quality", True, kind=bool)
    k("gpu_assign_thr", -1)
    iou = k("iou_calculator", dict(type="BboxOverlaps2D"))
    if iou != dict(type="BboxOverlaps2D"):
        raise ConfigError(f"{where}.iou_calculator={iou!r} is not supported; only BboxOverlaps2D")
    k.done()
    return MaxIoUMatcher(pos, neg, min_pos, low_quality, all_ties)


def build_sampler(cfg: dict, where: str, add_gt: bool) -> tuple[int, float]:
    """``(num, pos_fraction)`` of a ``RandomSampler``; ``add_gt_as_proposals`` must be what
    torchvision does at that stage (``add_gt``: True for the R-CNN stage, False for the RPN)."""
    k = Keys(cfg, where)
    k.type(("RandomSampler",))
    num = k("num", kind=int)
    frac = k("pos_fraction", kind=(int, float))
    k.only("neg_pos_ub", -1, "torchvision's sampler has no negative/positive upper bound")
    k.only("add_gt_as_proposals", add_gt, "torchvision " + ("adds" if add_gt else "does not add")
           + " ground truth boxes as proposals at this stage")
    k.done()
    return num, frac


class BoxLoss:
    """mmdet's ``L1Loss``/``SmoothL1Loss`` on encoded deltas, or ``IoULoss``/``GIoULoss`` on
    decoded boxes: ``loss(pred, target)`` is the weighted **sum** over rows (callers divide by
    mmdet's avg_factor)."""

    def __init__(self, cfg: dict, where: str, decoded: bool = False, allowed=("L1Loss", "SmoothL1Loss")):
        k = Keys(cfg, where)
        self.kind = k.type(allowed)
        self.weight = k("loss_weight", 1.0, kind=(int, float))
        k("reduction", "mean", choices=("mean",))
        self.beta = k("beta", 1.0, kind=(int, float)) if self.kind == "SmoothL1Loss" else None
        self.eps = k("eps", 1e-6, kind=(int, float)) if self.kind in ("IoULoss", "GIoULoss") else None
        self.mode = "log"
        if self.kind == "IoULoss":
            linear = k("linear", False, kind=bool)
            self.mode = k("mode", "linear" if linear else "log", choices=("linear", "square", "log"))
        if self.kind in ("IoULoss", "GIoULoss") and not decoded:
            raise ConfigError(f"{where}.type={self.kind!r} needs reg_decoded_bbox=True")
        k.done()

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        pred, target = pred.float(), target.float()
        if self.kind == "L1Loss":
            loss = (pred - target).abs().sum(-1)
        elif self.kind == "SmoothL1Loss":
            loss = F.smooth_l1_loss(pred, target, beta=self.beta, reduction="none").sum(-1)
        elif self.kind == "GIoULoss":
            loss = generalized_box_iou_loss(pred, target, reduction="none", eps=self.eps)
        else:
            iou = _aligned_iou(pred, target).clamp(min=self.eps)
            loss = {"linear": 1 - iou, "square": 1 - iou ** 2, "log": -iou.log()}[self.mode]
        if weight is not None:
            loss = loss * weight
        return loss.sum() * self.weight


def _aligned_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt = torch.max(a[:, :2], b[:, :2])
    rb = torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]).clamp(min=0) * (x[:, 3] - x[:, 1]).clamp(min=0)
    return inter / (area(a) + area(b) - inter).clamp(min=1e-6)


class FocalLoss:
    """mmdet's sigmoid ``FocalLoss(gamma, alpha, loss_weight)``: weighted sum over elements."""

    def __init__(self, cfg: dict, where: str):
        k = Keys(cfg, where)
        k.type(("FocalLoss",))
        k.only("use_sigmoid", True, "only the sigmoid focal loss exists")
        self.gamma = k("gamma", 2.0, kind=(int, float))
        self.alpha = k("alpha", 0.25, kind=(int, float))
        self.weight = k("loss_weight", 1.0, kind=(int, float))
        k("reduction", "mean", choices=("mean",))
        k.only("activated", False, "the loss takes logits")
        k.done()

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        from torchvision.ops import sigmoid_focal_loss
        return sigmoid_focal_loss(logits.float(), targets.float(), self.alpha, self.gamma, reduction="sum") * self.weight


def cross_entropy_weight(cfg: dict, where: str, use_sigmoid: bool, use_mask: bool = False) -> float:
    """The ``loss_weight`` of a ``CrossEntropyLoss`` that must be sigmoid (or softmax) as
    torchvision's head computes it."""
    k = Keys(cfg, where)
    k.type(("CrossEntropyLoss",))
    k.only("use_sigmoid", use_sigmoid, "torchvision's head computes " + ("sigmoid" if use_sigmoid else "softmax")
           + " cross-entropy here")
    k.only("use_mask", use_mask, "mask cross-entropy belongs to the mask head only")
    k("reduction", "mean", choices=("mean",))
    k.only("class_weight", None, "per-class weights are not supported")
    k.only("ignore_index", None, "no ignored label")
    k.only("avg_non_ignore", False, "no ignored label")
    weight = k("loss_weight", 1.0, kind=(int, float))
    k.done()
    return float(weight)


def nms_iou(cfg, where: str) -> float:
    """The IoU threshold of mmdet's ``nms=dict(type='nms', iou_threshold=...)`` (older:
    ``nms_thr``)."""
    k = Keys(cfg, where, "nms")
    k("type", "nms", choices=("nms",))
    iou = k("iou_threshold", kind=(int, float))
    k.only("class_agnostic", False, "torchvision's NMS is per class")
    k("split_thr", 10000)
    k.done()
    return float(iou)
