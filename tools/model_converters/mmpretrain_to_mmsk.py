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
import sys

from mmsk.converters.cli import converter_main
from mmsk.converters.mmpretrain import convert_checkpoint, supported_models


def main(argv=None):
    return converter_main(__doc__, 'mmpretrain', convert_checkpoint,
                          supported_models, argv)


if __name__ == '__main__':
    sys.exit(main())
