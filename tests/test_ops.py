"""mmcv 1.x's compiled ops as raydet serves them (``mmcv._ext`` = :mod:`raydet.ops.table`).

Each op is called through mmcv's own Python function (what mmdet calls) with CPU tensors, and
compared with an independent reference written here: a slow loop over mmcv's kernel formula,
or another library's op. Gradients: ``torch.autograd.gradcheck`` in float64 where the op is
differentiable, or the reference's autograd gradient.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import raydet  # noqa: F401  (installs the op table before mmcv.ops is imported)
from mmcv import ops
from raydet.ops import OpNotServedError


def rand_boxes(n, size=64.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 2 + 2
    return torch.cat([xy, xy + wh], 1), torch.rand(n, generator=g)


def iou_ref(a, b, offset=0):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + offset)
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + offset)
    inter = w * h
    area = lambda r: (r[2] - r[0] + offset) * (r[3] - r[1] + offset)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


# ------------------------------------------------------------------------------------- NMS family
@pytest.mark.parametrize("offset", [0, 1])
def test_nms_matches_greedy_loop(offset):
    boxes, scores = rand_boxes(60)
    dets, keep = ops.nms(boxes, scores, 0.4, offset=offset)
    order = sorted(range(60), key=lambda i: -float(scores[i]))
    ref, b = [], boxes.tolist()
    for i in order:
        if all(iou_ref(b[i], b[j], offset) <= 0.4 for j in ref):
            ref.append(i)
    assert keep.tolist() == ref
    assert torch.equal(dets[:, 4], scores[keep])
    # batched_nms (mmdet's entry point) over two classes keeps per class
    labels = torch.arange(60) % 2
    _, kept = ops.batched_nms(boxes, scores, labels, dict(type="nms", iou_threshold=0.4))
    for c in (0, 1):
        idx = torch.nonzero(labels == c)[:, 0]
        assert set(kept[labels[kept] == c].tolist()) == set(idx[ops.nms(boxes[idx], scores[idx], 0.4)[1]].tolist())


def soft_nms_ref(boxes, scores, thr, sigma, min_score, method, offset):
    """mmcv's softnms_cpu, line by line."""
    b = [list(map(float, r)) for r in boxes]
    sc = list(map(float, scores))
    inds = list(range(len(b)))
    n, out, i = len(b), [], 0
    while i < n:
        m = max(range(i, n), key=lambda k: (sc[k], -k))
        for arr in (b, sc, inds):
            arr[i], arr[m] = arr[m], arr[i]
        out.append((b[i] + [sc[i]], inds[i]))
        pos = i + 1
        while pos < n:
            ovr = iou_ref(b[i], b[pos], offset)
            weight = 1.0
            if method == 0 and ovr >= thr:
                weight = 0.0
            elif method == 1 and ovr >= thr:
                weight = 1 - ovr
            elif method == 2:
                weight = math.exp(-(ovr * ovr) / sigma)
            sc[pos] *= weight
            if sc[pos] < min_score:
                for arr in (b, sc, inds):
                    arr[pos] = arr[n - 1]
                n -= 1
                pos -= 1
            pos += 1
        i += 1
    return out


@pytest.mark.parametrize("method", ["naive", "linear", "gaussian"])
def test_soft_nms_matches_mmcv_loop(method):
    boxes, scores = rand_boxes(40, seed=1)
    dets, inds = ops.soft_nms(boxes, scores, iou_threshold=0.3, sigma=0.5, min_score=0.05, method=method)
    ref = soft_nms_ref(boxes, scores, 0.3, 0.5, 0.05, {"naive": 0, "linear": 1, "gaussian": 2}[method], 0)
    assert inds.tolist() == [r[1] for r in ref]
    assert torch.allclose(dets, torch.tensor([r[0] for r in ref]), atol=1e-5)


