"""SKNet: Selective Kernel Networks (Li et al., CVPR 2019).

Paper: https://arxiv.org/abs/1903.06586. The SK blocks replace the spatial
conv of the ResNet blocks by :class:`~mmsk.models.layers.SKConv`; everything
else is the shared stage builder.
"""
from typing import Optional

from mmsk.registry import register_model
from mmsk.utils import (accepted_kwargs, check_dict, check_options,
                        check_positive_int, check_unknown_keys, one_of,
                        optional)
from ..layers.selective_kernel import SK_FORMS, SKConv
from ..layers.selective_kernel import sk_form as make_sk_form
from .resnet import BasicBlock, Bottleneck, ResNetStages


#: SKConv arguments that the block sets itself (key -> where they come from)
_SET_BY_BLOCK = dict(
    in_channels='set by the block',
    out_channels='set by the block',
    stride="set by the block's stride",
    dilation="set by the block's dilation",
    conv_cfg="the block's conv_cfg applies to the SK unit",
    norm_cfg="the block's norm_cfg applies to the SK unit; the attention's "
    'norm is attn_norm_cfg',
    act_cfg="the block's act_cfg applies to the SK unit",
    init_cfg="set the block's init_cfg")


def check_sk_cfg(owner, sk_cfg: Optional[dict], reserved=None) -> None:
    """Refuse ``sk_cfg`` keys that are not :class:`SKConv` arguments or that
    the block (and the ``reserved`` ones, which the backbone) sets, naming
    where each one is set instead."""
    hints = dict(_SET_BY_BLOCK, **(reserved or {}))
    check_unknown_keys(
        owner, sk_cfg or {}, accepted_kwargs(SKConv) - set(hints),
        what='sk_cfg key', hints=hints)


@register_model
class SKBasicBlock(BasicBlock):
    """Basic block whose first 3x3 is an SK unit (timm's skresnet18/34).

    Args:
        sk_cfg (dict, optional): :class:`SKConv` arguments.
        Others: as :class:`~mmsk.models.backbones.resnet.BasicBlock`.

    Example:
        >>> block = SKBasicBlock(64, 64, sk_cfg=dict(split_input=True))
        >>> block(torch.rand(1, 64, 8, 8)).shape
        torch.Size([1, 64, 8, 8])
    """

    #: base-block arguments this block sets itself (-> what to pass)
    sets_itself = dict(conv1_cfg='the SK unit is conv1: pass sk_cfg')

    def __init__(self, *args, sk_cfg: Optional[dict] = None, **kwargs):
        check_options(self, locals(), dict(sk_cfg=optional(check_dict)))
        self._refuse_what_it_sets(kwargs)
        check_sk_cfg(self, sk_cfg)
        super().__init__(*args, conv1_cfg=sk_cfg, **kwargs)

    def make_conv1(self, in_channels, out_channels, stride, dilation,
                   **kwargs):
        return SKConv(
            in_channels, out_channels, stride=stride, dilation=dilation,
            **kwargs)


@register_model
class SKBottleneck(Bottleneck):
    """Bottleneck whose 3x3 is an SK unit with the block's cardinality.

    Example:
        >>> block = SKBottleneck(256, 256, groups=32, width_per_group=4)
        >>> block(torch.rand(1, 256, 8, 8)).shape
        torch.Size([1, 256, 8, 8])
    """

    sets_itself = dict(conv2_cfg='the SK unit is conv2: pass sk_cfg')

    def __init__(self, *args, sk_cfg: Optional[dict] = None, **kwargs):
        check_options(self, locals(), dict(sk_cfg=optional(check_dict)))
        self._refuse_what_it_sets(kwargs)
        check_sk_cfg(self, sk_cfg, dict(groups="set by the block's groups"))
        super().__init__(*args, conv2_cfg=sk_cfg, **kwargs)

    def make_conv2(self, channels, stride, dilation, groups, stage_first,
                   **kwargs):
        return SKConv(
            channels,
            channels,
            stride=stride,
            dilation=dilation,
            groups=groups,
            **kwargs)


