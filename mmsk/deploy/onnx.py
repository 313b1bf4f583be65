"""Export mmsk classifiers (or their backbones' features) to ONNX, and prove
the file with onnxruntime against PyTorch.

Two exporters of ``torch.onnx.export`` are supported:

- ``'dynamo'`` (torch's default since 2.9, needs ``onnxscript``): works from
  opset 18; at opset 17 it mis-exports ``torch.split`` (Res2Net's splits), an
  upstream fault.
- ``'torchscript'`` (``dynamo=False``, the older exporter): opset 17.

The opsets each exporter of the installed torch supports are
:func:`opset_range`; the file is written atomically (never half a file, never
over one of the inputs: :mod:`mmsk.utils.io`) and holds its weights (no
``.onnx.data`` file next to it). :func:`build_classifier` loads checkpoints
strictly: a checkpoint that does not fit the config's model raises
:class:`~mmsk.engine.loading.CheckpointMismatchError` naming the keys.

Example:
    >>> cfg = 'configs/sknet/sknet18-cifar_1xb64_mnist5k.py'
    >>> model = build_classifier(cfg, 'sknet18.pth')
    >>> export_onnx(model, 'sknet18.onnx', shape=(28, 28), dynamic=True)
    >>> diffs = verify_onnx(model, 'sknet18.onnx',
    ...                     check_inputs(model, (28, 28), dynamic=True))
    >>> max(diffs.values()) <= TOLERANCE
    True
"""
import os
import os.path as osp
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from mmsk.engine.loading import load_checkpoint_strict
from mmsk.utils import check_choice, check_positive_int
from mmsk.utils.io import atomic_output

#: exporter -> the opset it is used at by default (its lowest working one)
DEFAULT_OPSETS = {'dynamo': 18, 'torchscript': 17}
TOLERANCE = 1e-4


def opset_range(exporter: str = 'dynamo') -> Tuple[int, int]:
    """The lowest and highest opset that ``exporter`` of the installed torch
    exports to (``torch.onnx``'s own bounds)."""
    check_choice('exporter', exporter, tuple(DEFAULT_OPSETS))
    from torch.onnx import _constants
    low = getattr(_constants, 'ONNX_MIN_OPSET', 7)
    high = getattr(_constants, 'ONNX_MAX_OPSET', DEFAULT_OPSETS['dynamo'])
    if exporter == 'torchscript':
        high = getattr(_constants, 'ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET',
                       high)
    return low, high


def check_opset(exporter: str = 'dynamo', opset: Optional[int] = None) -> int:
    """``opset`` (:data:`DEFAULT_OPSETS` when None), checked against
    :func:`opset_range`; raises ValueError naming the range."""
    low, high = opset_range(exporter)
    if opset is None:
        return DEFAULT_OPSETS[exporter]
    opset = check_positive_int('opset', opset)
    if not low <= opset <= high:
        raise ValueError(f'opset {opset} is not supported by the {exporter} '
                         f'exporter of torch {torch.__version__}: give an '
                         f'opset in [{low}, {high}]')
    return opset


def build_classifier(config,
                     checkpoint: Optional[str] = None,
                     deploy: bool = False) -> nn.Module:
    """The eval-mode model of an mmpretrain config (a path or a Config), with
    ``checkpoint`` loaded strictly (:func:`load_checkpoint_strict`);
    ``deploy=True`` then folds the backbone
    (``model.backbone.switch_to_deploy()``, mmpretrain's convention)."""
    import mmsk  # noqa: F401  (registers the backbones)
    from mmpretrain.apis import init_model
    if isinstance(config, str):
        from mmsk.utils.io import read_config
        config = read_config(config)
    if checkpoint is not None and not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint {checkpoint} does not exist')
    model = init_model(config, None, device='cpu')
    if checkpoint is not None:
        loaded = load_checkpoint_strict(
            model, checkpoint,
            hint="Give a checkpoint of this config's model (with "
            '--cfg-options model.backbone.deploy=True for a folded one)')
        meta = loaded.get('meta') or {}
        if isinstance(meta, dict) and 'dataset_meta' in meta:
            model._dataset_meta = meta['dataset_meta']  # as init_model does
    model.eval()
    if deploy:
        switch = getattr(model.backbone, 'switch_to_deploy', None)
        if switch is None:
            raise TypeError(f'{type(model.backbone).__name__} has no '
                            'switch_to_deploy(): --deploy needs a backbone '
                            'that folds itself')
        switch()
    return model


class ExportModule(nn.Module):
    """What gets exported: the classifier's logits (``mode='tensor'``, the
    input already normalized), or with ``features=True`` the tuple of the
    backbone's multi-scale outputs."""

    def __init__(self, model: nn.Module, features: bool = False):
        super().__init__()
        self.model = model
        self.features = features

    def forward(self, x: torch.Tensor):
        if self.features:
            return tuple(self.model.backbone(x))
        return self.model(x, mode='tensor')

    def output_names(self, x: torch.Tensor) -> List[str]:
        if not self.features:
            return ['logits']
        with torch.no_grad():
            return [f'feat{i}' for i in range(len(self(x)))]


