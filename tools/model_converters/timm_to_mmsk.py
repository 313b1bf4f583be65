"""Convert timm weights to an mmsk (mmpretrain) classifier checkpoint.

    python tools/model_converters/timm_to_mmsk.py TIMM_NAME SRC DST
    python tools/model_converters/timm_to_mmsk.py --list

TIMM_NAME may carry timm's pretrained tag (``skresnet18.ra_in1k``). SRC is
a timm state dict (``torch.save(model.state_dict(), SRC)``, or a checkpoint
with ``state_dict``/``model``), read with ``weights_only=True``, or the
``.safetensors`` file that timm downloads; keys of a DDP-wrapped or compiled
model (``module.``, ``_orig_mod.``) are taken without the prefix. Weights
without a classifier (timm's ``num_classes=0``) give the backbone's keys
alone (``meta['headless']``): load them with ``init_cfg=dict(type=
'Pretrained', checkpoint=DST, prefix='backbone.')``.
DST is an mmengine checkpoint whose ``meta['cfg']`` holds the classifier
config as text:

    from mmpretrain.apis import init_model
    from mmsk.checkpoint import config_from_checkpoint
    model = init_model(config_from_checkpoint(DST), DST)

``config_from_checkpoint`` reads the text as data; ``Config.fromstring``
would run it, and a checkpoint from elsewhere could hold code there.
"""
import sys

from mmsk.converters.cli import converter_main
from mmsk.converters.timm import convert_checkpoint, supported_models


def main(argv=None):
    return converter_main(__doc__, 'timm', convert_checkpoint,
                          supported_models, argv)


if __name__ == '__main__':
    sys.exit(main())