def test_nms_match_groups():
    boxes, scores = rand_boxes(50, seed=2)
    dets = torch.cat([boxes, scores[:, None]], 1)
    groups = ops.nms_match(dets, 0.3)
    order = sorted(range(50), key=lambda i: -float(scores[i]))
    gone, ref = set(), []
    for pos, i in enumerate(order):
        if i in gone:
            continue
        hit = [j for j in order[pos + 1:] if j not in gone and iou_ref(boxes[i].tolist(), boxes[j].tolist()) >= 0.3]
        gone.update(hit)
        ref.append([i] + hit)
    assert [g.tolist() for g in groups] == ref
    assert sorted(i for g in groups for i in g.tolist()) == list(range(50))


# ------------------------------------------------------------------------------------- RoI ops
def bilinear_ref(feat, y, x):
    """mmcv's bilinear_interpolate for one point (feat [C, H, W])."""
    h, w = feat.shape[-2:]
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return feat.new_zeros(feat.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    yl, xl = int(y), int(x)
    if yl >= h - 1:
        yh = yl = h - 1
        y = float(yl)
    else:
        yh = yl + 1
    if xl >= w - 1:
        xh = xl = w - 1
        x = float(xl)
    else:
        xh = xl + 1
    ly, lx = y - yl, x - xl
    return ((1 - ly) * (1 - lx) * feat[:, yl, xl] + (1 - ly) * lx * feat[:, yl, xh]
            + ly * (1 - lx) * feat[:, yh, xl] + ly * lx * feat[:, yh, xh])


def roi_align_ref(feat, rois, out, scale, ratio, aligned):
    res = feat.new_zeros(len(rois), feat.shape[1], out, out)
    for n, r in enumerate(rois.tolist()):
        off = 0.5 if aligned else 0.0
        x1, y1, x2, y2 = (v * scale - off for v in r[1:])
        rw, rh = x2 - x1, y2 - y1
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / out, rw / out
        gh = ratio if ratio > 0 else math.ceil(rh / out)
        gw = ratio if ratio > 0 else math.ceil(rw / out)
        for i in range(out):
            for j in range(out):
                acc = feat.new_zeros(feat.shape[1])
                for iy in range(gh):
                    for ix in range(gw):
                        acc += bilinear_ref(feat[int(r[0])], y1 + i * bh + (iy + 0.5) * bh / gh,
                                            x1 + j * bw + (ix + 0.5) * bw / gw)
                res[n, :, i, j] = acc / max(gh * gw, 1)
    return res


def rand_rois(n, batch, size, seed=0):
    boxes, _ = rand_boxes(n, size * 0.8, seed)
    idx = torch.arange(n) % batch
    return torch.cat([idx[:, None].float(), boxes], 1)


@pytest.mark.parametrize("aligned,ratio", [(True, 0), (False, 2), (True, 2)])
def test_roi_align(aligned, ratio):
    feat = torch.randn(2, 3, 12, 14, generator=torch.Generator().manual_seed(0))
    rois = rand_rois(6, 2, 12, seed=3) * torch.tensor([1, 0.9, 0.9, 0.9, 0.9])
    out = ops.roi_align(feat, rois, 3, 0.5, ratio, "avg", aligned)
    assert torch.allclose(out, roi_align_ref(feat, rois, 3, 0.5, ratio, aligned), atol=1e-5)
    x = feat.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: ops.roi_align(t, rois.double(), 3, 0.5, ratio, "avg", aligned), (x,))


def test_roi_align_max_mode_is_a_named_error():
    with pytest.raises(OpNotServedError, match="roi_align with pool_mode='max'"):
        ops.roi_align(torch.randn(1, 1, 4, 4), torch.tensor([[0.0, 0, 0, 3, 3]]), 2, 1.0, 0, "max", True)


