"""Fixture model configs in mmdetection 2.x's format, one per detector family, written for these
tests (tiny widths and depths so that two training iterations take about a second on a CPU).

``ZOO[name]`` is a model dict; ``MASKS`` names the ones that train on instance masks.
Feature maps are strides 4, 8 and 16 of 96x64 inputs unless a family needs otherwise.
"""
import copy

GN4 = dict(type="GN", num_groups=4, requires_grad=True)
BB = dict(type="GNConvNet", channels=(8, 16, 16, 16), out_indices=(1, 2, 3), groups=4)
NECK = dict(type="FPN", in_channels=[16, 16, 16], out_channels=16, num_outs=3)
STRIDES = [4, 8, 16]
CE = dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)
FOCAL = dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0)
DELTA = dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[0.1, 0.1, 0.2, 0.2])
NMS = dict(type="nms", iou_threshold=0.5)
ONE_STAGE_TEST = dict(nms_pre=200, min_bbox_size=0, score_thr=0.05, nms=NMS, max_per_img=20)
ATSS_ANCHORS = dict(type="AnchorGenerator", ratios=[1.0], octave_base_scale=8, scales_per_octave=1, strides=STRIDES)
ATSS_TRAIN = dict(assigner=dict(type="ATSSAssigner", topk=9), allowed_border=-1, pos_weight=-1, debug=False)


def maxiou(pos, neg, min_pos=0.0, **kw):
    return dict(type="MaxIoUAssigner", pos_iou_thr=pos, neg_iou_thr=neg, min_pos_iou=min_pos, ignore_iof_thr=-1, **kw)


# ----------------------------------------------------------------------------- two-stage parts
RPN_HEAD = dict(type="RPNHead", in_channels=16, feat_channels=16,
                anchor_generator=dict(type="AnchorGenerator", scales=[4], ratios=[0.5, 1.0, 2.0], strides=STRIDES),
                bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[1.0] * 4),
                loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0),
                loss_bbox=dict(type="L1Loss", loss_weight=1.0))
RPN_TRAIN = dict(assigner=maxiou(0.7, 0.3, 0.3, match_low_quality=True),
                 sampler=dict(type="RandomSampler", num=64, pos_fraction=0.5, neg_pos_ub=-1, add_gt_as_proposals=False),
                 allowed_border=-1, pos_weight=-1, debug=False)
PROPOSALS = dict(nms_pre=200, max_per_img=50, nms=dict(type="nms", iou_threshold=0.7), min_bbox_size=0)
RCNN_SAMPLER = dict(type="RandomSampler", num=64, pos_fraction=0.25, neg_pos_ub=-1, add_gt_as_proposals=True)
RCNN_TEST = dict(score_thr=0.05, nms=NMS, max_per_img=20)


def roi_extractor(size=7):
    return dict(type="SingleRoIExtractor", roi_layer=dict(type="RoIAlign", output_size=size, sampling_ratio=0),
                out_channels=16, featmap_strides=STRIDES)


def bbox_head(stds=(0.1, 0.1, 0.2, 0.2), **kw):
    head = dict(type="Shared2FCBBoxHead", in_channels=16, fc_out_channels=32, roi_feat_size=7, num_classes=3,
                bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=list(stds)),
                reg_class_agnostic=False, loss_cls=CE, loss_bbox=dict(type="L1Loss", loss_weight=1.0))
    head.update(kw)
    return head


MASK_HEAD = dict(type="FCNMaskHead", num_convs=1, in_channels=16, conv_out_channels=16, num_classes=3,
                 loss_mask=dict(type="CrossEntropyLoss", use_mask=True, loss_weight=1.0))


def rcnn_train(thr=0.5, **kw):
    return dict(assigner=maxiou(thr, thr, thr, match_low_quality=False), sampler=RCNN_SAMPLER, pos_weight=-1,
                debug=False, **kw)


def two_stage(kind="FasterRCNN", backbone=BB, neck=NECK, roi_head=None, rcnn=None, rcnn_test=RCNN_TEST, **extra):
    return dict(type=kind, backbone=copy.deepcopy(backbone), neck=copy.deepcopy(neck), rpn_head=copy.deepcopy(RPN_HEAD),
                roi_head=roi_head or dict(type="StandardRoIHead", bbox_roi_extractor=roi_extractor(),
                                          bbox_head=bbox_head()),
                train_cfg=dict(rpn=RPN_TRAIN, rpn_proposal=PROPOSALS, rcnn=rcnn or rcnn_train()),
                test_cfg=dict(rpn=PROPOSALS, rcnn=rcnn_test), **extra)


