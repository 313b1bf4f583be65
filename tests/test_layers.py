"""Focused tests of the attention core, the SK unit and the Res2Net split."""
import pytest
import torch

from conftest import randomize_bn


def _copy_by_order(src, dst):
    """Copy weights between two modules whose state dicts list the same
    tensors in the same order (names differ)."""
    s, d = src.state_dict(), dst.state_dict()
    assert len(s) == len(d), (list(s), list(d))
    dst.load_state_dict(
        {dk: sv
         for dk, sv in zip(d, s.values())}, strict=True)


def test_reduced_channels_rules():
    from mmsk.models.layers import reduced_channels
    # paper: d = max(C / r, L)
    assert reduced_channels(128, 16, None, 32) == 32
    assert reduced_channels(1024, 16, None, 32) == 64
    # pytorchinsight: d = C / 16
    assert reduced_channels(64, 16, None, 0) == 4
    # timm: rounded to a divisor
    assert reduced_channels(64, 8, 16) == 16
    with pytest.raises(ValueError, match='reduction'):
        reduced_channels(64, 0)


@pytest.mark.parametrize('split_input,rd_ratio,rd_divisor,stride,groups', [
    (True, 1 / 8, 16, 1, 1),
    (True, 1 / 16, 8, 2, 1),
    (False, 1 / 16, 32, 1, 8),
    (False, 1 / 16, 32, 2, 32),
])
def test_skconv_matches_timm_selective_kernel(split_input, rd_ratio,
                                              rd_divisor, stride, groups):
    from timm.layers import SelectiveKernel

    from mmsk.models.layers import SKConv
    ref = SelectiveKernel(
        64,
        64,
        stride=stride,
        groups=groups,
        rd_ratio=rd_ratio,
        rd_divisor=rd_divisor,
        split_input=split_input)
    ours = SKConv(
        64,
        64,
        stride=stride,
        groups=groups,
        branches=(dict(dilation=1), dict(dilation=2)),
        reduction=1 / rd_ratio,
        divisor=rd_divisor,
        min_channels=0,
        split_input=split_input)
    randomize_bn(ref)
    _copy_by_order(ref, ours)
    ref.eval(), ours.eval()
    x = torch.randn(2, 64, 16, 16)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)


def test_sk_select_is_a_softmax_over_branches_per_channel():
    from mmsk.models.layers import SKConv
    sk = SKConv(64, 32, branches=[dict(), dict(dilation=2),
                                  dict(kernel_size=5)], groups=4).eval()
    assert sk.num_paths == 3
    x = torch.randn(2, 64, 8, 8)
    feats = torch.stack([p(x) for p in sk.paths], 1)
    weights = sk.attn(feats.sum(1))
    assert weights.shape == (2, 3, 32, 1, 1)
    torch.testing.assert_close(weights.sum(1), torch.ones(2, 32, 1, 1))
    torch.testing.assert_close(sk(x), (feats * weights).sum(1))
    # receptive fields differ: dilation/kernel per branch
    assert [p.conv.dilation[0] for p in sk.paths] == [1, 2, 1]
    assert [p.conv.kernel_size[0] for p in sk.paths] == [3, 3, 5]


def test_sk_forms():
    from mmsk.models.layers import SKConv, sk_form
    paper = SKConv(128, 128, groups=32, **sk_form('paper'))
    assert [(p.conv.groups, p.conv.dilation[0]) for p in paper.paths] == \
        [(32, 1), (32, 2)]
    assert paper.attn.attn_channels == 32  # max(128 / 16, 32)
    pi = SKConv(64, 64, **sk_form('pytorchinsight'))
    assert [(p.conv.groups, p.conv.dilation[0]) for p in pi.paths] == \
        [(1, 1), (32, 1)]
    assert pi.attn.attn_channels == 4  # 64 / 16, no floor
    timm_form = SKConv(64, 64, **sk_form('timm'))
    assert all(p.conv.in_channels == 32 for p in timm_form.paths)
    with pytest.raises(ValueError, match='sk_form'):
        sk_form('dilated')


