"""Option and input checks whose errors name the class, the option, what was
expected and what was given.

Options are validated as data: a module describes its options once, as a
table ``option -> checker``, and :func:`check_options` runs it::

    check_options(self, locals(), dict(
        norm_eval=check_bool,
        with_cp=check_bool,
        frozen_stages=int_in(-1, num_stages),
        norm_cfg=check_cfg,
        conv_cfg=optional(check_cfg)))

A checker is a function ``checker(name, value) -> value`` that returns the
value (normalised where that helps, e.g. a tuple for a sequence) or raises.
A value of the wrong type raises :class:`OptionTypeError`, which is both a
``TypeError`` and a ``ValueError``; a value of the right type outside its
range raises ``ValueError``; a cfg whose ``type`` is not registered raises
``KeyError``.
"""
import difflib
import math
from numbers import Integral, Real
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Tuple

import torch

Checker = Callable[[str, Any], Any]


class OptionTypeError(TypeError, ValueError):
    """An option of the wrong type (a ``TypeError`` that older callers may
    still catch as ``ValueError``)."""


def _given(value: Any) -> str:
    return f'{value!r} ({type(value).__name__})'


def is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


# ---------------------------------------------------------------- checkers
def check_bool(name: str, value: Any) -> bool:
    """A real bool: ``'no'``, ``0`` or ``None`` are refused, since a
    non-empty string is truthy and would mean the opposite."""
    if not isinstance(value, bool):
        raise OptionTypeError(f'{name} must be a bool (True or False), got '
                              f'{_given(value)}')
    return value


def check_int(name: str, value: Any) -> int:
    if not is_int(value):
        raise OptionTypeError(f'{name} must be an int, got {_given(value)}')
    return int(value)


def int_in(low: Optional[int] = None, high: Optional[int] = None) -> Checker:
    """Checker of an int in ``[low, high]`` (a bound of None is open)."""

    def check(name, value):
        value = check_int(name, value)
        if (low is not None and value < low) or \
                (high is not None and value > high):
            lo = '-inf' if low is None else low
            hi = 'inf' if high is None else high
            raise ValueError(f'{name} must be an int in [{lo}, {hi}], got '
                             f'{value!r}')
        return value

    return check


def check_positive_int(name: str, value: Any, allow_zero: bool = False) -> int:
    want = 'a non-negative' if allow_zero else 'a positive'
    if not is_int(value):
        raise OptionTypeError(f'{name} must be {want} int, got '
                              f'{_given(value)}')
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f'{name} must be {want} int, got {value!r}')
    return int(value)


def check_non_negative_int(name: str, value: Any) -> int:
    return check_positive_int(name, value, allow_zero=True)


def number_in(low: Optional[float] = None,
              high: Optional[float] = None,
              low_open: bool = False,
              high_open: bool = False) -> Checker:
    """Checker of a finite real number (int or float, not bool) in a
    range; NaN and infinities are refused."""
    lo_bracket, hi_bracket = '(' if low_open else '[', ')' if high_open \
        else ']'

    def check(name, value):
        if not _is_number(value):
            raise OptionTypeError(f'{name} must be a number, got '
                                  f'{_given(value)}')
        if not math.isfinite(value):
            raise ValueError(f'{name} must be a finite number, got '
                             f'{value!r}')
        too_low = low is not None and (value <= low if low_open else
                                       value < low)
        too_high = high is not None and (value >= high if high_open else
                                         value > high)
        if too_low or too_high:
            # an open end: finite numbers only, so no closed bracket there
            lo = f'{lo_bracket}{low}' if low is not None else '(-inf'
            hi = f'{high}{hi_bracket}' if high is not None else 'inf)'
            raise ValueError(f'{name} must be a number in {lo}, {hi}, got '
                             f'{value!r}')
        return value

    return check


#: A number > 0 (ratios, widths multipliers).
check_positive_number = number_in(0, None, low_open=True)


def check_unit_interval(name: str, value: Any) -> float:
    """A rate in ``[0, 1)`` (drop path)."""
    if not _is_number(value):
        raise OptionTypeError(f'{name} must be a float in [0, 1), got '
                              f'{_given(value)}')
    if not 0 <= value < 1:
        raise ValueError(f'{name} must be a float in [0, 1), got {value!r}')
    return float(value)


def check_choice(name: str, value: Any, choices: Iterable) -> Any:
    choices = list(choices)
    if not any(value == c and type(value) is type(c) for c in choices):
        raise ValueError(f'{name} must be one of {choices}, got '
                         f'{_given(value)}')
    return value


