# The built-in synthetic dataset (raydet.data.shapes), generated on first use into
# $RAYDET_DATA or ~/.cache/raydet. Images are 128x96 or 96x128 and are kept at that size.
dataset_type = 'ShapesDataset'
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', img_scale=(128, 96), keep_ratio=True),
    dict(type='RandomFlip', flip_ratio=0.5),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='Pad', size_divisor=16),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels']),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiScaleFlipAug', img_scale=(128, 96), flip=False,
         transforms=[
             dict(type='Resize', keep_ratio=True),
             dict(type='RandomFlip'),
             dict(type='Normalize', **img_norm_cfg),
             dict(type='Pad', size_divisor=16),
             dict(type='ImageToTensor', keys=['img']),
             dict(type='Collect', keys=['img']),
         ])
]
data = dict(
    samples_per_gpu=8,  # x 2 Ray workers (default_runtime) = a global batch of 16
    workers_per_gpu=1,
    train=dict(type=dataset_type, split='train', pipeline=train_pipeline),
    val=dict(type=dataset_type, split='val', pipeline=test_pipeline),
    test=dict(type=dataset_type, split='val', pipeline=test_pipeline),
    val_dataloader=dict(samples_per_gpu=8))
evaluation = dict(interval=1, metric='bbox', save_best='auto')
