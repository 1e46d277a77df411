"""The pipelines are mmdet's own: raydet's COCO dataset (its compact annotation index) gives the
samples mmdet's own CocoDataset gives, and a random pipeline is a pure function of the sample's
key that leaves the process's own random generators where they were."""
import copy
import os
import random

import numpy as np
import pytest
import torch

import raydet  # noqa: F401  (the op table before mmdet)
from raydet.data import CocoDataset
from raydet.data.dataset import SampleKey

from .conftest import NORM

CLASSES = ("rectangle", "ellipse", "triangle")
PLAIN = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
         dict(type="Resize", img_scale=(96, 64), keep_ratio=True), dict(type="RandomFlip", flip_ratio=0.0),
         dict(type="Normalize", **NORM), dict(type="Pad", size_divisor=32), dict(type="DefaultFormatBundle"),
         dict(type="Collect", keys=["img", "gt_bboxes", "gt_labels", "gt_masks"])]
SSD = [dict(type="LoadImageFromFile", to_float32=True), dict(type="LoadAnnotations", with_bbox=True),
       dict(type="PhotoMetricDistortion"), dict(type="Expand", mean=NORM["mean"], to_rgb=True, ratio_range=(1, 2)),
       dict(type="MinIoURandomCrop", min_ious=(0.1, 0.3, 0.5), min_crop_size=0.3),
       dict(type="Resize", img_scale=(96, 64), keep_ratio=False), dict(type="RandomFlip", flip_ratio=0.5),
       dict(type="Normalize", **NORM), dict(type="DefaultFormatBundle"),
       dict(type="Collect", keys=["img", "gt_bboxes", "gt_labels"])]


def files(root):
    return dict(ann_file=os.path.join(root, "annotations", "instances_train.json"),
                img_prefix=os.path.join(root, "train"))


def test_samples_equal_mmdets_own_coco_dataset(shapes_root):
    from mmdet.datasets import CocoDataset as MMDetCoco
    ours = CocoDataset(pipeline=PLAIN, classes=CLASSES, **files(shapes_root))
    theirs = MMDetCoco(pipeline=PLAIN, classes=CLASSES, **files(shapes_root))
    by_name = {info["filename"]: i for i, info in enumerate(theirs.data_infos)}
    assert len(ours) == len(theirs) and ours.CLASSES == theirs.CLASSES
    for i in range(8):
        a = ours[i]
        b = theirs[by_name[ours.data_infos[i]["filename"]]]
        assert torch.equal(a["img"], b["img"].data)
        assert torch.equal(a["gt_bboxes"], b["gt_bboxes"].data) and torch.equal(a["gt_labels"], b["gt_labels"].data)
        assert np.array_equal(a["gt_masks"].masks, b["gt_masks"].data.masks)
        assert {k: str(v) for k, v in a["img_metas"].items()} == {k: str(v) for k, v in b["img_metas"].data.items()}


def test_a_random_pipeline_is_a_pure_function_of_the_key(shapes_root):
    ds = CocoDataset(pipeline=SSD, classes=CLASSES, seed=7, **files(shapes_root))
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    before = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    first = [ds[SampleKey(i, 0)] for i in range(6)]
    again = [ds[SampleKey(i, 0)] for i in reversed(range(6))][::-1]  # another order, as another rank sees them
    later = [ds[SampleKey(i, 1)] for i in range(6)]
    assert all(torch.equal(a["img"], b["img"]) and torch.equal(a["gt_bboxes"], b["gt_bboxes"])
               for a, b in zip(first, again))
    assert any(a["img"].shape != b["img"].shape or not torch.equal(a["img"], b["img"]) for a, b in zip(first, later))
    # loading samples in the training process leaves its generators where they were
    assert random.getstate() == before[0] and np.array_equal(np.random.get_state()[1], before[1])
    assert torch.equal(torch.get_rng_state(), before[2])


