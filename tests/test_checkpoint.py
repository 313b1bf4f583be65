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
    # (the OneCycle scheduler's entry is needed by the checkpoints of runs
    # that use it: test_resume.py)
    needed = [g for g in allowed_globals()
              if (g not in numeric_dtype_classes()
                  or g is type(np.dtype('float64')))
              and not (isinstance(g, tuple) and 'OneCycle' in g[1])]
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


def _flip_bytes_in_largest_record(src, dst):
    """Copy ``src`` with 256 bytes inverted in the middle of its largest
    record (a tensor's storage), leaving the zip structure intact."""
    import zipfile
    with zipfile.ZipFile(src) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    data = bytearray(open(src, 'rb').read())
    # the local header: 30 bytes, the name and the extra field
    start = info.header_offset + 30 + len(info.filename.encode()) + \
        int.from_bytes(data[info.header_offset + 28:info.header_offset + 30],
                       'little')
    middle = start + info.file_size // 2
    data[middle:middle + 256] = bytes(b ^ 0xFF for b in
                                      data[middle:middle + 256])
    open(dst, 'wb').write(bytes(data))
    return info.filename


def test_flipped_bytes_in_a_tensor_are_refused(trained_work_dir, tmp_path):
    """torch reads zip records without their CRCs: the flipped weights
    loaded and gave a model that tested; now the file is called corrupt,
    through mmengine too (tools/test.py, load_from, resume)."""
    import mmsk  # noqa: F401
    from mmengine.runner.checkpoint import _load_checkpoint

    from mmsk.checkpoint import CorruptCheckpointError, load_local_checkpoint
    flipped = tmp_path / 'flipped.pth'
    record = _flip_bytes_in_largest_record(
        trained_work_dir / 'epoch_1.pth', flipped)
    for load in (load_local_checkpoint, _load_checkpoint):
        with pytest.raises(CorruptCheckpointError,
                           match=rf"bad CRC in record '{record}'"):
            load(str(flipped))
    load_local_checkpoint(str(trained_work_dir / 'epoch_1.pth'))


def test_checkpoint_config_is_read_as_data(trained_work_dir, tmp_path):
    """meta['cfg'] is text that Config.fromstring would run; the converters
    document config_from_checkpoint, which reads it as data."""
    import mmsk  # noqa: F401
    from mmengine.config import Config

    from mmsk.checkpoint import (UnsafeConfigError, config_from_checkpoint,
                                 load_local_checkpoint)
    path = trained_work_dir / 'epoch_1.pth'
    ckpt = load_local_checkpoint(str(path))
    text = ckpt['meta']['cfg']
    assert config_from_checkpoint(str(path)).to_dict() == \
        Config.fromstring(text, '.py').to_dict()
    marker = tmp_path / 'pwned'
    for line in (f"_x = __import__('os').system('touch {marker}')",
                 f"import os; os.system('touch {marker}')",
                 f"_x = open({str(marker)!r}, 'w')",
                 "_x = [c for c in ().__class__.__base__.__subclasses__()]",
                 f"_x = dict(a=print({str(marker)!r}))",
                 f"exec({f'open({str(marker)!r}, mode=chr(119))'!r})"):
        hostile = dict(ckpt, meta=dict(ckpt['meta'], cfg=f'{text}\n{line}'))
        with pytest.raises(UnsafeConfigError, match='refused, nothing of it '
                           'ran'):
            config_from_checkpoint(hostile)
        # as a file too: the tensors load (weights_only), the text is data
        torch.save(hostile, tmp_path / 'hostile.pth')
        with pytest.raises(UnsafeConfigError):
            config_from_checkpoint(str(tmp_path / 'hostile.pth'))
    assert not marker.exists()
    with pytest.raises(ValueError, match='carries no config'):
        config_from_checkpoint({'state_dict': {}})
