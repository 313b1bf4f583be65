"""Throughput and peak memory of mmsk classifiers next to timm, mmpretrain
and torchvision (``tools/analysis_tools/benchmark.py`` is its command line).

What is measured
    For every comparison (an mmsk model and its peers, :data:`COMPARISONS`)
    and every input size, all models of the comparison are built at once
    (1000 classes, random weights), then for each mode:

    - ``infer``: eval mode, ``torch.no_grad()``, one forward pass;
    - ``train``: train mode, forward, cross-entropy loss, backward and an
      SGD step (momentum 0.9), ``zero_grad(set_to_none=True)`` first.

    After ``warmup`` untimed steps of every model, ``repeats`` rounds are
    timed, each round running every model once in turn (A, B, C, A, B, C,
    ...), so that a slow-down of the shared machine hits all of them alike;
    one timing is ``iters`` steps (CUDA synchronised before and after).
    Throughput is ``batch * iters / median(time)`` in images per second.

Same weights
    Where mmsk has a converter for the peer (:mod:`mmsk.converters`), the
    peer's weights (with randomised norm statistics) are converted into the
    mmsk model and the logits of both are compared in fp32, NCHW, eval mode
    before anything is timed; a difference above ``1e-4`` (relative to the
    largest logit, at least 1) raises :class:`ParityError`. So the figures
    compare two implementations of the same function.

Layouts
    ``nchw`` or ``channels_last`` for the mmsk side and the peers; ``best``
    times a model in both layouts (both interleaved like the models) and
    reports each model in its faster layout, per mode.

Compiled
    With ``compile=True`` every model (mmsk's and the peers') is also timed
    under ``torch.compile`` (default backend, inductor), interleaved with
    the eager ones; compiled mmsk rows are compared with compiled peers, and
    a table gives each model's compiled / eager ratio. The warm-up steps
    compile (so ``warmup >= 2``); compiled rows get no peak memory.

Targets
    The report ends with mmsk's goals (:data:`TARGETS`) checked against the
    run: the ratio of the medians, and the ratio within each timed repeat
    (the models run in turn, so a repeat pairs timings taken under the same
    state of the machine), which shows how far the noise reaches.

Peak memory
    Measured in a fresh interpreter per comparison (nothing else resident),
    one model at a time, in the layout that is reported: after a warm-up
    step, the memory the next step needs on top of what was allocated just
    before it (in training that includes the gradients, which the step
    makes), plus the bytes of the model's parameters, buffers and
    optimizer state and of the input batch. On CUDA the step's part is
    ``torch.cuda.max_memory_allocated()`` (peak statistics reset before the
    step) minus ``torch.cuda.memory_allocated()`` before it. On the CPU it is
    the peak resident set size of the process during the step (``VmHWM``,
    reset by writing 5 to ``/proc/self/clear_refs``) minus the resident size
    before it, with glibc told (``MALLOC_MMAP_THRESHOLD_=65536``) to map
    every block of 64 KiB or more separately, so that freed tensors leave the
    resident set at once and the peak is the step's own.
"""
import contextlib
import copy
import difflib
import gc
import json
import os
import os.path as osp
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from mmsk.utils import check_choice, check_positive_int
from mmsk.utils.io import atomic_output, atomic_write_text, check_output_path

MODES = ('infer', 'train')
LAYOUTS = ('nchw', 'channels_last')
LAYOUT_CHOICES = LAYOUTS + ('best', )
AMP_CHOICES = ('none', 'bf16')
DEVICES = ('cpu', 'cuda')
NUM_CLASSES = 1000
PARITY_TOLERANCE = 1e-4


class ParityError(AssertionError):
    """An mmsk model does not compute what its peer computes with the same
    weights (so timing them side by side would be meaningless)."""


# --- the models -------------------------------------------------------------


def mmsk_model(backbone: dict) -> dict:
    return dict(source='mmsk', backbone=backbone)


def timm_model(name: str, convert: bool = True, **kwargs) -> dict:
    """timm's ``name``; ``convert``: mmsk's timm converter handles it."""
    return dict(source='timm', name=name, kwargs=kwargs,
                convert=('timm', name) if convert else None)


def mmpretrain_model(backbone: dict, in_channels: int,
                     convert: Optional[tuple]) -> dict:
    return dict(source='mmpretrain', backbone=backbone,
                in_channels=in_channels, convert=convert)


def torchvision_model(name: str, convert: Optional[tuple],
                      **kwargs) -> dict:
    return dict(source='torchvision', name=name, kwargs=kwargs,
                convert=convert)


def _default_models() -> Dict[str, dict]:
    from mmsk.converters.mmpretrain import MMPRETRAIN_MODELS
    from mmsk.converters.timm import TIMM_MODELS

    def from_timm(name):
        return mmsk_model(TIMM_MODELS[name]['backbone'])

    def mmp(name):
        return mmpretrain_model(MMPRETRAIN_MODELS[name]['source'], 2048,
                                ('mmpretrain', name))

    return {
        'mmsk/sknet50': from_timm('skresnext50_32x4d'),
        'mmsk/sknet18-timm': from_timm('skresnet18'),
        'mmsk/sknet34-timm': from_timm('skresnet34'),
        'mmsk/senet50': from_timm('seresnet50'),
        'mmsk/seresnext50-32x4d': from_timm('seresnext50_32x4d'),
        'mmsk/res2net50-w26-s4': from_timm('res2net50_26w_4s'),
        'mmsk/invertedresidualnet': mmsk_model(
            dict(type='InvertedResidualNet')),
        'timm/skresnext50_32x4d': timm_model('skresnext50_32x4d'),
        'timm/resnext50_32x4d': timm_model('resnext50_32x4d', convert=False),
        'timm/skresnet18': timm_model('skresnet18'),
        'timm/skresnet34': timm_model('skresnet34'),
        'timm/seresnet50': timm_model('seresnet50'),
        'timm/seresnext50_32x4d': timm_model('seresnext50_32x4d'),
        'timm/res2net50_26w_4s': timm_model('res2net50_26w_4s'),
        'timm/mobilenetv2_100': timm_model('mobilenetv2_100'),
        'mmpretrain/seresnet50': mmp('seresnet50'),
        'mmpretrain/seresnext50-32x4d': mmp('seresnext50-32x4d'),
        'mmpretrain/res2net50-w26-s4': mmp('res2net50-w26-s4'),
        'mmpretrain/mobilenet-v2': mmpretrain_model(
            dict(type='MobileNetV2', widen_factor=1.0), 1280,
            ('mmpretrain_mobilenet_v2', )),
        'torchvision/mobilenet_v2': torchvision_model(
            'mobilenet_v2', ('torchvision_mobilenet_v2', )),
    }


#: comparison name -> (mmsk model key, peer model keys)
COMPARISONS: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    'sknet50': ('mmsk/sknet50',
                ('timm/skresnext50_32x4d', 'timm/resnext50_32x4d')),
    'sknet18': ('mmsk/sknet18-timm', ('timm/skresnet18', )),
    'sknet34': ('mmsk/sknet34-timm', ('timm/skresnet34', )),
    'senet50': ('mmsk/senet50', ('timm/seresnet50', 'mmpretrain/seresnet50')),
    'seresnext50': ('mmsk/seresnext50-32x4d',
                    ('timm/seresnext50_32x4d',
                     'mmpretrain/seresnext50-32x4d')),
    'res2net50': ('mmsk/res2net50-w26-s4',
                  ('timm/res2net50_26w_4s', 'mmpretrain/res2net50-w26-s4')),
    'mobilenetv2': ('mmsk/invertedresidualnet',
                    ('timm/mobilenetv2_100', 'mmpretrain/mobilenet-v2',
                     'torchvision/mobilenet_v2')),
}


class Logits(nn.Module):
    """``logits = Logits(model)(images)`` whatever the library."""

    def __init__(self, model: nn.Module, openmmlab: bool):
        super().__init__()
        self.model = model
        self.openmmlab = openmmlab

    def forward(self, x):
        if self.openmmlab:
            return self.model(x, mode='tensor')
        return self.model(x)


