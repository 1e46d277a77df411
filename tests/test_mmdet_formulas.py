"""Anchors, box decoding, RoI level assignment, assignment and FCOS targets equal mmdet 2.x's formulas
on hand-computed values; zoo checkpoints convert both ways."""
import math

import pytest
import torch

from raydet.errors import CheckpointError
from raydet.models import build_detector
from raydet.models.anchors import MaxIoUMatcher, build_anchor_generator, build_box_coder
from raydet.models.two_stage import SingleRoIExtractor
from raydet.models.weights import from_mmdet, to_mmdet

from .conftest import TINY_MODEL, tiny_rcnn, with_classes
from .test_models import MODELS

R2 = math.sqrt(2)


def test_anchor_generator_matches_mmdets_base_anchors_and_grid():
    gen = build_anchor_generator(dict(type="AnchorGenerator", scales=[8], ratios=[0.5, 1.0, 2.0], strides=[16]),
                                 "a", [16])
    # base size 16 x scale 8 = 128; h/w = ratio; centred at 0 (center_offset 0), unrounded
    expected = torch.tensor([[-64 * R2, -32 * R2, 64 * R2, 32 * R2], [-64, -64, 64, 64],
                             [-32 * R2, -64 * R2, 32 * R2, 64 * R2]])
    torch.testing.assert_close(gen.base[0], expected)
    grid = gen.grid([(2, 2)], "cpu")[0]  # location-major: (0,0), (16,0), (0,16), (16,16); 3 anchors each
    assert grid.shape == (12, 4)
    torch.testing.assert_close(grid[3], expected[0] + torch.tensor([16.0, 0, 16, 0]))
    torch.testing.assert_close(grid[11], expected[2] + 16)
    octave = build_anchor_generator(dict(type="AnchorGenerator", octave_base_scale=4, scales_per_octave=3,
                                         ratios=[0.5, 1.0, 2.0], strides=[8]), "a", [8])
    widths = (octave.base[0][:, 2] - octave.base[0][:, 0]).tolist()  # ratio-major: (0.5: s0 s1 s2), (1: ...)
    assert widths[3:6] == pytest.approx([32.0, 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)], rel=1e-6)


def test_ssd_anchor_generator_order_and_sizes():
    gen = build_anchor_generator(dict(type="SSDAnchorGenerator", scale_major=False, strides=[16], ratios=[[2]],
                                      min_sizes=[48], max_sizes=[100]), "a", [16])
    base = gen.base[0]  # centre (8, 8): [min, sqrt(min*max), 1/2 ratio, 2 ratio]
    wh = torch.stack([base[:, 2] - base[:, 0], base[:, 3] - base[:, 1]], 1)
    big = math.sqrt(48 * 100)
    torch.testing.assert_close(wh, torch.tensor([[48.0, 48], [big, big], [48 * R2, 48 / R2], [48 / R2, 48 * R2]]))
    torch.testing.assert_close((base[:, :2] + base[:, 2:]) / 2, torch.full((4, 2), 8.0))


def test_delta_xywh_decoding_equals_mmdets_delta2bbox():
    coder = build_box_coder(dict(type="DeltaXYWHBBoxCoder", target_stds=[0.1, 0.1, 0.2, 0.2]), "c", None)
    # anchor (0, 0, 10, 20): centre (5, 10), 10 x 20; denormalised deltas (0.1, 0.1, ln 2, 0)
    raw = torch.tensor([[1.0, 1.0, math.log(2) / 0.2, 0.0]])
    box = coder.decode_single(raw, torch.tensor([[0.0, 0.0, 10.0, 20.0]]))
    torch.testing.assert_close(box, torch.tensor([[-4.0, 2.0, 16.0, 22.0]]))
    torch.testing.assert_close(coder.encode_single(box, torch.tensor([[0.0, 0.0, 10.0, 20.0]])), raw)


def test_roi_levels_follow_finest_scale():
    ext = SingleRoIExtractor(["0", "1", "2", "3"], [4, 8, 16, 32], 7, 0, True, 56)
    sides = [50, 111.9, 112, 223, 224, 447, 448, 1000]
    rois = torch.tensor([[0, 0, 0, s, s] for s in sides], dtype=torch.float32)
    assert ext.map_levels(rois).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_max_iou_assigner_min_pos_iou_on_low_quality_matches():
    iou = torch.tensor([[0.2, 0.35, 0.1], [0.05, 0.1, 0.8]])
    got = MaxIoUMatcher(0.7, 0.3, 0.3, True, True)(iou)
    assert got.tolist() == [-1, 0, 1]  # anchor 1 is gt 0's best (0.35 >= 0.3); anchor 2 >= pos_iou_thr
    got = MaxIoUMatcher(0.7, 0.3, 0.4, True, True)(iou)
    assert got.tolist() == [-1, -2, 1]  # 0.35 < min_pos_iou: stays ignored (torchvision would match it)


def _fcos(center_sampling):
    cfg = with_classes(TINY_MODEL, 3)
    cfg["bbox_head"]["center_sampling"] = center_sampling
    return build_detector(cfg).detector


