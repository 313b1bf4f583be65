"""The channel-attention core shared by SE and SK, and the SE module.

Squeeze-and-Excitation (Hu et al., https://arxiv.org/abs/1709.01507) and the
select step of Selective Kernel (Li et al., https://arxiv.org/abs/1903.06586)
compute the same thing: squeeze a feature map by global average pooling,
reduce the channels to ``d``, expand back to ``C * num_paths`` and gate. They
differ only in the gate: a sigmoid for one path (SE), a softmax across the
``M`` paths for each channel (SK).
"""
from typing import Optional

import torch
from mmcv.cnn import build_activation_layer, build_conv_layer, build_norm_layer
from mmengine.model import BaseModule
from mmpretrain.models.utils import make_divisible
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from mmsk.registry import register_model
from mmsk.utils import (check_act_cfg, check_bool, check_channels,
                        check_conv_cfg, check_non_negative_int, check_norm_cfg,
                        check_options, check_positive_int,
                        check_positive_number, optional)
from ..deploy import Deployable
from .config import fast_eager_backward


class _SpatialMean(torch.autograd.Function):
    """``x.mean((2, 3), keepdim=True)`` whose gradient is the broadcast
    view ``(grad / (H * W)).expand(x.shape)``: the values of torch's
    ``MeanBackward`` (``grad.expand(...) / (H * W)``, the same division of
    the same numbers), without writing them out as a full-size map (in
    NCHW, whatever the layout of ``x``) before they are added to the other
    gradient of ``x``."""

    @staticmethod
    def forward(ctx, x):
        ctx.shape = x.shape
        return x.mean((2, 3), keepdim=True)

    @staticmethod
    def backward(ctx, grad):
        return (grad / (ctx.shape[2] * ctx.shape[3])).expand(ctx.shape)

    @staticmethod
    def jvp(ctx, tangent):
        return tangent.mean((2, 3), keepdim=True)  # forward-mode AD


def spatial_mean(x: torch.Tensor) -> torch.Tensor:
    """Global average pooling ``x.mean((2, 3), keepdim=True)`` of a
    ``(B, C, H, W)`` map; in mmsk's fast path with gradients its backward
    hands on a broadcast view instead of a full-size map (same values).
    Under tracers and compilers, and in the reference forward, the plain
    ``mean``."""
    # the tracers first: under fx, x.requires_grad is a proxy
    if not (fast_eager_backward() and x.requires_grad):
        return x.mean((2, 3), keepdim=True)
    return _SpatialMean.apply(x)


