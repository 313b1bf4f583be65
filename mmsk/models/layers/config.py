"""The one switch between mmsk's fast forwards and their plain references.

Every mmsk block has a plain forward that reads like its paper (the SK unit
stacks its branches and takes a softmax-weighted sum) and a fast one that
computes the same maths with fewer passes over memory (for two branches,
``lerp(u2, u1, w1)``; no 5-D stack). The fast forward is the default; the
plain one stays available, so tests compare the two, and so does anyone who
doubts a result::

    from mmsk.models.layers import reference_forward
    with reference_forward():
        expected = model(x)

The switch is global, like timm's ``timm.layers.config``: one place, no
per-module flags.
"""
from contextlib import contextmanager

import torch

from mmsk.utils.validation import _is_fx_symbolic_tracing

_FAST_PATH = True


def fast_path_enabled() -> bool:
    """Whether mmsk blocks use their fast forward (the default)."""
    return _FAST_PATH


_functorch_active = getattr(torch._C, '_are_functorch_transforms_active',
                            lambda: False)


def fast_eager_backward() -> bool:
    """Whether the fast path may shape the backward itself (custom autograd
    functions, saved-tensor hooks): the fast path is on, gradients are
    recorded, and the forward runs eagerly (not under ``torch.compile``,
    which plans its own backward, nor under jit or fx tracing, nor inside a
    ``torch.func`` transform such as ``grad`` or ``vmap``, which runs only
    autograd functions written for it)."""
    return fast_path_enabled() and torch.is_grad_enabled() and not (
        torch.compiler.is_compiling() or torch.jit.is_tracing()
        or _is_fx_symbolic_tracing() or _functorch_active())


def set_fast_path(enabled: bool) -> None:
    """Turn the fast forwards on (default) or off (plain references)."""
    if not isinstance(enabled, bool):
        raise ValueError(f'set_fast_path takes a bool, got {enabled!r}')
    global _FAST_PATH
    _FAST_PATH = enabled


@contextmanager
def fast_path_set_to(enabled: bool):
    """Run mmsk blocks with their fast (``True``) or plain (``False``)
    forwards inside the ``with`` block, and restore the switch after."""
    previous = _FAST_PATH
    set_fast_path(enabled)
    try:
        yield
    finally:
        set_fast_path(previous)


def reference_forward():
    """Run mmsk blocks with their plain reference forwards inside the
    ``with`` block."""
    return fast_path_set_to(False)
