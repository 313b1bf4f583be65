"""``tools/deployment/pytorch2onnx.py``: export an mmsk classifier to ONNX
and prove the file with onnxruntime against PyTorch; and
``tools/model_converters/reparameterize_model.py``: fold a classifier
checkpoint for inference.

Both load the checkpoint strictly (a checkpoint that does not fit the
config's model is refused, naming the keys), write their output atomically
(never over an input, missing folders created: :mod:`mmsk.utils.io`), and end
bad input (a missing, corrupt, unsafe or unfitting checkpoint, a bad output
path, opset or tolerance) with ``error: ...`` on stderr and exit code 1.
"""
import argparse
import copy
import os.path as osp
import sys
from typing import Optional, Sequence

from mmengine.config import DictAction

from mmsk.converters.cli import INPUT_ERRORS
from mmsk.engine.loading import CheckpointMismatchError
from mmsk.utils import check_positive_number, error_message
from mmsk.utils.io import atomic_save, check_output_path, read_config

from .onnx import (DEFAULT_OPSETS, TOLERANCE, build_classifier,
                   check_finite_outputs, check_inputs, check_opset,
                   check_shape, export_onnx, load_checkpoint_strict,
                   verify_onnx)

#: What the tools turn into ``error: ...`` and exit code 1 (a config that is
#: not Python is a ValueError of :func:`mmsk.utils.io.read_config`).
TOOL_ERRORS = INPUT_ERRORS + (TypeError, CheckpointMismatchError)


def pytorch2onnx(config,
                 checkpoint: str,
                 shape: Sequence[int],
                 out: Optional[str] = None,
                 dynamic: bool = False,
                 deploy: bool = False,
                 features: bool = False,
                 exporter: str = 'dynamo',
                 opset: Optional[int] = None,
                 cfg_options: Optional[dict] = None,
                 log=print) -> dict:
    """Export, then compare with PyTorch on random and real inputs.

    ``config`` is a file or a :class:`mmengine.config.Config`; ``out``
    defaults to ``CONFIG_NAME.onnx`` for a file. The checkpoint is loaded
    strictly (:func:`~mmsk.deploy.onnx.load_checkpoint_strict`); ``out``
    (never the checkpoint or the config) is written atomically.

    Returns:
        dict: ``out`` (the file), ``diffs`` (input -> max abs diff) and
        ``max_diff``.
    """
    inputs = [checkpoint]
    if isinstance(config, str):
        if out is None:
            out = osp.splitext(osp.basename(config))[0] + '.onnx'
        inputs.append(config)
        config = read_config(config)
    elif out is None:
        raise ValueError('out is needed when config is not a file')
    # refuse a bad output, opset or shape before any work (and leave no
    # folder behind when the work fails)
    out = check_output_path(out, inputs, create=False)
    check_opset(exporter, opset)
    check_shape(shape)
    if cfg_options:
        config.merge_from_dict(cfg_options)
    model = build_classifier(config, checkpoint, deploy=deploy)
    what = 'backbone features' if features else 'classifier'
    log(f'exporting the {what} of {type(model.backbone).__name__} '
        f'({"deploy" if deploy else "plain"} mode, {exporter} exporter, opset '
        f'{opset or DEFAULT_OPSETS.get(exporter)}, '
        f'{"dynamic" if dynamic else "static"} shape) to {out}')
    checks = check_inputs(model, shape, dynamic=dynamic)
    check_finite_outputs(model, checks, features=features)
    export_onnx(model, out, shape, dynamic=dynamic, features=features,
                exporter=exporter, opset=opset, inputs=inputs)
    diffs = verify_onnx(model, out, checks, features=features)
    for key, diff in diffs.items():
        log(f'  onnxruntime vs PyTorch, {key} input: max abs diff {diff:.3g}')
    return dict(out=out, diffs=diffs, max_diff=max(diffs.values()))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description='Export an mmsk classifier (or its backbone features) to '
        'ONNX and check the file with onnxruntime against PyTorch; exits '
        'with 1 when they differ by more than --tolerance.')
    parser.add_argument('config', help='mmpretrain config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--shape', type=int, nargs=2, required=True,
                        metavar=('H', 'W'), help='input height and width')
    parser.add_argument('--out', help='ONNX file (default: CONFIG_NAME.onnx)')
    parser.add_argument('--dynamic', action='store_true',
                        help='dynamic batch, height and width')
    parser.add_argument('--deploy', action='store_true',
                        help='fold the backbone first '
                        '(model.backbone.switch_to_deploy())')
    parser.add_argument('--features', action='store_true',
                        help="export the backbone's multi-scale outputs "
                        'instead of the logits')
    parser.add_argument('--exporter', choices=sorted(DEFAULT_OPSETS),
                        default='dynamo',
                        help="torch.onnx.export's exporter (default: dynamo)")
    parser.add_argument('--opset', type=int,
                        help='opset (default: 18 for dynamo, 17 for '
                        "torchscript; at most what torch's exporter "
                        'supports)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument('--tolerance', type=float, default=TOLERANCE,
                        help=f'max abs diff allowed (default: {TOLERANCE})')
    args = parser.parse_args(argv)
    try:
        check_positive_number('--tolerance', args.tolerance)
        result = pytorch2onnx(args.config, args.checkpoint, args.shape,
                              out=args.out, dynamic=args.dynamic,
                              deploy=args.deploy, features=args.features,
                              exporter=args.exporter, opset=args.opset,
                              cfg_options=args.cfg_options)
    except TOOL_ERRORS as e:
        print(f'error: {error_message(e)}', file=sys.stderr)
        return 1
    diff = result['max_diff']
    verdict = 'ok' if diff <= args.tolerance else 'FAILED'
    print(f'max abs diff {diff:.3g} (tolerance {args.tolerance:g}): '
          f'{verdict}; wrote {result["out"]}')
    return 0 if diff <= args.tolerance else 1