def _image_classifier(backbone: dict, in_channels: int):
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    cfg = dict(
        type='ImageClassifier',
        backbone=backbone,
        neck=dict(type='GlobalAveragePooling'),
        head=dict(
            type='LinearClsHead',
            num_classes=NUM_CLASSES,
            in_channels=in_channels))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(cfg)


def build_model(spec: dict, with_cp: bool = False) -> Logits:
    """The classifier of a model spec, wrapped in :class:`Logits`."""
    source = spec['source']
    if source == 'mmsk':
        import mmsk  # noqa: F401
        from mmengine.registry import DefaultScope

        from mmsk.registry import MODELS
        backbone = dict(spec['backbone'], out_indices=(-1, ))
        if with_cp:
            backbone['with_cp'] = True
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            feat_dim = MODELS.build(dict(backbone)).feat_dim
        return Logits(_image_classifier(backbone, feat_dim), True)
    if with_cp:
        raise ValueError('with_cp is an option of mmsk models only')
    if source == 'timm':
        import timm
        return Logits(
            timm.create_model(
                spec['name'], pretrained=False, num_classes=NUM_CLASSES,
                **spec.get('kwargs', {})), False)
    if source == 'mmpretrain':
        return Logits(
            _image_classifier(spec['backbone'], spec['in_channels']), True)
    if source == 'torchvision':
        import torchvision
        return Logits(
            getattr(torchvision.models, spec['name'])(
                weights=None, num_classes=NUM_CLASSES,
                **spec.get('kwargs', {})), False)
    raise ValueError(f'unknown model source {source!r}; one of '
                     f"['mmsk', 'timm', 'mmpretrain', 'torchvision']")


def converted_state_dict(peer_spec: dict,
                         peer: Logits) -> Optional[Dict[str, torch.Tensor]]:
    """The peer's weights under the mmsk classifier's keys, or None where
    no converter exists."""
    convert = peer_spec.get('convert')
    if not convert:
        return None
    state = peer.model.state_dict()
    kind = convert[0]
    if kind == 'timm':
        from mmsk.converters.timm import convert_state_dict
        return convert_state_dict(convert[1], state)
    if kind == 'mmpretrain':
        from mmsk.converters.mmpretrain import convert_state_dict
        return convert_state_dict(convert[1], state)
    if kind == 'mmpretrain_mobilenet_v2':
        from mmsk.converters.mobilenet import convert_mmpretrain_mobilenet_v2
        return convert_mmpretrain_mobilenet_v2(state)
    if kind == 'torchvision_mobilenet_v2':
        from mmsk.converters.mobilenet import \
            convert_torchvision_mobilenet_v2
        return convert_torchvision_mobilenet_v2(state)
    raise ValueError(f'unknown converter {kind!r}')


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial norm statistics and affine weights (timm and mmpretrain
    zero the last norm of each block), so that equal logits mean equal
    functions."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                    m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    return model


def _max_diff(a: nn.Module, b: nn.Module, size: int) -> Tuple[float, float]:
    x = torch.randn(2, 3, size, size,
                    generator=torch.Generator().manual_seed(0))
    device = next(a.parameters()).device
    x = x.to(device)
    a.eval()
    b.eval()
    with torch.no_grad():
        ya, yb = a(x).float(), b(x).float()
    if ya.shape != yb.shape:
        raise ParityError(f'output shapes differ: {tuple(ya.shape)} vs '
                          f'{tuple(yb.shape)}')
    return (ya - yb).abs().max().item(), yb.abs().max().item()


def check_same_weights(mmsk: Logits, peer_spec: dict, peer: Logits,
                       label: str = '', size: int = 64) -> Optional[float]:
    """Load the peer's converted weights into ``mmsk`` and compare logits;
    the max abs difference, or None where no converter exists."""
    randomize_norms(peer)
    state = converted_state_dict(peer_spec, peer)
    if state is None:
        return None
    try:
        mmsk.model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ParityError(f'{label}: the converted weights do not fit the '
                          f'mmsk model: {e}') from e
    diff, scale = _max_diff(mmsk, peer, size)
    if not scale > 1e-3:
        raise ParityError(f'{label}: the peer gives all-zero logits, the '
                          f'same-weights check would prove nothing')
    if not diff <= PARITY_TOLERANCE * max(1.0, scale):
        raise ParityError(f'{label}: max abs logit difference {diff:.3g} '
                          f'with the same weights (largest logit '
                          f'{scale:.3g})')
    return diff


def deploy_copy(model: Logits) -> Optional[Logits]:
    """An eval-mode copy in deploy form (``backbone.switch_to_deploy()``),
    or None when the backbone has no deploy form."""
    backbone = getattr(model.model, 'backbone', None)
    if not hasattr(backbone, 'switch_to_deploy'):
        return None
    deployed = copy.deepcopy(model).eval()
    deployed.model.backbone.switch_to_deploy()
    return deployed


# --- options -----------------------------------------------------------------


@dataclass
class Options:
    """What one benchmark run measures (see the module docstring)."""
    comparisons: Sequence[str] = tuple(COMPARISONS)
    sizes: Sequence[int] = (224, )
    batch: int = 16
    modes: Sequence[str] = MODES
    layout: str = 'best'
    peer_layout: Optional[str] = None  # None: as ``layout``
    amp: str = 'none'
    compile: bool = False
    deploy: bool = False
    with_cp: bool = False
    device: str = 'cpu'
    threads: Optional[int] = None
    warmup: int = 2
    repeats: int = 5
    iters: int = 1
    memory: bool = True
    models: Dict[str, dict] = field(default_factory=dict)  # added specs
    table: Dict[str, tuple] = field(default_factory=dict)  # added pairs

    def all_models(self) -> Dict[str, dict]:
        return {**_default_models(), **self.models}

    def all_comparisons(self) -> Dict[str, tuple]:
        return {**COMPARISONS, **self.table}

    def validate(self) -> 'Options':
        table = self.all_comparisons()
        if isinstance(self.comparisons, str) or not self.comparisons:
            raise ValueError('models must be a non-empty list of comparison '
                             f'names, got {self.comparisons!r}')
        for name in self.comparisons:
            if name not in table:
                close = difflib.get_close_matches(name, table, n=3)
                raise ValueError(
                    f'models: unknown comparison {name!r}' +
                    (f' (did you mean {close}?)' if close else '') +
                    f'; known: {sorted(table)}')
        models = self.all_models()
        for name in self.comparisons:
            for key in (table[name][0], ) + tuple(table[name][1]):
                if key not in models:
                    raise ValueError(f'comparison {name!r} names an unknown '
                                     f'model {key!r}')
        if isinstance(self.sizes, int) or not self.sizes:
            raise ValueError(f'size must be a non-empty list of integers, '
                             f'got {self.sizes!r}')
        for size in self.sizes:
            check_positive_int('size', size)
            if size < 32:
                raise ValueError(f'size must be at least 32 (the networks '
                                 f'downsample 32x), got {size}')
        check_positive_int('batch', self.batch)
        if isinstance(self.modes, str) or not self.modes:
            raise ValueError(f'modes must be a non-empty list, got '
                             f'{self.modes!r}')
        for mode in self.modes:
            check_choice('modes', mode, MODES)
        for option, values in (('models', self.comparisons),
                               ('size', self.sizes), ('modes', self.modes)):
            twice = sorted({str(v) for v in values if values.count(v) > 1})
            if twice:
                raise ValueError(f'{option} lists {", ".join(twice)} more '
                                 f'than once')
        check_choice('layout', self.layout, LAYOUT_CHOICES)
        if self.peer_layout is not None:
            check_choice('peer_layout', self.peer_layout, LAYOUT_CHOICES)
        check_choice('amp', self.amp, AMP_CHOICES)
        check_choice('device', self.device, DEVICES)
        if self.device == 'cuda' and not torch.cuda.is_available():
            raise ValueError('device is cuda, but torch sees no CUDA device')
        if self.threads is not None:
            check_positive_int('threads', self.threads)
        check_positive_int('warmup', self.warmup, allow_zero=True)
        if self.compile and self.warmup < 2:
            raise ValueError('warmup must be at least 2 with compile (the '
                             'first steps compile the model)')
        check_positive_int('repeats', self.repeats)
        check_positive_int('iters', self.iters)
        if self.with_cp and 'train' not in self.modes:
            raise ValueError('with_cp compares training memory: add the '
                             'train mode')
        if self.deploy and 'infer' not in self.modes:
            raise ValueError('deploy times the deploy form in inference: '
                             'add the infer mode')
        return self