def _in_channels(model: nn.Module) -> int:
    backbone = getattr(model, 'backbone', model)
    channels = getattr(backbone, 'in_channels', None)
    if channels is None:  # the first conv decides
        conv = next(m for m in backbone.modules()
                    if isinstance(m, nn.Conv2d))
        channels = conv.in_channels
    return channels


def check_shape(shape) -> Tuple[int, int]:
    """``(height, width)`` of an input, two positive ints."""
    if not isinstance(shape, (list, tuple)) or len(shape) != 2:
        raise ValueError(f'shape must be (height, width), got {shape!r}')
    return tuple(check_positive_int(f'shape[{i}]', s)
                 for i, s in enumerate(shape))


def export_onnx(model: nn.Module,
                out: str,
                shape: Sequence[int],
                batch: int = 1,
                dynamic: bool = False,
                features: bool = False,
                exporter: str = 'dynamo',
                opset: Optional[int] = None,
                inputs: Iterable[Optional[str]] = ()) -> str:
    """Export ``model`` (an mmpretrain classifier) to ``out``, atomically
    (:func:`mmsk.utils.io.atomic_output`: missing folders are created, and
    an error leaves no file).

    Args:
        model: Eval-mode classifier (:func:`build_classifier`).
        out (str): ONNX file to write.
        shape (tuple): Input ``(H, W)`` used to trace.
        batch (int): Batch size used to trace. Defaults to 1.
        dynamic (bool): Dynamic batch, height and width. Defaults to False.
        features (bool): Export the backbone's outputs instead of the logits.
        exporter (str): ``'dynamo'`` or ``'torchscript'``.
        opset (int, optional): In :func:`opset_range`. Defaults to
            :data:`DEFAULT_OPSETS`.
        inputs (list[str]): Files the export reads (checkpoint, config):
            ``out`` may not be one of them.

    Returns:
        str: ``out``.
    """
    check_choice('exporter', exporter, tuple(DEFAULT_OPSETS))
    height, width = check_shape(shape)
    check_positive_int('batch', batch)
    opset = check_opset(exporter, opset)
    module = ExportModule(model, features).eval()
    x = torch.rand(batch, _in_channels(model), height, width)
    output_names = module.output_names(x)
    kwargs = dict(
        opset_version=opset,
        input_names=['input'],
        output_names=output_names)
    with atomic_output(out, inputs) as tmp:
        _export(module, x, tmp, exporter, dynamic, output_names, kwargs)
        _check_written(tmp, out, opset)
    return out


def _export(module, x, out, exporter, dynamic, output_names, kwargs):
    """``torch.onnx.export`` of ``module`` on ``x`` to ``out``."""
    if exporter == 'dynamo':
        if dynamic:
            from torch.export import Dim
            kwargs['dynamic_shapes'] = ({
                0: Dim.AUTO,
                2: Dim.AUTO,
                3: Dim.AUTO
            }, )
        # weights in the file: an external-data file would be named after
        # the temporary file of atomic_output
        torch.onnx.export(module, (x, ), out, dynamo=True,
                          external_data=False, **kwargs)
    else:
        if dynamic:
            axes = {'input': {0: 'batch', 2: 'height', 3: 'width'}}
            for name in output_names:
                axes[name] = {0: 'batch'} if name == 'logits' else \
                    {0: 'batch', 2: f'{name}_height', 3: f'{name}_width'}
            kwargs['dynamic_axes'] = axes
        import warnings
        with warnings.catch_warnings():
            # the TorchScript-based exporter is deprecated upstream
            warnings.simplefilter('ignore', DeprecationWarning)
            torch.onnx.export(module, (x, ), out, dynamo=False, **kwargs)


def _check_written(tmp: str, out: str, opset: int):
    """Check the exported file ``tmp`` (to be renamed to ``out``): one
    self-contained file (an external-data file would be named after
    ``tmp``), valid, at the opset asked for (the dynamo exporter falls back
    to its own opset when it cannot convert)."""
    import onnx
    data = f'{tmp}.data'
    if osp.exists(data):
        size = osp.getsize(data)
        os.remove(data)
        if size:
            raise ValueError(f'cannot write {out!r}: the model is too large '
                             'for one ONNX file (torch saved its weights '
                             'as external data)')
    onnx.checker.check_model(tmp)
    proto = onnx.load(tmp, load_external_data=False)
    written = next((o.version for o in proto.opset_import
                    if o.domain in ('', 'ai.onnx')), None)
    if written != opset:
        raise ValueError(f'torch exported opset {written} instead of the '
                         f'opset {opset} asked for (it could not convert '
                         f'the model): give another --opset')


