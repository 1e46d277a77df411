import numpy as np
import pytest
import torch

from raydet.data import Compose, PolygonMasks, build_dataloader
from raydet.data.pipelines import Collect, DefaultFormatBundle, Pad, RandomFlip, Resize

from .conftest import TRAIN_PIPELINE


def _results(h=60, w=80):
    img = np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3)
    return dict(img=img, img_shape=img.shape, ori_shape=img.shape, img_fields=["img"],
                gt_bboxes=np.array([[10, 20, 30, 50]], np.float32), bbox_fields=["gt_bboxes"],
                gt_labels=np.array([1]), rng=np.random.default_rng(0))


def test_resize_keep_ratio_shape_and_scale_factor():
    r = Resize(img_scale=(1333, 800), keep_ratio=True)(_results(60, 80))
    # 80x60 -> limited by 800/60 vs 1333/80: scale 13.333 (short side) -> 1067x800
    assert r["img_shape"] == (800, 1067, 3)
    np.testing.assert_allclose(r["scale_factor"], [1067 / 80, 800 / 60, 1067 / 80, 800 / 60], rtol=1e-6)
    np.testing.assert_allclose(r["gt_bboxes"], [[10 * 1067 / 80, 20 * 800 / 60, 30 * 1067 / 80, 50 * 800 / 60]],
                               rtol=1e-5)


def test_resize_no_keep_ratio():
    r = Resize(img_scale=(40, 30), keep_ratio=False)(_results(60, 80))
    assert r["img_shape"] == (30, 40, 3)
    np.testing.assert_allclose(r["scale_factor"], [0.5, 0.5, 0.5, 0.5])


def test_pad_keeps_img_shape_and_sets_pad_shape():
    r = Resize(img_scale=(1333, 800), keep_ratio=True)(_results(60, 80))
    r = Pad(size_divisor=32)(r)
    assert r["img_shape"] == (800, 1067, 3)
    assert r["pad_shape"] == (800, 1088, 3)
    assert r["img"].shape == (800, 1088, 3)
    assert (r["img"][:, 1067:] == 0).all()


def test_horizontal_flip_maps_known_box():
    r = _results(60, 80)
    r["flip"], r["flip_direction"] = True, "horizontal"
    original = r["img"].copy()
    r = RandomFlip(flip_ratio=0.5)(r)
    np.testing.assert_array_equal(r["gt_bboxes"], [[50, 20, 70, 50]])  # x -> 80 - x
    np.testing.assert_array_equal(r["img"], original[:, ::-1])


def test_vertical_flip_and_masks():
    r = _results(60, 80)
    r["gt_masks"] = PolygonMasks([[np.array([10, 20, 30, 20, 30, 50, 10, 50.0])]], 60, 80)
    r["mask_fields"] = ["gt_masks"]
    r["flip"], r["flip_direction"] = True, "vertical"
    r = RandomFlip()(r)
    np.testing.assert_array_equal(r["gt_bboxes"], [[10, 10, 30, 40]])
    mask = r["gt_masks"].to_ndarray()[0]
    ys, xs = np.nonzero(mask)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (10, 39, 10, 29)


def test_flip_ratio_draws_from_the_sample_rng():
    flips = [RandomFlip(flip_ratio=0.5)(dict(_results(), rng=np.random.default_rng(i)))["flip"] for i in range(200)]
    assert 60 < sum(flips) < 140
    again = [RandomFlip(flip_ratio=0.5)(dict(_results(), rng=np.random.default_rng(i)))["flip"] for i in range(200)]
    assert flips == again


def test_format_bundle_and_collect_meta():
    r = Pad(size_divisor=32)(Resize(img_scale=(100, 50), keep_ratio=True)(_results(60, 80)))
    r["img"] = r["img"].astype(np.float32)
    out = Collect(keys=["img", "gt_bboxes", "gt_labels"])(DefaultFormatBundle()(r))
    assert out["img"].shape == (3, 64, 96) and out["img"].dtype == torch.float32
    assert set(out["img_metas"]) >= {"ori_shape", "img_shape", "pad_shape", "scale_factor"}
    assert out["gt_bboxes"].dtype == torch.float32


def test_unknown_transform_is_named():
    from raydet.errors import ConfigError
    with pytest.raises(ConfigError, match="unknown pipeline transform type 'Resise'.*did you mean 'Resize'"):
        Compose([dict(type="Resise")])


def _epoch_samples(dataset, workers):
    loader = build_dataloader(dataset, samples_per_gpu=4, workers_per_gpu=workers, seed=7, persistent_workers=False)
    loader.sampler.set_epoch(1)
    return [(tuple(m["filename"] for m in b["img_metas"]), b["img"].clone(), [x.clone() for x in b["gt_bboxes"]])
            for b in loader]


def test_augmentation_is_a_function_of_seed_epoch_index(shapes_root):
    from raydet.data import ShapesDataset
    ds = ShapesDataset("train", TRAIN_PIPELINE, root=shapes_root, seed=7)
    a, b = _epoch_samples(ds, 0), _epoch_samples(ds, 2)
    assert len(a) == len(b) > 0
    for (na, ia, ba), (nb, ib, bb) in zip(a, b):
        assert na == nb
        assert torch.equal(ia, ib)
        assert all(torch.equal(x, y) for x, y in zip(ba, bb))
    # and the same index in another epoch is augmented independently
    from raydet.data import SampleKey
    flips = {ds[SampleKey(0, e)]["img_metas"]["flip"] for e in range(12)}
    assert flips == {True, False}
