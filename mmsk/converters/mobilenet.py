"""MobileNetV2 weights from timm, torchvision and mmpretrain -> mmsk.

The three references and :class:`~mmsk.models.InvertedResidualNet` hold
the same tensors (stem conv, per block an optional 1x1 expansion, the 3x3
depthwise conv and the 1x1 projection, each with its BN, the final 1x1 conv
and a linear classifier); only the names differ. Each function here renames
a state dict to the keys of the mmsk classifier (``backbone.*`` and
``head.fc.*``, mmpretrain's ``ImageClassifier`` with ``LinearClsHead``):

- :func:`convert_timm_mobilenetv2`: timm's ``mobilenetv2_*`` (the entries of
  :data:`TIMM_MOBILENETV2_MODELS`, used by :mod:`mmsk.converters.timm`);
- :func:`convert_torchvision_mobilenet_v2`: ``torchvision.models.
  mobilenet_v2`` (``features.*`` / ``classifier.1.*``);
- :func:`convert_mmpretrain_mobilenet_v2`: mmpretrain's ``MobileNetV2``
  (and mmseg's, whose blocks are named alike).
"""
import re
from typing import Optional, Sequence

from mmsk.models.backbones.mobilenet_v2 import MOBILENET_V2_ARCH


def _timm(**backbone):
    return dict(
        backbone=dict(type='InvertedResidualNet', **backbone),
        rules='mobilenetv2')


#: timm model name -> mmsk backbone config (timm/models/efficientnet.py,
#: ``_gen_mobilenet_v2``: ``channel_multiplier``, ``depth_multiplier``,
#: ``fix_stem_head``).
TIMM_MOBILENETV2_MODELS = {
    'mobilenetv2_035': _timm(widen_factor=0.35),
    'mobilenetv2_050': _timm(widen_factor=0.5),
    'mobilenetv2_075': _timm(widen_factor=0.75),
    'mobilenetv2_100': _timm(),
    'mobilenetv2_140': _timm(widen_factor=1.4),
    'mobilenetv2_110d': _timm(
        widen_factor=1.1, depth_multiplier=1.2, fix_stem_head=True),
    'mobilenetv2_120d': _timm(
        widen_factor=1.2, depth_multiplier=1.4, fix_stem_head=True),
}

_NORM_SUFFIX = r'(weight|bias|running_mean|running_var|num_batches_tracked)'


def _put(out, key, value, prefix='backbone.'):
    if prefix + key in out:
        raise KeyError(f'two tensors convert to {prefix + key!r}')
    out[prefix + key] = value


def convert_timm_mobilenetv2(state_dict: dict) -> dict:
    """timm ``mobilenetv2_*`` keys -> mmsk classifier keys.

    ``conv_stem``/``bn1`` -> ``conv1``; ``blocks.i.j`` -> ``layer{i+1}.j``
    (``conv_pw``/``bn1`` -> ``expand``, ``conv_dw``/``bn2`` ->
    ``depthwise``, ``conv_pwl``/``bn3`` -> ``project``; the first stage's
    depthwise-separable block has ``conv_dw``/``bn1`` and ``conv_pw``/``bn2``);
    ``conv_head``/``bn2`` -> ``conv2``; ``classifier`` -> ``head.fc``.
    """
    out = {}
    for key, value in state_dict.items():
        m = re.match(r'^blocks\.(\d+)\.(\d+)\.(\w+)\.(\w+)$', key)
        if m:
            stage, index, module, param = m.groups()
            block = f'blocks.{stage}.{index}'
            expanded = f'{block}.conv_pwl.weight' in state_dict
            names = dict(
                conv_pw=('expand', 'conv'),
                bn1=('expand', 'bn'),
                conv_dw=('depthwise', 'conv'),
                bn2=('depthwise', 'bn'),
                conv_pwl=('project', 'conv'),
                bn3=('project', 'bn')) if expanded else dict(
                    conv_dw=('depthwise', 'conv'),
                    bn1=('depthwise', 'bn'),
                    conv_pw=('project', 'conv'),
                    bn2=('project', 'bn'))
            if module not in names:
                raise KeyError(f'unexpected timm MobileNetV2 key {key!r}')
            part, layer = names[module]
            _put(out, f'layer{int(stage) + 1}.{index}.{part}.{layer}.{param}',
                 value)
            continue
        for pattern, repl in ((r'^conv_stem\.', 'conv1.conv.'),
                              (r'^bn1\.', 'conv1.bn.'),
                              (r'^conv_head\.', 'conv2.conv.'),
                              (r'^bn2\.', 'conv2.bn.')):
            if re.match(pattern, key):
                _put(out, re.sub(pattern, repl, key), value)
                break
        else:
            if key.startswith('classifier.'):
                _put(out, 'fc.' + key[len('classifier.'):], value, 'head.')
            else:
                raise KeyError(f'unexpected timm MobileNetV2 key {key!r}')
    return out


