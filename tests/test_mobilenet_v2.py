"""Focused tests of the inverted-residual block and network (the shared
backbone contract is checked by tests/test_backbones.py)."""
import pytest
import torch

from conftest import build_backbone

TINY = dict(type='InvertedResidualNet', widen_factor=0.25, head_channels=64)
# output stride 8 for the MobileNetV2 table
OS8 = dict(strides=(1, 2, 2, 1, 1, 1, 1), dilations=(1, 1, 1, 2, 2, 4, 4))


def _blocks(model):
    return [
        b for name in model.stage_names if name.startswith('layer')
        for b in getattr(model, name)
    ]


def test_default_table_matches_torchvision_block_by_block():
    import torchvision
    ref = torchvision.models.mobilenet_v2()
    model = build_backbone(dict(type='InvertedResidualNet'))
    ref_blocks = list(ref.features)[1:-1]
    blocks = _blocks(model)
    assert len(blocks) == len(ref_blocks)
    for ours, theirs in zip(blocks, ref_blocks):
        assert ours.stride == theirs.stride
        assert ours.use_residual == theirs.use_res_connect
        assert ours.out_channels == theirs.out_channels
        assert (ours.expand is None) == (len(theirs.conv) == 3)
    assert model.out_channels[-1] == ref.last_channel
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in ref.features.parameters())


def test_skip_only_at_stride_1_and_same_channels():
    from mmsk.models import InvertedResidualBlock
    x = torch.rand(1, 16, 8, 8)
    same = InvertedResidualBlock(16, 16, expand_ratio=2)
    wider = InvertedResidualBlock(16, 24, expand_ratio=2)
    strided = InvertedResidualBlock(16, 16, expand_ratio=2, stride=2)
    assert same.use_residual
    assert not wider.use_residual and not strided.use_residual
    # with a zero projection the block is the identity iff it has the skip
    for block in (same, wider, strided):
        torch.nn.init.zeros_(block.project.bn.weight)
        torch.nn.init.zeros_(block.project.bn.bias)
        block.eval()
    with torch.no_grad():
        torch.testing.assert_close(same(x), x)
        assert not wider(x).any() and not strided(x).any()
    assert strided(x).shape == (1, 16, 4, 4)
    assert same.expand is not None and same.hidden_channels == 32
    assert InvertedResidualBlock(16, 16, expand_ratio=1).expand is None


def test_custom_table_and_its_errors():
    arch = [[1, 8, 1, 1], [4, 16, 2, 2], [4, 24, 1, 2]]
    model = build_backbone(
        dict(type='InvertedResidualNet', arch=arch, head_channels=32,
             out_indices=(0, 1, 2, 3))).eval()
    with torch.no_grad():
        outs = model(torch.rand(1, 3, 32, 32))
    assert [tuple(o.shape[1:]) for o in outs] == [(8, 16, 16), (16, 8, 8),
                                                  (24, 4, 4), (32, 4, 4)]
    assert [len(getattr(model, f'layer{i}')) for i in (1, 2, 3)] == [1, 2, 1]
    bad = [[1, 8, 1, 1], [4, 16, 2, 2], [4, 24, 1, 0]]
    with pytest.raises(ValueError, match=r'arch row 2 .*stride s'):
        build_backbone(dict(type='InvertedResidualNet', arch=bad))
    with pytest.raises(ValueError, match=r'arch row 1 .*repeats n'):
        build_backbone(
            dict(type='InvertedResidualNet', arch=[[1, 8, 1, 1],
                                                   [4, 16, 1.5, 2]]))


def test_depth_multiplier_and_fixed_stem_head():
    model = build_backbone(
        dict(TINY, depth_multiplier=1.4, fix_stem_head=True,
             stem_channels=32))
    # ceil(n * 1.4) except the first and last rows
    assert [len(getattr(model, f'layer{i}')) for i in range(1, 8)] == \
        [1, 3, 5, 6, 5, 5, 1]
    assert model.conv1.conv.out_channels == 32
    assert model.conv2.conv.out_channels == 64
    widened = build_backbone(dict(TINY, widen_factor=2.0))
    assert widened.conv1.conv.out_channels == 64
    assert widened.conv2.conv.out_channels == 128


