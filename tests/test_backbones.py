"""One parametrized suite over every backbone mmsk registers.

Each entry is a small-width configuration of a registered backbone; the
suite checks the OpenMMLab backbone contract on all of them. ``test_every_
registered_backbone_is_covered`` fails when a backbone is added without an
entry here.
"""
import copy

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from conftest import build_backbone

SMALL = dict(stem_channels=8, base_channels=8)

# id -> config (small widths; 32x32 inputs)
BACKBONES = {
    'sknet18-paper': dict(type='SKNet', depth=18, **SMALL),
    'sknet18-timm': dict(type='SKNet', depth=18, sk_form='timm', **SMALL),
    'sknet34-pytorchinsight': dict(
        type='SKNet', depth=34, sk_form='pytorchinsight', **SMALL),
    'sknet50-paper': dict(
        type='SKNet', depth=50, groups=4, width_per_group=4, **SMALL),
    'sknet50-pytorchinsight-v1d': dict(
        type='SKNet', depth=50, sk_form='pytorchinsight', deep_stem=True,
        avg_down=True, **SMALL),
    'sknet50-timm-caffe': dict(
        type='SKNet', depth=50, sk_form='timm', style='caffe', **SMALL),
    'senet18': dict(type='SENet', depth=18, **SMALL),
    'senet50': dict(type='SENet', depth=50, **SMALL),
    'seresnext50': dict(
        type='SENet', depth=50, groups=4, width_per_group=4, **SMALL),
    'res2net26-6w4s': dict(
        type='MultiScaleResNet', depth=26, base_width=6, **SMALL),
    'res2next50-v1b': dict(
        type='MultiScaleResNet', depth=50, groups=2, base_width=4,
        deep_stem=True, avg_down=True, **SMALL),
    'se-res2net26': dict(
        type='MultiScaleResNet', depth=26, scales=2, base_width=8,
        attn_cfg=dict(type='SEAttention'), **SMALL),
    'res2net26-4w8s-se8': dict(
        type='MultiScaleResNet', depth=26, scales=8, base_width=4,
        attn_cfg=dict(type='SEAttention', reduction=8), **SMALL),
}

ALL_STAGES = (0, 1, 2, 3)


def _cfg(name, **overrides):
    cfg = copy.deepcopy(BACKBONES[name])
    cfg.update(overrides)
    return cfg


def _stage_strides(model):
    return [4, 8, 16, 32][:model.num_stages]