def cascade(mask=False):
    stds = [(0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067)]
    roi = dict(type="CascadeRoIHead", num_stages=3, stage_loss_weights=[1, 0.5, 0.25],
               bbox_roi_extractor=roi_extractor(),
               bbox_head=[bbox_head(s, reg_class_agnostic=True) for s in stds])
    rcnn = [rcnn_train(t) for t in (0.5, 0.6, 0.7)]
    test = dict(RCNN_TEST)
    if mask:
        roi.update(mask_roi_extractor=roi_extractor(7), mask_head=MASK_HEAD)
        rcnn = [dict(r, mask_size=14) for r in rcnn]
        test["mask_thr_binary"] = 0.5
    return two_stage("CascadeRCNN", roi_head=roi, rcnn=rcnn, rcnn_test=test)


def htc():
    """Hybrid Task Cascade: mask information flow, and a semantic branch at stride 8 trained on
    segmentation maps (4 classes, 255 ignored; the pipeline's ``SegRescale`` takes them to 1/8)."""
    model = cascade(mask=True)
    model["type"] = "HybridTaskCascade"
    model["roi_head"].update(
        type="HybridTaskCascadeRoIHead", interleaved=True, mask_info_flow=True,
        mask_head=[dict(MASK_HEAD, type="HTCMaskHead", with_conv_res=i > 0) for i in range(3)],
        semantic_roi_extractor=dict(type="SingleRoIExtractor", out_channels=16, featmap_strides=[8],
                                    roi_layer=dict(type="RoIAlign", output_size=7, sampling_ratio=0)),
        semantic_head=dict(type="FusedSemanticHead", num_ins=3, fusion_level=1, num_convs=1, in_channels=16,
                           conv_out_channels=16, num_classes=4,
                           loss_seg=dict(type="CrossEntropyLoss", ignore_index=255, loss_weight=0.2)))
    return model


def mask_rcnn(backbone=BB, neck=NECK):
    roi = dict(type="StandardRoIHead", bbox_roi_extractor=roi_extractor(), bbox_head=bbox_head(),
               mask_roi_extractor=roi_extractor(7), mask_head=MASK_HEAD)
    return two_stage("MaskRCNN", backbone, neck, roi_head=roi, rcnn=rcnn_train(mask_size=14),
                     rcnn_test=dict(RCNN_TEST, mask_thr_binary=0.5))


def retina(backbone=BB, neck=NECK):
    return dict(type="RetinaNet", backbone=copy.deepcopy(backbone), neck=copy.deepcopy(neck),
                bbox_head=dict(type="RetinaHead", num_classes=3, in_channels=16, stacked_convs=1, feat_channels=16,
                               anchor_generator=dict(type="AnchorGenerator", octave_base_scale=4, scales_per_octave=1,
                                                     ratios=[0.5, 1.0, 2.0], strides=STRIDES),
                               bbox_coder=DELTA, loss_cls=FOCAL, loss_bbox=dict(type="L1Loss", loss_weight=1.0)),
                train_cfg=dict(assigner=maxiou(0.5, 0.4), allowed_border=-1, pos_weight=-1, debug=False),
                test_cfg=ONE_STAGE_TEST)


def transformer_layer(attn, order, ffn=32):
    return dict(type="BaseTransformerLayer" if "cross_attn" not in order else "DetrTransformerDecoderLayer",
                attn_cfgs=attn, operation_order=order, feedforward_channels=ffn,
                ffn_cfgs=dict(type="FFN", embed_dims=16, feedforward_channels=ffn, num_fcs=2, ffn_drop=0.0,
                              act_cfg=dict(type="ReLU", inplace=True)))


MHA = dict(type="MultiheadAttention", embed_dims=16, num_heads=2, dropout=0.0)
MSDA = dict(type="MultiScaleDeformableAttention", embed_dims=16, num_levels=3, num_heads=2, num_points=2)
HUNGARIAN = dict(type="HungarianAssigner", cls_cost=dict(type="ClassificationCost", weight=1.0),
                 reg_cost=dict(type="BBoxL1Cost", weight=5.0, box_format="xywh"),
                 iou_cost=dict(type="IoUCost", iou_mode="giou", weight=2.0))
FOCAL_HUNGARIAN = dict(HUNGARIAN, cls_cost=dict(type="FocalLossCost", weight=2.0))

