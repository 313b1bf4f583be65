"""The fast forwards compute the reference maths: outputs and gradients.

Every block keeps a plain forward that reads like its paper; the fast one is
the default (see :mod:`mmsk.models.layers.config`). Each backbone of the
parametrized suite runs both on the same weights and input, in train mode
(batch statistics) and eval mode, and must agree in its outputs and in
every parameter's and the input's gradient: in fp32 in eval mode to 1e-5
(outputs) and 1e-4 (gradients) of the largest value where that is above 1,
and to 1e-7 in fp64 in train
mode (64x64 inputs), where BatchNorm over a 2-image batch of small maps
amplifies rounding beyond what fp32 can show. Under mixed precision (bf16
and fp16 autocast with a GPU's policy, emulated on the CPU) every backbone
trains, and its fast, reference and deploy forms agree to the precision's
rounding.
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


# --- SK / Res2Net outputs are recomputed in the backward, not kept ----------

RECOMPUTED = sorted(n for n in BACKBONES
                    if n.startswith('sk') or 'res2' in n)


def _recomputing_units(model):
    from mmsk.models.layers import Res2Conv, SKConv
    return [m for m in model.modules() if isinstance(m, (SKConv, Res2Conv))]


def _count_recipes(monkeypatch):
    """Count the saved slots that hold a recipe instead of a tensor."""
    from mmsk.models.layers import recompute
    packed = []
    pack = recompute._CheapOutputs.pack

    def counting_pack(self, tensor):
        saved = pack(self, tensor)
        packed.append(isinstance(saved, recompute._Recipe))
        return saved

    monkeypatch.setattr(recompute._CheapOutputs, 'pack', counting_pack)
    return packed


@pytest.mark.parametrize('with_cp', [False, True])
@pytest.mark.parametrize('name', RECOMPUTED)
def test_unit_outputs_are_recomputed_with_identical_gradients(
        name, with_cp, monkeypatch):
    """Every SK unit's and Res2Net split conv's output is saved as a recipe
    (not as a tensor) by the layer after it, and the gradients are bit for
    bit those of a run that keeps it (an outer saved-tensor hook turns the
    recomputation off, as with_cp's checkpointing does)."""
    torch.manual_seed(0)
    model = build_backbone(
        _cfg(name, out_indices=_family(name).all_outputs, with_cp=with_cp))
    model.init_weights()
    randomize_bn(model)
    keep = copy.deepcopy(model)
    model.train(), keep.train()
    x = torch.randn(2, 3, 32, 32)
    packed = _count_recipes(monkeypatch)
    got = _run(model, x)
    recipes = sum(packed)
    if with_cp:
        assert recipes == 0  # checkpointing's own hooks take precedence
    else:
        # the conv after each unit keeps a recipe (an SE slot after it too)
        assert recipes >= len(_recomputing_units(model)) > 0
    packed.clear()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        want = _run(keep, x)
    assert not packed  # an outer hook turns it off
    for a, b in zip(got[0], want[0]):
        assert torch.equal(a, b)
    assert torch.equal(got[1], want[1])
    for key, grad in want[2].items():
        assert torch.equal(got[2][key], grad), key
    for (key, a), b in zip(model.state_dict().items(),
                           keep.state_dict().values()):
        assert torch.equal(a, b), key  # running statistics too


def test_no_recipe_in_eval_no_grad_or_reference_mode(monkeypatch):
    model = build_backbone(_cfg('sknet18-paper'))
    packed = _count_recipes(monkeypatch)
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    model(x)[0].sum().backward()  # eval: still recomputed when training
    assert sum(packed) > 0
    packed.clear()
    with torch.no_grad():
        model(x)
    from mmsk.models.layers import reference_forward
    with reference_forward():
        model(x)[0].sum().backward()
    assert not packed


def test_recomputable_keeps_a_tensor_changed_in_place():
    """A registered output modified in place before it is saved is kept as
    it is (the recipe would give the value before the change)."""
    from mmsk.models.layers.recompute import (recompute_cheap_outputs,
                                              recomputable)
    a = torch.randn(5, requires_grad=True)
    w = torch.randn(5, requires_grad=True)
    calls = []

    def make():
        calls.append(1)
        return a * 2

    with recompute_cheap_outputs():
        v = recomputable(a * 2, make)
        v.add_(1)
        loss = (v * w).sum()  # keeps v (after the change) for w's gradient
    loss.backward()
    torch.testing.assert_close(w.grad, (a * 2 + 1).detach())
    assert not calls
    w.grad = None
    with recompute_cheap_outputs():
        v = recomputable(a * 2, make)
        loss = (v * w).sum()
    loss.backward()
    assert calls == [1]
    torch.testing.assert_close(w.grad, (a * 2).detach())


@pytest.mark.parametrize('layout', ['nchw', 'channels_last'])
def test_spatial_mean_backward_is_a_broadcast_view_of_the_same_values(
        layout):
    """SE's squeeze and SK's pooling: the same forward and gradient values
    as ``x.mean((2, 3))``, but the gradient reaches the next op as a
    broadcast view, not a full-size map; plain ``mean`` in the reference
    forward and without gradients."""
    from mmsk.models.layers import reference_forward
    from mmsk.models.layers.attention import spatial_mean
    x = torch.randn(2, 8, 5, 7)
    if layout == 'channels_last':
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    g = torch.randn(2, 8, 1, 1)
    got = spatial_mean(x)
    want = x.mean((2, 3), keepdim=True)
    assert torch.equal(got, want)
    got_grad, = torch.autograd.grad(got, x, g)
    want_grad, = torch.autograd.grad(want, x, g)
    assert torch.equal(got_grad, want_grad)
    assert got_grad.stride()[2:] == (0, 0)
    assert 'SpatialMean' in type(got.grad_fn).__name__
    with reference_forward():
        assert 'MeanBackward' in type(spatial_mean(x).grad_fn).__name__
    with torch.no_grad():
        assert torch.equal(spatial_mean(x), want)


@pytest.mark.parametrize('source', ['nchw', 'channels_last', 'cl_chunk'])
def test_phase_view_gradient_keeps_the_input_layout(source):
    """PhaseConv2d's subsampled view: the gradient torch's slicing gives
    (bit for bit), but in the memory format of the input (torch's slicing
    backward writes NCHW), so that the sum with the other branch's gradient
    and the ReLU backward run on one layout; plain slicing in the reference
    forward and without gradients."""
    from mmsk.models.layers import reference_forward
    from mmsk.models.layers.phase_conv import phase_view
    cl = torch.channels_last
    base = torch.randn(2, 16, 9, 10)
    if source != 'nchw':
        base = base.contiguous(memory_format=cl)
    base.requires_grad_()
    x = base[:, 8:] if source == 'cl_chunk' else base
    got = phase_view(x, 2, 3)
    want = x[:, :, ::2, ::3]
    assert torch.equal(got, want)
    assert 'PhaseView' in type(got.grad_fn).__name__
    g = torch.randn_like(want)
    got_grad, = torch.autograd.grad(got, x, g)
    want_grad, = torch.autograd.grad(want, x, g)
    assert torch.equal(got_grad, want_grad)
    assert got_grad.is_contiguous(
        memory_format=torch.contiguous_format if source == 'nchw' else cl)
    if source != 'nchw':  # what torch's own slicing backward gives
        assert not want_grad.is_contiguous(memory_format=cl)
    with reference_forward():
        assert 'PhaseView' not in type(phase_view(x, 2, 3).grad_fn).__name__
    with torch.no_grad():
        assert phase_view(x, 2, 3).grad_fn is None


def _cl_model(name, mode, double=False):
    """A backbone of the suite with all its outputs, random norm statistics
    (no zero-init), in channels_last and in ``mode``."""
    torch.manual_seed(0)
    model = build_backbone(_cfg(name, out_indices=_family(name).all_outputs))
    model.init_weights()
    randomize_bn(model)
    if double:
        model = model.double()
    return getattr(model.to(memory_format=torch.channels_last), mode)()


def _nchw_maps(tensors):
    """Dense 4-D tensors in NCHW that are not also channels_last (a map with
    ``H = W = 1`` or ``C = 1`` is both)."""
    return [t for t in tensors
            if isinstance(t, torch.Tensor) and t.dim() == 4
            and t.is_contiguous()
            and not t.is_contiguous(memory_format=torch.channels_last)]


@pytest.mark.parametrize('mode', ['train', 'eval'])
@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_channels_last_step_touches_no_nchw_map(name, mode):
    """In channels_last, no op of a forward (and, in training, of the
    backward) of the fast path reads or writes an NCHW map: a mixed-layout
    op costs 5-10x the same op on one layout (e.g. torch's slicing backward
    writes NCHW; see PhaseConv2d). The gradient reaching the backbone's
    outputs is channels_last here, as from a channels_last head."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten
    cl = torch.channels_last
    model = _cl_model(name, mode)
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=cl)
    found = []

    class Audit(TorchDispatchMode):

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            maps = _nchw_maps(tree_flatten((args, kwargs, out))[0])
            if maps:
                found.append(f'{func}: {[tuple(t.shape) for t in maps]}')
            return out

    with torch.set_grad_enabled(mode == 'train'):
        outs = model(x)
        grads = [torch.randn_like(o) for o in outs]
        assert all(g.is_contiguous(memory_format=cl) for g in grads)
        with Audit():
            outs = model(x)
            if mode == 'train':
                torch.autograd.backward(outs, grads)
    assert not found, '\n'.join(found)


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_per_sample_gradients_with_torch_func(name):
    """``torch.func``'s transforms run only autograd functions written for
    them: inside ``vmap(grad(...))`` (per-sample gradients, frozen
    BatchNorm) the fast path runs plain ops, and each sample's gradient is
    the one autograd gives for that sample alone."""
    from torch.func import functional_call, grad, vmap
    cl = torch.channels_last
    model = _cl_model(name, 'eval')
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=cl)
    params = {k: p.detach() for k, p in model.named_parameters()}

    def loss(p, sample):
        outs = functional_call(model, p, (sample[None], ))
        return sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum()
                   for o in outs)

    per_sample = vmap(grad(loss), in_dims=(None, 0))(params, x)
    for i in range(len(x)):
        model.zero_grad()
        loss(dict(model.named_parameters()), x[i]).backward()
        for key, p in model.named_parameters():
            _assert_close(per_sample[key][i], p.grad, 1e-4, f'{i}: {key}')


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_forward_mode_ad_matches_the_reference(name):
    """Forward-mode AD (``torch.autograd.forward_ad``) runs through the fast
    path's autograd functions (their ``jvp``) and gives the tangents of the
    plain reference forward."""
    import torch.autograd.forward_ad as fwAD

    from mmsk.models.layers import reference_forward
    cl = torch.channels_last
    model = _cl_model(name, 'eval')
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=cl)
    tangent = torch.randn_like(x)

    def tangents():
        with fwAD.dual_level():
            outs = model(fwAD.make_dual(x, tangent))
            return [fwAD.unpack_dual(o).tangent for o in outs]

    got = tangents()
    with reference_forward():
        want = tangents()
    for i, (a, b) in enumerate(zip(got, want)):
        _assert_close(a, b, 1e-5, f'tangent {i}')


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_double_backward_matches_the_reference(name):
    """A gradient penalty (``autograd.grad(..., create_graph=True)`` of the
    input and the weights, then backward through those gradients) gives the
    reference forward's second derivatives: the fast path's autograd
    functions and its recomputed outputs are differentiable in their
    backward. fp64, train mode (where outputs are recomputed), within 1e-6
    of the largest parameter gradient (BatchNorm over two images leaves the
    second derivatives of some norm biases as pure rounding noise, in the
    reference as much as in the fast path)."""
    from mmsk.models.layers import reference_forward
    cl = torch.channels_last
    model = _cl_model(name, 'train', double=True)
    x = torch.randn(2, 3, 64, 64, dtype=torch.double)
    x = x.contiguous(memory_format=cl)

    def run(m):
        # the input's and the weights' gradients, as a penalty on both
        # (the weights' gradients read what the forward kept or recomputes)
        xx = x.clone().requires_grad_()
        params = list(m.parameters())
        g, *gp = torch.autograd.grad(
            sum(o.pow(2).sum() for o in m(xx)), [xx] + params,
            create_graph=True)
        m.zero_grad()
        (g.pow(2).sum() + sum(p.pow(2).sum() for p in gp)).backward()
        return g.detach(), {k: p.grad for k, p in m.named_parameters()}

    reference = copy.deepcopy(model)
    got = run(model)
    with reference_forward():
        want = run(reference)
    _assert_close(got[0], want[0], 1e-6, 'input gradient')
    scale = max(grad.abs().max().item() for grad in want[1].values())
    for key, grad in want[1].items():
        diff = (got[1][key] - grad).abs().max().item()
        assert diff <= 1e-6 * scale, f'{key}: {diff} > 1e-6 * {scale}'


# --- mixed precision with a GPU's autocast policy ----------------------------


def test_cuda_autocast_policy_emulation():
    """The helper below does what CUDA's autocast does to softmax, sum and
    group_norm, and nothing once it is left."""
    from conftest import cuda_autocast_policy
    x = torch.randn(2, 4, 3, 3)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        x = torch.nn.Conv2d(4, 4, 1)(x)  # bf16, as a conv hands it on
        assert torch.softmax(x, 1).dtype == torch.bfloat16
        with cuda_autocast_policy():
            assert torch.softmax(x, 1).dtype == torch.float32
            assert torch.nn.Softmax(dim=1)(x).dtype == torch.float32
            assert x.sum(1).dtype == torch.float32
            assert torch.nn.GroupNorm(2, 4)(x).dtype == torch.float32
        assert torch.softmax(x, 1).dtype == torch.bfloat16
        assert x.sum(1).dtype == torch.bfloat16


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_mixed_precision_with_the_gpu_autocast_policy(name, dtype):
    """AMP on a GPU runs the SK attention's softmax in fp32 while the
    branches are fp16 / bf16 (CPU autocast keeps the softmax in the lower
    precision, so CPU runs alone do not show it). Under that policy every
    backbone trains (forward and backward, fp32 gradients that are finite)
    on its fast path as on its reference path; in eval mode its fast,
    reference and deploy forms agree to the precision's rounding, and the
    fast path's gradients are as close to the fp32 gradients as the
    reference path's. (In train mode, BatchNorm over two images of small
    maps makes the gradients so ill-conditioned that the reference under
    AMP differs from its own fp32 gradients by more than 100%: the
    fast-vs-reference gradients are compared in fp64 there, in
    test_fast_forward_and_backward_match_reference.)"""
    from conftest import cuda_autocast_policy

    from mmsk.models.layers import reference_forward
    torch.manual_seed(0)
    model = build_backbone(_cfg(name, out_indices=_family(name).all_outputs))
    model.init_weights()
    randomize_bn(model)
    x = torch.randn(2, 3, 32, 32)

    def run(m, grads=False):
        xx = x.clone().requires_grad_(grads)
        with torch.autocast('cpu', dtype=dtype), cuda_autocast_policy():
            outs = m(xx)
        if grads:
            sum(o.float().pow(2).mean() for o in outs).backward()
        return [o.detach().float() for o in outs]

    train = copy.deepcopy(model).train()
    train_reference = copy.deepcopy(model).train()
    run(train, grads=True)
    with reference_forward():
        run(train_reference, grads=True)
    for (key, param), ref in zip(train.named_parameters(),
                                 train_reference.parameters()):
        assert param.grad is not None, key
        assert param.grad.dtype == torch.float32, key
        # fp16 without loss scaling overflows in some deep configs (BatchNorm
        # over two images), in the reference as much: finite where it is
        if dtype == torch.bfloat16 or torch.isfinite(ref.grad).all():
            assert torch.isfinite(param.grad).all(), key

    model.eval()
    fast = run(model)
    with reference_forward():
        reference = run(model)
    deployed = copy.deepcopy(model)
    deployed.switch_to_deploy()
    folded = run(deployed)
    # bf16 keeps ~3 significant digits, fp16 ~4, compounded over the depth
    tol = 0.05 if dtype == torch.bfloat16 else 0.01
    for i, (f, r, d) in enumerate(zip(fast, reference, folded)):
        for what, got in (('fast', f), ('deploy', d)):
            err = ((got - r).norm() / r.norm().clamp_min(1e-6)).item()
            assert err < tol, f'output {i}, {what}: relative error {err:.3g}'

    def eval_grads(amp: bool):
        m = copy.deepcopy(model)
        xx = x.clone().requires_grad_(True)
        with torch.autocast('cpu', dtype=dtype, enabled=amp), \
                cuda_autocast_policy():
            outs = m(xx)
        sum(o.float().pow(2).mean() for o in outs).backward()
        return torch.cat([xx.grad.flatten()] +
                         [p.grad.flatten() for p in m.parameters()])

    with reference_forward():
        exact = eval_grads(amp=False)
        reference_error = (eval_grads(amp=True) - exact).norm() / exact.norm()
    fast_error = (eval_grads(amp=True) - exact).norm() / exact.norm()
    assert fast_error <= 2 * reference_error + 1e-3, \
        (fast_error.item(), reference_error.item())
