"""Strict checkpoint loading in MMEngine's Runner.

MMEngine's ``Runner.load_checkpoint`` (used by ``tools/test.py CONFIG CKPT``,
``--resume`` and ``load_from``) loads with ``strict=False``: a checkpoint of
another model only logs missing/unexpected keys and the run goes on with a
partly random model (and reports a meaningless accuracy). After
:func:`install` (run by ``import mmsk``) the Runner refuses such a checkpoint
with :class:`CheckpointMismatchError`, naming the missing, unexpected and
mis-shaped keys, on every rank.

Fine-tuning from a partial checkpoint (a new head, another number of classes)
is an explicit opt-in: ``load_from_strict = False`` in the config (or
``--cfg-options load_from_strict=False``). It relaxes ``load_from`` in
training only; ``--resume`` and evaluation (``tools/test.py``) are always
strict.
"""
import re
import threading
from contextlib import contextmanager
from typing import Dict, List, Optional, Tuple

import torch

#: Config key of the opt-in to partial ``load_from`` loading.
STRICT_KEY = 'load_from_strict'
_SHOWN = 20  # keys named per kind in an error message
_policy = threading.local()


class CheckpointMismatchError(RuntimeError):
    """The checkpoint's state dict does not fit the model."""


class CannotResumeError(CheckpointMismatchError):
    """``--resume`` was given a checkpoint without the training state that
    resuming restores (the optimizer, the schedulers, the epoch)."""


def check_resumable(checkpoint, filename: str, needs: Tuple[str, ...]):
    """Raise :class:`CannotResumeError` unless ``checkpoint`` holds the
    states in ``needs`` (``'optimizer'``, ``'param_schedulers'``) and its
    ``meta`` the epoch and iteration. A ``best_*.pth`` (CheckpointHook
    saves it without them), a converted or a folded checkpoint would
    restart the schedule and the momentum from scratch, silently."""
    if not isinstance(checkpoint, dict):
        return  # check_checkpoint_fits names it
    meta = checkpoint.get('meta')
    lacking = [key for key in needs if key not in checkpoint]
    if not (isinstance(meta, dict) and 'epoch' in meta and 'iter' in meta):
        lacking.append("epoch and iteration in its meta")
    if lacking:
        raise CannotResumeError(
            f'{filename} cannot be resumed from: it holds no '
            f'{", no ".join(lacking)} (it was saved for evaluation or '
            f'conversion, as best_*.pth files are), so --resume would start '
            f'the learning-rate schedule and the optimizer over. Resume from '
            f'an epoch_N.pth / iter_N.pth of the run, or start a new run '
            f'from these weights with load_from (--cfg-options '
            f'load_from=...)')


def _revise(state_dict: Dict, revise_keys) -> Dict:
    for pattern, repl in revise_keys or ():
        state_dict = {re.sub(pattern, repl, k): v
                      for k, v in state_dict.items()}
    return state_dict


def keys_as_loaded(model, state_dict: Dict) -> Dict:
    """``state_dict`` with the keys that loading renames renamed: blocks
    that also load another key layout (mmpretrain's MobileNetV2
    ``conv.0/1/2``) do it in ``rename_pretrained_keys``, which their
    ``_load_from_state_dict`` calls."""
    state_dict = dict(state_dict)
    for name, module in model.named_modules():
        if hasattr(module, 'rename_pretrained_keys'):
            module.rename_pretrained_keys(state_dict,
                                          f'{name}.' if name else '')
    return state_dict


def state_dict_mismatch(
        model, state_dict: Dict
) -> Tuple[List[str], List[str], List[Tuple[str, tuple, tuple]]]:
    """``(missing, unexpected, mis_shaped)`` keys of ``state_dict`` (keys
    renamed as loading renames them, :func:`keys_as_loaded`) against
    ``model.state_dict()``; ``mis_shaped`` holds ``(key, checkpoint shape,
    model shape)``. BatchNorm's ``num_batches_tracked`` may be missing, as
    MMEngine's loader has it."""
    return _mismatch(model, state_dict)[:3]