@register_model
class SKNet(ResNetStages):
    """Selective Kernel network on the ResNet/ResNeXt stage builder.

    ``sk_form`` picks the SK unit and the base network:

    ======================  ===========================================
    ``'paper'``             ResNeXt 32x4d base (depth >= 50); branches
                            3x3 dilation 1 and 2, ``d = max(C/16, 32)``.
                            Equals timm's ``skresnext50_32x4d``.
    ``'pytorchinsight'``    ResNet base; one dense 3x3 and one 32-group
                            3x3, no dilation, ``d = C/16``.
    ``'timm'``              ResNet base, split input (timm's skresnet*;
                            basic blocks use ``r=8`` rounded to 16).
    ======================  ===========================================

    Args:
        depth (int): 18, 34 (SK basic blocks), 50, 101, 152 (SK bottleneck).
        sk_form (str): One of the forms above. Defaults to ``'paper'``.
        sk_cfg (dict, optional): Overrides of the form's :class:`SKConv`
            arguments (``branches``, ``reduction``, ``min_channels``,
            ``divisor``, ``split_input``).
        groups / width_per_group (int, optional): Override the form's base.
        **kwargs: The ResNet arguments of
            :class:`~mmsk.models.backbones.resnet.ResNetStages`
            (``out_indices``, ``frozen_stages``, ``norm_eval``, ``with_cp``,
            ``drop_path_rate``, ``deep_stem``, ``avg_down``, ...).

    Example:
        >>> model = SKNet(50, out_indices=(0, 1, 2, 3)).eval()
        >>> [o.shape[1:] for o in model(torch.rand(1, 3, 64, 64))]
        [torch.Size([256, 16, 16]), torch.Size([512, 8, 8]), ...]
    """

    arch_settings = {
        18: (SKBasicBlock, (2, 2, 2, 2)),
        34: (SKBasicBlock, (3, 4, 6, 3)),
        50: (SKBottleneck, (3, 4, 6, 3)),
        101: (SKBottleneck, (3, 4, 23, 3)),
        152: (SKBottleneck, (3, 8, 36, 3)),
    }

    def __init__(self,
                 depth: int,
                 sk_form: str = 'paper',
                 sk_cfg: Optional[dict] = None,
                 groups: Optional[int] = None,
                 width_per_group: Optional[int] = None,
                 **kwargs):
        check_options(self, locals(), dict(
            sk_form=one_of(*sorted(SK_FORMS)),
            sk_cfg=optional(check_dict),
            groups=optional(check_positive_int),
            width_per_group=optional(check_positive_int)))
        if depth not in self.arch_settings:
            raise KeyError(f'invalid depth {depth!r} for SKNet; choose from '
                           f'{sorted(self.arch_settings)}')
        # the block sets the unit's channels, stride, dilation and layers;
        # SKNet's groups set the unit's groups
        check_sk_cfg(self, sk_cfg, dict(
            groups="set by SKNet's groups",
            conv_cfg="SKNet's conv_cfg applies to the SK units",
            norm_cfg="SKNet's norm_cfg applies to the SK units; the "
            'attention norm is sk_cfg attn_norm_cfg',
            act_cfg="SKNet's act_cfg applies to the SK units",
            init_cfg="set SKNet's init_cfg"))
        basic = self.arch_settings[depth][0] is SKBasicBlock
        cfg = make_sk_form(sk_form)
        if sk_form == 'timm' and basic:
            cfg.update(reduction=8, divisor=16)
        cfg.update(sk_cfg or {})
        if groups is None:
            groups = 32 if sk_form == 'paper' and not basic else 1
        if width_per_group is None and groups > 1:
            width_per_group = 4
        self.sk_form = sk_form
        super().__init__(
            depth,
            groups=groups,
            width_per_group=width_per_group,
            sk_cfg=cfg,
            **kwargs)
