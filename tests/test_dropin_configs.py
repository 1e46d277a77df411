"""mmdetection 2.x configs (configs/: mmdet's structure and `_base_` split) train unmodified on COCO- and
VOC-format copies of the shapes data, overriding only data paths, classes, num_classes, image
scale, pretrained init and schedule length through --cfg-options."""
import json
import os
import shutil

import pytest

from raydet.run import train_from_config
from raydet.config import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("rectangle", "ellipse", "triangle")
SCALE = (128, 96)
COCO = ["faster_rcnn/faster_rcnn_r50_fpn_1x_coco.py", "retinanet/retinanet_r50_fpn_1x_coco.py",
        "mask_rcnn/mask_rcnn_r50_fpn_1x_coco.py", "fcos/fcos_r50_caffe_fpn_gn-head_1x_coco.py",
        "ssd/ssdlite_mobilenetv2_scratch_600e_coco.py"]
VOC = ["pascal_voc/faster_rcnn_r50_fpn_1x_voc0712.py", "pascal_voc/retinanet_r50_fpn_1x_voc0712.py"]


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    """A COCO layout (annotations/instances_{train,val}2017.json, {train,val}2017/) and a VOCdevkit
    (VOC2007 and VOC2012 with one trainval image each, VOC2007 test with 2; XML) of 2 shapes images
    per split."""
    from raydet.data.shapes import generate
    root = tmp_path_factory.mktemp("dropin")
    shapes = generate(str(root / "shapes"), seed=0, num_images=dict(train=2, val=2))
    coco = root / "coco"
    os.makedirs(coco / "annotations")
    for split in ("train", "val"):
        shutil.copytree(os.path.join(shapes, split), coco / f"{split}2017")
        shutil.copy(os.path.join(shapes, "annotations", f"instances_{split}.json"),
                    coco / "annotations" / f"instances_{split}2017.json")
    devkit = root / "VOCdevkit"
    for year, split, lists, pick in (("VOC2007", "train", ("trainval",), slice(0, 1)),
                                     ("VOC2012", "train", ("trainval",), slice(1, 2)),
                                     ("VOC2007", "val", ("test",), slice(None))):
        with open(os.path.join(shapes, "annotations", f"instances_{split}.json")) as f:
            ann = json.load(f)
        base = devkit / year
        for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
            os.makedirs(base / sub, exist_ok=True)
        ids = []
        for img in ann["images"][pick]:
            stem = f"{split}_{img['file_name'][:-4]}"
            ids.append(stem)
            shutil.copy(os.path.join(shapes, split, img["file_name"]), base / "JPEGImages" / f"{stem}.jpg")
            objs = "".join(
                f"<object><name>{CLASSES[a['category_id'] - 1]}</name><difficult>0</difficult><bndbox>"
                f"<xmin>{a['bbox'][0] + 1:.0f}</xmin><ymin>{a['bbox'][1] + 1:.0f}</ymin>"
                f"<xmax>{a['bbox'][0] + a['bbox'][2]:.0f}</xmax><ymax>{a['bbox'][1] + a['bbox'][3]:.0f}</ymax>"
                f"</bndbox></object>" for a in ann["annotations"] if a["image_id"] == img["id"])
            (base / "Annotations" / f"{stem}.xml").write_text(
                f"<annotation><size><width>{img['width']}</width><height>{img['height']}</height><depth>3</depth>"
                f"</size>{objs}</annotation>")
        for name in lists:
            (base / "ImageSets" / "Main" / f"{name}.txt").write_text("\n".join(ids) + "\n")
    return dict(coco=str(coco) + "/", voc=str(devkit) + "/")


def _scale_options(cfg, prefix):
    """``--cfg-options`` setting the image scale of every Resize/MultiScaleFlipAug in a pipeline."""
    out = {}
    for i, step in enumerate(cfg):
        if step["type"] in ("Resize", "MultiScaleFlipAug") and "img_scale" in step:
            keep = step.get("keep_ratio", True)
            out[f"{prefix}.{i}.img_scale"] = SCALE if keep else (128, 128)
    return out


