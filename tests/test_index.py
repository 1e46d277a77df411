"""The compact annotation index (raydet.data.index): the same samples as the annotations say,
from a fresh parse, from the index cache and from a pickled copy in another process; the cache
used on the second build and refused after the annotations change."""
import hashlib
import json
import logging
import multiprocessing
import os
import pickle

import cv2
import numpy as np
import pytest

from raydet.data import CocoDataset, RepeatDataset, ShapesDataset, XMLDataset
from raydet.errors import DataError

from .test_voc import write_voc

PIPELINE = [dict(type="LoadImageFromFile"),
            dict(type="LoadAnnotations", with_bbox=True, with_mask=True, poly2mask=False)]  # mmdet's PolygonMasks
RLE = {"size": [40, 60], "counts": "0l1"}  # a crowd region: skipped, as mmdet 2.x's CocoDataset does for training


def hand_made(root):
    """A COCO file with unsorted, gapped image ids, crowd boxes, an image without annotations,
    one whose only box is a crowd, polygons of several parts, a box without segmentation, boxes
    to clip and to drop, an ``ignore`` flag and a category outside ``classes=('a', 'b')``."""
    images = [dict(id=12, file_name="p.jpg", width=40, height=60), dict(id=3, file_name="x.jpg", width=60, height=40),
              dict(id=7, file_name="sub/e.jpg", width=60, height=40), dict(id=9, file_name="c.jpg", width=60, height=40),
              dict(id=5, file_name="m.jpg", width=60, height=40)]
    anns = [
        dict(id=1, image_id=3, category_id=1, bbox=[2, 3, 20, 10], iscrowd=0, segmentation=[[2, 3, 22, 3, 22, 13]]),
        dict(id=2, image_id=3, category_id=2, bbox=[30.5, 5.25, 10, 12], iscrowd=0,
             segmentation=[[30.5, 5.25, 40.5, 5.25, 40.5, 17.25], [31, 6, 33, 6, 33, 8]]),  # two parts
        dict(id=3, image_id=3, category_id=1, bbox=[0, 0, 60, 40], iscrowd=1, segmentation=RLE),
        dict(id=4, image_id=5, category_id=2, bbox=[50, 30, 20, 20], iscrowd=0),  # clipped; no segmentation
        dict(id=5, image_id=5, category_id=1, bbox=[70, 5, 5, 5], iscrowd=0, segmentation=[[70, 5, 75, 5, 75, 10]]),
        dict(id=6, image_id=5, category_id=1, bbox=[1, 1, 5, 5], iscrowd=0, ignore=1, segmentation=[[1, 1, 6, 1, 6, 6]]),
        dict(id=7, image_id=5, category_id=3, bbox=[10, 10, 5, 5], iscrowd=0, segmentation=[[10, 10, 15, 10, 15, 15]]),
        dict(id=8, image_id=5, category_id=1, bbox=[4, 4, 8, 9], iscrowd=0,
             segmentation=[[4, 4, 12, 4, 12, 13], [5, 5, 6, 5, 6, 6], [7, 7, 8, 7, 8, 8, 7, 8]]),  # three parts
        dict(id=9, image_id=9, category_id=2, bbox=[0, 0, 60, 40], iscrowd=1, segmentation=RLE),  # crowd only
        dict(id=10, image_id=12, category_id=2, bbox=[3, 40, 30, 15], iscrowd=0, segmentation=[[3, 40, 33, 40, 33, 55]]),
    ]
    cats = [dict(id=2, name="b"), dict(id=1, name="a"), dict(id=3, name="other")]
    os.makedirs(os.path.join(root, "sub"), exist_ok=True)
    for img in images:
        cv2.imwrite(os.path.join(root, img["file_name"]), np.full((img["height"], img["width"], 3), 90, np.uint8))
    path = os.path.join(root, "ann.json")
    with open(path, "w") as f:
        json.dump(dict(images=images, annotations=anns, categories=cats), f)
    return path


def expected(ann_file, classes=None, filter_empty_gt=True):
    """What each kept image must yield, read from the json directly: ``(file_name, width, height,
    boxes, labels, polygons)``: images in id order, crowd and ignored boxes skipped, boxes clipped
    to the image, empty ones dropped, a box without segmentation outlined by its corners."""
    data = json.load(open(ann_file))
    cats = sorted(data["categories"], key=lambda c: c["id"])
    names = classes or [c["name"] for c in cats]
    label_of = {c["id"]: names.index(c["name"]) for c in cats if c["name"] in names}
    out = []
    for img in sorted(data["images"], key=lambda i: i["id"]):
        w, h = img["width"], img["height"]
        boxes, labels, polys = [], [], []
        for ann in data["annotations"]:
            if ann["image_id"] != img["id"] or ann.get("iscrowd") or ann.get("ignore") or ann["category_id"] not in label_of:
                continue
            x, y, bw, bh = ann["bbox"]
            x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + bw, w), min(y + bh, h)
            if x2 <= x1 or y2 <= y1:
                continue
            boxes.append([x1, y1, x2, y2])
            labels.append(label_of[ann["category_id"]])
            polys.append(ann.get("segmentation") or [[x1, y1, x2, y1, x2, y2, x1, y2]])
        if filter_empty_gt and not boxes:
            continue
        out.append((img["file_name"], w, h, boxes, labels, polys))
    return out


