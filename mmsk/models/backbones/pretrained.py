"""Check a ``Pretrained`` init_cfg against the backbone before loading it.

MMEngine's ``PretrainedInit`` loads with ``strict=False`` and only logs a
warning when keys are missing or shapes differ, among the many lines a
detector or segmentor logs at start, and the run goes on with a partly random
backbone (a checkpoint of another depth or width, a wrong ``prefix``).
:func:`check_pretrained` reads the same state dict that ``PretrainedInit``
will load and raises :class:`PretrainedMismatchError`, naming the keys, when
it would leave any parameter or buffer of the backbone unloaded. Keys the
checkpoint has and the backbone lacks (a deeper model, a classifier head
without ``prefix``) leave nothing random: MMEngine's warning names them.
"""
import re
from typing import List, Optional

from mmengine.model.weight_init import PretrainedInit
from mmengine.runner.checkpoint import _load_checkpoint
from torch import nn

from mmsk.engine.loading import keys_as_loaded
from mmsk.utils.validation import check_pretrained_cfg

#: How many keys of each kind an error message lists.
MAX_LISTED = 8


class PretrainedMismatchError(ValueError):
    """A ``Pretrained`` checkpoint would leave part of a backbone unloaded."""


def pretrained_cfg(init_cfg) -> Optional[dict]:
    """The ``Pretrained`` entry of an ``init_cfg`` (a dict or a list of
    dicts), or None. With several, the last one (MMEngine applies them in
    order, so the last one wins)."""
    cfgs = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
    found = [
        cfg for cfg in cfgs if isinstance(cfg, dict)
        and cfg.get('type') in ('Pretrained', PretrainedInit)
    ]
    return found[-1] if found else None


def _state_dict_of(checkpoint, where: str) -> dict:
    state_dict = checkpoint.get('state_dict', checkpoint) \
        if isinstance(checkpoint, dict) else checkpoint
    if not isinstance(state_dict, dict):
        raise ValueError(
            f'the Pretrained checkpoint {where} holds a '
            f'{type(state_dict).__name__}, not a state dict (a dict of '
            f'tensors, or a dict with a "state_dict" entry)')
    return state_dict


def _prefixes(keys) -> List[str]:
    """The first dotted part of each key, with its dot, e.g. 'backbone.'."""
    return sorted({k.split('.', 1)[0] + '.' for k in keys if '.' in k})


def pretrained_state_dict(cfg: dict) -> dict:
    """The state dict that MMEngine's ``PretrainedInit`` loads for ``cfg``:
    the keys under ``prefix`` (stripped), or the whole ``state_dict`` with a
    leading ``module.`` removed."""
    check_pretrained_cfg(cfg)
    map_location = cfg.get('map_location', 'cpu')
    where = repr(cfg['checkpoint'])
    state_dict = _state_dict_of(
        _load_checkpoint(cfg['checkpoint'], map_location), where)
    prefix = cfg.get('prefix')
    if prefix is None:
        return {re.sub(r'^module\.', '', k): v
                for k, v in state_dict.items()}
    # as MMEngine's _load_checkpoint_with_prefix, which asserts without a
    # word on what the checkpoint does hold
    if not prefix.endswith('.'):
        prefix += '.'
    found = {k[len(prefix):]: v for k, v in state_dict.items()
             if k.startswith(prefix)}
    if not found:
        raise ValueError(
            f'the Pretrained checkpoint {where} has no keys under prefix '
            f'{cfg["prefix"]!r}; its keys start with {_prefixes(state_dict)}'
            f' (use one of those as prefix, or no prefix for a bare '
            f'backbone state dict)')
    return found


def _listed(keys: List[str]) -> str:
    more = len(keys) - MAX_LISTED
    return ', '.join(keys[:MAX_LISTED]) + (f' (and {more} more)'
                                           if more > 0 else '')


def check_pretrained(module: nn.Module, init_cfg) -> None:
    """Raise :class:`PretrainedMismatchError` if the ``Pretrained`` entry of
    ``init_cfg`` would leave a parameter or buffer of ``module`` unloaded
    (a key the checkpoint lacks, or a shape that differs). BatchNorm's
    ``num_batches_tracked`` is ignored, as MMEngine does."""
    cfg = pretrained_cfg(init_cfg)
    if cfg is None:
        return
    # blocks that load other layouts rename their keys as loading would
    source = keys_as_loaded(module, pretrained_state_dict(cfg))
    target = module.state_dict()
    missing = [
        k for k in target
        if k not in source and not k.endswith('num_batches_tracked')
    ]
    mismatched = [
        f'{k} (checkpoint {tuple(source[k].shape)}, model '
        f'{tuple(v.shape)})' for k, v in target.items()
        if k in source and source[k].shape != v.shape
    ]
    if not missing and not mismatched:
        return
    where = repr(cfg['checkpoint'])
    if cfg.get('prefix') is not None:
        where += f' (prefix {cfg["prefix"]!r})'
    lines = [
        f'{type(module).__name__}: the Pretrained checkpoint {where} does '
        f'not fit this model; loading it would leave part of it random.'
    ]
    if missing:
        lines.append(f'{len(missing)} keys missing in the checkpoint: '
                     f'{_listed(missing)}')
    if mismatched:
        lines.append(f'{len(mismatched)} keys with another shape: '
                     f'{_listed(mismatched)}')
    if missing and cfg.get('prefix') is None:
        # a classifier's or detector's checkpoint loaded without its prefix
        fits = [p for p in _prefixes(source)
                if sum(p + k in source for k in missing) > len(missing) // 2]
        if fits:
            lines.append(f'The checkpoint holds them under {fits[0]!r}: set '
                         f'prefix={fits[0]!r} in the init_cfg.')
    lines.append('Use a checkpoint of the same architecture (depth, widths, '
                 'groups, stem) or another prefix.')
    raise PretrainedMismatchError('\n'.join(lines))
