"""The ``mmcv._ext`` table: mmcv 1.x's compiled kernels, served by torchvision and plain PyTorch.

mmcv 1.x's Python ops (``mmcv.ops.*``) allocate their output and gradient tensors and call a
kernel of this table by name, with mmcv's own arguments; each function below fills those tensors
(or returns what the kernel returns) for CPU and CUDA tensors alike. Backward kernels run
autograd over the same forward (:func:`_grads`). A name mmcv lists but raydet does not serve is
still an attribute (mmcv asserts every name at import), and calling it raises
:class:`~raydet.ops.OpNotServedError` naming the op. ``docs/ops.md`` is the table.
"""
from __future__ import annotations

import inspect

import torch
from torchvision.ops import deform_conv2d, nms as tv_nms

from ..errors import RaydetError
from . import functional as fn


class OpNotServedError(RaydetError, NotImplementedError):
    """An mmcv op that raydet does not serve was called; the message names it."""


def _grads(forward, inputs: list, grad_output: torch.Tensor) -> list:
    """The gradients of ``forward(*inputs)`` against ``grad_output``, one per input (None where it
    does not depend on it). Runs with autograd on: mmcv's backward functions run without it."""
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(True) for t in inputs]
        out = forward(*leaves)
        return list(torch.autograd.grad(out, leaves, grad_output, allow_unused=True))


def _cpu_float(*tensors):
    """torchvision's CPU kernels take float32/float64 only: half and bfloat16 CPU tensors (mmdet's
    fp16 regions on a CPU) are computed in float32, and the caller's output keeps its dtype."""
    return [t.float() if t.device.type == "cpu" and t.dtype in (torch.float16, torch.bfloat16) else t
            for t in tensors]


def _write(dst: torch.Tensor, value) -> None:
    """Fill an mmcv-allocated output; a missing gradient is zero."""
    if value is None:
        dst.zero_()
    else:
        dst.copy_(value.reshape(dst.shape))


# ----------------------------------------------------------------------------- NMS
def nms(bboxes, scores, iou_threshold: float, offset: int = 0):
    """Indices kept by greedy NMS, by descending score (torchvision's kernel). ``offset=1``
    (mmcv's legacy inclusive-pixel IoU) is the same IoU as boxes whose x2, y2 grow by one."""
    if bboxes.numel() == 0:
        return bboxes.new_zeros(0, dtype=torch.long)
    if offset:
        bboxes = torch.cat([bboxes[:, :2], bboxes[:, 2:4] + offset], dim=1)
    return tv_nms(bboxes.float(), scores.float(), float(iou_threshold))


def softnms(boxes, scores, dets, iou_threshold: float, sigma: float, min_score: float, method: int, offset: int):
    """Soft-NMS (:func:`raydet.ops.functional.soft_nms`): fills the first K rows of ``dets``
    ``[N, 5]`` and returns the K kept indices."""
    kept, inds = fn.soft_nms(boxes, scores, iou_threshold, sigma, min_score, method, offset)
    dets[:kept.shape[0]] = kept.to(dets.dtype)
    return inds


def nms_match(dets, iou_threshold: float):
    """Groups of matched boxes (:func:`raydet.ops.functional.nms_match`)."""
    return fn.nms_match(dets.float(), iou_threshold)


# ----------------------------------------------------------------------------- RoI ops
def _not_max(pool_mode: int) -> None:
    if pool_mode == 0:
        raise OpNotServedError("mmcv op roi_align with pool_mode='max' is not served by raydet (only 'avg', "
                               "torchvision's kernel); see docs/ops.md")


def roi_align_forward(input, rois, output, argmax_y, argmax_x, aligned_height: int, aligned_width: int,
                      spatial_scale: float, sampling_ratio: int, pool_mode: int, aligned: bool):
    """RoIAlign, average pooling (torchvision's kernel, the same bilinear sampling and adaptive
    ``sampling_ratio=0``), into ``output [R, C, h, w]``."""
    _not_max(pool_mode)
    input, = _cpu_float(input)
    output.copy_(torch.ops.torchvision.roi_align(input, rois.to(input.dtype), float(spatial_scale), int(aligned_height),
                                                 int(aligned_width), int(sampling_ratio), bool(aligned)))


