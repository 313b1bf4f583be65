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
- ``--resume`` (:func:`find_resumable_checkpoint`) takes the checkpoint
  ``last_checkpoint`` names when it reads back whole; when it does not, it
  says so and falls back to the next one by number (never to a ``best_*``
  file, nor to one an earlier run in the work dir numbered past it).
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


def _candidates(work_dir: str,
                named: Optional[str]) -> Tuple[List[str], List[str]]:
    """Checkpoints of ``work_dir`` to resume from, newest first, and those
    left out as another run's.

    The file ``last_checkpoint`` names comes first: the Runner writes it
    after each (atomic) save, so it is the newest complete checkpoint of the
    run that stopped. The others follow by the epoch / iteration in their
    names, as fall-backs when it cannot be read: only those of its name
    pattern (``epoch_`` or ``iter_``, and ``filename_tmpl``'s prefix)
    numbered at or below it. Those numbered above it, or of another pattern,
    are left out: an earlier run in the same work dir wrote them, and
    ``max_keep_ckpts`` only removes a run's own files. Without
    ``last_checkpoint`` all are ranked by number.

    Only the numbered checkpoints of ``CheckpointHook`` (``epoch_N.pth``,
    ``iter_N.pth``, with any prefix its ``filename_tmpl`` gives) and the
    file ``last_checkpoint`` names are candidates. ``best_*.pth`` is saved
    without the optimizer and schedulers, so resuming from it would go on
    with a fresh optimizer without a word; other unnumbered files (a
    pretrained or converted model kept in the work dir) say nothing of
    where training stood. Temporary files of
    :func:`~mmsk.utils.io.atomic_output` (hidden) are never candidates."""
    ranked: List[Tuple[int, int, str, str]] = []
    names = sorted(os.listdir(work_dir)) if osp.isdir(work_dir) else []
    paths = [osp.join(work_dir, n) for n in names
             if n.endswith('.pth') and not n.startswith('.')]
    if named and named not in paths and osp.basename(named) in names:
        named = osp.join(work_dir, osp.basename(named))
    if named and named not in paths:
        paths.append(named)
    for path in paths:
        match = _NUMBERED.search(osp.basename(path))
        is_named = named is not None and osp.abspath(path) == osp.abspath(
            named)
        if not is_named and (not match or osp.basename(path).startswith(
                'best_')):
            continue
        number = int(match.group(2)) if match else -1
        # the name pattern: CheckpointHook's filename_tmpl and by_epoch
        pattern = osp.basename(path)[:match.start()] + match.group(1) \
            if match else ''
        ranked.append((is_named, number, pattern, path))
    ranked.sort(key=lambda r: r[:2], reverse=True)
    if not ranked or not ranked[0][0] or ranked[0][1] < 0:
        # no last_checkpoint, or an unnumbered one: the rest by number
        return [r[-1] for r in ranked], []
    _, ceiling, pattern, _ = ranked[0]
    ours, others = [], []
    for _, number, kind, path in ranked:
        (ours if number <= ceiling and kind == pattern else others).append(
            path)
    return ours, others


def find_resumable_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint of ``work_dir`` to resume from: the one
    ``last_checkpoint`` names when it reads back whole, else the newest
    fall-back that does (:func:`_candidates`).

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
    candidates, others = _candidates(work_dir, named)
    if others:
        print_log(
            f'Not resuming from {", ".join(others)}: numbered past '
            f'{candidates[0]}, which last_checkpoint names as the newest '
            f'checkpoint of the run that stopped, or named by another '
            f'pattern (an earlier run in this work dir left them)',
            logger='current', level=30)
    if not candidates:
        best = [n for n in (os.listdir(work_dir) if osp.isdir(work_dir)
                            else []) if n.startswith('best_')]
        print_log(f'No checkpoint in {work_dir} to resume from'
                  + (f' ({", ".join(sorted(best))} hold no optimizer '
                     'state: not resumed from)' if best else '') + '.',
                  logger='current', level=30 if best else 20)
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
