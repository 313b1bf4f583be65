"""Convert mmpretrain SEResNet/SEResNeXt/Res2Net weights to an mmsk checkpoint.

    python tools/model_converters/mmpretrain_to_mmsk.py NAME SRC DST
    python tools/model_converters/mmpretrain_to_mmsk.py --list

SRC is an mmpretrain ImageClassifier checkpoint (``state_dict`` with
``backbone.*`` and ``head.fc.*``, or a bare state dict), read with
``weights_only=True``. NAME picks the architecture (``--list``), e.g.
``seresnet50`` or ``res2net50-w26-s4``. DST is an mmengine checkpoint whose
``meta['cfg']`` holds the mmsk classifier config as text:

    from mmengine.config import Config
    from mmpretrain.apis import init_model
    ckpt = torch.load(DST, weights_only=True)
    model = init_model(Config.fromstring(ckpt['meta']['cfg'], '.py'), DST)
"""
import argparse
import sys

from mmsk.checkpoint import CorruptCheckpointError, UnsafeCheckpointError
from mmsk.converters.mmpretrain import convert_checkpoint, supported_models


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('name', nargs='?', help='model name (see --list)')
    parser.add_argument('src', nargs='?', help='mmpretrain weights')
    parser.add_argument('dst', nargs='?', help='output mmengine checkpoint')
    parser.add_argument(
        '--list', action='store_true', help='list the supported models')
    args = parser.parse_args(argv)
    if not args.list and not (args.name and args.src and args.dst):
        parser.error('NAME, SRC and DST are required (or --list)')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.list:
        print('\n'.join(supported_models()))
        return 0
    try:
        convert_checkpoint(args.name, args.src, args.dst)
    except (KeyError, ValueError, FileNotFoundError, UnsafeCheckpointError,
            CorruptCheckpointError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
