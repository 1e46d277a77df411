"""mmcv 1.x's compiled ops as plain, differentiable PyTorch (CPU and CUDA tensors alike).

Each function here computes what mmcv's CUDA/C++ kernel of the same name computes (read from
mmcv 1.7.2's ``ops/csrc``), with autograd supplying the backward pass: the ``_ext`` table in
:mod:`raydet.ops.table` calls these for the forward kernels and differentiates them again for the
backward kernels. Where torchvision has the same kernel (``nms``, ``roi_align``,
``deform_conv2d``) the table calls torchvision instead.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

FLT_MIN = torch.finfo(torch.float32).tiny
f32 = np.float32


# --------------------------------------------------------------------------- NMS family
def box_iou(a: torch.Tensor, b: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """IoU of every box of ``a`` ``[N, 4]`` with every box of ``b`` ``[M, 4]`` (x1, y1, x2, y2);
    ``offset=1`` counts pixels inclusively, as mmcv's legacy mode does. Returns ``[N, M]``."""
    area_a = (a[:, 2] - a[:, 0] + offset) * (a[:, 3] - a[:, 1] + offset)
    area_b = (b[:, 2] - b[:, 0] + offset) * (b[:, 3] - b[:, 1] + offset)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:4], b[None, :, 2:4])
    wh = (rb - lt + offset).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def soft_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, sigma: float, min_score: float,
             method: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """mmcv's ``softnms_cpu``: repeatedly take the highest-scoring box and decay the scores of
    the rest by their IoU with it (``method`` 0: hard, 1: linear ``1 - iou`` above the threshold,
    2: gaussian ``exp(-iou^2 / sigma)``); a box whose score falls below ``min_score`` is dropped.
    Returns ``(dets [K, 5], inds [K])`` in selection order. Ties between equal scores may be taken
    in another order than mmcv's (its array of candidates is reordered by swaps)."""
    boxes, scores = boxes.float(), scores.float().clone()
    alive = torch.arange(boxes.shape[0], device=boxes.device)
    dets, inds = [], []
    while alive.numel():
        best = int(torch.argmax(scores[alive]))
        i = alive[best]
        dets.append(torch.cat([boxes[i], scores[i].reshape(1)]))
        inds.append(i)
        alive = torch.cat([alive[:best], alive[best + 1:]])
        if not alive.numel():
            break
        ovr = box_iou(boxes[i][None], boxes[alive], offset)[0]
        if method == 0:
            weight = torch.where(ovr >= iou_threshold, 0.0, 1.0)
        elif method == 1:
            weight = torch.where(ovr >= iou_threshold, 1 - ovr, 1.0)
        elif method == 2:
            weight = torch.exp(-(ovr * ovr) / sigma)
        else:
            raise ValueError(f"softnms method {method} is not 0 (hard), 1 (linear) or 2 (gaussian)")
        scores[alive] = scores[alive] * weight
        alive = alive[scores[alive] >= min_score]
    if not inds:
        return boxes.new_zeros((0, 5)), torch.zeros(0, dtype=torch.long, device=boxes.device)
    return torch.stack(dets), torch.stack(inds)


def nms_match(dets: torch.Tensor, iou_threshold: float) -> list[list[int]]:
    """mmcv's ``nms_match_cpu``: greedy NMS over ``dets [N, 5]`` by descending score; each kept
    box with the indices it suppresses (IoU >= threshold), the kept one first."""
    order = torch.sort(dets[:, 4], descending=True, stable=True).indices
    iou = box_iou(dets[:, :4], dets[:, :4])
    suppressed = torch.zeros(dets.shape[0], dtype=torch.bool)
    matched = []
    for pos, i in enumerate(order.tolist()):
        if suppressed[i]:
            continue
        later = order[pos + 1:]
        hit = later[(~suppressed[later]) & (iou[i, later] >= iou_threshold)]
        suppressed[hit] = True
        matched.append([i] + hit.tolist())
    return matched


