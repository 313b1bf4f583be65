"""The command lines of ``tools/visualization/sk_attention.py`` and
``se_weights.py``: ``CONFIG CHECKPOINT [IMAGES ... | --dataset built-in]
--out DIR``. Bad input ends with ``error: ...`` on stderr and exit code 1."""
import argparse
import os.path as osp
import sys
from typing import Optional, Sequence

from mmsk.checkpoint import CorruptCheckpointError, UnsafeCheckpointError
from mmsk.engine.loading import CheckpointMismatchError
from mmsk.utils import error_message

# ValueError includes mmsk.utils.io.OutputPathError (an --out that is a file)
INPUT_ERRORS = (KeyError, ValueError, FileNotFoundError, UnsafeCheckpointError,
                CorruptCheckpointError, CheckpointMismatchError)


def _parser(doc: str) -> argparse.ArgumentParser:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='model config file')
    parser.add_argument(
        'checkpoint', help='checkpoint file ("none": initial weights)')
    parser.add_argument(
        'images', nargs='*',
        help='image files or folders (images in class sub-folders are '
        'labelled with the sub-folder name)')
    parser.add_argument(
        '--dataset', choices=['built-in'],
        help='use the built-in MNIST5k digits (with labels) instead of '
        'IMAGES')
    parser.add_argument(
        '--split', default='val', choices=['train', 'val', 'test'],
        help='split of the built-in data (default: val)')
    parser.add_argument(
        '--max-images', type=int, help='look at no more than this many '
        'images (the built-in data keeps every class equally)')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--device', default='cpu', help='e.g. cpu, cuda:0')
    parser.add_argument(
        '--batch-size', type=int, default=32, help='images per forward pass')
    parser.add_argument('--title', default='', help='figure title prefix')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, as in tools/train.py')
    return parser


def _images(args, parser):
    from .inputs import builtin_images, load_images
    if args.dataset and args.images:
        parser.error('give IMAGES or --dataset built-in, not both')
    if not args.dataset and not args.images:
        parser.error('give IMAGES or --dataset built-in')
    if args.dataset == 'built-in':
        return builtin_images(args.split, args.max_images)
    return load_images(args.images, args.max_images)


def _model(args):
    from .inputs import load_model
    ckpt = None if args.checkpoint.lower() == 'none' else args.checkpoint
    return load_model(args.config, ckpt, args.device, args.cfg_options)


def _meta(args, images):
    return dict(
        config=osp.basename(args.config),
        checkpoint=osp.basename(args.checkpoint),
        images='built-in MNIST5k ' + args.split
        if args.dataset else f'{len(images)} image files')


def _check_out(out: str, name: str):
    """Before any work, and creating nothing: an ``--out`` that is a file,
    or holds a folder where ``name`` goes, is an error (the analysis checks
    every output file again, and creates ``--out``)."""
    from mmsk.utils.io import check_output_path
    if osp.lexists(out):
        check_output_path(osp.join(out, name), make_dirs=False)


def _run(main, argv):
    try:
        return main(argv)
    except INPUT_ERRORS as e:
        print(f'error: {error_message(e)}', file=sys.stderr)
        return 1


def sk_attention_main(argv: Optional[Sequence[str]] = None) -> int:
    from . import sk_attention
    from .inputs import check_device, check_scales
    parser = _parser(sk_attention.__doc__)
    parser.add_argument(
        '--scales', nargs='+', type=float, default=[1.0, 1.5, 2.0],
        help='object scales (center crop 1/scale, resize back); default '
        '1.0 1.5 2.0')
    parser.add_argument(
        '--unit', help='SK unit for the per-channel figures: index or '
        'module name (default: a quarter of the way through)')

    def main(argv):
        args = parser.parse_args(argv)
        _check_out(args.out, 'sk_attention.json')
        check_device(args.device)
        check_scales(args.scales)
        images = _images(args, parser)
        model = _model(args)
        result = sk_attention.analyze(
            model, images, args.out, scales=args.scales, unit=args.unit,
            device=args.device, batch_size=args.batch_size, title=args.title,
            meta=_meta(args, images))
        for u in result['units']:
            diffs = ', '.join(
                f'{s:g}x {d:+.4f}'
                for s, d in zip(result['scales'], u['mean_difference']))
            print(f'{u["name"]}: mean attention difference {diffs}')
        print('wrote ' + ', '.join(result['files']))
        return 0

    return _run(main, argv)


def se_weights_main(argv: Optional[Sequence[str]] = None) -> int:
    from . import se_weights
    from .inputs import check_device
    parser = _parser(se_weights.__doc__)
    parser.add_argument(
        '--blocks', nargs='+', help='SE blocks to show: indices or module '
        'names (default: all)')

    def main(argv):
        args = parser.parse_args(argv)
        _check_out(args.out, 'se_weights.json')
        check_device(args.device)
        images = _images(args, parser)
        model = _model(args)
        result = se_weights.analyze(
            model, images, args.out, blocks=args.blocks, device=args.device,
            batch_size=args.batch_size, title=args.title,
            meta=_meta(args, images))
        for b in result['blocks']:
            extra = (f', across-class std {b["across_class_std"]:.4f}, '
                     f'ratio {b["ratio"]:.3f}'
                     if 'across_class_std' in b else '')
            print(f'{b["name"]}: mean excitation '
                  f'{b["mean_excitation"]:.4f}{extra}')
        print('wrote ' + ', '.join(result['files']))
        return 0

    return _run(main, argv)


TOOLS = {'sk-attention': sk_attention_main, 'se-weights': se_weights_main}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m mmsk.visualization.cli {sk-attention,se-weights} ...``:
    the two tools of ``tools/visualization/`` by name."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in TOOLS:
        given = f'unknown tool {argv[0]!r}; ' if argv and not argv[
            0].startswith('-') else ''
        print(f'usage: python -m mmsk.visualization.cli '
              f'{{{",".join(TOOLS)}}} ARGS (--help after the tool name)\n'
              f'error: {given}name the tool first', file=sys.stderr)
        return 2
    return TOOLS[argv[0]](argv[1:])


if __name__ == '__main__':
    sys.exit(main())
