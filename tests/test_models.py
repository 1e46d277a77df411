import numpy as np
import pytest
import torch
from torch import nn

from raydet.data import ShapesDataset, build_dataloader
from raydet.models import Detector, build_detector, register_model

from .conftest import NORM, TEST_PIPELINE, TINY_MODEL, tiny_rcnn

MASK_PIPELINE = [
    dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
    dict(type="Resize", img_scale=(160, 120), keep_ratio=True), dict(type="RandomFlip", flip_ratio=0.5),
    dict(type="Normalize", **NORM), dict(type="Pad", size_divisor=32), dict(type="DefaultFormatBundle"),
    dict(type="Collect", keys=["img", "gt_bboxes", "gt_labels", "gt_masks"])]
MODELS = {
    "FCOS": TINY_MODEL,
    "RetinaNet": dict(
        type="RetinaNet",
        backbone=dict(type="ResNet", depth=18, out_indices=(1, 2, 3), norm_cfg=dict(type="GN", num_groups=8)),
        neck=dict(type="FPN", in_channels=[128, 256, 512], out_channels=32, add_extra_convs="on_input", num_outs=5),
        bbox_head=dict(type="RetinaHead", num_classes=3, in_channels=32, feat_channels=32, stacked_convs=2,
                       anchor_generator=dict(type="AnchorGenerator", octave_base_scale=4, scales_per_octave=3,
                                             ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128]),
                       loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25)),
        train_cfg=dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0)),
        test_cfg=dict(nms_pre=1000, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=100)),
    "FasterRCNN": tiny_rcnn(),
    "MaskRCNN": tiny_rcnn(mask=True),
    "SSD-MobileNetV2": dict(
        type="SingleStageDetector",
        backbone=dict(type="MobileNetV2", widen_factor=0.25, out_indices=(4, 7)),
        neck=dict(type="SSDNeck", in_channels=(24, 1280), out_channels=(24, 1280, 64, 32), level_strides=(2, 2),
                  level_paddings=(1, 1), l2_norm_scale=None, use_depthwise=True, norm_cfg=dict(type="BN"),
                  act_cfg=dict(type="ReLU6")),
        bbox_head=dict(type="SSDHead", in_channels=(24, 1280, 64, 32), num_classes=3, use_depthwise=True,
                       norm_cfg=dict(type="BN"), act_cfg=dict(type="ReLU6"),
                       anchor_generator=dict(type="SSDAnchorGenerator", scale_major=False, strides=[16, 32, 64, 128],
                                             ratios=[[2], [2, 3], [2, 3], [2]], min_sizes=[16, 32, 64, 96],
                                             max_sizes=[32, 64, 96, 128])),
        train_cfg=dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.,
                                     gt_max_assign_all=False), neg_pos_ratio=3),
        test_cfg=dict(nms_pre=400, score_thr=0.02, nms=dict(type="nms", iou_threshold=0.45), max_per_img=100)),
}


@pytest.fixture(scope="module")
def batches(shapes_root):
    train = ShapesDataset("train", MASK_PIPELINE, root=shapes_root)
    val = ShapesDataset("val", TEST_PIPELINE, root=shapes_root, test_mode=True)
    return next(iter(build_dataloader(train, 2, 0))), next(iter(build_dataloader(val, 2, 0, shuffle=False)))


@pytest.mark.parametrize("name", list(MODELS))
def test_train_step_and_prediction(name, batches):
    torch.manual_seed(0)
    train, val = batches
    model = build_detector(MODELS[name])
    model.train()
    losses = model(**train)
    assert losses and all(torch.isfinite(v) for v in losses.values())
    assert all("loss" in k or k == "acc" for k in losses)
    sum(v for k, v in losses.items() if "loss" in k).backward()
    model.eval()
    out = model(return_loss=False, **val)
    assert len(out) == 2
    first = out[0][0] if name == "MaskRCNN" else out[0]
    assert len(first) == 3 and all(a.ndim == 2 and a.shape[1] == 5 for a in first)
    for meta, res in zip(val["img_metas"][0], out):
        h, w = meta["ori_shape"][:2]
        boxes = np.concatenate(res[0] if name == "MaskRCNN" else res)
        assert (boxes[:, [0, 2]] <= w).all() and (boxes[:, [1, 3]] <= h).all()
        if name == "MaskRCNN":
            masks = [m for per_class in res[1] for m in per_class]
            assert len(masks) == len(boxes) and all(m.shape == (h, w) for m in masks)


class _FixedOutput(nn.Module):
    """Stands in for a torchvision detector: predicts one known box in the network's input frame."""

    def __init__(self, box):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.box = torch.tensor([box], dtype=torch.float32)

    def forward(self, images, targets=None):
        self.transform(images)
        masks = torch.ones(1, 1, 28, 28)
        return [dict(boxes=self.box.clone(), scores=torch.tensor([0.9]), labels=torch.tensor([2]), masks=masks)
                for _ in range(len(images))]


@pytest.mark.parametrize("flip", [False, True])
def test_box_on_resized_image_maps_back_to_original_pixels(flip):
    det = Detector(_FixedOutput([40.0, 30.0, 100.0, 90.0]), num_classes=3, with_mask=True)
    # original 96x128 (h x w) resized by 2.5 -> 240x320
    meta = dict(ori_shape=(96, 128, 3), img_shape=(240, 320, 3), pad_shape=(240, 320, 3),
                scale_factor=np.array([2.5, 2.5, 2.5, 2.5], np.float32), flip=flip,
                flip_direction="horizontal" if flip else None)
    (bbox, segm), = det(torch.zeros(1, 3, 240, 320), [meta], return_loss=False)
    assert bbox[0].shape == (0, 5) and bbox[2].shape == (0, 5)
    expected = np.array([40, 30, 100, 90]) / 2.5
    if flip:
        expected = np.array([(320 - 100) / 2.5, 30 / 2.5, (320 - 40) / 2.5, 90 / 2.5])
    np.testing.assert_allclose(bbox[1][0, :4], expected, atol=1.0)
    mask = segm[1][0]
    ys, xs = np.nonzero(mask)
    assert mask.shape == (96, 128)
    assert abs(xs.min() - expected[0]) <= 1 and abs(xs.max() + 1 - expected[2]) <= 1


def test_register_model_and_unknown_kwarg():
    from raydet.errors import ConfigError

    @register_model("TestOnlyDetector")
    def factory(num_classes, width=4):
        return nn.Linear(width, num_classes)

    assert build_detector(dict(type="TestOnlyDetector", num_classes=2, width=3)).in_features == 3
    with pytest.raises(ConfigError, match="model.widht.*did you mean 'width'"):
        build_detector(dict(type="TestOnlyDetector", num_classes=2, widht=3))


def test_pretrained_init_cfg_is_non_strict_and_reports(tmp_path, caplog):
    src = build_detector(MODELS["FCOS"])
    state = {k: v for k, v in src.state_dict().items() if "head" not in k}
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "w.pth"
    torch.save({"state_dict": state}, path)
    with caplog.at_level("INFO", logger="raydet"):
        model = build_detector(dict(MODELS["FCOS"], init_cfg=dict(type="Pretrained", checkpoint=str(path))))
    key = next(k for k in state if k.endswith("body.stages.0.0.weight"))
    assert "detector.head.conv_cls.weight" in caplog.text
    assert torch.equal(model.state_dict()[key], state[key])
    assert "missing keys" in caplog.text and "unexpected keys in source state_dict: extra.weight" in caplog.text