# --------------------------------------------------------------------------- RoI pooling
def _bilinear(feat: torch.Tensor, y: torch.Tensor, x: torch.Tensor, batch: torch.Tensor | None = None) -> torch.Tensor:
    """mmcv's ``bilinear_interpolate`` (RoIAlign's): ``feat [C, H, W]`` sampled at ``y``, ``x``
    (any equal shapes S), or ``feat [N, C, H, W]`` with ``batch`` (shape S) naming each point's
    image; zero outside ``[-1, H] x [-1, W]``, clamped to the border inside it. Returns
    ``[C, *S]``; differentiable in ``feat``, ``y`` and ``x``."""
    height, width = feat.shape[-2:]
    outside = (y < -1.0) | (y > height) | (x < -1.0) | (x > width)
    y, x = y.clamp(min=0), x.clamp(min=0)
    y_low, x_low = y.detach().floor().long(), x.detach().floor().long()
    y_edge, x_edge = y_low >= height - 1, x_low >= width - 1
    y_low, x_low = y_low.clamp(max=height - 1), x_low.clamp(max=width - 1)
    y_high = torch.where(y_edge, y_low, y_low + 1)
    x_high = torch.where(x_edge, x_low, x_low + 1)
    y = torch.where(y_edge, y_low.to(y.dtype), y)
    x = torch.where(x_edge, x_low.to(x.dtype), x)
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    channels = feat.shape[-3]
    if batch is None:
        flat, base = feat.reshape(channels, -1), 0
    else:  # the images side by side: image b's pixel (h, w) at b * H * W + h * W + w
        flat, base = feat.transpose(0, 1).reshape(channels, -1), batch * (height * width)

    def at(yy, xx):
        return flat[:, (base + yy * width + xx).reshape(-1)].reshape(channels, *yy.shape)

    val = hy * hx * at(y_low, x_low) + hy * lx * at(y_low, x_high) + ly * hx * at(y_high, x_low) \
        + ly * lx * at(y_high, x_high)
    return torch.where(outside, torch.zeros((), dtype=val.dtype, device=val.device), val)


#: how many sampled values (channels x points) :func:`deform_roi_pool` computes at once
POOL_CHUNK = 1 << 22