def one_of(*choices) -> Checker:
    """Checker of one value out of ``choices``."""
    return lambda name, value: check_choice(name, value, choices)


def check_sequence(name: str, value: Any, length: int) -> Tuple:
    """A list/tuple/range of ``length`` items (returned as a tuple)."""
    if not isinstance(value, (list, tuple, range)) or len(value) != length:
        raise ValueError(f'{name} must be a list/tuple of length {length}, '
                         f'got {_given(value)}')
    return tuple(value)


def seq_of(item: Checker, length: Optional[int] = None) -> Checker:
    """Checker of a list/tuple/range whose items pass ``item``; returns a
    tuple of the checked items."""

    def check(name, value):
        if length is None:
            if not isinstance(value, (list, tuple, range)):
                raise OptionTypeError(f'{name} must be a list/tuple, got '
                                      f'{_given(value)}')
        else:
            check_sequence(name, value, length)
        return tuple(item(f'{name}[{i}]', v) for i, v in enumerate(value))

    return check


def instance_of(*types: type) -> Checker:

    def check(name, value):
        if not isinstance(value, types):
            want = ' or '.join(t.__name__ for t in types)
            raise OptionTypeError(f'{name} must be a {want}, got '
                                  f'{_given(value)}')
        return value

    return check


#: A plain dict of keyword arguments (no ``type`` needed).
check_dict = instance_of(dict)


def optional(checker: Checker) -> Checker:
    """``None`` or a value that passes ``checker``."""
    return lambda name, value: None if value is None else checker(name, value)


# ---------------------------------------------------------- layer configs
_FOUND_TYPES = {}


def _registered_types():
    """The model names visible from the current scope and from mmsk."""
    from mmengine.registry import MODELS as ROOT

    from mmsk.registry import MODELS
    names = set(ROOT.module_dict) | set(MODELS.module_dict)
    with ROOT.switch_scope_and_registry(None) as registry:
        names |= set(registry.module_dict)
    return sorted(names)


def _registered(type_name: str):
    """The class registered as ``type_name`` in the current scope's or
    mmsk's ``MODELS``, or None."""
    from mmengine.registry import DefaultScope
    from mmengine.registry import MODELS as ROOT

    from mmsk.registry import MODELS
    scope = DefaultScope.get_current_instance()
    key = (scope.scope_name if scope else None, type_name)
    if key in _FOUND_TYPES:
        return _FOUND_TYPES[key]
    with ROOT.switch_scope_and_registry(None) as registry:
        found = registry.get(type_name)
    if found is None:
        found = MODELS.get(type_name)
    if found is not None:
        _FOUND_TYPES[key] = found
    return found


def registered_class(cfg: dict):
    """The class a layer config builds (its ``type`` resolved as
    :func:`check_cfg` does), or None."""
    layer_type = cfg['type']
    return layer_type if isinstance(layer_type, type) else \
        _registered(layer_type)


def _is_registered(type_name: str) -> bool:
    return _registered(type_name) is not None


def check_cfg(name: str, value: Any) -> dict:
    """A layer config: a dict with a ``type`` that is a class or a name
    registered in mmsk's or the current scope's ``MODELS`` (mmcv's norm,
    activation and conv layers are)."""
    if not isinstance(value, dict) or 'type' not in value:
        raise OptionTypeError(f'{name} must be a dict with a "type" key, got '
                              f'{_given(value)}')
    layer_type = value['type']
    if isinstance(layer_type, type):
        return value
    if not isinstance(layer_type, str):
        raise OptionTypeError(f'{name}["type"] must be a str or a class, '
                              f'got {_given(layer_type)}')
    if not _is_registered(layer_type):
        close = difflib.get_close_matches(
            layer_type, _registered_types(), n=5, cutoff=0.5)
        hint = f'; did you mean {close}?' if close else ''
        raise KeyError(f'{name} type {layer_type!r} is not registered{hint}')
    return value


def _layer_kind(cls: Any) -> Optional[str]:
    """'norm', 'conv' or 'activation' for the layers of torch and mmcv that
    are plainly one of them; None for the rest (custom layers pass)."""
    from torch import nn
    if not isinstance(cls, type):
        return None
    if issubclass(cls, (nn.modules.batchnorm._NormBase, nn.GroupNorm,
                        nn.LayerNorm, nn.LocalResponseNorm)):
        return 'norm'
    if issubclass(cls, nn.modules.conv._ConvNd):
        return 'conv'
    module = cls.__module__
    if module == 'torch.nn.modules.activation' or module.startswith(
            'mmcv.cnn.bricks.') and module.rsplit('.', 1)[-1] in (
                'activation', 'hsigmoid', 'hswish', 'swish'):
        return 'activation'
    return None