def test_every_registered_backbone_is_covered():
    import mmsk  # noqa: F401
    from mmsk.models.backbones.resnet import ResNetStages
    from mmsk.registry import MODELS
    covered = {cfg['type'] for cfg in BACKBONES.values()}
    backbones = {
        name
        for name, cls in MODELS.module_dict.items()
        if isinstance(cls, type) and issubclass(cls, ResNetStages)
    }
    assert backbones <= covered, f'no suite entry for {backbones - covered}'


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_forward_shapes_and_channels(name):
    model = build_backbone(_cfg(name, out_indices=ALL_STAGES)).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        outs = model(x)
    assert isinstance(outs, tuple) and len(outs) == 4
    for out, channels, stride in zip(outs, model.out_channels,
                                     _stage_strides(model)):
        assert out.shape == (2, channels, 32 // stride, 32 // stride)
    assert model.feat_dim == model.out_channels[-1]
    # negative indices count from the last stage, as in a Python sequence
    last = build_backbone(_cfg(name, out_indices=-1)).eval()
    last.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(last(x)[0], outs[-1])


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_every_parameter_gets_a_gradient(name):
    model = build_backbone(_cfg(name, out_indices=ALL_STAGES))
    model.init_weights()
    model.train()
    outs = model(torch.rand(2, 3, 32, 32))
    sum(o.mean() for o in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f'no gradient for {missing[:5]}'


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_frozen_stages_and_norm_eval(name):
    model = build_backbone(_cfg(name, frozen_stages=2, norm_eval=True))
    model.train()
    frozen = ['stem' if model.deep_stem else 'conv1', 'layer1', 'layer2']
    for prefix in frozen:
        module = getattr(model, prefix)
        assert not any(p.requires_grad for p in module.parameters())
        assert not module.training or prefix == 'conv1'
    assert all(p.requires_grad for p in model.layer3.parameters())
    assert all(not m.training for m in model.modules()
               if isinstance(m, _BatchNorm))
    # running stats do not move in train mode with norm_eval
    before = copy.deepcopy(model.state_dict())
    model(torch.rand(2, 3, 32, 32))
    for key, value in model.state_dict().items():
        if 'running' in key:
            torch.testing.assert_close(value, before[key])


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_with_cp_matches_plain_forward_and_backward(name):
    torch.manual_seed(0)
    plain = build_backbone(_cfg(name))
    checkpointed = build_backbone(_cfg(name, with_cp=True))
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    grads = []
    for model in (plain, checkpointed):
        model.train()
        out = model(x)[0]
        (g, ) = torch.autograd.grad(out.sum(), x)
        grads.append((out.detach(), g))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_drop_path_runs_in_every_block(name):
    from mmcv.cnn.bricks import DropPath
    model = build_backbone(_cfg(name, drop_path_rate=0.3))
    blocks = [b for layer in model.res_layers for b in getattr(model, layer)]
    rates = [b.drop_path.drop_prob for b in blocks[1:]]
    assert rates == sorted(rates) and rates[-1] == pytest.approx(0.3)
    assert all(isinstance(b.drop_path, DropPath) for b in blocks[1:])
    calls = []
    for b in blocks:
        b.drop_path.register_forward_hook(lambda *a: calls.append(1))
    model.train()
    model(torch.rand(2, 3, 32, 32))
    assert len(calls) == len(blocks)
    # and it is stochastic in training, deterministic in eval
    model.eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], model(x)[0])
        model.train()
        torch.manual_seed(1)
        a = model(x)[0]
        torch.manual_seed(2)
        b = model(x)[0]
    assert not torch.allclose(a, b)


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_zero_init_residual(name):
    model = build_backbone(_cfg(name))
    model.init_weights()
    blocks = [b for layer in model.res_layers for b in getattr(model, layer)]
    assert all(torch.all(b.last_conv.norm.weight == 0) for b in blocks)
    model = build_backbone(_cfg(name, zero_init_residual=False))
    model.init_weights()
    first = getattr(model, model.res_layers[0])[0]
    assert torch.all(first.last_conv.norm.weight == 1)


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_pretrained_init_cfg_with_prefix(name, tmp_path):
    source = build_backbone(_cfg(name))
    source.init_weights()
    for p in source.parameters():
        p.data.normal_()
    ckpt = tmp_path / 'classifier.pth'
    torch.save(
        dict(state_dict={
            'backbone.' + k: v
            for k, v in source.state_dict().items()
        } | {'head.fc.weight': torch.zeros(10, 4)}), ckpt)
    target = build_backbone(
        _cfg(
            name,
            init_cfg=dict(
                type='Pretrained', checkpoint=str(ckpt), prefix='backbone.')))
    target.init_weights()
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value)


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_act_and_norm_cfg_are_used(name):
    model = build_backbone(
        _cfg(
            name,
            act_cfg=dict(type='SiLU'),
            norm_cfg=dict(type='BN', eps=1e-3)))
    from mmsk.models.layers import SEAttention
    # SE keeps its own (ReLU, sigmoid) pair unless se_cfg/attn_cfg says so
    se_acts = {id(m) for se in model.modules() if isinstance(se, SEAttention)
               for m in se.modules()}
    acts = [m for m in model.modules() if id(m) not in se_acts]
    assert any(isinstance(m, torch.nn.SiLU) for m in acts)
    assert not any(isinstance(m, torch.nn.ReLU) for m in acts)
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert norms and all(m.eps == 1e-3 for m in norms)
    model.eval()
    model(torch.rand(1, 3, 32, 32))


INVALID = [
    (dict(depth=7), KeyError, 'depth'),
    (dict(out_indices=(4, )), ValueError, 'out_indices'),
    (dict(out_indices=()), ValueError, 'out_indices'),
    (dict(frozen_stages=5), ValueError, 'frozen_stages'),
    (dict(strides=(1, 2)), ValueError, 'strides'),
    (dict(dilations=(1, 1, 0, 1)), ValueError, 'dilations'),
    (dict(num_stages=5), ValueError, 'num_stages'),
    (dict(style='tf'), ValueError, 'style'),
    (dict(drop_path_rate=1.5), ValueError, 'drop_path_rate'),
    (dict(norm_cfg='BN'), ValueError, 'norm_cfg'),
    (dict(act_cfg=dict(inplace=True)), ValueError, 'act_cfg'),
    (dict(in_channels=0), ValueError, 'in_channels'),
    (dict(deep_stem=True, cifar_stem=True), ValueError, 'cifar_stem'),
    (dict(attn_cfg='se'), ValueError, 'attn_cfg'),
]


@pytest.mark.parametrize('name', sorted(BACKBONES))
@pytest.mark.parametrize('bad,error,word', INVALID,
                         ids=[w for _, _, w in INVALID])
def test_invalid_options_name_the_option(name, bad, error, word):
    with pytest.raises(error, match=word):
        build_backbone(_cfg(name, **bad))


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_dilated_output_stride_8(name):
    model = build_backbone(
        _cfg(
            name,
            strides=(1, 2, 1, 1),
            dilations=(1, 1, 2, 4),
            out_indices=ALL_STAGES)).eval()
    with torch.no_grad():
        outs = model(torch.rand(1, 3, 64, 64))
    assert [o.shape[-1] for o in outs] == [16, 8, 8, 8]
