"""Deploy folding: ``switch_to_deploy()`` and ``deploy=True`` on every
backbone and block (see :mod:`mmsk.models.deploy`)."""
import copy

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from conftest import ROOT, build_backbone, randomize_bn, run_python
from test_backbones import BACKBONES, _cfg, _family

# the suite's backbones, and the output-stride-8 form of each family:
# id -> (suite entry, config)
CASES = {name: (name, _cfg(name)) for name in BACKBONES}
CASES.update({
    f'{name}-os8': (name, _cfg(name, **_family(name).dilated))
    for name in ('sknet18-timm', 'senet50', 'res2next50-v1b',
                 'sk-mobilenet-v2')
})


def _trained_like(model, seed=0):
    """Initialised weights with non-trivial norm statistics and scales, and
    no zero-initialised last norms, so that every path contributes."""
    model.init_weights()
    return randomize_bn(model, seed)


def _outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize('name', sorted(CASES))
def test_switch_to_deploy_folds_every_norm_and_keeps_outputs(name, tmp_path):
    entry, cfg = CASES[name]
    cfg = dict(cfg, out_indices=_family(entry).all_outputs)
    model = _trained_like(build_backbone(cfg))
    x = torch.randn(2, 3, 32, 32)
    want = _outputs(model, x)
    assert any(isinstance(m, _BatchNorm) for m in model.modules())
    assert model.switch_to_deploy() is model
    assert model.deploy
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())
    # two-branch SK units select with one C-wide logit
    for m in model.modules():
        if type(m).__name__ == 'ChannelAttention' and m.num_paths == 2:
            assert m.collapsed and m.expand.out_channels == m.in_channels
    got = _outputs(model, x)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    model.switch_to_deploy()  # idempotent
    torch.testing.assert_close(_outputs(model, x)[-1], want[-1], atol=1e-4,
                               rtol=1e-4)
    # deploy=True builds the same structure: the folded weights reload
    path = tmp_path / 'deploy.pth'
    torch.save(model.state_dict(), path)
    rebuilt = build_backbone(dict(cfg, deploy=True))
    assert not any(isinstance(m, _BatchNorm) for m in rebuilt.modules())
    rebuilt.load_state_dict(torch.load(path, weights_only=True), strict=True)
    for a, b in zip(_outputs(rebuilt, x), want):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('cfg', [
    dict(type='SKNet', depth=50),
    dict(type='SKNet', depth=50, sk_form='pytorchinsight'),
    dict(type='SENet', depth=50, groups=32, width_per_group=4),
    dict(type='MultiScaleResNet', depth=50, deep_stem=True, avg_down=True),
    dict(type='InvertedResidualNet', attn_cfg=dict(type='SKConv')),
], ids=lambda c: c['type'] + '-' + str(c.get('depth', 'v2')))
def test_full_width_folding_within_1e4(cfg):
    model = build_backbone(cfg)
    model.init_weights()
    randomize_bn(model)
    x = torch.randn(1, 3, 64, 64)
    want = _outputs(model, x)[-1]
    got = _outputs(model.switch_to_deploy(), x)[-1]
    assert (got - want).abs().max() <= 1e-4 * max(1.0, want.abs().max())


# block -> constructor arguments, input channels
BLOCKS = {
    'SKConv': (dict(in_channels=32, out_channels=32, groups=4), 32),
    'SKAttention': (dict(in_channels=32, groups=4), 32),
    'ChannelAttention': (dict(in_channels=32, num_paths=2,
                              norm_cfg=dict(type='BN')), 32),
    'SEAttention': (dict(in_channels=32), 32),
    'Res2Conv': (dict(channels=32, scales=4), 32),
    'SKBasicBlock': (dict(in_channels=32, out_channels=32), 32),
    'SEBasicBlock': (dict(in_channels=32, out_channels=32), 32),
    'SKBottleneck': (dict(in_channels=64, out_channels=64, groups=2,
                          width_per_group=32), 64),
    'SEBottleneck': (dict(in_channels=64, out_channels=64), 64),
    'Res2Bottleneck': (dict(in_channels=256, out_channels=256), 256),
    'InvertedResidualBlock': (dict(in_channels=32, out_channels=32,
                                   attn_cfg=dict(type='SEAttention')), 32),
}


@pytest.mark.parametrize('block', sorted(BLOCKS))
def test_every_block_switches_to_deploy(block):
    import mmsk  # noqa: F401
    from mmsk.models.layers import ChannelAttention, attention_weights
    from mmsk.registry import MODELS
    args, channels = BLOCKS[block]
    module = randomize_bn(MODELS.build(dict(type=block, **args))).eval()
    x = torch.randn(2, channels, 8, 8)
    want = _outputs(module, x)
    module.switch_to_deploy()
    assert not any(isinstance(m, _BatchNorm) for m in module.modules())
    got = _outputs(module, x)
    if type(module) is ChannelAttention:  # one logit for two paths
        assert got.shape == (2, 1, 32, 1, 1)
        got, want = attention_weights(got, 2), attention_weights(want, 2)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_deploy_refuses_what_it_cannot_fold():
    with pytest.raises(ValueError, match='deploy'):
        build_backbone(dict(BACKBONES['senet18'], deploy='yes'))
    model = build_backbone(
        dict(BACKBONES['senet18'], conv_cfg=dict(type='ConvWS')))
    with pytest.raises(NotImplementedError, match='ConvWS'):
        model.switch_to_deploy()


def test_mmpretrain_reparameterize_tool_on_an_mmsk_checkpoint(
        trained_work_dir, tmp_path):
    """mmpretrain's own tools/model_converters/reparameterize_model.py folds
    an mmsk classifier; the folded checkpoint, loaded with
    ``model.backbone.deploy=True``, predicts what the original does."""
    from mmpretrain.apis import init_model

    from conftest import MAIN_CONFIG, TINY_OPTIONS
    from mmsk.utils.tools import mmpretrain_tool_path
    from mmengine.config import Config

    # the tool takes no --cfg-options: a config file with the tiny widths
    model_options = {
        key: int(value)
        for key, value in (o.split('=') for o in TINY_OPTIONS)
        if key.startswith('model.')
    }
    config = tmp_path / 'tiny.py'
    config.write_text(f'_base_ = [{MAIN_CONFIG!r}]\n')
    cfg = Config.fromfile(str(config))
    cfg.merge_from_dict(model_options)
    cfg.dump(str(config))
    folded = tmp_path / 'folded.pth'
    assert mmpretrain_tool_path('model_converters/reparameterize_model.py')
    proc = run_python(args=[
        f'{ROOT}/tools/model_converters/reparameterize_model.py',
        str(config),
        str(trained_work_dir / 'epoch_1.pth'),
        str(folded)
    ])
    assert 'Done!' in proc.stdout
    original = init_model(copy.deepcopy(cfg),
                          str(trained_work_dir / 'epoch_1.pth')).eval()
    cfg.merge_from_dict({'model.backbone.deploy': True})
    deployed = init_model(cfg, str(folded)).eval()
    assert not any(isinstance(m, _BatchNorm) for m in deployed.modules())
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        want = original(x, mode='tensor')
        got = deployed(x, mode='tensor')
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert (got.argmax(1) == want.argmax(1)).all()
