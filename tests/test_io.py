"""Tools that write files never lose one: mmsk.utils.io and the converters
that use it."""
import os

import pytest
import torch

from conftest import ROOT


def test_check_output_path(tmp_path):
    from mmsk.utils.io import OutputPathError, check_output_path
    src = tmp_path / 'in.pth'
    src.write_bytes(b'x')
    with pytest.raises(OutputPathError, match='is the input'):
        check_output_path(src, inputs=[src])
    # another spelling, and a symlink, of the same file
    with pytest.raises(OutputPathError, match='is the input'):
        check_output_path(tmp_path / '.' / 'in.pth', inputs=[str(src)])
    link = tmp_path / 'link.pth'
    link.symlink_to(src)
    with pytest.raises(OutputPathError, match='is the input'):
        check_output_path(link, inputs=[src])
    with pytest.raises(OutputPathError, match='is a folder'):
        check_output_path(tmp_path)
    with pytest.raises(OutputPathError, match='does not exist'):
        check_output_path(tmp_path / 'a' / 'b.pth', make_dirs=False)
    assert not (tmp_path / 'a').exists()
    out = check_output_path(tmp_path / 'a' / 'b' / 'c.pth', inputs=[None])
    assert (tmp_path / 'a' / 'b').is_dir() and out.endswith('c.pth')
    with pytest.raises(OutputPathError, match='not a folder'):
        check_output_path(src / 'c.pth')
    # a folder no one can write to (sysfs creates no files, even for root)
    # was only found when the work was done; no probe file is left
    with pytest.raises(OutputPathError, match="cannot write '/sys/x/"
                       "y.json': folder '/sys' is not writable"):
        check_output_path('/sys/x/y.json', create=False)
    with pytest.raises(OutputPathError, match="cannot create folder '/sys/x'"):
        check_output_path('/sys/x/y.json')
    with pytest.raises(OutputPathError, match="folder '/sys' is not "
                       'writable'):
        check_output_path('/sys/y.json')
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        'a', 'in.pth', 'link.pth']


def test_read_config_names_a_file_that_is_no_config(tmp_path):
    from mmsk.utils.io import read_config
    (tmp_path / 'model.pth').write_bytes(b'x')
    (tmp_path / 'notes.txt').write_text('x = 1')
    with pytest.raises(ValueError, match=r"config '\S*model.pth' is not a "
                       r'config file \(.py, .yml, .yaml, .json\): it looks '
                       'like a checkpoint'):
        read_config(tmp_path / 'model.pth')
    with pytest.raises(ValueError, match=r'notes.txt. is not a config file '
                       r'\(.py, .yml, .yaml, .json\)$'):
        read_config(tmp_path / 'notes.txt')
    with pytest.raises(ValueError, match='is a folder, not a config file'):
        read_config(tmp_path)


def test_atomic_output_keeps_the_old_file_on_failure(tmp_path):
    from mmsk.utils.io import atomic_output, atomic_save, atomic_write_text
    out = tmp_path / 'sub' / 'out.pth'
    atomic_save({'a': torch.ones(2)}, out)
    assert torch.load(out, weights_only=True)['a'].sum() == 2
    with pytest.raises(RuntimeError, match='writer failed'):
        with atomic_output(out) as tmp:
            assert os.path.dirname(tmp) == str(out.parent)
            assert tmp.endswith('.pth')  # writers that go by extension
            with open(tmp, 'wb') as f:
                f.write(b'half a checkpoint')
            raise RuntimeError('writer failed')
    # the old file is intact and no temporary file is left
    assert torch.load(out, weights_only=True)['a'].sum() == 2
    assert sorted(p.name for p in out.parent.iterdir()) == ['out.pth']
    text = atomic_write_text('| table |\n', tmp_path / 'table.md')
    assert open(text).read() == '| table |\n'
    assert oct(os.stat(text).st_mode & 0o777) != oct(0o600)


SIGTERM_WRITER = """
import signal, sys, time
from mmsk.utils.io import atomic_output
# outside a write SIGTERM keeps its action, before and after
assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
with atomic_output(sys.argv[1] + '.first') as tmp:
    open(tmp, 'w').write('whole')
assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
with atomic_output(sys.argv[1]) as tmp:
    with open(tmp, 'w') as f:
        f.write('half a file')
    print(tmp, flush=True)
    time.sleep(120)
"""


def test_a_sigterm_while_writing_leaves_no_temporary_file(tmp_path):
    """kill (SIGTERM) ended a tool at once, and its hidden temporary file
    (an ONNX export, a checkpoint being saved) stayed in the folder."""
    import signal
    import subprocess
    import sys
    out = tmp_path / 'out.txt'
    out.write_text('the old file')
    proc = subprocess.Popen(
        [sys.executable, '-c', SIGTERM_WRITER, str(out)], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        tmp = proc.stdout.readline().strip()
        assert tmp and os.path.exists(tmp), proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        proc.kill()
        proc.communicate()
    assert out.read_text() == 'the old file'
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        'out.txt', 'out.txt.first']


@pytest.fixture(scope='module')
def timm_weights(tmp_path_factory):
    import timm
    path = tmp_path_factory.mktemp('timm') / 'skresnet18.pth'
    torch.save(timm.create_model('skresnet18').state_dict(), path)
    return path


def _convert(*argv):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'timm_to_mmsk', f'{ROOT}/tools/model_converters/timm_to_mmsk.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool.main(['skresnet18', *map(str, argv)])


def test_converter_refuses_to_overwrite_its_input(timm_weights, capsys):
    before = timm_weights.read_bytes()
    assert _convert(timm_weights, timm_weights) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1, err
    assert 'is the input' in err
    assert timm_weights.read_bytes() == before


def test_converter_output_folder_and_missing_parents(timm_weights, tmp_path,
                                                     capsys):
    assert _convert(timm_weights, tmp_path) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1, err
    assert 'is a folder' in err
    dst = tmp_path / 'new' / 'folder' / 'sk18.pth'
    assert _convert(timm_weights, dst) == 0
    assert torch.load(dst, weights_only=True)['state_dict']
    assert [p.name for p in dst.parent.iterdir()] == ['sk18.pth']


def test_complexity_tool_refuses_a_folder(tmp_path, capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'complexity', f'{ROOT}/tools/analysis_tools/complexity.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(['--names', 'SE-ResNet-50', '--out', str(tmp_path)]) == 1
    assert capsys.readouterr().err == \
        f'error: output {str(tmp_path)!r} is a folder: give a file name\n'
    # an unwritable folder is found before the counting (a traceback after
    # it before)
    assert tool.main(['--names', 'SE-ResNet-50', '--out',
                      '/sys/mmsk/t.md']) == 1
    assert capsys.readouterr().err.startswith(
        "error: cannot write '/sys/mmsk/t.md': folder '/sys' is not writable")