def test_attention_slot_se_after_depthwise_and_sk_in_its_place():
    from mmsk.models.layers import SEAttention, SKConv
    se = build_backbone(
        dict(TINY, attn_cfg=dict(type='SEAttention', reduction=4)))
    block = se.layer2[0]
    assert isinstance(block.attn, SEAttention)
    assert block.attn.in_channels == block.hidden_channels
    order = []
    for name in ('expand', 'depthwise', 'attn', 'project'):
        getattr(block, name).register_forward_hook(
            lambda *a, name=name: order.append(name))
    se.eval()
    se(torch.rand(1, 3, 32, 32))
    assert order == ['expand', 'depthwise', 'attn', 'project']

    sk = build_backbone(dict(TINY, attn_cfg=dict(type='SKConv'), **OS8))
    for block in _blocks(sk):
        assert isinstance(block.depthwise, SKConv) and block.attn is None
        for path in block.depthwise.paths:
            assert path.conv.groups == block.hidden_channels
            assert path.conv.stride == (block.stride, block.stride)
    # the row's dilation multiplies the SK branches' own (1 and 2)
    assert [p.conv.dilation[0] for p in sk.layer6[0].depthwise.paths] == \
        [4, 8]


def test_with_cp_is_non_reentrant(monkeypatch):
    import torch.utils.checkpoint as cp
    calls = []
    real = cp.checkpoint

    def spy(fn, *args, **kwargs):
        calls.append(kwargs.get('use_reentrant'))
        return real(fn, *args, **kwargs)

    # mmsk.models.layers.recompute.checkpoint_module calls it
    monkeypatch.setattr(cp, 'checkpoint', spy)
    model = build_backbone(dict(TINY, with_cp=True)).train()
    model(torch.rand(2, 3, 32, 32, requires_grad=True))[0].sum().backward()
    assert len(calls) == len(_blocks(model))
    assert set(calls) == {False}


def test_block_dilations_of_both_modes():
    mmseg = build_backbone(dict(TINY, dilation_mode='mmseg', **OS8))
    timm = build_backbone(dict(TINY, dilation_mode='timm', **OS8))

    def dilations(model):
        return [[b.dilation for b in getattr(model, f'layer{i}')]
                for i in range(4, 8)]

    # mmseg: the row's dilation on its first block only
    assert dilations(mmseg) == [[2, 1, 1, 1], [2, 1, 1], [4, 1, 1], [4]]
    # timm: the first block keeps the previous row's dilation
    assert dilations(timm) == [[1, 2, 2, 2], [2, 2, 2], [2, 4, 4], [4]]


def _field_extent(model, size=192):
    """Rows of the input that reach the centre of the last output."""
    model.init_weights()
    model.eval()
    x = torch.rand(1, 3, size, size, requires_grad=True)
    out = model(x)[-1]
    centre = out.shape[-1] // 2
    out[0, :, centre, centre].sum().backward()
    rows = (x.grad[0].abs().sum((0, 2)) > 0).nonzero().flatten()
    return out.shape[-1], int(rows.max() - rows.min() + 1)


