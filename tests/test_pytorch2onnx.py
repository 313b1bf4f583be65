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

from conftest import MAIN_CONFIG, ROOT, build_backbone, randomize_bn, \
    run_python
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
    tiny = [
        'model.backbone.stem_channels=8', 'model.backbone.base_channels=8',
        'model.head.in_channels=64'
    ]
    cfg = classifier_config('sknet18-paper')
    ckpt = save_checkpoint(cfg, tmp_path / 'model.pth')
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
