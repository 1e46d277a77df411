"""raydet browse (mmdet's browse_dataset): the transformed samples with their ground truth."""
import os

import cv2
import numpy as np

from raydet.cli import main
from raydet.config import dump_config, load_config
from raydet.visualization import browse_dataset, palette

from .conftest import tiny_config


def test_boxes_are_drawn_where_the_transformed_annotations_say(shapes_root, tmp_path):
    cfg = load_config(tiny_config(shapes_root, tmp_path / "w"))
    out = tmp_path / "browse"
    samples = list(browse_dataset(cfg.data.train, str(out), num=8))
    assert len(samples) == 8 and len([p for p in os.listdir(out) if p.endswith(".png")]) == 8
    assert any(r["flip"] for _, r in samples) and any(not r["flip"] for _, r in samples)  # augmented, as trained
    colors = palette(3)
    hits = total = 0
    for path, results in samples:
        drawn = cv2.imread(path)
        assert drawn.shape == results["img"].shape  # the resized (and padded) image, not the file on disk
        for (x1, y1, x2, y2), label in zip(np.round(results["gt_bboxes"]).astype(int), results["gt_labels"]):
            mids = [(x1, (y1 + y2) // 2), (x2, (y1 + y2) // 2), ((x1 + x2) // 2, y2)]  # left, right, bottom
            hits += sum((drawn[min(y, drawn.shape[0] - 1), min(x, drawn.shape[1] - 1)] == colors[label]).all()
                        for x, y in mids)
            total += len(mids)
    assert total and hits / total > 0.9  # a few edge points may lie under another object's label


def test_the_command_writes_over_its_own_drawings_only(shapes_root, tmp_path, capsys):
    cfg_path = str(tmp_path / "tiny.py")
    dump_config(load_config(tiny_config(shapes_root, tmp_path / "w")), cfg_path)
    out = tmp_path / "b"
    assert main(["browse", cfg_path, "--out-dir", str(out), "--num", "3"]) == 0
    drawings = sorted(p for p in os.listdir(out) if p.endswith(".png"))
    assert "3 training samples drawn" in capsys.readouterr().out and len(drawings) == 3
    assert main(["browse", cfg_path, "--out-dir", str(out), "--num", "3"]) == 0  # the same command again
    assert sorted(p for p in os.listdir(out) if p.endswith(".png")) == drawings
    os.remove(out / drawings[0])
    (out / drawings[0]).write_bytes(b"mine")  # a file browse did not write, under a drawing's name
    os.remove(out / ".raydet-browse.json")
    assert main(["browse", cfg_path, "--out-dir", str(out), "--num", "3"]) == 2
    assert "does not overwrite" in capsys.readouterr().err and (out / drawings[0]).read_bytes() == b"mine"


def test_shuffled_enlarged_samples_and_labels_inside_the_picture(shapes_root, tmp_path):
    cfg = load_config(tiny_config(shapes_root, tmp_path / "w"))
    first = [p for p, _ in browse_dataset(cfg.data.train, str(tmp_path / "a"), num=4)]
    drawn = list(browse_dataset(cfg.data.train, str(tmp_path / "b"), num=4, seed=5, shuffle=True, scale=3))
    again = [p for p, _ in browse_dataset(cfg.data.train, str(tmp_path / "c"), num=4, seed=5, shuffle=True, scale=3)]
    names = lambda paths: [os.path.basename(p) for p in paths]  # noqa: E731
    assert names(p for p, _ in drawn) == names(again) != names(first)  # a draw, repeatable with its seed
    for path, results in drawn:  # enlarged 3 times
        assert cv2.imread(path).shape[:2] == tuple(3 * n for n in results["img"].shape[:2])
    from raydet.visualization import draw_det_result
    img = np.full((60, 80, 3), 128, np.uint8)
    box = [np.array([[70, 2, 79, 20, 0.9]], np.float32)]  # at the top right corner: no room above or right
    out = draw_det_result(img, box, ["a long class name"], font_scale=0.3)
    color = palette(1)[0]
    plate = np.argwhere((out == color).all(axis=2))
    assert plate[:, 1].min() < 70 - 20  # the label moved left into the picture, not cut at its edge
    assert (out[:, :, :] != 128).any(axis=2)[0:20, 0:70].any()
