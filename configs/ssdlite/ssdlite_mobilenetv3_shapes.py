_base_ = [
    '../_base_/datasets/shapes_detection.py', '../_base_/schedules/schedule_onecycle_3e.py',
    '../_base_/default_runtime.py'
]
model = dict(type='SSDLite', num_classes=3, test_cfg=dict(score_thr=0.05, nms=dict(iou_threshold=0.55),
                                                          max_per_img=100, nms_pre=300))