def roi_align_backward(grad_output, rois, argmax_y, argmax_x, grad_input, aligned_height: int, aligned_width: int,
                       spatial_scale: float, sampling_ratio: int, pool_mode: int, aligned: bool):
    _not_max(pool_mode)
    n, c, h, w = grad_input.shape
    grad_output, = _cpu_float(grad_output)
    grad_input.copy_(torch.ops.torchvision._roi_align_backward(
        grad_output, rois.to(grad_output.dtype), float(spatial_scale), int(aligned_height), int(aligned_width),
        n, c, h, w, int(sampling_ratio), bool(aligned)))


def roi_pool_forward(input, rois, output, argmax, pooled_height: int, pooled_width: int, spatial_scale: float):
    out, index = fn.roi_pool(input, rois, int(pooled_height), int(pooled_width), float(spatial_scale))
    output.copy_(out)
    argmax.copy_(index)


def roi_pool_backward(grad_output, rois, argmax, grad_input, pooled_height: int, pooled_width: int,
                      spatial_scale: float):
    """Each bin's gradient goes to the pixel that was its maximum (``argmax``, -1: none)."""
    n, c, h, w = grad_input.shape
    flat = grad_input.view(n, c, h * w)
    batch = rois[:, 0].long()
    index = argmax.long().reshape(argmax.shape[0], c, -1)
    grad = grad_output.reshape(grad_output.shape[0], c, -1)
    valid = index >= 0
    for b in batch.unique().tolist():
        sel = batch == b
        flat[b].scatter_add_(1, index[sel].clamp(min=0).permute(1, 0, 2).reshape(c, -1),
                             (grad[sel] * valid[sel]).permute(1, 0, 2).reshape(c, -1))


def deform_roi_pool_forward(input, rois, offset, output, pooled_height: int, pooled_width: int,
                            spatial_scale: float, sampling_ratio: int, gamma: float):
    output.copy_(fn.deform_roi_pool(input, rois, offset, int(pooled_height), int(pooled_width), float(spatial_scale),
                                    int(sampling_ratio), float(gamma)))


def deform_roi_pool_backward(grad_output, input, rois, offset, grad_input, grad_offset, pooled_height: int,
                             pooled_width: int, spatial_scale: float, sampling_ratio: int, gamma: float):
    args = (int(pooled_height), int(pooled_width), float(spatial_scale), int(sampling_ratio), float(gamma))
    if offset.numel():
        g_in, g_off = _grads(lambda x, o: fn.deform_roi_pool(x, rois, o, *args), [input, offset], grad_output)
        _write(grad_offset, g_off)
    else:
        g_in, = _grads(lambda x: fn.deform_roi_pool(x, rois, None, *args), [input], grad_output)
    _write(grad_input, g_in)


# ----------------------------------------------------------------------------- deformable convolution
def _dcn(input, weight, offset, mask=None, bias=None, *, stride, padding, dilation):
    dtype = input.dtype
    input, weight, offset = _cpu_float(input, weight, offset)
    mask = None if mask is None else _cpu_float(mask)[0]
    bias = None if bias is None else _cpu_float(bias)[0]
    out = deform_conv2d(input, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=mask)
    return out.to(dtype)


def deform_conv_forward(input, weight, offset, output, columns, ones, kW, kH, dW, dH, padW, padH, dilationW,
                        dilationH, group, deformable_group, im2col_step):
    """DCN v1 (torchvision's ``deform_conv2d``: the same offset layout, ``(dy, dx)`` per kernel
    tap and deformable group; conv groups from the weight's shape)."""
    output.copy_(_dcn(input, weight, offset, stride=(dH, dW), padding=(padH, padW), dilation=(dilationH, dilationW)))


