"""A conv whose stride equals its dilation, run on the grid it reads.

With stride ``s``, dilation ``s`` and the usual padding ``s * (k - 1) / 2``,
output ``(i, j)`` reads the input at rows and columns ``s * (i + a - (k-1)/2)``
only: every ``s``-th row and column, starting at 0. So the conv equals a
stride-1, dilation-1 conv (padding ``(k - 1) / 2``) on
``x[:, :, ::s, ::s]``: the same products, the same sums, the same output
size. The strided, dilated 3x3 branch of a stride-2 SK unit (the paper's and
timm's forms) is such a conv, and on a CPU oneDNN's backward for it is 1.5-3x
slower than for the plain conv on the subsampled grid
(``benchmarks/README.md``).

:class:`PhaseConv2d` keeps the declared stride and dilation (its
``repr``, its receptive field and its weights are those of the strided,
dilated conv) and runs the subsampled form in mmsk's fast path; the
reference forward (:func:`~mmsk.models.layers.reference_forward`) runs the
conv as declared.

With gradients, the subsampled view is taken by :func:`phase_view`, whose
backward writes the gradient into a zero map of the input's own memory
format: torch's slicing backward writes it in NCHW whatever the input's
layout, and in channels_last every op after it on that gradient (the sum
with the other branch's gradient, the ReLU backward) then runs on mixed
layouts, 5-10x slower than on one.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .config import fast_eager_backward, fast_path_enabled


class _PhaseView(torch.autograd.Function):
    """``x[:, :, ::sh, ::sw]`` whose backward returns the gradient in the
    memory format of ``x`` (the same values as torch's slicing backward:
    zeros, and the incoming gradient at the positions read)."""

    @staticmethod
    def forward(ctx, x, sh, sw):
        # the strides empty_like(x) would give (x's own if x is dense, else
        # its suggested memory format: a channel chunk of a channels_last
        # map gives channels_last)
        like = torch.empty_like(x, device='meta')
        ctx.shape, ctx.strides = like.shape, like.stride()
        ctx.phase = sh, sw
        return x[:, :, ::sh, ::sw]

    @staticmethod
    def backward(ctx, grad):
        sh, sw = ctx.phase
        out = grad.new_empty_strided(ctx.shape, ctx.strides).zero_()
        out[:, :, ::sh, ::sw] = grad
        return out, None, None

    @staticmethod
    def jvp(ctx, tangent, *_):
        sh, sw = ctx.phase  # forward-mode AD: the same view of the tangent
        return tangent[:, :, ::sh, ::sw]


def phase_view(x: torch.Tensor, sh: int, sw: int) -> torch.Tensor:
    """``x[:, :, ::sh, ::sw]``; with gradients (mmsk's fast path, eager),
    its gradient comes back in the memory format of ``x``."""
    if not (fast_eager_backward() and x.requires_grad):
        return x[:, :, ::sh, ::sw]
    return _PhaseView.apply(x, sh, sw)


def reads_one_phase(conv: nn.Conv2d) -> bool:
    """Whether ``conv`` reads only every ``stride``-th row and column (and
    so equals a plain conv on that grid)."""
    if conv.padding_mode != 'zeros' or isinstance(conv.padding, str):
        return False
    for k, s, d, p in zip(conv.kernel_size, conv.stride, conv.dilation,
                          conv.padding):
        if s == 1 or s != d or k % 2 == 0 or p != d * (k - 1) // 2:
            return False
    return True


class PhaseConv2d(nn.Conv2d):
    """``nn.Conv2d`` that runs as a plain conv on the subsampled grid when
    its stride equals its dilation (see the module docstring); otherwise,
    and in the reference forward, exactly ``nn.Conv2d``.

    Example:
        >>> conv = PhaseConv2d(8, 8, 3, stride=2, padding=2, dilation=2)
        >>> x = torch.rand(1, 8, 9, 9)
        >>> torch.equal(conv(x), nn.Conv2d.forward(conv, x))
        True
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (fast_path_enabled() and reads_one_phase(self)):
            return super().forward(x)
        sh, sw = self.stride
        return F.conv2d(phase_view(x, sh, sw), self.weight, self.bias, 1,
                        [(k - 1) // 2 for k in self.kernel_size], 1,
                        self.groups)
