"""The fast forwards compute the reference maths: outputs and gradients.

Every block keeps a plain forward that reads like its paper; the fast one is
the default (see :mod:`mmsk.models.layers.config`). Each backbone of the
parametrized suite runs both on the same weights and input, in train mode
(batch statistics) and eval mode, and must agree in its outputs and in
every parameter's and the input's gradient: in fp32 in eval mode to 1e-5
(outputs) and 1e-4 (gradients) of the largest value where that is above 1,
and to 1e-7 in fp64 in train
mode (64x64 inputs), where BatchNorm over a 2-image batch of small maps
amplifies rounding beyond what fp32 can show.
"""
import copy

import pytest
import torch

from conftest import build_backbone, randomize_bn
from test_backbones import BACKBONES, _cfg, _family


def _assert_close(got, want, tol, what):
    """Max abs difference within ``tol`` times the largest value (at least
    1): outputs are unit-scale, gradients summed over a batch are not."""
    scale = max(1.0, want.abs().max().item())
    diff = (got - want).abs().max().item()
    assert diff <= tol * scale, f'{what}: {diff} > {tol} * {scale}'



def _run(model, x):
    x = x.clone().requires_grad_(True)
    outs = model(x)
    loss = sum((o * torch.linspace(-1, 1, o.numel()).to(o).view_as(o)).sum()
               for o in outs)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return [o.detach() for o in outs], x.grad, grads


@pytest.mark.parametrize('mode', ['train', 'eval'])
@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_fast_forward_and_backward_match_reference(name, mode):
    from mmsk.models.layers import fast_path_enabled, reference_forward
    torch.manual_seed(0)
    fast = build_backbone(_cfg(name, out_indices=_family(name).all_outputs))
    fast.init_weights()
    randomize_bn(fast)  # also undoes zero-init: every path contributes
    x = torch.randn(2, 3, 32, 32)
    tol = 1e-5
    if mode == 'train':
        # 64x64: the last stage's BatchNorm sees 2x2 maps, not a degenerate
        # batch of two 1x1 values whose variance is nearly zero
        x = torch.randn(2, 3, 64, 64)
        fast, x, tol = fast.double(), x.double(), 1e-7
    reference = copy.deepcopy(fast)
    getattr(fast, mode)(), getattr(reference, mode)()
    assert fast_path_enabled()
    got = _run(fast, x)
    with reference_forward():
        assert not fast_path_enabled()
        want = _run(reference, x)
    assert fast_path_enabled()
    for i, (a, b) in enumerate(zip(got[0], want[0])):
        _assert_close(a, b, tol, f'output {i}')
    # gradients: sums over the batch and the map (fp32 -> 1e-4)
    tol = 1e-4 if mode == 'eval' else tol
    _assert_close(got[1], want[1], tol, 'input gradient')
    for key, grad in want[2].items():
        _assert_close(got[2][key], grad, tol, key)


@pytest.mark.parametrize('branches', [2, 3])
@pytest.mark.parametrize('split_input', [False, True])
def test_sk_fast_select_is_the_softmax_weighted_sum(branches, split_input):
    from mmsk.models.layers import SKConv, attention_weights
    sk = SKConv(
        48, 24, groups=4, split_input=split_input,
        branches=[dict(dilation=d + 1) for d in range(branches)]).eval()
    randomize_bn(sk)
    x = torch.randn(2, 48, 8, 8)
    feats = sk.branch_outputs(x)
    fused = sum(feats)
    weights = attention_weights(sk.attn(fused), branches)
    assert weights.shape == (2, branches, 24)
    torch.testing.assert_close(weights.sum(1), torch.ones(2, 24))
    want = sum(f * w[..., None, None]
               for f, w in zip(feats, weights.unbind(1)))
    torch.testing.assert_close(sk(x), want, atol=1e-6, rtol=1e-5)


def test_fast_path_switch_validates():
    from mmsk.models.layers import set_fast_path
    with pytest.raises(ValueError, match='bool'):
        set_fast_path('no')


def test_sk_fast_path_keeps_channels_last():
    from mmsk.models.layers import SKConv
    sk = SKConv(32, 32, groups=4).eval().to(memory_format=torch.channels_last)
    x = torch.randn(2, 32, 8, 8).to(memory_format=torch.channels_last)
    with torch.no_grad():
        out = sk(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
