"""Run mmpretrain's own train/test tools with mmsk imported.

mmsk's ``tools/train.py`` and ``tools/test.py`` are mmpretrain's, unchanged
(same arguments), run after ``import mmsk``. On a machine without CUDA, the
``pytorch`` launcher (``tools/dist_*.sh``) is made to work on the CPU: gloo
backend, no device ids for DDP, no ``torch.cuda.set_device``.

Bad input that mmsk detects (a missing config or checkpoint, a corrupt,
unsafe or unfitting checkpoint, an unsafe config text, a config that is not
Python, a folder or a checkpoint given as the config, a ``--work-dir`` that
is a file or lies in a folder that cannot be written, a ``--out`` of
``test.py`` that is a folder, one of the inputs, of the wrong suffix or in
a folder that cannot be written, a ``--resume`` checkpoint without the
training state) ends with one ``error: ...`` line and exit code 1 instead
of a traceback; other errors
(e.g. a wrong option, whose message names it) keep their traceback. The
output paths are checked before any work, and ``test.py`` writes ``--out``
atomically (a temporary file next to it, renamed when the run succeeds).
"""
import os
import os.path as osp
import runpy
import sys
import uuid
from typing import List, Optional, Tuple


def mmpretrain_tool_path(name: str) -> str:
    import mmpretrain
    path = osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'tools', name)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'mmpretrain {mmpretrain.__version__} ships no {name} at {path}')
    return path


def _cpu_launcher_options(argv):
    import torch
    launcher = None
    for i, arg in enumerate(argv):
        if arg == '--launcher' and i + 1 < len(argv):
            launcher = argv[i + 1]
        elif arg.startswith('--launcher='):
            launcher = arg.split('=', 1)[1]
    if launcher in (None, 'none') or torch.cuda.is_available():
        return argv
    torch.cuda.set_device = lambda device: None
    options = [
        'env_cfg.dist_cfg.backend=gloo',
        'model_wrapper_cfg.type=MMDistributedDataParallel',
        'model_wrapper_cfg.device_ids=None',
    ]
    if '--cfg-options' in argv:
        i = argv.index('--cfg-options') + 1
        return argv[:i] + options + argv[i:]
    return argv + ['--cfg-options'] + options


def _option(argv: List[str], name: str) -> Tuple[Optional[int], str]:
    """Where the value of ``name`` (``--opt X`` or ``--opt=X``; the last
    one, as argparse takes it) is in ``argv``, and the value."""
    found: Tuple[Optional[int], str] = (None, '')
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            found = (i + 1, argv[i + 1])
        elif arg.startswith(name + '='):
            found = (i, arg.split('=', 1)[1])
    return found


#: what mmpretrain's test.py writes with --out: mmengine.dump picks the
#: format of the metrics by the suffix; predictions are always a pickle
_OUT_SUFFIXES = dict(metrics=('.json', '.yaml', '.yml', '.pkl', '.pickle'),
                     pred=('.pkl', '.pickle'))


def _check_config_argument(config: str):
    """A folder or a file of another type (a checkpoint: CONFIG and
    CHECKPOINT swapped) where the tool reads its config. A name that is no
    file is left to the tool (mmpretrain's get_flops.py takes model names
    too; the others say the file does not exist)."""
    from mmsk.utils.io import CHECKPOINT_SUFFIXES, check_config_suffix
    if osp.isdir(config):
        raise ValueError(f'config {config!r} is a folder, not a config file')
    if osp.isfile(config) or config.lower().endswith(CHECKPOINT_SUFFIXES):
        check_config_suffix(config)


def _check_work_dir(argv: List[str]):
    from mmsk.utils.io import check_writable_folder
    _, work_dir = _option(argv, '--work-dir')
    if not work_dir:
        return
    if osp.exists(work_dir) and not osp.isdir(work_dir):
        raise ValueError(f'--work-dir {work_dir!r} is a file, not a folder')
    existing = osp.abspath(osp.expanduser(work_dir))
    while not osp.lexists(existing):  # the run creates the rest
        existing = osp.dirname(existing)
    if not osp.isdir(existing):
        raise ValueError(f'--work-dir {work_dir!r}: {existing!r} is not a '
                         f'folder')
    check_writable_folder(existing, f'--work-dir {work_dir!r}')