def _a(word: str) -> str:
    return ('an ' if word[0] in 'aeiou' else 'a ') + word


def _kind_checker(kind: str, example: str) -> Checker:
    """``check_cfg`` that also refuses a layer of another kind (a norm as
    ``act_cfg``, an activation as ``norm_cfg``), which would otherwise fail
    inside the layer with an argument the user never passed."""

    def check(name, value):
        check_cfg(name, value)
        layer_type = value['type']
        cls = registered_class(value)
        found = _layer_kind(cls)
        if found is not None and found != kind:
            shown = getattr(layer_type, '__name__', layer_type)
            raise ValueError(f'{name} type {shown!r} is {_a(found)} layer, '
                             f'not {_a(kind)} layer (e.g. {example})')
        if kind == 'norm' and isinstance(cls, type):
            from torch import nn
            if issubclass(cls, nn.GroupNorm) and 'num_groups' not in value:
                raise ValueError(
                    f'{name} {value!r}: GroupNorm needs num_groups, e.g. '
                    f'dict(type="GN", num_groups=32) (it must divide the '
                    f'channels of every normalised layer)')
            if cls is nn.LayerNorm:
                raise ValueError(
                    f'{name} {value!r}: torch\'s LayerNorm normalises the '
                    f'last dimension, the width of an (N, C, H, W) map, not '
                    f'its channels; use dict(type="mmpretrain.LN2d") '
                    f'(mmpretrain\'s channels-first LayerNorm2d, found from '
                    f'any scope) or GN')
        return value

    return check


#: ``norm_cfg``: a registered norm layer (GN with ``num_groups``).
check_norm_cfg = _kind_checker('norm', 'dict(type="BN")')
#: ``act_cfg`` / ``gate_cfg``: a registered activation.
check_act_cfg = _kind_checker('activation', 'dict(type="ReLU")')
#: ``conv_cfg``: a registered conv layer.
check_conv_cfg = _kind_checker('conv', 'dict(type="Conv2d")')


# -------------------------------------------------------------- out_indices
def check_out_indices(value: Any,
                      num_outputs: int,
                      what: str = 'stages',
                      name: str = 'out_indices') -> Tuple[int, ...]:
    """``out_indices`` as increasing, distinct, non-negative indices.

    An int or a non-empty sequence (list, tuple, range) of ints in
    ``[-num_outputs, num_outputs)``; negative ones count from the last
    output, as in a Python sequence. The outputs come back in the order of
    the stages, so duplicates and indices out of order (after counting the
    negative ones from the end) are refused rather than reordered. ``what``
    names the outputs in the error message.
    """
    if is_int(value):
        value = (value, )
    if not isinstance(value, (list, tuple, range)):
        raise OptionTypeError(f'{name} must be an int or a sequence of ints, '
                              f'got {_given(value)}')
    if not len(value):
        raise ValueError(f'{name} must not be empty, got {value!r}')
    indices = []
    for index in value:
        if not is_int(index):
            raise OptionTypeError(f'{name} entries must be ints, got '
                                  f'{_given(index)} in {value!r}')
        if not -num_outputs <= index < num_outputs:
            raise ValueError(f'{name} entry {index!r} is out of range '
                             f'for {num_outputs} {what} '
                             f'([{-num_outputs}, {num_outputs - 1}])')
        indices.append(int(index) % num_outputs)
    if len(set(indices)) != len(indices):
        raise ValueError(f'{name} {tuple(value)!r} repeats an output '
                         f'(as indices {tuple(indices)}); list each once')
    if indices != sorted(indices):
        raise ValueError(f'{name} {tuple(value)!r} is not in increasing '
                         f'order (as indices {tuple(indices)}); the outputs '
                         f'come back in stage order, so list them as '
                         f'{tuple(sorted(indices))}')
    return tuple(indices)


def out_indices_in(num_outputs: int, what: str = 'stages') -> Checker:
    return lambda name, value: check_out_indices(value, num_outputs, what,
                                                 name)


# ---------------------------------------------------------------- init_cfg
def check_pretrained_cfg(cfg: dict, name: str = 'init_cfg') -> None:
    """Refuse a ``Pretrained`` init_cfg without a usable ``checkpoint`` or
    with a ``prefix`` that is not a string (MMEngine fails later, with a
    bare ``KeyError`` or a ``TypeError`` from ``re``)."""
    if 'checkpoint' not in cfg:
        raise ValueError(f'{name} {cfg!r}: a Pretrained init_cfg needs '
                         f'checkpoint=... (a path or URL of the weights)')
    if not isinstance(cfg['checkpoint'], str):
        raise OptionTypeError(
            f'{name} checkpoint must be a path or URL as a str, got '
            f'{_given(cfg["checkpoint"])}')
    prefix = cfg.get('prefix')
    if prefix is not None and not isinstance(prefix, str):
        raise OptionTypeError(f'{name} prefix must be a str such as '
                              f'"backbone.", got {_given(prefix)}')


