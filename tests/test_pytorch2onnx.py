"""``tools/deployment/pytorch2onnx.py`` and :mod:`mmsk.deploy.onnx`.

Every family and form (SKNet in its three SK forms, SENet, Res2Net incl.
v1b / Res2NeXt, InvertedResidualNet with SE and SK slots, and output-stride-8
dilated backbones exporting their features) is exported at tiny width as an
MNIST5k classifier, in plain and deploy mode, with static and dynamic shapes,
and checked with onnxruntime on random and real digits. Each case runs four
ways: (plain, static, dynamo), (plain, dynamic, torchscript), (deploy,
static, torchscript), (deploy, dynamic, dynamo), so that every mode meets
both shapes and both exporters.
"""
import copy

import pytest
import torch

from conftest import MAIN_CONFIG, ROOT, TINY_OPTIONS, build_backbone, \
    randomize_bn, run_python
from test_backbones import BACKBONES, FAMILIES

SHAPE = (32, 32)
# case -> (backbone config name, overrides, export the features)
CASES = {
    'sknet18-paper': ('sknet18-paper', {}, False),
    'sknet34-pytorchinsight': ('sknet34-pytorchinsight', {}, False),
    'sknet18-timm': ('sknet18-timm', {}, False),
    'senet18': ('senet18', {}, False),
    'res2net26': ('res2net26-6w4s', {}, False),
    'res2next50-v1b': ('res2next50-v1b', {}, False),
    'se-mobilenet-v2': ('se-mobilenet-v2', {}, False),
    'sk-mobilenet-v2': ('sk-mobilenet-v2', {}, False),
    'sknet50-d8-features': ('sknet50-paper',
                            FAMILIES['SKNet'].dilated, True),
    'mobilenet-v2-d8-features': ('mobilenet-v2-w0.25',
                                 FAMILIES['InvertedResidualNet'].dilated,
                                 True),
}
WAYS = [('plain', 'static', 'dynamo'), ('plain', 'dynamic', 'torchscript'),
        ('deploy', 'static', 'torchscript'), ('deploy', 'dynamic', 'dynamo')]


def classifier_config(case):
    """The main job's MNIST5k config with the case's tiny backbone."""
    from mmengine.config import Config
    name, overrides, features = CASES[case]
    backbone = copy.deepcopy(BACKBONES[name])
    backbone.update(overrides, in_channels=1)
    if features:
        backbone['out_indices'] = FAMILIES[backbone['type']].all_outputs
    feat_dim = build_backbone(backbone).feat_dim
    cfg = Config.fromfile(MAIN_CONFIG)
    cfg.model.backbone = backbone
    cfg.model.head.in_channels = feat_dim
    return cfg


def save_checkpoint(cfg, path):
    """A checkpoint with non-trivial weights and norm statistics."""
    from mmpretrain.registry import MODELS
    torch.manual_seed(0)
    model = randomize_bn(MODELS.build(cfg.model))
    torch.save(dict(state_dict=model.state_dict()), path)
    return str(path)


# the main config at tiny width: --cfg-options of the CLI tests
TINY = [o for o in TINY_OPTIONS if o.startswith('model.')]


def tiny_main_config(*options):
    """The main config with ``TINY`` and ``options`` (``key=value``)."""
    from mmengine.config import Config, DictAction
    cfg = Config.fromfile(MAIN_CONFIG)
    cfg.merge_from_dict({
        key: DictAction._parse_iterable(value)
        for key, value in (o.split('=', 1) for o in TINY + list(options))
    })
    return cfg


def tiny_checkpoint(path, *options):
    """A checkpoint of the model of ``tiny_main_config(*options)``."""
    return save_checkpoint(tiny_main_config(*options), path)


@pytest.mark.parametrize('mode,shape,exporter', WAYS,
                         ids=['-'.join(w) for w in WAYS])
@pytest.mark.parametrize('case', sorted(CASES))
def test_pytorch2onnx_matches_pytorch(case, mode, shape, exporter, tmp_path):
    from mmsk.deploy.cli import pytorch2onnx
    cfg = classifier_config(case)
    ckpt = save_checkpoint(cfg, tmp_path / 'model.pth')
    lines = []
    result = pytorch2onnx(
        cfg, ckpt, SHAPE, out=str(tmp_path / 'model.onnx'),
        dynamic=shape == 'dynamic', deploy=mode == 'deploy',
        features=CASES[case][2], exporter=exporter, log=lines.append)
    inputs = set(result['diffs'])
    assert 'random' in inputs and 'real (MNIST5k digits)' in inputs
    if shape == 'dynamic':
        assert 'random, other batch and size' in inputs
    assert result['max_diff'] <= 1e-4, result['diffs']
    assert any('max abs diff' in line for line in lines)
    if mode == 'deploy':  # the file holds no BatchNormalization node
        import onnx
        ops = {n.op_type for n in onnx.load(result['out']).graph.node}
        assert 'BatchNormalization' not in ops


