"""Inverted-residual network: MobileNetV2 as a table plus one block.

MobileNetV2 (Sandler et al., CVPR 2018, https://arxiv.org/abs/1801.04381):
each block expands the channels with a 1x1 conv (ratio ``t``), filters them
with a 3x3 depthwise conv and projects them back with a linear 1x1 conv; the
identity skip exists only where stride is 1 and the channels do not change.

The network is the table :data:`MOBILENET_V2_ARCH` (rows ``t, c, n, s`` as in
the paper's Table 2), widened by ``widen_factor`` and deepened by
``depth_multiplier`` (timm's ``mobilenetv2_110d/120d``), with per-row
``strides``/``dilations`` for dense prediction and an attention slot
(SE after the depthwise conv, or SK in its place) in every block.
"""
import math
from numbers import Integral, Real
from typing import Optional, Sequence, Union

import torch
from mmcv.cnn import ConvModule
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule, Sequential
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.models.utils import make_divisible
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmsk.registry import MODELS, register_model
from mmsk.utils import (BACKBONE_OPTIONS, accepted_kwargs, check_act_cfg,
                        check_bool, check_cfg, check_conv_cfg, check_input,
                        check_norm_cfg, check_option, check_options,
                        check_positive_int, check_positive_number,
                        check_sync_bn, check_unit_interval, check_unknown_keys,
                        forward_batch_checked, int_in, one_of, optional,
                        out_indices_in, seq_of)
from ..deploy import Deployable, fold_for_deploy
from ..layers.config import fast_path_enabled
from ..layers.recompute import checkpoint_module, recompute_cheap_outputs
from ..layers.selective_kernel import SKConv
from .pretrained import check_pretrained
from .resnet import attn_class, build_attention

#: MobileNetV2, paper Table 2 (the stem conv and the final 1x1 conv aside).
MOBILENET_V2_ARCH = (
    # t, c, n, s
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)

#: How a row's dilation reaches its blocks (see InvertedResidualNet).
DILATION_MODES = ('mmseg', 'timm')


#: Options of :class:`InvertedResidualBlock` (option -> checker).
BLOCK_OPTIONS = dict(
    in_channels=check_positive_int,
    out_channels=check_positive_int,
    expand_ratio=check_positive_number,
    stride=check_positive_int,
    dilation=check_positive_int,
    attn_cfg=optional(check_cfg),
    conv_cfg=optional(check_conv_cfg),
    norm_cfg=check_norm_cfg,
    act_cfg=check_act_cfg,
    drop_path_rate=check_unit_interval,
    with_cp=check_bool,
)


def check_arch(arch) -> tuple:
    """Validate an architecture table; return it as a tuple of rows.

    Raises ``ValueError`` naming the row index and what is wrong.

    >>> check_arch([[1, 16, 1, 1], [6, 24, 2, 2]])
    ((1, 16, 1, 1), (6, 24, 2, 2))
    """
    if not isinstance(arch, (list, tuple)) or not arch:
        raise ValueError(f'arch must be a non-empty list of [t, c, n, s] '
                         f'rows, got {arch!r}')
    rows = []
    for i, row in enumerate(arch):
        if not isinstance(row, (list, tuple)) or len(row) != 4:
            raise ValueError(f'arch row {i} must be [t, c, n, s] (expand '
                             f'ratio, channels, repeats, stride), got '
                             f'{row!r}')
        t, c, n, s = row
        for what, value in (('channels c', c), ('repeats n', n),
                            ('stride s', s)):
            if not isinstance(value, Integral) or isinstance(value, bool) \
                    or value < 1:
                raise ValueError(f'arch row {i} ({list(row)}): {what} must '
                                 f'be a positive integer, got {value!r}')
        if not isinstance(t, Real) or isinstance(t, bool) or t <= 0:
            raise ValueError(f'arch row {i} ({list(row)}): expand ratio t '
                             f'must be a number > 0, got {t!r}')
        rows.append((t, int(c), int(n), int(s)))
    return tuple(rows)


