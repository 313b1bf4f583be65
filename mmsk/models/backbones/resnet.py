"""The one ResNet-style stage builder of mmsk, and its two block shapes.

Every ResNet-style family of mmsk (SKNet, SENet, the Res2Net variants) is this
builder plus a block. A block honours one contract:

- ``expansion``; the constructor arguments of :class:`BasicBlock`;
- ``conv1`` / ``conv2`` (/ ``conv3``) whose spatial conv is built by a hook
  (``make_conv1`` for the basic block, ``make_conv2`` for the bottleneck),
  which is all an SK or Res2Net block overrides;
- an attention slot ``attn`` (``attn_cfg``, e.g. SE) after the last conv
  (``attn_position='last'``) or after the spatial conv (``'mid'``),
  anti-aliased downsampling (``aa_downsample``), stochastic depth
  (``drop_path_rate``), non-reentrant checkpointing
  (``with_cp``), and ``zero_init_last()``.

The backbone subclasses mmpretrain's :class:`~mmpretrain.models.ResNet`, so
``out_indices``, ``frozen_stages``, ``norm_eval``, ``init_cfg`` and layer-wise
learning-rate decay behave exactly as in mmpretrain.
"""
import itertools
import math
from typing import Optional, Sequence, Union

import torch
from mmcv.cnn import (ConvModule, build_activation_layer, build_conv_layer,
                      build_norm_layer)
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule, Sequential
from mmpretrain.models.backbones.resnet import ResNet
from torch import nn

from mmsk.registry import MODELS
from mmsk.utils import (BACKBONE_OPTIONS, OptionTypeError, accepted_kwargs,
                        check_act_cfg, check_bool, check_cfg, check_conv_cfg,
                        check_dict, check_input, check_norm_cfg, check_option,
                        check_options, check_positive_int, check_sync_bn,
                        check_unit_interval, check_unknown_keys,
                        forward_batch_checked, instance_of, int_in, one_of,
                        optional, out_indices_in, registered_class,
                        seq_of)
from ..deploy import Deployable, fold_for_deploy
from ..layers.config import fast_path_enabled
from ..layers.recompute import checkpoint_module, recompute_cheap_outputs
from .pretrained import check_pretrained, pretrained_cfg

#: The options both block shapes share (option -> checker).
BLOCK_OPTIONS = dict(
    in_channels=check_positive_int,
    out_channels=check_positive_int,
    expansion=check_positive_int,
    stride=check_positive_int,
    dilation=check_positive_int,
    downsample=optional(instance_of(nn.Module)),
    style=one_of('pytorch', 'caffe'),
    groups=check_positive_int,
    width_per_group=optional(check_positive_int),
    base_channels=check_positive_int,
    attn_cfg=optional(check_cfg),
    attn_position=one_of('last', 'mid'),
    aa_downsample=check_bool,
    with_cp=check_bool,
    conv_cfg=optional(check_conv_cfg),
    norm_cfg=check_norm_cfg,
    act_cfg=check_act_cfg,
    drop_path_rate=check_unit_interval,
)


def attn_class(attn_cfg: dict) -> type:
    """The class that ``attn_cfg`` builds (an unregistered type is refused,
    with the close names, as every layer config is)."""
    return registered_class(check_cfg('attn_cfg', attn_cfg))


def build_attention(attn_cfg: Optional[dict], channels: int, owner: str):
    """The attention slot of a block: a module that maps ``(B, C, H, W)``
    to a gated map of the same shape. mmsk's two registered modules that do
    not (their output would be broadcast against the map, or fail at the
    residual add) are refused, naming the one to use."""
    if attn_cfg is None:
        return None
    from ..layers import ChannelAttention, SKConv
    cls = attn_class(attn_cfg)
    if cls is ChannelAttention:
        raise ValueError(
            f'{owner}: attn_cfg type ChannelAttention returns the attention '
            f'weights (B, C, 1, 1), not a gated map; use SEAttention (or '
            f'SKAttention)')
    if cls is SKConv:
        raise ValueError(
            f'{owner}: attn_cfg type SKConv is a convolution with its own '
            f'output width, not an attention on a map; use SKAttention (an '
            f'SK unit that keeps the map\'s shape) or, in SKNet, sk_cfg')
    return MODELS.build(dict(attn_cfg, in_channels=channels))