def sample(ds, i):
    """The fields of sample ``i`` that come from the index (and the image's shape), as plain values."""
    r = ds[i]
    return (r["ori_filename"], r["img_info"]["width"], r["img_info"]["height"], r["ori_shape"],
            r["gt_bboxes"].tolist(), r["gt_labels"].tolist(), [[p.tolist() for p in inst] for inst in r["gt_masks"].masks])


def samples_digest(ds) -> str:
    """sha256 of every sample's index fields (another process's view of the same dataset)."""
    return hashlib.sha256(repr([sample(ds, i) for i in range(len(ds))]).encode()).hexdigest()


def mapped(ds) -> bool:
    """Whether every array of the dataset's index is a read-only view of a mapped file."""
    return all(not a.flags.writeable and not a.flags.owndata for a in ds.index.arrays.values()) and \
        ds.index.path is not None


def check_against_json(ds, ann_file, **kwargs):
    want = expected(ann_file, **kwargs)
    assert len(ds) == len(want)
    for i, (name, w, h, boxes, labels, polys) in enumerate(want):
        got = sample(ds, i)
        assert got[:4] == (name, w, h, (h, w, 3))
        np.testing.assert_array_equal(np.array(got[4], np.float32).reshape(-1, 4), np.array(boxes, np.float32).reshape(-1, 4))
        assert got[5] == labels and got[6] == [[list(map(float, p)) for p in inst] for inst in polys]
        assert got[4] == ds.ann_infos[i]["bboxes"].tolist() and ds.data_infos[i]["filename"] == name


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYDET_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache" / "index"


def test_every_image_of_shapes_and_of_a_hand_made_coco_file_gives_what_its_json_says(shapes_root, tmp_path, cache):
    ds = ShapesDataset("train", PIPELINE, root=shapes_root)
    check_against_json(ds, ds.ann_file)
    path = hand_made(str(tmp_path))
    with pytest.warns(UserWarning, match="clipped to the image"):
        hand = CocoDataset(path, PIPELINE, img_prefix=str(tmp_path))
    check_against_json(hand, path)
    assert hand.CLASSES == ("a", "b", "other") and hand.img_ids == [3, 5, 12]
    assert hand.filtered["without boxes (filter_empty_gt)"] == 2  # ids 7 (nothing) and 9 (a crowd only)
    with pytest.warns(UserWarning):
        every = CocoDataset(path, PIPELINE, img_prefix=str(tmp_path), classes=("a", "b"), filter_empty_gt=False)
    check_against_json(every, path, classes=["a", "b"], filter_empty_gt=False)
    assert every.img_ids == [3, 5, 7, 9, 12] and every.get_cat_ids(1) == [1, 0]
    assert list(every.flag) == [1, 1, 1, 1, 0]


def test_the_cache_serves_the_second_build_and_is_refused_after_the_json_changes(tmp_path, cache, monkeypatch, caplog):
    path = hand_made(str(tmp_path))
    build = lambda: CocoDataset(path, PIPELINE, img_prefix=str(tmp_path))  # noqa: E731
    with pytest.warns(UserWarning, match="clipped"):
        first = build()
    assert first.index_source == "built" and len(list(cache.glob("*.idx"))) == 1
    with monkeypatch.context() as m:  # the second build does not read the json at all
        m.setattr(CocoDataset, "_load_json", lambda *a: pytest.fail("the json was parsed again"))
        with pytest.warns(UserWarning, match="clipped"):  # its warnings are given again
            second = build()
    assert second.index_source == "cache" and samples_digest(second) == samples_digest(first)
    # the file is mapped, not read: the page cache's copy is shared by every process that loads it
    assert all(not a.flags.writeable and not a.flags.owndata for a in second.index.arrays.values())
    # the same length, one box moved: a size and modification time could miss this rewrite
    text = open(path).read()
    assert text.count('"bbox": [2, 3, 20, 10]') == 1
    with open(path, "w") as f:
        f.write(text.replace('"bbox": [2, 3, 20, 10]', '"bbox": [4, 3, 20, 10]'))
    with pytest.warns(UserWarning):
        third = build()
    assert third.index_source == "built" and third.ann_infos[0]["bboxes"][0].tolist() == [4, 3, 24, 13]
    # a damaged cache file is rebuilt, with a warning in the log naming it
    (newest,) = [p for p in cache.glob("*.idx") if p.stat().st_mtime == max(q.stat().st_mtime for q in cache.glob("*.idx"))]
    damaged = newest.read_bytes()[:100]
    newest.unlink()  # a new file: the datasets above map the old one (raydet replaces, never rewrites, a cache file)
    newest.write_bytes(damaged)
    with caplog.at_level(logging.WARNING, logger="raydet"), pytest.warns(UserWarning):
        fourth = build()
    assert fourth.index_source == "built" and f"index cache {newest}" in caplog.text
    assert samples_digest(fourth) == samples_digest(third)
    # a cache directory that cannot be written: the dataset still builds
    monkeypatch.setenv("RAYDET_DATA", str(path))  # a file, not a directory
    with caplog.at_level(logging.WARNING, logger="raydet"), pytest.warns(UserWarning):
        assert build().index_source == "built"
    assert "cannot write the index cache" in caplog.text


