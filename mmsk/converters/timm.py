"""timm -> mmsk weight conversion.

:data:`TIMM_MODELS` maps every supported timm model name to the mmsk
backbone config that reproduces it; :func:`convert_state_dict` renames the
weights; :func:`convert_checkpoint` writes an mmengine checkpoint whose
``meta['cfg']`` is the full mmpretrain classifier config (as text), so that
``mmpretrain.apis.init_model(mmsk.checkpoint.config_from_checkpoint(DST),
DST)`` rebuilds the model with no other file (the text read as data, not
run).
"""
import os.path as osp
import re
from typing import Callable, Dict, Optional

from mmsk.checkpoint import (is_safetensors_file, load_local_checkpoint,
                             load_safetensors)
from mmsk.utils.io import atomic_save, check_output_path
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

# timm's stem/downsample variants on the shared builder: 'd' (deep stem
# 32-32-64, avg-down), 't' (tiered deep stem 24-32-64, avg-down), 'aa'
# ('d' + anti-aliased downsampling by 2x2 average pools).
_D = dict(deep_stem=True, avg_down=True)
_T = dict(_D, deep_stem_channels=(24, 32))
_AA = dict(_D, aa_downsample=True)


def _senet(depth, cardinality=None, **kwargs):
    if cardinality:
        groups, width = cardinality
        kwargs.update(groups=groups, width_per_group=width)
    return _resnet(type='SENet', depth=depth, **kwargs)


def _res2net(depth, base_width, scales, **kwargs):
    return _resnet(
        type='MultiScaleResNet',
        depth=depth,
        base_width=base_width,
        scales=scales,
        **kwargs)


TIMM_MODELS.update({
    # SE family (timm/models/resnet.py: block_args=dict(attn_layer='se'))
    'seresnet18': _senet(18),
    'seresnet34': _senet(34),
    'seresnet50': _senet(50),
    'seresnet50t': _senet(50, **_T),
    'seresnet101': _senet(101),
    'seresnet152': _senet(152),
    'seresnet152d': _senet(152, **_D),
    'seresnet200d': _senet(200, **_D),
    'seresnet269d': _senet(269, **_D),
    'seresnetaa50d': _senet(50, **_AA),
    'seresnext26d_32x4d': _senet(26, (32, 4), **_D),
    'seresnext26t_32x4d': _senet(26, (32, 4), **_T),
    'seresnext50_32x4d': _senet(50, (32, 4)),
    'seresnext101_32x4d': _senet(101, (32, 4)),
    'seresnext101_32x8d': _senet(101, (32, 8)),
    'seresnext101_64x4d': _senet(101, (64, 4)),
    'seresnext101d_32x8d': _senet(101, (32, 8), **_D),
    'seresnextaa101d_32x8d': _senet(101, (32, 8), **_AA),
    'seresnextaa201d_32x8d': _senet(201, (32, 8), stem_channels=128, **_AA),
    # Res2Net family (timm/models/res2net.py)
    'res2net50_26w_4s': _res2net(50, 26, 4),
    'res2net50_26w_6s': _res2net(50, 26, 6),
    'res2net50_26w_8s': _res2net(50, 26, 8),
    'res2net50_48w_2s': _res2net(50, 48, 2),
    'res2net50_14w_8s': _res2net(50, 14, 8),
    'res2net101_26w_4s': _res2net(101, 26, 4),
    'res2next50': _res2net(50, 4, 4, groups=8),
    'res2net50d': _res2net(50, 26, 4, **_D),
    'res2net101d': _res2net(101, 26, 4, **_D),
})

# timm's byobnet SE models: tiered stem 24-32-64, SiLU, SE (ReLU inside) on
# the middle channels after the 3x3, strided 1x1 projection shortcuts.
_BYOB_SE = dict(
    type='SENet',
    deep_stem=True,
    deep_stem_channels=(24, 32),
    act_cfg=dict(type='SiLU'),
    attn_position='mid')
