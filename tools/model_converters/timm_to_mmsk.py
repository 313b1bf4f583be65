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
import sys

from mmsk.converters.cli import converter_main
from mmsk.converters.timm import convert_checkpoint, supported_models


def main(argv=None):
    return converter_main(__doc__, 'timm', convert_checkpoint,
                          supported_models, argv)


if __name__ == '__main__':
    sys.exit(main())