ZOO = {
    "FasterRCNN": two_stage(),
    "MaskRCNN": mask_rcnn(),
    "CascadeRCNN": cascade(),
    "CascadeMaskRCNN": cascade(mask=True),
    "GridRCNN": two_stage(
        "GridRCNN",
        roi_head=dict(type="GridRoIHead", bbox_roi_extractor=roi_extractor(), bbox_head=bbox_head(with_reg=False),
                      grid_roi_extractor=roi_extractor(14),
                      grid_head=dict(type="GridHead", grid_points=9, num_convs=2, in_channels=16,
                                     point_feat_channels=8, norm_cfg=dict(type="GN", num_groups=9),
                                     loss_grid=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=15))),
        rcnn=rcnn_train(pos_radius=1, max_num_grid=64), rcnn_test=dict(RCNN_TEST, score_thr=0.03)),
    "LibraRCNN": two_stage(
        neck=[NECK, dict(type="BFP", in_channels=16, num_levels=3, refine_level=1, refine_type="non_local")],
        roi_head=dict(type="StandardRoIHead", bbox_roi_extractor=roi_extractor(),
                      bbox_head=bbox_head(loss_bbox=dict(type="BalancedL1Loss", alpha=0.5, gamma=1.5, beta=1.0))),
        rcnn=dict(rcnn_train(), sampler=dict(
            type="CombinedSampler", num=64, pos_fraction=0.25, add_gt_as_proposals=True,
            pos_sampler=dict(type="InstanceBalancedPosSampler"),
            neg_sampler=dict(type="IoUBalancedNegSampler", floor_thr=-1, floor_fraction=0, num_bins=3)))),
    "DynamicRCNN": two_stage(
        roi_head=dict(type="DynamicRoIHead", bbox_roi_extractor=roi_extractor(),
                      bbox_head=bbox_head(loss_bbox=dict(type="SmoothL1Loss", beta=1.0, loss_weight=1.0))),
        rcnn=rcnn_train(dynamic_rcnn=dict(iou_topk=10, beta_topk=5, update_iter_interval=100, initial_iou=0.4,
                                          initial_beta=1.0))),
    "RetinaNet": retina(),
    "FCOS": dict(type="FCOS", backbone=BB, neck=NECK,
                 bbox_head=dict(type="FCOSHead", num_classes=3, in_channels=16, stacked_convs=1, feat_channels=16,
                                strides=STRIDES, regress_ranges=((-1, 32), (32, 64), (64, 1e8)), norm_cfg=GN4,
                                center_sampling=True, norm_on_bbox=True, centerness_on_reg=True,
                                loss_bbox=dict(type="GIoULoss", loss_weight=1.0)),
                 test_cfg=ONE_STAGE_TEST),
    "ATSS": dict(type="ATSS", backbone=BB, neck=NECK,
                 bbox_head=dict(type="ATSSHead", num_classes=3, in_channels=16, stacked_convs=1, feat_channels=16,
                                norm_cfg=GN4, anchor_generator=ATSS_ANCHORS, bbox_coder=DELTA, loss_cls=FOCAL,
                                loss_bbox=dict(type="GIoULoss", loss_weight=2.0),
                                loss_centerness=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0)),
                 train_cfg=ATSS_TRAIN, test_cfg=ONE_STAGE_TEST),
    "GFL": dict(type="GFL", backbone=BB, neck=NECK,
                bbox_head=dict(type="GFLHead", num_classes=3, in_channels=16, stacked_convs=1, feat_channels=16,
                               norm_cfg=GN4, anchor_generator=ATSS_ANCHORS, reg_max=8,
                               loss_cls=dict(type="QualityFocalLoss", use_sigmoid=True, beta=2.0, loss_weight=1.0),
                               loss_dfl=dict(type="DistributionFocalLoss", loss_weight=0.25),
                               loss_bbox=dict(type="GIoULoss", loss_weight=2.0)),
                train_cfg=ATSS_TRAIN, test_cfg=ONE_STAGE_TEST),
    "PAA": dict(type="PAA", backbone=BB, neck=NECK,
                bbox_head=dict(type="PAAHead", reg_decoded_bbox=True, score_voting=True, topk=9, num_classes=3,
                               in_channels=16, stacked_convs=1, feat_channels=16, norm_cfg=GN4,
                               anchor_generator=ATSS_ANCHORS, bbox_coder=DELTA, loss_cls=FOCAL,
                               loss_bbox=dict(type="GIoULoss", loss_weight=1.3),
                               loss_centerness=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=0.5)),
                train_cfg=dict(assigner=maxiou(0.1, 0.1, 0.0), allowed_border=-1, pos_weight=-1, debug=False),
                test_cfg=ONE_STAGE_TEST),
    "VFNet-DCN": dict(type="VFNet", backbone=BB, neck=NECK,
                      bbox_head=dict(type="VFNetHead", num_classes=3, in_channels=16, stacked_convs=1, feat_channels=16,
                                     strides=STRIDES, regress_ranges=((-1, 32), (32, 64), (64, 1e8)), norm_cfg=GN4,
                                     center_sampling=False, dcn_on_last_conv=True, use_atss=True, use_vfl=True,
                                     anchor_generator=dict(ATSS_ANCHORS, center_offset=0.0),
                                     loss_cls=dict(type="VarifocalLoss", use_sigmoid=True, alpha=0.75, gamma=2.0,
                                                   iou_weighted=True, loss_weight=1.0),
                                     loss_bbox=dict(type="GIoULoss", loss_weight=1.5),
                                     loss_bbox_refine=dict(type="GIoULoss", loss_weight=2.0)),
                      train_cfg=ATSS_TRAIN, test_cfg=ONE_STAGE_TEST),
    "RepPoints": dict(type="RepPointsDetector", backbone=BB, neck=NECK,
                      bbox_head=dict(type="RepPointsHead", num_classes=3, in_channels=16, feat_channels=16,
                                     point_feat_channels=16, stacked_convs=1, num_points=9, gradient_mul=0.1,
                                     point_strides=STRIDES, point_base_scale=4, norm_cfg=GN4, loss_cls=FOCAL,
                                     loss_bbox_init=dict(type="SmoothL1Loss", beta=0.11, loss_weight=0.5),
                                     loss_bbox_refine=dict(type="SmoothL1Loss", beta=0.11, loss_weight=1.0),
                                     transform_method="moment"),
                      train_cfg=dict(init=dict(assigner=dict(type="PointAssigner", scale=4, pos_num=1),
                                               allowed_border=-1, pos_weight=-1, debug=False),
                                     refine=dict(assigner=maxiou(0.5, 0.4), allowed_border=-1, pos_weight=-1,
                                                 debug=False)),
                      test_cfg=ONE_STAGE_TEST),
    "YOLOV3": dict(type="YOLOV3", backbone=dict(BB, channels=(8, 16, 32, 64)),
                   neck=dict(type="YOLOV3Neck", num_scales=3, in_channels=[64, 32, 16], out_channels=[32, 16, 8]),
                   bbox_head=dict(type="YOLOV3Head", num_classes=3, in_channels=[32, 16, 8], out_channels=[32, 16, 8],
                                  anchor_generator=dict(type="YOLOAnchorGenerator",
                                                        base_sizes=[[(48, 40), (60, 56), (80, 70)],
                                                                    [(20, 24), (28, 20), (30, 36)],
                                                                    [(6, 8), (10, 12), (14, 10)]],
                                                        strides=[16, 8, 4]),
                                  bbox_coder=dict(type="YOLOBBoxCoder"), featmap_strides=[16, 8, 4]),
                   train_cfg=dict(assigner=dict(type="GridAssigner", pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0)),
                   test_cfg=dict(nms_pre=200, min_bbox_size=0, score_thr=0.05, conf_thr=0.005, nms=NMS, max_per_img=20)),
    "YOLOX": dict(type="YOLOX", input_size=(64, 96), random_size_range=(2, 3), random_size_interval=10,
                  backbone=BB, neck=dict(type="YOLOXPAFPN", in_channels=[16, 16, 16], out_channels=16,
                                         num_csp_blocks=1),
                  bbox_head=dict(type="YOLOXHead", num_classes=3, in_channels=16, feat_channels=16, stacked_convs=1,
                                 strides=STRIDES),
                  train_cfg=dict(assigner=dict(type="SimOTAAssigner", center_radius=2.5)),
                  test_cfg=dict(score_thr=0.01, nms=dict(type="nms", iou_threshold=0.65))),
    "SSD": dict(type="SingleStageDetector",
                backbone=dict(type="MobileNetV2", widen_factor=0.25, out_indices=(4, 7)),
                neck=dict(type="SSDNeck", in_channels=(24, 1280), out_channels=(24, 1280, 64, 32), level_strides=(2, 2),
                          level_paddings=(1, 1), l2_norm_scale=None, use_depthwise=True, norm_cfg=dict(type="BN"),
                          act_cfg=dict(type="ReLU6")),
                bbox_head=dict(type="SSDHead", in_channels=(24, 1280, 64, 32), num_classes=3, use_depthwise=True,
                               norm_cfg=dict(type="BN"), act_cfg=dict(type="ReLU6"),
                               anchor_generator=dict(type="SSDAnchorGenerator", scale_major=False,
                                                     strides=[16, 32, 64, 128], ratios=[[2], [2, 3], [2, 3], [2]],
                                                     min_sizes=[16, 32, 64, 96], max_sizes=[32, 64, 96, 128]),
                               bbox_coder=DELTA),
                train_cfg=dict(assigner=maxiou(0.5, 0.5, 0.0, gt_max_assign_all=False), smoothl1_beta=1.0,
                               allowed_border=-1, pos_weight=-1, neg_pos_ratio=3, debug=False),
                test_cfg=ONE_STAGE_TEST),
    "DETR": dict(type="DETR", backbone=dict(BB, out_indices=(3,)),
                 bbox_head=dict(type="DETRHead", num_classes=3, in_channels=16, num_query=10,
                                transformer=dict(type="Transformer",
                                                 encoder=dict(type="DetrTransformerEncoder", num_layers=1,
                                                              transformerlayers=transformer_layer(
                                                                  [MHA], ("self_attn", "norm", "ffn", "norm"))),
                                                 decoder=dict(type="DetrTransformerDecoder", return_intermediate=True,
                                                              num_layers=1, transformerlayers=transformer_layer(
                                                                  MHA, ("self_attn", "norm", "cross_attn", "norm",
                                                                        "ffn", "norm")))),
                                positional_encoding=dict(type="SinePositionalEncoding", num_feats=8, normalize=True),
                                loss_cls=dict(type="CrossEntropyLoss", bg_cls_weight=0.1, use_sigmoid=False,
                                              loss_weight=1.0, class_weight=1.0),
                                loss_bbox=dict(type="L1Loss", loss_weight=5.0),
                                loss_iou=dict(type="GIoULoss", loss_weight=2.0)),
                 train_cfg=dict(assigner=HUNGARIAN), test_cfg=dict(max_per_img=10)),
    "DeformableDETR": dict(
        type="DeformableDETR", backbone=BB,
        neck=dict(type="ChannelMapper", in_channels=[16, 16, 16], kernel_size=1, out_channels=16, act_cfg=None,
                  norm_cfg=GN4, num_outs=3),
        bbox_head=dict(type="DeformableDETRHead", num_query=10, num_classes=3, in_channels=16,
                       sync_cls_avg_factor=True, as_two_stage=False,
                       transformer=dict(type="DeformableDetrTransformer", num_feature_levels=3,
                                        encoder=dict(type="DetrTransformerEncoder", num_layers=1,
                                                     transformerlayers=transformer_layer(
                                                         MSDA, ("self_attn", "norm", "ffn", "norm"))),
                                        decoder=dict(type="DeformableDetrTransformerDecoder", num_layers=1,
                                                     return_intermediate=True,
                                                     transformerlayers=transformer_layer(
                                                         [MHA, MSDA], ("self_attn", "norm", "cross_attn", "norm",
                                                                       "ffn", "norm")))),
                       positional_encoding=dict(type="SinePositionalEncoding", num_feats=8, normalize=True,
                                                offset=-0.5),
                       loss_cls=dict(FOCAL, loss_weight=2.0), loss_bbox=dict(type="L1Loss", loss_weight=5.0),
                       loss_iou=dict(type="GIoULoss", loss_weight=2.0)),
        train_cfg=dict(assigner=FOCAL_HUNGARIAN), test_cfg=dict(max_per_img=10)),
    "SparseRCNN": dict(
        type="SparseRCNN", backbone=BB, neck=dict(NECK, add_extra_convs="on_input"),
        rpn_head=dict(type="EmbeddingRPNHead", num_proposals=10, proposal_feature_channel=16),
        roi_head=dict(type="SparseRoIHead", num_stages=1, stage_loss_weights=[1], proposal_feature_channel=16,
                      bbox_roi_extractor=dict(roi_extractor(), roi_layer=dict(type="RoIAlign", output_size=7,
                                                                              sampling_ratio=2)),
                      bbox_head=[dict(type="DIIHead", num_classes=3, num_ffn_fcs=2, num_heads=2, num_cls_fcs=1,
                                      num_reg_fcs=1, feedforward_channels=32, in_channels=16, dropout=0.0,
                                      ffn_act_cfg=dict(type="ReLU", inplace=True),
                                      dynamic_conv_cfg=dict(type="DynamicConv", in_channels=16, feat_channels=8,
                                                            out_channels=16, input_feat_shape=7,
                                                            act_cfg=dict(type="ReLU", inplace=True),
                                                            norm_cfg=dict(type="LN")),
                                      loss_bbox=dict(type="L1Loss", loss_weight=5.0),
                                      loss_iou=dict(type="GIoULoss", loss_weight=2.0),
                                      loss_cls=dict(FOCAL, loss_weight=2.0),
                                      bbox_coder=dict(type="DeltaXYWHBBoxCoder", clip_border=False,
                                                      target_means=[0.0] * 4, target_stds=[0.5, 0.5, 1.0, 1.0]))]),
        train_cfg=dict(rpn=None, rcnn=[dict(assigner=dict(FOCAL_HUNGARIAN, reg_cost=dict(type="BBoxL1Cost", weight=5.0)),
                                            sampler=dict(type="PseudoSampler"), pos_weight=1)]),
        test_cfg=dict(rpn=None, rcnn=dict(max_per_img=10))),
    "CenterNet": dict(type="CenterNet", backbone=dict(BB, out_indices=(3,)),
                      neck=dict(type="CTResNetNeck", in_channel=16, num_deconv_filters=(16, 16),
                                num_deconv_kernels=(4, 4), use_dcn=True),
                      bbox_head=dict(type="CenterNetHead", num_classes=3, in_channel=16, feat_channel=16,
                                     loss_center_heatmap=dict(type="GaussianFocalLoss", loss_weight=1.0),
                                     loss_wh=dict(type="L1Loss", loss_weight=0.1),
                                     loss_offset=dict(type="L1Loss", loss_weight=1.0)),
                      train_cfg=None, test_cfg=dict(topk=20, local_maximum_kernel=3, max_per_img=20)),
    "FasterRCNN-ResNet50-DCN": two_stage(
        backbone=dict(type="ResNet", depth=50, base_channels=8, stem_channels=8, num_stages=3, strides=(1, 2, 2),
                      dilations=(1, 1, 1), out_indices=(0, 1, 2),
                      frozen_stages=-1, norm_cfg=GN4, norm_eval=False, style="pytorch",
                      dcn=dict(type="DCN", deform_groups=1, fallback_on_stride=False),
                      stage_with_dcn=(False, True, True)),
        neck=dict(NECK, in_channels=[32, 64, 128])),
    "RetinaNet-RegNet": retina(
        backbone=dict(type="RegNet", arch=dict(w0=8, wa=8.0, wm=2.0, group_w=8, depth=4, bot_mul=1.0),
                      strides=(2, 2, 2), dilations=(1, 1, 1), out_indices=(0, 1, 2), stem_channels=8,
                      base_channels=8, norm_cfg=GN4, norm_eval=False),
        neck=dict(NECK, in_channels="regnet")),
    "MaskRCNN-Swin": mask_rcnn(
        backbone=dict(type="SwinTransformer", embed_dims=16, depths=(1, 1, 1), num_heads=(1, 2, 2), window_size=4,
                      mlp_ratio=2, strides=(4, 2, 2), out_indices=(0, 1, 2), convert_weights=False),
        neck=dict(NECK, in_channels=[16, 32, 64])),
}
MASKS = {"MaskRCNN", "CascadeMaskRCNN", "MaskRCNN-Swin"}


def regnet_channels(backbone: dict) -> list:
    """The output channels of a RegNet ``arch`` (computed by building it)."""
    import torch
    from raydet.models import build_detector  # noqa: F401  (registers, installs the ops)
    from mmdet.models import build_backbone
    net = build_backbone(copy.deepcopy(backbone))
    with torch.no_grad():
        return [f.shape[1] for f in net(torch.zeros(1, 3, 64, 64))]


def model(name: str) -> dict:
    cfg = copy.deepcopy(ZOO[name])
    if isinstance(cfg.get("neck"), dict) and cfg["neck"].get("in_channels") == "regnet":
        cfg["neck"]["in_channels"] = regnet_channels(cfg["backbone"])
    return cfg
