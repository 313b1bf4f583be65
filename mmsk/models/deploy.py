"""Deploy folding: one walk over the module tree, by layer type.

mmsk's blocks are built from a few layer types, so folding them for
inference is one function rather than a ``switch_to_deploy`` per block:

- every conv + BatchNorm pair (``ConvModule``, the shortcut projections, the
  stem, the SK branches and the SK attention's reduce conv + norm) is folded
  by mmcv's :func:`~mmcv.cnn.fuse_conv_bn`: the conv gets the BN's scale and
  shift, the BN becomes ``nn.Identity``;
- the two-path SK select step is collapsed to one ``C``-wide logit
  (:meth:`~mmsk.models.layers.ChannelAttention.collapse_paths`).

Every mmsk backbone and block has ``switch_to_deploy()`` (mmpretrain's
convention, used by its ``tools/model_converters/reparameterize_model.py``),
which is this walk over itself; the backbones also take ``deploy=True`` to be
built folded, so a folded checkpoint loads into them.
"""
import torch
from mmcv.cnn import fuse_conv_bn
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def _check_foldable(module: nn.Module):
    from .layers.phase_conv import PhaseConv2d
    foldable = (nn.Conv2d, PhaseConv2d)
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d) and type(m) not in foldable:
            raise NotImplementedError(
                f'switch_to_deploy: {name or type(module).__name__} is a '
                f'{type(m).__name__} (conv_cfg); only plain nn.Conv2d '
                f'layers fold with their BatchNorm')


@torch.no_grad()
def fold_for_deploy(module: nn.Module) -> nn.Module:
    """Fold ``module`` in place for inference and return it.

    The result computes what the eval-mode module computed (fp32, up to
    rounding); it has no BatchNorm left, so it is an inference model: its
    former BN statistics are in the conv weights. Idempotent.
    """
    _check_foldable(module)
    fuse_conv_bn(module)
    left = [
        name for name, m in module.named_modules()
        if isinstance(m, _BatchNorm)
    ]
    if left:
        raise RuntimeError(
            f'switch_to_deploy: BatchNorm layers not preceded by a conv '
            f'could not be folded: {left[:5]}')
    for m in module.modules():
        if hasattr(m, 'collapse_paths'):
            m.collapse_paths()
        if hasattr(m, 'deploy'):
            m.deploy = True
    return module


class Deployable:
    """Mixin: ``switch_to_deploy()`` folds the module with
    :func:`fold_for_deploy`."""

    def switch_to_deploy(self):
        return fold_for_deploy(self)
