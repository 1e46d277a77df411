"""mmdet-2.x pipeline transforms (names, arguments and ``results`` keys), written on ``mmcv.image``.

Each transform is a callable on the ``results`` dict. ``img_shape`` is the shape after resizing
(``(h, w, 3)``) and is kept by :class:`Pad`, which records ``pad_shape`` separately (mmcv 2.x's
own transforms overwrite it). Box coordinates are pixels ``[x1, y1, x2, y2]`` with mmdet 2.x's
convention (a horizontal flip maps ``x`` to ``w - x``).

Randomness: random transforms draw only from ``results['rng']``, a ``numpy.random.Generator``
that the dataset seeds from ``(seed, epoch, sample index)``. See :mod:`raydet.data.dataset`.
"""
from __future__ import annotations

import copy
import os.path as osp

import mmcv
import numpy as np
import torch

from ..errors import DataError
from ..registry import Registry

PIPELINES = Registry("pipeline transform")


class PolygonMasks:
    """Instance masks as polygons: one list of flat ``[x0, y0, x1, y1, ...]`` arrays per instance.

    Geometric transforms act on the coordinates; :meth:`to_tensor` rasterises at the end of the
    pipeline, so resizing never blurs a mask.
    """

    def __init__(self, polygons: list, height: int, width: int):
        self.polygons = [[np.asarray(p, np.float64) for p in inst] for inst in polygons]
        self.height, self.width = height, width

    def __len__(self):
        return len(self.polygons)

    def _map(self, fn):
        return [[fn(p.copy()) for p in inst] for inst in self.polygons]

    def rescale(self, w_scale: float, h_scale: float, new_shape) -> "PolygonMasks":
        def f(p):
            p[0::2] *= w_scale
            p[1::2] *= h_scale
            return p
        return PolygonMasks(self._map(f), new_shape[0], new_shape[1])

    def flip(self, direction: str) -> "PolygonMasks":
        def f(p):
            if direction in ("horizontal", "diagonal"):
                p[0::2] = self.width - p[0::2]
            if direction in ("vertical", "diagonal"):
                p[1::2] = self.height - p[1::2]
            return p
        return PolygonMasks(self._map(f), self.height, self.width)

    def expand(self, height: int, width: int, top: int, left: int) -> "PolygonMasks":
        """On a larger canvas of ``(height, width)`` with the image at ``(top, left)``."""
        def f(p):
            p[0::2] += left
            p[1::2] += top
            return p
        return PolygonMasks(self._map(f), height, width)

    def crop(self, box) -> "PolygonMasks":
        """The part inside ``box = (x1, y1, x2, y2)``, in the crop's coordinates (clipped)."""
        x1, y1, x2, y2 = (float(v) for v in box)

        def f(p):
            p[0::2] = np.clip(p[0::2] - x1, 0, x2 - x1)
            p[1::2] = np.clip(p[1::2] - y1, 0, y2 - y1)
            return p
        return PolygonMasks(self._map(f), int(y2 - y1), int(x2 - x1))

    def select(self, keep: np.ndarray) -> "PolygonMasks":
        return PolygonMasks([self.polygons[i] for i in np.flatnonzero(keep)], self.height, self.width)

    def to_ndarray(self, height: int | None = None, width: int | None = None) -> np.ndarray:
        """``uint8 [N, H, W]`` masks, rasterised on a canvas of ``(height, width)`` (the padded size)."""
        from pycocotools import mask as mask_util
        h, w = height or self.height, width or self.width
        out = np.zeros((len(self.polygons), h, w), np.uint8)
        for i, inst in enumerate(self.polygons):
            rles = mask_util.frPyObjects([p.tolist() for p in inst if len(p) >= 6], h, w)
            if rles:
                out[i] = mask_util.decode(mask_util.merge(rles))
        return out


