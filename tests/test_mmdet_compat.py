"""mmdet 2.x model dicts on torchvision: the key table matches the builders, every mapped key lands in
the built module, and unsupported keys are one ConfigError naming them."""
import copy
import os
import re

import pytest
import torch
from mmcv import Config

from raydet.errors import ConfigError
from raydet.models import build_detector, validate_model
from raydet.models.cfg import READ_KEYS
from raydet.models.compat import TABLE, components, render

from .conftest import TINY_MODEL, tiny_rcnn
from .test_models import MODELS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def base_model(name: str) -> dict:
    return Config.fromfile(os.path.join(REPO, "configs", "_base_", "models", name)).model.to_dict()


def _set(cfg: dict, path: str, value) -> dict:
    cfg = copy.deepcopy(cfg)
    node = cfg
    *parents, last = path.split(".")
    for p in parents:
        node = node[p]
    node[last] = value
    return cfg


FASTER = base_model("faster_rcnn_r50_fpn.py")
MASK = base_model("mask_rcnn_r50_fpn.py")
RETINA = base_model("retinanet_r50_fpn.py")
NO_WEIGHTS = dict(init_cfg=None)


def variants():
    """Model dicts that together take every path of the builders (built on the meta device)."""
    faster = _set(FASTER, "backbone.init_cfg", None)
    retina = _set(RETINA, "backbone.init_cfg", None)
    yield FASTER  # init_cfg Pretrained: validated, not loaded, on the meta device
    yield Config.fromfile(os.path.join(REPO, "configs/ssd/ssdlite_mobilenetv2_scratch_600e_coco.py")).model.to_dict()
    yield _set(faster, "backbone.init_cfg", dict(type="Pretrained", checkpoint="x.pth", prefix="backbone.",
                                                 map_location="cpu"))
    yield _set(MASK, "backbone.init_cfg", None)
    yield retina
    yield MODELS["SSD-MobileNetV2"]
    yield TINY_MODEL
    rpn = {k: v for k, v in _set(faster, "type", "RPN").items() if k != "roi_head"}
    yield dict(rpn, train_cfg=dict(rpn=faster["train_cfg"]["rpn"]), test_cfg=dict(rpn=faster["test_cfg"]["rpn"]))
    x101 = _set(faster, "backbone", dict(type="ResNeXt", depth=101, groups=32, base_width=4,
                                         init_cfg=[dict(type="Kaiming", layer="Conv2d"),
                                                   dict(type="Constant", layer="BatchNorm2d", val=1)]))
    x101 = _set(x101, "roi_head.bbox_head", dict(
        x101["roi_head"]["bbox_head"], type="Shared4Conv1FCBBoxHead", conv_out_channels=256,
        norm_cfg=dict(type="GN", num_groups=32), loss_bbox=dict(type="SmoothL1Loss", beta=1.0)))
    x101["test_cfg"]["rpn"] = dict(nms_pre=1000, max_num=1000, nms_post=1000, nms_thr=0.7, min_bbox_size=0)
    yield x101
    giou = _set(retina, "bbox_head.reg_decoded_bbox", True)
    yield _set(giou, "bbox_head.loss_bbox", dict(type="GIoULoss", loss_weight=2.0))
    fcos = _set(TINY_MODEL, "bbox_head.loss_bbox", dict(type="IoULoss", linear=True))
    fcos["train_cfg"] = dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0))
    fcos["backbone"] = dict(TINY_MODEL["backbone"], init_cfg=dict(type="Xavier", layer="Conv2d", distribution="uniform"))
    yield fcos
    mobile = _set(retina, "backbone", dict(type="MobileNetV2", out_indices=(2, 4, 6), act_cfg=dict(type="ReLU6")))
    yield _set(mobile, "neck", dict(retina["neck"], in_channels=[32, 96, 320], start_level=0))
    yield _set(_set(retina, "neck.norm_cfg", dict(type="BN")), "neck.add_extra_convs", "on_lateral")


def test_every_variant_translates():
    for cfg in variants():
        validate_model(cfg)


