# raydet's default config: FCOS on the tiny GN backbone, trained on the built-in shapes dataset.
# 3 epochs x 238 iterations of batch 16; bbox mAP@[.5:.95] on shapes val is printed at the end.
_base_ = [
    '../_base_/models/fcos_gn_tiny.py', '../_base_/datasets/shapes_detection.py',
    '../_base_/schedules/schedule_onecycle_3e.py', '../_base_/default_runtime.py'
]
seed = 0
