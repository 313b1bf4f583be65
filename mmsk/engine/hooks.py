"""MMEngine hooks of mmsk."""
from typing import Optional

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from mmsk.registry import register_hook


def _to_channels_last(inputs):
    if isinstance(inputs, torch.Tensor) and inputs.dim() == 4:
        return inputs.contiguous(memory_format=torch.channels_last)
    if isinstance(inputs, (list, tuple)):
        return type(inputs)(_to_channels_last(x) for x in inputs)
    return inputs


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
    contiguous (NCHW) weights, so they load anywhere, with or without the
    hook. Works for mmpretrain, mmdet and mmseg models (anything with a
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
        self._handle: Optional[torch.utils.hooks.RemovableHandle] = None
        self._preprocessor = None

    @staticmethod
    def _model(runner):
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    def _convert(self, runner):
        model = self._model(runner)
        model.to(memory_format=torch.channels_last)
        preprocessor = getattr(model, 'data_preprocessor', None)
        if not isinstance(preprocessor, torch.nn.Module):
            raise TypeError(
                f'ChannelsLastHook needs a model with a data_preprocessor '
                f'module; {type(model).__name__} has none')
        if self._preprocessor is not preprocessor:
            self._remove()
            self._handle = preprocessor.register_forward_hook(
                _batch_to_channels_last)
            self._preprocessor = preprocessor
            print_log(
                f'ChannelsLastHook: {type(model).__name__} and its batches '
                'run in channels_last', logger='current')

    def _remove(self):
        if self._handle is not None:
            self._handle.remove()
        self._handle = self._preprocessor = None

    def before_train(self, runner) -> None:
        self._convert(runner)

    def before_val(self, runner) -> None:
        self._convert(runner)

    def before_test(self, runner) -> None:
        self._convert(runner)

    def after_run(self, runner) -> None:
        self._remove()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        for key in ('state_dict', 'ema_state_dict'):
            state = checkpoint.get(key)
            if isinstance(state, dict):
                for name, value in state.items():
                    if isinstance(value, torch.Tensor):
                        state[name] = value.contiguous()