def inplace_act_cfg(act_cfg: dict) -> dict:
    """``act_cfg`` with ``inplace=True`` where the activation takes it (as
    mmcv's ConvModule builds its activations)."""
    act_cfg = dict(act_cfg)
    if act_cfg['type'] not in ('Tanh', 'PReLU', 'Sigmoid', 'HSigmoid',
                               'Swish', 'GELU'):
        act_cfg.setdefault('inplace', True)
    return act_cfg


def conv_module_steps(module: nn.Module) -> list:
    """The layers that ``module`` runs, in order, when it is a plain mmcv
    ``ConvModule`` (conv, norm, act; no explicit padding, no efficient
    conv-bn eval, no hooks on it), else ``[module]``.

    A block that runs them one by one from its own frame drops the conv's
    input as soon as the conv has read it. Called as ``module(x)``, the
    caller's reference keeps the input alive through the norm and the
    activation, which is one more map at the peak of inference (timm and
    mmpretrain call conv, norm and act from the block).
    """
    if type(module) is not ConvModule or \
            tuple(module.order) != ('conv', 'norm', 'act') or \
            module.with_explicit_padding or getattr(
                module, 'efficient_conv_bn_eval_forward', None) is not None \
            or module._forward_hooks or module._forward_pre_hooks \
            or module._backward_hooks or module._backward_pre_hooks \
            or nn.modules.module._global_forward_hooks \
            or nn.modules.module._global_forward_pre_hooks:
        return [module]
    steps = [module.conv]
    if module.with_norm:
        steps.append(module.norm)
    if module.with_activation:
        steps.append(module.activate)
    return steps


class _ResidualBlock(Deployable, BaseModule):
    """What both block shapes share: slot, drop path, shortcut, checkpoint."""

    expansion = 1
    #: base-block arguments that a subclass sets itself -> what to pass
    #: instead (refused when given, here and by the backbones)
    sets_itself: dict = {}

    def _refuse_what_it_sets(self, kwargs: dict):
        given = [f'{key!r} ({hint})' for key, hint in
                 self.sets_itself.items() if key in kwargs]
        if given:
            raise TypeError(f'{type(self).__name__} sets {", ".join(given)}')

    def _init_tail(self, out_channels, downsample, attn_cfg, drop_path_rate,
                   act_cfg, with_cp):
        self.downsample = downsample
        self.attn = build_attention(attn_cfg, out_channels,
                                    type(self).__name__) \
            if self.attn_position == 'last' else None
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 \
            else nn.Identity()
        # in place: it runs on the fresh sum of residual and shortcut
        self.act = build_activation_layer(inplace_act_cfg(act_cfg))
        self.with_cp = with_cp

    def _init_head(self, stride, style, attn_position, aa_downsample):
        """Checks the options shared by both shapes; returns the stride of
        the spatial conv."""
        if aa_downsample and style == 'caffe':
            raise ValueError(f'{type(self).__name__}: aa_downsample needs '
                             f'style="pytorch" (the stride is on the '
                             f'spatial conv)')
        self.attn_position = attn_position
        use_aa = aa_downsample and stride > 1
        # timm's aa_layer=nn.AvgPool2d: the spatial conv runs at stride 1,
        # then a stride x stride average pool downsamples. Rounded up, as the
        # shortcut (strided 1x1 or ceil-mode avg_down) is: on sides that
        # the stride divides the same windows (and bits) as timm's, on the
        # others a last partial window where timm's sizes do not add up.
        self.aa = nn.AvgPool2d(stride, ceil_mode=True,
                               count_include_pad=False) \
            if use_aa else nn.Identity()
        return 1 if use_aa else stride

    def _check_shortcut(self, in_channels, out_channels, stride,
                        downsample):
        if downsample is None and (stride != 1
                                   or in_channels != out_channels):
            raise ValueError(
                f'{type(self).__name__}: with in_channels={in_channels}, '
                f'out_channels={out_channels} and stride={stride} the '
                f'identity shortcut cannot be added to the output; pass a '
                f'downsample (shortcut projection) module, as ResLayer does '
                f'for the first block of a stage')

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def last_conv(self) -> ConvModule:
        raise NotImplementedError

    def zero_init_last(self):
        """Zero the last norm's scale, so that the block starts as identity."""
        norm = self.last_conv.norm
        if getattr(norm, 'weight', None) is not None:
            nn.init.zeros_(norm.weight)

    def _inner_forward(self, x: torch.Tensor) -> torch.Tensor:
        with recompute_cheap_outputs():
            out = self.residual(x)
        if self.attn is not None:
            out = self.attn(out)
        out = self.drop_path(out)
        shortcut = x if self.downsample is None else self.downsample(x)
        if fast_path_enabled():
            # out is a fresh tensor no backward needs: add in place
            return out.add_(shortcut)
        return out + shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and x.requires_grad:
            out = checkpoint_module(self, self._inner_forward, x)
        else:
            out = self._inner_forward(x)
        return self.act(out)


