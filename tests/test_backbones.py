"""One parametrized suite over every backbone mmsk registers.

Each entry is a small-width configuration of a registered backbone; the
suite checks the OpenMMLab backbone contract on all of them. A backbone
family (the ResNet-style stage builder, the inverted-residual network) is
described once by an adapter: how to list its blocks and its frozen modules,
its outputs' strides, its output-stride-8 settings and its invalid options.
``test_every_registered_backbone_is_covered`` fails when a backbone is added
without an entry and a family here.
"""
import copy

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from conftest import build_backbone


class ResNetFamily:
    """:class:`~mmsk.models.backbones.resnet.ResNetStages` backbones."""

    small = dict(stem_channels=8, base_channels=8)
    all_outputs = (0, 1, 2, 3)
    strides = (4, 8, 16, 32)
    # output stride 8, and the output sizes it gives at 64x64
    dilated = dict(strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4))
    dilated_sizes = [16, 8, 8, 8]
    zero_init = True
    invalid = [
        (dict(depth=7), KeyError, 'depth'),
        (dict(out_indices=(4, )), ValueError, 'out_indices'),
        (dict(frozen_stages=5), ValueError, 'frozen_stages'),
        (dict(dilations=(1, 1, 0, 1)), ValueError, 'dilations'),
        (dict(num_stages=5), ValueError, 'num_stages'),
        (dict(style='tf'), ValueError, 'style'),
        (dict(deep_stem=True, cifar_stem=True), ValueError, 'cifar_stem'),
    ]

    @staticmethod
    def blocks(model):
        return [b for name in model.res_layers for b in getattr(model, name)]

    @staticmethod
    def has_skip(block):
        return True

    @staticmethod
    def frozen_modules(model, frozen_stages):
        stem = [model.stem] if model.deep_stem else [model.conv1, model.norm1]
        return stem + [
            getattr(model, f'layer{i}') for i in range(1, frozen_stages + 1)
        ]


class InvertedResidualFamily:
    """:class:`~mmsk.models.backbones.mobilenet_v2.InvertedResidualNet`."""

    all_outputs = tuple(range(8))
    strides = (2, 4, 8, 16, 16, 32, 32, 32)
    dilated = dict(
        strides=(1, 2, 2, 1, 1, 1, 1), dilations=(1, 1, 1, 2, 2, 4, 4))
    dilated_sizes = [32, 16, 8, 8, 8, 8, 8, 8]
    zero_init = False
    invalid = [
        (dict(arch='v9'), KeyError, 'arch'),
        (dict(arch=[]), ValueError, 'arch'),
        (dict(arch=[[6, 16, 1]]), ValueError, 'arch row 0'),
        (dict(arch=[[1, 16, 1, 1], [6, 0, 2, 2]]), ValueError,
         r'arch row 1 .*channels c'),
        (dict(arch=[[1, 16, 1, 1], [-6, 24, 2, 2]]), ValueError,
         r'arch row 1 .*expand ratio t'),
        (dict(widen_factor=0), ValueError, 'widen_factor'),
        (dict(depth_multiplier=-1), ValueError, 'depth_multiplier'),
        (dict(stem_stride=0), ValueError, 'stem_stride'),
        (dict(head_channels=0), ValueError, 'head_channels'),
        (dict(out_indices=(8, )), ValueError, 'out_indices'),
        (dict(frozen_stages=9), ValueError, 'frozen_stages'),
        (dict(dilations=(1, 1, 1, 1, 1, 1, 0)), ValueError, 'dilations'),
        (dict(dilation_mode='deeplab'), ValueError, 'dilation_mode'),
        (dict(attn_cfg=dict(type='NoSuchAttention')), KeyError, 'attn_cfg'),
    ]

    @staticmethod
    def blocks(model):
        return [
            b for name in model.stage_names if name.startswith('layer')
            for b in getattr(model, name)
        ]

    @staticmethod
    def has_skip(block):
        return block.use_residual

    @staticmethod
    def frozen_modules(model, frozen_stages):
        names = model.stage_names[:frozen_stages + 1]
        return [getattr(model, name) for name in names]


