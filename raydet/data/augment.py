"""mmdet 2.x's photometric and cropping augmentations (SSD's recipe, RandomCrop).

Same names, arguments and order of random draws as mmdet's, with the draws taken from
``results['rng']`` (a ``numpy.random.Generator``; see :mod:`raydet.data.dataset`), so a sample's
augmentation is a pure function of (seed, epoch, index). A transform that returns ``None``
(``RandomCrop`` without any box left and ``allow_negative_crop=False``) makes the dataset draw
the same image's augmentation again from a fresh stream (mmdet picks another image instead).
"""
from __future__ import annotations

import mmcv
import numpy as np

from .mean_ap import bbox_overlaps
from .pipelines import PIPELINES

#: which labels and masks follow a box field when boxes are dropped
BBOX2LABEL = {"gt_bboxes": "gt_labels", "gt_bboxes_ignore": "gt_labels_ignore"}
BBOX2MASK = {"gt_bboxes": "gt_masks", "gt_bboxes_ignore": "gt_masks_ignore"}


def _keep(results, key, keep):
    results[key] = results[key][keep]
    if BBOX2LABEL.get(key) in results:
        results[BBOX2LABEL[key]] = results[BBOX2LABEL[key]][keep]


@PIPELINES.register()
class PhotoMetricDistortion:
    """Each with probability 1/2: brightness ``+U(-d, d)``; contrast ``*U(lo, hi)`` (before or
    after the colour steps, at random); saturation ``*U(lo, hi)`` and hue ``+U(-d, d)`` degrees in
    HSV; a random permutation of the channels. Needs a float32 image
    (``LoadImageFromFile(to_float32=True)``)."""

    def __init__(self, brightness_delta=32, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5), hue_delta=18):
        self.brightness_delta = brightness_delta
        self.contrast_lower, self.contrast_upper = contrast_range
        self.saturation_lower, self.saturation_upper = saturation_range
        self.hue_delta = hue_delta

    def __call__(self, results):
        img = results["img"]
        if img.dtype != np.float32:
            raise TypeError("PhotoMetricDistortion needs a float32 image: set to_float32=True in LoadImageFromFile")
        rng = results["rng"]
        if rng.integers(2):
            img = img + rng.uniform(-self.brightness_delta, self.brightness_delta)
        mode = rng.integers(2)  # 1: contrast first, 0: contrast last
        if mode == 1 and rng.integers(2):
            img = img * rng.uniform(self.contrast_lower, self.contrast_upper)
        img = mmcv.bgr2hsv(img)
        if rng.integers(2):
            img[..., 1] *= rng.uniform(self.saturation_lower, self.saturation_upper)
        if rng.integers(2):
            img[..., 0] += rng.uniform(-self.hue_delta, self.hue_delta)
            img[..., 0][img[..., 0] > 360] -= 360
            img[..., 0][img[..., 0] < 0] += 360
        img = mmcv.hsv2bgr(img)
        if mode == 0 and rng.integers(2):
            img = img * rng.uniform(self.contrast_lower, self.contrast_upper)
        if rng.integers(2):
            img = img[..., rng.permutation(3)]
        results["img"] = np.ascontiguousarray(img, dtype=np.float32)
        return results


