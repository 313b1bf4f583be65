"""Convert torchvision weights to an mmsk (mmpretrain) classifier checkpoint.

    python tools/model_converters/torchvision_to_mmsk.py mobilenet_v2 SRC DST
    python tools/model_converters/torchvision_to_mmsk.py --list

SRC is a torchvision state dict (``torch.save(model.state_dict(), SRC)``,
or the ``mobilenet_v2-*.pth`` file torchvision downloads), read with
``weights_only=True``. DST is an mmengine checkpoint of
``InvertedResidualNet`` whose ``meta['cfg']`` holds the classifier config as
text:

    from mmpretrain.apis import init_model
    from mmsk.checkpoint import config_from_checkpoint
    model = init_model(config_from_checkpoint(DST), DST)
"""
import sys

from mmsk.converters.cli import converter_main
from mmsk.converters.torchvision import convert_checkpoint, supported_models


def main(argv=None):
    return converter_main(__doc__, 'torchvision', convert_checkpoint,
                          supported_models, argv)


if __name__ == '__main__':
    sys.exit(main())