class BasicBlock(_ResidualBlock):
    """Two 3x3 convs (ResNet-18/34) with an attention slot.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        expansion (int): ``out_channels / mid_channels``. Defaults to 1.
        stride (int): Stride of the first conv. Defaults to 1.
        dilation (int): Dilation of the 3x3 convs. Defaults to 1.
        downsample (nn.Module, optional): Shortcut projection.
        style (str): Unused by the basic block (kept for the contract).
        groups / width_per_group / base_channels: must be 1 / 64 / 64-ratio
            neutral for the basic block.
        attn_cfg (dict, optional): Attention after the last conv, built with
            ``in_channels=out_channels`` (e.g. ``dict(type='SEAttention')``).
        attn_position (str): ``'last'`` (after the last conv, before the
            sum; SENet) or ``'mid'`` (after the spatial conv, on the middle
            channels; bottleneck only). Defaults to ``'last'``.
        aa_downsample (bool): Anti-aliased downsampling: the strided conv
            runs at stride 1 and a ``stride x stride`` average pool follows
            it (timm's ``aa_layer=nn.AvgPool2d``). Defaults to False.
        with_cp (bool): Non-reentrant gradient checkpointing.
        conv_cfg, norm_cfg, act_cfg (dict): Layer configs.
        drop_path_rate (float): Stochastic depth rate of the residual.
        conv1_cfg (dict, optional): Extra arguments for ``make_conv1``.
    """

    expansion = 1

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 expansion: int = 1,
                 stride: int = 1,
                 dilation: int = 1,
                 downsample: Optional[nn.Module] = None,
                 style: str = 'pytorch',
                 groups: int = 1,
                 width_per_group: Optional[int] = None,
                 base_channels: int = 64,
                 attn_cfg: Optional[dict] = None,
                 attn_position: str = 'last',
                 aa_downsample: bool = False,
                 with_cp: bool = False,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU'),
                 drop_path_rate: float = 0.0,
                 conv1_cfg: Optional[dict] = None,
                 init_cfg=None):
        super().__init__(init_cfg)
        check_options(self, locals(),
                      dict(BLOCK_OPTIONS, conv1_cfg=optional(check_dict)))
        self._check_shortcut(in_channels, out_channels, stride, downsample)
        if groups != 1 or (width_per_group is not None
                           and width_per_group != base_channels):
            raise ValueError(
                f'{type(self).__name__} supports groups=1 and no '
                f'width_per_group only, got groups={groups}, '
                f'width_per_group={width_per_group}')
        if out_channels % expansion:
            raise ValueError(f'{type(self).__name__}: out_channels '
                             f'({out_channels}) must be divisible by '
                             f'expansion ({expansion})')
        if attn_position != 'last':
            raise ValueError(f'{type(self).__name__} supports '
                             f'attn_position="last" only, got '
                             f'{attn_position!r}')
        conv1_stride = self._init_head(stride, style, attn_position,
                                       aa_downsample)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.expansion = expansion
        self.mid_channels = out_channels // expansion
        self.stride = stride
        self.dilation = dilation
        self.conv1 = self.make_conv1(
            in_channels,
            self.mid_channels,
            stride=conv1_stride,
            dilation=dilation,
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg,
            **(conv1_cfg or {}))
        self.conv2 = ConvModule(
            self.mid_channels,
            out_channels,
            3,
            padding=dilation,
            dilation=dilation,
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg,
            act_cfg=None)
        self._init_tail(out_channels, downsample, attn_cfg, drop_path_rate,
                        act_cfg, with_cp)

    def make_conv1(self, in_channels, out_channels, stride, dilation,
                   **kwargs) -> nn.Module:
        """The first (spatial) conv, with norm and activation."""
        return ConvModule(
            in_channels,
            out_channels,
            3,
            stride=stride,
            padding=dilation,
            dilation=dilation,
            **kwargs)

    @property
    def last_conv(self):
        return self.conv2

    def residual(self, x):
        out = self.aa(self.conv1(x))
        for layer in conv_module_steps(self.conv2):
            out = layer(out)  # each step drops its input (see the helper)
        return out


