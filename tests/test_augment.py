"""mmdet 2.x's PhotoMetricDistortion, Expand, MinIoURandomCrop, RandomCrop and Pad options."""
import numpy as np
import pytest

from raydet.data import PIPELINES, SampleKey
from raydet.data.dataset import run_pipeline
from raydet.errors import DataError


def _results(seed=0, h=60, w=100, boxes=((10, 10, 30, 40), (50, 20, 90, 50)), dtype=np.uint8):
    img = np.random.default_rng(99).integers(0, 255, (h, w, 3)).astype(dtype)
    return dict(img=img, img_shape=img.shape, gt_bboxes=np.array(boxes, np.float32).reshape(-1, 4),
                gt_labels=np.arange(len(boxes)), bbox_fields=["gt_bboxes"], rng=np.random.default_rng(seed))


def test_expand_places_the_image_on_a_mean_filled_canvas():
    expand = PIPELINES.build(dict(type="Expand", mean=[10, 20, 30], to_rgb=True, ratio_range=(2, 3), prob=1.0))
    r = _results(seed=4)
    img = r["img"].copy()
    out = expand(r)
    draws = np.random.default_rng(4)
    assert draws.uniform(0, 1) <= 1.0
    ratio = draws.uniform(2, 3)
    left, top = int(draws.uniform(0, 100 * ratio - 100)), int(draws.uniform(0, 60 * ratio - 60))
    assert out["img"].shape == (int(60 * ratio), int(100 * ratio), 3)
    assert np.array_equal(out["img"][top:top + 60, left:left + 100], img)
    assert out["img"][0, 0].tolist() == [30, 20, 10] or (top, left) == (0, 0)  # BGR of the RGB mean
    assert out["gt_bboxes"].tolist() == [[10 + left, 10 + top, 30 + left, 40 + top], [50 + left, 20 + top, 90 + left, 50 + top]]
    never = PIPELINES.build(dict(type="Expand", prob=0.0))
    assert never(_results())["img"].shape == (60, 100, 3)


def test_min_iou_random_crop_keeps_boxes_whose_centre_is_inside_and_is_a_pure_function():
    crop = PIPELINES.build(dict(type="MinIoURandomCrop", min_ious=(0.1, 0.3), min_crop_size=0.3))
    shapes = set()
    for seed in range(40):
        out = crop(_results(seed))
        again = crop(_results(seed))
        assert np.array_equal(out["img"], again["img"]) and np.array_equal(out["gt_bboxes"], again["gt_bboxes"])
        h, w = out["img"].shape[:2]
        shapes.add((h, w))
        boxes = out["gt_bboxes"]
        assert len(boxes) == len(out["gt_labels"]) >= 1
        assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= w).all() and (boxes[:, 1::2] <= h).all()
        assert out["img_shape"] == out["img"].shape
    assert (60, 100) in shapes and len(shapes) > 5  # mode 1 (no crop) and real crops both happen


def test_min_iou_crop_respects_the_threshold():
    crop = PIPELINES.build(dict(type="MinIoURandomCrop", min_ious=(0.9,), min_crop_size=0.3))
    crop.sample_mode = (0.9,)  # only the 0.9 threshold (no "no crop" 1, no "any overlap" 0)
    cropped = 0
    for seed in range(20):
        out = crop(_results(seed, boxes=((5, 5, 95, 55),)))  # one box of 90 x 50 covering most of the image
        h, w = out["img"].shape[:2]
        cropped += (h, w) != (60, 100)
        (x1, y1, x2, y2), = out["gt_bboxes"]  # clipped to the crop: the intersection
        inter = (x2 - x1) * (y2 - y1)
        assert inter / (w * h + 90 * 50 - inter) >= 0.9 - 1e-6
    assert cropped > 0


def test_random_crop_absolute_shifts_and_drops_boxes():
    crop = PIPELINES.build(dict(type="RandomCrop", crop_size=(20, 30), allow_negative_crop=True))
    r = _results(seed=7)
    out = crop(r)
    draws = np.random.default_rng(7)
    off_h, off_w = int(draws.integers(0, 41)), int(draws.integers(0, 71))
    assert out["img"].shape == (20, 30, 3) and out["img_shape"] == (20, 30, 3)
    expected = np.array([[10, 10, 30, 40], [50, 20, 90, 50]], np.float32) - [off_w, off_h, off_w, off_h]
    expected[:, 0::2] = expected[:, 0::2].clip(0, 30)
    expected[:, 1::2] = expected[:, 1::2].clip(0, 20)
    keep = (expected[:, 2] > expected[:, 0]) & (expected[:, 3] > expected[:, 1])
    assert np.array_equal(out["gt_bboxes"], expected[keep]) and out["gt_labels"].tolist() == np.flatnonzero(keep).tolist()
    relative = PIPELINES.build(dict(type="RandomCrop", crop_size=(0.5, 0.25), crop_type="relative",
                                    allow_negative_crop=True))
    assert relative(_results())["img"].shape == (30, 25, 3)
    with pytest.raises(ValueError, match="crop_type"):
        PIPELINES.build(dict(type="RandomCrop", crop_size=(1, 1), crop_type="square"))


def test_a_crop_without_boxes_is_redrawn_and_repeated_drops_name_the_image():
    crop = PIPELINES.build(dict(type="RandomCrop", crop_size=(10, 10)))
    dropped = [seed for seed in range(30) if crop(_results(seed, boxes=((0, 0, 12, 12),))) is None]
    assert dropped  # most 10x10 windows of a 60x100 image miss a 12x12 corner box
    calls = []

    def pipeline(results):
        calls.append(float(results["rng"].random()))
        return None if len(calls) < 3 else results

    key = SampleKey(5, 2)
    out = run_pipeline(pipeline, lambda rng: dict(rng=rng), 0, key, "img5.jpg")
    first = list(calls)
    calls.clear()
    run_pipeline(pipeline, lambda rng: dict(rng=rng), 0, key, "img5.jpg")
    assert out is not None and calls == first and len(set(first)) == 3  # fresh, reproducible draws
    with pytest.raises(DataError, match=r"dropped img5.jpg \(index 5\) 11 times"):
        run_pipeline(lambda r: None, lambda rng: dict(rng=rng), 0, key, "img5.jpg")


def test_photometric_distortion_needs_float32_and_is_a_pure_function():
    pmd = PIPELINES.build(dict(type="PhotoMetricDistortion"))
    with pytest.raises(TypeError, match="to_float32=True"):
        pmd(_results())
    outs = [pmd(_results(seed, dtype=np.float32))["img"] for seed in (1, 1, 2)]
    assert outs[0].dtype == np.float32 and outs[0].shape == (60, 100, 3)
    assert np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[0], outs[2])


def test_pad_to_square_and_pad_val_dict():
    square = PIPELINES.build(dict(type="Pad", pad_to_square=True, pad_val=dict(img=7, masks=0, seg=255)))
    out = square(_results())
    assert out["img"].shape == (100, 100, 3) and out["img"][99, 0].tolist() == [7, 7, 7]
    assert out["img_shape"] == (60, 100, 3) and out["pad_shape"] == (100, 100, 3)
    with pytest.raises(ValueError, match="pad_to_square"):
        PIPELINES.build(dict(type="Pad", pad_to_square=True, size_divisor=32))
