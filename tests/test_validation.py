"""Options and inputs that are wrong get one clear error, at the backbone.

Every option of every backbone, block and layer is type-checked (a string
is not a bool), ``out_indices`` keeps the order asked for or is refused,
unknown options are named with their close matches, and a bad input tensor
is refused at the backbone's entry without getting in the way of tracing
and export.
"""
import copy
import inspect
import re

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from conftest import build_backbone
from test_backbones import BACKBONES, FAMILIES

# a small configuration of every backbone class (every class: checked below)
FIRST_OF_EACH = {
    'SKNet': 'sknet18-paper',
    'SENet': 'senet18',
    'MultiScaleResNet': 'res2net26-6w4s',
    'InvertedResidualNet': 'mobilenet-v2-w0.25',
}
TYPES = sorted(FIRST_OF_EACH)


def test_every_backbone_class_is_checked():
    assert {cfg['type'] for cfg in BACKBONES.values()} == set(TYPES)
    assert all(BACKBONES[n]['type'] == t for t, n in FIRST_OF_EACH.items())


def _cfg(name, **overrides):
    cfg = copy.deepcopy(BACKBONES[name])
    cfg.update(overrides)
    return cfg


def _family(name):
    return FAMILIES[BACKBONES[name]['type']]


def _defaults(cls):
    """Default of every keyword the class takes (following ``**kwargs`` up
    the bases)."""
    defaults = {}
    for klass in cls.__mro__:
        if '__init__' not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        for p in params:
            if p.default is not p.empty:
                defaults.setdefault(p.name, p.default)
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return defaults


def _wrong_type(default):
    """A value of the wrong type for an option with this default, or None
    where the default says nothing about the type."""
    if isinstance(default, bool):
        return 'no'  # truthy: would silently mean True
    if isinstance(default, (int, float)):
        return str(default)
    if isinstance(default, (dict, list, tuple)):
        return 'x'
    return None


def _typed_options(type_name):
    import mmsk  # noqa: F401
    from mmsk.registry import MODELS
    cls = MODELS.get(type_name)
    return sorted((key, bad) for key, default in _defaults(cls).items()
                  if (bad := _wrong_type(default)) is not None)


TYPED = [
    pytest.param(t, key, bad, id=f'{t}-{key}') for t in TYPES
    for key, bad in _typed_options(t)
]


@pytest.mark.parametrize('type_name,key,bad', TYPED)
def test_every_typed_backbone_option_refuses_the_wrong_type(
        type_name, key, bad):
    """Derived from the signatures, so a new option is covered the day it
    is added: a bool refuses 'no', an int '2', a cfg 'x'."""
    with pytest.raises((TypeError, ValueError, KeyError)) as info:
        build_backbone(_cfg(FIRST_OF_EACH[type_name], **{key: bad}))
    message = str(info.value)
    assert key in message and type_name in message, message


def test_the_table_covers_the_options_of_the_issue():
    keys = {(t, key) for t in TYPES for key, _ in _typed_options(t)}
    for t in TYPES:
        for key in ('norm_eval', 'with_cp', 'frozen_stages', 'in_channels',
                    'norm_cfg', 'act_cfg', 'drop_path_rate', 'out_indices'):
            assert (t, key) in keys


@pytest.mark.parametrize('type_name', TYPES)
@pytest.mark.parametrize('key', ['norm_eval', 'with_cp'])
def test_string_bools_raise_and_name_the_option(type_name, key):
    name = FIRST_OF_EACH[type_name]
    with pytest.raises(TypeError,
                       match=rf"{type_name}: {key} must be a bool .*"
                       rf"'no' \(str\)"):
        build_backbone(_cfg(name, **{key: 'no'}))
    # also a ValueError, for callers that caught the older checks
    with pytest.raises(ValueError, match=key):
        build_backbone(_cfg(name, **{key: 0}))
    # and the real bools still mean what they say
    model = build_backbone(_cfg(name, **{key: True}))
    assert getattr(model, key) is True


# one bad value of each kind per family: (options, error, message pattern)
FAMILY_BAD = {
    'resnet': [
        (dict(frozen_stages=1.0), TypeError, r'frozen_stages must be an int'),
        (dict(deep_stem='yes'), TypeError, 'deep_stem must be a bool'),
        (dict(stem_channels=8.0), TypeError, 'stem_channels must be a '
         'positive int'),
        (dict(strides=(1, 2, 2, '2')), TypeError, r'strides\[3\]'),
        (dict(drop_path_rate='0.1'), TypeError, 'drop_path_rate'),
        (dict(conv_cfg='conv'), TypeError, 'conv_cfg must be a dict'),
        (dict(out_indices='3'), TypeError, 'out_indices must be an int or'),
        (dict(out_indices=(1.0, )), TypeError, 'out_indices entries'),
    ],
    'ir': [
        (dict(widen_factor='0.5'), TypeError, 'widen_factor must be a '
         'number'),
        (dict(fix_stem_head=1), TypeError, 'fix_stem_head must be a bool'),
        (dict(frozen_stages=True), TypeError, 'frozen_stages must be an int'),
        (dict(dilation_mode=1), ValueError, 'dilation_mode must be one of'),
        (dict(stem_stride=2.0), TypeError, 'stem_stride'),
        (dict(out_indices=(7.0, )), TypeError, 'out_indices entries'),
    ],
}