def test_the_cache_is_refused_after_an_image_changes_and_the_bad_image_is_named(tmp_path, cache):
    path = hand_made(str(tmp_path))
    build = lambda: CocoDataset(path, PIPELINE, img_prefix=str(tmp_path))  # noqa: E731
    with pytest.warns(UserWarning):
        first = build()
    with pytest.warns(UserWarning):
        assert build().index_source == "cache"
    image = os.path.join(str(tmp_path), first.data_infos[1]["filename"])
    open(image, "wb").close()  # emptied after the index was cached: the next build checks the images
    with pytest.raises(DataError, match=f"image {image} is empty"):
        build()
    os.remove(image)
    with pytest.raises(DataError, match=f"image file not found: {image}"):
        build()


def test_voc_index_is_cached_and_refused_after_an_xml_file_changes(tmp_path, cache):
    prefix = write_voc(str(tmp_path), {"a": [("person", (10, 10, 50, 50), False), ("dog", (60, 10, 90, 40), True)],
                                       "b": [("dog", (5, 5, 40, 40), False)]})
    build = lambda: XMLDataset(prefix + "ImageSets/Main/test.txt", img_prefix=prefix,  # noqa: E731
                               classes=("person", "dog"))
    first = build()
    assert first.index_source == "built" and build().index_source == "cache"
    assert first.data_infos[0] == dict(id="a", filename="JPEGImages/a.jpg", width=100, height=60)
    ann = first.get_ann_info(0)
    assert ann["bboxes"].tolist() == [[10, 10, 50, 50]] and ann["bboxes_ignore"].tolist() == [[60, 10, 90, 40]]
    assert ann["labels"].dtype == np.int64 and ann["labels_ignore"].tolist() == [1]
    xml = os.path.join(prefix, "Annotations", "b.xml")
    text = open(xml).read()
    with open(xml, "w") as f:
        f.write(text.replace("<xmin>5</xmin>", "<xmin>6</xmin>"))
    again = build()
    assert again.index_source == "built" and again.get_ann_info(1)["bboxes"].tolist() == [[6, 5, 40, 40]]


def test_a_pickled_dataset_gives_identical_samples_in_another_process_and_wrappers_copy_nothing(
        tmp_path, cache):
    path = hand_made(str(tmp_path))
    with pytest.warns(UserWarning):
        ds = CocoDataset(path, PIPELINE, img_prefix=str(tmp_path), filter_empty_gt=False)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        # multiprocessing (a spawn loader's workers) passes the index as its cache file: mapped there too
        assert pool.apply(samples_digest, (ds,)) == samples_digest(ds)
        assert pool.apply(mapped, (ds,)) is True
    assert mapped(pickle.loads(pickle.dumps(ds))) is False  # plain pickle (and Ray) carry the arrays
    assert ds.coco is not None and "_coco" not in pickle.loads(pickle.dumps(ds)).__dict__  # evaluation's stays here
    repeated = RepeatDataset(ds, 50)
    assert repeated.dataset is ds
    assert len(pickle.dumps(repeated)) < len(pickle.dumps(ds)) + 50 * len(ds) + 1000  # the flags, not the index
    # nothing a sample returns shares memory with the index
    first = ds[0]
    first["gt_bboxes"] += 5
    first["gt_masks"].masks[0][0] += 5
    assert sample(ds, 0) == sample(CocoDataset(path, PIPELINE, img_prefix=str(tmp_path), filter_empty_gt=False), 0)