def test_roi_pool():
    feat = torch.randn(2, 3, 10, 11, generator=torch.Generator().manual_seed(1))
    rois = rand_rois(5, 2, 20, seed=4)
    out = ops.roi_pool(feat, rois, (3, 2), 0.5)
    ref = feat.new_zeros(5, 3, 3, 2)
    f32 = np.float32
    for n, r in enumerate(rois.tolist()):
        sw, sh = f32(r[1]) * f32(0.5), f32(r[2]) * f32(0.5)
        rw, rh = (f32(r[3]) + f32(1)) * f32(0.5) - sw, (f32(r[4]) + f32(1)) * f32(0.5) - sh
        for i in range(3):
            for j in range(2):
                rows = [h for h in range(10) if math.floor(f32(i) * (rh / f32(3)) + sh) <= h
                        < math.ceil(f32(i + 1) * (rh / f32(3)) + sh)]
                cols = [w for w in range(11) if math.floor(f32(j) * (rw / f32(2)) + sw) <= w
                        < math.ceil(f32(j + 1) * (rw / f32(2)) + sw)]
                if rows and cols:
                    ref[n, :, i, j] = feat[int(r[0])][:, rows][:, :, cols].amax(dim=(1, 2))
    assert torch.equal(out, ref)
    x = feat.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: ops.roi_pool(t, rois.double(), (3, 2), 0.5), (x,))


def deform_roi_pool_ref(feat, rois, offset, out_size, scale, ratio, gamma):
    """mmcv's deform_roi_pool_forward kernel, one bin and one sampling point at a time."""
    ph, pw = out_size
    out = feat.new_zeros(len(rois), feat.shape[1], ph, pw)
    for n, r in enumerate(rois.tolist()):
        x1, y1, x2, y2 = (v * scale - 0.5 for v in r[1:])
        rw, rh = x2 - x1, y2 - y1
        gh = ratio if ratio > 0 else math.ceil(rh / ph)
        gw = ratio if ratio > 0 else math.ceil(rw / pw)
        for i in range(ph):
            for j in range(pw):
                sx = x1 + j * rw / pw + (gamma * rw * float(offset[n, 0, i, j]) if offset is not None else 0)
                sy = y1 + i * rh / ph + (gamma * rh * float(offset[n, 1, i, j]) if offset is not None else 0)
                acc = feat.new_zeros(feat.shape[1])
                for iy in range(gh):
                    for ix in range(gw):
                        acc += bilinear_ref(feat[int(r[0])], sy + (iy + 0.5) * rh / ph / gh,
                                            sx + (ix + 0.5) * rw / pw / gw)
                out[n, :, i, j] = acc / max(gh * gw, 1)
    return out


@pytest.mark.parametrize("ratio,with_offset", [(2, True), (0, True), (0, False)])
def test_deform_roi_pool(ratio, with_offset):
    g = torch.Generator().manual_seed(2)
    feat = torch.randn(2, 2, 9, 11, generator=g, dtype=torch.float64)
    rois = rand_rois(7, 2, 18, seed=5).double()  # sizes from ~1 to ~14 pixels: 1 to 4 adaptive points a side
    offset = torch.randn(7, 2, 2, 3, generator=g, dtype=torch.float64) * 0.3 if with_offset else None
    out = ops.deform_roi_pool(feat, rois, offset, (2, 3), 0.5, ratio, 0.1)
    assert torch.allclose(out, deform_roi_pool_ref(feat, rois, offset, (2, 3), 0.5, ratio, 0.1))
    x = feat.clone().requires_grad_()
    if with_offset:
        o = offset.clone().requires_grad_()
        assert torch.autograd.gradcheck(lambda a, b: ops.deform_roi_pool(a, rois, b, (2, 3), 0.5, ratio, 0.1), (x, o))
    else:
        assert torch.autograd.gradcheck(lambda a: ops.deform_roi_pool(a, rois, None, (2, 3), 0.5, ratio, 0.1), (x,))