@PIPELINES.register()
class LoadImageFromFile:
    """Read ``results['img_info']['filename']`` under ``img_prefix``. Raises :class:`DataError`
    naming the file when it is missing or cannot be decoded."""

    def __init__(self, to_float32: bool = False, color_type: str = "color", channel_order: str = "bgr"):
        self.to_float32, self.color_type, self.channel_order = to_float32, color_type, channel_order

    def __call__(self, results):
        prefix = results.get("img_prefix")
        name = results["img_info"]["filename"]
        filename = osp.join(prefix, name) if prefix else name
        if not osp.isfile(filename):
            raise DataError(f"image file not found: {filename}")
        with open(filename, "rb") as f:
            buf = f.read()
        try:  # an empty or truncated file: OpenCV raises rather than returning None
            img = mmcv.imfrombytes(buf, flag=self.color_type, channel_order=self.channel_order) if buf else None
        except Exception:  # cv2.error is not importable by name everywhere; any decoder failure
            img = None
        if img is None:
            raise DataError(f"cannot decode image (corrupt or not an image): {filename}")
        info = results["img_info"]
        if "width" in info and "height" in info and (img.shape[1], img.shape[0]) != (info["width"], info["height"]):
            raise DataError(f"image {filename} decodes to {img.shape[1]}x{img.shape[0]} but its annotations give "
                            f"width={info['width']}, height={info['height']}")
        if self.to_float32:
            img = img.astype(np.float32)
        results.update(filename=filename, ori_filename=name, img=img, img_shape=img.shape,
                       ori_shape=img.shape, img_fields=["img"])
        return results


@PIPELINES.register()
class LoadImageFromWebcam(LoadImageFromFile):
    """mmdet's loader for an image already in memory: ``results['img']``, a BGR ``uint8
    [H, W, 3]`` array (what ``inference_detector`` swaps in for ``LoadImageFromFile``), named by
    ``results['filename']`` if given."""

    def __call__(self, results):
        img = results["img"]
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3:
            raise DataError(f"expected a BGR image array [H, W, 3], got {getattr(img, 'shape', type(img))}")
        if self.to_float32:
            img = img.astype(np.float32)
        name = results.get("filename")  # the image's name when the caller decoded a file itself
        results.update(filename=name, ori_filename=name, img=img, img_shape=img.shape, ori_shape=img.shape,
                       img_fields=["img"])
        return results


@PIPELINES.register()
class LoadAnnotations:
    """Copy ``ann_info`` into ``gt_bboxes`` (float32 ``[N, 4]``), ``gt_labels`` (int64 ``[N]``),
    ``gt_bboxes_ignore`` (when the dataset has ignored boxes) and ``gt_masks`` (:class:`PolygonMasks`)."""

    def __init__(self, with_bbox: bool = True, with_label: bool = True, with_mask: bool = False,
                 poly2mask: bool = True):
        self.with_bbox, self.with_label, self.with_mask = with_bbox, with_label, with_mask

    def __call__(self, results):
        ann = results["ann_info"]
        results.setdefault("bbox_fields", [])
        results.setdefault("mask_fields", [])
        if self.with_bbox:
            results["gt_bboxes"] = ann["bboxes"].copy()
            results["bbox_fields"].append("gt_bboxes")
            if ann.get("bboxes_ignore") is not None:  # VOC's difficult boxes: transformed alike
                results["gt_bboxes_ignore"] = ann["bboxes_ignore"].copy()
                results["bbox_fields"].append("gt_bboxes_ignore")
        if self.with_label:
            results["gt_labels"] = ann["labels"].copy()
        if self.with_mask:
            h, w = results["img_info"]["height"], results["img_info"]["width"]
            results["gt_masks"] = PolygonMasks(ann["masks"], h, w)
            results["mask_fields"].append("gt_masks")
        return results


