"""SENet: squeeze-and-excitation ResNet / ResNeXt (Hu et al., CVPR 2018).

Paper: https://arxiv.org/abs/1709.01507. SE is the attention slot of the
shared blocks (``attn_cfg=dict(type='SEAttention')``), so stochastic depth,
checkpointing and zero-init work exactly as in every other mmsk block.
"""
from typing import Optional

from mmsk.registry import register_model
from mmsk.utils import (accepted_kwargs, check_dict, check_options,
                        check_unknown_keys, optional)
from ..layers import SEAttention
from .resnet import BasicBlock, Bottleneck, ResNetStages


def _se(attn_cfg):
    return dict(type='SEAttention') if attn_cfg is None else attn_cfg


@register_model
class SEBasicBlock(BasicBlock):
    """:class:`BasicBlock` with SE attention after the last conv."""

    def __init__(self, *args, attn_cfg: Optional[dict] = None, **kwargs):
        super().__init__(*args, attn_cfg=_se(attn_cfg), **kwargs)


@register_model
class SEBottleneck(Bottleneck):
    """:class:`Bottleneck` with SE attention after ``conv3``.

    Example:
        >>> block = SEBottleneck(256, 256)
        >>> type(block.attn).__name__
        'SEAttention'
    """

    def __init__(self, *args, attn_cfg: Optional[dict] = None, **kwargs):
        super().__init__(*args, attn_cfg=_se(attn_cfg), **kwargs)


@register_model
class SENet(ResNetStages):
    """SE-ResNet (``groups=1``) and SE-ResNeXt (e.g. ``groups=32,
    width_per_group=4``).

    Args:
        depth (int): 18, 26, 33, 34, 50, 101, 152, 200, 201 or 269.
        se_cfg (dict, optional): :class:`~mmsk.models.layers.SEAttention`
            arguments: ``reduction`` (16), ``divisor`` (8), ``act_cfg``,
            ``gate_cfg``. Defaults to None.
        **kwargs: The arguments of
            :class:`~mmsk.models.backbones.resnet.ResNetStages`.

    Example:
        >>> model = SENet(50, groups=32, width_per_group=4)  # SE-ResNeXt-50
        >>> model(torch.rand(1, 3, 64, 64))[0].shape
        torch.Size([1, 2048, 2, 2])
    """

    arch_settings = {
        18: (SEBasicBlock, (2, 2, 2, 2)),
        34: (SEBasicBlock, (3, 4, 6, 3)),
        26: (SEBottleneck, (2, 2, 2, 2)),
        33: (SEBottleneck, (2, 3, 3, 2)),  # timm's seresnet33ts
        50: (SEBottleneck, (3, 4, 6, 3)),
        101: (SEBottleneck, (3, 4, 23, 3)),
        152: (SEBottleneck, (3, 8, 36, 3)),
        200: (SEBottleneck, (3, 24, 36, 3)),
        201: (SEBottleneck, (3, 24, 36, 4)),  # timm's seresnextaa201d
        269: (SEBottleneck, (3, 30, 48, 8)),
    }

    option_hints = dict(
        se_ratio='mmpretrain\'s se_ratio is se_cfg=dict(reduction=...) here')

    def __init__(self, depth: int, se_cfg: Optional[dict] = None, **kwargs):
        if 'attn_cfg' in kwargs:
            raise ValueError('SENet sets attn_cfg itself; pass se_cfg')
        check_options(self, locals(), dict(se_cfg=optional(check_dict)))
        check_unknown_keys(
            self, se_cfg or {},
            accepted_kwargs(SEAttention) - {'in_channels', 'num_paths',
                                            'init_cfg'},
            what='se_cfg key')
        super().__init__(
            depth, attn_cfg=dict(type='SEAttention', **(se_cfg or {})),
            **kwargs)
