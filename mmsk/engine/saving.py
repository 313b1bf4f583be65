"""Atomic checkpoint saving and a resume that never picks a broken file.

MMEngine 0.10 writes a local checkpoint by opening the final path and
writing into it, so a crash during a save leaves half a file under the name
of a checkpoint; ``--resume`` then reads ``last_checkpoint`` and fails, or
worse. After :func:`install` (run by ``import mmsk``):

- the Runner writes every local checkpoint with
  :func:`mmsk.utils.io.atomic_save` (a temporary file in the same folder,
  renamed onto the name once complete); MMEngine's ``CheckpointHook``
  updates ``last_checkpoint`` after ``save_checkpoint`` returns, so it only
  ever names a complete file;
- ``--resume`` (:func:`find_resumable_checkpoint`) takes the newest
  checkpoint of the work dir that reads back whole; when the newest one is
  unreadable it says so and falls back to the next one.
"""
import os
import os.path as osp
import re
import zipfile
from typing import List, Optional, Tuple

from mmsk.utils.io import atomic_save

_NUMBERED = re.compile(r'(?:^|_)(epoch|iter)_(\d+)\.pth$')


def _is_local(filename: str) -> bool:
    return '://' not in str(filename)


def checkpoint_problem(filename: str) -> Optional[str]:
    """``None`` when ``filename`` reads back whole, else what is wrong.

    A torch zip checkpoint is checked record by record (CRC-32, no
    unpickling); any other file is loaded with mmsk's safe loader.
    """
    if not osp.isfile(filename):
        return 'no such file'
    if osp.getsize(filename) == 0:
        return 'empty file'
    from mmsk.checkpoint import load_local_checkpoint, zip_damage
    if zipfile.is_zipfile(filename):
        return zip_damage(filename)
    try:
        load_local_checkpoint(filename, map_location='cpu')
    except Exception as e:  # noqa: BLE001 - any failure means unreadable
        return f'{type(e).__name__}: {e}'
    return None


def _candidates(work_dir: str, named: Optional[str]) -> List[str]:
    """Checkpoints of ``work_dir``, newest first: by the epoch / iteration in
    the name; at the same number the one ``last_checkpoint`` names, then
    ``epoch_N``/``iter_N`` before ``best_*``. Temporary files of
    :func:`~mmsk.utils.io.atomic_output` (hidden) are never candidates."""
    ranked: List[Tuple[int, int, int, str]] = []
    names = sorted(os.listdir(work_dir)) if osp.isdir(work_dir) else []
    paths = [osp.join(work_dir, n) for n in names
             if n.endswith('.pth') and not n.startswith('.')]
    if named and named not in paths and osp.basename(named) in names:
        named = osp.join(work_dir, osp.basename(named))
    if named and named not in paths:
        paths.append(named)
    for path in paths:
        match = _NUMBERED.search(osp.basename(path))
        number = int(match.group(2)) if match else -1
        is_named = named is not None and osp.abspath(path) == osp.abspath(
            named)
        if is_named and not match:
            number = 1 << 62  # an unnumbered name: trust last_checkpoint
        plain = not osp.basename(path).startswith('best_')
        ranked.append((number, is_named, plain, path))
    return [p for *_, p in sorted(ranked, reverse=True)]


def find_resumable_checkpoint(work_dir: str) -> Optional[str]:
    """The newest checkpoint in ``work_dir`` that reads back whole.

    Returns ``None`` when the work dir holds no checkpoint (a fresh run).

    Raises:
        mmsk.checkpoint.CorruptCheckpointError: there are checkpoints, but
            none of them can be read.
    """
    from mmengine.logging import print_log

    from mmsk.checkpoint import CorruptCheckpointError
    named = None
    record = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(record):
        with open(record) as f:
            named = f.read().strip() or None
    if named and not _is_local(named):
        # CheckpointHook(out_dir='s3://...'): mmengine's backend reads it;
        # only local files are checked here
        return named
    candidates = _candidates(work_dir, named)
    if not candidates:
        print_log(f'No checkpoint in {work_dir} to resume from.',
                  logger='current')
        return None
    skipped = []
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            if skipped:
                print_log(
                    'Skipped unreadable checkpoint(s) '
                    + '; '.join(f'{p} ({why})' for p, why in skipped)
                    + f'; resuming from the newest readable one, {path}',
                    logger='current', level=30)
            return path
        skipped.append((path, problem))
    raise CorruptCheckpointError(
        f'Cannot resume from {work_dir}: no checkpoint there reads back '
        'whole: ' + '; '.join(f'{p} ({why})' for p, why in skipped))


def install():
    """Make MMEngine's Runner save local checkpoints atomically and resume
    from the newest readable one (idempotent)."""
    from mmengine.runner import runner as runner_module
    if getattr(runner_module.save_checkpoint, '_mmsk_atomic', False):
        return
    save_checkpoint = runner_module.save_checkpoint

    def atomic_save_checkpoint(checkpoint, filename, *args, **kwargs):
        if not _is_local(filename):
            return save_checkpoint(checkpoint, filename, *args, **kwargs)
        atomic_save(checkpoint, filename)

    def find_latest_checkpoint(path):
        return find_resumable_checkpoint(path)

    atomic_save_checkpoint._mmsk_atomic = True
    runner_module.save_checkpoint = atomic_save_checkpoint
    runner_module.find_latest_checkpoint = find_latest_checkpoint
