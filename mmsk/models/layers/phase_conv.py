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
"""
import torch
import torch.nn.functional as F
from torch import nn

from .config import fast_path_enabled


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
        return F.conv2d(x[:, :, ::sh, ::sw], self.weight, self.bias, 1,
                        [(k - 1) // 2 for k in self.kernel_size], 1,
                        self.groups)
