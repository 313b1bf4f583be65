"""What mmsk adds to MMEngine's Runner (installed by ``import mmsk``).

- :mod:`.loading`: ``tools/test.py CONFIG CKPT``, ``--resume`` and
  ``load_from`` refuse a checkpoint that does not fit the model
  (:class:`CheckpointMismatchError`); ``load_from_strict=False`` opts in to a
  partial ``load_from`` for fine-tuning;
- :mod:`.saving`: checkpoints are written atomically and ``--resume`` takes
  the newest one that reads back whole;
- :mod:`.randomness`: :class:`ExactResumeHook` makes a resumed run draw the
  same random numbers as the uninterrupted one;
- :mod:`.hooks`: :class:`ChannelsLastHook` puts the model and every batch in
  channels_last.
"""
from . import loading, saving
from .loading import (STRICT_KEY, CheckpointMismatchError,
                      check_checkpoint_fits, state_dict_mismatch)
from .hooks import ChannelsLastHook
from .randomness import ExactResumeHook, get_rng_state, set_rng_state
from .saving import checkpoint_problem, find_resumable_checkpoint


def install():
    """Install :mod:`.loading` and :mod:`.saving` into MMEngine's Runner
    (idempotent)."""
    loading.install()
    saving.install()


__all__ = [
    'STRICT_KEY', 'ChannelsLastHook', 'CheckpointMismatchError',
    'ExactResumeHook',
    'check_checkpoint_fits', 'checkpoint_problem',
    'find_resumable_checkpoint', 'get_rng_state', 'install',
    'set_rng_state', 'state_dict_mismatch'
]