def reduced_channels(channels: int,
                     reduction: float = 16,
                     divisor: Optional[int] = 8,
                     min_channels: int = 0) -> int:
    """Width ``d`` of the squeezed descriptor.

    ``d = max(round_to(channels / reduction, divisor), min_channels)``; with
    ``divisor=None`` the plain ``max(channels // reduction, min_channels)`` of
    the SKNet paper (``d = max(C / r, L)``).

    >>> reduced_channels(256, reduction=16, divisor=None, min_channels=32)
    32
    >>> reduced_channels(64, reduction=8, divisor=16)
    16
    """
    check_options('reduced_channels', locals(), dict(
        channels=check_positive_int,
        reduction=check_positive_number,
        divisor=optional(check_positive_int),
        min_channels=check_non_negative_int))
    if divisor is None:
        width = int(channels // reduction)
    else:
        width = make_divisible(channels / reduction, divisor)
    return max(width, min_channels, 1)


@register_model
class ChannelAttention(Deployable, BaseModule):
    """Squeeze -> reduce -> act -> expand -> gate, over ``num_paths`` paths.

    Args:
        in_channels (int): Channels ``C`` of each path.
        num_paths (int): 1 gives SE weights ``(B, C, 1, 1)`` through
            ``gate_cfg``; ``M >= 2`` gives SK weights ``(B, M, C, 1, 1)``
            that sum to one across the paths (softmax). Defaults to 1.
        reduction (float): Channel reduction ratio ``r``. Defaults to 16.
        divisor (int, optional): Round ``C / r`` to a multiple of this
            (``None``: floor division). Defaults to 8.
        min_channels (int): Floor ``L`` for the reduced width. Defaults to 0.
        attn_channels (int, optional): Reduced width, overriding the rule
            above. Defaults to None.
        bias (bool): Bias in the two 1x1 convs. Defaults to True.
        conv_cfg (dict, optional): Conv layer config. Defaults to None.
        norm_cfg (dict, optional): Norm after the reduce conv (SK uses BN).
            Without a norm the reduce conv has a bias.
        act_cfg (dict): Activation after the reduce step.
        gate_cfg (dict): Gate for ``num_paths == 1``. Defaults to Sigmoid.

    After :meth:`switch_to_deploy` with two paths, the select step is one
    ``C``-wide logit ``z1 - z2`` and the output is ``(B, 1, C, 1, 1)``, the
    weight of the first path (``sigmoid(z1 - z2)``, the softmax's value);
    :func:`~mmsk.models.layers.selective_kernel.attention_weights` reads
    either form as per-path weights.

    Example:
        >>> attn = ChannelAttention(64, num_paths=2)
        >>> attn(torch.rand(2, 64, 8, 8)).shape
        torch.Size([2, 2, 64, 1, 1])
    """

    def __init__(self,
                 in_channels: int,
                 num_paths: int = 1,
                 reduction: float = 16,
                 divisor: Optional[int] = 8,
                 min_channels: int = 0,
                 attn_channels: Optional[int] = None,
                 bias: bool = True,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = None,
                 act_cfg: dict = dict(type='ReLU'),
                 gate_cfg: dict = dict(type='Sigmoid'),
                 init_cfg=None):
        super().__init__(init_cfg)
        check_options(self, locals(), dict(
            in_channels=check_positive_int,
            num_paths=check_positive_int,
            reduction=check_positive_number,
            divisor=optional(check_positive_int),
            min_channels=check_non_negative_int,
            attn_channels=optional(check_positive_int),
            bias=check_bool,
            conv_cfg=optional(check_conv_cfg),
            norm_cfg=optional(check_norm_cfg),
            act_cfg=check_act_cfg,
            gate_cfg=check_act_cfg))
        if num_paths > 1 and gate_cfg != dict(type='Sigmoid'):
            raise ValueError(
                f'{type(self).__name__}: gate_cfg applies to one path; with '
                f'num_paths={num_paths} the weights are a softmax across '
                f'the paths, got gate_cfg={gate_cfg!r}')
        if attn_channels is None:
            attn_channels = reduced_channels(in_channels, reduction, divisor,
                                             min_channels)
        check_positive_int('attn_channels', attn_channels)
        self.in_channels = in_channels
        self.num_paths = num_paths
        self.attn_channels = attn_channels
        self.reduce = build_conv_layer(
            conv_cfg,
            in_channels,
            attn_channels,
            kernel_size=1,
            bias=bias or norm_cfg is None)
        groups = (norm_cfg or {}).get('num_groups')
        if norm_cfg is not None and norm_cfg.get('type') == 'GN' and \
                isinstance(groups, int) and attn_channels % groups:
            raise ValueError(
                f'{type(self).__name__}: norm_cfg {norm_cfg!r} (SK units: '
                f'attn_norm_cfg) needs num_groups to divide the reduced '
                f'width attn_channels={attn_channels} (in_channels='
                f'{in_channels} / reduction {reduction}, rounded, at least '
                f'min_channels); pick a num_groups that divides it')
        self.norm = (
            build_norm_layer(norm_cfg, attn_channels)[1]
            if norm_cfg is not None else nn.Identity())
        per_group = attn_channels // self.norm.num_groups if isinstance(
            self.norm, nn.GroupNorm) else None
        if per_group is not None and per_group < 3:
            raise ValueError(
                f'{type(self).__name__}: norm_cfg {norm_cfg!r} (SK units: '
                f'attn_norm_cfg, in SKNet sk_cfg=dict(attn_norm_cfg=...); '
                f'its default \'same\' is the backbone\'s norm_cfg) '
                f'splits the reduced width attn_channels='
                f'{attn_channels} into groups of {per_group} channel(s), '
                f'and the attention normalises the pooled 1x1 descriptor, '
                f'one value per channel: a group of one value normalises to '
                f'0, so the attention would give the same weights whatever '
                f'the input, and a group of two to -1 or +1. Give each group '
                f'3 or more channels, e.g. dict(type="GN", num_groups=1) '
                f'(over all channels, as LayerNorm), or no norm (for SK '
                f'units: attn_norm_cfg=None; the reduce conv gets a bias)')
        if isinstance(self.norm, _InstanceNorm):
            raise ValueError(
                f'{type(self).__name__}: norm_cfg {norm_cfg!r} is an '
                f'InstanceNorm, but the attention normalises the pooled 1x1 '
                f'descriptor, one value per channel, which InstanceNorm '
                f'cannot normalise. Use BN, GN or no norm (for SK units: '
                f'attn_norm_cfg=None, or attn_norm_cfg=dict(type="BN"))')
        self.act = build_activation_layer(act_cfg)
        self.expand = build_conv_layer(
            conv_cfg,
            attn_channels,
            in_channels * num_paths,
            kernel_size=1,
            bias=bias)
        self.gate = build_activation_layer(gate_cfg) if num_paths == 1 \
            else nn.Softmax(dim=1)
        #: Two paths whose select step is one C-wide logit (deploy form).
        self.collapsed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: the (fused) feature map ``(B, C, H, W)``."""
        check_channels(self, x, self.in_channels)
        w = spatial_mean(x)
        w = self.reduce(w)
        if isinstance(self.norm, _BatchNorm) and self.norm.training:
            _check_batch_for_bn(self, w)
        w = self.expand(self.act(self.norm(w)))
        if self.num_paths == 1:
            return self.gate(w)
        if self.collapsed:
            return self.gate(w).unsqueeze(1)
        # reshape, not unflatten: ONNX opsets below 13 (mmdeploy's default
        # 11) have no unflatten; w is pooled (1x1), and its batch size is
        # taken from it (fx traces this, and a batch of 0 still works)
        return self.gate(
            w.reshape(w.shape[0], self.num_paths, self.in_channels, 1, 1))

    def collapse_error(self):
        """Why :meth:`collapse_paths` cannot collapse this select step
        (None: it can, or there is nothing to collapse); checked for every
        module before ``switch_to_deploy`` changes anything."""
        if self.num_paths != 2 or self.collapsed:
            return None
        from ..deploy import plain_conv_types
        if type(self.expand) in plain_conv_types():
            return None
        return (f'{type(self).__name__}: cannot collapse a select conv of '
                f'type {type(self.expand).__module__}.'
                f'{type(self.expand).__name__} (conv_cfg); only '
                f'torch.nn.Conv2d and mmcv\'s Conv2d collapse')

    @torch.no_grad()
    def collapse_paths(self):
        """With two paths, the select step as one ``C``-wide logit
        ``z1 - z2`` (exact: ``softmax([z1, z2])[0] == sigmoid(z1 - z2)``);
        part of :meth:`switch_to_deploy`, a no-op otherwise."""
        if self.num_paths != 2 or self.collapsed:
            return
        error = self.collapse_error()
        if error:
            from ..deploy import CannotFoldError
            raise CannotFoldError(error)
        expand = self.expand
        c = self.in_channels
        diff = nn.Conv2d(
            self.attn_channels, c, 1, bias=expand.bias is not None).to(
                expand.weight)
        diff.weight.copy_(expand.weight[:c] - expand.weight[c:])
        if expand.bias is not None:
            diff.bias.copy_(expand.bias[:c] - expand.bias[c:])
        diff.requires_grad_(expand.weight.requires_grad)  # frozen stays so
        self.expand = diff
        self.gate = nn.Sigmoid()
        self.collapsed = True


def _check_batch_for_bn(module: nn.Module, pooled: torch.Tensor):
    """BatchNorm over pooled ``(B, d, 1, 1)`` features in train mode needs
    ``B >= 2``; say so instead of torch's error deep inside the norm."""
    if isinstance(module.norm, nn.SyncBatchNorm) or \
            isinstance(pooled, torch.fx.Proxy) or torch.jit.is_tracing():
        return
    if pooled.shape[0] == 1:
        raise ValueError(
            f'{type(module).__name__}: the attention\'s BatchNorm normalises '
            f'one pooled vector per image, so in train mode it needs a batch '
            f'of 2 or more images per device (got 1). Use a larger batch, '
            f'norm_eval=True, or a norm that works on one image: for SK '
            f'units attn_norm_cfg=None (no norm; the reduce conv gets a '
            f'bias) or attn_norm_cfg=dict(type="GN", num_groups=1).')


