# AdamW with a one-cycle schedule: 5% warm-up to the peak LR, cosine down to peak / 25 / 1e4.
optimizer = dict(type='AdamW', lr=2e-3, weight_decay=0.05,
                 paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
optimizer_config = dict(grad_clip=dict(max_norm=10, norm_type=2))
lr_config = dict(policy='OneCycle', max_lr=2e-3, pct_start=0.05, div_factor=25, final_div_factor=1e4)
runner = dict(type='EpochBasedRunner', max_epochs=3)