def test_real_inputs_are_normalized_digits():
    from mmsk.deploy import build_classifier, real_inputs
    model = build_classifier(classifier_config('sknet18-paper'))
    x = real_inputs(model, (28, 28), num=4)
    assert x.shape == (4, 1, 28, 28)
    # normalized with the config's mean / std: background at -mean / std
    from mmengine.config import Config
    pre = Config.fromfile(
        f'{ROOT}/configs/_base_/datasets/mnist5k_bs64.py').data_preprocessor
    assert x.min().item() == pytest.approx(
        -pre.mean[0] / pre.std[0], abs=1e-4)
    assert len({round(v, 3) for v in x.flatten(1).sum(1).tolist()}) == 4
    assert real_inputs(model, (40, 36)).shape[-2:] == (40, 36)


def test_tool_cli_exits_0_within_tolerance_and_1_over_it(tmp_path):
    tiny = TINY
    ckpt = tiny_checkpoint(tmp_path / 'model.pth')
    tool = f'{ROOT}/tools/deployment/pytorch2onnx.py'
    args = [tool, MAIN_CONFIG, ckpt, '--shape', '28', '28', '--exporter',
            'torchscript', '--out', str(tmp_path / 'm.onnx'),
            '--cfg-options', *tiny]
    proc = run_python(args=args)
    assert 'real (MNIST5k digits) input: max abs diff' in proc.stdout
    assert ': ok; wrote' in proc.stdout
    # a tolerance below the float32 round-off fails the check
    proc = run_python(args=args[:-len(tiny) - 1] + ['--tolerance', '1e-12'] +
                      ['--cfg-options', *tiny], check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert 'FAILED' in proc.stdout


def test_tool_errors_name_the_problem(tmp_path, capsys):
    from mmsk.deploy.cli import main
    assert main([MAIN_CONFIG, str(tmp_path / 'missing.pth'),
                 '--shape', '28', '28']) == 1
    assert 'missing.pth' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([MAIN_CONFIG, 'x.pth', '--shape', '28', '28', '--exporter',
              'tflite'])
    assert '--exporter' in capsys.readouterr().err
    from mmsk.deploy import export_onnx
    with pytest.raises(ValueError, match='shape'):
        export_onnx(torch.nn.Identity(), 'x.onnx', shape=(32, ))
    with pytest.raises(ValueError, match='exporter'):
        export_onnx(torch.nn.Identity(), 'x.onnx', (32, 32), exporter='tf')


def test_verification_is_not_blinded_by_a_nan(tmp_path):
    """max() skips a NaN, so one NaN logit made any difference read 0:
    NaN or inf from onnxruntime where PyTorch has a number is an infinite
    difference; a PyTorch output that is not finite cannot be checked."""
    from mmpretrain.registry import MODELS

    from mmsk.deploy import export_onnx, verify_onnx
    cfg = classifier_config('senet18')
    torch.manual_seed(0)
    model = randomize_bn(MODELS.build(cfg.model)).eval()
    out = str(tmp_path / 'nan.onnx')
    x = torch.randn(1, 1, *SHAPE)
    with torch.no_grad():
        bias = model.head.fc.bias
        kept = bias.clone()
        for bad in (float('nan'), float('inf')):
            bias[0] = bad  # the file gives NaN (inf) in logit 0
            export_onnx(model, out, SHAPE, exporter='torchscript')
            with pytest.raises(ValueError, match="1 of PyTorch's 10 output "
                               "values on the 'input' input are not "
                               'finite'):
                verify_onnx(model, out, x)
            bias.copy_(kept)
            # the other logits agree; logit 0 is NaN (inf) in the file only
            assert verify_onnx(model, out, x)['input'] == float('inf')
    # the tool refuses such a checkpoint before it writes a file
    from mmsk.deploy.cli import pytorch2onnx
    with torch.no_grad():
        model.head.fc.bias[0] = float('nan')
    ckpt = tmp_path / 'nan.pth'
    torch.save(dict(state_dict=model.state_dict()), ckpt)
    with pytest.raises(ValueError, match='the export cannot be checked'):
        pytorch2onnx(cfg, str(ckpt), SHAPE, out=str(tmp_path / 'tool.onnx'),
                     exporter='torchscript', log=lambda _: None)
    assert not (tmp_path / 'tool.onnx').exists()


@pytest.mark.parametrize('case', ['sknet18-paper', 'sk-mobilenet-v2'])
def test_deploy_true_config_with_folded_checkpoint(case, tmp_path):
    """A config built with ``deploy=True`` loads a folded checkpoint and
    exports without --deploy; the file equals the folded PyTorch model."""
    from mmpretrain.registry import MODELS

    from mmsk.deploy.cli import pytorch2onnx
    cfg = classifier_config(case)
    torch.manual_seed(0)
    model = randomize_bn(MODELS.build(cfg.model)).eval()
    model.backbone.switch_to_deploy()
    ckpt = str(tmp_path / 'folded.pth')
    torch.save(dict(state_dict=model.state_dict()), ckpt)
    cfg.model.backbone.deploy = True
    result = pytorch2onnx(cfg, ckpt, SHAPE, out=str(tmp_path / 'm.onnx'),
                          exporter='torchscript', log=lambda _: None)
    assert result['max_diff'] <= 1e-4, result['diffs']
    x = torch.randn(1, 1, *SHAPE)
    from mmsk.deploy import verify_onnx
    assert verify_onnx(model, result['out'], x)['input'] <= 1e-4


def _tool(capsys, *args):
    """``pytorch2onnx.py MAIN_CONFIG *args --cfg-options TINY`` in this
    process: (exit code, stdout, stderr)."""
    from mmsk.deploy.cli import main
    code = main([MAIN_CONFIG, *map(str, args), '--cfg-options', *TINY])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err):
    """The ``error: ...`` line of ``err``; no traceback, no other error."""
    assert 'Traceback' not in err, err
    lines = [line for line in err.splitlines() if line.startswith('error:')]
    assert len(lines) == 1, err
    return lines[0]