FAMILIES = {
    'SKNet': ResNetFamily,
    'SENet': ResNetFamily,
    'MultiScaleResNet': ResNetFamily,
    'InvertedResidualNet': InvertedResidualFamily,
}

SMALL = ResNetFamily.small
TINY_IR = dict(type='InvertedResidualNet', widen_factor=0.25,
               head_channels=64)

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
    'mobilenet-v2-w0.25': dict(TINY_IR),
    'mobilenet-v2-110d-style': dict(
        TINY_IR, depth_multiplier=1.2, fix_stem_head=True, stem_channels=8),
    'se-mobilenet-v2': dict(
        TINY_IR, attn_cfg=dict(type='SEAttention', reduction=4),
        dilation_mode='timm'),
    'sk-mobilenet-v2': dict(
        TINY_IR, attn_cfg=dict(type='SKConv', min_channels=8)),
}


def _family(name):
    return FAMILIES[BACKBONES[name]['type']]


def _cfg(name, **overrides):
    cfg = copy.deepcopy(BACKBONES[name])
    cfg.update(overrides)
    return cfg


def test_every_registered_backbone_is_covered():
    import mmsk  # noqa: F401
    from mmpretrain.models.backbones.base_backbone import BaseBackbone
    from mmsk.registry import MODELS
    covered = {cfg['type'] for cfg in BACKBONES.values()}
    backbones = {
        name
        for name, cls in MODELS.module_dict.items()
        if isinstance(cls, type) and issubclass(cls, BaseBackbone)
    }
    assert 'InvertedResidualNet' in backbones and 'SKNet' in backbones
    assert backbones <= covered, f'no suite entry for {backbones - covered}'
    assert backbones <= set(FAMILIES), \
        f'no family adapter for {backbones - set(FAMILIES)}'


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_forward_shapes_and_channels(name):
    family = _family(name)
    model = build_backbone(_cfg(name, out_indices=family.all_outputs)).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        outs = model(x)
    assert isinstance(outs, tuple) and len(outs) == len(family.all_outputs)
    for out, channels, stride in zip(outs, model.out_channels,
                                     family.strides):
        assert out.shape == (2, channels, 32 // stride, 32 // stride)
    assert model.feat_dim == model.out_channels[-1]
    # negative indices count from the last output, as in a Python sequence
    last = build_backbone(_cfg(name, out_indices=-1)).eval()
    last.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(last(x)[0], outs[-1])


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_every_parameter_gets_a_gradient(name):
    model = build_backbone(_cfg(name, out_indices=_family(name).all_outputs))
    model.init_weights()
    model.train()
    outs = model(torch.rand(2, 3, 32, 32))
    sum(o.mean() for o in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f'no gradient for {missing[:5]}'


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_frozen_stages_and_norm_eval(name):
    family = _family(name)
    # frozen_stages alone: weights and norm statistics of the frozen part
    model = build_backbone(_cfg(name, frozen_stages=2)).train()
    frozen = family.frozen_modules(model, 2)
    for module in frozen:
        assert not any(p.requires_grad for p in module.parameters())
    norms = [
        m for module in frozen for m in module.modules()
        if isinstance(m, _BatchNorm)
    ]
    assert len(norms) > 2 and not any(m.training for m in norms)
    frozen_ids = {id(m) for module in frozen for m in module.modules()}
    assert all(p.requires_grad for p in model.layer3.parameters())
    assert any(m.training for m in model.layer3.modules()
               if isinstance(m, _BatchNorm))
    assert all(p.requires_grad for m in model.modules()
               if id(m) not in frozen_ids for p in m.parameters(False))
    # with norm_eval every norm stays in eval mode
    model = build_backbone(_cfg(name, frozen_stages=2, norm_eval=True))
    model.train()
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
        outs = model(x)
        (g, ) = torch.autograd.grad(sum(o.sum() for o in outs), x)
        grads.append((outs[0].detach(), g))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])
    # the recomputation in the backward does not update BatchNorm's running
    # statistics a second time (torch.utils.checkpoint alone does: the eval
    # model would depend on with_cp)
    after = checkpointed.state_dict()
    for key, value in plain.state_dict().items():
        assert torch.equal(value, after[key]), key
    # the backward recomputes with the forward the forward ran, wherever it
    # is called: reference forward, fast backward and the other way round
    # (bit for bit the plain model's gradient in that mode: the tiny random
    # models amplify fp32 rounding, so the two modes differ by more)
    from mmsk.models.layers import fast_path_set_to
    for forward_fast in (False, True):
        with fast_path_set_to(forward_fast):
            (want, ) = torch.autograd.grad(
                sum(o.sum() for o in plain(x)), x)
            outs = checkpointed(x)
        with fast_path_set_to(not forward_fast):
            (g, ) = torch.autograd.grad(sum(o.sum() for o in outs), x)
        assert torch.equal(g, want)


