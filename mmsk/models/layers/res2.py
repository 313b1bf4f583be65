"""Res2Net's hierarchical multi-scale 3x3 (Gao et al., https://arxiv.org/abs/1904.01169)."""
from typing import Optional

import torch
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule, ModuleList
from torch import nn

from mmsk.registry import register_model
from mmsk.utils import (check_act_cfg, check_bool, check_channels,
                        check_conv_cfg, check_norm_cfg, check_options,
                        check_positive_int, int_in, optional)
from ..deploy import Deployable
from .recompute import recomputable


@register_model
class Res2Conv(Deployable, BaseModule):
    """Split the channels into ``scales`` groups of ``width``; each 3x3 sees
    its split plus the previous output, so receptive fields grow inside one
    block. The last split passes through (average-pooled in the first block
    of a stage, which also drops the hierarchy, as Res2Net does).

    Args:
        channels (int): Input = output channels, ``width * scales``.
        scales (int): Number of splits (>= 2).
        stride (int): Stride of the 3x3 convs (and of the pool).
        dilation (int): Dilation of the 3x3 convs.
        groups (int): Groups of each 3x3 (Res2NeXt). Defaults to 1.
        stage_first (bool): First block of a stage. Defaults to False.

    In training, inside an mmsk block, the concatenated output is recomputed
    for the next conv's backward instead of kept
    (:mod:`~mmsk.models.layers.recompute`).

    Example:
        >>> m = Res2Conv(104, scales=4)
        >>> m(torch.rand(1, 104, 8, 8)).shape
        torch.Size([1, 104, 8, 8])
    """

    def __init__(self,
                 channels: int,
                 scales: int = 4,
                 stride: int = 1,
                 dilation: int = 1,
                 groups: int = 1,
                 stage_first: bool = False,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU'),
                 init_cfg=None):
        super().__init__(init_cfg)
        check_options(self, locals(), dict(
            channels=check_positive_int,
            scales=int_in(2, None),
            stride=check_positive_int,
            dilation=check_positive_int,
            groups=check_positive_int,
            stage_first=check_bool,
            conv_cfg=optional(check_conv_cfg),
            norm_cfg=check_norm_cfg,
            act_cfg=check_act_cfg))
        if channels % scales:
            raise ValueError(f'{type(self).__name__}: channels ({channels}) '
                             f'must be divisible by scales ({scales})')
        if stride > 1 and not stage_first:
            raise ValueError(
                f'{type(self).__name__}: stride={stride} needs '
                f'stage_first=True (the hierarchy adds each split to the '
                f'previous output, which a strided conv has made smaller; '
                f'the first block of a stage drops the hierarchy)')
        self.scales = scales
        self.width = channels // scales
        if self.width % groups:
            raise ValueError(f'{type(self).__name__}: groups ({groups}) must '
                             f'divide the split width ({self.width})')
        self.stage_first = stage_first
        self.convs = ModuleList([
            ConvModule(
                self.width,
                self.width,
                3,
                stride=stride,
                padding=dilation,
                dilation=dilation,
                groups=groups,
                conv_cfg=conv_cfg,
                norm_cfg=norm_cfg,
                act_cfg=act_cfg) for _ in range(scales - 1)
        ])
        self.pool = nn.AvgPool2d(3, stride, padding=1) if stage_first \
            else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_channels(self, x, self.width * self.scales,
                       f' ({self.scales} splits of {self.width})')
        splits = torch.split(x, self.width, dim=1)
        outs = []
        sp = splits[0]
        for i, conv in enumerate(self.convs):
            if i > 0:
                sp = splits[i] if self.stage_first else sp + splits[i]
            sp = conv(sp)
            outs.append(sp)
        outs.append(self.pool(splits[-1]))
        # the next conv would keep the concatenation for its backward; the
        # splits are kept anyway (by their ReLUs), so it is recomputed
        return recomputable(
            torch.cat(outs, dim=1), lambda: torch.cat(outs, dim=1))