def test_key_table_matches_the_builders_and_the_docs():
    for cfg in variants():
        validate_model(cfg)
    with open(os.path.join(REPO, "docs", "mmdet_compat.md")) as f:
        assert f.read() == render(), "docs/mmdet_compat.md is stale: python -m raydet.models.compat > it"
    documented = set()
    for section, rows in TABLE.items():
        read = set().union(*(READ_KEYS.get(c, set()) for c in components(section))) - {"type"}
        keys = {k for k, _, _ in rows}
        documented |= {(c, k) for c in components(section) for k in keys}
        unknown = keys - read - ({"type"} if section == "nms" else set())
        assert not unknown, f"{section}: documented keys no builder reads: {sorted(unknown)}"
    read_pairs = {(c, k) for c, ks in READ_KEYS.items() for k in ks if k != "type"}
    undocumented = sorted(p for p in read_pairs if p not in documented)
    assert not undocumented, f"keys the builders read but the table lacks: {undocumented}"


# ----------------------------------------------------------------- mapped values in the modules
def test_faster_rcnn_keys_reach_torchvision_modules():
    cfg = _set(FASTER, "backbone.init_cfg", None)
    cfg["train_cfg"]["rpn"]["sampler"]["num"] = 128
    cfg["train_cfg"]["rcnn"]["assigner"]["pos_iou_thr"] = 0.6
    cfg["train_cfg"]["rcnn"]["assigner"]["neg_iou_thr"] = 0.4
    cfg["train_cfg"]["rpn_proposal"]["nms"]["iou_threshold"] = 0.8
    cfg["test_cfg"]["rcnn"]["score_thr"] = 0.3
    cfg["roi_head"]["bbox_roi_extractor"]["roi_layer"]["sampling_ratio"] = 2
    m = build_detector(cfg)
    det = m.detector
    body = det.backbone.body
    # frozen_stages=1: stem and layer1 frozen and in eval mode; norm_eval keeps every BN in eval
    m.train()
    assert not any(p.requires_grad for p in list(body.conv1.parameters()) + list(body.layer1.parameters()))
    assert all(p.requires_grad for p in body.layer2.parameters())
    assert not body.layer1.training and not body.bn1.training
    assert all(not x.training for x in body.modules() if isinstance(x, torch.nn.BatchNorm2d))
    assert body.layer2[0].conv2.stride == (2, 2) and body.layer2[0].conv1.stride == (1, 1)  # pytorch style
    # FPN: 4 levels + max-pool P6; anchors scale 8 x strides 4..64, ratios 0.5/1/2
    assert len(det.backbone.fpn.inner_blocks) == 4 and det.backbone.strides == [4, 8, 16, 32, 64]
    a = det.rpn.anchor_generator
    assert a.strides == [4, 8, 16, 32, 64] and a.num_anchors_per_location() == [3] * 5
    widths = (a.base[0][:, 2] - a.base[0][:, 0]).tolist()
    assert widths == pytest.approx([32 * 2 ** 0.5, 32, 32 / 2 ** 0.5])
    rpn, roi = det.rpn, det.roi_heads
    assert (rpn.proposal_matcher.high_threshold, rpn.proposal_matcher.low_threshold) == (0.7, 0.3)
    assert rpn.proposal_matcher.min_pos_iou == 0.3 and rpn.fg_bg_sampler.batch_size_per_image == 128
    assert rpn._pre_nms_top_n == dict(training=2000, testing=1000) and rpn.nms == dict(training=0.8, testing=0.7)
    assert rpn.box_coder.weights == (1.0, 1.0, 1.0, 1.0) and rpn.box_loss.kind == "L1Loss"
    assert (roi.proposal_matcher.high_threshold, roi.proposal_matcher.low_threshold) == (0.6, 0.4)
    assert roi.fg_bg_sampler.batch_size_per_image == 512 and roi.fg_bg_sampler.positive_fraction == 0.25
    assert roi.box_coder.weights == (10.0, 10.0, 5.0, 5.0)
    assert roi.score_thresh == 0.3 and roi.nms_thresh == 0.5 and roi.detections_per_img == 100
    pool = roi.box_roi_pool
    assert pool.aligned is True and pool.output_size == (7, 7) and pool.sampling_ratio == 2
    assert pool.strides == [4, 8, 16, 32] and pool.finest_scale == 56


