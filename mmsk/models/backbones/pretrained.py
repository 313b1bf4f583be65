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
from mmengine.runner.checkpoint import (_load_checkpoint,
                                        _load_checkpoint_with_prefix)
from torch import nn

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


def pretrained_state_dict(cfg: dict) -> dict:
    """The state dict that MMEngine's ``PretrainedInit`` loads for ``cfg``:
    the keys under ``prefix`` (stripped), or the whole ``state_dict`` with a
    leading ``module.`` removed."""
    map_location = cfg.get('map_location', 'cpu')
    prefix = cfg.get('prefix')
    if prefix is not None:
        return _load_checkpoint_with_prefix(
            prefix, cfg['checkpoint'], map_location=map_location)
    checkpoint = _load_checkpoint(cfg['checkpoint'], map_location)
    state_dict = checkpoint.get('state_dict', checkpoint)
    return {re.sub(r'^module\.', '', k): v for k, v in state_dict.items()}


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
    source = pretrained_state_dict(cfg)
    # blocks that load other layouts rename their keys as loading would
    for name, m in module.named_modules():
        if hasattr(m, 'rename_pretrained_keys'):
            m.rename_pretrained_keys(source, f'{name}.' if name else '')
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
    lines.append('Use a checkpoint of the same architecture (depth, widths, '
                 'groups, stem) or another prefix.')
    raise PretrainedMismatchError('\n'.join(lines))
