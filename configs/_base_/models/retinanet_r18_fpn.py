model = dict(
    type='RetinaNet',
    num_classes=80,
    backbone=dict(type='ResNet', depth=18, norm='BN'),
    neck=dict(type='FPN', out_channels=256, extra='p6p7'),
    test_cfg=dict(score_thr=0.05, nms=dict(iou_threshold=0.5), max_per_img=100, nms_pre=1000))
