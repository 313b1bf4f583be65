"""Run mmpretrain's own train/test tools with mmsk imported.

mmsk's ``tools/train.py`` and ``tools/test.py`` are mmpretrain's, unchanged
(same arguments), run after ``import mmsk``. On a machine without CUDA, the
``pytorch`` launcher (``tools/dist_*.sh``) is made to work on the CPU: gloo
backend, no device ids for DDP, no ``torch.cuda.set_device``.

Bad input that mmsk detects (a missing config or checkpoint, a corrupt,
unsafe or unfitting checkpoint, an unsafe config text) ends with one
``error: ...`` line and exit code 1 instead of a traceback; other errors
(e.g. a wrong option, whose message names it) keep their traceback.
"""
import os.path as osp
import runpy
import sys


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


def run_mmpretrain_tool(name: str):
    import torch

    import mmsk  # noqa: F401  (registers models, safe checkpoint loading)
    from mmsk.checkpoint import allowed_globals

    # Some tools call torch.load themselves (weights_only=True on torch>=2.6):
    # allow the same MMEngine checkpoint types for them in this process.
    torch.serialization.add_safe_globals(allowed_globals())
    path = mmpretrain_tool_path(name)
    sys.argv = [path] + _cpu_launcher_options(sys.argv[1:])
    try:
        runpy.run_path(path, run_name='__main__')
    except input_errors() as e:
        print(f'error: {type(e).__name__}: {e}', file=sys.stderr)
        sys.exit(1)


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
