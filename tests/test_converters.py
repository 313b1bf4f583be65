"""timm -> mmsk: the converter reproduces timm's logits for every model."""
import sys

import pytest
import torch

from conftest import ROOT, convert_and_rebuild, randomize_bn, run_python


def _timm_family(*patterns):
    import timm
    return sorted({m for p in patterns for m in timm.list_models(p)})


SK_FAMILY = _timm_family('skres*')


def test_converter_covers_every_timm_sk_model():
    from mmsk.converters import supported_models
    assert SK_FAMILY, 'timm lists no SK models'
    assert set(SK_FAMILY) <= set(supported_models())


def convert_and_compare(name, tmp_path, size=64, cli=False):
    import timm
    from mmsk.converters import convert_checkpoint
    torch.manual_seed(0)
    ref = timm.create_model(name, pretrained=False, num_classes=1000)
    randomize_bn(ref).eval()
    src, dst = tmp_path / 'timm.pth', tmp_path / 'mmsk.pth'
    torch.save(ref.state_dict(), src)
    model = convert_and_rebuild('timm_to_mmsk.py', convert_checkpoint, name,
                                src, dst, cli)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = ref(x)
        got = model(x, mode='tensor')
    assert got.shape == expected.shape
    diff = (got - expected).abs().max().item()
    assert diff <= 1e-4, f'{name}: max abs logit diff {diff}'
    return diff


@pytest.mark.parametrize('name', SK_FAMILY)
def test_sk_family_logit_parity(name, tmp_path):
    convert_and_compare(name, tmp_path)


SE_RES2_FAMILY = _timm_family('seresnet*', 'seresnext*', 'res2net*',
                              'res2next*')
# timm models of the SE / Res2Net families that the converter does not
# reproduce, with the reason; the coverage test keeps this list exact.
UNSUPPORTED: dict = {}
# The deepest models run at 32x32 to keep the suite fast.
_DEEP = {'seresnet200d', 'seresnet269d', 'seresnextaa201d_32x8d'}


def test_converter_covers_every_timm_se_and_res2net_model():
    from mmsk.converters import supported_models
    assert len(SE_RES2_FAMILY) > 20, SE_RES2_FAMILY
    uncovered = set(SE_RES2_FAMILY) - set(supported_models())
    assert uncovered == set(UNSUPPORTED)


@pytest.mark.parametrize(
    'name', [m for m in SE_RES2_FAMILY if m not in UNSUPPORTED])
def test_se_res2net_family_logit_parity(name, tmp_path):
    convert_and_compare(name, tmp_path, size=32 if name in _DEEP else 64)


def test_converter_cli(tmp_path):
    convert_and_compare('skresnet18', tmp_path, cli=True)