def check_init_cfg(name: str, value: Any):
    """MMEngine's ``init_cfg``: a dict with a ``type`` (``'Pretrained'``,
    ``'Kaiming'``, ...) or a list of them; a ``Pretrained`` one names its
    checkpoint. (MMEngine itself fails only in ``init_weights``, with a
    bare ``AssertionError`` or ``KeyError``.)"""
    items = value if isinstance(value, list) else [value]
    for i, item in enumerate(items):
        where = f'{name}[{i}]' if isinstance(value, list) else name
        if not isinstance(item, dict) or 'type' not in item:
            raise OptionTypeError(
                f'{where} must be a dict with a "type" key, e.g. '
                f'dict(type="Pretrained", checkpoint=...), or a list of '
                f'such dicts; got {_given(item)}')
        if item['type'] == 'Pretrained':
            check_pretrained_cfg(item, where)
    return value


# ------------------------------------------------------------ the tables
#: The OpenMMLab backbone contract that every mmsk backbone takes
#: (option -> checker), shared by the backbones' tables.
BACKBONE_OPTIONS = dict(
    attn_cfg=optional(check_cfg),
    conv_cfg=optional(check_conv_cfg),
    norm_cfg=check_norm_cfg,
    act_cfg=check_act_cfg,
    norm_eval=check_bool,
    with_cp=check_bool,
    drop_path_rate=check_unit_interval,
    init_cfg=optional(check_init_cfg),
)


def _owner_name(owner: Any) -> str:
    return owner if isinstance(owner, str) else type(owner).__name__


def check_option(owner: Any, key: str, value: Any, checker: Checker) -> Any:
    """Run one checker; the error reads ``'Owner: key must be ...'``."""
    return checker(f'{_owner_name(owner)}: {key}', value)


def check_options(owner: Any, values: Mapping[str, Any],
                  table: Mapping[str, Checker]) -> Dict[str, Any]:
    """Check ``values[key]`` with ``table[key]`` for every key of the table,
    in order; return the checked (normalised) values. ``owner`` (a module
    or its class name) heads every error message."""
    return {
        key: check_option(owner, key, values[key], checker)
        for key, checker in table.items()
    }


def check_unknown_keys(owner: Any,
                       given: Iterable[str],
                       known: Iterable[str],
                       what: str = 'option',
                       hints: Optional[Mapping[str, str]] = None):
    """Raise one ``TypeError`` for every key of ``given`` not in ``known``,
    naming the owner, the keys and their close matches (or a hint for a
    known foreign name, e.g. mmpretrain's ``se_ratio``)."""
    known = sorted(set(known))
    unknown = [key for key in given if key not in known]
    if not unknown:
        return
    hints = hints or {}
    parts = []
    for key in unknown:
        if key in hints:
            parts.append(f'{key!r} ({hints[key]})')
            continue
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
        parts.append(f'{key!r}' +
                     (f' (did you mean {" or ".join(close)}?)' if close
                      else ''))
    plural = 's' if len(unknown) > 1 else ''
    raise TypeError(f'{_owner_name(owner)} got unknown {what}{plural} '
                    f'{", ".join(parts)}')


# ------------------------------------------------------------------ inputs
# fx.symbolic_trace only (is_fx_tracing is also true under torch.export and
# logs a warning on every call); older torch has is_fx_tracing alone.
_is_fx_symbolic_tracing = getattr(torch.fx._symbolic_trace,
                                  'is_fx_symbolic_tracing',
                                  torch.fx._symbolic_trace.is_fx_tracing)


def _skip_input_checks() -> bool:
    # Tracers that see proxies (fx) or bake Python branches into the graph
    # (jit); torch.compile and torch.export run the checks on fake tensors
    # of static rank and channels, which adds no graph node.
    return torch.jit.is_tracing() or torch.jit.is_scripting() or \
        _is_fx_symbolic_tracing()


