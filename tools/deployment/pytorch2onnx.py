"""Export an mmsk classifier to ONNX and check it with onnxruntime.

    python tools/deployment/pytorch2onnx.py CONFIG CHECKPOINT --shape H W \\
        [--dynamic] [--deploy] [--features] [--opset N] \\
        [--exporter dynamo|torchscript] [--out FILE] [--tolerance 1e-4] \\
        [--cfg-options KEY=VALUE ...]

Compares the ONNX file with PyTorch on random inputs and on real digits of the
built-in MNIST5k data set, prints the max abs diff, and exits with 1 when it
is over the tolerance. ``--deploy`` folds the backbone first
(``model.backbone.switch_to_deploy()``).

The checkpoint is loaded strictly (one that does not fit the config's model
is refused, naming the keys); the ONNX file is written atomically, never over
the checkpoint or the config, its missing folders created. Bad input (a
missing, corrupt, unsafe or unfitting checkpoint, a bad --out, --opset or
--tolerance) ends with ``error: ...`` and exit code 1.
"""
import sys

from mmsk.deploy.cli import main

if __name__ == '__main__':
    sys.exit(main())