class Bottleneck(_ResidualBlock):
    """1x1 reduce, spatial conv (``make_conv2``), 1x1 expand, attention slot.

    The middle width is ``floor(planes * width_per_group / base_channels) *
    groups`` with ``planes = out_channels / expansion`` (ResNeXt's rule;
    ``groups=1, width_per_group=base_channels`` gives ResNet's).

    Args:
        style (str): ``'pytorch'``: stride on the 3x3; ``'caffe'``: on the
            first 1x1.
        groups (int): Groups of the spatial conv (cardinality).
        width_per_group (int, optional): Width per group at ``base_channels``
            planes. Defaults to ``base_channels``.
        conv2_cfg (dict, optional): Extra arguments for ``make_conv2``.
        attn_position (str): ``'last'`` (after ``conv3``) or ``'mid'``
            (after ``conv2``, on the middle channels; timm's byobnet SE).
        channels_per_group (int, optional): Fixed width of a group of the
            spatial conv: ``groups = mid_channels / channels_per_group`` in
            every stage (timm's byobnet ``gs``), instead of a fixed
            ``groups``. Defaults to None.
        Others: as :class:`BasicBlock`.
    """

    expansion = 4
    #: the option that sets the width per group (named in errors)
    width_option = 'width_per_group'

    @staticmethod
    def middle_width(planes: int, width_per_group: int, base_channels: int,
                     groups: int, conv2_cfg: dict) -> int:
        """The middle width (ResNeXt's rule); blocks whose spatial conv
        splits the channels further (Res2Net) multiply it."""
        return int(math.floor(planes * width_per_group / base_channels)) * \
            groups

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 expansion: int = 4,
                 stride: int = 1,
                 dilation: int = 1,
                 downsample: Optional[nn.Module] = None,
                 style: str = 'pytorch',
                 groups: int = 1,
                 width_per_group: Optional[int] = None,
                 base_channels: int = 64,
                 attn_cfg: Optional[dict] = None,
                 attn_position: str = 'last',
                 aa_downsample: bool = False,
                 with_cp: bool = False,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU'),
                 drop_path_rate: float = 0.0,
                 conv2_cfg: Optional[dict] = None,
                 channels_per_group: Optional[int] = None,
                 init_cfg=None):
        super().__init__(init_cfg)
        check_options(
            self, locals(),
            dict(
                BLOCK_OPTIONS,
                conv2_cfg=optional(check_dict),
                channels_per_group=optional(check_positive_int)))
        self._check_shortcut(in_channels, out_channels, stride, downsample)
        spatial_stride = self._init_head(stride, style, attn_position,
                                         aa_downsample)
        if attn_position == 'mid' and attn_cfg is None:
            raise ValueError(f'{type(self).__name__}: attn_position="mid" '
                             f'places an attention, but attn_cfg is None')
        if channels_per_group is not None and groups != 1:
            raise ValueError(f'{type(self).__name__}: channels_per_group '
                             f'and groups={groups} are exclusive')
        if width_per_group is None:
            width_per_group = base_channels
        if out_channels % expansion:
            raise ValueError(f'{type(self).__name__}: out_channels '
                             f'({out_channels}) must be divisible by '
                             f'expansion ({expansion})')
        planes = out_channels // expansion
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.expansion = expansion
        self.mid_channels = self.middle_width(planes, width_per_group,
                                              base_channels, groups,
                                              conv2_cfg or {})
        if self.mid_channels < 1:
            raise ValueError(
                f'{type(self).__name__}: {self.width_option}='
                f'{width_per_group} with base_channels={base_channels} '
                f'leaves no middle channels at {planes} planes')
        if channels_per_group is not None:
            if self.mid_channels % channels_per_group:
                raise ValueError(
                    f'channels_per_group ({channels_per_group}) must divide '
                    f'the middle channels ({self.mid_channels})')
            groups = self.mid_channels // channels_per_group
        self.stride = stride
        self.dilation = dilation
        conv1_stride, conv2_stride = (1, spatial_stride) \
            if style == 'pytorch' else (stride, 1)
        layer_cfg = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg)
        self.conv1 = ConvModule(
            in_channels,
            self.mid_channels,
            1,
            stride=conv1_stride,
            act_cfg=act_cfg,
            **layer_cfg)
        self.conv2 = self.make_conv2(
            self.mid_channels,
            stride=conv2_stride,
            dilation=dilation,
            groups=groups,
            stage_first=stride > 1 or downsample is not None,
            act_cfg=act_cfg,
            **layer_cfg,
            **(conv2_cfg or {}))
        self.conv3 = ConvModule(
            self.mid_channels, out_channels, 1, act_cfg=None, **layer_cfg)
        self._init_tail(out_channels, downsample, attn_cfg, drop_path_rate,
                        act_cfg, with_cp)
        self.mid_attn = build_attention(attn_cfg, self.mid_channels,
                                        type(self).__name__) \
            if attn_position == 'mid' else None

    def make_conv2(self, channels, stride, dilation, groups, stage_first,
                   **kwargs) -> nn.Module:
        """The spatial conv (3x3, with norm and activation)."""
        if channels % groups:
            raise ValueError(f'{type(self).__name__}: groups ({groups}) '
                             f'must divide the middle channels ({channels})')
        return ConvModule(
            channels,
            channels,
            3,
            stride=stride,
            padding=dilation,
            dilation=dilation,
            groups=groups,
            **kwargs)

    @property
    def last_conv(self):
        return self.conv3

    def residual(self, x):
        out = self.conv1(x)
        for layer in conv_module_steps(self.conv2):
            out = layer(out)  # each step drops its input (see the helper)
        if self.mid_attn is not None:
            out = self.mid_attn(out)
        out = self.aa(out)
        for layer in conv_module_steps(self.conv3):
            out = layer(out)
        return out


