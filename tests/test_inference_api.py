"""mmdet 2.x's inference API: init_detector, inference_detector, show_result(_pyplot)."""
import os

import cv2
import numpy as np
import pytest
import torch

from raydet.apis import inference_detector, init_detector, show_result_pyplot, train_from_config
from raydet.visualization import draw_det_result, palette


@pytest.fixture(scope="module")
def trained(shapes_root, tmp_path_factory):
    """A tiny detector trained for one epoch, and its config."""
    from raydet.config import load_config
    from .conftest import tiny_config
    work = tmp_path_factory.mktemp("infer") / "w"
    cfg = load_config(tiny_config(shapes_root, work, runner=dict(max_epochs=1)))
    train_from_config(cfg, validate=False)
    return cfg, str(work / "latest.pth")


def _close(got, expected):
    assert len(got) == len(expected)
    for r, e in zip(got, expected):
        for a, b in zip(r, e):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


def test_inference_detector_gives_raydet_tests_boxes(trained):
    """One image at a time (path or array), or a batch of same-size images: the boxes `raydet
    test` computes (batch 1). A batch of mixed sizes is zero-padded to one shape, as a loader
    batch is (GroupNorm then sees the padding, so its boxes differ a little)."""
    from raydet.data import build_dataloader, build_dataset
    from raydet.engine import inference
    cfg, ckpt = trained
    model = init_detector(cfg, ckpt)
    assert model.CLASSES == ["rectangle", "ellipse", "triangle"] and not model.training
    dataset = build_dataset(cfg.data.test, test_mode=True)
    expected = inference(model, build_dataloader(dataset, 1, 0, shuffle=False))  # what `raydet test` computes
    paths = [os.path.join(dataset.img_prefix, dataset.data_infos[i]["filename"]) for i in range(4)]
    sizes = [(dataset.data_infos[i]["width"], dataset.data_infos[i]["height"]) for i in range(4)]
    assert len(set(sizes[:3])) == 1 and sizes[3] != sizes[0]  # the fixture: three alike, one rotated
    assert sum(len(d) for d in expected[0]) > 0
    _close([inference_detector(model, p) for p in paths], expected[:4])  # paths, one at a time
    _close([inference_detector(model, cv2.imread(p)) for p in paths], expected[:4])  # BGR arrays
    _close(inference_detector(model, paths[:3]), expected[:3])  # a batch of one size
    mixed = inference_detector(model, paths)  # padded to one shape: each image's boxes in its own frame
    for result, (w, h) in zip(mixed, sizes):
        boxes = np.concatenate(result)
        assert len(result) == 3 and len(boxes) and (boxes[:, [0, 2]] <= w + 1).all() and (boxes[:, [1, 3]] <= h + 1).all()


def test_a_checkpoint_of_another_model_is_refused(trained, make_cfg):
    from raydet.errors import CheckpointError
    cfg, ckpt = trained
    other = make_cfg(model=dict(cfg.model.to_dict(), bbox_head=dict(cfg.model.bbox_head.to_dict(), feat_channels=64)))
    with pytest.raises(CheckpointError, match="does not fit the model"):
        init_detector(other, ckpt)


def _gray(h=100, w=120):
    return np.full((h, w, 3), 128, np.uint8)


def test_a_drawn_box_has_its_class_colour_on_its_edges_and_nowhere_else():
    img = _gray()
    result = [np.array([[10, 10, 40, 40, 0.1]], np.float32),  # below score_thr: not drawn
              np.array([[20, 40, 80, 90, 0.9]], np.float32)]
    drawn = draw_det_result(img, result, ["a", "b"], score_thr=0.3, thickness=1)
    color = palette(2)[1]
    assert (img == 128).all()  # the input is left alone
    for x, y in [(20, 60), (80, 60), (50, 40), (50, 90)]:  # left, right, top and bottom edges
        assert (drawn[y, x] == color).all(), (x, y)
    for x, y in [(50, 65), (100, 95), (10, 25), (25, 10)]:  # inside, outside, the low-score box's edges
        assert (drawn[y, x] == 128).all(), (x, y)
    assert (drawn[30:40, 21:40] != 128).any()  # the label "b|0.90" above the box


def test_masks_are_blended_and_a_png_is_written(tmp_path):
    mask = np.zeros((100, 120), bool)
    mask[50:60, 30:50] = True
    result = ([np.zeros((0, 5), np.float32), np.array([[20, 40, 80, 90, 0.9]], np.float32)], [[], [mask]])
    out = tmp_path / "vis" / "x.png"
    drawn = draw_det_result(_gray(), result, ["a", "b"], out_file=str(out))
    color = palette(2)[1].astype(float)
    assert np.allclose(drawn[55, 40], (128 * 0.5 + color * 0.5).astype(np.uint8), atol=1)
    assert (cv2.imread(str(out)) == drawn).all()


def test_model_show_result_and_pyplot_use_the_models_classes(trained, tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    cfg, ckpt = trained
    model = init_detector(cfg, ckpt)
    result = [np.zeros((0, 5), np.float32), np.zeros((0, 5), np.float32),
              np.array([[20, 40, 80, 90, 0.9]], np.float32)]
    drawn = model.show_result(_gray(), result, score_thr=0.5, out_file=str(tmp_path / "a.jpg"))
    assert (tmp_path / "a.jpg").exists() and (drawn[60, 20] == palette(3)[2]).all()
    again = show_result_pyplot(model, _gray(), result, score_thr=0.5, out_file=str(tmp_path / "b.png"))
    assert (again == drawn).all() and (tmp_path / "b.png").exists()