def _options(path, copies, work_dir):
    cfg = load_config(os.path.join(REPO, "configs", path))
    train = cfg.data.train
    inner = "data.train.dataset" if train.type == "RepeatDataset" else "data.train"
    inner_cfg = train.dataset if train.type == "RepeatDataset" else train
    opts = {"work_dir": work_dir, "runner.max_epochs": 1, "data.workers_per_gpu": 0, "data.samples_per_gpu": 1,
            "model.backbone.init_cfg": None, "log_config.interval": 1}
    if "voc" in path:
        voc = copies["voc"]
        opts.update({f"{inner}.ann_file": [f"{voc}VOC2007/ImageSets/Main/trainval.txt",
                                           f"{voc}VOC2012/ImageSets/Main/trainval.txt"],
                     f"{inner}.img_prefix": [f"{voc}VOC2007/", f"{voc}VOC2012/"], f"{inner}.classes": CLASSES,
                     "data.train.times": 1})  # VOC2007 + VOC2012: one image each
        for split in ("val", "test"):
            opts.update({f"data.{split}.ann_file": f"{voc}VOC2007/ImageSets/Main/test.txt",
                         f"data.{split}.img_prefix": f"{voc}VOC2007/", f"data.{split}.classes": CLASSES})
    else:
        coco = copies["coco"]
        opts.update({f"{inner}.ann_file": f"{coco}annotations/instances_train2017.json",
                     f"{inner}.img_prefix": f"{coco}train2017/", f"{inner}.classes": CLASSES})
        for split in ("val", "test"):
            opts.update({f"data.{split}.ann_file": f"{coco}annotations/instances_val2017.json",
                         f"data.{split}.img_prefix": f"{coco}val2017/", f"data.{split}.classes": CLASSES})
        if train.type == "RepeatDataset":  # SSD: BatchNorm on its 1x1 top level needs 2 images a batch
            opts.update({"data.train.times": 2, "data.samples_per_gpu": 2})
    opts.update(_scale_options(inner_cfg.pipeline, f"{inner}.pipeline"))
    opts.update(_scale_options(cfg.data.val.pipeline, "data.val.pipeline"))
    heads = {"roi_head": "model.roi_head.bbox_head.num_classes", "bbox_head": "model.bbox_head.num_classes"}
    for head, key in heads.items():
        if cfg.model.get(head) is not None:
            opts[key] = len(CLASSES)
    if (cfg.model.get("roi_head") or {}).get("mask_head") is not None:
        opts["model.roi_head.mask_head.num_classes"] = len(CLASSES)
    return opts


@pytest.mark.parametrize("path", COCO + VOC)
def test_mmdet_config_trains_two_iterations_unmodified(path, copies, tmp_path):
    work = str(tmp_path / "work")
    cfg = load_config(os.path.join(REPO, "configs", path), _options(path, copies, work))
    # ssdlite evaluates every 5 epochs: in a one-epoch run that is refused, so it trains unevaluated
    runner = train_from_config(cfg, validate=cfg.evaluation.get("interval", 1) == 1)
    assert runner.iter == 2  # 2 images, 1 per step, one epoch
    assert os.path.isfile(os.path.join(work, "epoch_1.pth"))
    logs = [f for f in os.listdir(work) if f.endswith(".log.json")]
    assert logs
    with open(os.path.join(work, logs[0])) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    train_rows = [r for r in rows if r.get("mode") == "train"]
    assert [r["iter"] for r in train_rows] == [1, 2] and all("loss" in r for r in train_rows)
    if cfg.evaluation.get("interval", 1) == 1:  # ssdlite evaluates every 5 epochs
        assert any(r.get("mode") == "val" for r in rows)