def test_retinanet_and_caffe_fcos_keys_reach_modules():
    m = build_detector(_set(RETINA, "backbone.init_cfg", None)).detector
    fpn = m.backbone.fpn
    assert m.backbone.strides == [8, 16, 32, 64, 128] and len(fpn.inner_blocks) == 3
    extra = fpn.extra_blocks
    assert extra.mode == "on_input" and extra.convs[0][0].in_channels == 2048 and not extra.relu_before
    assert m.anchor_generator.num_anchors_per_location() == [9] * 5
    base = m.anchor_generator.base[0]  # stride 8: sizes 32 * 2**(k/3), ratios 0.5, 1, 2
    assert sorted(set((base[:, 2] - base[:, 0]).round(decimals=3).tolist()))[:1] == [pytest.approx(22.627, abs=1e-3)]
    assert (m.proposal_matcher.high_threshold, m.proposal_matcher.low_threshold) == (0.5, 0.4)
    assert m.head.focal.gamma == 2.0 and m.head.focal.alpha == 0.25
    assert m.score_thresh == 0.05 and m.topk_candidates == 1000
    caffe = Config.fromfile(os.path.join(REPO, "configs/fcos/fcos_r50_caffe_fpn_gn-head_1x_coco.py")).model.to_dict()
    caffe = _set(_set(caffe, "backbone.init_cfg", None), "backbone.frozen_stages", 2)
    f = build_detector(caffe).detector
    body = f.backbone.body
    assert body.layer2[0].conv1.stride == (2, 2) and body.layer2[0].conv2.stride == (1, 1)
    assert not any(p.requires_grad for p in body.layer2.parameters())
    assert not any(p.requires_grad for m in body.modules() if isinstance(m, torch.nn.BatchNorm2d)
                   for p in m.parameters())
    assert f.backbone.fpn.extra_blocks.mode == "on_output" and f.backbone.fpn.extra_blocks.relu_before
    assert len(f.head.scales) == 5 and not f.center_sampling and not f.head.norm_on_bbox
    assert f.regress_ranges[0] == (-1, 64) and f.head.strides == [8, 16, 32, 64, 128]
    assert f.box_loss.kind == "IoULoss" and f.box_loss.mode == "log"
    assert isinstance(f.head.cls_convs[0][1], torch.nn.GroupNorm) and f.head.cls_convs[0][0].bias is None