# --- timing ------------------------------------------------------------------


@dataclass
class Variant:
    """One model in one layout, as it is timed."""
    comparison: str
    key: str
    role: str  # 'mmsk' or 'peer'
    layout: str
    flavour: str = ''  # '', 'with_cp' or 'deploy'
    model: Optional[nn.Module] = None
    optimizer: Optional[torch.optim.Optimizer] = None
    times: Dict[str, List[float]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.key + (f' ({self.flavour})' if self.flavour else '')


def _sync(device):
    if device == 'cuda':
        torch.cuda.synchronize()


def _autocast(opts: Options):
    if opts.amp == 'bf16':
        return torch.autocast(device_type=opts.device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _prepare(model: nn.Module, layout: str, opts: Options,
             compiled: bool = False) -> nn.Module:
    model = model.to(opts.device)
    if layout == 'channels_last':
        model = model.to(memory_format=torch.channels_last)
    if not compiled:
        return model
    # Every model of a run shares frames (Logits.forward, mmcv's and
    # timm's blocks): above dynamo's default of 8 compiled versions a frame,
    # it would run the rest eagerly, without a word.
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, 256)
    config.accumulated_recompile_limit = max(
        config.accumulated_recompile_limit, 4096)
    return torch.compile(model)


def make_step(model: nn.Module, mode: str, x: torch.Tensor, y: torch.Tensor,
              opts: Options,
              optimizer: Optional[torch.optim.Optimizer] = None) -> Callable:
    """One inference or training step of ``model`` on ``x`` (and ``y``)."""
    if mode == 'infer':
        model.eval()

        def step():
            with torch.no_grad(), _autocast(opts):
                model(x)

        return step
    model.train()

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        with _autocast(opts):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        optimizer.step()

    return train_step


def _inputs(opts: Options, size: int, layout: str):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(opts.batch, 3, size, size, generator=gen)
    y = torch.randint(0, NUM_CLASSES, (opts.batch, ), generator=gen)
    x, y = x.to(opts.device), y.to(opts.device)
    if layout == 'channels_last':
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def check_one_image_trains(key: str, spec: dict, size: int,
                           opts: Options) -> None:
    """With ``batch`` 1, one train-mode forward of ``key`` on one image:
    a BatchNorm that sees one value per channel (the SK attention's, on
    pooled features; any on a 1x1 map) cannot train. ``ValueError``
    naming the model and the options, before anything is timed."""
    if opts.batch != 1:
        return
    model = build_model(spec).to(opts.device).train()
    x = torch.randn(1, 3, size, size, device=opts.device)
    try:
        with _autocast(opts):
            model(x)
    except ValueError as e:
        from mmsk.utils.validation import _BN_SINGLE_VALUE
        text = str(e)
        if _BN_SINGLE_VALUE not in text and '2 or more images' not in text:
            raise
        raise ValueError(
            f'batch 1 cannot train {key} at {size}x{size}: one of its '
            'BatchNorms sees one value per channel per image ('
            f"{text.split('. ')[0]}); use --batch 2 or more, or --modes "
            'infer') from e


def _layouts(layout: str) -> Tuple[str, ...]:
    return LAYOUTS if layout == 'best' else (layout, )


def _optimizer(model: nn.Module):
    return torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)


def build_variants(name: str, opts: Options, progress=None):
    """The models of one comparison, checked for same weights, in each
    layout to time. Returns ``(variants, parity)``."""
    models = opts.all_models()
    mmsk_key, peer_keys = opts.all_comparisons()[name]
    torch.manual_seed(0)
    mmsk = build_model(models[mmsk_key])
    parity = []
    peers = {}
    for key in peer_keys:
        peer = build_model(models[key])
        diff = check_same_weights(mmsk, models[key], peer,
                                  f'{mmsk_key} vs {key}')
        parity.append(dict(comparison=name, mmsk=mmsk_key, peer=key,
                           max_abs_diff=diff))
        peers[key] = peer
        if progress:
            progress(f'{name}: {mmsk_key} vs {key}: ' +
                     ('no converter, random weights' if diff is None else
                      f'same weights, max abs logit diff {diff:.2e}'))
    flavours = [(mmsk_key, 'mmsk', '', mmsk)]
    if opts.with_cp:
        flavours.append((mmsk_key, 'mmsk', 'with_cp',
                         build_model(models[mmsk_key], with_cp=True)))
    if opts.deploy and 'infer' in opts.modes:
        deployed = deploy_copy(mmsk)
        if deployed is None:
            if progress:
                progress(f'{name}: {mmsk_key} has no switch_to_deploy(); '
                         'no deploy row')
        else:
            diff, scale = _max_diff(deployed, mmsk, 64)
            if not diff <= PARITY_TOLERANCE * max(1.0, scale):
                raise ParityError(f'{mmsk_key}: the deploy form differs by '
                                  f'{diff:.3g}')
            flavours.append((mmsk_key, 'mmsk', 'deploy', deployed))
    flavours += [(key, 'peer', '', peer) for key, peer in peers.items()]
    if opts.compile:
        # every model again under torch.compile, next to its eager self
        flavours += [(key, role, 'compiled', model)
                     for key, role, flavour, model in flavours
                     if flavour == '']
    peer_layout = opts.peer_layout or opts.layout
    variants = []
    for key, role, flavour, model in flavours:
        layouts = _layouts(opts.layout if role == 'mmsk' else peer_layout)
        for layout in layouts:
            # every variant owns its weights (layouts, compiled copies)
            m = _prepare(copy.deepcopy(model), layout, opts,
                         compiled=flavour == 'compiled')
            variants.append(
                Variant(name, key, role, layout, flavour, m,
                        _optimizer(m) if flavour != 'deploy' else None))
    return variants, parity


def _modes_of(variant: Variant, modes) -> List[str]:
    if variant.flavour == 'deploy':
        return [m for m in modes if m == 'infer']
    if variant.flavour == 'with_cp':
        return [m for m in modes if m == 'train']
    return list(modes)


def time_variants(variants: List[Variant], size: int, opts: Options,
                  progress=None) -> None:
    """Warm up, then time every variant ``repeats`` times, interleaved;
    the timings land in ``variant.times[mode]``."""
    inputs = {layout: _inputs(opts, size, layout) for layout in LAYOUTS}
    for mode in opts.modes:
        todo = [v for v in variants if mode in _modes_of(v, [mode])]
        steps = {
            id(v): make_step(v.model, mode, *inputs[v.layout], opts,
                             v.optimizer)
            for v in todo
        }
        for _ in range(opts.warmup):
            for v in todo:
                steps[id(v)]()
        _sync(opts.device)
        for r in range(opts.repeats):
            for v in todo:
                _sync(opts.device)
                start = time.perf_counter()
                for _ in range(opts.iters):
                    steps[id(v)]()
                _sync(opts.device)
                v.times.setdefault(mode, []).append(time.perf_counter() -
                                                    start)
            if progress:
                progress(f'{todo[0].comparison} {size}px {mode}: repeat '
                         f'{r + 1}/{opts.repeats}: ' + ', '.join(
                             f'{v.name} {v.layout} '
                             f'{_median_rate(v.times[mode][-1:], opts):.1f}'
                             for v in todo) + ' img/s')


# --- peak memory -------------------------------------------------------------


def _proc_status_kib(field_name: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field_name + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'/proc/self/status has no {field_name}')