# ------------------------------------------------------------------------------------- deformable convolution
def deform_conv_ref(x, offset, weight, mask=None, bias=None, stride=1, padding=1, dilation=1, dg=1, groups=1):
    """Sample every tap at its offset position with grid_sample (zero padding: DCN's bilinear
    rule), then a grouped matrix product."""
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    oh = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    ow = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    base_y = (torch.arange(oh) * stride - padding).double()
    base_x = (torch.arange(ow) * stride - padding).double()
    cols = x.new_zeros(n, c, kh * kw, oh, ow)
    cpg = c // dg
    for g in range(dg):
        for k in range(kh * kw):
            i, j = divmod(k, kw)
            dy = offset[:, g * 2 * kh * kw + 2 * k]
            dx = offset[:, g * 2 * kh * kw + 2 * k + 1]
            y = base_y[:, None] + i * dilation + dy
            xx = base_x[None, :] + j * dilation + dx
            grid = torch.stack([2 * xx / (w - 1) - 1, 2 * y / (h - 1) - 1], -1).to(x.dtype)
            s = F.grid_sample(x[:, g * cpg:(g + 1) * cpg], grid, align_corners=True, padding_mode="zeros")
            if mask is not None:
                s = s * mask[:, g * kh * kw + k][:, None]
            cols[:, g * cpg:(g + 1) * cpg, k] = s
    cols = cols.view(n, groups, c // groups * kh * kw, oh * ow)
    wt = weight.view(groups, o // groups, -1)
    out = torch.einsum("gok,ngkp->ngop", wt, cols).reshape(n, o, oh, ow)
    return out if bias is None else out + bias[None, :, None, None]


@pytest.mark.parametrize("dg,groups", [(1, 1), (2, 2)])
def test_deform_conv(dg, groups):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 6, 5, generator=g, dtype=torch.float64)
    weight = torch.randn(4, 4 // groups, 3, 3, generator=g, dtype=torch.float64)
    offset = torch.randn(2, dg * 18, 6, 5, generator=g, dtype=torch.float64)
    out = ops.deform_conv2d(x, offset, weight, 1, 1, 1, groups, dg)
    assert torch.allclose(out, deform_conv_ref(x, offset, weight, dg=dg, groups=groups))
    args = [t.clone().requires_grad_() for t in (x, offset, weight)]
    assert torch.autograd.gradcheck(lambda a, b, c: ops.deform_conv2d(a, b, c, 1, 1, 1, groups, dg), args)


def test_modulated_deform_conv():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 2, 5, 5, generator=g, dtype=torch.float64)
    weight = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(3, generator=g, dtype=torch.float64)
    offset = torch.randn(1, 18, 3, 3, generator=g, dtype=torch.float64)
    mask = torch.rand(1, 9, 3, 3, generator=g, dtype=torch.float64)
    out = ops.modulated_deform_conv2d(x, offset, mask, weight, bias, 2, 1, 1, 1, 1)
    assert torch.allclose(out, deform_conv_ref(x, offset, weight, mask, bias, stride=2))
    args = [t.clone().requires_grad_() for t in (x, offset, mask, weight, bias)]
    assert torch.autograd.gradcheck(lambda a, b, c, d, e: ops.modulated_deform_conv2d(a, b, c, d, e, 2, 1, 1, 1, 1),
                                    args)
    # the modules mmdet builds (DCN in a backbone, DCNv2 in heads) run forward and backward
    layer = ops.ModulatedDeformConv2dPack(2, 3, 3, padding=1)
    layer(torch.randn(1, 2, 5, 5)).sum().backward()
    assert layer.weight.grad is not None and layer.conv_offset.weight.grad is not None


# ------------------------------------------------------------------------------------- focal losses
def test_sigmoid_focal_loss_matches_mmdet_pytorch_formula():
    from mmdet.models.losses.focal_loss import py_sigmoid_focal_loss
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(7, 4, generator=g, dtype=torch.float64)
    target = torch.tensor([0, 3, 4, 1, 4, 2, 0])  # 4 = background
    ours = ops.sigmoid_focal_loss(logits, target, 2.0, 0.25, None, "none")
    onehot = F.one_hot(target, 5)[:, :4].double()
    assert torch.allclose(ours, py_sigmoid_focal_loss(logits, onehot, None, 2.0, 0.25, "none"))
    x = logits.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: ops.sigmoid_focal_loss(t, target, 2.0, 0.25, None, "mean"), (x,))
    weight = torch.rand(4, dtype=torch.float64, generator=g)
    weighted = ops.sigmoid_focal_loss(logits, target, 2.0, 0.25, weight, "none")
    for n in range(7):
        factor = weight[target[n]] if target[n] < 4 else 1.0
        assert torch.allclose(weighted[n], ours[n] * factor)


