"""Deploy folding: one walk over the module tree, by layer type.

mmsk's blocks are built from a few layer types, so folding them for
inference is one function rather than a ``switch_to_deploy`` per block:

- every conv + BatchNorm pair (``ConvModule``, the shortcut projections, the
  stem, the SK branches and the SK attention's reduce conv + norm) is folded
  the way mmcv's :func:`~mmcv.cnn.fuse_conv_bn` folds it: the conv gets the
  BN's scale and shift, the BN becomes ``nn.Identity``. Every pair and
  every select step is checked before anything changes, so a model that
  cannot fold is left as it was;
  a BN without affine parameters folds with scale 1 and shift 0, and the
  folded parameters keep the conv weight's ``requires_grad`` (frozen stages
  stay frozen);
- the two-path SK select step is collapsed to one ``C``-wide logit
  (:meth:`~mmsk.models.layers.ChannelAttention.collapse_paths`).

Every mmsk backbone and block has ``switch_to_deploy()`` (mmpretrain's
convention, used by its ``tools/model_converters/reparameterize_model.py``),
which is this walk over itself; the backbones also take ``deploy=True`` to be
built folded, so a folded checkpoint loads into them.
"""
from typing import List, Tuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class CannotFoldError(ValueError, NotImplementedError):
    """``switch_to_deploy`` cannot fold this model; nothing was changed.

    A ``ValueError`` (the tools report it as one ``error:`` line) and, as
    before, a ``NotImplementedError``."""


def plain_conv_types() -> tuple:
    """The conv types whose weights fold: ``nn.Conv2d`` and mmcv's
    ``Conv2d`` (conv_cfg type 'Conv': nn.Conv2d plus a path for empty
    batches, the same weights and maths)."""
    from mmcv.cnn.bricks.wrappers import Conv2d as MMCVConv2d
    return nn.Conv2d, MMCVConv2d


def _check_foldable(module: nn.Module):
    from .layers.phase_conv import PhaseConv2d
    foldable = plain_conv_types() + (PhaseConv2d, )
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d) and type(m) not in foldable:
            raise CannotFoldError(
                f'switch_to_deploy: {name or type(module).__name__} is a '
                f'{type(m).__name__} (conv_cfg); only plain nn.Conv2d '
                f'layers fold with their BatchNorm')
        error = m.collapse_error() if hasattr(m, 'collapse_error') else None
        if error:
            raise CannotFoldError(
                f'switch_to_deploy: {name or type(module).__name__}: {error}')


_Pair = Tuple[nn.Module, nn.Conv2d, str, _BatchNorm, str]


def _conv_bn_pairs(module: nn.Module, prefix: str, pairs: List[_Pair],
                   orphans: List[str]):
    """The walk of mmcv's ``fuse_conv_bn``: a BatchNorm child folds into the
    last conv child before it in the same parent."""
    last = None
    for name, child in module.named_children():
        if isinstance(child, _BatchNorm):
            if last is None:
                orphans.append(prefix + name)
                continue
            pairs.append((module, last, name, child, prefix + name))
            last = None
        elif isinstance(child, nn.Conv2d):
            last = child
        else:
            _conv_bn_pairs(child, f'{prefix}{name}.', pairs, orphans)


def _fold_pair(conv: nn.Conv2d, bn: _BatchNorm):
    """mmcv's ``_fuse_conv_bn`` (the same operations, so the same bits),
    with scale 1 and shift 0 for a BN without affine parameters; the new
    parameters keep the conv weight's ``requires_grad``."""
    mean, var = bn.running_mean, bn.running_var
    weight = bn.weight if bn.weight is not None else torch.ones_like(var)
    shift = bn.bias if bn.bias is not None else torch.zeros_like(mean)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(mean)
    factor = weight / torch.sqrt(var + bn.eps)
    trainable = conv.weight.requires_grad
    conv.weight = nn.Parameter(
        conv.weight * factor.reshape([conv.out_channels, 1, 1, 1]),
        requires_grad=trainable)
    conv.bias = nn.Parameter((bias - mean) * factor + shift,
                             requires_grad=trainable)


@torch.no_grad()
def fold_for_deploy(module: nn.Module) -> nn.Module:
    """Fold ``module`` in place for inference and return it.

    The result computes what the eval-mode module computed (fp32, up to
    rounding); it has no BatchNorm left, so it is an inference model: its
    former BN statistics are in the conv weights. It is left in eval mode,
    and a backbone refuses a forward in train mode. Idempotent. Raises
    :class:`CannotFoldError`, with ``module`` unchanged, when a layer cannot
    fold.
    """
    _check_foldable(module)
    pairs: List[_Pair] = []
    orphans: List[str] = []
    _conv_bn_pairs(module, '', pairs, orphans)
    if orphans:
        raise CannotFoldError(
            f'switch_to_deploy: BatchNorm layers not preceded by a conv '
            f'cannot be folded: {orphans[:5]}')
    names = [
        full for _, _, _, bn, full in pairs
        if bn.running_mean is None or bn.running_var is None
    ]
    if names:
        raise CannotFoldError(
            f'switch_to_deploy: {names[:5]} are BatchNorm layers without '
            f'running statistics (track_running_stats=False in norm_cfg / '
            f'attn_norm_cfg): in eval mode they normalise each batch with '
            f'its own statistics, which no conv weight can hold. Build the '
            f'model with track_running_stats=True (the default) to deploy '
            f'it')
    for parent, conv, bn_name, bn, _ in pairs:
        _fold_pair(conv, bn)
        parent._modules[bn_name] = nn.Identity()
    for m in module.modules():
        if hasattr(m, 'collapse_paths'):
            m.collapse_paths()
        if hasattr(m, 'deploy'):
            m.deploy = True
    # an inference model: a backbone refuses a forward in train mode
    module.train(False)
    return module


class Deployable:
    """Mixin: ``switch_to_deploy()`` folds the module with
    :func:`fold_for_deploy`."""

    def switch_to_deploy(self):
        return fold_for_deploy(self)

    def check_not_training_folded(self):
        """A backbone in its deploy form refuses a train-mode forward:
        folded, it has no BatchNorm to train as the model it came from
        (``train()`` itself stays harmless: tools that switch to eval and
        back, such as torch's ONNX exporter, call it)."""
        if self.training and getattr(self, 'deploy', False):
            raise ValueError(
                f'{type(self).__name__} is in its deploy form (deploy=True '
                f'or switch_to_deploy(): BatchNorm folded into the convs, '
                f'the two-path SK select step one logit), an inference '
                f'model, and was called in train mode. Call model.eval() '
                f'for inference; to train, build the model without '
                f'deploy=True and fold it afterwards (switch_to_deploy(), '
                f'or tools/model_converters/reparameterize_model.py)')
