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
    assert len(samples) == 8 and len(os.listdir(out)) == 8
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


def test_the_command_writes_drawings_and_refuses_to_write_over_them(shapes_root, tmp_path, capsys):
    cfg_path = str(tmp_path / "tiny.py")
    dump_config(load_config(tiny_config(shapes_root, tmp_path / "w")), cfg_path)
    assert main(["browse", cfg_path, "--out-dir", str(tmp_path / "b"), "--num", "3"]) == 0
    assert "3 training samples drawn" in capsys.readouterr().out and len(os.listdir(tmp_path / "b")) == 3
    assert main(["browse", cfg_path, "--out-dir", str(tmp_path / "b"), "--num", "3"]) == 2
    assert "does not overwrite" in capsys.readouterr().err