def unwrap_model(model):
    """The model that MMEngine's ``load_state_dict`` loads into: without
    its wrappers (DDP and the other model wrappers) and test-time
    augmentation (``BaseTTAModel``, what ``tools/test.py --tta`` runs),
    whose ``module.`` keys a checkpoint does not have."""
    from mmengine.model import BaseTTAModel, is_model_wrapper
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def _mismatch(model, state_dict: Dict) -> tuple:
    """:func:`state_dict_mismatch`'s three lists and ``mis_typed``:
    ``(key, type name)`` of the checkpoint's values that are not tensors
    where the model has one (a numpy array or a number in a weight's
    place, which MMEngine's non-strict loader only logs, leaving that
    weight random)."""
    model = unwrap_model(model)
    state_dict = keys_as_loaded(model, state_dict)
    expected = model.state_dict()
    missing = sorted(k for k in set(expected) - set(state_dict)
                     if not k.endswith('num_batches_tracked'))
    unexpected = sorted(set(state_dict) - set(expected))
    mis_shaped, mis_typed = [], []
    for key in sorted(set(expected) & set(state_dict)):
        got, want = state_dict[key], expected[key]
        if not isinstance(got, torch.Tensor):
            if isinstance(want, torch.Tensor):
                kind = type(got)
                mis_typed.append(
                    (key, f'{kind.__module__}.{kind.__qualname__}'))
        elif tuple(got.shape) != tuple(want.shape):
            mis_shaped.append((key, tuple(got.shape), tuple(want.shape)))
    return missing, unexpected, mis_shaped, mis_typed


def _names(keys: List[str]) -> str:
    more = f' ... and {len(keys) - _SHOWN} more' if len(keys) > _SHOWN \
        else ''
    return ', '.join(keys[:_SHOWN]) + more


def check_checkpoint_fits(model, checkpoint, filename: str = 'checkpoint',
                          revise_keys=((r'^module.', ''), ),
                          hint: Optional[str] = None):
    """Raise :class:`CheckpointMismatchError` unless every key of the model
    is in the checkpoint as a tensor of the same shape and the checkpoint
    holds no other key."""
    state_dict = checkpoint.get('state_dict', checkpoint) \
        if isinstance(checkpoint, dict) else checkpoint
    if not isinstance(state_dict, dict):
        raise CheckpointMismatchError(
            f'{filename} holds no state dict '
            f'(got {type(state_dict).__name__})')
    state_dict = _revise(dict(state_dict), revise_keys)
    missing, unexpected, mis_shaped, mis_typed = _mismatch(model, state_dict)
    if not (missing or unexpected or mis_shaped or mis_typed):
        return
    parts = []
    if missing:
        parts.append(f'{len(missing)} missing keys: {_names(missing)}')
    if unexpected:
        parts.append(
            f'{len(unexpected)} unexpected keys: {_names(unexpected)}')
    if mis_shaped:
        shown = [f'{k} (checkpoint {a}, model {b})' for k, a, b in mis_shaped]
        parts.append(f'{len(mis_shaped)} mis-shaped keys: {_names(shown)}')
    if mis_typed:
        shown = [f'{k} ({t})' for k, t in mis_typed]
        parts.append(f'{len(mis_typed)} keys hold no tensor: '
                     f'{_names(shown)}')
    raise CheckpointMismatchError(
        f'{filename} does not fit the model '
        f'{type(unwrap_model(model)).__name__}: '
        + '; '.join(parts) + (f'. {hint}' if hint else ''))


def load_checkpoint_strict(model, filename: str,
                           hint: Optional[str] = None) -> dict:
    """Load the checkpoint ``filename`` into ``model`` strictly, for tools
    outside a Runner (ONNX export, folding, the look-inside tools); returns
    what the file holds.

    The file is read by MMEngine's loader (for local files mmsk's safe
    loader: ``UnsafeCheckpointError``, ``CorruptCheckpointError``) and
    checked with :func:`check_checkpoint_fits`, the check of
    ``tools/test.py``, before any weight changes: a file that holds no
    state dict, or one with missing, unexpected or mis-shaped keys, raises
    :class:`CheckpointMismatchError` naming them (``hint`` appended).
    """
    from mmengine.runner.checkpoint import (_load_checkpoint,
                                            _load_checkpoint_to_model)
    loaded = _load_checkpoint(filename, map_location='cpu')
    check_checkpoint_fits(model, loaded, f'checkpoint {filename!r}',
                          hint=hint)
    _load_checkpoint_to_model(model, loaded, strict=True)
    return loaded


def is_resuming() -> bool:
    """Whether the Runner of this thread is inside ``Runner.resume``."""
    return getattr(_policy, 'resuming', False)


