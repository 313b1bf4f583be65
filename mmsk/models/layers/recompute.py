"""Recompute cheap outputs in the backward instead of keeping them.

A layer that ends in one cheap elementwise op (the SK unit's select step,
``lerp(u2, u1, w1)``) hands a full-size tensor to the next conv, and that
conv keeps it for its weight gradient, although the op's own inputs are kept
anyway (the ``lerp`` and the ReLUs before it keep ``u1``, ``u2`` and ``w1``
for their own backward). :func:`recompute_cheap_outputs` wraps a block's
forward; inside it, :func:`recomputable` registers such an output with the
function that makes it, and every node of the autograd graph that would keep
the output keeps the recipe instead (``torch.autograd.graph``'s saved-tensor
hooks), which is rerun when the backward needs it. The same op on the same
inputs gives the same bits, so gradients are unchanged; the tensor is no
longer held from the forward to the backward (about 6% of SKNet-50's peak
training memory).

Nothing is registered, and no hook is installed, outside training with
gradients, or under tracers and compilers (``torch.compile`` plans its own
recomputation).
"""
import threading
import weakref
from contextlib import contextmanager
from typing import Callable, List

import torch

from .config import fast_eager_backward, fast_path_enabled, fast_path_set_to

_LOCAL = threading.local()


def _scopes() -> List['_CheapOutputs']:
    if not hasattr(_LOCAL, 'scopes'):
        _LOCAL.scopes = []
    return _LOCAL.scopes


def _can_hook() -> bool:
    """Training with gradients, eagerly, and no saved-tensor hooks of
    someone else's (checkpointing, offloading) that ours would shadow."""
    if not fast_eager_backward():
        return False
    autograd = torch._C._autograd
    top_hooks = getattr(autograd, '_top_saved_tensors_default_hooks', None)
    enabled = getattr(autograd, '_saved_tensors_hooks_is_enabled', None)
    if top_hooks is None or enabled is None:
        return False  # this torch cannot tell whether ours would shadow
    return enabled() and top_hooks(False) is None


class _Recipe:
    """What a saved slot holds instead of the tensor."""

    __slots__ = ('make', 'version')

    def __init__(self, make: Callable[[], torch.Tensor], version: int):
        self.make = make
        self.version = version


class _CheapOutputs:
    """The outputs registered in one block's forward, and the hooks."""

    def __init__(self):
        self.outputs = []  # (weakref to the output, its recipe)

    def register(self, out: torch.Tensor, make: Callable[[], torch.Tensor]):
        self.outputs.append((weakref.ref(out), _Recipe(make, out._version)))

    def pack(self, tensor: torch.Tensor):
        for ref, recipe in self.outputs:
            if ref() is tensor and tensor._version == recipe.version:
                return recipe
        return tensor

    @staticmethod
    def unpack(saved):
        if isinstance(saved, _Recipe):
            return saved.make()
        return saved


@contextmanager
def recompute_cheap_outputs():
    """Inside the ``with`` block, outputs registered with
    :func:`recomputable` are recomputed in the backward, not kept.

    A no-op without gradients, under tracers and compilers, with the
    reference forwards (:func:`~mmsk.models.layers.reference_forward`) and
    inside another user of saved-tensor hooks (``with_cp``'s checkpointing,
    ``torch.autograd.graph.save_on_cpu``).
    """
    if not _can_hook():
        yield
        return
    scope = _CheapOutputs()
    scopes = _scopes()
    scopes.append(scope)
    try:
        with torch.autograd.graph.saved_tensors_hooks(scope.pack,
                                                      scope.unpack):
            yield
    finally:
        scopes.pop()
        # the recipes live on in the saved slots that took them, and no
        # longer than those (the hooks may keep this scope alive)
        scope.outputs.clear()


def recomputable(out: torch.Tensor,
                 make: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Register ``out = make()`` with the innermost
    :func:`recompute_cheap_outputs` block, if any; returns ``out``.

    ``make`` must read only tensors that the autograd graph keeps anyway and
    that nothing modifies in place afterwards, so that calling it again in
    the backward costs one cheap op and no memory.
    """
    if torch.compiler.is_compiling():
        return out  # (no scope is open there; no thread-local lookup)
    scopes = _scopes()
    if scopes and out.requires_grad:
        scopes[-1].register(out, make)
    return out


@contextmanager
def _running_stats_frozen(module: torch.nn.Module):
    """BatchNorms of ``module`` that track running statistics in train mode
    normalise with the batch's statistics as before, but leave the running
    statistics as they are: the momentum is 0 inside (``r * (1 - 0) + m * 0
    == r`` exactly, for finite batch statistics) and ``num_batches_tracked``
    is put back after. The op and what autograd saves are unchanged."""
    from torch.nn.modules.batchnorm import _BatchNorm
    norms = [
        m for m in module.modules() if isinstance(m, _BatchNorm)
        and m.training and m.track_running_stats
    ]
    kept = [(m, m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for norm in norms:
        norm.momentum = 0.0
    try:
        yield
    finally:
        for norm, momentum, tracked in kept:
            norm.momentum = momentum
            norm.num_batches_tracked.copy_(tracked)


def checkpoint_module(module: torch.nn.Module, function: Callable, *args):
    """``function(*args)`` under non-reentrant gradient checkpointing
    (``with_cp``), whose recomputation in the backward normalises as the
    forward did but does not update BatchNorm's running statistics (and
    ``num_batches_tracked``) a second time.

    A plain ``torch.utils.checkpoint`` of a block in train mode reruns its
    BatchNorms in the backward, and each applies its momentum twice per
    step: the running statistics (the eval model) then differ from the
    same training without ``with_cp``. The recomputation uses the batch's
    statistics either way, so outputs and gradients are unchanged.

    The recomputation runs the forward that the forward ran (fast or
    reference, :func:`~mmsk.models.layers.reference_forward`), wherever the
    backward is called: the two save different tensors, and checkpointing
    refuses a recomputation that saves others.
    """
    from contextlib import nullcontext

    from torch.utils.checkpoint import checkpoint
    fast = fast_path_enabled()

    @contextmanager
    def recompute_context():  # entered when the backward recomputes
        # the switch is global: flip it only when the backward runs in the
        # other mode, so that concurrent recomputations in the forward's
        # mode never touch it
        switch = fast_path_set_to(fast) if fast != fast_path_enabled() \
            else nullcontext()
        with switch, _running_stats_frozen(module):
            yield

    return checkpoint(
        function,
        *args,
        use_reentrant=False,
        context_fn=lambda: (nullcontext(), recompute_context()))
