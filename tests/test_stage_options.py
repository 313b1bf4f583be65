"""The stem, downsampling, attention-position and width options of the
shared stage builder (the options timm's SE / Res2Net variants need)."""
import pytest
import torch
from torch import nn

from conftest import build_backbone

SMALL = dict(type='SENet', depth=26, stem_channels=16, base_channels=8)


def _stem_widths(model):
    return [m.conv.out_channels for m in model.stem]


def test_tiered_deep_stem():
    model = build_backbone(
        dict(SMALL, deep_stem=True, deep_stem_channels=(6, 8)))
    assert _stem_widths(model) == [6, 8, 16]
    default = build_backbone(dict(SMALL, deep_stem=True))
    assert _stem_widths(default) == [8, 8, 16]


def test_anti_aliased_downsampling():
    model = build_backbone(
        dict(SMALL, deep_stem=True, avg_down=True, aa_downsample=True,
             out_indices=(0, 1, 2, 3))).eval()
    assert isinstance(model.maxpool, nn.AvgPool2d)
    first = model.layer2[0]
    # the stride moves from the 3x3 to a 2x2 average pool after it
    assert first.conv2.conv.stride == (1, 1)
    assert isinstance(first.aa, nn.AvgPool2d) and first.aa.kernel_size == 2
    assert isinstance(model.layer2[1].aa, nn.Identity)
    with torch.no_grad():
        outs = model(torch.rand(1, 3, 64, 64))
    assert [o.shape[-1] for o in outs] == [16, 8, 4, 2]


@pytest.mark.parametrize('avg_down', [False, True])
def test_anti_aliased_downsampling_takes_any_size(avg_down):
    """The pool after the stride-1 conv rounds up, as the shortcut does
    (timm's floor-mode pool fails on sides the strides do not divide, e.g.
    72: 4 against 5 at the last stage); where they divide, it is the same
    pool (timm parity: test_converters' *aa* models)."""
    cfg = dict(SMALL, avg_down=avg_down, out_indices=(0, 1, 2, 3))
    aa = build_backbone(dict(cfg, aa_downsample=True)).eval()
    plain = build_backbone(cfg).eval()
    for side in (72, 45, 37, 64):
        x = torch.rand(1, 3, side, side)
        with torch.no_grad():
            outs = aa(x)
            expected = plain(x)
        # the stem's 2x2 pool floors where the max-pool rounds up
        if side % 4 == 0:
            assert [o.shape for o in outs] == [o.shape for o in expected]
        sides = [o.shape[-1] for o in outs]
        assert sides == [-(-sides[0] // 2**i) for i in range(4)], (side,
                                                                   sides)


def test_attention_after_the_spatial_conv():
    model = build_backbone(dict(SMALL, attn_position='mid'))
    block = model.layer2[0]
    assert block.attn is None
    assert block.mid_attn.in_channels == block.mid_channels == 16
    last = build_backbone(SMALL).layer2[0]
    assert last.mid_attn is None and last.attn.in_channels == 64


def test_fixed_group_width():
    model = build_backbone(dict(SMALL, channels_per_group=4))
    assert [getattr(model, f'layer{i}')[0].conv2.conv.groups
            for i in range(1, 5)] == [2, 4, 8, 16]


def test_stem_without_pool_strides_its_last_conv():
    model = build_backbone(
        dict(SMALL, deep_stem=True, stem_pool='none')).eval()
    assert isinstance(model.maxpool, nn.Identity)
    assert model.stem[2].conv.stride == (2, 2)
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))[-1]
    assert out.shape[-1] == 2


def test_stage_channels_and_final_conv():
    model = build_backbone(
        dict(SMALL, stage_channels=(32, 64, 96, 96), final_conv_channels=80,
             out_indices=(0, 1, 2, 3), frozen_stages=4)).eval()
    assert model.out_channels == (32, 64, 96, 80)
    assert model.feat_dim == 80
    assert model.layer4[0].in_channels == 96
    # the final conv belongs to the last stage, so frozen with it
    assert not any(p.requires_grad for p in model.layer4[-1].parameters())
    with torch.no_grad():
        outs = model(torch.rand(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [32, 64, 96, 80]


@pytest.mark.parametrize('options, option', [
    (dict(deep_stem_channels=(8, 8)), 'deep_stem_channels'),
    (dict(deep_stem=True, deep_stem_channels=(8, )), 'deep_stem_channels'),
    (dict(deep_stem=True, deep_stem_channels=(8, 0)), 'deep_stem_channels'),
    (dict(aa_downsample=1), 'aa_downsample'),
    (dict(aa_downsample=True, cifar_stem=True), 'aa_downsample'),
    (dict(aa_downsample=True, style='caffe'), 'aa_downsample'),
    (dict(attn_position='first'), 'attn_position'),
    (dict(type='SENet', depth=18, attn_position='mid'), 'attn_position'),
    (dict(channels_per_group=0), 'channels_per_group'),
    (dict(channels_per_group=3), 'channels_per_group'),
    (dict(channels_per_group=4, groups=2), 'channels_per_group'),
    (dict(stem_pool='avg'), 'stem_pool'),
    (dict(stem_pool='none'), 'stem_pool'),
    (dict(stage_channels=(32, 64)), 'stage_channels'),
    (dict(stage_channels=(32, 64, 96, 0)), 'stage_channels'),
    (dict(stage_channels=(32, 64, 96, 90)), 'stage_channels'),
    (dict(final_conv_channels=-1), 'final_conv_channels'),
])
def test_invalid_options_name_themselves(options, option):
    with pytest.raises(ValueError, match=option):
        build_backbone(dict(SMALL, **options))
