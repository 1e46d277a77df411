"""mmdetection 2.x's own detectors trained by raydet: every family of ``tests/mmdet_zoo.py`` trains
two iterations in-process on a tiny COCO copy; a user's own detector and head arrive through
``custom_imports``; raydet's loop equals a plain loop of mmdet's ``train_step`` bitwise."""
import copy
import glob
import json
import os

import pytest
import torch

from raydet.apis import set_random_seed
from raydet.run import train_from_config
from raydet.config import load_config
from raydet.engine import load_file
from raydet.errors import ConfigError
from raydet.models import build_detector

from .conftest import NORM
from .mmdet_zoo import MASKS, ZOO, htc, model

CLASSES = ("rectangle", "ellipse", "triangle")


def pipeline(masks: bool):
    return [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", with_bbox=True, with_mask=masks),
            dict(type="Resize", img_scale=(96, 64), keep_ratio=True), dict(type="RandomFlip", flip_ratio=0.5),
            dict(type="Normalize", **NORM), dict(type="Pad", size_divisor=32), dict(type="DefaultFormatBundle"),
            dict(type="Collect", keys=["img", "gt_bboxes", "gt_labels"] + (["gt_masks"] if masks else []))]


def coco_config(shapes_root, work_dir, detector: dict, masks=False, iters=2, **overrides):
    """A run of ``iters`` iterations of ``detector`` on the shapes data read as a COCO dataset."""
    train = dict(type="CocoDataset", classes=CLASSES, ann_file=os.path.join(shapes_root, "annotations",
                                                                             "instances_train.json"),
                 img_prefix=os.path.join(shapes_root, "train"), pipeline=pipeline(masks))
    cfg = dict(model=detector, data=dict(samples_per_gpu=2, workers_per_gpu=0, train=train),
               optimizer=dict(type="SGD", lr=0.002, momentum=0.9, weight_decay=1e-4),
               optimizer_config=dict(grad_clip=None), lr_config=dict(policy="fixed"),
               runner=dict(type="IterBasedRunner", max_iters=iters),
               checkpoint_config=dict(interval=iters, async_save=False),
               log_config=dict(interval=1, hooks=[dict(type="TextLoggerHook")]),
               workflow=[("train", 1)], work_dir=str(work_dir), seed=0, deterministic=True, auto_resume=False)
    cfg.update(overrides)
    return load_config(cfg)


def logged_iterations(work_dir) -> list[dict]:
    (log,) = glob.glob(os.path.join(str(work_dir), "*.log.json"))
    return [r for r in map(json.loads, open(log).read().splitlines()[1:]) if r.get("mode") == "train"]


@pytest.mark.parametrize("name", list(ZOO))
def test_mmdet_detector_trains_two_iterations(name, shapes_root, tmp_path):
    cfg = coco_config(shapes_root, tmp_path, model(name), masks=name in MASKS)
    runner = train_from_config(cfg, validate=False)
    records = logged_iterations(tmp_path)
    assert [r["iter"] for r in records] == [1, 2]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    from raydet.engine.dist import unwrap
    saved = load_file(str(tmp_path / "iter_2.pth"))["state_dict"]
    live = unwrap(runner.model).state_dict()
    assert set(saved) == set(live)  # mmdet's own names: a zoo checkpoint of this family loads by name
    assert all(torch.equal(saved[k], live[k].cpu()) for k in live)


CUSTOM = '''
"""A user's own mmdet modules: a head and a detector, registered in mmdet's registries."""
from mmdet.models.builder import DETECTORS, HEADS
from mmdet.models.dense_heads import FCOSHead
from mmdet.models.detectors import SingleStageDetector


@HEADS.register_module()
class MyHead(FCOSHead):
    def loss(self, *args, **kwargs):
        losses = super().loss(*args, **kwargs)
        losses["loss_extra"] = 0.0 * losses["loss_cls"]
        return losses


@DETECTORS.register_module()
class MyDetector(SingleStageDetector):
    def train_step(self, data, optimizer):
        outputs = super().train_step(data, optimizer)
        outputs["log_vars"]["my_steps"] = 1.0
        return outputs
'''


def test_custom_imports_of_a_users_detector_and_head(shapes_root, tmp_path, monkeypatch):
    (tmp_path / "my_mmdet_modules.py").write_text(CUSTOM)
    monkeypatch.syspath_prepend(str(tmp_path))
    detector = model("FCOS")
    detector.update(type="MyDetector")
    detector["bbox_head"]["type"] = "MyHead"
    cfg = coco_config(shapes_root, tmp_path / "w", detector, custom_imports=dict(imports=["my_mmdet_modules"]))
    train_from_config(cfg, validate=False)
    records = logged_iterations(tmp_path / "w")
    # the head's extra loss and the detector's own train_step both ran
    assert all("loss_extra" in r and r["my_steps"] == 1.0 for r in records)


def test_an_unknown_type_or_argument_is_one_config_error_naming_the_key(shapes_root, tmp_path):
    detector = model("RetinaNet")
    detector["bbox_head"]["type"] = "RetinaHed"
    with pytest.raises(ConfigError, match=r"model\.bbox_head\.type='RetinaHed'.*did you mean 'RetinaHead'"):
        coco_config(shapes_root, tmp_path, detector)
    detector = model("RetinaNet")
    detector["bbox_head"]["stacked_conv"] = 2
    with pytest.raises(ConfigError, match=r"model\.bbox_head\.stacked_conv.*did you mean 'stacked_convs'"):
        coco_config(shapes_root, tmp_path, detector)


