"""Exact resume: every random draw of epoch ``e`` depends on the seed and
``e`` alone, whether the run was interrupted or not.

MMEngine restores the weights, the optimizer, the schedulers and the data
order (``DefaultSampler`` shuffles with ``seed + epoch``), but not the random
state of the augmentations: its ``worker_init_fn`` seeds every data-loader
worker with ``seed + worker_id`` (the same numbers every epoch), persistent
workers carry their state from epoch to epoch, and the global
python/numpy/torch generators are wherever the previous epochs left them. A
run resumed at epoch ``e`` therefore draws other crops than the run it
continues.

:class:`ExactResumeHook` (``custom_hooks = [dict(type='ExactResumeHook')]``)
fixes that:

- before every training epoch it seeds python's, numpy's and torch's global
  generators (and CUDA's) from ``(seed, epoch, rank)``; data-loader workers
  are started afresh each epoch and keep torch's own per-worker seeding,
  which derives from that state, so the augmentations of epoch ``e`` are a
  function of ``(seed, e, rank, worker_id)``;
- it stores the global generators' states in ``meta['rng_state']`` of every
  checkpoint and restores them on ``--resume``.

The train data loader must not use ``persistent_workers=True`` with
``num_workers > 0`` (its workers would keep the state of earlier epochs): the
hook refuses that with an error that says so. The hook is for epoch-based
training (``EpochBasedTrainLoop``) resumed from the end of an epoch: it
refuses an iteration-based loop (one epoch of random state whose resume
would start it over), and warns when a run resumes from a checkpoint saved
mid-epoch (MMEngine's epoch loop then runs that epoch again from its start,
so the result differs from the uninterrupted run's).
"""
import random
from functools import partial
from typing import Dict

import numpy as np
import torch
from mmengine.hooks import Hook

from mmsk.registry import register_hook


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A 63-bit seed derived from ``(seed, epoch, rank)``."""
    words = np.random.SeedSequence([seed & (2**32 - 1), epoch,
                                    rank]).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def seed_everything(seed: int):
    """Seed python's, numpy's, torch's and CUDA's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also every CUDA device


def get_rng_state() -> Dict:
    """The states of the global generators (checkpoint-safe types)."""
    state = dict(
        python=random.getstate(),
        numpy=np.random.get_state(),
        torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict):
    """Restore what :func:`get_rng_state` returned."""
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(tuple(state['numpy']))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def _is_mmengine_default_init(fn) -> bool:
    from mmengine.dataset import worker_init_fn
    return isinstance(fn, partial) and fn.func is worker_init_fn


@register_hook
class ExactResumeHook(Hook):
    """Make ``--resume`` continue a run bit for bit (see the module doc).

    Example:
        >>> custom_hooks = [dict(type='ExactResumeHook')]
    """

    priority = 'VERY_HIGH'

    def before_train(self, runner):
        from mmengine.runner import EpochBasedTrainLoop
        if not isinstance(runner.train_loop, EpochBasedTrainLoop):
            raise ValueError(
                f'ExactResumeHook: makes epoch-based training resume bit for '
                f'bit, but train_cfg builds a '
                f'{type(runner.train_loop).__name__}, whose resumed run '
                f'would not continue the random state it stopped at. Train '
                f'by epochs (train_cfg=dict(by_epoch=True, max_epochs=...)) '
                f'or remove ExactResumeHook from custom_hooks')
        loader = runner.train_dataloader
        if getattr(loader, 'num_workers', 0) > 0:
            if loader.persistent_workers:
                raise ValueError(
                    'ExactResumeHook: train_dataloader.persistent_workers='
                    'True keeps the random state of the workers from epoch '
                    'to epoch, which a resumed run cannot restore: set '
                    'train_dataloader.persistent_workers=False (or '
                    'num_workers=0), or remove ExactResumeHook')
            if _is_mmengine_default_init(loader.worker_init_fn):
                # keep torch's per-worker seeds, which follow the global
                # state seeded each epoch (mmengine's are the same every
                # epoch)
                loader.worker_init_fn = None

    def before_train_epoch(self, runner):
        from mmengine.dist import get_rank
        seed = runner.seed if runner.seed is not None else 0
        seed_everything(epoch_seed(seed, runner.epoch, get_rank()))

    def before_save_checkpoint(self, runner, checkpoint: Dict):
        checkpoint.setdefault('meta', {})['rng_state'] = get_rng_state()

    def after_load_checkpoint(self, runner, checkpoint: Dict):
        from .loading import is_resuming
        # not a dict (a file holding a list or a tensor): the strict check
        # that runs next names the problem
        meta = checkpoint.get('meta') if isinstance(checkpoint, dict) \
            else None
        state = meta.get('rng_state') if isinstance(meta, dict) else None
        if state is not None and is_resuming():
            set_rng_state(state)
            self._warn_mid_epoch(runner, meta)

    @staticmethod
    def _warn_mid_epoch(runner, meta: Dict):
        from mmengine.logging import print_log
        loader = getattr(runner, 'train_dataloader', None)
        epoch, it = meta.get('epoch'), meta.get('iter')
        try:
            per_epoch = len(loader)
        except TypeError:
            return
        if isinstance(epoch, int) and isinstance(it, int) and per_epoch \
                and it != epoch * per_epoch:
            print_log(
                f'ExactResumeHook: this checkpoint was saved mid-epoch '
                f'(iteration {it}, {it - epoch * per_epoch} iterations into '
                f'epoch {epoch + 1}); the epoch loop runs that epoch again '
                f'from its start, so the resumed run will not equal the '
                f'uninterrupted one bit for bit. Resume from a checkpoint '
                f'saved at the end of an epoch for that',
                logger='current', level=30)