@pytest.mark.parametrize('name', sorted(
    n for n, cfg in BACKBONES.items() if cfg['type'] != 'InvertedResidualNet'))
def test_with_cp_checkpoints_the_stem(name):
    """The stem's maps are the largest a checkpointed step kept (half of
    SKNet-18's at 224): with ``with_cp`` its first conv runs again in the
    backward, unless the stem is frozen."""
    from mmsk.models.backbones.resnet import ResNetStages
    for frozen in (-1, 0):
        model = build_backbone(_cfg(name, with_cp=True,
                                    frozen_stages=frozen)).train()
        assert isinstance(model, ResNetStages)
        first = model.stem[0] if model.deep_stem else model.conv1
        calls = []
        first.register_forward_hook(lambda *args: calls.append(1))
        sum(o.sum() for o in model(torch.rand(2, 3, 32, 32))).backward()
        assert len(calls) == (2 if frozen < 0 else 1), (frozen, calls)
        # not under no_grad (inference) either
        calls.clear()
        with torch.no_grad():
            model(torch.rand(2, 3, 32, 32))
        assert len(calls) == 1


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_drop_path_runs_in_every_block_with_a_skip(name):
    from mmcv.cnn.bricks import DropPath
    family = _family(name)
    model = build_backbone(_cfg(name, drop_path_rate=0.3))
    blocks = family.blocks(model)
    # linear rule over the block index, applied where the block has a skip
    for i, b in enumerate(blocks):
        rate = 0.3 * i / (len(blocks) - 1) if family.has_skip(b) else 0.0
        if rate > 0:
            assert isinstance(b.drop_path, DropPath)
            assert b.drop_path.drop_prob == pytest.approx(rate, rel=1e-5)
        else:
            assert not isinstance(b.drop_path, DropPath)
    drop_paths = [m for m in model.modules() if isinstance(m, DropPath)]
    assert len(drop_paths) >= len(blocks) // 2
    calls = []
    for m in drop_paths:
        m.register_forward_hook(lambda *a: calls.append(1))
    model.train()
    model(torch.rand(2, 3, 32, 32))
    assert len(calls) == len(drop_paths)
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


@pytest.mark.parametrize(
    'name', sorted(n for n in BACKBONES if _family(n).zero_init))
def test_zero_init_residual(name):
    family = _family(name)
    model = build_backbone(_cfg(name))
    model.init_weights()
    blocks = family.blocks(model)
    assert all(torch.all(b.last_conv.norm.weight == 0) for b in blocks)
    # a second init_weights (BaseModule logs a warning and does nothing)
    # zeroed the trained last norms again
    for b in blocks:
        b.last_conv.norm.weight.data.fill_(0.5)
    model.init_weights()
    assert all(torch.all(b.last_conv.norm.weight == 0.5) for b in blocks)
    model = build_backbone(_cfg(name, zero_init_residual=False))
    model.init_weights()
    first = family.blocks(model)[0]
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
    assert not any(isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6))
                   for m in acts)
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert norms and all(m.eps == 1e-3 for m in norms)
    model.eval()
    model(torch.rand(1, 3, 32, 32))


