"""MMEngine hooks of mmsk."""
import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import BaseAveragedModel, is_model_wrapper
from mmengine.utils import apply_to

from mmsk.registry import register_hook


def _to_channels_last(inputs):
    if isinstance(inputs, torch.Tensor) and inputs.dim() == 4:
        return inputs.contiguous(memory_format=torch.channels_last)
    if isinstance(inputs, (list, tuple)):
        return type(inputs)(_to_channels_last(x) for x in inputs)
    return inputs


def _contiguous(obj):
    """A copy of a (nested) state dict with its tensors contiguous (NCHW);
    the containers are new (of the same types), so a live state (the
    optimizer's state dict holds its tensors) is not touched. A module
    state dict's ``_metadata`` (each module's version, which loading
    passes to ``_load_from_state_dict``) is kept: ``apply_to`` builds the
    new dict without it."""
    new = apply_to(obj, lambda x: isinstance(x, torch.Tensor),
                   lambda x: x.contiguous())
    if hasattr(obj, '_metadata'):
        new._metadata = obj._metadata
    return new


def _optimizers(runner) -> list:
    """The built optimizers of the runner (none before training is set
    up)."""
    from mmengine.optim import OptimWrapper, OptimWrapperDict
    wrapper = getattr(runner, 'optim_wrapper', None)
    if isinstance(wrapper, OptimWrapperDict):
        return [w.optimizer for w in wrapper.values()]
    if isinstance(wrapper, OptimWrapper):
        return [wrapper.optimizer]
    return []


def _state_like_params(optimizer):
    """Give every per-parameter state tensor of the parameter's shape
    (momentum, Adam's averages) the parameter's memory layout. A resumed
    NCHW state next to channels_last weights is silently misread by the
    fused CPU optimizers (``fused=True``), which walk raw memory, and slows
    the others."""
    for param, state in optimizer.state.items():
        if param.layout != torch.strided or \
                torch.empty_like(param).stride() != param.stride():
            continue  # sparse, or not dense: no layout to follow
        for key, value in list(state.items()):
            if isinstance(value, torch.Tensor) and \
                    value.layout == torch.strided and \
                    value.shape == param.shape and \
                    value.stride() != param.stride():
                like = torch.empty_like(param, dtype=value.dtype,
                                        device=value.device)
                state[key] = like.copy_(value)


def _batch_to_channels_last(module, args, output):
    """Forward hook of the data preprocessor: its ``inputs`` leave in
    channels_last (NHWC in memory, NCHW in shape)."""
    if isinstance(output, dict) and 'inputs' in output:
        output = dict(output)
        output['inputs'] = _to_channels_last(output['inputs'])
    return output


@register_hook
class ChannelsLastHook(Hook):
    """Train, validate and test in the channels_last memory format.

    Before training, validation and testing, every 4-D parameter and buffer
    of the model (the conv weights) is put in ``torch.channels_last``, and
    every batch leaves the model's data preprocessor in channels_last, so
    the whole network runs in NHWC memory order. Shapes, results and the
    maths are unchanged; only the order of the numbers in memory (and so
    the kernels that oneDNN / cuDNN pick) differs.

    The model is converted in ``before_train`` (after the weights are
    initialised or loaded: random initialisation is the same as without the
    hook) and in ``before_val`` / ``before_test``. Checkpoints are saved with
    contiguous (NCHW) weights and optimizer state (momentum, Adam's
    averages), so they load anywhere, with or without the hook; after a
    resume the optimizer's state is given the weights' layout again.
    EMAHook's averaged copy of the model is kept in channels_last too, and
    the batches of a test-time augmentation wrapper's model are converted
    as well. Works for mmpretrain, mmdet and mmseg models (anything with a
    ``data_preprocessor`` whose output holds ``inputs``)::

        custom_hooks = [dict(type='mmsk.ChannelsLastHook')]

    When to use it: on CPUs (oneDNN) grouped 3x3 convs with few channels per
    group and 1x1 convs on large maps run 3-4x faster in channels_last; on
    GPUs with mixed precision (AMP), tensor-core convolutions want NHWC.
    In multi-GPU training the model is converted after DDP has laid out its
    gradient buckets, which still works (PyTorch copies the gradients into
    the buckets), at a small cost.
    """

    priority = 'LOWEST'  # save_checkpoint: after EMAHook swapped its weights

    def __init__(self):
        self._handles: list = []
        self._preprocessors: list = []

    @staticmethod
    def _model(runner):
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    def _convert(self, runner):
        model = self._model(runner)
        model.to(memory_format=torch.channels_last)
        # a resumed optimizer state, loaded as it was saved (NCHW)
        for optimizer in _optimizers(runner):
            _state_like_params(optimizer)
        for hook in getattr(runner, 'hooks', ()):  # EMAHook's model copy
            self._convert_average(getattr(hook, 'ema_model', None))
        preprocessors = [getattr(model, 'data_preprocessor', None)]
        if not isinstance(preprocessors[0], torch.nn.Module):
            raise TypeError(
                f'ChannelsLastHook needs a model with a data_preprocessor '
                f'module; {type(model).__name__} has none')
        # a test-time-augmentation wrapper runs its model's preprocessor
        inner = getattr(model, 'module', None)
        if isinstance(getattr(inner, 'data_preprocessor', None),
                      torch.nn.Module):
            preprocessors.append(inner.data_preprocessor)
        if [id(p) for p in preprocessors] != \
                [id(p) for p in self._preprocessors]:
            self._remove()
            self._handles = [p.register_forward_hook(_batch_to_channels_last)
                             for p in preprocessors]
            self._preprocessors = preprocessors
            print_log(
                f'ChannelsLastHook: {type(model).__name__} and its batches '
                'run in channels_last', logger='current')

    @staticmethod
    def _convert_average(ema):
        """An mmengine averaged model (EMA): its copy kept in channels_last,
        so that each update reads both in one layout. Its list of averaged
        tensors is taken again: with ``update_buffers=True`` it holds
        detached views of the old storage, which ``to()`` replaces."""
        if not isinstance(ema, BaseAveragedModel):
            return
        ema.module.to(memory_format=torch.channels_last)
        ema.avg_parameters = ema.module.state_dict() \
            if ema.update_buffers else dict(ema.module.named_parameters())

    def _remove(self):
        for handle in self._handles:
            handle.remove()
        self._handles, self._preprocessors = [], []

    def before_train(self, runner) -> None:
        self._convert(runner)

    def before_val(self, runner) -> None:
        self._convert(runner)

    def before_test(self, runner) -> None:
        self._convert(runner)

    def after_run(self, runner) -> None:
        self._remove()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        for key in ('state_dict', 'ema_state_dict', 'optimizer'):
            if key in checkpoint:
                checkpoint[key] = _contiguous(checkpoint[key])