@register_model
class InvertedResidualBlock(Deployable, BaseModule):
    """1x1 expand -> 3x3 depthwise (-> attention) -> 1x1 linear projection.

    The skip (with stochastic depth) exists only when ``stride == 1`` and
    ``in_channels == out_channels``; there is no activation after the
    projection (the linear bottleneck).

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        expand_ratio (float): Hidden width ``round(in_channels * t)``; with
            ``t == 1`` there is no expansion conv. Defaults to 6.
        stride (int): Stride of the depthwise conv. Defaults to 1.
        dilation (int): Dilation of the depthwise conv. Defaults to 1.
        attn_cfg (dict, optional): The attention slot. An attention module
            (e.g. ``dict(type='SEAttention', reduction=4)``) is built with
            ``in_channels=hidden`` and applied after the depthwise conv, as
            in MobileNetV3/EfficientNet; ``dict(type='SKConv', ...)`` (exactly
            that type) replaces the depthwise conv by a depthwise Selective
            Kernel unit (``groups=hidden``, the block's stride and dilation;
            the block's conv/norm/act cfgs unless given).
        conv_cfg, norm_cfg, act_cfg (dict): Layer configs. The activation
            defaults to ReLU6.
        drop_path_rate (float): Stochastic depth of the residual branch
            (only where the skip exists). Defaults to 0.
        with_cp (bool): Non-reentrant gradient checkpointing.

    Checkpoints of mmpretrain's / mmseg's ``InvertedResidual`` (convs named
    ``conv.0/1/2``) load into it unchanged.

    Example:
        >>> block = InvertedResidualBlock(32, 32, expand_ratio=6)
        >>> block(torch.rand(2, 32, 16, 16)).shape
        torch.Size([2, 32, 16, 16])
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 expand_ratio: float = 6,
                 stride: int = 1,
                 dilation: int = 1,
                 attn_cfg: Optional[dict] = None,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU6'),
                 drop_path_rate: float = 0.0,
                 with_cp: bool = False,
                 init_cfg=None):
        super().__init__(init_cfg)
        check_options(self, locals(), BLOCK_OPTIONS)
        hidden = max(int(round(in_channels * expand_ratio)), 1)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.hidden_channels = hidden
        self.stride = stride
        self.dilation = dilation
        self.with_cp = with_cp
        self.use_residual = stride == 1 and in_channels == out_channels
        layer_cfg = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg)

        self.expand = None if expand_ratio == 1 else ConvModule(
            in_channels, hidden, 1, act_cfg=act_cfg, **layer_cfg)
        self.attn = None
        attn_type = None if attn_cfg is None else attn_class(attn_cfg)
        if attn_type is SKConv:
            set_here = sorted(set(attn_cfg) & {
                'in_channels', 'out_channels', 'stride', 'dilation', 'groups'
            })
            if set_here:
                raise ValueError(
                    f'{type(self).__name__}: attn_cfg keys {set_here} are '
                    f'set by the block for its depthwise SK unit (the '
                    f'hidden width, the block\'s stride and dilation, '
                    f'groups=hidden); remove them')
            sk_cfg = dict(
                conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)
            sk_cfg.update(attn_cfg)
            self.depthwise = MODELS.build(
                dict(
                    sk_cfg,
                    in_channels=hidden,
                    out_channels=hidden,
                    stride=stride,
                    dilation=dilation,
                    groups=hidden))
        else:
            self.depthwise = ConvModule(
                hidden,
                hidden,
                3,
                stride=stride,
                padding=dilation,
                dilation=dilation,
                groups=hidden,
                act_cfg=act_cfg,
                **layer_cfg)
            if attn_cfg is not None:
                self.attn = build_attention(attn_cfg, hidden,
                                            type(self).__name__)
        self.project = ConvModule(
            hidden, out_channels, 1, act_cfg=None, **layer_cfg)
        self.drop_path = DropPath(drop_path_rate) if \
            self.use_residual and drop_path_rate > 0 else nn.Identity()

    def rename_pretrained_keys(self, state_dict: dict, prefix: str = ''):
        """mmpretrain's and mmseg's InvertedResidual hold the same convs as
        ``conv.0/1/2`` (``conv.0/1`` without expansion): rename them in
        place, so that their checkpoints load as they are (``Pretrained``
        init_cfg; :func:`~mmsk.models.backbones.pretrained.check_pretrained`
        applies the same renaming before it compares keys)."""
        legacy = f'{prefix}conv.'
        parts = (['expand'] if self.expand is not None else []) + \
            ['depthwise', 'project']
        for key in [k for k in state_dict if k.startswith(legacy)]:
            index, rest = key[len(legacy):].split('.', 1)
            if index.isdigit() and int(index) < len(parts):
                state_dict[f'{prefix}{parts[int(index)]}.{rest}'] = \
                    state_dict.pop(key)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self.rename_pretrained_keys(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _inner_forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.expand is None else self.expand(x)
        with recompute_cheap_outputs():  # an SK slot's select step
            out = self.depthwise(out)
            if self.attn is not None:
                out = self.attn(out)
            out = self.project(out)
        if self.use_residual:
            out = self.drop_path(out)
            # out is a fresh tensor no backward needs: add in place
            return out.add_(x) if fast_path_enabled() else x + out
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and x.requires_grad:
            return checkpoint_module(self, self._inner_forward, x)
        return self._inner_forward(x)


@register_model
class InvertedResidualNet(Deployable, BaseBackbone):
    """MobileNetV2-style backbone: stem, one stage per table row, 1x1 head.

    Paper: https://arxiv.org/abs/1801.04381. The stages are named as in
    mmpretrain's MobileNetV2 (``conv1``, ``layer1`` .. ``layer{R}``,
    ``conv2``); :mod:`mmsk.converters.mobilenet` converts timm, torchvision
    and mmpretrain weights.

    Args:
        arch (str | Sequence): ``'mobilenet_v2'`` or a table of rows
            ``[t, c, n, s]`` (expand ratio, channels, repeats, stride).
        widen_factor (float): Channel multiplier; every width is
            ``make_divisible(c * widen_factor, 8)``, the head
            ``make_divisible(head_channels * max(1, widen_factor), 8)`` (as
            torchvision and timm). Defaults to 1.
        depth_multiplier (float): Repeats become ``ceil(n * multiplier)``.
        fix_stem_head (bool): Keep the stem and head widths and the first and
            last rows' repeats unscaled (timm's ``mobilenetv2_110d/120d``).
        in_channels (int): Input image channels. Defaults to 3.
        stem_channels (int): Stem width before widening. Defaults to 32.
        stem_stride (int): Stride of the 3x3 stem conv. Defaults to 2.
        head_channels (int): Width of the final 1x1 conv before widening.
            Defaults to 1280.
        strides (Sequence[int], optional): Stride of each row's first block
            (default: the table's ``s``).
        dilations (Sequence[int], optional): Dilation of each row (default
            all 1). Output stride 8 for MobileNetV2: ``strides=(1, 2, 2, 1,
            1, 1, 1), dilations=(1, 1, 1, 2, 2, 4, 4)``.
        dilation_mode (str): ``'mmseg'``: a row's dilation goes to its first
            block only, the others use 1 (mmseg's MobileNetV2, so its
            segmentation checkpoints behave the same); ``'timm'``: the first
            block keeps the previous row's dilation and the others use the
            row's (timm's ``output_stride``, DeepLab's convention; every
            block of a dilated stage sees the larger field).
        out_indices (int | Sequence[int]): ``i < R`` is the output of row
            ``i``, ``R`` (or ``-1``) the final 1x1 conv; any sequence
            (``range(8)`` too) of distinct indices in increasing order, as
            the outputs come back in that order. Nothing after the largest
            index is built. Defaults to ``(-1, )``.
        frozen_stages (int): Freeze (weights and norm statistics) the stem
            (``0``), rows ``1..k`` (``k``) and the head (``R + 1``); only
            stages that ``out_indices`` builds. Defaults to -1 (nothing).
        attn_cfg (dict, optional): Attention slot of every block (see
            :class:`InvertedResidualBlock`).
        conv_cfg, norm_cfg, act_cfg (dict): Layer configs; ReLU6 by default.
        norm_eval (bool): Keep norm layers in eval mode while training.
        with_cp (bool): Non-reentrant gradient checkpointing in the blocks.
        drop_path_rate (float): Stochastic depth, rising linearly with the
            block index to this rate, in every block that has a skip.
        deploy (bool): Build the folded inference form that
            ``switch_to_deploy()`` makes (see :mod:`mmsk.models.deploy`).
            Defaults to False.
        init_cfg (dict | list[dict]): Initialisation (``Pretrained`` with
            ``prefix`` too).

    Every option is type-checked (``norm_eval='no'`` is an error, not a
    truthy string), and an unknown keyword is reported with its close
    matches.

    Example:
        >>> model = InvertedResidualNet(out_indices=(1, 2, 4, 7))
        >>> [tuple(o.shape[1:]) for o in model(torch.rand(1, 3, 224, 224))]
        [(24, 56, 56), (32, 28, 28), (96, 14, 14), (1280, 7, 7)]
    """

    arch_zoo = {'mobilenet_v2': MOBILENET_V2_ARCH}

    def __init__(self,
                 arch: Union[str, Sequence] = 'mobilenet_v2',
                 widen_factor: float = 1.0,
                 depth_multiplier: float = 1.0,
                 fix_stem_head: bool = False,
                 in_channels: int = 3,
                 stem_channels: int = 32,
                 stem_stride: int = 2,
                 head_channels: int = 1280,
                 strides: Optional[Sequence[int]] = None,
                 dilations: Optional[Sequence[int]] = None,
                 dilation_mode: str = 'mmseg',
                 out_indices: Union[int, Sequence[int]] = (-1, ),
                 frozen_stages: int = -1,
                 attn_cfg: Optional[dict] = None,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU6'),
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 drop_path_rate: float = 0.0,
                 deploy: bool = False,
                 init_cfg=[
                     dict(type='Kaiming', layer=['Conv2d']),
                     dict(
                         type='Constant',
                         val=1,
                         layer=['_BatchNorm', 'GroupNorm'])
                 ],
                 **kwargs):
        super().__init__(init_cfg)
        check_unknown_keys(self, kwargs, accepted_kwargs(type(self)))
        if isinstance(arch, str):
            if arch not in self.arch_zoo:
                raise KeyError(f'invalid arch {arch!r}; choose from '
                               f'{sorted(self.arch_zoo)} or give a table')
            arch = self.arch_zoo[arch]
        self.arch = check_arch(arch)
        num_rows = len(self.arch)
        if strides is None:
            strides = [s for _, _, _, s in self.arch]
        if dilations is None:
            dilations = [1] * num_rows
        opts = check_options(self, locals(), dict(
            widen_factor=check_positive_number,
            depth_multiplier=check_positive_number,
            fix_stem_head=check_bool,
            in_channels=check_positive_int,
            stem_channels=check_positive_int,
            stem_stride=check_positive_int,
            head_channels=check_positive_int,
            strides=seq_of(check_positive_int, num_rows),
            dilations=seq_of(check_positive_int, num_rows),
            dilation_mode=one_of(*DILATION_MODES),
            out_indices=out_indices_in(
                num_rows + 1, f'outputs ({num_rows} rows + the head conv)'),
            frozen_stages=int_in(-1, num_rows + 1),
            **BACKBONE_OPTIONS,
        ))
        self.out_indices = opts['out_indices']
        self.in_channels = in_channels
        widen_factor = float(widen_factor)

        self.widen_factor = widen_factor
        self.strides = tuple(strides)
        self.dilations = tuple(dilations)
        self.dilation_mode = dilation_mode
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        layer_cfg = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)

        def width(c):
            return make_divisible(c * widen_factor, 8)

        stem = stem_channels if fix_stem_head else width(stem_channels)
        head = head_channels if fix_stem_head else make_divisible(
            head_channels * max(1.0, widen_factor), 8)
        repeats = [
            n if fix_stem_head and i in (0, num_rows - 1) else
            int(math.ceil(n * depth_multiplier))
            for i, (_, _, n, _) in enumerate(self.arch)
        ]
        widths = [width(c) for _, c, _, _ in self.arch]
        self.out_channels = tuple(widths) + (head, )
        self.feat_dim = self.out_channels[max(self.out_indices)]

        self.conv1 = ConvModule(
            in_channels, stem, 3, stride=stem_stride, padding=1, **layer_cfg)
        self.stage_names = ['conv1']
        num_blocks = sum(repeats)
        block_index, prev_dilation, channels = 0, 1, stem
        last_row = min(max(self.out_indices), num_rows - 1)
        for i in range(last_row + 1):
            t = self.arch[i][0]
            blocks = []
            for j in range(repeats[i]):
                if dilation_mode == 'mmseg':
                    dilation = self.dilations[i] if j == 0 else 1
                else:
                    dilation = prev_dilation if j == 0 else self.dilations[i]
                blocks.append(
                    InvertedResidualBlock(
                        channels,
                        widths[i],
                        expand_ratio=t,
                        stride=self.strides[i] if j == 0 else 1,
                        dilation=dilation,
                        attn_cfg=attn_cfg,
                        drop_path_rate=drop_path_rate * block_index /
                        max(num_blocks - 1, 1),
                        with_cp=with_cp,
                        **layer_cfg))
                channels = widths[i]
                block_index += 1
            prev_dilation = self.dilations[i]
            self.add_module(f'layer{i + 1}', Sequential(*blocks))
            self.stage_names.append(f'layer{i + 1}')
        if max(self.out_indices) == num_rows:
            self.conv2 = ConvModule(channels, head, 1, **layer_cfg)
            self.stage_names.append('conv2')
        if frozen_stages >= len(self.stage_names):
            raise ValueError(
                f'{type(self).__name__}: frozen_stages={frozen_stages} '
                f'freezes stages that out_indices='
                f'{tuple(self.out_indices)} does not build (nothing after '
                f'its largest index is); the stages built are 0..'
                f'{len(self.stage_names) - 1}')
        check_option(self, 'deploy', deploy, check_bool)
        self.deploy = False
        if deploy:
            fold_for_deploy(self)
        self._freeze_stages()

    def init_weights(self):
        # A Pretrained checkpoint must cover the whole backbone (mmengine
        # would only warn and leave the rest random).
        if not self._is_init:
            check_pretrained(self, self.init_cfg)
        super().init_weights()

    def forward(self, x: torch.Tensor) -> tuple:
        self.check_not_training_folded()
        check_input(self, x, self.in_channels, self.conv1.conv.weight)
        check_sync_bn(self, x)
        return forward_batch_checked(self, self._forward_stages, x)

    def _forward_stages(self, x: torch.Tensor) -> tuple:
        x = self.conv1(x)
        outs = []
        for i, name in enumerate(self.stage_names[1:]):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def _freeze_stages(self):
        for name in self.stage_names[:self.frozen_stages + 1]:
            module = getattr(self, name)
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self
