# mmpretrain's runtime, checkpointing every epoch (nothing lost on a crash:
# resume with --resume) and keeping the best val top-1.
_base_ = ['mmpretrain::_base_/default_runtime.py']
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(
        type='CheckpointHook', interval=1, max_keep_ckpts=2,
        save_best='auto'))
randomness = dict(seed=0, deterministic=False)