def reparameterize(config, checkpoint: str, out: str, log=print) -> str:
    """Fold the classifier checkpoint ``checkpoint`` of ``config`` (a file or
    a :class:`mmengine.config.Config`) for inference
    (``model.backbone.switch_to_deploy()``) and save it to ``out``.

    The checkpoint is loaded strictly, so a checkpoint of another model is
    refused instead of folding random weights; ``out`` holds the folded
    ``state_dict`` and the checkpoint's ``meta`` (its optimizer, scheduler
    and message-hub states belong to the unfolded parameters, which the
    folded model no longer has, so they are left out) and is written
    atomically, never over the checkpoint or the config. Load it with
    ``model.backbone.deploy=True``; its ``meta['cfg']`` is the config with
    that option set, so :func:`mmsk.checkpoint.config_from_checkpoint`
    builds the folded model.

    Returns:
        str: ``out``.
    """
    inputs = [checkpoint] + ([config] if isinstance(config, str) else [])
    out = check_output_path(out, inputs, create=False)
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint {checkpoint} does not exist')
    if isinstance(config, str):
        cfg = read_config(config)  # read once: the model and meta['cfg']
    else:
        cfg = copy.deepcopy(config)
    model = build_classifier(copy.deepcopy(cfg))
    loaded = load_checkpoint_strict(
        model, checkpoint,
        hint="Give a checkpoint of this config's (unfolded) model")
    switch = getattr(model.backbone, 'switch_to_deploy', None)
    if switch is None:
        raise TypeError(f'{type(model.backbone).__name__} has no '
                        'switch_to_deploy(): nothing to fold')
    log('Converting...')
    switch()
    # the config it carries builds the folded model (it loads the result)
    cfg.model.backbone.deploy = True
    meta = loaded.get('meta') if 'state_dict' in loaded else None
    folded = dict(state_dict=model.state_dict(),
                  meta=dict(meta if isinstance(meta, dict) else {},
                            cfg=cfg.pretty_text))
    atomic_save(folded, out, inputs)
    log(f'Done! Save at path "{out}"')
    return out


def reparameterize_main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description='Fold an mmsk classifier checkpoint for inference '
        '(model.backbone.switch_to_deploy()); load the result with '
        '--cfg-options model.backbone.deploy=True.')
    parser.add_argument('config_path', help='config file of the model')
    parser.add_argument('checkpoint_path',
                        help='checkpoint of that model (unfolded)')
    parser.add_argument('save_path', help='the folded checkpoint to write')
    args = parser.parse_args(argv)
    try:
        reparameterize(args.config_path, args.checkpoint_path,
                       args.save_path)
    except TOOL_ERRORS as e:
        print(f'error: {error_message(e)}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':  # python -m mmsk.deploy.cli: the ONNX tool
    sys.exit(main())
