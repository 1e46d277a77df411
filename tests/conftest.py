"""Shared fixtures: a small shapes dataset (generated once per session) and tiny configs."""
import copy
import os

# Every Ray instance a test starts listens on 127.0.0.1 only. Ray reads this when it is imported,
# so it is set before any test module imports ray.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

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
TINY_MODEL = dict(type="FCOS", num_classes=3,
                  backbone=dict(type="GNConvNet", channels=(8, 16, 16, 16), out_indices=(1, 2, 3), groups=4),
                  neck=dict(type="FPN", out_channels=32),
                  anchor_generator=dict(sizes=((4,), (8,), (16,)), aspect_ratios=((1.0,),) * 3))
SMALL = dict(train=48, val=16)


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


@pytest.fixture(autouse=True)
def _torch_threads():
    import torch
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield
