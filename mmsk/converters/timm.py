"""timm -> mmsk weight conversion.

:data:`TIMM_MODELS` maps every supported timm model name to the mmsk
backbone config that reproduces it; :func:`convert_state_dict` renames the
weights; :func:`convert_checkpoint` writes an mmengine checkpoint whose
``meta['cfg']`` is the full mmpretrain classifier config (as text), so that
``mmpretrain.apis.init_model(Config.fromstring(meta['cfg'], '.py'), DST)``
rebuilds the model with no other file.
"""
import re
from typing import Callable, Dict, Optional

import torch

from mmsk.checkpoint import load_local_checkpoint
from .mobilenet import TIMM_MOBILENETV2_MODELS, convert_timm_mobilenetv2


def _resnet(**backbone):
    return dict(backbone=backbone, rules='resnet')


_SK_TIMM = dict(split_input=True)
#: timm model name -> mmsk backbone config (+ the key-renaming rules).
TIMM_MODELS: Dict[str, dict] = {
    # SK family (timm/models/sknet.py)
    'skresnet18':
    _resnet(type='SKNet', depth=18, sk_form='timm'),
    'skresnet34':
    _resnet(type='SKNet', depth=34, sk_form='timm'),
    'skresnet50':
    _resnet(type='SKNet', depth=50, sk_form='timm'),
    'skresnet50d':
    _resnet(
        type='SKNet', depth=50, sk_form='timm', deep_stem=True,
        avg_down=True),
    'skresnext50_32x4d':
    _resnet(
        type='SKNet',
        depth=50,
        sk_form='paper',
        sk_cfg=dict(divisor=32, min_channels=32)),
}
# MobileNetV2 family (timm/models/efficientnet.py), renamed by .mobilenet
TIMM_MODELS.update(TIMM_MOBILENETV2_MODELS)


def supported_models():
    return sorted(TIMM_MODELS)


def _stem_rules(deep_stem: bool):
    if deep_stem:
        return [(r'^conv1\.0\.', 'stem.0.conv.'), (r'^conv1\.1\.', 'stem.0.bn.'),
                (r'^conv1\.3\.', 'stem.1.conv.'), (r'^conv1\.4\.', 'stem.1.bn.'),
                (r'^conv1\.6\.', 'stem.2.conv.'), (r'^bn1\.', 'stem.2.bn.')]
    return []


_RESNET_BLOCK_RULES = [
    # plain timm BasicBlock/Bottleneck convs and norms -> ConvModule
    (r'^(layer\d\.\d+)\.conv(\d)\.weight$', r'\1.conv\2.conv.weight'),
    (r'^(layer\d\.\d+)\.bn(\d)\.', r'\1.conv\2.bn.'),
    # SE slot
    (r'^(layer\d\.\d+)\.se\.fc1\.', r'\1.attn.reduce.'),
    (r'^(layer\d\.\d+)\.se\.fc2\.', r'\1.attn.expand.'),
    (r'^(layer\d\.\d+)\.se\.bn\.', r'\1.attn.norm.'),
    # SK attention inside conv1 (basic) / conv2 (bottleneck)
    (r'\.attn\.fc_reduce\.', '.attn.reduce.'),
    (r'\.attn\.bn\.', '.attn.norm.'),
    (r'\.attn\.fc_select\.', '.attn.expand.'),
    # Res2Net splits
    (r'^(layer\d\.\d+)\.convs\.(\d+)\.', r'\1.conv2.convs.\2.conv.'),
    (r'^(layer\d\.\d+)\.bns\.(\d+)\.', r'\1.conv2.convs.\2.bn.'),
]


def _rename(key: str, rules) -> str:
    for pattern, repl in rules:
        key, n = re.subn(pattern, repl, key)
    return key


def convert_state_dict(model_name: str, state_dict: dict) -> dict:
    """Rename a timm state dict to the mmsk classifier's keys."""
    entry = _entry(model_name)
    if entry['rules'] == 'mobilenetv2':
        return convert_timm_mobilenetv2(state_dict)
    backbone = entry['backbone']
    rules = _stem_rules(backbone.get('deep_stem', False)) + \
        _RESNET_BLOCK_RULES
    out = {}
    for key, value in state_dict.items():
        if key.startswith('fc.'):
            out['head.' + key] = value
        else:
            out['backbone.' + _rename(key, rules)] = value
    return out


def _entry(model_name: str) -> dict:
    if model_name not in TIMM_MODELS:
        raise KeyError(f'timm model {model_name!r} is not supported; '
                       f'supported: {supported_models()}')
    return TIMM_MODELS[model_name]


def classifier_config(model_name: str, num_classes: int = 1000) -> str:
    """mmpretrain config text of the mmsk classifier for a timm model."""
    backbone = dict(_entry(model_name)['backbone'])
    backbone['out_indices'] = (-1, )
    from mmengine.registry import init_default_scope
    import mmsk  # noqa: F401
    from mmsk.registry import MODELS
    init_default_scope('mmpretrain')
    feat_dim = MODELS.build(dict(backbone, type=backbone['type'])).feat_dim
    return f"""# mmsk classifier converted from timm's {model_name!r}
custom_imports = dict(imports=['mmsk'], allow_failed_imports=False)
default_scope = 'mmpretrain'
model = dict(
    type='ImageClassifier',
    backbone={backbone!r},
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes={num_classes},
        in_channels={feat_dim},
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5)))
data_preprocessor = dict(
    num_classes={num_classes},
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)
"""


def _unwrap(checkpoint) -> dict:
    if isinstance(checkpoint, dict):
        for key in ('state_dict', 'model', 'state_dict_ema'):
            if key in checkpoint and isinstance(checkpoint[key], dict):
                return checkpoint[key]
    return checkpoint


def convert_checkpoint(model_name: str,
                       src: str,
                       dst: str,
                       progress: Optional[Callable[[str], None]] = print):
    """Convert the timm weights in ``src`` to an mmengine checkpoint ``dst``.

    ``src`` may hold a bare state dict or a dict with ``state_dict`` /
    ``model``; it is read with ``weights_only=True``.
    """
    _entry(model_name)
    state_dict = _unwrap(load_local_checkpoint(src, map_location='cpu'))
    if not isinstance(state_dict, dict) or not state_dict:
        raise ValueError(f'{src} holds no state dict')
    converted = convert_state_dict(model_name, state_dict)
    num_classes = converted['head.fc.weight'].shape[0] if \
        'head.fc.weight' in converted else 1000
    cfg_text = classifier_config(model_name, num_classes)
    _check_keys(cfg_text, converted, model_name)
    torch.save(
        dict(
            meta=dict(cfg=cfg_text, converted_from=f'timm/{model_name}'),
            state_dict=converted), dst)
    if progress:
        progress(f'converted {len(converted)} tensors of timm {model_name!r} '
                 f'-> {dst}')
    return dst


def _check_keys(cfg_text: str, state_dict: dict, model_name: str):
    """Refuse to write a checkpoint whose keys do not match the model."""
    from mmengine.config import Config
    from mmpretrain.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')
    cfg = Config.fromstring(cfg_text, '.py')
    model = MODELS.build(cfg.model)
    expected = set(model.state_dict())
    got = set(state_dict)
    missing, unexpected = sorted(expected - got), sorted(got - expected)
    if missing or unexpected:
        raise KeyError(f'{model_name}: converted keys do not match the mmsk '
                       f'model. missing: {missing[:10]} unexpected: '
                       f'{unexpected[:10]}')
    for key, value in model.state_dict().items():
        if value.shape != state_dict[key].shape:
            raise ValueError(f'{model_name}: shape mismatch at {key}: '
                             f'{tuple(state_dict[key].shape)} vs '
                             f'{tuple(value.shape)}')