def check_input(owner: Any, x: Any, in_channels: int,
                weight: Optional[torch.Tensor] = None) -> None:
    """Check a backbone's input: a 4-D ``(N, C, H, W)`` floating tensor with
    ``C == in_channels`` and, outside autocast, the dtype of ``weight`` (the
    stem conv's). Skipped while tracing (``torch.jit.trace``,
    ``torch.fx``), where shapes are symbols; a few attribute reads
    otherwise."""
    if _skip_input_checks():
        return
    name = _owner_name(owner)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f'{name} expects a tensor (N, {in_channels}, H, W), '
                        f'got {type(x).__name__}')
    if x.dim() != 4 or x.shape[1] != in_channels:
        raise ValueError(f'{name} expects input of shape (N, {in_channels}, '
                         f'H, W) (in_channels={in_channels}), got '
                         f'{tuple(x.shape)}')
    if not x.is_floating_point():
        raise TypeError(f'{name} expects a floating-point input (convert '
                        f'images with x.float(), normalised as in training; '
                        f'a data preprocessor does this), got {x.dtype}')
    if weight is not None and x.dtype != weight.dtype and \
            not torch.is_autocast_enabled(x.device.type):
        raise TypeError(f'{name} has {weight.dtype} weights but got '
                        f'{x.dtype} input; convert one to the other '
                        f'(x.to({weight.dtype}) or model.to({x.dtype})) or '
                        f'run under torch.autocast')


def check_channels(owner: Any, x: torch.Tensor, channels: int,
                   what: str = '') -> None:
    """Check that a layer's ``(N, C, H, W)`` input has ``channels``
    channels (``what`` says why, e.g. the splits); skipped while tracing,
    as :func:`check_input`."""
    if _skip_input_checks() or (x.dim() == 4 and x.shape[1] == channels):
        return
    raise ValueError(f'{_owner_name(owner)} expects input of shape (N, '
                     f'{channels}, H, W){what}, got {tuple(x.shape)}')


#: torch's error for BatchNorm in train mode over a single value per channel
_BN_SINGLE_VALUE = 'Expected more than 1 value per channel when training'


def forward_batch_checked(module: torch.nn.Module, forward: Callable,
                          x: torch.Tensor):
    """``forward(x)``; in train mode with a batch of one image, torch's
    BatchNorm error for a map that has shrunk to 1x1 (one value per
    channel, which it cannot normalise) is raised again naming the module,
    the input and what to do. Every other call runs ``forward`` alone."""
    if _skip_input_checks() or torch.compiler.is_compiling() or \
            not module.training or x.shape[0] != 1:
        return forward(x)
    try:
        return forward(x)
    except ValueError as error:
        if _BN_SINGLE_VALUE not in str(error):
            raise
        raise ValueError(
            f'{_owner_name(module)}: in train mode BatchNorm normalises each '
            f'channel over the batch and the positions of its map, and a '
            f'batch of one {x.shape[2]}x{x.shape[3]} image leaves a 1x1 map '
            f'with a single value per channel. Train on 2 or more images '
            f'per device or on larger images, or keep the norms in eval '
            f'mode (norm_eval=True, or model.eval() for inference) '
            f'[torch: {error}]') from error


def check_sync_bn(module: torch.nn.Module, x: torch.Tensor) -> None:
    """SyncBatchNorm in training needs GPU inputs once a process group
    exists (torch raises deep inside otherwise). Cheap for every other run:
    the modules are only walked for a CPU input in train mode in a
    distributed run."""
    if _skip_input_checks():
        return
    if not (module.training and x.device.type == 'cpu'
            and torch.distributed.is_available()
            and torch.distributed.is_initialized()):
        return
    if any(isinstance(m, torch.nn.SyncBatchNorm) and m.training
           for m in module.modules()):
        raise RuntimeError(
            f'{_owner_name(module)} uses SyncBN (SyncBatchNorm), which needs '
            f'GPUs in a distributed run, but got a CPU input. On CPU use '
            f'plain BN: norm_cfg=dict(type="BN") (or convert a built model '
            f'with mmengine.model.revert_sync_batchnorm)')


def accepted_kwargs(cls: type) -> set:
    """The keyword arguments ``cls(...)`` accepts: the named parameters of
    its ``__init__`` and, while an ``__init__`` forwards ``**kwargs``, those
    of its bases'."""
    import inspect
    names = set()
    for klass in cls.__mro__:
        if '__init__' not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names |= {
            p.name
            for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD,
                                          p.KEYWORD_ONLY)
        }
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    names.discard('self')
    return names


def error_message(error: BaseException) -> str:
    """The text of ``error`` for an ``error:`` line (a ``KeyError``'s
    message without the quotes its ``str`` adds)."""
    if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(
            error.args[0], str):
        return error.args[0]
    return str(error)
