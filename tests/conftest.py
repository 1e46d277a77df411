"""Shared fixtures: a small shapes dataset (generated once per session) and tiny configs."""
import copy
import os

# Tests download nothing: a pretrained checkpoint absent from torch hub's cache is an error
os.environ["RAYDET_OFFLINE"] = "1"
# Every Ray instance a test starts listens on 127.0.0.1 only. Ray reads this when it is imported,
# so it is set before any test module imports ray.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# Ray Train's controller looks at its workers (started? reported? finished?) every 2 s by default;
# a report made while the one before is not yet collected waits for that look. The test runs'
# steps are milliseconds, so the tests ask for 0.5 s: the same behaviour, ~6 s less per run.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
# Ray runs its workers at niceness 15; beside the other pytest-xdist worker (scripts/test.sh), the
# Ray tests, the suite's longest stretch, would get the CPU last.
os.environ.setdefault("RAY_worker_niceness", "0")

import pytest  # noqa: E402

NORM = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
TRAIN_PIPELINE = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", with_bbox=True),
    dict(type="Resize", img_scale=(128, 96), keep_ratio=True),
    dict(type="RandomFlip", flip_ratio=0.5),
    dict(type="Normalize", **NORM),
    dict(type="Pad", size_divisor=16),
    dict(type="DefaultFormatBundle"),
    dict(type="Collect", keys=["img", "gt_bboxes", "gt_labels"]),
]
TEST_PIPELINE = [
    dict(type="LoadImageFromFile"),
    dict(type="MultiScaleFlipAug", img_scale=(128, 96), flip=False, transforms=[
        dict(type="Resize", keep_ratio=True), dict(type="RandomFlip"), dict(type="Normalize", **NORM),
        dict(type="Pad", size_divisor=16), dict(type="ImageToTensor", keys=["img"]),
        dict(type="Collect", keys=["img"])]),
]
TINY_MODEL = dict(  # mmdet 2.x's FCOS structure on a 4-stage, 16-channel GN backbone
    type="FCOS",
    backbone=dict(type="GNConvNet", channels=(8, 16, 16, 16), out_indices=(1, 2, 3), groups=4),
    neck=dict(type="FPN", in_channels=[16, 16, 16], out_channels=32, num_outs=3),
    bbox_head=dict(type="FCOSHead", num_classes=3, in_channels=32, feat_channels=32, stacked_convs=4,
                   strides=[4, 8, 16], regress_ranges=((-1, 32), (32, 64), (64, 1e8)), center_sampling=True,
                   norm_on_bbox=True, centerness_on_reg=True, norm_cfg=dict(type="GN", num_groups=32),
                   loss_bbox=dict(type="GIoULoss"),
                   init_cfg=dict(type="Normal", layer="Conv2d", std=0.01, override=[
                       dict(type="Normal", name="conv_cls", std=0.01, bias_prob=0.01),
                       dict(type="Normal", name="conv_reg", std=0.01, bias=1.0)])),
    test_cfg=dict(nms_pre=1000, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.6), max_per_img=100))
TINY_BACKBONE = dict(type="GNConvNet", channels=(8, 16, 16, 16), out_indices=(1, 2, 3), groups=4)


def with_classes(model: dict, num_classes: int) -> dict:
    """``model`` (an mmdet model dict) with every head's ``num_classes`` set."""
    model = copy.deepcopy(model)
    for head in (model.get("bbox_head"), (model.get("roi_head") or {}).get("bbox_head"),
                 (model.get("roi_head") or {}).get("mask_head")):
        if head is not None:
            head["num_classes"] = num_classes
    return model


def tiny_rcnn(mask: bool = False, channels: int = 16) -> dict:
    """mmdet's Faster/Mask R-CNN R50-FPN config (configs/_base_/models) on the tiny backbone."""
    from mmcv import Config
    base = "mask_rcnn_r50_fpn.py" if mask else "faster_rcnn_r50_fpn.py"
    cfg = Config.fromfile(os.path.join(os.path.dirname(__file__), "..", "configs", "_base_", "models", base))
    roi = dict(bbox_roi_extractor=dict(out_channels=channels, featmap_strides=[4, 8, 16]),
               bbox_head=dict(in_channels=channels, fc_out_channels=64, num_classes=3))
    if mask:
        roi.update(mask_roi_extractor=dict(out_channels=channels, featmap_strides=[4, 8, 16]),
                   mask_head=dict(in_channels=channels, conv_out_channels=16, num_convs=2, num_classes=3))
    cfg.merge_from_dict(dict(model=dict(
        backbone=dict(_delete_=True, **TINY_BACKBONE),
        neck=dict(in_channels=[16, 16, 16], out_channels=channels, num_outs=3),
        rpn_head=dict(in_channels=channels, feat_channels=channels,
                      anchor_generator=dict(scales=[4], strides=[4, 8, 16])),
        roi_head=roi)))
    return cfg.model.to_dict()


SMALL = dict(train=48, val=16)


@pytest.fixture(scope="session", autouse=True)
def data_home(tmp_path_factory):
    """raydet's data home (the annotation index cache) is this session's own: the tests write nothing
    under ``~/.cache``, and no cache file of an earlier session (whose temporary paths pytest reuses)
    serves this one's datasets. Set before any test starts a process, Ray's included."""
    home = str(tmp_path_factory.mktemp("raydet-data"))
    os.environ["RAYDET_DATA"] = home
    return home


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory):
    from raydet.data.shapes import generate
    root = str(tmp_path_factory.mktemp("data") / "shapes")
    return generate(root, seed=0, num_images=SMALL)


def tiny_config(shapes_root, work_dir, **overrides):
    """A complete raydet config dict that trains in a few seconds on 2 CPU cores."""
    ds = dict(type="ShapesDataset", root=shapes_root, num_images=SMALL)
    cfg = dict(
        model=copy.deepcopy(TINY_MODEL),
        data=dict(samples_per_gpu=4, workers_per_gpu=0,
                  train=dict(ds, split="train", pipeline=TRAIN_PIPELINE),
                  val=dict(ds, split="val", pipeline=TEST_PIPELINE),
                  test=dict(ds, split="val", pipeline=TEST_PIPELINE),
                  val_dataloader=dict(samples_per_gpu=8)),
        optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.01),
        optimizer_config=dict(grad_clip=dict(max_norm=10, norm_type=2)),
        lr_config=dict(policy="step", step=[2], warmup="linear", warmup_iters=3, warmup_ratio=0.1),
        runner=dict(type="EpochBasedRunner", max_epochs=2),
        checkpoint_config=dict(interval=1),
        log_config=dict(interval=1, hooks=[dict(type="TextLoggerHook")]),
        evaluation=dict(interval=1, metric="bbox"),
        workflow=[("train", 1)],
        work_dir=str(work_dir), seed=0, deterministic=True, auto_resume=False,
    )
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


@pytest.fixture
def make_cfg(shapes_root, tmp_path):
    from raydet.config import load_config

    def make(work_dir=None, **overrides):
        return load_config(tiny_config(shapes_root, work_dir or tmp_path / "work", **overrides))
    return make


#: torch threads of a test process: the cores shared by the pytest-xdist workers (one thread each
#: on 2 cores: more would have their OpenMP threads spin against each other). Tests that compare a
#: subprocess's training with this process's give it the same (``RAYDET_TEST_THREADS``).
THREADS = max(1, min(2, os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
os.environ["RAYDET_TEST_THREADS"] = str(THREADS)


@pytest.fixture(autouse=True)
def _torch_threads():
    import torch
    torch.set_num_threads(THREADS)
    yield