TIMM_MODELS.update({
    'seresnext26ts':
    dict(
        backbone=dict(_BYOB_SE, depth=26, channels_per_group=32),
        rules='byobnet'),
    'seresnet33ts':
    dict(
        backbone=dict(
            _BYOB_SE,
            depth=33,
            stem_pool='none',
            stage_channels=(256, 512, 1536, 1536),
            final_conv_channels=1280),
        rules='byobnet'),
})


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


_BYOBNET_RULES = [
    (r'^stem\.conv(\d)\.', lambda m: f'stem.{int(m.group(1)) - 1}.'),
    (r'^stages\.(\d)\.(\d+)\.',
     lambda m: f'layer{int(m.group(1)) + 1}.{m.group(2)}.'),
    (r'\.conv1_1x1\.', '.conv1.'),
    (r'\.conv2_kxk\.', '.conv2.'),
    (r'\.conv3_1x1\.', '.conv3.'),
    (r'\.attn\.fc1\.', '.mid_attn.reduce.'),
    (r'\.attn\.fc2\.', '.mid_attn.expand.'),
    (r'\.shortcut\.conv\.', '.downsample.0.'),
    (r'\.shortcut\.bn\.', '.downsample.1.'),
]


def _byobnet_rules(state_dict: dict) -> list:
    # the final 1x1 conv is the last module of mmsk's last stage
    last = max(int(k.split('.')[1]) for k in state_dict
               if k.startswith('stages.'))
    blocks = {
        int(k.split('.')[2])
        for k in state_dict if k.startswith(f'stages.{last}.')
    }
    return _BYOBNET_RULES + [(r'^final_conv\.',
                              f'layer{last + 1}.{max(blocks) + 1}.')]


def _rename(key: str, rules) -> str:
    for pattern, repl in rules:
        key, n = re.subn(pattern, repl, key)
    return key


def convert_state_dict(model_name: str, state_dict: dict) -> dict:
    """Rename a timm state dict to the mmsk classifier's keys."""
    model_name = timm_base_name(model_name)
    entry = _entry(model_name)
    if entry['rules'] == 'mobilenetv2':
        return convert_timm_mobilenetv2(state_dict)
    backbone = entry['backbone']
    if entry['rules'] == 'byobnet':
        rules = _byobnet_rules(state_dict)
    else:
        rules = _stem_rules(backbone.get('deep_stem', False)) + \
            _RESNET_BLOCK_RULES
    out = {}
    for key, value in state_dict.items():
        if key.startswith('fc.'):
            out['head.' + key] = value
        elif key.startswith('head.fc.'):  # byobnet's ClassifierHead
            out[key] = value
        else:
            out['backbone.' + _rename(key, rules)] = value
    return out


#: timm models of the families that mmsk leaves out, with the reason
_LEFT_OUT = [
    (r'^(legacy_se|senet154)',
     "the old SENet port's layout (layer0, se_module); mmsk converts the "
     "modern layout: seresnet*/seresnext*"),
    (r'^nf_', 'a normalizer-free network (no BatchNorm)'),
    (r'^dla', 'a DLA network (some with Res2Net blocks), not a ResNet '
     'layout'),
]


def timm_base_name(model_name: str) -> str:
    """``model_name`` without timm's pretrained tag (``skresnet18.ra_in1k``
    -> ``skresnet18``: the tag names the weights, not the model)."""
    if isinstance(model_name, str) and '.' in model_name:
        base = model_name.split('.', 1)[0]
        if base in TIMM_MODELS:
            return base
    return model_name