def deform_roi_pool(input: torch.Tensor, rois: torch.Tensor, offset: torch.Tensor | None, pooled_h: int,
                    pooled_w: int, spatial_scale: float, sampling_ratio: int, gamma: float) -> torch.Tensor:
    """mmcv's DeformRoIPool: RoIAlign (aligned, averaging ``sampling_ratio`` (0: adaptive,
    ``ceil`` of the bin's size) points per bin) whose every bin is shifted by ``gamma * roi size *
    offset``. ``input [N, C, H, W]``, ``rois [R, 5]`` (batch index, x1, y1, x2, y2), ``offset
    [R, 2, ph, pw]`` (x then y) or None/empty. Returns ``[R, C, ph, pw]``. The RoIs with the same
    number of sampling points are computed together (in chunks of :data:`POOL_CHUNK` values)."""
    n_rois, channels = rois.shape[0], input.shape[1]
    out = input.new_zeros((n_rois, channels, pooled_h, pooled_w))
    if n_rois == 0:
        return out
    has_offset = offset is not None and offset.numel() > 0
    roi = rois.detach()
    start_w, start_h = roi[:, 1] * spatial_scale - 0.5, roi[:, 2] * spatial_scale - 0.5
    roi_w = roi[:, 3] * spatial_scale - 0.5 - start_w
    roi_h = roi[:, 4] * spatial_scale - 0.5 - start_h
    bin_h, bin_w = roi_h / pooled_h, roi_w / pooled_w
    if sampling_ratio > 0:
        grid_h = grid_w = torch.full((n_rois,), sampling_ratio, dtype=torch.long, device=rois.device)
    else:
        grid_h, grid_w = torch.ceil(roi_h / pooled_h).long(), torch.ceil(roi_w / pooled_w).long()
    ph = torch.arange(pooled_h, device=input.device, dtype=input.dtype)
    pw = torch.arange(pooled_w, device=input.device, dtype=input.dtype)
    grids = torch.stack([grid_h, grid_w], 1)
    for gh, gw in torch.unique(grids, dim=0).tolist():
        if gh <= 0 or gw <= 0:
            continue  # an empty RoI pools to 0
        same = torch.nonzero((grids[:, 0] == gh) & (grids[:, 1] == gw)).flatten()
        step = max(1, POOL_CHUNK // (channels * pooled_h * pooled_w * gh * gw))
        for idx in same.split(step):
            bh, bw = bin_h[idx, None, None], bin_w[idx, None, None]
            y0 = (start_h[idx, None, None] + ph[:, None] * bh).expand(-1, pooled_h, pooled_w)
            x0 = (start_w[idx, None, None] + pw[None, :] * bw).expand(-1, pooled_h, pooled_w)
            if has_offset:
                x0 = x0 + gamma * roi_w[idx, None, None] * offset[idx, 0]
                y0 = y0 + gamma * roi_h[idx, None, None] * offset[idx, 1]
            iy = (torch.arange(gh, device=input.device, dtype=input.dtype) + 0.5) * bh[..., None] / gh  # [r, 1, 1, gh]
            ix = (torch.arange(gw, device=input.device, dtype=input.dtype) + 0.5) * bw[..., None] / gw  # [r, 1, 1, gw]
            y = y0[..., None, None] + iy[..., :, None]  # [r, ph, pw, gh, 1]
            x = x0[..., None, None] + ix[..., None, :]  # [r, ph, pw, 1, gw]
            y, x = torch.broadcast_tensors(y, x)
            batch = roi[idx, 0].long()[:, None, None, None, None].expand_as(y)
            val = _bilinear(input, y, x, batch)  # [C, r, ph, pw, gh, gw]
            out[idx] = (val.sum(dim=(-1, -2)) / (gh * gw)).transpose(0, 1)
    return out


def roi_pool(input: torch.Tensor, rois: torch.Tensor, pooled_h: int, pooled_w: int,
             spatial_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """mmcv's RoIPool (max over each bin of the RoI's pixels, the RoI's end inclusive:
    ``(x2 + 1) * scale``; bins ``floor``/``ceil`` of fractional edges, clipped to the map; an empty
    bin is 0). Returns ``(output [R, C, ph, pw], argmax [R, C, ph, pw])`` with ``argmax`` the flat
    ``h * W + w`` index of each maximum in its image's map (-1 for an empty bin)."""
    n_rois, channels = rois.shape[0], input.shape[1]
    height, width = input.shape[-2:]
    out = input.new_zeros((n_rois, channels, pooled_h, pooled_w))
    argmax = torch.full((n_rois, channels, pooled_h, pooled_w), -1, dtype=torch.int32, device=input.device)
    for n in range(n_rois):
        roi = [f32(v) for v in rois[n].tolist()]
        scale = f32(spatial_scale)
        # the kernel's float32 arithmetic, so that bin edges fall on the same pixels
        start_w, start_h = roi[1] * scale, roi[2] * scale
        end_w, end_h = (roi[3] + f32(1)) * scale, (roi[4] + f32(1)) * scale
        roi_w, roi_h = end_w - start_w, end_h - start_h
        if roi_w <= 0 or roi_h <= 0:
            continue
        feat = input[int(roi[0])]
        bin_w, bin_h = f32(roi_w) / f32(pooled_w), f32(roi_h) / f32(pooled_h)
        for i in range(pooled_h):
            hs = min(max(math.floor(f32(i) * bin_h + f32(start_h)), 0), height)
            he = min(max(math.ceil(f32(i + 1) * bin_h + f32(start_h)), 0), height)
            for j in range(pooled_w):
                ws = min(max(math.floor(f32(j) * bin_w + f32(start_w)), 0), width)
                we = min(max(math.ceil(f32(j + 1) * bin_w + f32(start_w)), 0), width)
                if he <= hs or we <= ws:
                    continue
                window = feat[:, hs:he, ws:we].reshape(channels, -1)
                value, index = window.max(dim=1)
                out[n, :, i, j] = value
                argmax[n, :, i, j] = ((index // (we - ws) + hs) * width + index % (we - ws) + ws).int()
    return out, argmax


# --------------------------------------------------------------------------- losses
def sigmoid_focal_loss(input: torch.Tensor, target: torch.Tensor, gamma: float, alpha: float,
                       weight: torch.Tensor | None = None) -> torch.Tensor:
    """mmcv's sigmoid focal loss before reduction, ``[N, C]``: class ``c`` of sample ``n`` is a
    positive when ``target[n] == c`` (``target == C`` is the background: all negatives);
    ``-alpha (1-p)^gamma log p`` for positives, ``-(1-alpha) p^gamma log(1-p)`` for negatives
    (logs floored at FLT_MIN), times ``weight[target]`` for samples whose target is a class."""
    p = torch.sigmoid(input)
    pos = (target[:, None] == torch.arange(input.shape[1], device=input.device)[None]).to(input.dtype)
    term_p = (1 - p).pow(gamma) * torch.log(p.clamp(min=FLT_MIN))
    term_n = p.pow(gamma) * torch.log((1 - p).clamp(min=FLT_MIN))
    loss = -pos * alpha * term_p - (1 - pos) * (1 - alpha) * term_n
    if weight is not None and weight.numel():
        valid = target < weight.shape[0]
        per_sample = torch.where(valid, weight[target.clamp(max=weight.shape[0] - 1)], torch.ones_like(weight[:1]))
        loss = loss * per_sample[:, None]
    return loss


def softmax_focal_loss(softmax: torch.Tensor, target: torch.Tensor, gamma: float, alpha: float,
                       weight: torch.Tensor | None = None) -> torch.Tensor:
    """mmcv's softmax focal loss per sample ``[N]`` from the class probabilities ``softmax``:
    ``-alpha (1-p_t)^gamma log p_t`` (log floored at FLT_MIN), times ``weight[target]``."""
    pred = softmax.gather(1, target[:, None])[:, 0]
    loss = -alpha * (1 - pred).pow(gamma) * torch.log(pred.clamp(min=FLT_MIN))
    if weight is not None and weight.numel():
        loss = loss * weight[target]
    return loss


def softmax_focal_loss_grad(softmax: torch.Tensor, target: torch.Tensor, gamma: float, alpha: float,
                            weight: torch.Tensor | None = None) -> torch.Tensor:
    """The gradient of :func:`softmax_focal_loss` with respect to the logits ``[N, C]``, as mmcv's
    backward kernel computes it from the saved probabilities (the chain through the softmax)."""
    pred = softmax.gather(1, target[:, None])[:, 0]
    buff = alpha * (-(1 - pred).pow(gamma) + gamma * (1 - pred).pow(gamma - 1) * pred
                    * torch.log(pred.clamp(min=FLT_MIN)))
    if weight is not None and weight.numel():
        buff = buff * weight[target]
    onehot = F.one_hot(target, softmax.shape[1]).to(softmax.dtype)
    return buff[:, None] * (onehot - softmax)


# --------------------------------------------------------------------------- upsampling, masked conv, pools
def carafe(features: torch.Tensor, masks: torch.Tensor, kernel_size: int, group_size: int,
           scale_factor: int) -> torch.Tensor:
    """CARAFE: each output pixel ``(ph, pw)`` is its source pixel's ``kernel_size``² neighbourhood
    (``(ph // s, pw // s)``, zero outside) weighted by ``masks [N, G*k*k, H*s, W*s]``, channel
    ``c`` using group ``c // (C / G)``. ``features [N, C, H, W]`` -> ``[N, C, H*s, W*s]``."""
    n, c, h, w = features.shape
    k, s = kernel_size, scale_factor
    patches = F.unfold(features, k, padding=(k - 1) // 2).view(n, group_size, c // group_size, k * k, h, w)
    patches = patches.repeat_interleave(s, dim=-2).repeat_interleave(s, dim=-1)
    weights = masks.view(n, group_size, 1, k * k, h * s, w * s)
    return (patches * weights).sum(dim=3).view(n, c, h * s, w * s)


def masked_im2col(features: torch.Tensor, mask_h: torch.Tensor, mask_w: torch.Tensor, kernel_h: int,
                  kernel_w: int, pad_h: int, pad_w: int) -> torch.Tensor:
    """The columns of a convolution at the masked positions of the first image, as mmcv's
    ``masked_im2col`` kernel: ``[C * kh * kw, M]``, zero outside the map."""
    c = features.shape[1]
    padded = F.pad(features[:1], (pad_w, pad_w, pad_h, pad_h))
    dy = torch.arange(kernel_h, device=features.device)
    dx = torch.arange(kernel_w, device=features.device)
    ys = (mask_h[None, None, :] + dy[:, None, None]).expand(kernel_h, kernel_w, -1)
    xs = (mask_w[None, None, :] + dx[None, :, None]).expand(kernel_h, kernel_w, -1)
    cols = padded[0][:, ys, xs]  # [C, kh, kw, M]
    return cols.reshape(c * kernel_h * kernel_w, -1)
