"""``tools/deployment/pytorch2onnx.py``: export an mmsk classifier to ONNX
and prove the file with onnxruntime against PyTorch."""
import argparse
import os.path as osp
import sys
from typing import Optional, Sequence

from mmengine.config import DictAction

from .onnx import (DEFAULT_OPSETS, TOLERANCE, build_classifier, check_inputs,
                   export_onnx, verify_onnx)


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
    defaults to ``CONFIG_NAME.onnx`` for a file.

    Returns:
        dict: ``out`` (the file), ``diffs`` (input -> max abs diff) and
        ``max_diff``.
    """
    from mmengine.config import Config
    if isinstance(config, str):
        if out is None:
            out = osp.splitext(osp.basename(config))[0] + '.onnx'
        if not osp.isfile(config):
            raise FileNotFoundError(f'config file {config} does not exist')
        config = Config.fromfile(config)
    elif out is None:
        raise ValueError('out is needed when config is not a file')
    if cfg_options:
        config.merge_from_dict(cfg_options)
    model = build_classifier(config, checkpoint, deploy=deploy)
    what = 'backbone features' if features else 'classifier'
    log(f'exporting the {what} of {type(model.backbone).__name__} '
        f'({"deploy" if deploy else "plain"} mode, {exporter} exporter, opset '
        f'{opset or DEFAULT_OPSETS.get(exporter)}, '
        f'{"dynamic" if dynamic else "static"} shape) to {out}')
    export_onnx(model, out, shape, dynamic=dynamic, features=features,
                exporter=exporter, opset=opset)
    diffs = verify_onnx(model, out,
                        check_inputs(model, shape, dynamic=dynamic),
                        features=features)
    for key, diff in diffs.items():
        log(f'  onnxruntime vs PyTorch, {key} input: max abs diff {diff:.3g}')
    return dict(out=out, diffs=diffs, max_diff=max(diffs.values()))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description='Export an mmsk classifier (or its backbone features) to '
        'ONNX and check the file with onnxruntime against PyTorch; exits '
        f'with 1 when they differ by more than --tolerance.')
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
                        'torchscript)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument('--tolerance', type=float, default=TOLERANCE,
                        help=f'max abs diff allowed (default: {TOLERANCE})')
    args = parser.parse_args(argv)
    if args.tolerance <= 0:
        parser.error(f'--tolerance must be > 0, got {args.tolerance}')
    try:
        result = pytorch2onnx(args.config, args.checkpoint, args.shape,
                              out=args.out, dynamic=args.dynamic,
                              deploy=args.deploy, features=args.features,
                              exporter=args.exporter, opset=args.opset,
                              cfg_options=args.cfg_options)
    except (FileNotFoundError, ValueError, TypeError, KeyError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    diff = result['max_diff']
    verdict = 'ok' if diff <= args.tolerance else 'FAILED'
    print(f'max abs diff {diff:.3g} (tolerance {args.tolerance:g}): '
          f'{verdict}; wrote {result["out"]}')
    return 0 if diff <= args.tolerance else 1