@pytest.mark.parametrize('kwargs,error,word', [
    (dict(branches=[dict()]), ValueError, 'at least 2'),
    (dict(branches=[dict(), dict(kernel=5)]), KeyError, 'kernel'),
    (dict(branches=[dict(), dict(kernel_size=4)]), ValueError, 'kernel_size'),
    (dict(branches=[dict(), dict(dilation=0)]), ValueError, 'dilation'),
    (dict(branches=[dict(), dict(groups=3)]), ValueError, 'groups'),
    (dict(split_input=True, in_channels=63), ValueError, 'split_input'),
    (dict(reduction=0), ValueError, 'reduction'),
    (dict(stride=0), ValueError, 'stride'),
])
def test_skconv_invalid_options(kwargs, error, word):
    from mmsk.models.layers import SKConv
    args = dict(in_channels=64, out_channels=64)
    args.update(kwargs)
    with pytest.raises(error, match=word):
        SKConv(**args)


def test_se_matches_timm_and_mmpretrain():
    from mmpretrain.models.utils import SELayer
    from timm.layers import SEModule

    from mmsk.models.layers import SEAttention
    x = torch.randn(2, 256, 7, 7)
    ours = SEAttention(256)
    timm_se = SEModule(256, rd_ratio=1 / 16)
    _copy_by_order(timm_se, ours)
    torch.testing.assert_close(ours(x), timm_se(x))
    mmpre_se = SELayer(256, ratio=16)
    _copy_by_order(mmpre_se, ours)
    torch.testing.assert_close(ours(x), mmpre_se(x))
    with pytest.raises(ValueError, match='one path'):
        SEAttention(64, num_paths=2)


def test_channel_attention_gate_cfg():
    from mmsk.models.layers import ChannelAttention
    attn = ChannelAttention(32, gate_cfg=dict(type='HSigmoid'))
    w = attn(torch.randn(1, 32, 4, 4))
    assert w.shape == (1, 32, 1, 1) and (w >= 0).all() and (w <= 1).all()
    with pytest.raises(ValueError, match='in_channels'):
        ChannelAttention(0)


def test_res2conv_hierarchy_and_first_block():
    from mmsk.models.layers import Res2Conv
    m = Res2Conv(32, scales=4).eval()
    x = torch.randn(1, 32, 8, 8)
    out = m(x)
    # the last split passes through unchanged in a non-first block
    torch.testing.assert_close(out[:, 24:], x[:, 24:])
    first = Res2Conv(32, scales=4, stride=2, stage_first=True).eval()
    assert first(x).shape == (1, 32, 4, 4)
    with pytest.raises(ValueError, match='scales'):
        Res2Conv(32, scales=1)
    with pytest.raises(ValueError, match='divisible'):
        Res2Conv(30, scales=4)
    # a strided conv inside the hierarchy: it failed in the forward, on
    # the sum of two splits of different sizes
    with pytest.raises(ValueError, match='stride=2 needs stage_first=True'):
        Res2Conv(16, stride=2)


def test_sk_attention_batchnorm_needs_two_images_in_train_mode():
    from mmsk.models.layers import SKConv
    x = torch.randn(1, 32, 8, 8)
    sk = SKConv(32, 32, groups=4).train()
    with pytest.raises(ValueError, match='batch of 2 or more.*attn_norm_cfg'):
        sk(x)
    sk.eval()(x)  # running statistics: one image is fine
    # attention norms that train on one image
    for attn_norm_cfg in (None, dict(type='GN', num_groups=4)):
        sk = SKConv(32, 32, groups=4, attn_norm_cfg=attn_norm_cfg).train()
        sk(x).sum().backward()
        assert sk.attn.reduce.bias is not None or attn_norm_cfg is not None
    with pytest.raises(ValueError, match='attn_norm_cfg'):
        SKConv(32, 32, attn_norm_cfg='GN')


