# raydet's key checkpoint_config.async_save (default True): rank 0 copies the state at the checkpoint
# and a background thread writes the file while training goes on; False writes it in the loop.
checkpoint_config = dict(interval=1)
log_config = dict(interval=50, hooks=[dict(type='TextLoggerHook'), dict(type='TensorboardLoggerHook')])
custom_hooks = [dict(type='NumClassCheckHook')]
dist_params = dict(backend='gloo')
log_level = 'INFO'
load_from = None
resume_from = None
workflow = [('train', 1)]
# raydet: Ray Train launcher settings (used by `raydet train` with the default --launcher ray)
# num_workers: N, or (min, max) for an elastic group that shrinks when nodes are lost and grows
#   back (each size re-derives the LR when auto_scale_lr is enabled); elastic_resize_monitor_interval_s
#   (None: Ray's 60 s) is how often Ray looks for room to grow.
# storage_path=None keeps Ray's run dir = work_dir (shared by all nodes, or one machine); a
#   directory or bucket URI (s3://..., gs://...) instead gets a copy of every checkpoint and of the
#   logs, uploaded in the background ('async') or before training goes on ('sync'), and restarts
#   resume from it. A work_dir that is itself a bucket URI sets this for you.
# max_failures counts crashes; max_preemption_failures (-1: unlimited) counts spot reclaims, on
#   which raydet checkpoints before the next iteration (checked every preemption_check_interval
#   iterations: each check is a Ray collective of ~8 ms).
# validation_resources / validation_shards / validation_timeout_s: for evaluation=dict(...,
#   async_eval=True), which evaluates each evaluation point's checkpoint in a Ray validation task
#   while training goes on: the task's resources (dict(num_cpus=0) by default; dict(num_gpus=1) for
#   a GPU the workers do not use; other keys are custom resources), how many tasks of those
#   resources predict a part of the val set each (1: the task alone), and how long one may take
#   (None: no limit). They must be free while the workers hold theirs: the run waits for its last
#   evaluation before it ends.
# log_level: Ray Train's own console lines at and above it (INFO: its failure-policy decisions, and
#   every rank's 'Reporting training result' line at each checkpoint; WARNING drops both).
ray = dict(num_workers=2, use_gpu=False, resources_per_worker=None, max_failures=3, num_to_keep=2,
           storage_path=None, checkpoint_upload_mode='async', elastic_resize_monitor_interval_s=None,
           max_preemption_failures=-1, preemption_check_interval=10, validation_resources=None,
           validation_shards=1, validation_timeout_s=None, log_level='INFO')