# ----------------------------------------------------------------- unsupported keys and values
UNSUPPORTED = [
    ("backbone.dcn", dict(type="DCNv2", deform_groups=1), r"model\.backbone\.dcn=.*not supported.*deformable"),
    ("backbone.deep_stem", True, r"model\.backbone\.deep_stem=True is not supported"),
    ("backbone.depth", 26, r"model\.backbone\.depth=26 is not supported; raydet supports 18, 34, 50"),
    ("backbone.with_cp", True, r"model\.backbone\.with_cp=True"),
    ("backbone.norm_cfg", dict(type="LN"), r"model\.backbone\.norm_cfg\.type='LN' is not supported"),
    ("backbone.plugins", [dict(cfg=dict(type="ContextBlock"))], r"model\.backbone\.plugins"),
    ("neck.type", "PAFPN", r"model\.neck\.type='PAFPN' is not supported.*'FPN', 'SSDNeck'"),
    ("neck.upsample_cfg", dict(mode="bilinear"), r"model\.neck\.upsample_cfg=.*bilinear"),
    ("rpn_head.loss_bbox", dict(type="BalancedL1Loss"), r"model\.rpn_head\.loss_bbox\.type='BalancedL1Loss'"),
    ("rpn_head.bbox_coder.target_means", [0.1, 0, 0, 0], r"target_means=\[0\.1.*zero means"),
    ("roi_head.bbox_head.type", "DoubleConvFCBBoxHead", r"bbox_head\.type='DoubleConvFCBBoxHead'"),
    ("roi_head.bbox_head.loss_cls", dict(type="FocalLoss"), r"bbox_head\.loss_cls\.type='FocalLoss'"),
    ("roi_head.bbox_roi_extractor.roi_layer.type", "RoIPool", r"roi_layer\.type='RoIPool'"),
    ("train_cfg.rcnn.sampler.type", "OHEMSampler", r"rcnn\.sampler\.type='OHEMSampler'"),
    ("train_cfg.rpn.assigner.ignore_iof_thr", 0.5, r"rpn\.assigner\.ignore_iof_thr=0\.5 is not supported"),
    ("test_cfg.rcnn.nms.type", "soft_nms", r"rcnn\.nms\.type='soft_nms' is not supported"),
    ("roi_head.shared_head", dict(type="ResLayer"), r"roi_head\.shared_head=.*not supported"),
    ("roi_head.bbox_head.num_cls_fcs", 1, r"bbox_head\.num_cls_fcs=1 is not supported"),
    ("roi_head.train_cfg", dict(rcnn=None), r"roi_head\.train_cfg=.*set model\.train_cfg\.rcnn"),
    ("roi_head.bbox_roi_extractor.out_channels", 128, r"bbox_roi_extractor\.out_channels=128 differs from the neck"),
    ("backbone.frozen_stage", 1, r"unknown config key 'model\.backbone\.frozen_stage' \(did you mean 'frozen_stages'"),
]


@pytest.mark.parametrize("path,value,message", UNSUPPORTED, ids=[u[0] for u in UNSUPPORTED])
def test_unsupported_key_is_one_config_error_naming_it(path, value, message):
    cfg = _set(FASTER, "backbone.init_cfg", None)
    with pytest.raises(ConfigError, match=message):
        validate_model(_set(cfg, path, value))


def test_unsupported_single_stage_values():
    cfg = _set(TINY_MODEL, "bbox_head.dcn_on_last_conv", True)
    with pytest.raises(ConfigError, match=r"dcn_on_last_conv=True is not supported"):
        validate_model(cfg)
    with pytest.raises(ConfigError, match=r"SSD needs pos_iou_thr == neg_iou_thr"):
        validate_model(_set(MODELS["SSD-MobileNetV2"], "train_cfg.assigner.neg_iou_thr", 0.4))
    with pytest.raises(ConfigError, match=r"in_channels=\[256, 512\] does not match the backbone's output channels"):
        validate_model(_set(FASTER, "neck.in_channels", [256, 512]))


def test_tiny_rcnn_fixture_is_mmdets_base():
    assert tiny_rcnn()["roi_head"]["bbox_head"]["type"] == "Shared2FCBBoxHead"
    assert re.search("torchvision://resnet50", str(FASTER["backbone"]["init_cfg"]))


def test_rpn_detector_trains_and_returns_scored_proposals():
    cfg = {k: v for k, v in tiny_rcnn().items() if k != "roi_head"}
    cfg = dict(cfg, type="RPN", train_cfg=dict(rpn=cfg["train_cfg"]["rpn"]), test_cfg=dict(rpn=cfg["test_cfg"]["rpn"]))
    model = build_detector(cfg)
    assert model.checks_classes is False  # NumClassCheckHook skips proposals, as mmdet skips RPNHead
    img = torch.randn(1, 3, 64, 96)
    meta = [dict(img_shape=(64, 96, 3), ori_shape=(64, 96, 3), scale_factor=[1.0] * 4, flip=False)]
    losses = model(img, meta, gt_bboxes=[torch.tensor([[10.0, 10, 50, 40]])], gt_labels=[torch.tensor([0])])
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_bbox"}
    model.eval()
    (proposals,), = model(img, meta, return_loss=False)
    assert proposals.ndim == 2 and proposals.shape[1] == 5 and 0 < len(proposals) <= 1000
    assert (proposals[:-1, 4] >= proposals[1:, 4]).all() or len(proposals) == 1