@PIPELINES.register()
class Expand:
    """With probability ``prob``: place the image at a random spot of a canvas ``U(ratio_range)``
    times its size, filled with ``mean`` (given in RGB when ``to_rgb``, as ``img_norm_cfg``);
    boxes and masks move with it."""

    def __init__(self, mean=(0, 0, 0), to_rgb=True, ratio_range=(1, 4), seg_ignore_label=None, prob=0.5):
        self.mean = tuple(mean)[::-1] if to_rgb else tuple(mean)  # the image is BGR
        self.min_ratio, self.max_ratio = ratio_range
        self.prob = prob

    def __call__(self, results):
        rng = results["rng"]
        if rng.uniform(0, 1) > self.prob:
            return results
        img = results["img"]
        h, w, c = img.shape
        ratio = rng.uniform(self.min_ratio, self.max_ratio)
        canvas = np.full((int(h * ratio), int(w * ratio), c), self.mean, dtype=img.dtype)
        left, top = int(rng.uniform(0, w * ratio - w)), int(rng.uniform(0, h * ratio - h))
        canvas[top:top + h, left:left + w] = img
        results.update(img=canvas, img_shape=canvas.shape)
        for key in results.get("bbox_fields", []):
            results[key] = results[key] + np.tile((left, top), 2).astype(results[key].dtype)
        for key in results.get("mask_fields", []):
            results[key] = results[key].expand(canvas.shape[0], canvas.shape[1], top, left)
        return results


def _centres_inside(boxes, patch):
    centre = (boxes[:, :2] + boxes[:, 2:4]) / 2
    return ((centre[:, 0] > patch[0]) & (centre[:, 1] > patch[1]) & (centre[:, 0] < patch[2])
            & (centre[:, 1] < patch[3]))


@PIPELINES.register()
class MinIoURandomCrop:
    """SSD's crop: pick a mode from ``(1, *min_ious, 0)`` (1: no crop); for a threshold, try 50
    patches of ``U(min_crop_size, 1)`` of each side with aspect in [1/2, 2] until every box
    overlaps it with IoU >= the threshold and some box centre lies inside; boxes whose centre is
    outside are dropped, the rest clipped and shifted."""

    def __init__(self, min_ious=(0.1, 0.3, 0.5, 0.7, 0.9), min_crop_size=0.3, bbox_clip_border=True):
        self.sample_mode = (1, *min_ious, 0)
        self.min_crop_size, self.bbox_clip_border = min_crop_size, bbox_clip_border

    def __call__(self, results):
        rng = results["rng"]
        img = results["img"]
        fields = results.get("bbox_fields", [])
        boxes = np.concatenate([results[k] for k in fields], 0) if fields else np.zeros((0, 4), np.float32)
        h, w = img.shape[:2]
        while True:
            mode = self.sample_mode[int(rng.integers(len(self.sample_mode)))]
            if mode == 1:
                return results
            for _ in range(50):
                new_w, new_h = rng.uniform(self.min_crop_size * w, w), rng.uniform(self.min_crop_size * h, h)
                if not 0.5 <= new_h / new_w <= 2:
                    continue
                # mmdet calls numpy's uniform(w - new_w), i.e. between 1 and w - new_w; from 0 here
                left, top = rng.uniform(0, w - new_w), rng.uniform(0, h - new_h)
                patch = np.array((int(left), int(top), int(left + new_w), int(top + new_h)))
                if patch[2] == patch[0] or patch[3] == patch[1]:
                    continue
                overlaps = bbox_overlaps(patch.reshape(-1, 4).astype(np.float32), boxes.reshape(-1, 4)).reshape(-1)
                if len(overlaps) and overlaps.min() < mode:
                    continue
                if len(overlaps):
                    if not _centres_inside(boxes, patch).any():
                        continue
                    for key in fields:
                        inside = _centres_inside(results[key], patch)
                        _keep(results, key, inside)
                        kept = results[key].copy()
                        if self.bbox_clip_border:
                            kept[:, 2:] = kept[:, 2:].clip(max=patch[2:])
                            kept[:, :2] = kept[:, :2].clip(min=patch[:2])
                        results[key] = kept - np.tile(patch[:2], 2).astype(kept.dtype)
                        if BBOX2MASK.get(key) in results:
                            results[BBOX2MASK[key]] = results[BBOX2MASK[key]].select(inside).crop(patch)
                img = img[patch[1]:patch[3], patch[0]:patch[2]]
                results.update(img=img, img_shape=img.shape)
                return results


