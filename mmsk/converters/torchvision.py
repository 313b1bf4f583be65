"""torchvision -> mmsk weight conversion (``mobilenet_v2``).

:func:`convert_checkpoint` renames the weights of ``torchvision.models.
mobilenet_v2`` (:func:`~mmsk.converters.mobilenet.
convert_torchvision_mobilenet_v2`) and writes an mmengine checkpoint that
carries its classifier config, as :mod:`mmsk.converters.timm` does.
"""
from typing import Callable, Optional

from mmsk.utils.io import check_output_path
from .mobilenet import convert_torchvision_mobilenet_v2
from .timm import backbone_classifier_config, read_state_dict, save_converted

#: torchvision model name -> the mmsk backbone config with its structure
#: (torchvision ships weights for ``width_mult=1.0`` only)
TORCHVISION_MODELS = {
    'mobilenet_v2': dict(type='InvertedResidualNet'),
}


def supported_models():
    return sorted(TORCHVISION_MODELS)


def _entry(model_name: str) -> dict:
    if model_name not in TORCHVISION_MODELS:
        raise KeyError(f'torchvision model {model_name!r} is not supported; '
                       f'supported: {supported_models()}')
    return TORCHVISION_MODELS[model_name]


def convert_checkpoint(model_name: str,
                       src: str,
                       dst: str,
                       progress: Optional[Callable[[str], None]] = print):
    """Convert the torchvision weights in ``src`` (``torch.save(model.
    state_dict(), SRC)`` or the file torchvision downloads; read with
    ``weights_only=True``) to an mmengine checkpoint ``dst``."""
    backbone = _entry(model_name)
    check_output_path(dst, inputs=[src], create=False)
    state_dict = read_state_dict(src, 'classifier.1.weight')
    converted = convert_torchvision_mobilenet_v2(state_dict)
    num_classes = converted['head.fc.weight'].shape[0] \
        if 'head.fc.weight' in converted else 1000
    cfg_text = backbone_classifier_config(backbone, num_classes,
                                          f"torchvision's {model_name!r}")
    save_converted(cfg_text, converted, dst, model_name,
                   f'torchvision/{model_name}', src=src)
    if progress:
        progress(f'converted {len(converted)} tensors of torchvision '
                 f'{model_name!r} -> {dst}')
    return dst