def _state_bytes(model: nn.Module, optimizer, x: torch.Tensor) -> int:
    tensors = {id(t): t for t in list(model.parameters()) +
               list(model.buffers())}
    if optimizer is not None:
        for state in optimizer.state.values():
            for t in state.values():
                if isinstance(t, torch.Tensor):
                    tensors[id(t)] = t
    tensors[id(x)] = x
    return sum(t.numel() * t.element_size() for t in tensors.values())


def step_peak_memory(step: Callable, device: str) -> int:
    """Bytes that ``step()`` needs on top of what is allocated before it
    (see the module docstring for the method on each device)."""
    gc.collect()
    if device == 'cuda':
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    before = _proc_status_kib('VmRSS')
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # VmHWM := VmRSS
    step()
    return max(0, _proc_status_kib('VmHWM') - before) * 1024


def measure_memory(jobs: List[dict], opts: Options) -> List[int]:
    """Peak memory in bytes of each job (``dict(spec, layout, mode,
    with_cp, deploy, size)``), measured one after another in this process
    (the caller gives it a fresh one: :func:`measure_memory_in_subprocess`).
    """
    if opts.threads:
        torch.set_num_threads(opts.threads)
    results = []
    for job in jobs:
        model = build_model(job['spec'], with_cp=job['with_cp'])
        if job['deploy']:
            model = deploy_copy(model)
        model = _prepare(model, job['layout'], opts)
        optimizer = _optimizer(model) if job['mode'] == 'train' else None
        x, y = _inputs(opts, job['size'], job['layout'])
        step = make_step(model, job['mode'], x, y, opts, optimizer)
        for _ in range(max(1, opts.warmup)):
            step()
        if optimizer is not None:
            # the step frees the gradients first and makes them anew: taken
            # before it, they would cancel out of the step's part
            optimizer.zero_grad(set_to_none=True)
        peak = step_peak_memory(step, opts.device)
        results.append(peak + _state_bytes(model, optimizer, x))
        del model, optimizer, step, x, y
        gc.collect()
        if opts.device == 'cuda':
            torch.cuda.empty_cache()
    return results


def _options_json(opts: Options) -> dict:
    return asdict(opts)


def measure_memory_in_subprocess(jobs: List[dict], opts: Options,
                                 timeout: float = 3600) -> List[int]:
    """:func:`measure_memory` in a fresh interpreter (the same mmsk)."""
    env = dict(os.environ)
    root = osp.dirname(osp.dirname(osp.abspath(__file__)))
    env['PYTHONPATH'] = os.pathsep.join(
        [root] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
    env['MALLOC_MMAP_THRESHOLD_'] = '65536'
    payload = json.dumps(dict(jobs=jobs, options=_options_json(opts)))
    proc = subprocess.run([sys.executable, '-m', 'mmsk.benchmark'],
                          input=payload, capture_output=True, text=True,
                          env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f'the memory measurement failed '
                           f'({proc.returncode}):\n{proc.stderr[-3000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _memory_worker():
    payload = json.loads(sys.stdin.read())
    opts = Options(**payload['options'])
    print(json.dumps(measure_memory(payload['jobs'], opts)))


# --- the run -----------------------------------------------------------------


def machine_info(opts: Options) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    info = dict(
        cpu=cpu,
        cpu_count=os.cpu_count(),
        threads=torch.get_num_threads(),
        platform=platform.platform(),
        python=platform.python_version(),
        device=opts.device)
    if opts.device == 'cuda':
        info['gpu'] = torch.cuda.get_device_name()
    return info


def versions() -> dict:
    import importlib
    out = {}
    for name in ('torch', 'torchvision', 'timm', 'mmengine', 'mmcv',
                 'mmpretrain', 'mmsk'):
        try:
            out[name] = importlib.import_module(name).__version__
        except Exception:  # noqa: BLE001 (a missing package is reported)
            out[name] = None
    root = osp.dirname(osp.dirname(osp.abspath(__file__)))
    try:
        commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=root,
                                capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '-uno'],
                               cwd=root, capture_output=True, text=True,
                               check=True).stdout.strip()
        out['git_commit'] = commit + (' (with uncommitted changes)'
                                      if dirty else '')
    except (OSError, subprocess.CalledProcessError):
        out['git_commit'] = None
    return out


def _median_rate(times: List[float], opts: Options) -> float:
    return opts.batch * opts.iters / statistics.median(times)


def _new_record(opts: Options, command: str) -> dict:
    names = list(opts.comparisons)
    return dict(
        command=command,
        machine=machine_info(opts),
        versions=versions(),
        options={k: v for k, v in _options_json(opts).items()
                 if k not in ('models', 'table')},
        comparisons={n: opts.all_comparisons()[n] for n in names},
        parity=[],
        results=[],
        done=[],  # [size, comparison] pairs measured so far
        complete=False,
        date=time.strftime('%Y-%m-%d %H:%M:%S'))


#: what a record must hold to be continued
_RECORD_KEYS = ('command', 'machine', 'versions', 'options', 'comparisons',
                'parity', 'results', 'done')


def check_resumable(previous: dict, opts: Options,
                    fresh: Optional[dict] = None) -> None:
    """Raise ``ValueError`` unless ``previous`` (a record, maybe partial)
    was run with the options of ``opts``, on this machine, with these
    versions (those of ``fresh``, a new record of ``opts``, when given):
    one table must not mix two setups."""
    missing = list(_RECORD_KEYS) if not isinstance(previous, dict) else [
        k for k in _RECORD_KEYS if k not in previous]
    if missing:
        raise ValueError(f'resume: not a benchmark record (it lacks '
                         f'{missing})')
    fresh = fresh or _new_record(opts, '')
    differ = []
    for part in ('options', 'machine', 'versions'):
        then, now = previous[part], json.loads(json.dumps(fresh[part]))
        for key in sorted(set(then) | set(now)):
            if then.get(key) != now.get(key):
                differ.append(f'{part} {key}: {then.get(key)!r} in the '
                              f'record, {now.get(key)!r} now')
    if differ:
        raise ValueError('resume: the record was measured with other '
                         'settings; rerun with the same options on the same '
                         'machine and code, or start a new record:\n  ' +
                         '\n  '.join(differ))


def run_benchmark(opts: Options, command: str = '',
                  progress: Optional[Callable[[str], None]] = None,
                  previous: Optional[dict] = None,
                  on_update: Optional[Callable[[dict], None]] = None
                  ) -> dict:
    """Run every comparison at every size; the full record (JSON-able).

    After each comparison, ``on_update`` gets the record so far
    (``complete`` False until the last one), so that a crash or an
    interrupt loses at most the comparison under way. ``previous``, a record
    of the same options, machine and versions (:func:`check_resumable`),
    is continued: the comparisons it holds are not run again.
    """
    opts.validate()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    say = progress or (lambda msg: None)
    record = _new_record(opts, command)
    if previous is not None:
        check_resumable(previous, opts, record)
        for key in ('command', 'parity', 'results', 'done'):
            record[key] = copy.deepcopy(previous[key])
        record['resumed_with'] = list(previous.get('resumed_with', [])) + [
            command]
    names = list(opts.comparisons)
    total = len(names) * len(opts.sizes)
    if opts.batch == 1 and 'train' in opts.modes:
        # every model that is still to train, before any timing
        models, table = opts.all_models(), opts.all_comparisons()
        size = min(opts.sizes)  # the smallest maps: the last one may be 1x1
        for name in names:
            if all([s, name] in record['done'] for s in opts.sizes):
                continue
            for key in (table[name][0], ) + tuple(table[name][1]):
                check_one_image_trains(key, models[key], size, opts)
    done = 0
    for size in opts.sizes:
        for name in names:
            done += 1
            if [size, name] in record['done']:
                say(f'[{done}/{total}] {name} at {size}x{size}: in the '
                    'record already')
                continue
            say(f'[{done}/{total}] {name} at {size}x{size}, batch '
                f'{opts.batch}: building')
            variants, checks = build_variants(name, opts, say)
            if size == opts.sizes[0]:
                record['parity'] += checks
            time_variants(variants, size, opts, say)
            rows = _rows(variants, size, opts)
            del variants
            gc.collect()
            if opts.device == 'cuda':  # the memory process needs the room
                torch.cuda.empty_cache()
            if opts.compile:
                torch._dynamo.reset()  # this comparison's compiled code
            if opts.memory:
                say(f'[{done}/{total}] {name} at {size}x{size}: peak memory '
                    f'of {len(rows)} runs in a fresh process')
                _add_memory(rows, size, opts)
            record['results'] += rows
            record['done'].append([size, name])
            record['date'] = time.strftime('%Y-%m-%d %H:%M:%S')
            if on_update is not None and len(record['done']) < total:
                record['markdown'] = markdown(record)
                on_update(record)
    record['complete'] = True
    record['date'] = time.strftime('%Y-%m-%d %H:%M:%S')
    record['markdown'] = markdown(record)
    return record


