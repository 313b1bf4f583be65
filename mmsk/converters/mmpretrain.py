"""mmpretrain -> mmsk weight conversion (SEResNet, SEResNeXt, Res2Net).

:data:`MMPRETRAIN_MODELS` maps a model name to mmpretrain's backbone config
(``source``) and the mmsk backbone config with the same structure
(``backbone``); :func:`convert_state_dict` renames the weights of the
mmpretrain ``ImageClassifier`` (``backbone.*``, ``head.fc.*``), and
:func:`convert_checkpoint` writes an mmengine checkpoint that carries its
config, exactly as :mod:`mmsk.converters.timm` does.

mmpretrain's ``SELayer`` squeezes to ``make_divisible(C // 16, 8)`` channels
with biased 1x1 convs, which is mmsk's default ``SEAttention`` (reduction 16,
divisor 8) for every width of these networks; its ``Res2Net`` defaults to the
deep stem and average-pooled shortcuts (``deep_stem=True, avg_down=True``),
its configs use the plain form.
"""
from typing import Callable, Dict, Optional

from .timm import (_RESNET_BLOCK_RULES, _rename, backbone_classifier_config,
                   convert_file, table_entry)


def _pair(source: dict, **backbone) -> dict:
    return dict(source=source, backbone=backbone)


def _seresnet(depth):
    return _pair(dict(type='SEResNet', depth=depth), type='SENet', depth=depth)


def _seresnext(depth, groups=32, width=4):
    return _pair(
        dict(
            type='SEResNeXt',
            depth=depth,
            groups=groups,
            width_per_group=width),
        type='SENet',
        depth=depth,
        groups=groups,
        width_per_group=width)


def _res2net(depth, base_width, scales, deep=False):
    form = dict(deep_stem=deep, avg_down=deep)
    return _pair(
        dict(
            type='Res2Net',
            depth=depth,
            scales=scales,
            base_width=base_width,
            **form),
        type='MultiScaleResNet',
        depth=depth,
        scales=scales,
        base_width=base_width,
        **form)


#: model name -> mmpretrain backbone config and the mmsk one. The plain
#: Res2Net names are mmpretrain's configs (``deep_stem=False``); the ``d``
#: names are mmpretrain's ``Res2Net`` defaults (deep stem, avg-down: v1b).
MMPRETRAIN_MODELS: Dict[str, dict] = {
    'seresnet50': _seresnet(50),
    'seresnet101': _seresnet(101),
    'seresnet152': _seresnet(152),
    'seresnext50-32x4d': _seresnext(50),
    'seresnext101-32x4d': _seresnext(101),
    'seresnext152-32x4d': _seresnext(152),
    'res2net50-w14-s8': _res2net(50, 14, 8),
    'res2net50-w26-s4': _res2net(50, 26, 4),
    'res2net50-w26-s8': _res2net(50, 26, 8),
    'res2net101-w26-s4': _res2net(101, 26, 4),
    'res2net50d-w26-s4': _res2net(50, 26, 4, deep=True),
    'res2net101d-w26-s4': _res2net(101, 26, 4, deep=True),
}

# mmpretrain's deep stem is already three ConvModules (mmsk's keys); the
# blocks use timm's names (conv1/bn1, convs/bns, downsample).
_RULES = [
    # SELayer's two ConvModules -> the attention slot
    (r'^(layer\d\.\d+)\.se_layer\.conv1\.conv\.', r'\1.attn.reduce.'),
    (r'^(layer\d\.\d+)\.se_layer\.conv2\.conv\.', r'\1.attn.expand.'),
] + _RESNET_BLOCK_RULES


def supported_models():
    return sorted(MMPRETRAIN_MODELS)


def _entry(model_name: str) -> dict:
    return table_entry(MMPRETRAIN_MODELS, 'mmpretrain', model_name)


def convert_state_dict(model_name: str, state_dict: dict) -> dict:
    """Rename an mmpretrain classifier state dict to mmsk's keys."""
    _entry(model_name)
    out = {}
    for key, value in state_dict.items():
        if key.startswith('backbone.'):
            key = 'backbone.' + _rename(key[len('backbone.'):], _RULES)
        out[key] = value
    return out


def classifier_config(model_name: str, num_classes: int = 1000) -> str:
    """mmpretrain config text of the mmsk classifier for a model name."""
    return backbone_classifier_config(
        _entry(model_name)['backbone'], num_classes,
        f"mmpretrain's {model_name!r}")


def convert_checkpoint(model_name: str,
                       src: str,
                       dst: str,
                       progress: Optional[Callable[[str], None]] = print):
    """Convert the mmpretrain classifier weights in ``src`` (a checkpoint
    with ``state_dict``, or a bare state dict; read with
    ``weights_only=True``) to an mmengine checkpoint ``dst``."""
    return convert_file(
        'mmpretrain', model_name, _entry(model_name)['backbone'], src, dst,
        'head.fc.weight',
        lambda state_dict: convert_state_dict(model_name, state_dict),
        progress)
