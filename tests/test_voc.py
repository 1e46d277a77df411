"""VOC-style datasets (mmdet's classes over raydet's index) and their evaluation (mmdet's), against
hand-computed values."""
import os

import numpy as np
import pytest

from raydet.data import VOCDataset, XMLDataset, build_dataset
from raydet.errors import ConfigError, DataError


def write_voc(root, images, split="test", year="VOC2007", size=(100, 60)):
    """A VOC layout under ``root/year``: ``images`` maps an id to ``[(name, box, difficult)]``."""
    import cv2
    base = os.path.join(root, year)
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    for img_id, objects in images.items():
        cv2.imwrite(os.path.join(base, "JPEGImages", f"{img_id}.jpg"), np.full((size[1], size[0], 3), 127, np.uint8))
        objs = "".join(
            f"<object><name>{n}</name><difficult>{int(d)}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
            f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, b, d in objects)
        with open(os.path.join(base, "Annotations", f"{img_id}.xml"), "w") as f:
            f.write(f"<annotation><size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
                    f"{objs}</annotation>")
    with open(os.path.join(base, "ImageSets/Main", f"{split}.txt"), "w") as f:
        f.write("\n".join(images) + "\n")
    return base + "/"


def test_voc_dataset_reads_xml_ignores_difficult_and_evaluates_voc07_style(tmp_path):
    prefix = write_voc(str(tmp_path), {
        "a": [("person", (10, 10, 50, 50), False), ("dog", (60, 10, 90, 40), True)],
        "b": [("dog", (5, 5, 40, 40), False), ("unicorn", (1, 1, 9, 9), False)],
        "c": [("unicorn", (1, 1, 30, 30), False)]})
    ann = os.path.join(prefix, "ImageSets/Main/test.txt")
    ds = VOCDataset(ann, [], img_prefix=prefix, test_mode=True)
    assert ds.year == 2007 and len(ds) == 3 and ds.data_infos[0]["filename"] == "JPEGImages/a.jpg"
    a, b = ds.get_ann_info(0), ds.get_ann_info(1)
    person, dog = VOCDataset.CLASSES.index("person"), VOCDataset.CLASSES.index("dog")
    assert a["bboxes"].tolist() == [[10, 10, 50, 50]] and a["labels"].tolist() == [person]
    assert a["bboxes_ignore"].tolist() == [[60, 10, 90, 40]] and a["labels_ignore"].tolist() == [dog]
    assert b["labels"].tolist() == [dog]  # the unknown class is skipped
    empty = [np.zeros((0, 5), np.float32) for _ in VOCDataset.CLASSES]

    def result(**boxes):
        r = [e.copy() for e in empty]
        for name, rows in boxes.items():
            r[VOCDataset.CLASSES.index(name)] = np.array(rows, np.float32)
        return r
    perfect = [result(person=[[10, 10, 50, 50, 0.9]], dog=[[60, 10, 90, 40, 0.99]]),
               result(dog=[[5, 5, 40, 40, 0.8]]), result()]
    assert ds.evaluate(perfect) == {"mAP": pytest.approx(1.0), "AP50": 1.0}
    # a false dog scored above the true one: dog recall [0, 1], precision [0, 1/2]: 11-point AP 1/2
    worse = [perfect[0], result(dog=[[5, 5, 40, 40, 0.8]]), result(dog=[[0, 30, 20, 55, 0.85]])]
    assert ds.evaluate(worse)["mAP"] == pytest.approx((1.0 + 0.5) / 2)
    # mmdet's classes: its VOCDataset's evaluate (VOC2007: 11 points, legacy +1 coordinates)
    from mmdet.datasets import VOCDataset as MMDetVOC
    assert isinstance(ds, MMDetVOC) and ds.evaluate(worse, iou_thr=[0.5, 0.75])["AP75"] == pytest.approx(0.75)
    assert list(ds.evaluate(worse, iou_thr=[0.5, 0.75])) == ds.metric_keys(["mAP"], iou_thr=[0.5, 0.75])
    proposals = [np.concatenate(r) for r in worse]  # recall: one [N, 5] array of proposals an image
    assert list(ds.evaluate(proposals, metric="recall", iou_thr=[0.5, 0.75])) == ds.metric_keys(
        ["recall"], iou_thr=[0.5, 0.75])
    train = VOCDataset(ann, [], img_prefix=prefix)  # training mode: "c" has no object of the classes
    assert [i["id"] for i in train.data_infos] == ["a", "b"]


