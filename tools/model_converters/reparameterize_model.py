"""mmpretrain's tools/model_converters/reparameterize_model.py (same
arguments), with mmsk's models registered: folds an mmsk classifier
checkpoint for inference (``model.backbone.switch_to_deploy()``).

    python tools/model_converters/reparameterize_model.py CONFIG CKPT OUT.pth

Load the result with ``--cfg-options model.backbone.deploy=True``.
"""
from mmsk.utils.tools import run_mmpretrain_tool

if __name__ == '__main__':
    run_mmpretrain_tool('model_converters/reparameterize_model.py')