def test_output_stride_8_keeps_resolution_and_widens_the_field():
    # LeakyReLU: no dead units, so the gradient support is the whole field
    cfg = dict(TINY, out_indices=(3, ), act_cfg=dict(type='LeakyReLU'))
    plain = build_backbone(dict(cfg, strides=OS8['strides']))
    mmseg = build_backbone(dict(cfg, dilation_mode='mmseg', **OS8))
    timm = build_backbone(dict(cfg, dilation_mode='timm', **OS8))
    strided = build_backbone(cfg)
    size_plain, field_plain = _field_extent(plain)
    size_mmseg, field_mmseg = _field_extent(mmseg)
    size_timm, field_timm = _field_extent(timm)
    size_strided, field_strided = _field_extent(strided)
    # output stride 8: 1/8 of 192 instead of 1/16
    assert size_plain == size_mmseg == size_timm == 192 // 8
    assert size_strided == 192 // 16
    # dilation makes up for the removed stride: pixels that the undilated
    # stride-8 network never sees reach the centre with dilation; timm's
    # mode gives back exactly the field of the stride-16 network
    assert field_plain < field_mmseg < field_timm
    assert field_timm == field_strided


@pytest.mark.parametrize('scope', ['mmpretrain', 'mmseg'])
def test_pretrained_mmpretrain_and_mmseg_checkpoints_load_unchanged(
        scope, tmp_path):
    import importlib

    from mmengine.registry import init_default_scope

    from conftest import randomize_bn
    init_default_scope(scope)
    registry = importlib.import_module(f'{scope}.registry').MODELS
    torch.manual_seed(0)
    ref = registry.build(
        dict(type='MobileNetV2', widen_factor=0.5, out_indices=(1, 2, 4, 6)))
    ref.init_weights()
    randomize_bn(ref).eval()
    ckpt = tmp_path / 'classifier.pth'
    torch.save(
        dict(state_dict={'backbone.' + k: v
                         for k, v in ref.state_dict().items()}), ckpt)
    model = build_backbone(
        dict(
            type='mmsk.InvertedResidualNet',
            widen_factor=0.5,
            out_indices=(1, 2, 4, 6),
            init_cfg=dict(
                type='Pretrained', checkpoint=str(ckpt),
                prefix='backbone.')))
    model.init_weights()
    model.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for expected, got in zip(ref(x), model(x)):
            torch.testing.assert_close(got, expected)
    # and the strict torch loader accepts the same keys (mmpretrain builds
    # its final conv even when no output uses it; mmsk does not)
    model.load_state_dict({
        k: v
        for k, v in ref.state_dict().items() if not k.startswith('conv2.')
    })


def test_mismatched_pretrained_checkpoint_names_the_keys(tmp_path):
    from mmsk.models.backbones.pretrained import PretrainedMismatchError
    source = build_backbone(
        dict(type='InvertedResidualNet', widen_factor=0.5, out_indices=(6, )))
    ckpt = tmp_path / 'narrow.pth'
    torch.save(
        dict(state_dict={'backbone.' + k: v
                         for k, v in source.state_dict().items()}), ckpt)
    wider = build_backbone(
        dict(
            type='InvertedResidualNet',
            widen_factor=1.0,
            out_indices=(6, ),
            init_cfg=dict(
                type='Pretrained', checkpoint=str(ckpt),
                prefix='backbone.')))
    with pytest.raises(PretrainedMismatchError,
                       match=r'keys with another shape: conv1\.conv\.weight'):
        wider.init_weights()
    # a checkpoint of the same architecture loads
    same = build_backbone(
        dict(
            type='InvertedResidualNet',
            widen_factor=0.5,
            out_indices=(6, ),
            init_cfg=dict(
                type='Pretrained', checkpoint=str(ckpt),
                prefix='backbone.')))
    same.init_weights()
    for key, value in source.state_dict().items():
        torch.testing.assert_close(same.state_dict()[key], value)


# mmpretrain's own MobileNetV2 backbone tests (tests/test_models/
# test_backbones/test_mobilenet_v2.py), pointed at InvertedResidualNet with
# 64x64 inputs instead of 224x224 (every size is divided by 3.5). The
# indices mean the same: 0..6 the rows, 7 the final 1x1 conv.
WIDTHS_1X = (16, 24, 32, 64, 96, 160, 320, 1280)
SIZES_64 = (32, 16, 8, 4, 4, 2, 2, 2)