@register_model
class SEAttention(ChannelAttention):
    """Squeeze-and-Excitation: ``x * sigmoid(expand(act(reduce(pool(x)))))``.

    Usable as a block's attention slot (``attn_cfg=dict(type='SEAttention')``)
    and as an mmcv plugin (it takes ``in_channels``), e.g. in mmdet's ResNet
    ``plugins=[dict(cfg=dict(type='mmsk.SEAttention'), position=...)]``.

    Args:
        in_channels (int): Channels of the input.
        reduction (float): Reduction ratio. Defaults to 16.
        divisor (int, optional): Round the reduced width to this multiple,
            as mmpretrain's ``SELayer`` and timm's ``SEModule`` do.
        **kwargs: Other :class:`ChannelAttention` arguments (``act_cfg``,
            ``gate_cfg`` such as ``dict(type='HSigmoid')``, ``bias``, ...).

    Example:
        >>> se = SEAttention(64)
        >>> se(torch.rand(2, 64, 8, 8)).shape
        torch.Size([2, 64, 8, 8])
    """

    def __init__(self, in_channels: int, reduction: float = 16, **kwargs):
        check_options(self, locals(), dict(
            in_channels=check_positive_int, reduction=check_positive_number))
        if kwargs.pop('num_paths', 1) != 1:
            raise ValueError('SEAttention has one path (num_paths=1); '
                             'SKConv selects among several')
        super().__init__(in_channels, reduction=reduction, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * super().forward(x)