def _atomic_out(argv: List[str]):
    """Check test.py's ``--out`` before any work and point the tool at a
    temporary file next to it; returns ``(argv, finish)``, where
    ``finish(ok)`` renames the temporary file onto ``--out`` when the run
    succeeded and wrote it (in a distributed run only rank 0 writes
    predictions), else removes it."""
    from mmsk.utils.io import check_output_path, commit_file
    index, out = _option(argv, '--out')
    if index is None:
        return argv, lambda ok: None
    inputs = [a for i, a in enumerate(argv)
              if i != index and not a.startswith('-') and osp.isfile(a)]
    out = check_output_path(out, inputs, create=False)
    _, item = _option(argv, '--out-item')
    item = item or 'pred'
    suffixes = _OUT_SUFFIXES.get(item)
    if suffixes and not out.endswith(suffixes):  # as mmengine reads them
        raise ValueError(
            f'--out {out!r}: --out-item {item} writes '
            + ('a pickle (.pkl, .pickle; predictions are the default)'
               if item == 'pred' else
               '.json, .yaml/.yml or .pkl/.pickle (the suffix picks the '
               'format)'))
    folder = osp.dirname(osp.abspath(out))
    made = []  # the folders this run creates, outermost last
    missing = folder
    while not osp.isdir(missing):
        made.append(missing)
        missing = osp.dirname(missing)
    os.makedirs(folder, exist_ok=True)
    stem, ext = osp.splitext(osp.basename(out))
    tmp = osp.join(folder, f'.{stem}.{uuid.uuid4().hex[:8]}.tmp{ext}')
    argv = list(argv)
    argv[index] = f'--out={tmp}' if argv[index].startswith('--out=') \
        else tmp

    def finish(ok: bool):
        if ok and osp.isfile(tmp) and osp.getsize(tmp) > 0:
            commit_file(tmp, out)
            return
        if osp.exists(tmp):
            os.remove(tmp)
        for created in made:  # a failed run leaves no new folder
            try:  # another rank may have written there, or removed it
                os.rmdir(created)
            except OSError:
                break

    return argv, finish


def run_mmpretrain_tool(name: str):
    import torch

    import mmsk  # noqa: F401  (registers models, safe checkpoint loading)
    from mmsk.checkpoint import allowed_globals

    # Some tools call torch.load themselves (weights_only=True on torch>=2.6):
    # allow the same MMEngine checkpoint types for them in this process.
    torch.serialization.add_safe_globals(allowed_globals())
    path = mmpretrain_tool_path(name)
    argv = sys.argv[1:]
    finish = None
    try:
        if argv and not argv[0].startswith('-'):  # CONFIG
            _check_config_argument(argv[0])
        # bad output paths are refused before any work
        _check_work_dir(argv)
        if name == 'test.py':
            argv, finish = _atomic_out(argv)
    except ValueError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(1)
    sys.argv = [path] + _cpu_launcher_options(argv)
    ok = False
    try:
        runpy.run_path(path, run_name='__main__')
        ok = True
    except SystemExit as e:
        ok = e.code in (None, 0)
        raise
    except SyntaxError as e:  # the config (mmengine's names no file)
        from mmsk.utils.io import config_syntax_error
        given = [a for a in argv if not a.startswith('-')]
        error = config_syntax_error(given[0], e) if given and osp.isfile(
            given[0]) else e
        print(f'error: SyntaxError: {error}', file=sys.stderr)
        sys.exit(1)
    except input_errors() as e:
        print(f'error: {type(e).__name__}: {e}', file=sys.stderr)
        sys.exit(1)
    finally:
        if finish is not None:
            finish(ok)


def input_errors() -> tuple:
    """What the train / test tools report in one line (see the module
    doc)."""
    from mmsk.checkpoint import (CorruptCheckpointError,
                                 UnsafeCheckpointError, UnsafeConfigError)
    from mmsk.engine.loading import CheckpointMismatchError
    from mmsk.models.backbones.pretrained import PretrainedMismatchError
    return (FileNotFoundError, CorruptCheckpointError, UnsafeCheckpointError,
            UnsafeConfigError, CheckpointMismatchError,
            PretrainedMismatchError)
