# FCOS on raydet's 0.9M-parameter GroupNorm conv backbone (GNConvNet: four stages of two 3x3
# conv-GN-ReLU, 32/64/96/128 channels, strides 2/4/8/16), in mmdetection 2.x's format. FPN with
# 64 channels on the last three stages (strides 4/8/16, no extra levels); FCOSHead with towers of
# three convs and the "FCOS improvements" (center sampling, norm_on_bbox, centerness on the
# regression tower, GIoU). Regress ranges are 8x the stride per level (the last open).
# Head towers of three convs: the same bbox mAP on shapes as four (0.647 vs 0.645) at 25% less
# head cost; two reached 0.28 instead of 0.50 after 2 of 3 epochs.
# conv_bias=True: the tower convs keep a bias before GroupNorm; on this 2-core CPU a step is 11%
# faster with it (0.339 vs 0.379 s per batch of 16; benchmarks/RESULTS.md, 2026-12-02).
# conv_reg starts at bias 1.0: its output is relu(distance / stride), and at bias 0 one early
# AdamW step can push a channel below zero for every input, dead for good (seen: the 't' channel
# died in the first epoch and bbox mAP stayed at 0.007).
model = dict(
    type='FCOS',
    backbone=dict(type='GNConvNet', channels=(32, 64, 96, 128), out_indices=(1, 2, 3)),
    neck=dict(type='FPN', in_channels=[64, 96, 128], out_channels=64, num_outs=3),
    bbox_head=dict(
        type='FCOSHead',
        num_classes=3,
        in_channels=64,
        stacked_convs=3,
        feat_channels=64,
        strides=[4, 8, 16],
        regress_ranges=((-1, 32), (32, 64), (64, 1e8)),
        center_sampling=True,
        center_sample_radius=1.5,
        norm_on_bbox=True,
        centerness_on_reg=True,
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
        conv_bias=True,
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=1.0),
        loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
        init_cfg=dict(type='Normal', layer='Conv2d', std=0.01,
                      override=[dict(type='Normal', name='conv_cls', std=0.01, bias_prob=0.01),
                                dict(type='Normal', name='conv_reg', std=0.01, bias=1.0)])),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.6),
                  max_per_img=100))
