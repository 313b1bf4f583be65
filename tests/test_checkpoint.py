"""mmengine checkpoints load with weights_only=True; hostile ones do not."""
import os
import pickle

import numpy as np
import pytest
import torch

from conftest import MAIN_CONFIG, ROOT, run_python


class _Hostile:
    """Unpickling this creates ``marker`` (if the loader runs callables)."""

    def __init__(self, marker, how):
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == 'system':
            return (os.system, (f'touch {self.marker}', ))
        if self.how == 'exec':
            return (exec, (f'open({str(self.marker)!r}, "w").close()', ))
        # a getattr chain to builtins.open through an allowed class
        from mmengine.logging.history_buffer import HistoryBuffer
        return (getattr, (HistoryBuffer, '__init__'))


def _hostile_checkpoint(tmp_path, template, how='exec'):
    marker = tmp_path / 'pwned'
    ckpt = {'state_dict': {}}
    if template:
        import mmsk  # noqa: F401
        from mmsk.checkpoint import load_local_checkpoint
        ckpt = load_local_checkpoint(str(template))
    ckpt.setdefault('meta', {})['payload'] = _Hostile(marker, how)
    path = tmp_path / 'hostile.pth'
    torch.save(ckpt, path)
    return path, marker


def test_runner_checkpoint_needs_the_allow_list(trained_work_dir):
    import mmsk  # noqa: F401
    from mmsk.checkpoint import allowed_globals, load_local_checkpoint
    path = str(trained_work_dir / 'epoch_1.pth')
    # torch's default refuses mmengine's own checkpoint (its message hub's
    # HistoryBuffers, the numpy arrays of the random state) ...
    with pytest.raises(pickle.UnpicklingError,
                       match='HistoryBuffer|numpy'):
        torch.load(path, weights_only=True)
    # ... mmsk's loader reads it with weights_only=True
    ckpt = load_local_checkpoint(path)
    assert 'message_hub' in ckpt and 'state_dict' in ckpt
    # and every allowed global is needed: dropping any one fails (of the
    # numeric dtype classes, the float64 of the logs stands for them all)
    from mmsk.checkpoint import numeric_dtype_classes
    import numpy as np
    needed = [g for g in allowed_globals()
              if g not in numeric_dtype_classes()
              or g is type(np.dtype('float64'))]
    for dropped in needed:
        rest = [g for g in allowed_globals() if g is not dropped]
        with torch.serialization.safe_globals(rest):
            with pytest.raises(pickle.UnpicklingError):
                torch.load(path, weights_only=True)


def test_mmengine_load_checkpoint_uses_safe_loader(trained_work_dir):
    import mmsk  # noqa: F401
    from mmengine.runner import CheckpointLoader

    from mmsk.checkpoint import load_local_checkpoint
    assert CheckpointLoader._get_checkpoint_loader('a.pth') is \
        load_local_checkpoint
    ckpt = CheckpointLoader.load_checkpoint(
        str(trained_work_dir / 'epoch_1.pth'), map_location='cpu')
    assert ckpt['meta']['epoch'] == 1


@pytest.mark.parametrize('how,word', [('system', 'posix.system'),
                                      ('exec', 'exec'),
                                      ('getattr', 'getattr')])
def test_hostile_checkpoint_is_refused_and_runs_nothing(tmp_path, how, word):
    import mmsk  # noqa: F401
    from mmengine.runner import CheckpointLoader

    from mmsk.checkpoint import UnsafeCheckpointError
    path, marker = _hostile_checkpoint(tmp_path, None, how)
    with pytest.raises(UnsafeCheckpointError, match=word) as info:
        CheckpointLoader.load_checkpoint(str(path))
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_hostile_checkpoint_through_test_tool(trained_work_dir, tmp_path):
    path, marker = _hostile_checkpoint(tmp_path,
                                       trained_work_dir / 'epoch_1.pth')
    proc = run_python(
        args=[
            f'{ROOT}/tools/test.py', MAIN_CONFIG,
            str(path), '--work-dir',
            str(tmp_path / 'wd')
        ],
        check=False)
    assert proc.returncode != 0
    assert 'Refused to load checkpoint' in proc.stderr
    assert not marker.exists()


def test_corrupt_checkpoint_has_a_clear_error(trained_work_dir, tmp_path):
    import mmsk  # noqa: F401
    from mmsk.checkpoint import (CorruptCheckpointError,
                                 UnsafeCheckpointError,
                                 load_local_checkpoint)
    data = (trained_work_dir / 'epoch_1.pth').read_bytes()
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(data[:len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match='truncated'):
        load_local_checkpoint(str(truncated))
    text = tmp_path / 'text.pth'
    text.write_text('not a checkpoint')
    with pytest.raises(CorruptCheckpointError, match='corrupt'):
        load_local_checkpoint(str(text))
    # random bytes are corrupt, never "unsafe", also when they happen to
    # start like a pickle that asks for a global (opcode 'c')
    rng = np.random.default_rng(0)
    for i, head in enumerate((b'', b'cposix\nsystem\n', b'\x80\x02c')):
        garbage = tmp_path / f'random_{i}.pth'
        garbage.write_bytes(head + rng.bytes(4096))
        with pytest.raises(CorruptCheckpointError, match='corrupt') as info:
            load_local_checkpoint(str(garbage))
        assert not isinstance(info.value, UnsafeCheckpointError)
        assert 'unsafe' not in str(info.value).lower()
    with pytest.raises(FileNotFoundError):
        load_local_checkpoint(str(tmp_path / 'missing.pth'))


@pytest.mark.parametrize('tool', ['timm_to_mmsk.py', 'mmpretrain_to_mmsk.py'])
def test_converter_clis_refuse_hostile_and_corrupt_files(tool, tmp_path):
    path, marker = _hostile_checkpoint(tmp_path, None, how='system')
    corrupt = tmp_path / 'corrupt.pth'
    corrupt.write_bytes(b'not a checkpoint')
    name = 'skresnet18' if tool.startswith('timm') else 'seresnet50'
    for src, word in ((path, 'refus|unsafe|not allowed'),
                      (corrupt, 'not a readable|corrupt')):
        proc = run_python(
            args=[
                f'{ROOT}/tools/model_converters/{tool}', name,
                str(src), str(tmp_path / 'out.pth')
            ],
            check=False)
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert proc.stderr.startswith('error: '), proc.stderr[-2000:]
        assert 'Traceback' not in proc.stderr
        import re
        assert re.search(word, proc.stderr, re.I), proc.stderr
    assert not marker.exists()
    assert not (tmp_path / 'out.pth').exists()