def test_softmax_focal_loss():
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(6, 5, generator=g, dtype=torch.float64)
    target = torch.tensor([0, 4, 2, 2, 1, 3])
    x = logits.clone().requires_grad_()
    out = ops.softmax_focal_loss(x, target, 2.0, 0.25, None, "sum")
    ref_x = logits.clone().requires_grad_()
    p = torch.softmax(ref_x, 1).gather(1, target[:, None])[:, 0]
    ref = (-0.25 * (1 - p) ** 2 * torch.log(p)).sum()
    assert torch.allclose(out, ref)
    out.backward()
    ref.backward()
    assert torch.allclose(x.grad, ref_x.grad)


# ------------------------------------------------------------------------------------- CARAFE, masked conv
def carafe_ref(f, m, k, grp, s):
    n, c, h, w = f.shape
    out = f.new_zeros(n, c, h * s, w * s)
    r = (k - 1) // 2
    for ph in range(h * s):
        for pw in range(w * s):
            for ch in range(c):
                gi = ch // (c // grp)
                for i in range(k):
                    for j in range(k):
                        y, x = ph // s + i - r, pw // s + j - r
                        if 0 <= y < h and 0 <= x < w:
                            out[:, ch, ph, pw] += f[:, ch, y, x] * m[:, (gi * k + i) * k + j, ph, pw]
    return out


@pytest.mark.parametrize("function", ["carafe", "carafe_naive"])
def test_carafe(function):
    g = torch.Generator().manual_seed(7)
    f = torch.randn(1, 4, 3, 4, generator=g, dtype=torch.float64)
    m = torch.rand(1, 2 * 9, 6, 8, generator=g, dtype=torch.float64)
    op = getattr(ops, function)
    assert torch.allclose(op(f, m, 3, 2, 2), carafe_ref(f, m, 3, 2, 2))
    args = [f.clone().requires_grad_(), m.clone().requires_grad_()]
    if function == "carafe":
        assert torch.autograd.gradcheck(lambda a, b: op(a, b, 3, 2, 2), args)
    else:  # mmcv's CARAFENaive backward asserts CUDA tensors: its kernel, called directly
        import mmcv._ext as ext
        grad = torch.randn(1, 4, 6, 8, generator=g, dtype=torch.float64)
        g_f, g_m = torch.zeros_like(f), torch.zeros_like(m)
        ext.carafe_naive_backward(grad, f, m, g_f, g_m, kernel_size=3, group_size=2, scale_factor=2)
        carafe_ref(*args, 3, 2, 2).backward(grad)
        assert torch.allclose(g_f, args[0].grad) and torch.allclose(g_m, args[1].grad)


def test_masked_conv2d():
    g = torch.Generator().manual_seed(8)
    x = torch.randn(1, 3, 7, 6, generator=g)
    layer = ops.MaskedConv2d(3, 4, 3, padding=1)
    mask = torch.rand(1, 7, 6, generator=g) > 0.5
    out = layer(x, mask)
    ref = F.conv2d(x, layer.weight, layer.bias, padding=1) * mask[:, None]
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.equal(layer(x, None), F.conv2d(x, layer.weight, layer.bias, padding=1))