def _check_outputs(feats, widths, sizes=SIZES_64):
    assert isinstance(feats, tuple) and len(feats) == len(widths)
    for feat, width, size in zip(feats, widths, sizes):
        assert feat.shape == (1, width, size, size)


def test_mmpretrain_suite_invalid_frozen_stages_and_out_indices():
    # mmpretrain allows frozen_stages up to 7; mmsk's 8 also freezes the
    # head conv, so 9 is the first invalid value
    with pytest.raises(ValueError, match='frozen_stages'):
        build_backbone(dict(type='InvertedResidualNet', frozen_stages=9))
    with pytest.raises(ValueError, match='out_indices'):
        build_backbone(dict(type='InvertedResidualNet', out_indices=[8]))
    # a stage that out_indices leaves unbuilt cannot be frozen
    with pytest.raises(ValueError, match=r'frozen_stages=4 freezes stages '
                       r'that out_indices=\(2,\) does not build .* 0\.\.3'):
        build_backbone(dict(type='InvertedResidualNet', out_indices=(2, ),
                            frozen_stages=4))
    build_backbone(dict(type='InvertedResidualNet', out_indices=(2, ),
                        frozen_stages=3))


def test_mmpretrain_suite_first_stage_frozen():
    from torch.nn.modules.batchnorm import _BatchNorm
    model = build_backbone(dict(type='InvertedResidualNet', frozen_stages=1))
    model.init_weights()
    model.train()
    assert not any(p.requires_grad for p in model.conv1.parameters())
    assert not any(p.requires_grad for p in model.layer1.parameters())
    assert not any(m.training for m in model.layer1.modules()
                   if isinstance(m, _BatchNorm))
    assert all(p.requires_grad for p in model.layer2.parameters())


def test_mmpretrain_suite_norm_eval():
    from torch.nn.modules.batchnorm import _BatchNorm
    model = build_backbone(dict(type='InvertedResidualNet', norm_eval=True))
    model.init_weights()
    model.train()
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert norms and not any(m.training for m in norms)


@pytest.mark.parametrize('options,widths', [
    (dict(widen_factor=1.0, out_indices=range(0, 8)), WIDTHS_1X),
    (dict(widen_factor=0.5, out_indices=range(0, 7)),
     (8, 16, 16, 32, 48, 80, 160)),
    (dict(widen_factor=2.0), (2560, )),
    (dict(widen_factor=1.0), (1280, )),
    (dict(widen_factor=1.0, act_cfg=dict(type='ReLU'),
          out_indices=range(0, 7)), WIDTHS_1X[:7]),
    (dict(widen_factor=1.0, norm_cfg=dict(type='GN', num_groups=2,
                                          requires_grad=True),
          out_indices=range(0, 7)), WIDTHS_1X[:7]),
    (dict(widen_factor=1.0, out_indices=(0, 2, 4)), (16, 32, 96)),
    (dict(widen_factor=1.0, with_cp=True, out_indices=range(0, 7)),
     WIDTHS_1X[:7]),
])
def test_mmpretrain_suite_forward(options, widths):
    from torch.nn import GroupNorm
    from torch.nn.modules.batchnorm import _BatchNorm
    model = build_backbone(dict(type='InvertedResidualNet', **options))
    model.init_weights()
    model.train()
    norm = GroupNorm if 'norm_cfg' in options else _BatchNorm
    norms = [m for m in model.modules()
             if isinstance(m, (GroupNorm, _BatchNorm))]
    assert norms and all(isinstance(m, norm) for m in norms)
    assert all(m.training for m in norms)
    if options.get('with_cp'):
        assert all(b.with_cp for b in _blocks(model))
    out_indices = options.get('out_indices', (7, ))
    sizes = [SIZES_64[i] for i in out_indices]
    _check_outputs(model(torch.randn(1, 3, 64, 64)), widths, sizes)
