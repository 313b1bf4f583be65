"""Convert mmpretrain SEResNet/SEResNeXt/Res2Net weights to an mmsk checkpoint.

    python tools/model_converters/mmpretrain_to_mmsk.py NAME SRC DST
    python tools/model_converters/mmpretrain_to_mmsk.py --list

SRC is an mmpretrain ImageClassifier checkpoint (``state_dict`` with
``backbone.*`` and ``head.fc.*``, or a bare state dict), read with
``weights_only=True``. NAME picks the architecture (``--list``), e.g.
``seresnet50`` or ``res2net50-w26-s4``. DST is an mmengine checkpoint whose
``meta['cfg']`` holds the mmsk classifier config as text:

    from mmpretrain.apis import init_model
    from mmsk.checkpoint import config_from_checkpoint
    model = init_model(config_from_checkpoint(DST), DST)

``config_from_checkpoint`` reads the text as data; ``Config.fromstring``
would run it, and a checkpoint from elsewhere could hold code there.
"""
import sys

from mmsk.converters.cli import converter_main
from mmsk.converters.mmpretrain import convert_checkpoint, supported_models


def main(argv=None):
    return converter_main(__doc__, 'mmpretrain', convert_checkpoint,
                          supported_models, argv)


if __name__ == '__main__':
    sys.exit(main())