@contextmanager
def _strict(filename: str, hint: str):
    previous = getattr(_policy, 'value', None)
    _policy.value = (filename, hint)
    try:
        yield
    finally:
        _policy.value = previous


def _load_strict_flag(cfg) -> bool:
    value = cfg.get(STRICT_KEY, True) if cfg is not None else True
    if not isinstance(value, bool):
        raise ValueError(f'{STRICT_KEY} must be True or False, got '
                         f'{value!r} ({type(value).__name__})')
    return value


def _is_training(runner) -> bool:
    """Whether ``runner`` has built its train loop (``Runner.train``)."""
    from mmengine.runner import BaseLoop
    return isinstance(getattr(runner, '_train_loop', None), BaseLoop)


def _resume_needs(runner, resume_optimizer: bool,
                  resume_param_scheduler: bool) -> Tuple[str, ...]:
    """The states a checkpoint of ``runner``'s run holds for its resume:
    those its CheckpointHook saves (``save_optimizer=False`` /
    ``save_param_scheduler=False`` runs resume without them, as before)
    and the resume restores."""
    from mmengine.hooks import CheckpointHook
    hooks = [h for h in getattr(runner, 'hooks', [])
             if isinstance(h, CheckpointHook)]
    saves = (lambda key: all(getattr(h, key, True) for h in hooks))
    needs = ()
    if resume_optimizer and saves('save_optimizer'):
        needs += ('optimizer', )
    if resume_param_scheduler and saves('save_param_scheduler') and \
            getattr(runner, 'param_schedulers', None) is not None:
        needs += ('param_schedulers', )
    return needs


def install():
    """Make MMEngine's Runner check every checkpoint it loads (idempotent)."""
    from mmengine.runner import runner as runner_module
    Runner = runner_module.Runner
    if getattr(Runner.load_checkpoint, '_mmsk_strict', False):
        return
    to_model = runner_module._load_checkpoint_to_model
    load_checkpoint = Runner.load_checkpoint
    resume = Runner.resume

    def checked_load_to_model(model, checkpoint, strict=False, logger=None,
                              revise_keys=[(r'^module.', '')]):
        policy = getattr(_policy, 'value', None)
        if policy is not None:
            filename, hint = policy
            needs = getattr(_policy, 'resume_needs', None)
            if is_resuming() and needs is not None:
                check_resumable(checkpoint, filename, needs)
            check_checkpoint_fits(model, checkpoint, filename, revise_keys,
                                  hint)
        return to_model(model, checkpoint, strict, logger, revise_keys)

    def strict_load_checkpoint(self, filename, *args, **kwargs):
        opted_out = not _load_strict_flag(getattr(self, 'cfg', None))
        if is_resuming():
            hint = ('--resume continues the run of this config: resume from '
                    "a checkpoint of the config's own work dir")
        elif not _is_training(self):
            hint = ('Evaluation needs a checkpoint of this config\'s model '
                    f'({STRICT_KEY}=False applies to training only)')
        elif opted_out:
            return load_checkpoint(self, filename, *args, **kwargs)
        else:
            hint = ('To fine-tune from a partial checkpoint (e.g. a new '
                    f'head), set {STRICT_KEY}=False in the config '
                    f'(--cfg-options {STRICT_KEY}=False)')
        with _strict(f'checkpoint {filename!r}', hint):
            return load_checkpoint(self, filename, *args, **kwargs)

    def strict_resume(self, filename, resume_optimizer=True,
                      resume_param_scheduler=True, *args, **kwargs):
        previous = (getattr(_policy, 'resuming', False),
                    getattr(_policy, 'resume_needs', None))
        _policy.resuming = True
        _policy.resume_needs = _resume_needs(self, resume_optimizer,
                                             resume_param_scheduler)
        try:
            return resume(self, filename, resume_optimizer,
                          resume_param_scheduler, *args, **kwargs)
        finally:
            _policy.resuming, _policy.resume_needs = previous

    strict_load_checkpoint._mmsk_strict = True
    strict_load_checkpoint.__doc__ = load_checkpoint.__doc__
    strict_resume.__doc__ = resume.__doc__
    runner_module._load_checkpoint_to_model = checked_load_to_model
    Runner.load_checkpoint = strict_load_checkpoint
    Runner.resume = strict_resume
