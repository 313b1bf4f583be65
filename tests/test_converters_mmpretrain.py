"""mmpretrain -> mmsk: SEResNet / SEResNeXt / Res2Net classifiers give the
same logits after conversion."""
import pytest
import torch

from conftest import ROOT, convert_and_rebuild, randomize_bn, run_python

from mmsk.converters.mmpretrain import MMPRETRAIN_MODELS

# The 152-layer and 101-layer models run at 32x32 to keep the suite fast.
_DEEP = {name for name in MMPRETRAIN_MODELS
         if MMPRETRAIN_MODELS[name]['source']['depth'] > 50}


def _mmpretrain_classifier(name, num_classes=10):
    from mmpretrain.registry import MODELS
    source = MMPRETRAIN_MODELS[name]['source']
    torch.manual_seed(0)
    model = MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=source,
            neck=dict(type='GlobalAveragePooling'),
            head=dict(
                type='LinearClsHead',
                num_classes=num_classes,
                in_channels=2048)))
    model.init_weights()
    # init_weights zeroes the last norm of every block and gives the head
    # std-0.01 weights: randomize them so the logits spread
    torch.nn.init.normal_(model.head.fc.weight, std=1.0)
    return randomize_bn(model).eval()


def convert_and_compare(name, tmp_path, size=64, cli=False):
    from mmsk.converters.mmpretrain import convert_checkpoint
    ref = _mmpretrain_classifier(name)
    src, dst = tmp_path / 'mmpretrain.pth', tmp_path / 'mmsk.pth'
    torch.save(dict(state_dict=ref.state_dict()), src)
    model = convert_and_rebuild('mmpretrain_to_mmsk.py', convert_checkpoint,
                                name, src, dst, cli)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = ref(x, mode='tensor')
        got = model(x, mode='tensor')
    assert got.shape == expected.shape == (2, 10)
    diff = (got - expected).abs().max().item()
    assert diff <= 1e-4, f'{name}: max abs logit diff {diff}'
    # the logits differ between inputs: the comparison is not vacuous
    assert (expected[0] - expected[1]).abs().max() > 1e-3


@pytest.mark.parametrize('name', sorted(MMPRETRAIN_MODELS))
def test_mmpretrain_logit_parity(name, tmp_path):
    convert_and_compare(name, tmp_path, size=32 if name in _DEEP else 64)


def test_every_source_backbone_is_mmpretrains_own():
    from mmpretrain.models import Res2Net, SEResNet, SEResNeXt
    from mmpretrain.registry import MODELS
    own = {SEResNet, SEResNeXt, Res2Net}
    for entry in MMPRETRAIN_MODELS.values():
        assert MODELS.get(entry['source']['type']) in own


def test_mmpretrain_converter_cli(tmp_path):
    convert_and_compare('seresnet50', tmp_path, size=32, cli=True)
    proc = run_python(args=[
        f'{ROOT}/tools/model_converters/mmpretrain_to_mmsk.py', '--list'
    ])
    assert proc.stdout.split() == sorted(MMPRETRAIN_MODELS)


def test_mmpretrain_converter_errors(tmp_path):
    from mmsk.converters.mmpretrain import convert_checkpoint
    with pytest.raises(KeyError, match='not supported'):
        convert_checkpoint('resnet_nope', 'x', 'y')
    bad = tmp_path / 'bad.pth'
    torch.save({'backbone.conv1.weight': torch.zeros(1)}, bad)
    with pytest.raises(KeyError, match='seresnet50: converted keys do not '
                       'match the mmsk model.*missing'):
        convert_checkpoint('seresnet50', str(bad), str(tmp_path / 'o.pth'))
    tool = f'{ROOT}/tools/model_converters/mmpretrain_to_mmsk.py'
    proc = run_python(args=[tool, 'nope', 'a', 'b'], check=False)
    assert proc.returncode == 1 and 'not supported' in proc.stderr
    proc = run_python(
        args=[tool, 'seresnet50', str(bad),
              str(tmp_path / 'o.pth')], check=False)
    assert proc.returncode == 1 and 'seresnet50' in proc.stderr
    corrupt = tmp_path / 'corrupt.pth'
    corrupt.write_bytes(b'not a checkpoint')
    proc = run_python(
        args=[tool, 'seresnet50', str(corrupt),
              str(tmp_path / 'o.pth')], check=False)
    assert proc.returncode == 1 and proc.stderr.startswith('error:')
    assert 'Traceback' not in proc.stderr
