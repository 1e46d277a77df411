# SSDlite MobileNetV2 (mmdetection 2.x's model and 320x320 pipeline) trained from scratch on the
# built-in shapes dataset with raydet's 3-epoch one-cycle AdamW schedule.
_base_ = '../ssd/ssdlite_mobilenetv2_scratch_600e_coco.py'
model = dict(bbox_head=dict(num_classes=3))
data = dict(
    samples_per_gpu=8,
    workers_per_gpu=1,
    train=dict(_delete_=True, type='ShapesDataset', split='train', pipeline={{_base_.train_pipeline}}),
    val=dict(_delete_=True, type='ShapesDataset', split='val', pipeline={{_base_.test_pipeline}}),
    test=dict(_delete_=True, type='ShapesDataset', split='val', pipeline={{_base_.test_pipeline}}))
optimizer = dict(_delete_=True, type='AdamW', lr=2e-3, weight_decay=0.05,
                 paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
optimizer_config = dict(_delete_=True, grad_clip=dict(max_norm=10, norm_type=2))
lr_config = dict(_delete_=True, policy='OneCycle', max_lr=2e-3, pct_start=0.05, div_factor=25, final_div_factor=1e4)
runner = dict(max_epochs=3)
evaluation = dict(interval=1, metric='bbox', save_best='auto')
checkpoint_config = dict(interval=1)