# options every family checks; each family adds its own (``invalid``)
COMMON_INVALID = [
    (dict(out_indices=(99, )), ValueError, 'out_indices'),
    (dict(out_indices=()), ValueError, 'out_indices'),
    (dict(frozen_stages=99), ValueError, 'frozen_stages'),
    (dict(strides=(1, 2)), ValueError, 'strides'),
    (dict(drop_path_rate=1.5), ValueError, 'drop_path_rate'),
    (dict(norm_cfg='BN'), ValueError, 'norm_cfg'),
    (dict(act_cfg=dict(inplace=True)), ValueError, 'act_cfg'),
    (dict(in_channels=0), ValueError, 'in_channels'),
    (dict(attn_cfg='se'), ValueError, 'attn_cfg'),
    # a string is not a bool (it would be truthy), a float not an int
    (dict(norm_eval='no'), TypeError, 'norm_eval must be a bool'),
    (dict(with_cp='no'), TypeError, 'with_cp must be a bool'),
    (dict(frozen_stages='1'), TypeError, 'frozen_stages must be an int'),
    (dict(in_channels=3.0), TypeError, 'in_channels'),
    # outputs come back in the order asked for, or not at all
    (dict(out_indices=(1, 1)), ValueError, 'out_indices .*repeats'),
    (dict(out_indices=(3, 0)), ValueError, 'out_indices .*increasing order'),
    (dict(norm_cfg=dict(type='NoSuchNorm')), KeyError, 'NoSuchNorm'),
    (dict(dept=50), TypeError, "unknown option 'dept'"),
]
INVALID = [
    pytest.param(name, bad, error, word, id=f'{name}-{i}-{word}')
    for name in sorted(BACKBONES)
    for i, (bad, error, word) in enumerate(COMMON_INVALID +
                                           _family(name).invalid)
]


@pytest.mark.parametrize('name,bad,error,word', INVALID)
def test_invalid_options_name_the_option(name, bad, error, word):
    with pytest.raises(error, match=word):
        build_backbone(_cfg(name, **bad))


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_dilated_output_stride_8(name):
    family = _family(name)
    model = build_backbone(
        _cfg(name, out_indices=family.all_outputs, **family.dilated)).eval()
    with torch.no_grad():
        outs = model(torch.rand(1, 3, 64, 64))
    assert [o.shape[-1] for o in outs] == family.dilated_sizes


@pytest.mark.parametrize('attn', [None, dict(type='SEAttention')])
def test_block_drops_the_last_convs_input_before_its_norm(attn):
    """In inference the last conv's input (the widest map but one) is freed
    once the conv has read it, as in timm and mmpretrain; a ConvModule with
    hooks on it is still called as a whole (the hooks fire), with the same
    result."""
    import weakref

    from mmsk.models.backbones.resnet import Bottleneck, conv_module_steps
    block = Bottleneck(16, 16, attn_cfg=attn).eval()
    assert conv_module_steps(block.conv3) == [block.conv3.conv,
                                              block.conv3.norm]
    seen = {}
    block.conv2.register_forward_hook(
        lambda m, i, o: seen.update(mid=weakref.ref(o)))
    block.conv3.norm.register_forward_pre_hook(
        lambda m, i: seen.update(alive=seen['mid']() is not None))
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        stepwise = block(x)
    assert seen['alive'] is False
    calls = []
    handle = block.conv3.register_forward_hook(
        lambda m, i, o: calls.append(o.shape))
    assert conv_module_steps(block.conv3) == [block.conv3]
    with torch.no_grad():
        whole = block(x)
    handle.remove()
    assert calls == [torch.Size([2, 16, 8, 8])]
    assert seen['alive'] is True  # ConvModule.forward's caller held it
    torch.testing.assert_close(whole, stepwise, rtol=0, atol=0)
