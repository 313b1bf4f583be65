"""MobileNetV2 weights from timm, torchvision, mmpretrain and mmseg give
the same outputs in mmsk's InvertedResidualNet (eval mode, random weights,
randomized BN statistics, max abs difference <= 1e-4)."""
import pytest
import torch

from conftest import randomize_bn
from test_converters import convert_and_compare

# output stride 8 for the MobileNetV2 table (mmseg's DeepLabV3 settings)
OS8 = dict(strides=(1, 2, 2, 1, 1, 1, 1), dilations=(1, 1, 1, 2, 2, 4, 4))


def _timm_mobilenetv2():
    import timm
    return sorted(timm.list_models('mobilenetv2_*'))


MOBILENETV2_FAMILY = _timm_mobilenetv2()


def _classifier(backbone, num_classes=1000):
    """The mmsk classifier (mmpretrain ImageClassifier) around a backbone."""
    import mmsk  # noqa: F401
    from mmpretrain.registry import MODELS
    from mmsk.registry import MODELS as MMSK_MODELS
    feat_dim = MMSK_MODELS.build(dict(backbone)).feat_dim
    return MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=backbone,
            neck=dict(type='GlobalAveragePooling'),
            head=dict(
                type='LinearClsHead',
                num_classes=num_classes,
                in_channels=feat_dim)))


def _compare(expected, got):
    assert got.shape == expected.shape
    diff = (got - expected).abs().max().item()
    assert diff <= 1e-4, f'max abs diff {diff}'
    # and the outputs are not trivially equal (e.g. all zeros)
    assert expected.abs().max().item() > 1e-2


def test_converter_covers_every_timm_mobilenetv2_model():
    from mmsk.converters import supported_models
    assert len(MOBILENETV2_FAMILY) >= 7, MOBILENETV2_FAMILY
    assert set(MOBILENETV2_FAMILY) <= set(supported_models())


@pytest.mark.parametrize('name', MOBILENETV2_FAMILY)
def test_timm_mobilenetv2_logit_parity(name, tmp_path):
    convert_and_compare(name, tmp_path)


def test_timm_output_stride_8_matches_dilation_mode_timm():
    import timm

    from mmsk.converters.mobilenet import convert_timm_mobilenetv2
    torch.manual_seed(0)
    ref = randomize_bn(timm.create_model('mobilenetv2_100',
                                         output_stride=8)).eval()
    model = _classifier(
        dict(type='InvertedResidualNet', dilation_mode='timm', **OS8))
    model.load_state_dict(convert_timm_mobilenetv2(ref.state_dict()))
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _compare(ref.forward_features(x), model.backbone(x)[-1])
        _compare(ref(x), model(x, mode='tensor'))
    # mmseg's mode dilates other blocks: a different network at stride 8
    other = _classifier(
        dict(type='InvertedResidualNet', dilation_mode='mmseg', **OS8))
    other.load_state_dict(model.state_dict())
    other.eval()
    with torch.no_grad():
        assert (ref(x) - other(x, mode='tensor')).abs().max() > 1e-3


@pytest.mark.parametrize('width', [1.0, 0.5, 1.4])
def test_torchvision_logit_parity(width):
    import torchvision

    from mmsk.converters.mobilenet import convert_torchvision_mobilenet_v2
    torch.manual_seed(0)
    ref = torchvision.models.mobilenet_v2(width_mult=width, num_classes=10)
    randomize_bn(ref).eval()
    model = _classifier(
        dict(type='InvertedResidualNet', widen_factor=width), num_classes=10)
    model.load_state_dict(convert_torchvision_mobilenet_v2(ref.state_dict()))
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _compare(ref(x), model(x, mode='tensor'))