def test_raydets_loop_equals_a_plain_loop_of_mmdets_train_step(shapes_root, tmp_path):
    """Faster R-CNN, 5 iterations, same seed, deterministic CPU: raydet's runner and a plain loop
    of mmdet's own ``train_step`` + SGD over the same batches end with identical weights."""
    from raydet.data import build_dataloader, build_dataset
    from raydet.models import build_detector
    cfg = coco_config(shapes_root, tmp_path / "raydet", model("FasterRCNN"), iters=5)
    from raydet.engine.dist import unwrap
    ours = unwrap(train_from_config(cfg, validate=False).model).state_dict()

    set_random_seed(0, deterministic=True)
    plain = build_detector(cfg.model)
    loader = build_dataloader(build_dataset(cfg.data.train, seed=0), 2, 0, shuffle=True, seed=0)
    optimizer = torch.optim.SGD(plain.parameters(), lr=0.002, momentum=0.9, weight_decay=1e-4)
    plain.train()
    loader.sampler.set_epoch(0)
    for i, batch in zip(range(5), loader):
        outputs = plain.train_step(batch, optimizer)
        optimizer.zero_grad()
        outputs["loss"].backward()
        optimizer.step()
    theirs = plain.state_dict()
    assert set(ours) == set(theirs)
    differ = [k for k in ours if not torch.equal(ours[k], theirs[k])]
    assert not differ, differ[:5]


@pytest.mark.parametrize("name", ["YOLOX", "DynamicRCNN"])
def test_a_resume_keeps_what_the_model_learns_outside_its_weights(name, shapes_root, tmp_path):
    """YOLOX's drawn input size and its counter, Dynamic R-CNN's IoU/beta statistics and the
    thresholds they set: a run killed after a checkpoint and resumed ends bitwise equal to the
    uninterrupted one, those values included (they are in each rank's part of the checkpoint)."""
    from raydet.engine.dist import unwrap
    from raydet.engine.hooks import ChaosError
    from raydet.models.training_state import training_state
    detector = model(name)
    if name == "YOLOX":  # a new size every 2 iterations
        detector["random_size_interval"] = 2
    else:  # new thresholds every 2 iterations
        detector["train_cfg"]["rcnn"]["dynamic_rcnn"]["update_iter_interval"] = 2
    ckpt = dict(interval=3, async_save=False)

    def run(work, **extra):
        return train_from_config(coco_config(shapes_root, work, copy.deepcopy(detector), iters=7,
                                             checkpoint_config=ckpt, **extra), validate=False)
    straight = run(tmp_path / "straight")
    chaos = [dict(type="ChaosHook", marker=str(tmp_path / "marker"), at_iter=5)]
    with pytest.raises(ChaosError):
        run(tmp_path / "killed", custom_hooks=chaos)
    resumed = run(tmp_path / "killed", custom_hooks=chaos, resume_from=str(tmp_path / "killed" / "iter_3.pth"))
    want, got = training_state(unwrap(straight.model)), training_state(unwrap(resumed.model))
    assert want == got and want != training_state(build_detector(copy.deepcopy(detector)))
    a, b = unwrap(straight.model).state_dict(), unwrap(resumed.model).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "ModelStateHook" in load_file(str(tmp_path / "killed" / "iter_3.pth"))["ranks"][0]


def test_htc_trains_its_semantic_branch_on_maps_batched_as_mmcv_batches_them(shapes_root, tmp_path):
    """mmdet's ``DefaultFormatBundle`` marks ``gt_semantic_seg`` to be stacked (padded with 255):
    raydet's batches give HTC's semantic head one ``[B, 1, H, W]`` tensor, as mmcv's collate does."""
    import cv2
    import numpy as np
    data = json.load(open(os.path.join(shapes_root, "annotations", "instances_train.json")))
    seg = tmp_path / "seg"
    seg.mkdir()
    boxes = {}
    for ann in data["annotations"]:
        boxes.setdefault(ann["image_id"], []).append(ann)
    for img in data["images"]:  # each box's category inside it, background 0
        label = np.zeros((img["height"], img["width"]), np.uint8)
        for ann in boxes.get(img["id"], []):
            x, y, w, h = (int(v) for v in ann["bbox"])
            label[y:y + h, x:x + w] = ann["category_id"]
        cv2.imwrite(str(seg / img["file_name"].replace("jpg", "png")), label)
    cfg = coco_config(shapes_root, tmp_path / "work", htc(), masks=True)
    train = cfg.data.train
    train.seg_prefix = str(seg)  # mmdet's own CocoDataset reads the maps
    train.pipeline[1].with_seg = True
    train.pipeline.insert(-2, dict(type="SegRescale", scale_factor=1 / 8))
    train.pipeline[-1]["keys"].append("gt_semantic_seg")
    runner = train_from_config(cfg, validate=False)
    records = logged_iterations(tmp_path / "work")
    assert [r["iter"] for r in records] == [1, 2] and all(r["loss_semantic_seg"] > 0 for r in records)
    assert runner.iter == 2