def _block_positions(repeats: Sequence[int]):
    return [(i, j) for i, n in enumerate(repeats) for j in range(n)]


def convert_torchvision_mobilenet_v2(
        state_dict: dict,
        repeats: Optional[Sequence[int]] = None) -> dict:
    """torchvision ``mobilenet_v2`` keys -> mmsk classifier keys.

    ``features.0`` is the stem, ``features.1..N`` the blocks in order (the
    row of each comes from ``repeats``, default MobileNetV2's table),
    ``features.N+1`` the final 1x1 conv and ``classifier.1`` the linear
    layer (``classifier.0`` is dropout). Pass the ``width_mult`` of the
    torchvision model as the mmsk ``widen_factor``.
    """
    if repeats is None:
        repeats = [n for _, _, n, _ in MOBILENET_V2_ARCH]
    positions = _block_positions(repeats)
    indices = sorted({
        int(k.split('.')[1])
        for k in state_dict if k.startswith('features.')
    })
    if indices != list(range(len(positions) + 2)):
        raise ValueError(
            f'torchvision state dict has features.{indices[0]}..'
            f'{indices[-1]}, but repeats {list(repeats)} need 0..'
            f'{len(positions) + 1}')
    last = len(positions) + 1
    out = {}
    for key, value in state_dict.items():
        if key.startswith('classifier.1.'):
            _put(out, 'fc.' + key[len('classifier.1.'):], value, 'head.')
            continue
        m = re.match(r'^features\.(\d+)\.(.*)$', key)
        if not m:
            raise KeyError(f'unexpected torchvision MobileNetV2 key {key!r}')
        index, rest = int(m.group(1)), m.group(2)
        if index in (0, last):
            name = 'conv1' if index == 0 else 'conv2'
            rest = re.sub(r'^0\.', 'conv.', rest)
            rest = re.sub(r'^1\.', 'bn.', rest)
            _put(out, f'{name}.{rest}', value)
            continue
        stage, block = positions[index - 1]
        expanded = f'features.{index}.conv.3.weight' in state_dict
        parts = ['expand', 'depthwise'] if expanded else ['depthwise']
        m = re.match(r'^conv\.(\d+)\.(?:(\d)\.)?' + _NORM_SUFFIX + '$', rest)
        if not m:
            raise KeyError(f'unexpected torchvision MobileNetV2 key {key!r}')
        seq, sub, param = int(m.group(1)), m.group(2), m.group(3)
        if seq < len(parts):  # Conv2dNormActivation: 0 conv, 1 bn
            target = f"{parts[seq]}.{'conv' if sub == '0' else 'bn'}"
        else:  # the projection: a bare conv, then its BN
            target = 'project.conv' if seq == len(parts) else 'project.bn'
        _put(out, f'layer{stage + 1}.{block}.{target}.{param}', value)
    return out


def convert_mmpretrain_mobilenet_v2(state_dict: dict) -> dict:
    """mmpretrain ``MobileNetV2`` keys -> mmsk keys (also mmseg's backbone).

    Block ``conv.0/1/2`` (``conv.0/1`` without expansion) become
    ``expand``/``depthwise``/``project``; everything else (``conv1``,
    ``layer*``, ``conv2``, ``head.fc``, any ``backbone.`` prefix) keeps its
    name.
    """
    out = {}
    for key, value in state_dict.items():
        m = re.match(r'^(.*layer\d+\.\d+)\.conv\.(\d)\.(.*)$', key)
        if m:
            block, seq, rest = m.group(1), int(m.group(2)), m.group(3)
            expanded = f'{block}.conv.2.conv.weight' in state_dict
            parts = ['expand', 'depthwise', 'project'] if expanded else \
                ['depthwise', 'project']
            key = f'{block}.{parts[seq]}.{rest}'
        _put(out, key, value, prefix='')
    return out