def test_a_users_transform_registered_in_mmdets_registry_runs(shapes_root):
    from mmdet.datasets import PIPELINES

    @PIPELINES.register_module(force=True)
    class MarkIt:
        def __call__(self, results):
            results["marked"] = True
            return results

    pipeline = PLAIN[:2] + [dict(type="MarkIt"), dict(type="Collect", keys=[], meta_keys=["marked"])]
    ds = CocoDataset(pipeline=pipeline, classes=CLASSES, **files(shapes_root))
    assert ds[0]["img_metas"]["marked"] is True
    from raydet.errors import ConfigError
    with pytest.raises(ConfigError, match=r"'MarkIT' at pipeline.2.type \(did you mean 'MarkIt'\?\)"):
        CocoDataset(pipeline=PLAIN[:2] + [dict(type="MarkIT")], classes=CLASSES, **files(shapes_root))


def test_yolox_on_mmdets_multi_image_mix_dataset_trains_and_resamples_exactly(shapes_root, tmp_path):
    """mmdet's own MultiImageMixDataset (Mosaic, RandomAffine, MixUp draw other images at random)
    around mmdet's own CocoDataset: keyed by raydet, a sample is a pure function of its key, and
    YOLOX trains on it in raydet's loop."""
    from raydet.run import train_from_config
    from raydet.data import build_dataset

    from .mmdet_zoo import model
    from .test_mmdet_models import coco_config
    train = dict(type="MultiImageMixDataset",
                 dataset=dict(type="CocoDataset", classes=CLASSES, pipeline=[
                     dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", with_bbox=True)],
                     filter_empty_gt=False, **files(shapes_root)),
                 pipeline=[dict(type="Mosaic", img_scale=(64, 96), pad_val=114.0),
                           dict(type="RandomAffine", scaling_ratio_range=(0.5, 1.5), border=(-32, -48)),
                           dict(type="MixUp", img_scale=(64, 96), ratio_range=(0.8, 1.6), pad_val=114.0),
                           dict(type="YOLOXHSVRandomAug"), dict(type="RandomFlip", flip_ratio=0.5),
                           dict(type="Resize", img_scale=(64, 96), keep_ratio=True),
                           dict(type="Pad", pad_to_square=True, pad_val=dict(img=(114.0, 114.0, 114.0))),
                           dict(type="FilterAnnotations", min_gt_bbox_wh=(1, 1), keep_empty=False),
                           dict(type="DefaultFormatBundle"), dict(type="Collect", keys=["img", "gt_bboxes", "gt_labels"])])
    ds = build_dataset(train, seed=3)
    a, b = ds[SampleKey(4, 0)], ds[SampleKey(4, 0)]
    assert torch.equal(a["img"], b["img"]) and torch.equal(a["gt_bboxes"], b["gt_bboxes"])
    assert len(ds) == len(ds.dataset) and ds.CLASSES == CLASSES
    cfg = coco_config(shapes_root, tmp_path, model("YOLOX"))
    cfg.data.train = train
    train_from_config(cfg, validate=False)
    assert (tmp_path / "iter_2.pth").exists()


def test_yolox_mode_switch_holds_after_a_resume_past_it(shapes_root, tmp_path):
    """mmdet's YOLOXModeSwitchHook turns Mosaic off and YOLOX's L1 loss on only in the epoch where
    exactly ``num_last_epochs`` remain; raydet's (mmdet's, registered over it) also switches when
    a run resumes after that epoch: the resumed run ends bitwise equal to the straight one."""
    from raydet.run import train_from_config
    from raydet.engine.dist import unwrap
    from raydet.engine.hooks import ChaosError

    from .mmdet_zoo import model
    from .test_mmdet_models import coco_config
    train = dict(type="MultiImageMixDataset",
                 dataset=dict(type="CocoDataset", classes=CLASSES, pipeline=[
                     dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", with_bbox=True)],
                     filter_empty_gt=False, **files(shapes_root)),
                 pipeline=[dict(type="Mosaic", img_scale=(64, 64), pad_val=114.0), dict(type="RandomFlip", flip_ratio=0.5),
                           dict(type="Resize", img_scale=(64, 64), keep_ratio=True),
                           dict(type="Pad", pad_to_square=True, pad_val=dict(img=(114.0, 114.0, 114.0))),
                           dict(type="FilterAnnotations", min_gt_bbox_wh=(1, 1), keep_empty=False),
                           dict(type="DefaultFormatBundle"), dict(type="Collect", keys=["img", "gt_bboxes", "gt_labels"])])
    switch = dict(type="YOLOXModeSwitchHook", num_last_epochs=1, priority=48)  # off from epoch 2 of 3

    def run(work, *hooks, **extra):
        cfg = coco_config(shapes_root, work, model("YOLOX"), runner=dict(type="EpochBasedRunner", max_epochs=3),
                          checkpoint_config=dict(interval=4, by_epoch=False, async_save=False),
                          custom_hooks=[switch, *hooks], **extra)
        cfg.data.train = copy.deepcopy(train)
        return train_from_config(cfg, validate=False)
    straight = run(tmp_path / "straight")
    ipe = straight.iters_per_epoch
    chaos = dict(type="ChaosHook", marker=str(tmp_path / "marker"), at_iter=2 * ipe + 6)  # in the last epoch
    with pytest.raises(ChaosError):
        run(tmp_path / "killed", chaos)
    at = 4 * ((2 * ipe + 5) // 4)
    assert at > 2 * ipe  # the checkpoint is past the switch epoch's start
    resumed = run(tmp_path / "killed", chaos, resume_from=str(tmp_path / "killed" / f"iter_{at}.pth"))
    assert unwrap(resumed.model).bbox_head.use_l1
    assert tuple(resumed.data_loader.dataset._skip_type_keys) == ("Mosaic", "RandomAffine", "MixUp")
    a, b = unwrap(straight.model).state_dict(), unwrap(resumed.model).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_coco_bbox_metrics_equal_mmdets_own_evaluate(shapes_root):
    """The same detections evaluated by raydet's COCO dataset and by mmdet's own CocoDataset."""
    from mmdet.datasets import CocoDataset as MMDetCoco
    kw = dict(ann_file=os.path.join(shapes_root, "annotations", "instances_val.json"),
              img_prefix=os.path.join(shapes_root, "val"), pipeline=[], test_mode=True, classes=CLASSES)
    ours, theirs = CocoDataset(**kw), MMDetCoco(**kw)
    rng = np.random.default_rng(0)
    results = []
    for i in range(len(ours)):
        ann = ours.index.ann(i)
        per_class = []
        for c in range(3):  # the truth, jittered, and two false positives per class
            boxes = ann["bboxes"][ann["labels"] == c] + rng.normal(0, 3, (int((ann["labels"] == c).sum()), 4))
            extra = rng.uniform(0, 60, (2, 4))
            extra[:, 2:] += extra[:, :2]
            boxes = np.concatenate([boxes, extra])
            per_class.append(np.concatenate([boxes, rng.uniform(0, 1, (len(boxes), 1))], 1).astype(np.float32))
        results.append(per_class)
    order = {info["filename"]: i for i, info in enumerate(theirs.data_infos)}
    theirs_results = [None] * len(results)
    for i, r in enumerate(results):
        theirs_results[order[ours.data_infos[i]["filename"]]] = r
    a, b = ours.evaluate(results, metric="bbox"), theirs.evaluate(theirs_results, metric="bbox")
    assert a == b and a["bbox_mAP"] > 0


def test_proposal_recall_is_mmdets_own_evaluation(shapes_root):
    """mmdetection's RPN configs evaluate ``proposal_fast``: raydet's COCO dataset hands it to
    mmdet's own CocoDataset.evaluate (the recall of the ground truth itself is 1)."""
    kw = dict(ann_file=os.path.join(shapes_root, "annotations", "instances_val.json"),
              img_prefix=os.path.join(shapes_root, "val"), pipeline=[], test_mode=True, classes=CLASSES)
    ours = CocoDataset(**kw)
    results = [np.concatenate([ours.index.ann(i)["bboxes"], np.ones((len(ours.index.ann(i)["bboxes"]), 1))], 1)
               for i in range(len(ours))]
    out = ours.evaluate(results, metric="proposal_fast")
    assert set(out) == set(CocoDataset.metric_keys(["proposal_fast"])) and out["AR@100"] == pytest.approx(1.0)