@PIPELINES.register()
class RandomCrop:
    """Crop a random window of ``crop_size`` (h, w): ``'absolute'`` pixels, ``'absolute_range'``
    a random size between ``crop_size[0]`` and ``crop_size[1]`` pixels per side, ``'relative'``
    a fraction of the image, ``'relative_range'`` a random fraction in ``[crop_size, 1]``. Boxes are
    shifted (and clipped, with ``bbox_clip_border``); empty ones are dropped with their labels and
    masks. Without any ``gt_bboxes`` left the sample is redrawn unless ``allow_negative_crop``.
    ``recompute_bbox`` sets the boxes from the cropped masks."""

    TYPES = ("relative_range", "relative", "absolute", "absolute_range")

    def __init__(self, crop_size, crop_type="absolute", allow_negative_crop=False, recompute_bbox=False,
                 bbox_clip_border=True):
        if crop_type not in self.TYPES:
            raise ValueError(f"RandomCrop.crop_type must be one of {self.TYPES}, got {crop_type!r}")
        if crop_type in ("absolute", "absolute_range") and not all(int(v) == v and v > 0 for v in crop_size):
            raise ValueError(f"RandomCrop.crop_size must be positive pixels for {crop_type}, got {crop_size}")
        if crop_type in ("relative", "relative_range") and not all(0 < v <= 1 for v in crop_size):
            raise ValueError(f"RandomCrop.crop_size must be fractions in (0, 1] for {crop_type}, got {crop_size}")
        self.crop_size, self.crop_type = tuple(crop_size), crop_type
        self.allow_negative_crop, self.recompute_bbox = allow_negative_crop, recompute_bbox
        self.bbox_clip_border = bbox_clip_border

    def _size(self, h, w, rng):
        if self.crop_type == "absolute":
            return min(self.crop_size[0], h), min(self.crop_size[1], w)
        if self.crop_type == "absolute_range":
            lo, hi = self.crop_size
            return (int(rng.integers(min(h, lo), min(h, hi) + 1)), int(rng.integers(min(w, lo), min(w, hi) + 1)))
        if self.crop_type == "relative":
            return int(h * self.crop_size[0] + 0.5), int(w * self.crop_size[1] + 0.5)
        size = np.asarray(self.crop_size, np.float32)
        ch, cw = size + rng.random(2) * (1 - size)
        return int(h * ch + 0.5), int(w * cw + 0.5)

    def __call__(self, results):
        rng = results["rng"]
        h, w = results["img"].shape[:2]
        crop_h, crop_w = self._size(h, w, rng)
        off_h, off_w = int(rng.integers(0, max(h - crop_h, 0) + 1)), int(rng.integers(0, max(w - crop_w, 0) + 1))
        box = np.array([off_w, off_h, off_w + crop_w, off_h + crop_h])
        for key in results.get("img_fields", ["img"]):
            results[key] = results[key][off_h:off_h + crop_h, off_w:off_w + crop_w]
        shape = results["img"].shape
        results["img_shape"] = shape
        for key in results.get("bbox_fields", []):
            boxes = results[key] - np.array([off_w, off_h, off_w, off_h], np.float32)
            if self.bbox_clip_border:
                boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, shape[1])
                boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, shape[0])
            valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            if key == "gt_bboxes" and not valid.any() and not self.allow_negative_crop:
                return None
            results[key] = boxes
            _keep(results, key, valid)
            if BBOX2MASK.get(key) in results:
                results[BBOX2MASK[key]] = results[BBOX2MASK[key]].select(valid).crop(box)
                if self.recompute_bbox:
                    results[key] = _mask_boxes(results[BBOX2MASK[key]])
        return results


def _mask_boxes(masks) -> np.ndarray:
    """Tight boxes of polygon masks (``[N, 4]`` float32)."""
    out = np.zeros((len(masks), 4), np.float32)
    for i, inst in enumerate(masks.polygons):
        xy = np.concatenate([p.reshape(-1, 2) for p in inst]) if inst else np.zeros((0, 2))
        if len(xy):
            out[i] = [xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()]
    return out
