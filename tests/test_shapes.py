import filecmp
import json
import os

import numpy as np

from raydet.data import shapes

from .conftest import SMALL


def test_frozen_parameters():
    assert shapes.CLASSES == ("rectangle", "ellipse", "triangle")
    assert shapes.IMAGE_SIZES == ((128, 96), (96, 128))
    assert shapes.NUM_IMAGES == {"train": 4000, "val": 500}
    assert shapes.MAX_OBJECTS == 3 and shapes.EMPTY_PROB == 0.05
    assert shapes.SIDE_RANGE == (0.10, 0.45) and shapes.ASPECT_RANGE == (0.5, 2.0)


def test_generated_annotations_follow_the_parameters(shapes_root):
    for split, count in SMALL.items():
        coco = json.load(open(os.path.join(shapes_root, "annotations", f"instances_{split}.json")))
        assert len(coco["images"]) == count
        assert [c["name"] for c in coco["categories"]] == list(shapes.CLASSES)
        per_image = {}
        for ann in coco["annotations"]:
            img = coco["images"][ann["image_id"] - 1]
            x, y, w, h = ann["bbox"]
            short = min(img["width"], img["height"])
            assert 0.10 * short - 0.02 <= max(w, h) <= 0.45 * short + 0.02
            assert 0.5 - 0.02 <= w / h <= 2.0 + 0.02 or ann["category_id"] == 3
            assert x >= 0 and y >= 0 and x + w <= img["width"] + 0.01 and y + h <= img["height"] + 0.01
            assert len(ann["segmentation"][0]) >= 6 and ann["area"] > 0
            per_image[ann["image_id"]] = per_image.get(ann["image_id"], 0) + 1
        assert max(per_image.values()) <= 3
        sizes = {(i["width"], i["height"]) for i in coco["images"]}
        assert sizes == {(128, 96), (96, 128)}


def test_empty_image_rate_over_many_images():
    rng_counts = [0, 0]
    for i in range(2000):
        rng = np.random.default_rng([0, 0, i])
        rng.integers(2)  # the size draw comes first
        rng_counts[rng.random() < shapes.EMPTY_PROB] += 1
    assert 0.03 < rng_counts[1] / 2000 < 0.07


def test_same_seed_byte_identical(tmp_path):
    a = shapes.generate(str(tmp_path / "a"), seed=3, num_images=dict(train=6, val=3))
    b = shapes.generate(str(tmp_path / "b"), seed=3, num_images=dict(train=6, val=3))
    c = shapes.generate(str(tmp_path / "c"), seed=4, num_images=dict(train=6, val=3))
    for split in ("train", "val"):
        names = sorted(os.listdir(os.path.join(a, split)))
        match, mismatch, errors = filecmp.cmpfiles(os.path.join(a, split), os.path.join(b, split), names, shallow=False)
        assert match == names and not mismatch and not errors
        ann = f"annotations/instances_{split}.json"
        assert open(os.path.join(a, ann), "rb").read() == open(os.path.join(b, ann), "rb").read()
        assert open(os.path.join(a, ann), "rb").read() != open(os.path.join(c, ann), "rb").read()


def test_generation_is_idempotent_and_atomic(tmp_path, capsys):
    root = shapes.generate(str(tmp_path / "d"), seed=0, num_images=dict(train=2, val=2))
    progress = capsys.readouterr().err.splitlines()  # not a terminal: a line at 50% and at 100%
    assert [line.split(": ")[1].split(",")[0] for line in progress] == ["2/4 (50%)", "4/4 (100%)"]
    assert progress[0].startswith(f"generating the shapes dataset in {root}: ")
    stamp = os.path.getmtime(os.path.join(root, "annotations", "instances_val.json"))
    shapes.generate(root, seed=0, num_images=dict(train=2, val=2))
    assert os.path.getmtime(os.path.join(root, "annotations", "instances_val.json")) == stamp
    assert not capsys.readouterr().err  # nothing generated, nothing shown
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".d-")]  # no temp dirs left