# ------------------------------------------------------------------------------------- deformable attention, corner pool
def ms_deform_attn_ref(value, shapes, locs, weights):
    """Bilinear sampling at ``loc * size - 0.5`` with zero outside, point by point."""
    bs, _, heads, dims = value.shape
    _, nq, _, levels, points, _ = locs.shape
    out = value.new_zeros(bs, nq, heads, dims)
    start = 0
    for lvl, (h, w) in enumerate(shapes.tolist()):
        v = value[:, start:start + h * w].view(bs, h, w, heads, dims)
        start += h * w
        for b in range(bs):
            for q in range(nq):
                for hd in range(heads):
                    for p in range(points):
                        x = float(locs[b, q, hd, lvl, p, 0]) * w - 0.5
                        y = float(locs[b, q, hd, lvl, p, 1]) * h - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        acc = value.new_zeros(dims)
                        for yy, xx, wt in ((y0, x0, (y0 + 1 - y) * (x0 + 1 - x)), (y0, x0 + 1, (y0 + 1 - y) * (x - x0)),
                                           (y0 + 1, x0, (y - y0) * (x0 + 1 - x)), (y0 + 1, x0 + 1, (y - y0) * (x - x0))):
                            if 0 <= yy < h and 0 <= xx < w:
                                acc += wt * v[b, yy, xx, hd]
                        out[b, q, hd] += weights[b, q, hd, lvl, p] * acc
    return out.view(bs, nq, heads * dims)


def test_ms_deform_attn():
    from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttnFunction
    g = torch.Generator().manual_seed(9)
    shapes = torch.tensor([[4, 5], [2, 3]])
    start = torch.tensor([0, 20])
    value = torch.randn(1, 26, 2, 3, generator=g, dtype=torch.float64)
    locs = torch.rand(1, 3, 2, 2, 2, 2, generator=g, dtype=torch.float64)
    weights = torch.rand(1, 3, 2, 2, 2, generator=g, dtype=torch.float64)
    out = MultiScaleDeformableAttnFunction.apply(value, shapes, start, locs, weights, 64)
    assert torch.allclose(out, ms_deform_attn_ref(value, shapes, locs, weights))
    args = [t.clone().requires_grad_() for t in (value, locs, weights)]
    assert torch.autograd.gradcheck(lambda v, l, w: MultiScaleDeformableAttnFunction.apply(v, shapes, start, l, w, 64),
                                    args)


@pytest.mark.parametrize("mode", ["top", "bottom", "left", "right"])
def test_corner_pool(mode):
    x = torch.randn(1, 2, 4, 5, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    out = ops.CornerPool(mode)(x)
    ref = torch.empty_like(x)
    for i in range(4):
        for j in range(5):
            region = {"top": x[..., i:, j], "bottom": x[..., :i + 1, j], "left": x[..., i, j:],
                      "right": x[..., i, :j + 1]}[mode]
            ref[..., i, j] = region.amax(-1)
    assert torch.equal(out, ref)


def test_unserved_op_is_named_at_call_not_import():
    import mmcv._ext as ext
    with pytest.raises(OpNotServedError, match="nms_rotated"):
        ext.nms_rotated(torch.zeros(0, 5))
    from mmcv.utils import collect_env  # reports the ops' origin instead of failing
    assert "raydet" in str(collect_env().get("MMCV Compiler", ""))


def test_half_and_bfloat16_cpu_tensors_are_computed_in_float32():
    """mmdet's fp16 regions hand the ops half tensors; torchvision's CPU kernels take float only."""
    feat = torch.randn(1, 2, 8, 8)
    rois = torch.tensor([[0.0, 1, 1, 6, 6]])
    ref = ops.roi_align(feat, rois, 2, 1.0, 0, "avg", True)
    for dtype in (torch.float16, torch.bfloat16):
        out = ops.roi_align(feat.to(dtype), rois.to(dtype), 2, 1.0, 0, "avg", True)
        assert out.dtype == dtype and torch.allclose(out.float(), ref, atol=2e-2)
        x = feat.to(dtype).requires_grad_()
        ops.roi_align(x, rois.to(dtype), 2, 1.0, 0, "avg", True).sum().backward()
        assert x.grad.dtype == dtype
        layer = ops.DeformConv2dPack(2, 2, 3, padding=1).to(dtype)
        assert layer(feat.to(dtype)).dtype == dtype