def _check_block_class(name, value):
    if not (isinstance(value, type) and issubclass(value, nn.Module)
            and isinstance(getattr(value, 'expansion', None), int)):
        raise OptionTypeError(
            f'{name} must be a block class with an expansion (e.g. '
            f'SKBottleneck), got {value!r} ({type(value).__name__})')
    return value


class ResLayer(Sequential):
    """One stage: ``num_blocks`` blocks, the first one strided/projected.

    The shortcut projection is ``[pool, conv1x1, norm]`` with ``avg_down``
    (pool is ``nn.Identity`` at stride 1) and ``[conv1x1, norm]`` otherwise.
    ``drop_path_rate`` is a float or one rate per block.
    """

    def __init__(self,
                 block,
                 num_blocks: int,
                 in_channels: int,
                 out_channels: int,
                 expansion: Optional[int] = None,
                 stride: int = 1,
                 avg_down: bool = False,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN'),
                 drop_path_rate: Union[float, Sequence[float]] = 0.0,
                 **kwargs):
        check_options(self, locals(), dict(
            block=_check_block_class,
            num_blocks=check_positive_int,
            in_channels=check_positive_int,
            out_channels=check_positive_int,
            expansion=optional(check_positive_int),
            stride=check_positive_int,
            avg_down=check_bool,
            conv_cfg=optional(check_conv_cfg),
            norm_cfg=check_norm_cfg))
        if isinstance(drop_path_rate, (int, float)):
            drop_path_rate = [float(drop_path_rate)] * num_blocks
        if len(drop_path_rate) != num_blocks:
            raise ValueError(f'drop_path_rate has {len(drop_path_rate)} '
                             f'rates for {num_blocks} blocks')
        expansion = expansion or block.expansion
        downsample = None
        if stride != 1 or in_channels != out_channels:
            layers = []
            conv_stride = stride
            if avg_down:
                conv_stride = 1
                layers.append(
                    nn.AvgPool2d(
                        stride,
                        stride,
                        ceil_mode=True,
                        count_include_pad=False)
                    if stride != 1 else nn.Identity())
            layers += [
                build_conv_layer(
                    conv_cfg,
                    in_channels,
                    out_channels,
                    1,
                    stride=conv_stride,
                    bias=False),
                build_norm_layer(norm_cfg, out_channels)[1]
            ]
            downsample = nn.Sequential(*layers)
        blocks = []
        for i in range(num_blocks):
            blocks.append(
                block(
                    in_channels=in_channels if i == 0 else out_channels,
                    out_channels=out_channels,
                    expansion=expansion,
                    stride=stride if i == 0 else 1,
                    downsample=downsample if i == 0 else None,
                    conv_cfg=conv_cfg,
                    norm_cfg=norm_cfg,
                    drop_path_rate=drop_path_rate[i],
                    **kwargs))
        super().__init__(*blocks)