@pytest.mark.parametrize('width', [1.0, 0.75])
def test_mmpretrain_logit_parity(width):
    from mmpretrain.registry import MODELS

    from mmsk.converters.mobilenet import convert_mmpretrain_mobilenet_v2
    torch.manual_seed(0)
    ref = MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=dict(type='MobileNetV2', widen_factor=width),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(
                type='LinearClsHead', num_classes=10, in_channels=1280)))
    ref.init_weights()
    randomize_bn(ref).eval()
    model = _classifier(
        dict(type='InvertedResidualNet', widen_factor=width), num_classes=10)
    model.load_state_dict(convert_mmpretrain_mobilenet_v2(ref.state_dict()))
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _compare(ref(x, mode='tensor'), model(x, mode='tensor'))


def test_mmseg_output_stride_8_matches_dilation_mode_mmseg():
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')
    from mmseg.registry import MODELS

    from conftest import build_backbone
    from mmsk.converters.mobilenet import convert_mmpretrain_mobilenet_v2
    out_indices = (1, 2, 4, 6)
    torch.manual_seed(0)
    ref = MODELS.build(
        dict(type='MobileNetV2', out_indices=out_indices, **OS8))
    ref.init_weights()
    randomize_bn(ref).eval()
    model = build_backbone(
        dict(
            type='mmsk.InvertedResidualNet',
            out_indices=out_indices,
            dilation_mode='mmseg',
            **OS8)).eval()
    # nothing after the last requested row is built (no unused parameters)
    assert not hasattr(model, 'conv2')
    model.load_state_dict(convert_mmpretrain_mobilenet_v2(ref.state_dict()))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected, got = ref(x), model(x)
    assert [o.shape[-1] for o in got] == [16, 8, 8, 8]
    for e, g in zip(expected, got):
        _compare(e, g)


def test_converters_refuse_unknown_keys():
    from mmsk.converters.mobilenet import (convert_timm_mobilenetv2,
                                           convert_torchvision_mobilenet_v2)
    with pytest.raises(KeyError, match='fc_nope'):
        convert_timm_mobilenetv2({'fc_nope.weight': torch.zeros(1)})
    with pytest.raises(ValueError, match='repeats'):
        convert_torchvision_mobilenet_v2(
            {'features.0.0.weight': torch.zeros(1)})


def test_timm_checkpoint_with_another_number_of_classes(tmp_path):
    import timm
    from mmpretrain.apis import init_model

    from mmsk.checkpoint import config_from_checkpoint
    from mmsk.converters import convert_checkpoint
    torch.manual_seed(0)
    ref = randomize_bn(timm.create_model('mobilenetv2_050',
                                         num_classes=10)).eval()
    src, dst = tmp_path / 'timm.pth', tmp_path / 'mmsk.pth'
    torch.save(ref.state_dict(), src)
    convert_checkpoint('mobilenetv2_050', str(src), str(dst), progress=None)
    cfg = config_from_checkpoint(str(dst))
    assert cfg.model.head.num_classes == 10
    model = init_model(cfg, str(dst)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _compare(ref(x), model(x, mode='tensor'))


@pytest.mark.parametrize('cli', [False, True], ids=['function', 'tool'])
def test_torchvision_checkpoint_converts_and_rebuilds(tmp_path, cli):
    """torchvision's mobilenet_v2 file through
    tools/model_converters/torchvision_to_mmsk.py (there was only the
    key-renaming function): the rebuilt classifier gives its logits."""
    import torchvision

    from conftest import convert_and_rebuild
    from mmsk.converters.torchvision import convert_checkpoint
    torch.manual_seed(0)
    ref = randomize_bn(torchvision.models.mobilenet_v2(num_classes=10))
    ref.eval()
    src = tmp_path / 'mobilenet_v2.pth'
    torch.save(ref.state_dict(), src)
    model = convert_and_rebuild('torchvision_to_mmsk.py', convert_checkpoint,
                                'mobilenet_v2', src, tmp_path / 'mmsk.pth',
                                cli=cli)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _compare(ref(x), model(x, mode='tensor'))
    with pytest.raises(KeyError, match="'mobilenet_v3' is not supported"):
        convert_checkpoint('mobilenet_v3', str(src), str(tmp_path / 'o.pth'))