def deform_conv_backward_input(input, offset, gradOutput, gradInput, gradOffset, weight, columns, kW, kH, dW, dH,
                               padW, padH, dilationW, dilationH, group, deformable_group, im2col_step):
    kw = dict(stride=(dH, dW), padding=(padH, padW), dilation=(dilationH, dilationW))
    g_in, g_off = _grads(lambda x, o: _dcn(x, weight, o, **kw), [input, offset], gradOutput)
    _write(gradInput, g_in)
    _write(gradOffset, g_off)


def deform_conv_backward_parameters(input, offset, gradOutput, gradWeight, columns, ones, kW, kH, dW, dH, padW, padH,
                                    dilationW, dilationH, group, deformable_group, scale, im2col_step):
    kw = dict(stride=(dH, dW), padding=(padH, padW), dilation=(dilationH, dilationW))
    # the output is linear in the weight, so its gradient does not depend on the weight's value
    # (which mmcv does not pass to this kernel)
    g_w, = _grads(lambda w: _dcn(input, w, offset, **kw), [torch.zeros_like(gradWeight)], gradOutput)
    gradWeight.add_(g_w, alpha=scale)


def modulated_deform_conv_forward(input, weight, bias, ones, offset, mask, output, columns, kernel_h, kernel_w,
                                  stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, group, deformable_group,
                                  with_bias):
    """DCN v2 (torchvision's ``deform_conv2d`` with ``mask``)."""
    output.copy_(_dcn(input, weight, offset, mask, bias if with_bias else None, stride=(stride_h, stride_w),
                      padding=(pad_h, pad_w), dilation=(dilation_h, dilation_w)))


def modulated_deform_conv_backward(input, weight, bias, ones, offset, mask, columns, grad_input, grad_weight,
                                   grad_bias, grad_offset, grad_mask, grad_output, kernel_h, kernel_w, stride_h,
                                   stride_w, pad_h, pad_w, dilation_h, dilation_w, group, deformable_group, with_bias):
    kw = dict(stride=(stride_h, stride_w), padding=(pad_h, pad_w), dilation=(dilation_h, dilation_w))
    inputs = [input, weight, offset, mask] + ([bias] if with_bias else [])
    grads = _grads(lambda x, w, o, m, *b: _dcn(x, w, o, m, b[0] if b else None, **kw), inputs, grad_output)
    for dst, g in zip([grad_input, grad_weight, grad_offset, grad_mask] + ([grad_bias] if with_bias else []), grads):
        _write(dst, g)


# ----------------------------------------------------------------------------- focal losses
def sigmoid_focal_loss_forward(input, target, weight, output, gamma: float, alpha: float):
    output.copy_(fn.sigmoid_focal_loss(input, target, gamma, alpha, weight))


def sigmoid_focal_loss_backward(input, target, weight, grad_input, gamma: float, alpha: float):
    g, = _grads(lambda x: fn.sigmoid_focal_loss(x, target, gamma, alpha, weight), [input], torch.ones_like(input))
    _write(grad_input, g)


def softmax_focal_loss_forward(softmax, target, weight, output, gamma: float, alpha: float):
    output.copy_(fn.softmax_focal_loss(softmax, target, gamma, alpha, weight))


def softmax_focal_loss_backward(softmax, target, weight, buff, grad_input, gamma: float, alpha: float):
    grad_input.copy_(fn.softmax_focal_loss_grad(softmax, target, gamma, alpha, weight))


# ----------------------------------------------------------------------------- CARAFE
def carafe_naive_forward(features, masks, output, kernel_size: int, group_size: int, scale_factor: int):
    output.copy_(fn.carafe(features, masks, kernel_size, group_size, scale_factor))


