"""Selective Kernel unit (Li et al., CVPR 2019, https://arxiv.org/abs/1903.06586).

Split: ``M`` branches of different receptive field; fuse: sum them; select:
:class:`ChannelAttention` over the fused map gives, per channel, a softmax
across the branches, and the output is the weighted sum of the branches.

The three forms users know are presets of :data:`SK_FORMS`:

- ``paper``: 3x3 grouped convs with dilation 1 and 2, ``d = max(C/16, 32)``.
- ``pytorchinsight``: one dense 3x3 and one 32-group 3x3, no dilation,
  ``d = C/16`` (the widely copied PytorchInsight SK-ResNet).
- ``timm``: split input (each branch sees ``C_in / M`` channels), dilation 1
  and 2, reduced width rounded to a divisor (timm's ``skresnet*``).
"""
import copy
from typing import Optional, Sequence

import torch
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule, ModuleList
from torch.nn.modules.instancenorm import _InstanceNorm

from mmsk.registry import register_model
from mmsk.utils import (check_act_cfg, check_bool, check_channels,
                        check_conv_cfg, check_non_negative_int,
                        check_norm_cfg, check_option, check_options,
                        check_positive_int,
                        check_positive_number, instance_of, one_of, optional,
                        registered_class)
from ..deploy import Deployable
from .attention import ChannelAttention, spatial_mean
from .config import fast_path_enabled
from .phase_conv import PhaseConv2d
from .recompute import recomputable

#: Branch layouts and reduction rules of the known SK forms. ``groups=None``
#: in a branch means "the unit's ``groups``" (the block's cardinality).
SK_FORMS = {
    'paper':
    dict(
        branches=(dict(dilation=1), dict(dilation=2)),
        reduction=16,
        min_channels=32,
        divisor=None,
        split_input=False),
    'pytorchinsight':
    dict(
        branches=(dict(dilation=1, groups=1), dict(dilation=1, groups=32)),
        reduction=16,
        min_channels=0,
        divisor=None,
        split_input=False),
    'timm':
    dict(
        branches=(dict(dilation=1), dict(dilation=2)),
        reduction=16,
        min_channels=0,
        divisor=8,
        split_input=True),
}

_BRANCH_KEYS = {'kernel_size', 'dilation', 'groups'}


def attention_weights(attn_output: torch.Tensor,
                      num_paths: int) -> torch.Tensor:
    """Per-channel branch weights ``(B, M, C)`` (summing to one over ``M``)
    from the output of an SK unit's ``attn`` module, e.g. read by a forward
    hook on ``sk.attn``: the softmax weights ``(B, M, C, 1, 1)``, or after
    ``switch_to_deploy`` with two branches the first branch's weight
    ``(B, 1, C, 1, 1)``."""
    weights = attn_output.flatten(2)
    if weights.shape[1] == num_paths:
        return weights
    if num_paths == 2 and weights.shape[1] == 1:
        return torch.cat([weights, 1 - weights], dim=1)
    raise ValueError(f'attention output of shape {tuple(attn_output.shape)} '
                     f'does not hold weights for {num_paths} branches')


def sk_form(name: str, **overrides) -> dict:
    """The keyword arguments of :class:`SKConv` for a named form."""
    if name not in SK_FORMS:
        raise ValueError(
            f'sk_form must be one of {sorted(SK_FORMS)}, got {name!r}')
    cfg = copy.deepcopy(SK_FORMS[name])
    cfg.update(overrides)
    return cfg