def test_xml_dataset_classes_min_size_and_clear_errors(tmp_path):
    prefix = write_voc(str(tmp_path), {"x": [("cat", (0, 0, 40, 40), False), ("cat", (50, 5, 55, 50), False)]},
                       split="train", year="custom")
    ann = os.path.join(prefix, "ImageSets/Main/train.txt")
    ds = XMLDataset(ann, [], classes=("cat",), img_prefix=prefix, min_size=8)
    assert ds.get_ann_info(0)["bboxes"].tolist() == [[0, 0, 40, 40]]
    assert ds.get_ann_info(0)["bboxes_ignore"].tolist() == [[50, 5, 55, 50]]  # 5 px wide < min_size
    with pytest.raises(ConfigError, match="cannot infer the VOC year"):
        VOCDataset(ann, [], img_prefix=prefix)
    with pytest.raises(ConfigError, match="XMLDataset needs classes"):
        XMLDataset(ann, [], img_prefix=prefix)
    os.remove(os.path.join(prefix, "Annotations", "x.xml"))
    with pytest.raises(DataError, match="annotation file not found: .*Annotations/x.xml"):
        XMLDataset(ann, [], classes=("cat",), img_prefix=prefix)
    with pytest.raises(DataError, match="image list not found"):
        XMLDataset(ann + ".missing", [], classes=("cat",), img_prefix=prefix)


def test_difficult_boxes_travel_through_the_pipeline_as_gt_bboxes_ignore(tmp_path):
    prefix = write_voc(str(tmp_path), {"a": [("dog", (10, 10, 50, 50), False), ("dog", (60, 10, 90, 40), True)]},
                       split="trainval")
    pipeline = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", with_bbox=True),
                dict(type="Resize", img_scale=(200, 120), keep_ratio=True), dict(type="RandomFlip", flip_ratio=0.0),
                dict(type="DefaultFormatBundle"), dict(type="Collect", keys=["img", "gt_bboxes", "gt_labels",
                                                                              "gt_bboxes_ignore"])]
    ds = build_dataset(dict(type="RepeatDataset", times=2, dataset=dict(
        type="VOCDataset", ann_file=os.path.join(prefix, "ImageSets/Main/trainval.txt"), img_prefix=prefix,
        pipeline=pipeline)))
    sample = ds[1]
    assert sample["gt_bboxes"].tolist() == [[20, 20, 100, 100]]  # scaled x2 with the image
    assert sample["gt_bboxes_ignore"].tolist() == [[120, 20, 180, 80]]


def test_the_voc0712_base_builds_repeat_of_concat_on_a_vocdevkit(tmp_path):
    from mmcv import Config

    from raydet.data import ConcatDataset, RepeatDataset
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    devkit = str(tmp_path / "VOCdevkit")
    for year in ("VOC2007", "VOC2012"):
        write_voc(devkit, {f"{year}_1": [("cat", (5, 5, 50, 40), False)], f"{year}_2": [("dog", (5, 5, 60, 50), False)]},
                  split="trainval", year=year)
    write_voc(devkit, {"t1": [("cat", (5, 5, 50, 40), False)]}, split="test", year="VOC2007")
    cfg = Config.fromfile(os.path.join(repo, "configs/_base_/datasets/voc0712.py"))  # a base: no schedule
    cfg.data.train.dataset.ann_file = [f"{devkit}/{y}/ImageSets/Main/trainval.txt" for y in ("VOC2007", "VOC2012")]
    cfg.data.train.dataset.img_prefix = [f"{devkit}/{y}/" for y in ("VOC2007", "VOC2012")]
    train = build_dataset(cfg.data.train)
    assert isinstance(train, RepeatDataset) and isinstance(train.dataset, ConcatDataset)
    assert len(train) == 3 * 4 and train[5]["img"].shape[1:] == (608, 1024)  # 100x60 scaled to 1000x600, padded to 32
    cfg.data.val.update(ann_file=f"{devkit}/VOC2007/ImageSets/Main/test.txt", img_prefix=f"{devkit}/VOC2007/")
    val = build_dataset(cfg.data.val, test_mode=True)
    assert val.year == 2007  # mmdet's evaluate: 11-point AP