@PIPELINES.register()
class Resize:
    """Resize to ``img_scale`` (``(long, short)`` with ``keep_ratio``, else ``(w, h)``).

    Several scales: ``multiscale_mode='range'`` draws long and short edges uniformly between the
    two given scales, ``'value'`` picks one; ``ratio_range`` scales the single given scale.
    A ``results['scale']`` set upstream (MultiScaleFlipAug) wins. Sets ``img_shape``,
    ``scale_factor`` (float32 ``[w, h, w, h]``), ``keep_ratio``; boxes are scaled and clipped.
    """

    def __init__(self, img_scale=None, multiscale_mode: str = "range", ratio_range=None,
                 keep_ratio: bool = True, bbox_clip_border: bool = True, interpolation: str = "bilinear"):
        if img_scale is None:
            self.img_scale = None
        else:
            # a JSON/YAML config writes the tuple (w, h) as a list of two numbers: one scale
            one = isinstance(img_scale, list) and len(img_scale) == 2 and all(
                isinstance(v, (int, float)) for v in img_scale)
            self.img_scale = [img_scale] if one or not isinstance(img_scale, list) else img_scale
            self.img_scale = [tuple(s) for s in self.img_scale]
        if multiscale_mode not in ("range", "value"):
            raise ValueError(f"Resize.multiscale_mode must be 'range' or 'value', got {multiscale_mode}")
        if ratio_range is not None and len(self.img_scale or []) != 1:
            raise ValueError("Resize.ratio_range needs exactly one img_scale")
        self.multiscale_mode, self.ratio_range = multiscale_mode, ratio_range
        self.keep_ratio, self.bbox_clip_border, self.interpolation = keep_ratio, bbox_clip_border, interpolation

    def _pick_scale(self, rng):
        if self.ratio_range is not None:
            ratio = rng.uniform(*self.ratio_range)
            return int(self.img_scale[0][0] * ratio), int(self.img_scale[0][1] * ratio)
        if len(self.img_scale) == 1:
            return self.img_scale[0]
        if self.multiscale_mode == "value":
            return self.img_scale[int(rng.integers(len(self.img_scale)))]
        longs = [max(s) for s in self.img_scale]
        shorts = [min(s) for s in self.img_scale]
        return (int(rng.integers(min(longs), max(longs) + 1)),
                int(rng.integers(min(shorts), max(shorts) + 1)))

    def __call__(self, results):
        if "scale" not in results:
            if "scale_factor" in results:  # MultiScaleFlipAug(scale_factor=...)
                h, w = results["img"].shape[:2]
                sf = results["scale_factor"]
                results["scale"] = (int(w * sf + 0.5), int(h * sf + 0.5))
            else:
                results["scale"] = self._pick_scale(results.get("rng"))
        img = results["img"]
        h, w = img.shape[:2]
        if self.keep_ratio:
            img = mmcv.imrescale(img, results["scale"], interpolation=self.interpolation)
        else:
            img = mmcv.imresize(img, results["scale"], interpolation=self.interpolation)
        new_h, new_w = img.shape[:2]
        w_scale, h_scale = new_w / w, new_h / h
        scale_factor = np.array([w_scale, h_scale, w_scale, h_scale], dtype=np.float32)
        results.update(img=img, img_shape=img.shape, pad_shape=img.shape, scale_factor=scale_factor,
                       keep_ratio=self.keep_ratio)
        for key in results.get("bbox_fields", []):
            boxes = results[key] * scale_factor
            if self.bbox_clip_border:
                boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, new_w)
                boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, new_h)
            results[key] = boxes
        for key in results.get("mask_fields", []):
            results[key] = results[key].rescale(w_scale, h_scale, img.shape[:2])
        return results


def bbox_flip(bboxes: np.ndarray, img_shape, direction: str) -> np.ndarray:
    """Flip ``[N, 4k]`` boxes inside an image of ``img_shape`` (``w - x`` convention)."""
    flipped = bboxes.copy()
    h, w = img_shape[:2]
    if direction in ("horizontal", "diagonal"):
        flipped[..., 0::4] = w - bboxes[..., 2::4]
        flipped[..., 2::4] = w - bboxes[..., 0::4]
    if direction in ("vertical", "diagonal"):
        flipped[..., 1::4] = h - bboxes[..., 3::4]
        flipped[..., 3::4] = h - bboxes[..., 1::4]
    return flipped