def real_inputs(model: nn.Module,
                shape: Sequence[int],
                num: int = 4) -> Optional[torch.Tensor]:
    """``num`` real digits of the built-in MNIST5k val split, normalized as
    the model's data preprocessor does and resized to ``shape`` (repeated to
    3 channels for an RGB model); None when the model takes neither 1 nor 3
    channels or the data set cannot be read."""
    import torch.nn.functional as F
    channels = _in_channels(model)
    if channels not in (1, 3):
        return None
    try:
        from mmsk.datasets.mnist5k import load_mnist5k
        images, _ = load_mnist5k('val')
    except (ImportError, FileNotFoundError):
        return None
    idx = torch.linspace(0, len(images) - 1, num).long()  # several classes
    x = torch.from_numpy(images[idx.numpy()]).float()[:, None]
    x = x.expand(-1, channels, -1, -1)
    pre = getattr(model, 'data_preprocessor', None)
    if getattr(pre, '_enable_normalize', False):
        mean, std = pre.mean, pre.std
        if mean.shape[0] != channels:
            mean, std = mean.mean().view(1, 1, 1), std.mean().view(1, 1, 1)
        x = (x - mean) / std
    else:
        x = x / 255.
    if tuple(x.shape[-2:]) != tuple(shape):
        x = F.interpolate(x, size=tuple(shape), mode='bilinear',
                          align_corners=False)
    return x.contiguous()


def check_inputs(model: nn.Module,
                 shape: Sequence[int],
                 batch: int = 1,
                 dynamic: bool = False,
                 seed: int = 0) -> Dict[str, torch.Tensor]:
    """Named inputs to compare ONNX and PyTorch on: random ones at the traced
    size (and, for a dynamic file, at another batch and size) and real
    digits (:func:`real_inputs`)."""
    height, width = check_shape(shape)
    channels = _in_channels(model)
    gen = torch.Generator().manual_seed(seed)
    inputs = {
        'random':
        torch.randn(batch, channels, height, width, generator=gen)
    }
    if dynamic:
        inputs['random, other batch and size'] = torch.randn(
            batch + 2, channels, height + 16, width + 8, generator=gen)
    if dynamic:
        real = real_inputs(model, (height + 8, width + 8), num=4)
    else:
        real = real_inputs(model, (height, width), num=batch)
    if real is not None:
        inputs['real (MNIST5k digits)'] = real
    return inputs


def _check_finite(output: torch.Tensor, key: str, consequence: str):
    bad = int((~torch.isfinite(output)).sum())
    if bad:
        raise ValueError(
            f'{bad} of PyTorch\'s {output.numel()} output values on the '
            f'{key!r} input are not finite (NaN or inf): the checkpoint '
            f'holds non-finite weights or statistics, so {consequence}')


def check_finite_outputs(model: nn.Module,
                         inputs: Union[torch.Tensor, Dict[str, torch.Tensor]],
                         features: bool = False):
    """Raise ``ValueError`` when PyTorch's outputs on ``inputs`` are not
    finite: :func:`verify_onnx` could not check an exported file against
    them (run before the export, so that no such file is written)."""
    if isinstance(inputs, torch.Tensor):
        inputs = {'input': inputs}
    module = ExportModule(model, features).eval()
    for key, x in inputs.items():
        with torch.no_grad():
            outputs = module(x)
        for output in ((outputs, ) if isinstance(outputs, torch.Tensor)
                       else outputs):
            _check_finite(output, key, 'the export cannot be checked')


def verify_onnx(model: nn.Module,
                onnx_file: str,
                inputs: Union[torch.Tensor, Dict[str, torch.Tensor]],
                features: bool = False) -> Dict[str, float]:
    """Run ``onnx_file`` with onnxruntime and ``model`` with PyTorch on each
    input; return the max abs difference over all outputs, per input (inf
    where onnxruntime gives NaN or inf and PyTorch a number). Raises
    ``ValueError`` when PyTorch's own outputs are not finite."""
    import onnxruntime as ort
    if isinstance(inputs, torch.Tensor):
        inputs = {'input': inputs}
    session = ort.InferenceSession(
        onnx_file, providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    module = ExportModule(model, features).eval()
    diffs = {}
    for key, x in inputs.items():
        with torch.no_grad():
            expected = module(x)
        if isinstance(expected, torch.Tensor):
            expected = (expected, )
        got = session.run(None, {name: x.numpy()})
        if len(got) != len(expected):
            raise AssertionError(f'{onnx_file} gives {len(got)} outputs, '
                                 f'PyTorch {len(expected)}')
        diff = 0.0
        for g, e in zip(got, expected):
            if tuple(g.shape) != tuple(e.shape):
                raise AssertionError(f'{onnx_file}: output shape {g.shape} '
                                     f'!= PyTorch {tuple(e.shape)} on the '
                                     f'{key} input')
            _check_finite(e, key, f'{onnx_file} cannot be checked')
            # onnxruntime's NaN or inf where PyTorch has a number: inf (max()
            # skips a NaN: one of them hid every real difference)
            d = (torch.from_numpy(g) - e).abs()
            d = torch.where(torch.isfinite(d), d, float('inf'))
            diff = max(diff, d.max().item())
        diffs[key] = diff
    return diffs