@pytest.mark.parametrize('name,bad,error,pattern', [
    pytest.param(name, bad, error, pattern, id=f'{name}-{i}')
    for name in (FIRST_OF_EACH['SKNet'], FIRST_OF_EACH['InvertedResidualNet'])
    for i, (bad, error, pattern) in enumerate(
        FAMILY_BAD['ir' if 'mobilenet' in name else 'resnet'])
])
def test_wrong_types_are_named_with_the_value(name, bad, error, pattern):
    with pytest.raises(error, match=pattern) as info:
        build_backbone(_cfg(name, **bad))
    # the class and the given value (or its bad item) are in the message
    message = str(info.value)
    value = next(iter(bad.values()))
    items = value if isinstance(value, tuple) else (value, )
    assert BACKBONES[name]['type'] in message
    assert any(repr(v) in message for v in items), message


# -------------------------------------------------------- blocks and layers
def _block_cases():
    from mmsk.models import InvertedResidualBlock
    from mmsk.models.backbones import (BasicBlock, Bottleneck, Res2Bottleneck,
                                       SEBasicBlock, SEBottleneck,
                                       SKBasicBlock, SKBottleneck)
    from mmsk.models.backbones.resnet import ResLayer
    from mmsk.models.layers import (ChannelAttention, Res2Conv, SEAttention,
                                    SKAttention, SKConv)
    return [
        (BasicBlock, (8, 8), dict(with_cp='no'), 'with_cp'),
        (BasicBlock, (8, 8), dict(aa_downsample=1), 'aa_downsample'),
        (Bottleneck, (32, 32), dict(with_cp='no'), 'with_cp'),
        (Bottleneck, (32, 32), dict(stride=2.0), 'stride'),
        (Bottleneck, (32, 32), dict(norm_cfg='BN'), 'norm_cfg'),
        (SKBasicBlock, (8, 8), dict(sk_cfg='timm'), 'sk_cfg'),
        (SKBottleneck, (64, 64), dict(with_cp='no'), 'with_cp'),
        (SEBasicBlock, (8, 8), dict(drop_path_rate='0.1'), 'drop_path_rate'),
        (SEBottleneck, (64, 64), dict(attn_position=1), 'attn_position'),
        (Res2Bottleneck, (64, 64), dict(scales=4.0), 'scales'),
        (Res2Bottleneck, (64, 64), dict(base_width='26'), 'base_width'),
        (InvertedResidualBlock, (8, 8), dict(with_cp='no'), 'with_cp'),
        (InvertedResidualBlock, (8, 8), dict(expand_ratio='6'),
         'expand_ratio'),
        (SKConv, (8, 8), dict(split_input='no'), 'split_input'),
        (SKConv, (8, 8), dict(reduction='16'), 'reduction'),
        (SKConv, (8, 8), dict(branches=None), 'branches'),
        (SKAttention, (64, ), dict(groups='32'), 'groups'),
        (SKAttention, (64, ), dict(sk_form='nope'), 'sk_form'),
        (ChannelAttention, (8, ), dict(bias='no'), 'bias'),
        (ChannelAttention, (8, ), dict(gate_cfg='sigmoid'), 'gate_cfg'),
        (SEAttention, (8, ), dict(reduction='16'), 'reduction'),
        (Res2Conv, (16, ), dict(stage_first='no'), 'stage_first'),
        (Res2Conv, (16, ), dict(scales=1), 'scales'),
        (ResLayer, (BasicBlock, 2, 8, 16), dict(avg_down='no', stride=2),
         'avg_down'),
        (ResLayer, (BasicBlock, 0, 8, 8), {}, 'num_blocks'),
        (ResLayer, ('BasicBlock', 2, 8, 8), {}, 'block'),
    ]


@pytest.mark.parametrize('index', range(len(_block_cases())))
def test_blocks_and_layers_check_their_options(index):
    cls, args, bad, key = _block_cases()[index]
    with pytest.raises(ValueError, match=rf'{cls.__name__}: {key} must'):
        cls(*args, **bad)