@register_model
class SKConv(Deployable, BaseModule):
    """Selective Kernel convolution: split, fuse, select.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels of every branch and of the unit.
        stride (int): Stride of every branch. Defaults to 1.
        dilation (int): Dilation of the unit as a whole (dense prediction);
            multiplies each branch's own dilation. Defaults to 1.
        groups (int): Default groups of a branch conv. Defaults to 1.
        branches (Sequence[dict]): One dict per branch, keys ``kernel_size``
            (odd, default 3), ``dilation`` (default 1), ``groups`` (default
            ``groups``; capped at the branch's input and output channels,
            so that the 32 groups of a form also fit a narrower unit, as
            timm caps them). ``M = len(branches) >= 2``.
        reduction (float): ``r`` of ``d = max(C / r, L)``. Defaults to 16.
        min_channels (int): ``L``. Defaults to 32.
        divisor (int, optional): Round ``C / r`` to a multiple of this
            instead of flooring it. Defaults to None.
        split_input (bool): Feed each branch ``in_channels / M`` channels
            of the input instead of all of it. Defaults to False.
        conv_cfg, norm_cfg, act_cfg (dict): Layer configs of the branches
            and of the attention's reduce step.
        attn_norm_cfg (dict | None | str): Norm of the attention's reduce
            step. ``'same'`` (default): ``norm_cfg``. BatchNorm there sees
            one pooled vector per image, so it needs 2+ images per device in
            train mode; ``None`` (no norm; the reduce conv gets a bias) or
            ``dict(type='GN', num_groups=1)`` train with batch 1. A GN
            whose groups hold fewer than 3 of the ``d`` channels is refused
            (one value a group normalises to 0: a constant attention), so a
            backbone's ``GN(num_groups=32)`` needs its own
            ``attn_norm_cfg``.

    The fast forward squeezes the branches one by one (the mean of the sum is
    the sum of the means) and selects with ``lerp(u2, u1, w1)`` for two
    branches (``w1 * u1 + (1 - w1) * u2`` in one pass; for more, a running
    weighted sum), with no 5-D stack and no fused map; the paper's stack /
    softmax-weighted sum is the reference forward
    (:func:`~mmsk.models.layers.reference_forward`). In training, inside an
    mmsk block, the selected map is recomputed for the backward instead of
    kept (:mod:`~mmsk.models.layers.recompute`). A branch whose stride equals
    its dilation (the dilation-2 branch of a stride-2 unit) is a
    :class:`~mmsk.models.layers.phase_conv.PhaseConv2d`: in the fast path it
    runs as a plain conv on every second row and column, the same sums.

    Example:
        >>> sk = SKConv(64, 64, groups=32)
        >>> sk(torch.rand(2, 64, 16, 16)).shape
        torch.Size([2, 64, 16, 16])
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 stride: int = 1,
                 dilation: int = 1,
                 groups: int = 1,
                 branches: Sequence[dict] = SK_FORMS['paper']['branches'],
                 reduction: float = 16,
                 min_channels: int = 32,
                 divisor: Optional[int] = None,
                 split_input: bool = False,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU'),
                 attn_norm_cfg='same',
                 init_cfg=None):
        super().__init__(init_cfg)
        check_options(self, locals(), dict(
            in_channels=check_positive_int,
            out_channels=check_positive_int,
            stride=check_positive_int,
            dilation=check_positive_int,
            groups=check_positive_int,
            branches=instance_of(list, tuple),
            reduction=check_positive_number,
            min_channels=check_non_negative_int,
            divisor=optional(check_positive_int),
            split_input=check_bool,
            conv_cfg=optional(check_conv_cfg),
            norm_cfg=optional(check_norm_cfg),
            act_cfg=check_act_cfg))
        if len(branches) < 2:
            raise ValueError(f'{type(self).__name__}: branches must list at '
                             f'least 2 branch dicts (M >= 2), got '
                             f'{branches!r}')
        self.num_paths = len(branches)
        self.split_input = split_input
        branch_in = in_channels
        if split_input:
            if in_channels % self.num_paths:
                raise ValueError(
                    f'{type(self).__name__}: split_input needs in_channels '
                    f'({in_channels}) divisible '
                    f'by the number of branches ({self.num_paths})')
            branch_in = in_channels // self.num_paths
        self.in_channels = in_channels
        self.out_channels = out_channels

        self.paths = ModuleList()
        for i, branch in enumerate(branches):
            if not isinstance(branch, dict):
                raise ValueError(f'{type(self).__name__}: branches[{i}] must '
                                 f'be a dict, got {branch!r}')
            unknown = set(branch) - _BRANCH_KEYS
            if unknown:
                raise KeyError(f'{type(self).__name__}: branches[{i}] has '
                               f'unknown keys '
                               f'{sorted(unknown)}; allowed: '
                               f'{sorted(_BRANCH_KEYS)}')
            k = branch.get('kernel_size', 3)
            if not isinstance(k, int) or isinstance(k, bool) or k < 1 or \
                    k % 2 == 0:
                raise ValueError(f'{type(self).__name__}: branches[{i}].'
                                 f'kernel_size must be an odd positive int, '
                                 f'got {k!r}')
            d = dilation * check_option(self, f'branches[{i}].dilation',
                                        branch.get('dilation', 1),
                                        check_positive_int)
            g = branch.get('groups')
            g = groups if g is None else check_option(
                self, f'branches[{i}].groups', g, check_positive_int)
            g = min(g, out_channels, branch_in)
            if branch_in % g or out_channels % g:
                raise ValueError(
                    f'{type(self).__name__}: branches[{i}].groups={g} must '
                    f'divide the branch input '
                    f'({branch_in}) and output ({out_channels}) channels')
            self.paths.append(
                ConvModule(
                    branch_in,
                    out_channels,
                    k,
                    stride=stride,
                    padding=d * (k - 1) // 2,
                    dilation=d,
                    groups=g,
                    # stride == dilation: runs on the grid it reads
                    conv_cfg=dict(type=PhaseConv2d) if conv_cfg is None
                    and stride == d > 1 else conv_cfg,
                    norm_cfg=norm_cfg,
                    act_cfg=act_cfg))
        same = attn_norm_cfg == 'same'
        if same:
            attn_norm_cfg = norm_cfg
        elif attn_norm_cfg is not None:
            if not isinstance(attn_norm_cfg, dict) or \
                    'type' not in attn_norm_cfg:
                raise ValueError(
                    f'{type(self).__name__}: attn_norm_cfg must be "same", '
                    f'None or a dict with a "type", got {attn_norm_cfg!r}')
            check_option(self, 'attn_norm_cfg', attn_norm_cfg,
                         check_norm_cfg)
        attn_norm = None if attn_norm_cfg is None else \
            registered_class(attn_norm_cfg)
        if isinstance(attn_norm, type) and \
                issubclass(attn_norm, _InstanceNorm):
            source = ' (norm_cfg, by the default attn_norm_cfg="same")' \
                if same else ''
            raise ValueError(
                f'{type(self).__name__}: attn_norm_cfg {attn_norm_cfg!r}'
                f'{source} is an InstanceNorm, but the attention '
                f'normalises the pooled 1x1 descriptor, one value per '
                f'channel, which '
                f'InstanceNorm cannot normalise. Set attn_norm_cfg=None (no '
                f'norm) or attn_norm_cfg=dict(type="BN")')
        self.attn = ChannelAttention(
            out_channels,
            num_paths=self.num_paths,
            reduction=reduction,
            divisor=divisor,
            min_channels=min_channels,
            bias=False,
            conv_cfg=conv_cfg,
            norm_cfg=attn_norm_cfg,
            act_cfg=act_cfg)

    def branch_outputs(self, x: torch.Tensor) -> list:
        """The outputs ``U_1 .. U_M`` of the branches (split step)."""
        check_channels(self, x, self.in_channels)
        if self.split_input:
            # indexed, not zipped: symbolic tracing cannot iterate a split
            chunks = torch.chunk(x, self.num_paths, dim=1)
            return [path(chunks[i]) for i, path in enumerate(self.paths)]
        return [path(x) for path in self.paths]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.branch_outputs(x)
        if not fast_path_enabled():
            return self.forward_reference(feats)
        # the attention squeezes the fused map by global average pooling:
        # pool each branch and sum the pooled vectors (the same value)
        # instead of writing the full fused map
        pooled = spatial_mean(feats[0])
        for u in feats[1:]:
            pooled = pooled + spatial_mean(u)
        weights = self.attn(pooled)
        # the next conv would keep the output for its backward; the select
        # step's inputs are kept anyway, so it is recomputed from them
        return recomputable(
            self.select(feats, weights), lambda: self.select(feats, weights))

    def select(self, feats: list, weights: torch.Tensor) -> torch.Tensor:
        """The fast select step: ``sum_i w_i * u_i`` from the attention's
        weights ``(B, M, C, 1, 1)`` (or ``(B, 1, C, 1, 1)`` collapsed).

        The weights take the branches' dtype: under autocast on a GPU the
        softmax runs in fp32 while the branches are fp16 / bf16, and
        ``lerp`` takes one dtype (a no-op in fp32 and under CPU autocast,
        where the softmax keeps its input's dtype)."""
        weights = weights.to(feats[0].dtype)
        if self.num_paths == 2:
            # w1 * u1 + w2 * u2 with w2 = 1 - w1: one pass, no 5-D stack
            return torch.lerp(feats[1], feats[0], weights[:, 0])
        out = feats[0] * weights[:, 0]
        for i in range(1, self.num_paths):
            out = torch.addcmul(out, feats[i], weights[:, i])
        return out

    def forward_reference(self, feats: list) -> torch.Tensor:
        """The paper's select step: stack, fuse by summing, softmax-weighted
        sum over the branches."""
        feats = torch.stack(feats, dim=1)
        weights = attention_weights(
            self.attn(feats.sum(dim=1)), self.num_paths)
        return (feats * weights[..., None, None]).sum(dim=1)


# SKAttention's ``sk_form`` argument shadows the function inside __init__.
_form_kwargs = sk_form


@register_model
class SKAttention(SKConv):
    """A Selective Kernel unit that keeps its input's shape: a plug-in.

    :class:`SKConv` with ``out_channels = in_channels`` and stride 1, built
    from ``in_channels`` alone, so mmcv's ``build_plugin_layer`` can insert it
    wherever it inserts SE (it is named ``sk_attention`` there), e.g. after
    the 3x3 of mmdet's ResNet bottlenecks::

        plugins=[dict(cfg=dict(type='mmsk.SKAttention'),
                      stages=(False, True, True, True),
                      position='after_conv2')]

    Args:
        in_channels (int): Input = output channels.
        sk_form (str): Preset of :data:`SK_FORMS`. Defaults to ``'paper'``.
        groups (int): Groups of the branch convs that do not set their own
            (the paper's cardinality, 32). Defaults to 32.
        **kwargs: Overrides of the form's :class:`SKConv` arguments
            (``branches``, ``reduction``, ``min_channels``, ``divisor``,
            ``split_input``, ``dilation``, ``conv_cfg``, ``norm_cfg``,
            ``act_cfg``).

    Example:
        >>> sk = SKAttention(64)
        >>> sk(torch.rand(2, 64, 16, 16)).shape
        torch.Size([2, 64, 16, 16])
    """

    def __init__(self,
                 in_channels: int,
                 sk_form: str = 'paper',
                 groups: int = 32,
                 **kwargs):
        for key in ('out_channels', 'stride'):
            if key in kwargs:
                raise ValueError(f'SKAttention keeps the shape of its input '
                                 f'and takes no {key}; use SKConv instead')
        check_options(self, locals(), dict(
            in_channels=check_positive_int,
            sk_form=one_of(*sorted(SK_FORMS)),
            groups=check_positive_int))
        super().__init__(
            in_channels, in_channels, groups=groups,
            **_form_kwargs(sk_form, **kwargs))
        # Module order only (same keys, same maths): list the branches after
        # the attention, so that a network ending in this plug-in has a
        # branch's BatchNorm on the feature map as its last norm layer, not
        # the attention's BatchNorm on pooled 1x1 features. mmpretrain's
        # tools/visualization/vis_cam.py takes the last norm layer as its
        # default Grad-CAM target.
        self._modules['paths'] = self._modules.pop('paths')