def _rows(variants: List[Variant], size: int, opts: Options) -> List[dict]:
    """One row per (model, flavour, mode): the reported (fastest) layout and
    every layout's median rate."""
    rows = {}
    for v in variants:
        for mode, times in v.times.items():
            row = rows.setdefault(
                (v.key, v.flavour, mode),
                dict(comparison=v.comparison, model=v.key, role=v.role,
                     flavour=v.flavour, mode=mode, size=size,
                     img_per_s_by_layout={}, times_s_by_layout={}))
            row['img_per_s_by_layout'][v.layout] = _median_rate(times, opts)
            row['times_s_by_layout'][v.layout] = times
    for row in rows.values():
        rates = row['img_per_s_by_layout']
        row['layout'] = max(rates, key=rates.get)
        row['img_per_s'] = rates[row['layout']]
    return list(rows.values())


def _add_memory(rows: List[dict], size: int, opts: Options) -> None:
    """Peak memory of the eager rows (compiling every model again in the
    fresh process would double the run; compiled rows get none)."""
    models = opts.all_models()
    rows = [row for row in rows if row['flavour'] != 'compiled']
    jobs = [
        dict(spec=models[row['model']], layout=row['layout'],
             mode=row['mode'], with_cp=row['flavour'] == 'with_cp',
             deploy=row['flavour'] == 'deploy', size=size) for row in rows
    ]
    for row, peak in zip(rows, measure_memory_in_subprocess(jobs, opts)):
        row['peak_mem_mb'] = peak / 2**20


# --- report ------------------------------------------------------------------


def _fmt(value, digits=1):
    return '-' if value is None else f'{value:.{digits}f}'


def _label(row: dict) -> str:
    """``model`` or ``model flavour`` (deploy, compiled, with_cp)."""
    return row['model'] + (f" {row['flavour']}" if row['flavour'] else '')


def _pairs(record: dict, rows: List[dict]):
    """``(comparison, mmsk row, peer row)`` in table order, for rows of one
    size and mode: compiled mmsk rows against compiled peers, the rest
    against eager ones."""
    for name in record['comparisons']:
        mine = [r for r in rows if r['comparison'] == name and
                r['role'] == 'mmsk']
        peers = [r for r in rows if r['comparison'] == name and
                 r['role'] == 'peer']
        for m in mine:
            wanted = 'compiled' if m['flavour'] == 'compiled' else ''
            for p in peers:
                if p['flavour'] == wanted:
                    yield name, m, p


def markdown(record: dict) -> str:
    """The record as markdown: per size and mode, each peer next to the
    mmsk model, with the ratios mmsk / peer."""
    opts = record['options']
    machine = record['machine']
    lines = [
        '# mmsk benchmark', '',
        f"- command: `{record['command']}`",
        f"- machine: {machine['cpu']}, {machine['cpu_count']} CPUs, "
        f"{machine['threads']} torch threads" +
        (f", GPU {machine['gpu']}" if machine.get('gpu') else '') +
        f", device {machine['device']}",
        '- versions: ' + ', '.join(f'{k} {v}'
                                   for k, v in record['versions'].items()),
        f"- batch {opts['batch']}, amp {opts['amp']}, compile "
        f"{opts['compile']}, layout mmsk {opts['layout']} / peers "
        f"{opts['peer_layout'] or opts['layout']}, warm-up {opts['warmup']},"
        f" median of {opts['repeats']} x {opts['iters']} step(s)",
        f"- date: {record['date']}", ''
    ]
    if not record.get('complete', True):
        total = len(opts['sizes']) * len(record['comparisons'])
        lines[-1:-1] = [
            f"- **partial**: {len(record['done'])} of {total} comparisons "
            f"measured; the run stopped or is still going (`--resume` this "
            f"record's .json continues it)"
        ]
    results = record['results']
    sizes = sorted({r['size'] for r in results})
    for size in sizes:
        for mode in MODES:
            rows = [r for r in results if r['size'] == size and
                    r['mode'] == mode]
            if not rows:
                continue
            lines += [
                f'## {mode}, {size}x{size}', '',
                '| comparison | mmsk model (layout) | img/s | peer (layout) |'
                ' img/s | speed mmsk/peer | peak MB mmsk | peak MB peer |'
                ' memory mmsk/peer | same weights (max diff) |',
                '|---|---|---|---|---|---|---|---|---|---|'
            ]
            for name, m, p in _pairs(record, rows):
                check = [c for c in record['parity']
                         if c['comparison'] == name and
                         c['peer'] == p['model']]
                diff = check[0]['max_abs_diff'] if check else None
                mm, pm = m.get('peak_mem_mb'), p.get('peak_mem_mb')
                same = 'no converter' if diff is None else \
                    f'yes ({diff:.1e})'
                lines.append(
                    f"| {name} | {_label(m)} ({m['layout']}) | "
                    f"{_fmt(m['img_per_s'])} | {_label(p)} ({p['layout']}) "
                    f"| {_fmt(p['img_per_s'])} | "
                    f"{m['img_per_s'] / p['img_per_s']:.2f} | "
                    f"{_fmt(mm, 0)} | {_fmt(pm, 0)} | "
                    f"{_fmt(mm / pm if mm and pm else None, 2)} | "
                    f"{same} |")
            lines.append('')
        lines += _compile_table(results, size)
        cp = [r for r in results if r['size'] == size and
              r['flavour'] == 'with_cp']
        if cp:
            lines += [
                f'## with_cp, training, {size}x{size}', '',
                '| model | peak MB with_cp=False | peak MB with_cp=True | '
                'ratio | img/s False | img/s True |',
                '|---|---|---|---|---|---|'
            ]
            for r in cp:
                base = [b for b in results if b['size'] == size and
                        b['model'] == r['model'] and b['flavour'] == '' and
                        b['mode'] == 'train'][0]
                mb, mc = base.get('peak_mem_mb'), r.get('peak_mem_mb')
                lines.append(
                    f"| {r['model']} | {_fmt(mb, 0)} | {_fmt(mc, 0)} | "
                    f"{_fmt(mc / mb if mb and mc else None, 2)} | "
                    f"{_fmt(base['img_per_s'])} | {_fmt(r['img_per_s'])} |")
            lines.append('')
    lines += _targets_table(record)
    return '\n'.join(lines)