# ------------------------------------------------------------- out_indices
@pytest.mark.parametrize('type_name', TYPES)
@pytest.mark.parametrize('bad,word', [
    (lambda n: (1, 1), 'repeats'),
    (lambda n: (3, 0), 'increasing order'),
    (lambda n: (-1, 0), 'increasing order'),
    (lambda n: (3, 3 - n), 'repeats'),  # 3 - n is 3 counted from the end
])
def test_out_indices_duplicates_and_order_are_refused(type_name, bad, word):
    name = FIRST_OF_EACH[type_name]
    out_indices = bad(len(_family(name).all_outputs))
    with pytest.raises(ValueError, match=rf'out_indices .*{word}'):
        build_backbone(_cfg(name, out_indices=out_indices))


@pytest.mark.parametrize('type_name', ['SKNet', 'InvertedResidualNet'])
def test_out_indices_take_any_sequence(type_name):
    name = FIRST_OF_EACH[type_name]
    outputs = _family(name).all_outputs
    x = torch.rand(1, 3, 32, 32)
    ref = build_backbone(_cfg(name, out_indices=outputs)).eval()
    with torch.no_grad():
        expected = ref(x)
    n = len(outputs)
    for out_indices, picked in [(range(n), range(n)),
                                (list(outputs[1:]), range(1, n)),
                                ((0, -1), (0, n - 1)),
                                (-2, (n - 2, ))]:
        model = build_backbone(_cfg(name, out_indices=out_indices)).eval()
        assert model.out_indices == tuple(picked)
        model.load_state_dict(ref.state_dict(), strict=False)
        with torch.no_grad():
            outs = model(x)
        assert len(outs) == len(picked)
        for out, i in zip(outs, picked):
            torch.testing.assert_close(out, expected[i])


# ------------------------------------------------------- unknown options
@pytest.mark.parametrize('cfg,pattern', [
    (dict(type='SKNet', depth=18, dept=50), r"SKNet got unknown option "
     r"'dept' \(did you mean depth"),
    (dict(type='SENet', depth=18, se_ratio=16), r"SENet got unknown option "
     r"'se_ratio' \(.*se_cfg=dict\(reduction"),
    (dict(type='MultiScaleResNet', depth=26, scale=4), r"MultiScaleResNet "
     r"got unknown option 'scale' \(did you mean scales"),
    (dict(type='InvertedResidualNet', widen_factr=0.5),
     r"InvertedResidualNet got unknown option 'widen_factr' \(did you mean "
     r"widen_factor"),
    (dict(type='SKNet', depth=18, norm_evel=True, with_cpp=True),
     r"SKNet got unknown options 'norm_evel' .*norm_eval.*'with_cpp' .*"
     r"with_cp"),
    (dict(type='SKNet', depth=18, sk_cfg=dict(reductoin=8)),
     r"SKNet got unknown sk_cfg key 'reductoin' \(did you mean reduction"),
    (dict(type='SENet', depth=18, se_cfg=dict(ratio=8)),
     r"SENet got unknown se_cfg key 'ratio'"),
    # SKConv arguments that the blocks set: named with where they are set
    (dict(type='SKNet', depth=18, sk_cfg=dict(act_cfg=dict(type='SiLU'))),
     r"SKNet got unknown sk_cfg key 'act_cfg' \(SKNet's act_cfg applies"),
    (dict(type='SKNet', depth=50, sk_cfg=dict(norm_cfg=dict(type='BN'))),
     r"'norm_cfg' \(SKNet's norm_cfg applies .*attn_norm_cfg"),
    (dict(type='SKNet', depth=50, sk_cfg=dict(groups=2, stride=2)),
     r"'groups' \(set by SKNet's groups\), 'stride' \(set by the block"),
])
def test_unknown_options_are_named_at_the_backbone(cfg, pattern):
    with pytest.raises(TypeError, match=pattern) as info:
        build_backbone(cfg)
    assert 'Block' not in str(info.value)


def test_block_options_still_pass_through_the_backbone():
    model = build_backbone(
        dict(type='SENet', depth=50, attn_position='mid', stem_channels=8,
             base_channels=8))
    assert model.layer1[0].mid_attn is not None


@pytest.mark.parametrize('type_name', TYPES)
def test_unregistered_norm_type_is_named(type_name):
    name = FIRST_OF_EACH[type_name]
    with pytest.raises(KeyError, match=r"norm_cfg type 'NoSuchNorm' is not "
                       r'registered'):
        build_backbone(_cfg(name, norm_cfg=dict(type='NoSuchNorm')))
    with pytest.raises(KeyError, match=r"'SyncBn' .*did you mean .*SyncBN"):
        build_backbone(_cfg(name, norm_cfg=dict(type='SyncBn')))
    with pytest.raises(KeyError, match=r"act_cfg type 'Relu' .*ReLU"):
        build_backbone(_cfg(name, act_cfg=dict(type='Relu')))


