model = dict(
    type='FasterRCNN',
    num_classes=80,
    backbone=dict(type='ResNet', depth=50, norm='BN'),
    neck=dict(type='FPN', out_channels=256, extra='pool'),
    test_cfg=dict(score_thr=0.05, nms=dict(iou_threshold=0.5), max_per_img=100))
