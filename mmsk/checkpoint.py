"""Safe loading of MMEngine checkpoints on torch>=2.6.

torch>=2.6 loads with ``weights_only=True`` by default, and mmengine 0.10.7's
local loader calls ``torch.load`` without saying which globals its own
checkpoints need, so ``tools/test.py CONFIG CKPT`` and ``--resume`` fail
("Unsupported global: mmengine.logging.history_buffer.HistoryBuffer").
Passing ``weights_only=False`` would let any checkpoint run code on load.

:func:`install` (run by ``import mmsk``) replaces mmengine's loader of local
files by :func:`load_local_checkpoint`, which keeps ``weights_only=True`` and
allows exactly the extra types that mmengine checkpoints hold
(:func:`allowed_globals`). Anything else, such as a pickled callable in a
hostile file, is refused with :class:`UnsafeCheckpointError` before any of it
runs; an unreadable file raises :class:`CorruptCheckpointError`.
"""
import os.path as osp
import pickle
import re
from functools import lru_cache
from typing import List

import numpy as np
import torch


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The checkpoint holds a type outside the allow-list; nothing ran."""


class CorruptCheckpointError(RuntimeError):
    """The file is not a readable torch checkpoint."""


@lru_cache(maxsize=None)
def allowed_globals() -> List[type]:
    """The types beyond torch's defaults that mmengine checkpoints contain.

    - ``meta['message_hub']`` holds :class:`~mmengine.logging.HistoryBuffer`
      objects, whose logs are numpy arrays (array reconstruction, dtypes);
    - ``meta`` may hold numpy scalars (e.g. a seed or a metric value).
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    multiarray = np._core.multiarray if hasattr(np, '_core') \
        else np.core.multiarray
    dtype_classes = [type(np.dtype(t)) for t in np.sctypeDict.values()
                     if isinstance(t, type)]
    return [
        HistoryBuffer,
        np.ndarray,
        np.dtype,
        multiarray._reconstruct,
        multiarray.scalar,
        *sorted(set(dtype_classes), key=lambda c: c.__name__),
    ]


_GLOBAL = re.compile(r'Unsupported global: GLOBAL ([\w.]+)')


def load_local_checkpoint(filename: str, map_location=None):
    """Load a local checkpoint with ``weights_only=True`` and mmengine's types.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the file needs a global outside the allow-list.
        CorruptCheckpointError: the file is truncated or not a checkpoint.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            return torch.load(
                filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = _GLOBAL.search(str(e))
        what = f'the global {found.group(1)!r}' if found else \
            'an object outside the allow-list'
        raise UnsafeCheckpointError(
            f'Refused to load checkpoint {filename!r}: it holds {what}, which '
            f'mmsk does not load (weights_only=True; allowed extra types: '
            f'{[g.__module__ + "." + g.__name__ for g in allowed_globals()]}'
            f'). Nothing in the file was run.') from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise CorruptCheckpointError(
            f'Cannot read checkpoint {filename!r}: it is corrupt, truncated '
            f'or not a torch checkpoint ({type(e).__name__}: {e})') from e


def install():
    """Make mmengine load local checkpoints with :func:`load_local_checkpoint`.

    Idempotent. Only the loader for plain paths (prefix ``''``) changes.
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(
        prefixes='', loader=load_local_checkpoint, force=True)