def carafe_naive_backward(grad_output, features, masks, grad_input, grad_masks, kernel_size: int, group_size: int,
                          scale_factor: int):
    g_f, g_m = _grads(lambda f, m: fn.carafe(f, m, kernel_size, group_size, scale_factor), [features, masks],
                      grad_output)
    _write(grad_input, g_f)
    _write(grad_masks, g_m)


def carafe_forward(features, masks, rfeatures, routput, rmasks, output, kernel_size: int, group_size: int,
                   scale_factor: int):
    """CARAFE; ``rfeatures`` keeps the features for the backward kernel (mmcv's kernel keeps a
    channels-last copy there; these kernels use it as they are)."""
    rfeatures.copy_(features)
    carafe_naive_forward(features, masks, output, kernel_size, group_size, scale_factor)


def carafe_backward(grad_output, rfeatures, masks, rgrad_output, rgrad_input_hs, rgrad_input, rgrad_masks,
                    grad_input, grad_masks, kernel_size: int, group_size: int, scale_factor: int):
    carafe_naive_backward(grad_output, rfeatures, masks, grad_input, grad_masks, kernel_size, group_size, scale_factor)


# ----------------------------------------------------------------------------- masked convolution
def masked_im2col_forward(features, mask_h_idx, mask_w_idx, data_col, kernel_h: int, kernel_w: int, pad_h: int,
                          pad_w: int):
    data_col.copy_(fn.masked_im2col(features, mask_h_idx.long(), mask_w_idx.long(), kernel_h, kernel_w, pad_h, pad_w))


def masked_col2im_forward(col, mask_h_idx, mask_w_idx, output, height: int, width: int, channels: int):
    """Scatter ``col [C, M]`` to the masked positions of the first image of ``output``."""
    output[0, :, mask_h_idx.long(), mask_w_idx.long()] = col.to(output.dtype)


# ----------------------------------------------------------------------------- multi-scale deformable attention
def _ms_deform_attn(value, spatial_shapes, sampling_loc, attn_weight):
    from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch
    return multi_scale_deformable_attn_pytorch(value, spatial_shapes, sampling_loc, attn_weight)


def ms_deform_attn_forward(value, spatial_shapes, level_start_index, sampling_loc, attn_weight, im2col_step):
    """mmcv's own PyTorch path (``multi_scale_deformable_attn_pytorch``: ``grid_sample``), on
    any device."""
    return _ms_deform_attn(value, spatial_shapes, sampling_loc, attn_weight)


def ms_deform_attn_backward(value, spatial_shapes, level_start_index, sampling_loc, attn_weight, grad_output,
                            grad_value, grad_sampling_loc, grad_attn_weight, im2col_step):
    grads = _grads(lambda v, s, a: _ms_deform_attn(v, spatial_shapes, s, a), [value, sampling_loc, attn_weight],
                   grad_output)
    for dst, g in zip((grad_value, grad_sampling_loc, grad_attn_weight), grads):
        _write(dst, g)


# ----------------------------------------------------------------------------- build information
def get_compiler_version() -> str:
    """What mmcv's ``collect_env`` reports as the ops' compiler: none, they are raydet's."""
    import torchvision
    return f"none: mmcv ops served by raydet (torchvision {torchvision.__version__} and PyTorch)"


def get_compiling_cuda_version() -> str:
    return "not compiled: mmcv ops served by raydet"


#: the kernels served, by name
SERVED = sorted(name for name, value in list(globals().items())
                if inspect.isfunction(value) and value.__module__ == __name__ and not name.startswith("_"))


def __getattr__(name: str):
    """Any other kernel mmcv names: an attribute (mmcv checks them at import) that raises
    :class:`OpNotServedError` when called."""
    if name.startswith("__"):
        raise AttributeError(name)

    def not_served(*args, **kwargs):
        raise OpNotServedError(f"mmcv op {name!r} (mmcv._ext.{name}) is not served by raydet: no torchvision or "
                               "PyTorch implementation is installed for it; docs/ops.md lists the served ops")

    not_served.__name__ = name
    return not_served