def test_sknet_trains_with_batch_one_without_attention_batchnorm():
    from conftest import build_backbone
    model = build_backbone(
        dict(type='SKNet', depth=18, stem_channels=8, base_channels=8,
             sk_cfg=dict(attn_norm_cfg=None))).train()
    model(torch.randn(1, 3, 64, 64))[0].sum().backward()
    default = build_backbone(
        dict(type='SKNet', depth=18, stem_channels=8, base_channels=8))
    with pytest.raises(ValueError, match='ChannelAttention.*batch of 2'):
        default.train()(torch.randn(1, 3, 64, 64))


# --- PhaseConv2d: stride == dilation runs on the grid it reads --------------

@pytest.mark.parametrize('stride,kernel,groups,size', [
    (2, 3, 1, 16), (2, 3, 4, 15), (3, 3, 2, 17), (2, 5, 1, 10),
    ((2, 3), 3, 1, 13)])
@pytest.mark.parametrize('layout', ['nchw', 'channels_last'])
def test_phase_conv_equals_the_strided_dilated_conv(stride, kernel, groups,
                                                    size, layout):
    from torch import nn

    from mmsk.models.layers import reference_forward
    from mmsk.models.layers.phase_conv import PhaseConv2d, reads_one_phase
    torch.manual_seed(0)
    s = (stride, stride) if isinstance(stride, int) else stride
    padding = tuple(d * (kernel - 1) // 2 for d in s)
    conv = PhaseConv2d(8, 12, kernel, stride=s, padding=padding, dilation=s,
                       groups=groups, bias=True)
    plain = nn.Conv2d(8, 12, kernel, stride=s, padding=padding, dilation=s,
                      groups=groups, bias=True)
    plain.load_state_dict(conv.state_dict())
    assert reads_one_phase(conv)
    x = torch.randn(2, 8, size, size + 1)
    if layout == 'channels_last':
        x = x.contiguous(memory_format=torch.channels_last)
        conv, plain = (m.to(memory_format=torch.channels_last)
                       for m in (conv, plain))
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    got, want = conv(x1), plain(x2)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    if layout == 'channels_last':
        assert got.is_contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(want)
    got.backward(g), want.backward(g)
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(conv.weight.grad, plain.weight.grad,
                               atol=1e-4, rtol=1e-5)
    with reference_forward():  # the conv as declared
        torch.testing.assert_close(conv(x), plain(x), atol=0, rtol=0)


@pytest.mark.parametrize('kwargs', [
    dict(stride=2, padding=1, dilation=1),  # not dilated
    dict(stride=1, padding=2, dilation=2),  # not strided
    dict(stride=2, padding=1, dilation=2),  # other padding
    dict(stride=2, padding=2, dilation=2, padding_mode='reflect'),
])
def test_phase_conv_other_convs_run_as_declared(kwargs):
    from torch import nn

    from mmsk.models.layers.phase_conv import PhaseConv2d, reads_one_phase
    conv = PhaseConv2d(4, 4, 3, **kwargs)
    assert not reads_one_phase(conv)
    x = torch.randn(1, 4, 9, 9)
    assert torch.equal(conv(x), nn.Conv2d.forward(conv, x))


def test_sk_strided_dilated_branch_is_a_phase_conv_with_its_declared_field():
    """Only the stride-2 units' dilation-2 branches run on the subsampled
    grid; the module keeps stride 2 and dilation 2 (what the visualization
    tools read), and a user conv_cfg is kept as it is."""
    from torch import nn

    from mmsk.models.layers import SKConv
    from mmsk.models.layers.phase_conv import PhaseConv2d
    strided = SKConv(16, 16, stride=2, groups=4)
    assert [type(p.conv) for p in strided.paths] == [nn.Conv2d, PhaseConv2d]
    assert strided.paths[1].conv.stride == (2, 2)
    assert strided.paths[1].conv.dilation == (2, 2)
    assert all(type(p.conv) is nn.Conv2d
               for p in SKConv(16, 16, stride=1, groups=4).paths)
    custom = SKConv(16, 16, stride=2, conv_cfg=dict(type='Conv2d'))
    assert all(type(p.conv) is nn.Conv2d for p in custom.paths)