# ------------------------------------------------------------ bad inputs
BAD_INPUTS = [
    (lambda: torch.rand(2, 1, 32, 32), ValueError, r'\(2, 1, 32, 32\)'),
    (lambda: torch.rand(2, 4, 32, 32), ValueError, r'\(2, 4, 32, 32\)'),
    (lambda: torch.rand(3, 32, 32), ValueError, r'\(3, 32, 32\)'),
    (lambda: torch.rand(1, 2, 3, 32, 32), ValueError, r'\(1, 2, 3, 32, 32\)'),
    (lambda: torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8),
     TypeError, 'floating-point input .*torch.uint8'),
    (lambda: torch.randint(0, 255, (2, 3, 32, 32)), TypeError,
     'floating-point input .*torch.int64'),
    (lambda: torch.rand(2, 3, 32, 32, dtype=torch.float64), TypeError,
     'torch.float32 weights but got torch.float64'),
    (lambda: torch.rand(2, 3, 32, 32).half(), TypeError,
     'torch.float32 weights but got torch.float16'),
    (lambda: [torch.rand(2, 3, 32, 32)], TypeError, 'expects a tensor'),
]


@pytest.mark.parametrize('type_name', TYPES)
def test_bad_inputs_get_one_clear_error_at_the_entry(type_name):
    model = build_backbone(_cfg(FIRST_OF_EACH[type_name])).eval()
    for make, error, pattern in BAD_INPUTS:
        with pytest.raises(error, match=pattern) as info:
            model(make())
        message = str(info.value)
        assert type_name in message, message
        if error is ValueError:
            assert '(N, 3, H, W)' in message
    # what fits runs: 3 channels, any size; fp64 once the model is fp64
    with torch.no_grad():
        model(torch.rand(1, 3, 40, 24))
        model.double()(torch.rand(1, 3, 32, 32, dtype=torch.float64))


@pytest.mark.parametrize('type_name', TYPES)
def test_in_channels_sets_the_expected_input(type_name):
    model = build_backbone(_cfg(FIRST_OF_EACH[type_name],
                                in_channels=1)).eval()
    with torch.no_grad():
        model(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r'\(N, 1, H, W\).*\(1, 3, 32, 32\)'):
        model(torch.rand(1, 3, 32, 32))


def test_autocast_inputs_are_accepted():
    model = build_backbone(_cfg(FIRST_OF_EACH['SKNet'])).eval()
    with torch.autocast('cpu', dtype=torch.bfloat16), torch.no_grad():
        model(torch.rand(1, 3, 32, 32, dtype=torch.bfloat16))


def test_input_check_does_not_break_fx_and_export():
    model = build_backbone(_cfg(FIRST_OF_EACH['SKNet'])).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    traced = torch.fx.symbolic_trace(model)
    assert not any('check' in str(n.target) for n in traced.graph.nodes)
    exported = torch.export.export(model, (x, ))
    jit = torch.jit.trace(model, (x, ), strict=False)
    with torch.no_grad():
        for run in (traced, exported.module(), jit):
            for out, ref in zip(run(x), expected):
                torch.testing.assert_close(out, ref)


# ----------------------------------------------------------------- SyncBN
def test_sync_bn_on_cpu_in_a_distributed_run_says_what_to_do(tmp_path):
    import torch.distributed as dist
    cfg = _cfg(FIRST_OF_EACH['SKNet'], norm_cfg=dict(type='SyncBN'))
    model = build_backbone(cfg).train()
    x = torch.rand(2, 3, 32, 32)
    # one process, no process group: torch falls back to plain BN
    model(x)
    dist.init_process_group(
        'gloo', init_method=f'file://{tmp_path}/pg', rank=0, world_size=1)
    try:
        with pytest.raises(RuntimeError,
                           match=r'SKNet uses SyncBN .*needs GPUs .*'
                           r"plain BN: norm_cfg=dict\(type=\"BN\"\)"):
            model(x)
        # eval mode and norm_eval do not synchronise: they run
        model.eval()(x)
        frozen = build_backbone(dict(cfg, norm_eval=True)).train()
        assert not any(m.training for m in frozen.modules()
                       if isinstance(m, _BatchNorm))
        frozen(x)
    finally:
        dist.destroy_process_group()