class ResNetStages(Deployable, ResNet):
    """The shared ResNet-style backbone of mmsk's families.

    Families set ``arch_settings`` (``depth -> (block, stage_blocks)``) and
    pass block arguments; the builder does the rest. On top of mmpretrain's
    ResNet arguments it takes ``groups``/``width_per_group`` (ResNeXt),
    ``attn_cfg`` (attention slot of every block), ``act_cfg``, ``cifar_stem``
    (3x3 stride-1 stem without max-pool, for small images), and checks every
    option, raising ``ValueError``/``KeyError`` that name it.

    Stem and downsampling options (the ResNet-C/D/T tricks):

    - ``deep_stem``: three 3x3 convs of widths ``deep_stem_channels`` (two
      ints; default ``stem_channels // 2`` twice) and ``stem_channels``;
      ``deep_stem_channels=(24, 32)`` with ``stem_channels=64`` is timm's
      tiered stem (the ``t`` models).
    - ``avg_down``: average-pooled projection shortcuts.
    - ``aa_downsample``: anti-aliased downsampling; every strided conv of the
      blocks runs at stride 1 followed by an average pool, and the stem's
      max-pool is a 2x2 average pool (timm's ``aa`` models).
    - ``stem_pool``: ``'max'`` (3x3 stride-2 max-pool) or ``'none'`` (the
      deep stem's last conv strides instead; timm's ``33ts``).

    ``deploy=True`` builds the inference form that ``switch_to_deploy()``
    makes (every conv + BatchNorm folded, the two-branch SK select step as
    one logit; see :mod:`mmsk.models.deploy`), so folded checkpoints load.

    Every option is type-checked by one table (``norm_eval='no'`` is an
    error, not a truthy string); ``out_indices`` is any sequence of distinct
    stage indices in increasing order (``range(4)`` too); an unknown option
    is reported here, with its close matches, not by a block. ``forward``
    checks the input's rank, channels and dtype first.

    ``with_cp=True`` checkpoints the stem too, not only the blocks (timm
    and mmpretrain checkpoint the blocks): at 224x224 the stem's maps (its
    conv and norm outputs, the max-pool indices) are about half of what a
    checkpointed ResNet-18 step keeps. Its recomputation does not update
    the stem's BatchNorm statistics a second time either.

    Width options: ``stage_channels`` gives each stage's output channels
    (default ``base_channels * expansion * 2**i``); ``final_conv_channels``
    ends the last stage with a 1x1 conv + norm + act to that width (timm's
    byobnet ``num_features``).
    """

    arch_settings: dict = {}
    #: What to say about a foreign option name (e.g. mmpretrain's).
    option_hints: dict = {}
    #: Block arguments the stage builder sets itself.
    _builder_keys = frozenset(
        ('in_channels', 'out_channels', 'expansion', 'stride', 'dilation',
         'downsample', 'style', 'with_cp', 'conv_cfg', 'norm_cfg',
         'drop_path_rate', 'groups', 'width_per_group', 'base_channels',
         'attn_cfg', 'act_cfg', 'init_cfg'))

    def __init__(self,
                 depth: int,
                 in_channels: int = 3,
                 stem_channels: int = 64,
                 base_channels: int = 64,
                 expansion: Optional[int] = None,
                 num_stages: int = 4,
                 strides: Sequence[int] = (1, 2, 2, 2),
                 dilations: Sequence[int] = (1, 1, 1, 1),
                 out_indices: Union[int, Sequence[int]] = (3, ),
                 style: str = 'pytorch',
                 deep_stem: bool = False,
                 deep_stem_channels: Optional[Sequence[int]] = None,
                 cifar_stem: bool = False,
                 avg_down: bool = False,
                 aa_downsample: bool = False,
                 stem_pool: str = 'max',
                 stage_channels: Optional[Sequence[int]] = None,
                 final_conv_channels: Optional[int] = None,
                 frozen_stages: int = -1,
                 groups: int = 1,
                 width_per_group: Optional[int] = None,
                 attn_cfg: Optional[dict] = None,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 act_cfg: dict = dict(type='ReLU'),
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 zero_init_residual: bool = True,
                 drop_path_rate: float = 0.0,
                 deploy: bool = False,
                 init_cfg=[
                     dict(type='Kaiming', layer=['Conv2d']),
                     dict(
                         type='Constant',
                         val=1,
                         layer=['_BatchNorm', 'GroupNorm'])
                 ],
                 **block_cfg):
        name = type(self).__name__
        if 'pretrained' in block_cfg:
            # mmseg's EncoderDecoder passes its model-level pretrained= on
            raise TypeError(
                f'{name} takes no pretrained=; load weights with init_cfg='
                f'dict(type="Pretrained", checkpoint=..., prefix=...) (in an '
                f'mmseg config also set model.pretrained=None)')
        if depth not in self.arch_settings:
            raise KeyError(f'invalid depth {depth!r} for {name}; choose '
                           f'from {sorted(self.arch_settings)}')
        num_stages = check_option(self, 'num_stages', num_stages,
                                  int_in(1, 4))
        for key, value in (('strides', strides), ('dilations', dilations)):
            if isinstance(value, (list, tuple)) and \
                    len(value) != num_stages:
                raise ValueError(
                    f'{name}: {key} has {len(value)} entries for '
                    f'num_stages={num_stages}; give one per stage, e.g. '
                    f'strides={(1, 2, 2, 2)[:num_stages]} and dilations='
                    f'{(1, ) * num_stages} (and out_indices within '
                    f'[0, {num_stages - 1}])')
        opts = check_options(self, locals(), dict(
            in_channels=check_positive_int,
            stem_channels=check_positive_int,
            base_channels=check_positive_int,
            expansion=optional(check_positive_int),
            strides=seq_of(check_positive_int, num_stages),
            dilations=seq_of(check_positive_int, num_stages),
            out_indices=out_indices_in(num_stages),
            style=one_of('pytorch', 'caffe'),
            deep_stem=check_bool,
            deep_stem_channels=optional(seq_of(check_positive_int, 2)),
            cifar_stem=check_bool,
            avg_down=check_bool,
            aa_downsample=check_bool,
            stem_pool=one_of('max', 'none'),
            stage_channels=optional(seq_of(check_positive_int, num_stages)),
            final_conv_channels=optional(check_positive_int),
            frozen_stages=int_in(-1, num_stages),
            groups=check_positive_int,
            width_per_group=optional(check_positive_int),
            zero_init_residual=check_bool,
            **BACKBONE_OPTIONS,
        ))
        self._check_block_cfg(self.arch_settings[depth][0], block_cfg)
        out_indices = opts['out_indices']
        stage_channels = opts['stage_channels']
        if deep_stem and cifar_stem:
            raise ValueError(f'{name}: deep_stem and cifar_stem are '
                             f'exclusive')
        if deep_stem_channels is None:
            if deep_stem and stem_channels % 2:
                raise ValueError(f'{name}: deep_stem needs an even '
                                 f'stem_channels, got {stem_channels}')
            deep_stem_channels = (stem_channels // 2, ) * 2
        elif not deep_stem:
            raise ValueError(f'{name}: deep_stem_channels needs '
                             f'deep_stem=True')
        if aa_downsample and cifar_stem:
            raise ValueError(f'{name}: aa_downsample and cifar_stem are '
                             f'exclusive (the CIFAR stem does not downsample)')
        if stem_pool == 'none' and not deep_stem:
            raise ValueError(f'{name}: stem_pool="none" needs deep_stem=True '
                             f'(its last conv takes the stride)')
        if stem_pool == 'none' and aa_downsample:
            raise ValueError(f'{name}: stem_pool="none" and aa_downsample are '
                             f'exclusive')
        block_expansion = opts['expansion'] or \
            self.arch_settings[depth][0].expansion
        for i, channels in enumerate(stage_channels or ()):
            if channels % block_expansion:
                raise ValueError(
                    f'{name}: stage_channels[{i}] ({channels}) must be '
                    f'divisible by the block expansion ({block_expansion})')

        # Read by the stem and stage hooks that ResNet.__init__ calls.
        self.act_cfg = act_cfg
        self.cifar_stem = cifar_stem
        self.deep_stem_channels = tuple(deep_stem_channels)
        self.aa_downsample = aa_downsample
        self.stem_pool = stem_pool
        self.stage_channels = stage_channels
        if aa_downsample:
            block_cfg['aa_downsample'] = True
        self._block_kwargs = dict(
            groups=groups,
            width_per_group=width_per_group,
            base_channels=base_channels,
            attn_cfg=attn_cfg,
            act_cfg=act_cfg,
            **block_cfg)
        super().__init__(
            depth=depth,
            in_channels=in_channels,
            stem_channels=stem_channels,
            base_channels=base_channels,
            expansion=expansion,
            num_stages=num_stages,
            strides=opts['strides'],
            dilations=opts['dilations'],
            out_indices=out_indices,
            style=style,
            deep_stem=deep_stem,
            avg_down=avg_down,
            frozen_stages=frozen_stages,
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg,
            norm_eval=norm_eval,
            with_cp=with_cp,
            zero_init_residual=zero_init_residual,
            init_cfg=init_cfg,
            drop_path_rate=drop_path_rate)
        if final_conv_channels is not None:
            last = getattr(self, self.res_layers[-1])
            last.append(
                ConvModule(
                    last[-1].out_channels,
                    final_conv_channels,
                    1,
                    conv_cfg=conv_cfg,
                    norm_cfg=norm_cfg,
                    act_cfg=act_cfg))
            self.feat_dim = final_conv_channels
            # ResNet froze the stages before the conv was appended
            self._freeze_stages()
        self.in_channels = in_channels
        self.out_channels = tuple(
            getattr(self, name)[-1].out_channels for name in self.res_layers)
        check_option(self, 'deploy', deploy, check_bool)
        self.deploy = False
        if deploy:
            fold_for_deploy(self)

    def _check_block_cfg(self, block: type, block_cfg: dict):
        """Options that are not the backbone's go to its blocks: refuse,
        here and once, those that the blocks do not take either."""
        own = getattr(block, 'sets_itself', {})
        known = accepted_kwargs(type(self)) | (
            accepted_kwargs(block) - self._builder_keys - set(own))
        check_unknown_keys(self, block_cfg, known,
                           hints={**own, **self.option_hints})

    def forward(self, x: torch.Tensor) -> tuple:
        self.check_not_training_folded()
        check_input(self, x, self.in_channels, self._stem_weight())
        check_sync_bn(self, x)
        return forward_batch_checked(self, self._forward, x)

    def _forward(self, x: torch.Tensor) -> tuple:
        # mmpretrain's ResNet.forward, with the stem checkpointed too
        if self.with_cp and torch.is_grad_enabled() and any(
                p.requires_grad for p in self._stem_parameters()):
            x = checkpoint_module(self, self._stem_forward, x)
        else:
            x = self._stem_forward(x)
        outs = []
        for i, layer_name in enumerate(self.res_layers):
            x = getattr(self, layer_name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def _stem_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deep_stem:
            x = self.stem(x)
        else:
            x = self.relu(self.norm1(self.conv1(x)))
        return self.maxpool(x)

    def _stem_parameters(self):
        if self.deep_stem:
            return self.stem.parameters()
        return itertools.chain(self.conv1.parameters(),
                               self.norm1.parameters())

    def _stem_weight(self) -> torch.Tensor:
        return self.stem[0].conv.weight if self.deep_stem else \
            self.conv1.weight

    def make_res_layer(self, **kwargs):
        if self.stage_channels is not None:
            index = len(self.res_layers)  # ResNet appends after each call
            if index:
                kwargs['in_channels'] = self.stage_channels[index - 1]
            kwargs['out_channels'] = self.stage_channels[index]
        return ResLayer(**kwargs, **self._block_kwargs)

    def _make_stem_layer(self, in_channels, stem_channels):
        layer_cfg = dict(
            conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg,
            act_cfg=self.act_cfg)
        if self.deep_stem:
            first, second = self.deep_stem_channels
            last_stride = 2 if self.stem_pool == 'none' else 1
            self.stem = nn.Sequential(
                ConvModule(in_channels, first, 3, 2, 1, **layer_cfg),
                ConvModule(first, second, 3, 1, 1, **layer_cfg),
                ConvModule(second, stem_channels, 3, last_stride, 1,
                           **layer_cfg))
        else:
            kernel, stride = (3, 1) if self.cifar_stem else (7, 2)
            self.conv1 = build_conv_layer(
                self.conv_cfg,
                in_channels,
                stem_channels,
                kernel_size=kernel,
                stride=stride,
                padding=kernel // 2,
                bias=False)
            self.norm1_name, norm1 = build_norm_layer(
                self.norm_cfg, stem_channels, postfix=1)
            self.add_module(self.norm1_name, norm1)
            self.relu = build_activation_layer(inplace_act_cfg(self.act_cfg))
        if self.cifar_stem or self.stem_pool == 'none':
            self.maxpool = nn.Identity()
        elif self.aa_downsample:
            self.maxpool = nn.AvgPool2d(2)
        else:
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    def train(self, mode: bool = True):
        # mmpretrain's ResNet.train returns None; nn.Module's returns self.
        super().train(mode)
        return self

    def init_weights(self):
        # BaseModule's init (init_cfg, incl. Pretrained with prefix), then
        # the blocks' own zero-init instead of ResNet's class checks. A
        # Pretrained checkpoint must cover the whole backbone, and once
        # loaded (alone or in a list of init_cfgs) it is not zeroed. A
        # second call changes nothing (BaseModule only warns), so the
        # zero-init does not wipe trained weights either.
        first = not self._is_init
        if first:
            check_pretrained(self, self.init_cfg)
        super(ResNet, self).init_weights()
        if not first or pretrained_cfg(self.init_cfg) is not None:
            return
        if self.zero_init_residual:
            for m in self.modules():
                if isinstance(m, _ResidualBlock):
                    m.zero_init_last()
