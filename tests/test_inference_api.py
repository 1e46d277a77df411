"""mmdet 2.x's inference API: init_detector, inference_detector, show_result(_pyplot)."""
import os

import cv2
import numpy as np
import pytest

from raydet.apis import inference_detector, init_detector, show_result_pyplot
from raydet.run import train_from_config
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
    """One image at a time (path or array), or a batch of any sizes: the boxes `raydet test`
    computes (batch 1); a batch runs its images of one shape together, never padded to another's."""
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
    _close(inference_detector(model, paths), expected[:4])  # a batch of mixed sizes


def test_the_records_do_not_depend_on_the_batch_size(trained):
    """What `raydet infer`'s model actors compute: portrait and landscape images mixed, in
    batches of 4 and one at a time, give the same records, record by record."""
    from raydet.apis.inference import build_test_pipeline, result_to_records
    from raydet.data import build_dataset
    from raydet.engine.inference import predict_samples
    cfg, ckpt = trained
    model = init_detector(cfg, ckpt)
    dataset = build_dataset(cfg.data.test, test_mode=True)
    infos = dataset.data_infos[:16]
    assert len({(i["width"] > i["height"]) for i in infos}) == 2  # both orientations
    pipeline = build_test_pipeline(model.cfg, from_array=False)
    samples = [pipeline(dict(img_info=dict(filename=os.path.join(dataset.img_prefix, i["filename"])), img_prefix=None))
               for i in infos]

    def records(batch_size):
        results = [r for k in range(0, len(samples), batch_size) for r in predict_samples(model, samples[k:k + batch_size])]
        return [result_to_records(r, model.CLASSES, i["filename"], score_thr=0.05) for r, i in zip(results, infos)]

    one, four = records(1), records(4)
    assert sum(map(len, one)) > 0 and [len(r) for r in one] == [len(r) for r in four]
    for a, b in zip((x for r in one for x in r), (x for r in four for x in r)):
        assert a["category_id"] == b["category_id"] and a["bbox"] == pytest.approx(b["bbox"], abs=1e-3)
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)


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
    # mmdet's own drawing (matplotlib: figures another test left open would be drawn into)
    import matplotlib.pyplot as plt
    plt.close("all")
    drawn = model.show_result(_gray(), result, score_thr=0.5)
    model.show_result(_gray(), result, score_thr=0.5, out_file=str(tmp_path / "a.jpg"))
    assert (tmp_path / "a.jpg").exists()
    assert drawn.shape == _gray().shape and (drawn[65, 20] != _gray()[65, 20]).any()  # the box's left edge
    again = show_result_pyplot(model, _gray(), result, score_thr=0.5, out_file=str(tmp_path / "b.png"))
    assert (again == drawn).all() and (tmp_path / "b.png").exists()


def test_infer_inputs_records_and_refusals_before_any_ray_work(trained, tmp_path):
    """raydet infer's Ray-free parts: what a directory, a glob, a list file and one image resolve
    to, each bad input named; a corrupt image named; records in COCO's xywh with class names; an
    existing --out refused."""
    from raydet.apis.inference import build_test_pipeline, decode_sample, result_to_records
    from raydet.errors import DataError, RaydetError
    from raydet.launch.infer import check_outputs, resolve_inputs
    cfg, ckpt = trained
    (tmp_path / "a" / "b").mkdir(parents=True)
    img = np.full((20, 30, 3), 127, np.uint8)
    for name in ("a/1.jpg", "a/b/2.PNG"):
        cv2.imwrite(str(tmp_path / name), img)
    (tmp_path / "a" / "readme.txt").write_text("x")
    assert resolve_inputs(str(tmp_path / "a")) == ([str(tmp_path / "a")], None, str(tmp_path / "a"), "")
    paths, _, root, _ = resolve_inputs(str(tmp_path / "a" / "**" / "*"))
    assert paths == [str(tmp_path / "a/1.jpg"), str(tmp_path / "a/b/2.PNG")] and root == str(tmp_path / "a")
    listing = tmp_path / "list.txt"
    listing.write_text("# images\na/b/2.PNG\n\na/1.jpg  # the first\n")
    assert resolve_inputs(str(listing))[0] == [str(tmp_path / "a/b/2.PNG"), str(tmp_path / "a/1.jpg")]
    listing.write_text("a/1.jpg\na/3.jpg\n")
    with pytest.raises(DataError, match=r"list.txt, line 2: no such image: a/3.jpg"):
        resolve_inputs(str(listing))
    with pytest.raises(DataError, match="nothing-here: no such file, directory or bucket prefix"):
        resolve_inputs(str(tmp_path / "nothing-here"))
    with pytest.raises(DataError, match="matches no image"):
        resolve_inputs(str(tmp_path / "a" / "*.bmp"))

    pipeline = build_test_pipeline(cfg, from_array=True)
    sample = decode_sample(pipeline, (tmp_path / "a/1.jpg").read_bytes(), "s3://b/1.jpg")
    assert sample["img_metas"][0]["filename"] == "s3://b/1.jpg" and sample["img_metas"][0]["ori_shape"] == (20, 30, 3)
    with pytest.raises(DataError, match=r"cannot decode image .*: s3://b/bad.jpg"):
        decode_sample(pipeline, b"\xff\xd8 not really", "s3://b/bad.jpg")

    result = [np.array([[1, 2, 11, 22, 0.9], [0, 0, 5, 5, 0.01]], np.float32), np.zeros((0, 5), np.float32),
              np.array([[3, 4, 8, 6, 0.5]], np.float32)]
    records = result_to_records(result, ["rectangle", "ellipse", "triangle"], "x.jpg", score_thr=0.05)
    assert records == [
        dict(file_name="x.jpg", category_id=0, category="rectangle", bbox=[1, 2, 10, 20], score=pytest.approx(0.9)),
        dict(file_name="x.jpg", category_id=2, category="triangle", bbox=[3, 4, 5, 2], score=0.5)]

    (tmp_path / "old.json").write_text("[]")
    with pytest.raises(RaydetError, match="old.json exists"):
        check_outputs(str(tmp_path / "old.json"), None)
    with pytest.raises(RaydetError, match=r"use a .json .* or .jsonl"):
        check_outputs(str(tmp_path / "new.csv"), None)
    with pytest.raises(RaydetError, match="--show-dir .* is not empty"):
        check_outputs(str(tmp_path / "new.json"), str(tmp_path / "a"))
    assert (tmp_path / "old.json").read_text() == "[]"