# ------------------------------------------------- layer configs by kind
@pytest.mark.parametrize('type_name', TYPES)
@pytest.mark.parametrize('key,cfg,pattern', [
    ('norm_cfg', dict(type='GN'), 'GroupNorm needs num_groups'),
    ('norm_cfg', dict(type='ReLU'), "'ReLU' is an activation layer, not a "
     'norm layer'),
    ('norm_cfg', dict(type='LN'), 'LayerNorm normalises the last dimension'
     '.*LN2d'),
    ('act_cfg', dict(type='BN'), "'BN' is a norm layer, not an activation"),
    ('conv_cfg', dict(type='BN'), "'BN' is a norm layer, not a conv layer"),
    ('conv_cfg', dict(type='ReLU'), "'ReLU' is an activation layer, not a "
     'conv layer'),
])
def test_layer_cfgs_of_another_kind_are_refused(type_name, key, cfg,
                                                pattern):
    """A norm where an activation goes (or GN without its groups) fails at
    the option, not inside mmcv with an argument the user never passed."""
    with pytest.raises(ValueError, match=pattern) as info:
        build_backbone(_cfg(FIRST_OF_EACH[type_name], **{key: cfg}))
    assert f'{type_name}: {key}' in str(info.value)


def test_the_layernorm_advice_builds_from_any_scope():
    """The LayerNorm error's advice, dict(type="LN2d"), built only under
    mmpretrain's default scope (not mmsk's, mmdet's or mmseg's)."""
    from mmengine.registry import DefaultScope
    cfg = dict(type='SKNet', depth=18, stem_channels=8, base_channels=8)
    with pytest.raises(ValueError, match='use dict.type="(.*)"') as info:
        build_backbone(dict(cfg, norm_cfg=dict(type='LN')))
    advised = re.search(r'use dict\(type="([\w.]+)"\)',
                        str(info.value)).group(1)
    with DefaultScope.overwrite_default_scope('mmsk'):
        from mmsk.registry import MODELS
        model = MODELS.build(dict(cfg, norm_cfg=dict(type=advised)))
    assert model(torch.rand(1, 3, 32, 32))[-1].shape == (1, 64, 1, 1)


@pytest.mark.parametrize('type_name', TYPES)
def test_layer_cfgs_of_the_right_kind_still_build(type_name):
    x = torch.rand(2, 3, 64, 64)  # InstanceNorm needs more than a 1x1 map
    # SK: InstanceNorm only on the maps (see the test below)
    extra = dict(sk_cfg=dict(attn_norm_cfg=dict(type='BN'))) \
        if type_name == 'SKNet' else {}
    for options in [dict(norm_cfg=dict(type='GN', num_groups=1)),
                    dict(norm_cfg=dict(type='IN', affine=True), **extra),
                    dict(act_cfg=dict(type='SiLU')),
                    dict(act_cfg=dict(type='HSwish')),
                    dict(conv_cfg=dict(type='ConvWS'))]:
        model = build_backbone(_cfg(FIRST_OF_EACH[type_name], **options))
        model.train()(x)


def test_instance_norm_is_refused_on_the_pooled_descriptor():
    """The attention normalises a 1x1 map: InstanceNorm has one value per
    channel there and fails in every forward."""
    with pytest.raises(ValueError, match=r'SKConv: .*is an InstanceNorm'
                       r'.*1x1 .*attn_norm_cfg=None'):
        build_backbone(_cfg(FIRST_OF_EACH['SKNet'],
                            norm_cfg=dict(type='IN')))
    build_backbone(_cfg(FIRST_OF_EACH['SKNet'], norm_cfg=dict(type='IN'),
                        sk_cfg=dict(attn_norm_cfg=None)))


def test_the_sk_attention_norm_is_checked_by_kind():
    from mmsk.models.layers import SKConv
    with pytest.raises(ValueError, match=r'SKConv: attn_norm_cfg .*'
                       'GroupNorm needs num_groups'):
        SKConv(64, 64, attn_norm_cfg=dict(type='GN'))
    with pytest.raises(ValueError, match="SEAttention: gate_cfg type 'BN' "
                       'is a norm layer'):
        from mmsk.models.layers import SEAttention
        SEAttention(16, gate_cfg=dict(type='BN'))
    SKConv(64, 64, attn_norm_cfg=dict(type='GN', num_groups=4))


# ------------------------------------------------------- finite numbers
@pytest.mark.parametrize('cfg,key', [
    (dict(type='InvertedResidualNet', widen_factor=float('inf')),
     'widen_factor'),
    (dict(type='InvertedResidualNet', widen_factor=float('nan')),
     'widen_factor'),
    (dict(type='InvertedResidualNet', depth_multiplier=float('inf')),
     'depth_multiplier'),
    (dict(type='SKNet', depth=18, sk_cfg=dict(reduction=float('inf'))),
     'reduction'),
    (dict(type='SENet', depth=18, se_cfg=dict(reduction=float('nan'))),
     'reduction'),
])
def test_nan_and_inf_are_refused(cfg, key):
    with pytest.raises(ValueError, match=rf'{key} must be a finite number'):
        build_backbone(cfg)