@PIPELINES.register()
class RandomFlip:
    """Flip with probability ``flip_ratio`` (a float, or a list matching ``direction``)."""

    def __init__(self, flip_ratio=None, direction="horizontal"):
        self.flip_ratio, self.direction = flip_ratio, direction
        directions = direction if isinstance(direction, list) else [direction]
        for d in directions:
            if d not in ("horizontal", "vertical", "diagonal"):
                raise ValueError(f"RandomFlip.direction must be horizontal/vertical/diagonal, got {d}")

    def __call__(self, results):
        if "flip" not in results:
            directions = self.direction if isinstance(self.direction, list) else [self.direction]
            if self.flip_ratio is None:
                choice = None
            else:
                ratios = (self.flip_ratio if isinstance(self.flip_ratio, list)
                          else [self.flip_ratio / len(directions)] * len(directions))
                probs = list(ratios) + [1 - sum(ratios)]
                pick = int(results["rng"].choice(len(probs), p=probs))
                choice = directions[pick] if pick < len(directions) else None
            results["flip"] = choice is not None
            results["flip_direction"] = choice
        elif results["flip"] and "flip_direction" not in results:
            results["flip_direction"] = self.direction if isinstance(self.direction, str) else self.direction[0]
        if results["flip"]:
            d = results["flip_direction"]
            for key in results.get("img_fields", ["img"]):
                results[key] = mmcv.imflip(results[key], direction=d)
            for key in results.get("bbox_fields", []):
                results[key] = bbox_flip(results[key], results["img_shape"], d)
            for key in results.get("mask_fields", []):
                results[key] = results[key].flip(d)
        return results


@PIPELINES.register()
class Normalize:
    """``(img - mean) / std`` in float32, after BGR->RGB when ``to_rgb``."""

    def __init__(self, mean, std, to_rgb: bool = True):
        self.mean = np.array(mean, dtype=np.float32)
        self.std = np.array(std, dtype=np.float32)
        self.to_rgb = to_rgb

    def __call__(self, results):
        for key in results.get("img_fields", ["img"]):
            results[key] = mmcv.imnormalize(results[key], self.mean, self.std, self.to_rgb)
        results["img_norm_cfg"] = dict(mean=self.mean, std=self.std, to_rgb=self.to_rgb)
        return results


@PIPELINES.register()
class Pad:
    """Pad to ``size`` (h, w), to a multiple of ``size_divisor``, or (``pad_to_square``) to a
    square of the longer side; keeps ``img_shape``. ``pad_val``: a number, or mmdet's
    ``dict(img=0, masks=0, seg=255)`` (masks stay polygons, so only ``img`` applies)."""

    def __init__(self, size=None, size_divisor=None, pad_to_square: bool = False, pad_val=0):
        if pad_to_square:
            if size is not None or size_divisor is not None:
                raise ValueError("Pad(pad_to_square=True) takes neither size nor size_divisor")
        elif (size is None) == (size_divisor is None):
            raise ValueError("Pad needs exactly one of size and size_divisor (or pad_to_square=True)")
        if isinstance(pad_val, dict):
            unknown = set(pad_val) - {"img", "masks", "seg"}
            if unknown:
                raise ValueError(f"Pad.pad_val keys must be img, masks, seg; got {sorted(unknown)}")
            pad_val = pad_val.get("img", 0)
        self.size, self.size_divisor, self.pad_val = size, size_divisor, pad_val
        self.pad_to_square = pad_to_square

    def _value(self, img):
        # a plain number reaches cv2 as Scalar(v, 0, 0, 0), padding only the first channel with it
        if isinstance(self.pad_val, (int, float)) and img.ndim == 3:
            return (self.pad_val,) * img.shape[2]
        return self.pad_val

    def __call__(self, results):
        for key in results.get("img_fields", ["img"]):
            value = self._value(results[key])
            if self.pad_to_square:
                side = max(results[key].shape[:2])
                padded = mmcv.impad(results[key], shape=(side, side), pad_val=value)
            elif self.size is not None:
                padded = mmcv.impad(results[key], shape=self.size, pad_val=value)
            else:
                padded = mmcv.impad_to_multiple(results[key], self.size_divisor, pad_val=value)
            results[key] = padded
        results.update(pad_shape=results["img"].shape, pad_fixed_size=self.size,
                       pad_size_divisor=self.size_divisor)
        return results


def _to_tensor(data) -> torch.Tensor:
    if isinstance(data, torch.Tensor):
        return data
    if isinstance(data, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(data))
    if isinstance(data, (int, float)):
        return torch.tensor(data)
    raise TypeError(f"cannot convert {type(data).__name__} to a tensor")


