"""Res2Net variants: Res2Net, Res2NeXt, v1b (deep stem / avg-down), and
SE-/SK-Res2Net through the attention slot (Gao et al., TPAMI 2021).

Paper: https://arxiv.org/abs/1904.01169. The Res2Net bottleneck is the shared
bottleneck whose 3x3 is :class:`~mmsk.models.layers.Res2Conv`. mmpretrain
already registers ``Res2Net``, so mmsk's is ``MultiScaleResNet``.
"""
from typing import Optional

from mmsk.registry import register_model
from mmsk.utils import check_options, check_positive_int, int_in
from ..layers.res2 import Res2Conv
from .resnet import Bottleneck, ResNetStages


#: Options of the Res2Net bottleneck (and backbone) on top of the shared ones.
RES2_OPTIONS = dict(scales=int_in(2, None), base_width=check_positive_int)


@register_model
class Res2Bottleneck(Bottleneck):
    """Bottleneck with hierarchical multi-scale splits.

    The middle width is ``floor(planes * base_width / base_channels) *
    groups * scales`` (26w4s: 104 at 64 planes).

    Args:
        scales (int): Number of splits. Defaults to 4.
        base_width (int): Width of a split (per group) at ``base_channels``
            planes. Defaults to 26.
        Others: as :class:`~mmsk.models.backbones.resnet.Bottleneck`
            (``groups`` > 1 gives Res2NeXt; ``attn_cfg`` SE-Res2Net).

    Example:
        >>> block = Res2Bottleneck(256, 256, scales=4, base_width=26)
        >>> block.mid_channels
        104
    """

    #: base-block arguments this block sets itself (-> what to pass)
    sets_itself = dict(conv2_cfg='the Res2Net split is conv2: pass scales')
    width_option = 'base_width'

    def __init__(self,
                 *args,
                 scales: int = 4,
                 base_width: int = 26,
                 width_per_group: Optional[int] = None,
                 **kwargs):
        if width_per_group is not None:
            raise ValueError('Res2Bottleneck takes base_width (per split), '
                             'not width_per_group')
        self._refuse_what_it_sets(kwargs)
        check_options(self, locals(), RES2_OPTIONS)
        super().__init__(
            *args,
            width_per_group=base_width,
            conv2_cfg=dict(scales=scales),
            **kwargs)

    @staticmethod
    def middle_width(planes, width_per_group, base_channels, groups,
                     conv2_cfg):
        # the paper's, timm's and mmpretrain's rule: the split width is
        # rounded down before it is multiplied by the splits (rounding the
        # product gave widths that the splits do not divide)
        return Bottleneck.middle_width(planes, width_per_group,
                                       base_channels, groups,
                                       conv2_cfg) * conv2_cfg['scales']

    def make_conv2(self, channels, stride, dilation, groups, stage_first,
                   **kwargs):
        return Res2Conv(
            channels,
            stride=stride,
            dilation=dilation,
            groups=groups,
            stage_first=stage_first,
            **kwargs)


@register_model
class MultiScaleResNet(ResNetStages):
    """Res2Net backbone on the shared stage builder.

    Args:
        depth (int): 50, 101, 152 (also 26 and 200).
        scales (int): Splits per bottleneck (``s``). Defaults to 4.
        base_width (int): Width per split (``w``). Defaults to 26.
        groups (int): Cardinality of the split convs; Res2NeXt-50 is
            ``groups=8, base_width=4``. Defaults to 1.
        attn_cfg (dict, optional): e.g. ``dict(type='SEAttention')`` for
            SE-Res2Net.
        deep_stem / avg_down (bool): ``True, True`` is the v1b form
            (Res2Net-50d/101d).
        **kwargs: The arguments of
            :class:`~mmsk.models.backbones.resnet.ResNetStages`.

    Example:
        >>> model = MultiScaleResNet(50, scales=4, base_width=26)
        >>> model(torch.rand(1, 3, 64, 64))[0].shape
        torch.Size([1, 2048, 2, 2])
    """

    arch_settings = {
        26: (Res2Bottleneck, (2, 2, 2, 2)),
        50: (Res2Bottleneck, (3, 4, 6, 3)),
        101: (Res2Bottleneck, (3, 4, 23, 3)),
        152: (Res2Bottleneck, (3, 8, 36, 3)),
        200: (Res2Bottleneck, (3, 24, 36, 3)),
    }

    def __init__(self,
                 depth: int,
                 scales: int = 4,
                 base_width: int = 26,
                 **kwargs):
        if kwargs.get('width_per_group') is not None:
            raise ValueError('MultiScaleResNet takes base_width (per split), '
                             'not width_per_group')
        kwargs.pop('width_per_group', None)
        check_options(self, locals(), RES2_OPTIONS)
        super().__init__(depth, scales=scales, base_width=base_width, **kwargs)