# ---------------------------------------------------- blocks and shortcuts
def _shortcut_blocks():
    from mmsk.models.backbones import (BasicBlock, Bottleneck, Res2Bottleneck,
                                       SEBasicBlock, SEBottleneck,
                                       SKBasicBlock, SKBottleneck)
    return [(BasicBlock, 8), (SEBasicBlock, 8), (SKBasicBlock, 32),
            (Bottleneck, 32), (SEBottleneck, 64), (SKBottleneck, 64),
            (Res2Bottleneck, 64)]


@pytest.mark.parametrize('index', range(7))
def test_blocks_refuse_an_identity_shortcut_that_cannot_be_added(index):
    from torch import nn
    cls, channels = _shortcut_blocks()[index]
    for args, options in [((channels, 2 * channels), {}),
                          ((channels, channels), dict(stride=2))]:
        with pytest.raises(ValueError, match=rf'{cls.__name__}: .*identity '
                           'shortcut .*pass a downsample'):
            cls(*args, **options)
    # with the projection, as ResLayer builds it, the block runs
    projection = nn.Sequential(
        nn.Conv2d(channels, 2 * channels, 1, stride=2, bias=False),
        nn.BatchNorm2d(2 * channels))
    block = cls(channels, 2 * channels, stride=2, downsample=projection)
    assert block(torch.rand(2, channels, 8, 8)).shape == \
        (2, 2 * channels, 4, 4)


def test_res2conv_refuses_input_of_other_channels():
    from mmsk.models.layers import Res2Conv
    layer = Res2Conv(16, scales=4)
    assert layer(torch.rand(2, 16, 8, 8)).shape == (2, 16, 8, 8)
    # more channels used to be dropped, fewer reused a split or crashed
    for channels in (20, 12, 8):
        with pytest.raises(ValueError, match=r'Res2Conv expects input of '
                           r'shape \(N, 16, H, W\) \(4 splits of 4\)'):
            layer(torch.rand(2, channels, 8, 8))


def test_sk_unit_refuses_input_of_other_channels():
    """torch's conv error named no layer (with split_input, a wider input
    was cut into wider halves)."""
    from mmsk.models.layers import SKConv
    for split_input in (False, True):
        unit = SKConv(16, 16, split_input=split_input)
        for channels in (8, 32):
            with pytest.raises(ValueError, match=r'SKConv expects input of '
                               r'shape \(N, 16, H, W\), got \(2, '
                               f'{channels}, 8, 8\\)'):
                unit(torch.rand(2, channels, 8, 8))


def test_blocks_refuse_the_arguments_they_set_themselves():
    """SK and Res2Net blocks pass conv1_cfg / conv2_cfg to the base block
    themselves: given too, they ended in 'got multiple values for keyword
    argument' (the backbones' check took them for block options)."""
    from mmsk.models.backbones.res2net import Res2Bottleneck
    from mmsk.models.backbones.sknet import SKBasicBlock, SKBottleneck
    for build, key, hint in [
            (lambda **kw: SKBottleneck(64, 64, **kw), 'conv2_cfg', 'sk_cfg'),
            (lambda **kw: SKBasicBlock(16, 16, **kw), 'conv1_cfg', 'sk_cfg'),
            (lambda **kw: Res2Bottleneck(64, 64, **kw), 'conv2_cfg',
             'scales')]:
        with pytest.raises(TypeError, match=f"sets '{key}' .*pass {hint}"):
            build(**{key: {}})
    for cfg, key, hint in [
            (dict(type='SKNet', depth=50), 'conv2_cfg', 'sk_cfg'),
            (dict(type='SKNet', depth=18, sk_form='timm'), 'conv1_cfg',
             'sk_cfg'),
            (dict(type='MultiScaleResNet', depth=50), 'conv2_cfg',
             'scales')]:
        with pytest.raises(TypeError, match=f"got unknown option '{key}' "
                           f'.*pass {hint}'):
            build_backbone(dict(cfg, **{key: {}}))


def test_options_that_would_be_ignored_are_refused():
    from mmsk.models.layers import ChannelAttention
    with pytest.raises(ValueError, match=r'ChannelAttention: gate_cfg '
                       r'applies to one path; with num_paths=2 .*softmax'):
        ChannelAttention(8, num_paths=2, gate_cfg=dict(type='HSigmoid'))
    with pytest.raises(ValueError, match=r'SKBottleneck: attn_position="mid"'
                       r' places an attention, but attn_cfg is None'):
        build_backbone(dict(type='SKNet', depth=50, attn_position='mid',
                            stem_channels=8, base_channels=8))


# (backbone, attention, what to use, attn_position); SENet sets attn_cfg
# itself, and the inverted-residual block takes SKConv as its SK depthwise
ATTN_SLOTS = [(type_name, attn, use, position)
              for type_name in ('SKNet', 'MultiScaleResNet')
              for attn, use in [('ChannelAttention', 'SEAttention'),
                                ('SKConv', 'SKAttention')]
              for position in ('last', 'mid')] + [
                  ('InvertedResidualNet', 'ChannelAttention', 'SEAttention',
                   None)]


