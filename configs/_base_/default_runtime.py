checkpoint_config = dict(interval=1)
log_config = dict(interval=50, hooks=[dict(type='TextLoggerHook'), dict(type='TensorboardLoggerHook')])
custom_hooks = []
dist_params = dict(backend='gloo')
log_level = 'INFO'
load_from = None
resume_from = None
workflow = [('train', 1)]
# raydet: Ray Train launcher settings (used by `raydet train` with the default --launcher ray)
ray = dict(num_workers=2, use_gpu=False, resources_per_worker=None, max_failures=3, num_to_keep=2,
           checkpoint_upload_mode='sync')
