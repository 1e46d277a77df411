# Mask R-CNN on the tiny GN backbone with the shapes dataset's polygon masks.
_base_ = [
    '../_base_/models/mask_rcnn_r50_fpn.py', '../_base_/datasets/shapes_detection.py',
    '../_base_/schedules/schedule_onecycle_3e.py', '../_base_/default_runtime.py'
]
model = dict(
    backbone=dict(_delete_=True, type='GNConvNet', channels=(32, 64, 96, 128), out_indices=(1, 2, 3)),
    neck=dict(in_channels=[64, 96, 128], out_channels=64, num_outs=3),
    rpn_head=dict(in_channels=64, feat_channels=64, anchor_generator=dict(scales=[4], strides=[4, 8, 16])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64, featmap_strides=[4, 8, 16]),
        bbox_head=dict(in_channels=64, num_classes=3),
        mask_roi_extractor=dict(out_channels=64, featmap_strides=[4, 8, 16]),
        mask_head=dict(in_channels=64, conv_out_channels=64, num_classes=3)))
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', img_scale=(128, 96), keep_ratio=True),
    dict(type='RandomFlip', flip_ratio=0.5),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='Pad', size_divisor=16),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels', 'gt_masks']),
]
data = dict(train=dict(pipeline=train_pipeline))
evaluation = dict(metric=['bbox', 'segm'])
