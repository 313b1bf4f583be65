"""Convert timm weights to an mmsk (mmpretrain) classifier checkpoint.

    python tools/model_converters/timm_to_mmsk.py TIMM_NAME SRC DST
    python tools/model_converters/timm_to_mmsk.py --list

SRC is a timm state dict (``torch.save(model.state_dict(), SRC)``, or a
checkpoint with ``state_dict``/``model``), read with ``weights_only=True``.
DST is an mmengine checkpoint whose ``meta['cfg']`` holds the classifier
config as text:

    from mmengine.config import Config
    from mmpretrain.apis import init_model
    ckpt = torch.load(DST, weights_only=True)
    model = init_model(Config.fromstring(ckpt['meta']['cfg'], '.py'), DST)
"""
import argparse
import sys

from mmsk.converters import convert_checkpoint, supported_models


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('timm_name', nargs='?', help='timm model name')
    parser.add_argument('src', nargs='?', help='timm weights')
    parser.add_argument('dst', nargs='?', help='output mmengine checkpoint')
    parser.add_argument(
        '--list', action='store_true', help='list the supported timm models')
    args = parser.parse_args(argv)
    if not args.list and not (args.timm_name and args.src and args.dst):
        parser.error('TIMM_NAME, SRC and DST are required (or --list)')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.list:
        print('\n'.join(supported_models()))
        return 0
    try:
        convert_checkpoint(args.timm_name, args.src, args.dst)
    except (KeyError, ValueError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