@pytest.mark.parametrize('type_name,attn,use,position', ATTN_SLOTS)
def test_attention_slots_refuse_modules_that_do_not_gate_the_map(
        type_name, attn, use, position):
    """ChannelAttention returns the weights (B, C, 1, 1) and SKConv is a
    conv: in the attention slot the fast path crashed at the residual add
    and the reference path broadcast the weights into wrong values."""
    from test_backbones import _cfg
    options = dict(attn_cfg=dict(type=attn))
    if position is not None:
        options['attn_position'] = position
    if type_name == 'SKNet' and position == 'mid':
        options.update(depth=50)  # mid attention: bottlenecks only
    with pytest.raises(ValueError, match=rf'attn_cfg type {attn} .*use '
                       rf'{use}'):
        build_backbone(_cfg(FIRST_OF_EACH[type_name], **options))


def test_the_attention_norm_groups_must_divide_its_width():
    from mmsk.models.layers import SKConv
    with pytest.raises(ValueError, match=r'attn_norm_cfg\) needs num_groups '
                       r'to divide the reduced width attn_channels=32'):
        SKConv(64, 64, attn_norm_cfg=dict(type='GN', num_groups=3))
    # the backbone's GN reaches the attention (attn_norm_cfg='same'),
    # whose width is set by min_channels here
    from test_backbones import _cfg
    with pytest.raises(ValueError, match=r'attn_channels=12'):
        build_backbone(_cfg(FIRST_OF_EACH['SKNet'],
                            norm_cfg=dict(type='GN', num_groups=8),
                            sk_cfg=dict(min_channels=12)))


def test_the_attention_norm_groups_hold_three_channels_or_more():
    """A backbone's GN(32) reached the attention's 32-wide pooled
    descriptor (attn_norm_cfg='same'): groups of one value normalise to 0,
    and the SK select step gave the same weights for every input, and a
    batch of one image raised a BatchNorm error. It is refused, naming the
    way out."""
    from mmsk.models.layers import SKConv
    for num_groups, per_group in ((32, 1), (16, 2)):
        with pytest.raises(ValueError, match=rf'attn_channels=32 into groups '
                           rf'of {per_group} channel.*num_groups=1'):
            SKConv(128, 128, groups=32,
                   norm_cfg=dict(type='GN', num_groups=num_groups))
    with pytest.raises(ValueError, match='sk_cfg=dict.attn_norm_cfg'):
        build_backbone(dict(type='SKNet', depth=50, base_channels=16,
                            norm_cfg=dict(type='GN', num_groups=32)))
    SKConv(128, 128, groups=32, norm_cfg=dict(type='GN', num_groups=32),
           attn_norm_cfg=dict(type='GN', num_groups=8))
    # the way out the error names: the weights follow the input
    model = build_backbone(dict(
        type='SKNet', depth=50, base_channels=16,
        norm_cfg=dict(type='GN', num_groups=32),
        sk_cfg=dict(attn_norm_cfg=dict(type='GN', num_groups=1)))).eval()
    attention = model.layer1[0].conv2.attn
    weights = []
    attention.register_forward_hook(lambda m, i, out: weights.append(out))
    torch.manual_seed(0)
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
        model(torch.randn(1, 3, 32, 32) * 3 + 1)
    assert (weights[0] - weights[1]).abs().max() > 1e-3


def test_sk_branch_kernel_size_must_be_an_int():
    from mmsk.models.layers import SKConv
    with pytest.raises(ValueError, match=r'SKConv: branches\[0\]'
                       r'.kernel_size must be an odd positive int, got True'):
        SKConv(8, 8, branches=[dict(kernel_size=True), dict()])


def test_num_stages_says_what_to_pass():
    with pytest.raises(ValueError, match=r'SKNet: strides has 4 entries for '
                       r'num_stages=3; .*strides=\(1, 2, 2\) and dilations='
                       r'\(1, 1, 1\)'):
        build_backbone(_cfg(FIRST_OF_EACH['SKNet'], num_stages=3))
    model = build_backbone(_cfg(
        FIRST_OF_EACH['SKNet'], num_stages=3, strides=(1, 2, 2),
        dilations=(1, 1, 1), out_indices=(2, ))).eval()
    with torch.no_grad():
        assert len(model(torch.rand(1, 3, 32, 32))) == 1