# --- targets -----------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A goal for one comparison in one mode, checked against a run.

    ``kind``: ``speed`` (mmsk's img/s over the peer's, at least ``bound``),
    ``memory`` (mmsk's peak training memory over the peer's, at most
    ``bound``) or ``with_cp`` (mmsk's peak training memory with
    ``with_cp=True`` over without, at most ``bound``). ``peer`` is a model
    key; ``None`` means the faster of the comparison's peers in that run.
    """
    comparison: str
    mode: str
    kind: str
    bound: float
    peer: Optional[str] = None

    @property
    def goal(self) -> str:
        what = dict(infer='inference', train='training')[self.mode]
        if self.kind == 'speed':
            return f'{what} speed >= {self.bound:.2f}x'
        if self.kind == 'memory':
            return f'peak {what} memory <= {self.bound:.2f}x'
        return (f'peak {what} memory with_cp / without <= '
                f'{self.bound:.2f}x')


def _family_targets(comparison, infer, train, peer=None):
    return (Target(comparison, 'infer', 'speed', infer, peer),
            Target(comparison, 'train', 'speed', train, peer))


#: mmsk's performance goals: each is a ratio within one run of the tool,
#: every model in the layout the run reports (with ``layout='best'``, its
#: faster one).
TARGETS: Tuple[Target, ...] = (
    *_family_targets('sknet50', 1.3, 1.3, 'timm/skresnext50_32x4d'),
    Target('sknet50', 'train', 'memory', 0.85, 'timm/skresnext50_32x4d'),
    *_family_targets('sknet50', 0.9, 0.85, 'timm/resnext50_32x4d'),
    *_family_targets('sknet18', 1.2, 1.2, 'timm/skresnet18'),
    *_family_targets('sknet34', 1.2, 1.2, 'timm/skresnet34'),
    *_family_targets('senet50', 1.1, 1.05),
    *_family_targets('seresnext50', 1.1, 1.05),
    *_family_targets('res2net50', 1.1, 1.05),
    *_family_targets('mobilenetv2', 1.1, 1.05),
    *(Target(name, 'train', 'with_cp', 0.7) for name in COMPARISONS),
)


def repeat_ratios(mine: dict, peer: dict) -> Optional[List[float]]:
    """The speed ratio mmsk / peer within each timed repeat (the models run
    in turn, so repeat ``i`` of both saw the same state of the machine);
    None when the rows do not hold paired timings."""
    t_mine = mine.get('times_s_by_layout', {}).get(mine['layout'])
    t_peer = peer.get('times_s_by_layout', {}).get(peer['layout'])
    if not t_mine or not t_peer or len(t_mine) != len(t_peer):
        return None
    return [p / m for m, p in zip(t_mine, t_peer)]


def _target_peer(target: Target, rows: List[dict]) -> Optional[dict]:
    peers = [r for r in rows if r['role'] == 'peer' and r['flavour'] == '']
    if target.peer is not None:
        peers = [r for r in peers if r['model'] == target.peer]
    return max(peers, key=lambda r: r['img_per_s']) if peers else None


def check_targets(record: dict,
                  targets: Sequence[Target] = TARGETS) -> List[dict]:
    """Each target that the record has the rows for, per size, against the
    run's figures: ``ratio`` (of the medians, as in the tables; of the peak
    memories), ``met``, and for speed the per-repeat ratios
    (:func:`repeat_ratios`). Inference speed goals are also checked for the
    deploy form where the run timed it."""
    results = record['results']
    checks = []
    for size in sorted({r['size'] for r in results}):
        for t in targets:
            rows = [r for r in results if r['size'] == size and
                    r['comparison'] == t.comparison and r['mode'] == t.mode]
            mine = {r['flavour']: r for r in rows if r['role'] == 'mmsk'}
            if t.kind == 'with_cp':
                pairs = [(mine.get('with_cp'), mine.get(''))]
            else:
                flavours = ['', 'deploy'] if t.kind == 'speed' and \
                    t.mode == 'infer' else ['']
                peer = _target_peer(t, rows)
                pairs = [(mine.get(f), peer) for f in flavours]
            for m, p in pairs:
                if m is None or p is None:
                    continue
                check = dict(target=t, size=size, mine=m, peer=p,
                             repeats=None)
                if t.kind == 'speed':
                    check['ratio'] = m['img_per_s'] / p['img_per_s']
                    check['repeats'] = repeat_ratios(m, p)
                    check['met'] = check['ratio'] >= t.bound
                else:
                    mm, pm = m.get('peak_mem_mb'), p.get('peak_mem_mb')
                    if not mm or not pm:
                        continue
                    check['ratio'] = mm / pm
                    check['met'] = check['ratio'] <= t.bound
                checks.append(check)
    return checks


def _near(value: float, bound: float) -> str:
    """``value`` to 2 decimals, or to 3 where 2 would round it onto the
    goal ``bound`` (say on which side of the goal it is)."""
    text = f'{value:.2f}'
    return f'{value:.3f}' if text == f'{bound:.2f}' else text


def _targets_table(record: dict,
                   targets: Sequence[Target] = TARGETS) -> List[str]:
    checks = check_targets(record, targets)
    if not checks:
        return []
    lines = [
        '## Targets', '',
        "mmsk's goals against this run: the ratio of the medians (the "
        'tables above) and, for speed, the ratio within each timed repeat '
        '(the models run in turn), lowest to highest, with the number of '
        'repeats that meet the goal.' + (
            ' The with_cp goal is set at batch 32, 224x224.'
            if any(c['target'].kind == 'with_cp' for c in checks) else ''),
        '',
        '| size | goal | mmsk (layout) | against (layout) | ratio | per '
        'repeat | met |', '|---|---|---|---|---|---|---|'
    ]
    for c in checks:
        t, m, p = c['target'], c['mine'], c['peer']
        against = f"{_label(p)} ({p['layout']})"
        if t.kind == 'speed' and t.peer is None:
            against = 'the faster peer: ' + against
        spread = '-'
        if c['repeats']:
            low, high = (_near(r, t.bound) for r in (min(c['repeats']),
                                                      max(c['repeats'])))
            hits = sum(r >= t.bound for r in c['repeats'])
            spread = (low if low == high else f'{low}-{high}') + \
                f", {hits} of {len(c['repeats'])}"
        ratio = _near(c['ratio'], t.bound)
        lines.append(
            f"| {c['size']} | {t.goal} | {_label(m)} ({m['layout']}) | "
            f"{against} | {ratio} | {spread} | "
            f"{'yes' if c['met'] else 'no'} |")
    return lines + ['']


def _compile_table(results: List[dict], size: int) -> List[str]:
    """What ``torch.compile`` gives each model: compiled / eager."""
    compiled = [r for r in results if r['size'] == size and
                r['flavour'] == 'compiled']
    if not compiled:
        return []
    lines = [
        f'## torch.compile against eager, {size}x{size}', '',
        '| model | mode | eager img/s (layout) | compiled img/s (layout) '
        '| compiled/eager |', '|---|---|---|---|---|'
    ]
    for c in compiled:
        eager = [r for r in results if r['size'] == size and
                 r['model'] == c['model'] and r['mode'] == c['mode'] and
                 r['flavour'] == '']
        if not eager:
            continue
        e = eager[0]
        lines.append(
            f"| {c['model']} | {c['mode']} | {_fmt(e['img_per_s'])} "
            f"({e['layout']}) | {_fmt(c['img_per_s'])} ({c['layout']}) | "
            f"{c['img_per_s'] / e['img_per_s']:.2f} |")
    return lines + ['']


def speed_ratios(record: dict) -> List[dict]:
    """One panel per size and mode: ``title``, ``bars``, each bar
    ``(label, mmsk / peer speed)``, the pairs and ratios of the tables, and
    ``spreads``, per bar the lowest and highest per-repeat ratio
    (:func:`repeat_ratios`) or None, and ``goals``, per bar the bound of its
    speed target (:data:`TARGETS`) or None."""
    panels = []
    results = record['results']
    goals = {(id(c['mine']), id(c['peer'])): c['target'].bound
             for c in check_targets(record) if c['target'].kind == 'speed'}
    for size in sorted({r['size'] for r in results}):
        for mode in MODES:
            rows = [r for r in results if r['size'] == size and
                    r['mode'] == mode]
            pairs = list(_pairs(record, rows))
            if not pairs:
                continue
            spreads = []
            for _, m, p in pairs:
                ratios = repeat_ratios(m, p)
                spreads.append((min(ratios), max(ratios)) if ratios else
                               None)
            panels.append(dict(
                title=f'{mode}, {size}x{size}',
                bars=[(f'{_label(m)} / {_label(p)}',
                       m['img_per_s'] / p['img_per_s'])
                      for _, m, p in pairs],
                spreads=spreads,
                goals=[goals.get((id(m), id(p))) for _, m, p in pairs]))
    return panels


def plot_title(record: dict) -> str:
    """The line above :func:`plot_record`'s panels: the machine and the
    options that change every figure (precision, compilation)."""
    machine, opts = record['machine'], record['options']
    parts = [machine['cpu'], f"{machine['threads']} threads",
             f"batch {opts['batch']}"]
    if opts.get('amp', 'none') != 'none':
        parts.append(f"{opts['amp']} autocast")
    if opts.get('compile'):
        parts.append('eager and torch.compile')
    parts.append(f"device {machine['device']}")
    return ', '.join(parts)


def plot_record(record: dict, path: str) -> List[dict]:
    """Bar charts of the speed ratios (mmsk / peer, 1 = as fast; whiskers:
    the lowest and highest ratio within one repeat; red ticks: the goals of
    :data:`TARGETS`), one panel
    per size and mode, as a PNG at ``path``; returns the panels."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    panels = speed_ratios(record)
    if not panels:
        raise ValueError('plot: the record has no timed pairs')
    heights = [0.8 + 0.3 * len(p['bars']) for p in panels]
    top = 1.15 * max([1.0] + [r for p in panels for _, r in p['bars']] +
                     [s[1] for p in panels for s in p['spreads'] if s] +
                     [g for p in panels for g in p['goals'] if g])
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(9, sum(heights) + 0.6),
        gridspec_kw=dict(height_ratios=heights), squeeze=False,
        layout='constrained')
    for ax, panel in zip(axes[:, 0], panels):
        # bottom to top, so that the first pair is the top bar
        bars = list(zip(panel['bars'], panel['spreads'],
                        panel['goals']))[::-1]
        ratios = [ratio for (_, ratio), _, _ in bars]
        ax.barh([label for (label, _), _, _ in bars], ratios, color=[
            'tab:green' if r >= 1 else 'tab:gray' for r in ratios])
        ax.axvline(1.0, color='black', linewidth=0.8)
        for y, ((_, r), spread, _) in enumerate(bars):
            if spread:  # the lowest and highest ratio within one repeat
                # (a single repeat can differ from r in the last bit)
                ax.errorbar(r, y, xerr=[[max(r - spread[0], 0)],
                                        [max(spread[1] - r, 0)]],
                            fmt='none', ecolor='black', elinewidth=0.8,
                            capsize=2)
            ax.text(max(r, spread[1]) if spread else r, y, f' {r:.2f}',
                    va='center', fontsize=8)
        goals = [(y, g) for y, (_, _, g) in enumerate(bars) if g]
        if goals:  # one artist: one legend entry
            ax.vlines([g for _, g in goals], [y - 0.42 for y, _ in goals],
                      [y + 0.42 for y, _ in goals], color='tab:red',
                      linewidth=1.5, label='goal')
            ax.legend(loc='lower right', fontsize=8)
        ax.set_xlim(0, top)  # one scale for all panels
        ax.set_title(f"speed mmsk / peer, {panel['title']}", fontsize=10)
        ax.tick_params(axis='y', labelsize=8)
    fig.suptitle(plot_title(record), fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return panels


def default_stem(opts: Options) -> str:
    """``benchmark_<device>_b<batch>_<sizes>px_<date-time>``."""
    sizes = '-'.join(str(s) for s in opts.sizes)
    return (f'benchmark_{opts.device}_b{opts.batch}_{sizes}px_'
            f"{time.strftime('%Y%m%d-%H%M%S')}")


#: what :func:`markdown` and :func:`plot_record` read from a record
REPORT_KEYS = ('command', 'machine', 'versions', 'options', 'comparisons',
               'parity', 'results', 'date')


def read_record(path: str, use: str = 'report') -> dict:
    """A record written by :func:`write_record` (its ``.json``);
    ``ValueError`` naming the problem, prefixed with ``use``."""
    try:
        with open(path) as f:
            record = json.load(f)
    except OSError as e:
        raise ValueError(f'{use}: cannot read {path}: {e.strerror}') from e
    except ValueError as e:
        raise ValueError(f'{use}: {path} is not JSON ({e}); give the .json '
                         'that a benchmark run wrote') from e
    if not isinstance(record, dict):
        raise ValueError(f'{use}: {path} is not a benchmark record (a JSON '
                         f'{type(record).__name__}, not an object)')
    return record


def load_record(path: str) -> dict:
    """A record written by :func:`write_record` (its ``.json``), for
    ``run_benchmark(previous=...)``; ``ValueError`` naming the problem."""
    record = read_record(path, 'resume')
    if 'done' not in record:
        raise ValueError(f'resume: {path} is not a benchmark record that '
                         'can be continued (no "done" list)')
    return record


def report_record(path: str, out_dir: Optional[str] = None,
                  stem: Optional[str] = None, plot: bool = False):
    """Write the report of a stored record again, with this version's
    tables (e.g. the Targets table): ``STEM.md`` (and with ``plot`` the
    ``.png``) beside its ``.json`` (or in ``out_dir`` / as ``stem``), and the
    ``.json`` with the new markdown; the timings are not touched. Returns
    the paths of the .md and the .json."""
    record = read_record(path)
    missing = [k for k in REPORT_KEYS if k not in record]
    if missing:
        raise ValueError(f'report: {path} is not a benchmark record '
                         f'(missing: {", ".join(missing)})')
    try:
        record['markdown'] = markdown(record)
    except (TypeError, KeyError, IndexError, AttributeError) as e:
        # the keys are there, but not what a benchmark run writes in them
        raise ValueError(
            f'report: {path} is not a benchmark record that this version '
            f'can read ({type(e).__name__}: {e})') from e
    if plot and not speed_ratios(record):  # before anything is rewritten
        raise ValueError(f'plot: {path} has no timed pairs to draw')
    return write_record(
        record, osp.dirname(path) or '.' if out_dir is None else out_dir,
        stem or osp.splitext(osp.basename(path))[0], plot)


def record_paths(out_dir: str, stem: str,
                 plot: bool = False) -> List[str]:
    """The paths of ``STEM.md`` and ``STEM.json`` in ``out_dir`` (and with
    ``plot`` of ``STEM.png``), checked before anything is timed or written:
    ``stem`` must be a file name without folders and ``out_dir`` a folder,
    created when missing. ``ValueError`` naming the problem."""
    seps = [os.sep] + ([os.altsep] if os.altsep else [])
    if not stem or stem in ('.', '..') or any(s in stem for s in seps):
        raise ValueError(
            f'name {stem!r} must be a file name without folders (the '
            'stem of the .md/.json); give the folder with --out-dir')
    if not out_dir:
        raise ValueError('out-dir must not be empty')
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise ValueError(f'out-dir {out_dir!r} is a file, not a folder')
    paths = [osp.join(out_dir, stem + ext)
             for ext in ('.md', '.json') + (('.png', ) if plot else ())]
    for path in paths:  # refuses a folder in the way, creates out_dir
        check_output_path(path)
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise ValueError(f'cannot write in out-dir {out_dir!r}: permission '
                         'denied')
    return paths


def write_record(record: dict, out_dir: str, stem: Optional[str] = None,
                 plot: bool = False):
    """Write ``STEM.md`` and ``STEM.json`` into ``out_dir`` (and with
    ``plot`` the speed ratios as ``STEM.png``), each whole or not at all
    (:func:`~mmsk.utils.io.atomic_output`: a crash while writing keeps the
    last); the paths of the .md and the .json. ``ValueError`` when they
    cannot be written (:func:`record_paths`)."""
    if stem is None:
        stem = default_stem(Options(**{
            k: record['options'][k] for k in ('device', 'batch', 'sizes')}))
    paths = record_paths(out_dir, stem, plot)
    md, js = paths[:2]
    atomic_write_text(json.dumps(record, indent=1), js)
    atomic_write_text(record['markdown'] + '\n', md)
    if plot:
        with atomic_output(paths[2]) as tmp:
            plot_record(record, tmp)
    return md, js


# --- where the time goes ---------------------------------------------------


def _conv_kind(weight_shape, groups: int, stride, dilation,
               out_size) -> str:
    cout, cin_per_group, kh, kw = weight_shape
    if groups == 1:
        kind = 'dense'
    elif cin_per_group == 1 and cout == groups:
        kind = 'depthwise'
    else:
        kind = f'grouped, {cin_per_group} ch/group'
    name = f'{kh}x{kw} {kind}'
    if any(s != 1 for s in stride):
        name += ', stride ' + 'x'.join(map(str, sorted(set(stride))))
    if any(d != 1 for d in dilation):
        name += ', dilation ' + 'x'.join(map(str, sorted(set(dilation))))
    if tuple(out_size) == (1, 1):
        name += ', on 1x1 maps'  # attention (SE, SK): per-call overhead
    return name


def conv_events(events) -> List[dict]:
    """One dict per convolution call among profiler ``events`` (recorded
    with ``record_shapes=True``): ``kind`` (kernel, dense / grouped /
    depthwise, stride, dilation), ``pass`` (``'forward'`` or
    ``'backward'``), ``ms`` (CPU time, children included) and ``flops``
    (multiply-adds x 2; a backward counts the gradients it computes)."""
    calls = []
    for e in events:
        if e.name not in ('aten::convolution', 'aten::convolution_backward'):
            continue
        args = list(getattr(e, 'concrete_inputs', None) or [])
        shapes = e.input_shapes
        if e.name == 'aten::convolution':
            # input, weight, bias, stride, padding, dilation, transposed,
            # output_padding, groups
            if len(args) < 9 or args[6]:
                continue
            x, w = shapes[0], shapes[1]
            stride, padding, dilation, groups = (args[3], args[4], args[5],
                                                 args[8])
            out = [(x[2 + i] + 2 * padding[i] - dilation[i] *
                    (w[2 + i] - 1) - 1) // stride[i] + 1 for i in range(2)]
            grads, direction = 1, 'forward'
        else:
            # grad_output, input, weight, bias_sizes, stride, padding,
            # dilation, transposed, output_padding, groups, output_mask
            if len(args) < 11 or args[7]:
                continue
            x, w = shapes[1], shapes[2]
            out = shapes[0][2:]
            stride, dilation, groups = args[4], args[6], args[9]
            grads, direction = sum(bool(m) for m in args[10][:2]), \
                'backward'
        if len(x) != 4 or len(w) != 4:
            continue
        macs = x[0] * w[0] * out[0] * out[1] * w[1] * w[2] * w[3]
        calls.append(dict(kind=_conv_kind(w, groups, stride, dilation, out),
                          direction=direction, ms=e.cpu_time_total / 1e3,
                          flops=2 * macs * grads))
    return calls


def _median_step(calls: List[dict], steps: int) -> Optional[List[dict]]:
    """The convolutions of one step, each with the median of its times over
    ``steps`` steps, when every step ran the same convolutions in the same
    order (else None)."""
    if steps < 2 or len(calls) % steps:
        return None
    n = len(calls) // steps
    per_step = [calls[i * n:(i + 1) * n] for i in range(steps)]
    for i, first in enumerate(per_step[0]):
        if any((step[i]['kind'], step[i]['direction'], step[i]['flops']) !=
               (first['kind'], first['direction'], first['flops'])
               for step in per_step):
            return None
    return [
        dict(first, ms=statistics.median(step[i]['ms'] for step in per_step))
        for i, first in enumerate(per_step[0])
    ]


def conv_table(calls: List[dict], steps: int = 1) -> str:
    """Markdown table of :func:`conv_events` by kind of convolution: forward
    calls, time and GFLOP per step, the throughput each kind reaches, and
    its share of the convolutions' time against its share of their FLOPs (a
    kind that takes more of the time than of the FLOPs runs slower than the
    others on this machine).

    When the steps ran the same convolutions in the same order, each call's
    time is its median over the steps, so that a step slowed down by the
    machine (on a shared VM the same call can take 3x longer in one step)
    does not move the figures; otherwise the mean per step."""
    if not calls:
        return 'no convolutions recorded'
    typical = _median_step(calls, steps)
    if typical is None:
        note = f'per step, mean of {steps} steps'
    else:
        note = f"per step, each call's median over {steps} steps"
        calls, steps = typical, 1
    kinds: Dict[str, dict] = {}
    for c in calls:
        k = kinds.setdefault(c['kind'], dict(calls=0, fwd=0., bwd=0.,
                                             flops=0))
        forward = c['direction'] == 'forward'
        k['calls'] += forward
        k['fwd' if forward else 'bwd'] += c['ms']
        k['flops'] += c['flops']
    total_ms = sum(k['fwd'] + k['bwd'] for k in kinds.values())
    total_flops = sum(k['flops'] for k in kinds.values())
    lines = ['| convolution | calls | forward ms | backward ms | GFLOP | '
             'GFLOP/s | share of conv time | share of conv FLOPs |',
             '|---|---|---|---|---|---|---|---|']
    order = sorted(kinds.items(), key=lambda kv: -(kv[1]['fwd']
                                                    + kv[1]['bwd']))
    for name, k in order + [('all', dict(
            calls=sum(k['calls'] for k in kinds.values()),
            fwd=sum(k['fwd'] for k in kinds.values()),
            bwd=sum(k['bwd'] for k in kinds.values()), flops=total_flops))]:
        ms = k['fwd'] + k['bwd']
        lines.append(
            f"| {name} | {k['calls'] / steps:g} | {k['fwd'] / steps:.1f} | "
            f"{k['bwd'] / steps:.1f} | {k['flops'] / steps / 1e9:.2f} | "
            f"{k['flops'] / max(ms, 1e-9) / 1e6:.0f} | "
            f"{ms / max(total_ms, 1e-9):.0%} | "
            f"{k['flops'] / max(total_flops, 1):.0%} |")
    return '\n'.join(lines) + f'\n\n({note})'


def profile_model(spec: dict, size: int, opts: Options, mode: str = 'train',
                  layout: str = 'channels_last', reference: bool = False,
                  steps: int = 3, row_limit: int = 12,
                  by_shape: bool = False, by_conv: bool = False) -> str:
    """The operators that take the time in ``steps`` steps of one mmsk or
    peer model (``torch.profiler``, sorted by self CPU time), as a text
    table. ``reference=True`` runs mmsk's plain reference forwards (the
    paper's stack / weighted sum), i.e. mmsk before its fast paths;
    ``by_shape=True`` gives one row per operator and input shapes (which
    conv, which BatchNorm); ``by_conv=True`` adds :func:`conv_table`, the
    convolutions by kind with the GFLOP/s each kind reaches. The steps
    follow ``opts.warmup`` untimed ones (at least one)."""
    from mmsk.models.layers import reference_forward
    check_choice('mode', mode, MODES)
    check_choice('layout', layout, LAYOUTS)
    if opts.device != 'cpu':
        raise ValueError(
            'profile times the CPU operators (torch.profiler, CPU '
            'activity): on a GPU they show kernel launches, not the '
            "kernels' time; profile on the CPU, or use torch.profiler "
            'with ProfilerActivity.CUDA directly')
    if opts.threads is not None:
        torch.set_num_threads(opts.threads)
    model = _prepare(build_model(spec), layout, opts, compiled=opts.compile)
    x, y = _inputs(opts, size, layout)
    step = make_step(model, mode, x, y, opts, _optimizer(model))
    context = reference_forward() if reference else contextlib.nullcontext()
    with context:
        for _ in range(max(1, opts.warmup)):
            step()
        with torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU],
                record_shapes=by_shape or by_conv) as prof:
            for _ in range(steps):
                step()
    table = prof.key_averages(group_by_input_shape=by_shape).table(
        sort_by='self_cpu_time_total', row_limit=row_limit,
        max_shapes_column_width=100)
    if by_conv:
        table += ('\n\nConvolutions by kind:\n\n'
                  + conv_table(conv_events(prof.events()), steps))
    return table


if __name__ == '__main__':
    _memory_worker()