def test_converter_errors(tmp_path):
    from mmsk.converters import convert_checkpoint
    with pytest.raises(KeyError, match='not supported'):
        convert_checkpoint('resnet_nope', 'x', 'y')
    bad = tmp_path / 'bad.pth'
    torch.save({'conv1.weight': torch.zeros(1)}, bad)
    with pytest.raises(KeyError, match='skresnet18: converted keys do not '
                       'match the mmsk model.*missing'):
        convert_checkpoint('skresnet18', str(bad), str(tmp_path / 'o.pth'))
    proc = run_python(
        args=[
            f'{ROOT}/tools/model_converters/timm_to_mmsk.py', 'nope', 'a',
            'b'
        ],
        check=False)
    assert proc.returncode == 1 and 'not supported' in proc.stderr
    # a KeyError's message without the quotes its str() adds
    assert proc.stderr.startswith("error: timm model 'nope'") or \
        proc.stderr.startswith('error: nope'), proc.stderr
    assert not proc.stderr.startswith('error: "'), proc.stderr
    # what is not a state dict of weights is named, and nothing is written
    # (no folder for the output either)
    out = tmp_path / 'new' / 'o.pth'
    torch.save({'fc.weight': 5, 'conv1.weight': torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="'fc.weight' holds a value of type "
                       'int, not a tensor'):
        convert_checkpoint('skresnet18', str(bad), str(out))
    torch.save({'fc.weight': torch.zeros(5)}, bad)
    with pytest.raises(ValueError, match=r'fc.weight has shape \(5,\), not '
                       r'\(classes, features\)'):
        convert_checkpoint('skresnet18', str(bad), str(out))
    assert not (tmp_path / 'new').exists()
    # --list into a reader that has gone (`| head`, here `| true`, which
    # exits before the list is printed): no BrokenPipeError traceback
    import subprocess
    proc = subprocess.run(
        f'{sys.executable} {ROOT}/tools/model_converters/timm_to_mmsk.py '
        '--list | true; exit ${PIPESTATUS[0]}', shell=True,
        executable='/bin/bash', capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stderr == '', proc.stderr


@pytest.mark.parametrize('groups, base_width, scales', [(1, 26, 4),
                                                        (4, 13, 3)])
def test_res2net_middle_width_of_any_stage_width(groups, base_width, scales):
    """Stage widths whose split width is not a whole number (48 planes *
    26 / 64 = 19.5): the split width is rounded down before it is
    multiplied by the splits, as in timm (78 channels, not 76, failed:
    4 splits do not divide them)."""
    from mmengine.registry import init_default_scope
    from timm.models.res2net import Bottle2neck
    from timm.models.resnet import ResNet

    from mmpretrain.registry import MODELS

    import mmsk  # noqa: F401
    from mmsk.converters.timm import convert_state_dict
    torch.manual_seed(0)
    ref = ResNet(Bottle2neck, (2, 2, 2, 2), num_classes=10,
                 channels=(48, 96, 192, 384), cardinality=groups,
                 base_width=base_width, block_args=dict(scale=scales))
    randomize_bn(ref).eval()
    init_default_scope('mmpretrain')
    model = MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='MultiScaleResNet', depth=26, groups=groups,
                      base_width=base_width, scales=scales,
                      stage_channels=(192, 384, 768, 1536)),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=10,
                  in_channels=1536))).eval()
    model.load_state_dict(
        convert_state_dict('res2net50_26w_4s', ref.state_dict()))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x, mode='tensor'), ref(x),
                                   atol=1e-4, rtol=1e-4)


def _skresnet18_round_trip(tmp_path, name, src, save):
    """timm's skresnet18 (10 classes, random norm statistics) saved with
    ``save(state_dict, src)``, converted as timm model ``name`` and
    rebuilt: the mmsk classifier gives timm's logits."""
    import timm

    from mmsk.converters import convert_checkpoint
    torch.manual_seed(0)
    ref = randomize_bn(timm.create_model('skresnet18', num_classes=10)).eval()
    save(ref.state_dict(), src)
    model = convert_and_rebuild('timm_to_mmsk.py', convert_checkpoint, name,
                                src, tmp_path / 'mmsk.pth')
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x, mode='tensor'), ref(x),
                                   atol=1e-4, rtol=1e-4)


def test_timm_safetensors_weights_and_tagged_names(tmp_path):
    """timm downloads safetensors files and names weights with a tag
    (skresnet18.ra_in1k): both were refused ('corrupt', 'not supported');
    a safetensors file handed to the checkpoint loader names the format."""
    from safetensors.torch import save_file

    from mmsk.checkpoint import CorruptCheckpointError, load_local_checkpoint
    from mmsk.converters import convert_checkpoint
    src = tmp_path / 'model.safetensors'
    _skresnet18_round_trip(tmp_path, 'skresnet18.ra_in1k', src, save_file)
    with pytest.raises(CorruptCheckpointError,
                       match='it is a safetensors file of weights .*'
                       'timm_to_mmsk.py MODEL'):
        load_local_checkpoint(str(src))
    cut = tmp_path / 'cut.safetensors'
    cut.write_bytes(src.read_bytes()[:-1000])
    with pytest.raises(CorruptCheckpointError,
                       match='corrupt or truncated safetensors'):
        convert_checkpoint('skresnet18', str(cut), str(tmp_path / 'o.pth'))
    assert not (tmp_path / 'o.pth').exists()