# ------------------------------------------- one image in train mode
@pytest.mark.parametrize('type_name', TYPES)
def test_one_image_in_train_mode_is_explained(type_name):
    """BatchNorm cannot normalise the 1x1 map of one image: the error names
    the backbone, the input and the ways out, not only torch's shape."""
    # the SK attention's own BatchNorm has its own message (tested in
    # test_layers); without it the maps' BatchNorm is reached
    extra = dict(sk_cfg=dict(attn_norm_cfg=None)) if type_name == 'SKNet' \
        else {}
    model = build_backbone(_cfg(FIRST_OF_EACH[type_name], **extra)).train()
    with pytest.raises(ValueError, match=rf'{type_name}: in train mode '
                       r'BatchNorm .*a batch of one 32x32 image leaves a 1x1 '
                       r'map .*norm_eval=True.*\[torch: Expected more than 1 '
                       r'value per channel'):
        model(torch.rand(1, 3, 32, 32))
    model(torch.rand(2, 3, 32, 32))  # two images: fine
    model(torch.rand(1, 3, 96, 96))  # one larger image: fine
    with torch.no_grad():
        model.eval()(torch.rand(1, 3, 32, 32))


# ----------------------------------------------------- Pretrained init_cfg
@pytest.mark.parametrize('init_cfg,pattern', [
    (dict(type='Pretrained'), 'a Pretrained init_cfg needs checkpoint='),
    (dict(type='Pretrained', checkpoint=None),
     'checkpoint must be a path or URL as a str, got None'),
    (dict(type='Pretrained', checkpoint='w.pth', prefix=1),
     'prefix must be a str'),
    (['Pretrained'], r'\[0\] must be a dict with a "type" key'),
    (dict(checkpoint='w.pth'), 'must be a dict with a "type" key'),
])
def test_bad_init_cfg_is_refused_when_built(init_cfg, pattern):
    for type_name in TYPES:
        with pytest.raises(ValueError,
                           match=rf'{type_name}: init_cfg.*{pattern}'):
            build_backbone(_cfg(FIRST_OF_EACH[type_name], init_cfg=init_cfg))


def test_pretrained_checkpoints_that_do_not_fit_are_explained(tmp_path):
    model = build_backbone(_cfg(FIRST_OF_EACH['SENet']))
    tensor, classifier = tmp_path / 'tensor.pth', tmp_path / 'cls.pth'
    torch.save(torch.zeros(3), tensor)
    torch.save({'state_dict': {f'backbone.{k}': v
                               for k, v in model.state_dict().items()}},
               classifier)

    def init(**cfg):
        build_backbone(_cfg(FIRST_OF_EACH['SENet'], init_cfg=dict(
            type='Pretrained', **cfg))).init_weights()

    with pytest.raises(ValueError, match=r"checkpoint '.*tensor.pth' holds "
                       r'a Tensor, not a state dict'):
        init(checkpoint=str(tensor))
    with pytest.raises(ValueError, match=r"no keys under prefix 'head.'; "
                       r"its keys start with \['backbone.'\]"):
        init(checkpoint=str(classifier), prefix='head.')
    with pytest.raises(ValueError, match=r"holds them under 'backbone.': "
                       r"set prefix='backbone.'"):
        init(checkpoint=str(classifier))
    init(checkpoint=str(classifier), prefix='backbone')  # as MMEngine's


def test_attention_layers_check_their_arguments_and_input():
    from mmsk.models.layers import SEAttention
    from mmsk.models.layers.attention import reduced_channels
    for options, pattern in [(dict(divisor=0), 'divisor must be a positive'),
                             (dict(channels=-64), 'channels must be a '
                              'positive'),
                             (dict(reduction='16'), 'reduction must be a '
                              'number'),
                             (dict(reduction=0), 'reduction must be a '
                              'number in')]:
        with pytest.raises(ValueError, match=f'reduced_channels: {pattern}'):
            reduced_channels(**dict(dict(channels=64), **options))
    with pytest.raises(ValueError, match=r'SEAttention expects input of '
                       r'shape \(N, 8, H, W\), got \(8, 8, 8\)'):
        SEAttention(8)(torch.rand(8, 8, 8))


def test_inverted_residual_sk_slot_refuses_what_the_block_sets():
    """attn_cfg=SKConv replaces the depthwise conv; its stride, groups and
    widths come from the block, and giving them was silently ignored."""
    from mmsk.models import InvertedResidualBlock
    for key, value in [('stride', 2), ('groups', 2), ('in_channels', 4)]:
        with pytest.raises(ValueError, match=rf"InvertedResidualBlock: "
                           rf"attn_cfg keys \['{key}'\] are set by the block"):
            InvertedResidualBlock(8, 8, attn_cfg=dict(type='SKConv',
                                                      **{key: value}))
    block = InvertedResidualBlock(8, 8, stride=2, attn_cfg=dict(
        type='SKConv', reduction=4))
    assert block(torch.rand(2, 8, 8, 8)).shape == (2, 8, 4, 4)