def _image_to_tensor(img: np.ndarray) -> torch.Tensor:
    if img.ndim < 3:
        img = img[..., None]
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


@PIPELINES.register()
class ImageToTensor:
    """HWC arrays under ``keys`` become CHW tensors."""

    def __init__(self, keys):
        self.keys = keys

    def __call__(self, results):
        for key in self.keys:
            results[key] = _image_to_tensor(results[key])
        return results


@PIPELINES.register()
class DefaultFormatBundle:
    """Format the common fields: ``img`` -> CHW float tensor; ``gt_bboxes``/``gt_labels`` ->
    tensors; ``gt_masks`` -> ``uint8 [N, pad_h, pad_w]`` tensor. Fills default ``pad_shape``,
    ``scale_factor`` and ``img_norm_cfg`` when earlier steps did not set them."""

    def __call__(self, results):
        img = results["img"]
        results.setdefault("pad_shape", img.shape)
        results.setdefault("scale_factor", np.ones(4, dtype=np.float32))
        results.setdefault("img_norm_cfg", dict(mean=np.zeros(3, np.float32),
                                                std=np.ones(3, np.float32), to_rgb=False))
        results["img"] = _image_to_tensor(img.astype(np.float32, copy=False))
        for key in ("proposals", "gt_bboxes", "gt_bboxes_ignore", "gt_labels"):
            if key in results:
                results[key] = _to_tensor(results[key])
        if "gt_masks" in results:
            h, w = results["pad_shape"][:2]
            results["gt_masks"] = torch.from_numpy(results["gt_masks"].to_ndarray(h, w))
        return results


DEFAULT_META_KEYS = ("filename", "ori_filename", "ori_shape", "img_shape", "pad_shape",
                     "scale_factor", "flip", "flip_direction", "img_norm_cfg")


@PIPELINES.register()
class Collect:
    """Keep ``keys`` and gather ``meta_keys`` into ``img_metas`` (a plain dict per image)."""

    def __init__(self, keys, meta_keys=DEFAULT_META_KEYS):
        self.keys, self.meta_keys = keys, meta_keys

    def __call__(self, results):
        out = {"img_metas": {k: results[k] for k in self.meta_keys if k in results}}
        for key in self.keys:
            if key not in results:
                raise KeyError(f"Collect: '{key}' is not in the results; have {sorted(results)}")
            out[key] = results[key]
        return out


@PIPELINES.register()
class MultiScaleFlipAug:
    """Test-time augmentation: run ``transforms`` once per (scale, flip) and return a dict of
    lists (``{'img': [aug0, aug1, ...], 'img_metas': [...]}``)."""

    def __init__(self, transforms, img_scale=None, scale_factor=None, flip: bool = False,
                 flip_direction="horizontal"):
        if (img_scale is None) == (scale_factor is None):
            raise ValueError("MultiScaleFlipAug needs exactly one of img_scale and scale_factor")
        self.transforms = Compose(transforms)
        if img_scale is not None:
            self.scales = [tuple(s) for s in (img_scale if isinstance(img_scale, list) else [img_scale])]
            self.scale_key = "scale"
        else:
            self.scales = scale_factor if isinstance(scale_factor, list) else [scale_factor]
            self.scale_key = "scale_factor"
        self.flip = flip
        self.flip_direction = flip_direction if isinstance(flip_direction, list) else [flip_direction]

    def __call__(self, results):
        flips = [(False, None)] + ([(True, d) for d in self.flip_direction] if self.flip else [])
        augs = []
        for scale in self.scales:
            for flip, direction in flips:
                r = copy.copy(results)
                r.update({self.scale_key: scale, "flip": flip, "flip_direction": direction})
                augs.append(self.transforms(r))
        return {key: [a[key] for a in augs] for key in augs[0]}


class Compose:
    """Apply transforms in order; a transform returning ``None`` drops the sample."""

    def __init__(self, transforms):
        self.transforms = [PIPELINES.build(t, "pipeline") if isinstance(t, dict) else t
                           for t in transforms]

    def __call__(self, results):
        for t in self.transforms:
            results = t(results)
            if results is None:
                return None
        return results
