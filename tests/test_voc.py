"""VOC-style datasets and mmdet's eval_map, against hand-computed values."""
import os

import numpy as np
import pytest

from raydet.data import VOCDataset, XMLDataset, build_dataset
from raydet.data.mean_ap import average_precision, eval_map
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


def test_average_precision_area_and_11_points_on_literal_curves():
    recalls, precisions = np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])
    assert average_precision(recalls, precisions, "area") == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert average_precision(recalls, precisions, "11points") == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)


def _ann(boxes, labels, ignored=(), ignored_labels=()):
    return dict(bboxes=np.array(boxes, np.float32).reshape(-1, 4), labels=np.array(labels, np.int64),
                bboxes_ignore=np.array(ignored, np.float32).reshape(-1, 4), labels_ignore=np.array(ignored_labels))


def test_a_detection_of_a_difficult_box_is_neither_hit_nor_miss():
    a, d = [0, 0, 10, 10], [20, 20, 30, 30]
    dets = [[np.array([[50, 50, 60, 60, 0.95], d + [0.9], a + [0.8]], np.float32)]]  # a miss, the difficult one, a hit
    # difficult ignored: flags fp, -, tp -> recall [0, 0, 1], precision [0, 0, 1/2] -> AP 1/2
    ap, per_class = eval_map(dets, [_ann([a], [0], [d], [0])], use_legacy_coordinate=True)
    assert ap == pytest.approx(0.5) and per_class[0]["num_gts"] == 1
    # the same box as an ordinary one: fp, tp, tp of 2 -> recall [0, 1/2, 1], precision [0, 1/2, 2/3]
    ap, _ = eval_map(dets, [_ann([a, d], [0, 0])], use_legacy_coordinate=True)
    assert ap == pytest.approx(0.5 * 2 / 3 + 0.5 * 2 / 3)


def test_iou_threshold_and_duplicates():
    gt = [0, 0, 10, 10]
    shifted = [0, 0, 10, 14]  # IoU 11*11 / (11*15) = 0.733 with legacy coordinates
    dets = [[np.array([shifted + [0.9], gt + [0.8]], np.float32)]]
    assert eval_map(dets, [_ann([gt], [0])], iou_thr=0.7, use_legacy_coordinate=True)[0] == pytest.approx(1.0)
    # at 0.75 the first is a miss: fp, tp -> recall [0, 1], precision [0, 1/2] -> 1/2
    assert eval_map(dets, [_ann([gt], [0])], iou_thr=0.75, use_legacy_coordinate=True)[0] == pytest.approx(0.5)
    twice = [[np.array([gt + [0.9], gt + [0.8]], np.float32)]]  # the duplicate is a false positive
    ap, per_class = eval_map(twice, [_ann([gt], [0])], mode="11points")
    assert ap == pytest.approx(1.0) and per_class[0]["num_dets"] == 2
    # classes without ground truth do not count towards mAP
    assert eval_map([[np.zeros((0, 5)), np.array([gt + [0.5]])]], [_ann([gt], [1])])[0] == pytest.approx(1.0)


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
    assert val.year == 2007 and val.ap_mode == "11points"