def test_tool_refuses_to_write_over_its_input(tmp_path, capsys):
    """--out naming the checkpoint (or the config), also through ../ or a
    symlink, is refused before any work: the input is left as it was."""
    ckpt = tiny_checkpoint(tmp_path / 'model.pth')
    before = (tmp_path / 'model.pth').read_bytes()
    (tmp_path / 'sub').mkdir()
    (tmp_path / 'link.onnx').symlink_to(tmp_path / 'model.pth')
    config = tmp_path / 'tiny.py'
    config.write_text(f'_base_ = [{MAIN_CONFIG!r}]\n')
    for out in [ckpt, tmp_path / 'sub' / '..' / 'model.pth',
                tmp_path / 'link.onnx']:
        code, _, err = _tool(capsys, ckpt, '--shape', 28, 28,
                             '--exporter', 'torchscript', '--out', out)
        assert code == 1
        assert 'refusing to overwrite' in _one_line_error(err)
        assert (tmp_path / 'model.pth').read_bytes() == before
    from mmsk.deploy.cli import main
    assert main([str(config), ckpt, '--shape', '28', '28', '--out',
                 str(config), '--cfg-options', *TINY]) == 1
    assert 'refusing to overwrite' in capsys.readouterr().err
    assert config.read_text() == f'_base_ = [{MAIN_CONFIG!r}]\n'


def test_tool_output_folder_and_missing_parents(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / 'model.pth')
    code, _, err = _tool(capsys, ckpt, '--shape', 28, 28, '--out', tmp_path)
    assert code == 1
    assert 'is a folder' in _one_line_error(err)
    out = tmp_path / 'new' / 'folder' / 'model.onnx'
    code, stdout, err = _tool(capsys, ckpt, '--shape', 28, 28, '--exporter',
                              'torchscript', '--out', out)
    assert code == 0, err
    assert f'ok; wrote {out}' in stdout
    import onnx
    onnx.checker.check_model(str(out))
    # one self-contained file: no temporary or external-data file left
    assert sorted(p.name for p in out.parent.iterdir()) == ['model.onnx']


@pytest.mark.parametrize('exporter', ['dynamo', 'torchscript'])
def test_export_is_atomic(exporter, tmp_path, monkeypatch):
    """An export that fails half-way leaves the old file, and no other."""
    from mmsk.deploy import build_classifier, export_onnx
    model = build_classifier(tiny_main_config())
    out = tmp_path / 'model.onnx'
    out.write_bytes(b'the old file')

    def half_export(module, args, f, **kwargs):
        with open(f, 'wb') as file:
            file.write(b'half an ONNX file')
        raise RuntimeError('the export crashed')

    monkeypatch.setattr(torch.onnx, 'export', half_export)
    with pytest.raises(RuntimeError, match='crashed'):
        export_onnx(model, str(out), (28, 28), exporter=exporter)
    assert out.read_bytes() == b'the old file'
    assert [p.name for p in tmp_path.iterdir()] == ['model.onnx']