def _entry(model_name: str) -> dict:
    model_name = timm_base_name(model_name)
    if model_name not in TIMM_MODELS:
        for pattern, reason in _LEFT_OUT:
            if isinstance(model_name, str) and re.match(pattern,
                                                        model_name):
                raise KeyError(f'timm model {model_name!r} is not supported: '
                               f'it is {reason}')
        import difflib
        base = str(model_name).split('.', 1)[0]  # without a pretrained tag
        close = difflib.get_close_matches(base, TIMM_MODELS, n=3, cutoff=0.6)
        hint = f'did you mean {", ".join(close)}? ' if close else ''
        raise KeyError(f'timm model {model_name!r} is not supported; '
                       f'{hint}tools/model_converters/timm_to_mmsk.py '
                       f'--list lists the {len(TIMM_MODELS)} supported models')
    return TIMM_MODELS[model_name]


def classifier_config(model_name: str,
                      num_classes: Optional[int] = 1000) -> str:
    """mmpretrain config text of the mmsk classifier for a timm model
    (``num_classes=None``: without a head, for headless weights)."""
    model_name = timm_base_name(model_name)
    return backbone_classifier_config(_entry(model_name)['backbone'],
                                      num_classes, f"timm's {model_name!r}")


def backbone_classifier_config(backbone: dict,
                               num_classes: Optional[int] = 1000,
                               source: str = '') -> str:
    """mmpretrain config text of the mmsk classifier around ``backbone``
    (shared by every converter of :mod:`mmsk.converters`);
    ``num_classes=None`` gives it no head: its ``tensor`` forward returns
    the pooled features."""
    backbone = dict(backbone)
    backbone['out_indices'] = (-1, )
    from mmengine.registry import init_default_scope
    import mmsk  # noqa: F401
    from mmsk.registry import MODELS
    init_default_scope('mmpretrain')
    feat_dim = MODELS.build(dict(backbone, type=backbone['type'])).feat_dim
    if num_classes is None:
        head = 'None'  # headless weights: the backbone alone
        classes = ''
    else:
        head = f"""dict(
        type='LinearClsHead',
        num_classes={num_classes},
        in_channels={feat_dim},
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5))"""
        classes = f"""
    num_classes={num_classes},"""
    return f"""# mmsk classifier converted from {source}
custom_imports = dict(imports=['mmsk'], allow_failed_imports=False)
default_scope = 'mmpretrain'
model = dict(
    type='ImageClassifier',
    backbone={backbone!r},
    neck=dict(type='GlobalAveragePooling'),
    head={head})
data_preprocessor = dict({classes}
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


#: key prefixes of wrapped models: DistributedDataParallel / DataParallel
#: (``module.``) and ``torch.compile`` (``_orig_mod.``)
WRAPPER_PREFIXES = ('module.', '_orig_mod.')


def strip_wrapper_prefixes(state_dict: dict) -> dict:
    """``state_dict`` without the prefixes that a DDP-wrapped or compiled
    model puts on every key (each stripped only when every key has it)."""
    stripped = True
    while stripped and state_dict:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if all(isinstance(k, str) and k.startswith(prefix)
                   for k in state_dict):
                state_dict = {k[len(prefix):]: v
                              for k, v in state_dict.items()}
                stripped = True
    return state_dict


def read_state_dict(src: str, classifier: str) -> dict:
    """The state dict in the checkpoint ``src`` (bare, or under
    ``state_dict`` / ``model`` / ``state_dict_ema``; read with
    ``weights_only=True``; or a safetensors file, as timm downloads; the
    keys of a DDP-wrapped or compiled model stripped of their prefixes,
    :func:`strip_wrapper_prefixes`): a non-empty dict of tensors, whose
    classifier
    weight ``classifier`` (if any) is a matrix."""
    import torch
    if osp.isfile(src) and is_safetensors_file(src):
        state_dict = load_safetensors(src)  # timm's Hugging Face weights
    else:
        state_dict = _unwrap(load_local_checkpoint(src, map_location='cpu'))
    if not isinstance(state_dict, dict) or not state_dict:
        raise ValueError(f'{src} holds no state dict')
    state_dict = strip_wrapper_prefixes(state_dict)
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f'{src}: {key!r} holds a value of type '
                             f'{type(value).__name__}, not a tensor: not a '
                             f'state dict of weights')
    head = state_dict.get(classifier)
    if head is not None and head.dim() != 2:
        raise ValueError(f'{src}: {classifier} has shape '
                         f'{tuple(head.shape)}, not (classes, features)')
    return state_dict


def convert_checkpoint(model_name: str,
                       src: str,
                       dst: str,
                       progress: Optional[Callable[[str], None]] = print):
    """Convert the timm weights in ``src`` to an mmengine checkpoint ``dst``.

    ``src`` may hold a bare state dict or a dict with ``state_dict`` /
    ``model``; it is read with ``weights_only=True``. A safetensors file
    (the weights timm downloads from the Hugging Face Hub) is read too.
    timm's ``num_classes=0`` weights (features for detection, segmentation,
    fine-tuning) give the backbone alone (:func:`convert_file`).
    """
    model_name = timm_base_name(model_name)
    backbone = _entry(model_name)['backbone']
    classifier = 'classifier.weight' if model_name in \
        TIMM_MOBILENETV2_MODELS else 'fc.weight'
    return convert_file(
        'timm', model_name, backbone, src, dst, classifier,
        lambda state_dict: convert_state_dict(model_name, state_dict),
        progress)


def table_entry(table: dict, source: str, model_name: str) -> dict:
    """``table[model_name]``, or a ``KeyError`` listing what is there."""
    if model_name not in table:
        raise KeyError(f'{source} model {model_name!r} is not supported; '
                       f'supported: {sorted(table)}')
    return table[model_name]


def convert_file(source: str,
                 model_name: str,
                 backbone: dict,
                 src: str,
                 dst: str,
                 classifier: str,
                 rename: Callable[[dict], dict],
                 progress: Optional[Callable[[str], None]] = print) -> str:
    """What every converter of :mod:`mmsk.converters` does with a file:
    check ``dst`` before any work, read ``src`` (:func:`read_state_dict`,
    ``classifier`` the key of its classifier weight), ``rename`` it to
    mmsk's classifier keys, and write it with the config of the classifier
    around ``backbone`` (:func:`save_converted`). Weights without a
    classifier (no ``head.`` key once renamed) give the backbone alone,
    with a config without head (``meta['headless']``)."""
    check_output_path(dst, inputs=[src], create=False)
    converted = rename(read_state_dict(src, classifier))
    headless = not any(key.startswith('head.') for key in converted)
    num_classes = None if headless else \
        converted['head.fc.weight'].shape[0] \
        if 'head.fc.weight' in converted else 1000
    cfg_text = backbone_classifier_config(backbone, num_classes,
                                          f"{source}'s {model_name!r}")
    save_converted(cfg_text, converted, dst, model_name,
                   f'{source}/{model_name}', src=src, headless=headless)
    if progress:
        what = (", the backbone alone (no classifier in the source; its "
                "config has no head: load it with init_cfg=dict(type="
                "'Pretrained', prefix='backbone.'), or as load_from with "
                "load_from_strict=False)") if headless else ''
        progress(f'converted {len(converted)} tensors of {source} '
                 f'{model_name!r}{what} -> {dst}')
    return dst


def save_converted(cfg_text: str, state_dict: dict, dst: str,
                   model_name: str, converted_from: str,
                   src: Optional[str] = None, headless: bool = False):
    """Check the converted keys/shapes against the model of ``cfg_text``,
    then write the checkpoint (config text in ``meta['cfg']``; ``headless``:
    weights without a classifier, ``meta['headless']``) atomically, never
    over ``src`` (:func:`mmsk.utils.io.atomic_save`)."""
    _check_keys(cfg_text, state_dict, model_name)
    meta = dict(cfg=cfg_text, converted_from=converted_from)
    if headless:
        meta['headless'] = True
    atomic_save(dict(meta=meta, state_dict=state_dict), dst, inputs=[src])


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
