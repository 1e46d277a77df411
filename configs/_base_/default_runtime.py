checkpoint_config = dict(interval=1)
log_config = dict(interval=50, hooks=[dict(type='TextLoggerHook'), dict(type='TensorboardLoggerHook')])
custom_hooks = []
dist_params = dict(backend='gloo')
log_level = 'INFO'
load_from = None
resume_from = None
workflow = [('train', 1)]
# raydet: Ray Train launcher settings (used by `raydet train` with the default --launcher ray)
# storage_path=None keeps Ray's run dir = work_dir (shared by all nodes, or one machine); a
# directory or bucket URI (s3://..., gs://...) instead gets a copy of every checkpoint, uploaded
# in the background ('async') or before training goes on ('sync'), and restarts resume from it.
ray = dict(num_workers=2, use_gpu=False, resources_per_worker=None, max_failures=3, num_to_keep=2,
           storage_path=None, checkpoint_upload_mode='async')