@pytest.mark.parametrize('bad', ['model-key', 'deeper', 'wider'])
def test_tool_loads_the_checkpoint_strictly(bad, tmp_path, capsys):
    """A checkpoint that does not fit the config's model is refused, naming
    the keys, instead of exporting a partly random model."""
    path = tmp_path / 'model.pth'
    if bad == 'model-key':  # the weights under another key
        tiny_checkpoint(path)
        state_dict = torch.load(path, weights_only=True)['state_dict']
        torch.save({'model': state_dict}, path)
        want = 'missing keys: backbone.'
    elif bad == 'deeper':  # a checkpoint of SKNet-34
        tiny_checkpoint(path, 'model.backbone.depth=34')
        want = 'unexpected keys: backbone.layer1.2.'
    else:
        tiny_checkpoint(path, 'model.backbone.base_channels=16',
                        'model.head.in_channels=128')
        want = 'mis-shaped keys: '
    out = tmp_path / 'model.onnx'
    code, stdout, err = _tool(capsys, path, '--shape', 28, 28, '--exporter',
                              'torchscript', '--out', out)
    assert code == 1, stdout
    line = _one_line_error(err)
    assert want in line and 'does not fit the model' in line
    assert not out.exists()


def _unsafe_checkpoint(path):
    import os

    class Hostile:

        def __reduce__(self):
            return os.system, ('echo pwned', )

    torch.save({'state_dict': Hostile()}, path)


BAD_INPUTS = {
    'corrupt': (lambda p: p.write_bytes(b'PK\x03\x04 not a checkpoint'), (),
                'corrupt'),
    'unsafe': (_unsafe_checkpoint, (), 'Refused to load'),
    'list': (lambda p: torch.save([1, 2], p), (), 'holds no state dict'),
    'opset-too-high': (None, ('--opset', '99'), 'give an opset in [7, '),
    'opset-too-low': (None, ('--opset', '6'), 'give an opset in [7, '),
    'torchscript-opset': (None, ('--exporter', 'torchscript', '--opset',
                                 '21'), 'torchscript exporter'),
    'tolerance-nan': (None, ('--tolerance', 'nan'), '--tolerance'),
    'tolerance-inf': (None, ('--tolerance', 'inf'), '--tolerance'),
    'tolerance-negative': (None, ('--tolerance', '-1'), '--tolerance'),
    'tolerance-0': (None, ('--tolerance', '0'), '--tolerance'),
    # checked before the model is built
    'shape-0': (None, ('--shape', '0', '28'), 'shape[0] must be'),
}


@pytest.mark.parametrize('bad', sorted(BAD_INPUTS))
def test_tool_bad_input_is_a_one_line_error(bad, tmp_path, capsys):
    write, options, want = BAD_INPUTS[bad]
    path = tmp_path / 'model.pth'
    tiny_checkpoint(path)
    if write is not None:
        write(path)
    out = tmp_path / 'new' / 'model.onnx'
    code, stdout, err = _tool(capsys, path, '--shape', 28, 28, '--out', out,
                              *options)
    assert code == 1
    assert want in _one_line_error(err)
    # nothing written, not even the output's folder
    assert not (tmp_path / 'new').exists()
    if bad == 'shape-0':
        assert 'exporting' not in stdout


def test_opset_range_is_torchs():
    from torch.onnx import _constants

    from mmsk.deploy.onnx import check_opset, opset_range
    assert opset_range('dynamo') == (7, _constants.ONNX_MAX_OPSET)
    assert opset_range('torchscript')[1] == \
        _constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET
    assert check_opset('dynamo') == 18 and check_opset('torchscript') == 17
    assert check_opset('torchscript', 11) == 11
    with pytest.raises(ValueError, match=r'\[7, '):
        check_opset('dynamo', 6)


def test_export_refuses_an_opset_torch_did_not_write(tmp_path):
    """The dynamo exporter falls back to opset 18 when it cannot convert the
    model to the opset asked for: that is an error, and no file."""
    from mmsk.deploy import build_classifier, export_onnx
    model = build_classifier(tiny_main_config())
    out = tmp_path / 'model.onnx'
    with pytest.raises(ValueError, match='exported opset 18 instead'):
        export_onnx(model, str(out), (28, 28), opset=7)
    assert list(tmp_path.iterdir()) == []