@pytest.mark.parametrize('name, message', [
    ('legacy_seresnet18', "the old SENet port's layout"),
    ('senet154', "the old SENet port's layout"),
    ('nf_seresnet50', 'normalizer-free'),
    ('skresnet81', 'did you mean skresnet18'),
])
def test_timm_models_left_out_say_why(name, message):
    from mmsk.converters import convert_checkpoint
    with pytest.raises(KeyError, match=f"timm model '{name}' is not "
                       f'supported.*{message}'):
        convert_checkpoint(name, 'x', 'y')


def test_keys_of_a_wrapped_or_compiled_model_convert(tmp_path):
    """A state dict saved from a DDP-wrapped, compiled model (keys
    'module._orig_mod.conv1.weight', ...) was refused as the wrong model;
    the prefixes are stripped when every key has them."""
    from mmsk.converters.timm import strip_wrapper_prefixes

    def save_wrapped(state_dict, src):
        torch.save({f'module._orig_mod.{k}': v
                    for k, v in state_dict.items()}, src)

    _skresnet18_round_trip(tmp_path, 'skresnet18', tmp_path / 'wrapped.pth',
                           save_wrapped)
    # a prefix that only some keys have is a key of the model: kept
    mixed = {'module.a': 1, 'b': 2}
    assert strip_wrapper_prefixes(mixed) == mixed


@pytest.mark.parametrize('name', ['skresnet18', 'mobilenetv2_050'])
def test_timm_weights_without_a_classifier(tmp_path, name):
    """timm's num_classes=0 weights (features for detection or fine-tuning)
    were refused ('missing: head.fc.bias, head.fc.weight'): they convert to
    the backbone alone, which loads by init_cfg with prefix 'backbone.' and
    gives timm's pooled features."""
    import timm
    from mmengine.runner import load_checkpoint

    from mmsk.checkpoint import load_local_checkpoint
    from mmsk.converters import convert_checkpoint
    from mmsk.registry import MODELS
    torch.manual_seed(0)
    ref = randomize_bn(timm.create_model(name, num_classes=0)).eval()
    src, dst = tmp_path / 'timm.pth', tmp_path / 'mmsk.pth'
    torch.save(ref.state_dict(), src)
    lines = []
    convert_checkpoint(name, str(src), str(dst), progress=lines.append)
    assert 'the backbone alone' in lines[0]
    saved = load_local_checkpoint(str(dst))
    assert saved['meta']['headless'] is True
    assert not any(key.startswith('head.') for key in saved['state_dict'])
    from mmengine.config import Config
    cfg = Config.fromstring(saved['meta']['cfg'], '.py')
    backbone = MODELS.build(
        dict(cfg.model.backbone,
             init_cfg=dict(type='Pretrained', checkpoint=str(dst),
                           prefix='backbone.')))
    backbone.init_weights()
    backbone.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = backbone(x)[-1].mean((2, 3))
        torch.testing.assert_close(feats, ref(x), atol=1e-4, rtol=1e-4)
    # the config it carries has no head, so the docstring's recipe
    # rebuilds it whole (a 1000-way head stayed random before) and gives
    # the pooled features
    assert cfg.model.head is None
    from mmpretrain.apis import init_model

    from mmsk.checkpoint import config_from_checkpoint
    model = init_model(config_from_checkpoint(str(dst)), str(dst)).eval()
    with torch.no_grad():  # the neck's outputs, as a tuple
        torch.testing.assert_close(model(x, mode='tensor')[-1], ref(x),
                                   atol=1e-4, rtol=1e-4)
    # a classifier with a head refuses it: its head would stay random
    from mmpretrain.registry import MODELS as CLS
    with pytest.raises((KeyError, RuntimeError), match='head.fc'):
        load_checkpoint(CLS.build(dict(cfg.model, head=dict(
            type='LinearClsHead', num_classes=3,
            in_channels=backbone.feat_dim))), str(dst), strict=True)
    # a classifier with half its weights is no headless model
    state = ref.state_dict()
    state['fc.bias' if name.startswith('sk') else 'classifier.bias'] = \
        torch.zeros(3)
    torch.save(state, src)
    with pytest.raises(KeyError, match='missing: .*head.fc.weight'):
        convert_checkpoint(name, str(src), str(dst), progress=None)
