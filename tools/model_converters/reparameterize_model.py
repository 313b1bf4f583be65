"""Fold an mmsk classifier checkpoint for inference
(``model.backbone.switch_to_deploy()``); the arguments of mmpretrain's
tools/model_converters/reparameterize_model.py.

    python tools/model_converters/reparameterize_model.py CONFIG CKPT OUT.pth

Unlike mmpretrain's tool, the checkpoint is loaded strictly (a checkpoint of
another model is refused, naming the keys, instead of folding random
weights), and OUT is written atomically and never over CKPT or CONFIG; bad
input ends with ``error: ...`` and exit code 1. Load the result with
``--cfg-options model.backbone.deploy=True``.
"""
import sys

from mmsk.deploy.cli import reparameterize_main

if __name__ == '__main__':
    sys.exit(reparameterize_main())
