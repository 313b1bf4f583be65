"""Deployment: ONNX export with an onnxruntime check (:mod:`.onnx`), and
deploy configs for OpenMMLab's mmdeploy (:mod:`.mmdeploy_cfgs`)."""
from .onnx import (DEFAULT_OPSETS, build_classifier, check_inputs,
                   check_opset, export_onnx, load_checkpoint_strict,
                   opset_range, real_inputs, verify_onnx)

__all__ = [
    'DEFAULT_OPSETS', 'build_classifier', 'check_inputs', 'check_opset',
    'export_onnx', 'load_checkpoint_strict', 'opset_range', 'real_inputs',
    'verify_onnx'
]
