# mmpretrain's runtime, checkpointing every epoch (nothing lost on a crash:
# resume with --resume; mmsk writes checkpoints atomically) and keeping the
# best val top-1. ExactResumeHook makes a resumed run continue bit for bit
# (with deterministic=True).
_base_ = ['mmpretrain::_base_/default_runtime.py']
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(
        type='CheckpointHook', interval=1, max_keep_ckpts=2,
        save_best='auto'))
custom_hooks = [dict(type='ExactResumeHook')]
randomness = dict(seed=0, deterministic=False)