@pytest.mark.parametrize("center_sampling", [False, True])
def test_fcos_targets_equal_mmdets_rule(center_sampling):
    det = _fcos(center_sampling)
    points = torch.tensor([[12.0, 12], [44, 44], [24, 24], [200, 200]])
    strides = torch.tensor([8.0, 8, 16, 16])
    ranges = torch.tensor([[-1, 64], [-1, 64], [64, 1e8], [64, 1e8]])
    boxes = torch.tensor([[0.0, 0, 40, 40], [4, 4, 100, 100]])
    labels, dists = det.targets(points, strides, ranges, boxes, torch.tensor([2, 0]))
    # (12,12): inside both; box 0's largest distance 28 is in range, box 1's 88 is not -> box 0.
    # (44,44): outside box 0; box 1 (40,40,56,56) in range. (24,24) at stride 16: box 1 (20,20,76,76)
    # in range 64.. -- unless centre sampling: box 1's centre region is 52 +- 24 = 28..76 -> background.
    # (200,200): outside everything. Background is num_classes = 3.
    assert labels.tolist() == ([2, 0, 3, 3] if center_sampling else [2, 0, 0, 3])
    assert dists[0].tolist() == [12, 12, 28, 28] and dists[1].tolist() == [40, 40, 56, 56]
    if not center_sampling:
        assert dists[2].tolist() == [20, 20, 76, 76]


# ----------------------------------------------------------------- zoo checkpoints
ZOO = {"FasterRCNN": tiny_rcnn(), "MaskRCNN": tiny_rcnn(mask=True), "RetinaNet": MODELS["RetinaNet"],
       "FCOS": TINY_MODEL}


def _outputs(model, img):
    model.eval()
    with torch.no_grad():
        det = model.detector
        feats = det.backbone(img)
        return [f.clone() for f in feats.values()], det


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_checkpoint_round_trip_gives_identical_outputs(name, tmp_path):
    torch.manual_seed(0)
    src = build_detector(ZOO[name])
    state = to_mmdet(src)
    assert all(k.startswith(("backbone.", "neck.", "rpn_head.", "roi_head.", "bbox_head.")) for k in state)
    path = tmp_path / "zoo.pth"
    torch.save(dict(state_dict=state, meta=dict(mmdet_version="2.25.0")), path)
    torch.manual_seed(1)
    dst = build_detector(dict(ZOO[name], init_cfg=dict(type="Pretrained", checkpoint=str(path))))
    own = dst.state_dict()
    for k, v in src.state_dict().items():
        # mmdet has no background rows in the regressor and mask logits: those come back as zeros
        drop = 4 if "box_predictor.bbox_pred" in k else 1 if "mask_fcn_logits" in k else 0
        assert torch.equal(own[k][drop:], v[drop:]) if drop else torch.equal(own[k], v), k
    img = torch.randn(1, 3, 64, 96)
    meta = [dict(img_shape=(64, 96, 3), ori_shape=(64, 96, 3), scale_factor=[1.0] * 4, flip=False)]
    src.eval(), dst.eval()
    a, b = src(img, meta, return_loss=False), dst(img, meta, return_loss=False)
    assert str(a) == str(b)


def test_zoo_class_order_background_last_becomes_first():
    model = build_detector(tiny_rcnn())
    state = to_mmdet(model)
    # mmdet: fc_cls rows are classes 0..2 then the background; fc_reg has no background rows
    assert state["roi_head.bbox_head.fc_cls.weight"].shape[0] == 4
    assert state["roi_head.bbox_head.fc_reg.weight"].shape[0] == 12
    state["roi_head.bbox_head.fc_cls.weight"].zero_()
    state["roi_head.bbox_head.fc_cls.bias"].copy_(torch.tensor([0.0, 5.0, 0.0, -5.0]))  # class 1 high, bg low
    converted = from_mmdet(model, state, "zoo")
    model.load_state_dict(converted, strict=False)
    logits, _ = model.detector.roi_heads.box_predictor(torch.zeros(1, 64))
    assert logits.tolist() == [[-5.0, 0.0, 5.0, 0.0]]  # torchvision: background 0, class 1 at index 2
    assert model.label_offset == 1  # index 2 - 1 = class 1 in raydet's results


def test_zoo_checkpoint_with_other_classes_reinitialises_class_layers(caplog):
    state = to_mmdet(build_detector(tiny_rcnn()))
    target = build_detector(with_classes(tiny_rcnn(), 5))
    with caplog.at_level("INFO", logger="raydet"):
        out = from_mmdet(target, state, "zoo.pth")
    assert "class layers re-initialised" in caplog.text and "fc_cls.weight (4, 64) -> (6, 64)" in caplog.text
    assert "detector.roi_heads.box_predictor.cls_score.weight" not in out


def test_zoo_checkpoint_that_does_not_cover_the_model_lists_keys():
    model = build_detector(tiny_rcnn())
    state = to_mmdet(model)
    del state["neck.fpn_convs.0.conv.weight"]
    state["roi_head.bbox_head.fc_extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"(?s)does not match the model.*roi_head\.bbox_head\.fc_extra\.weight"
                                              r".*detector\.backbone\.fpn\.layer_blocks\.0\.0\.weight"):
        from_mmdet(model, state, "zoo.pth")


def test_max_iou_assigner_ties_and_later_gts_win_as_mmdets_loop():
    iou = torch.tensor([[0.4, 0.4, 0.1], [0.1, 0.4, 0.2]])
    assert MaxIoUMatcher(0.7, 0.3, 0.0, True, True)(iou).tolist() == [0, 1, -1]  # anchor 1: gt 1 is later
    assert MaxIoUMatcher(0.7, 0.3, 0.0, True, False)(iou).tolist() == [0, 1, -1]  # one best anchor per gt
