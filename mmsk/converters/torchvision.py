"""torchvision -> mmsk weight conversion (``mobilenet_v2``).

:func:`convert_checkpoint` renames the weights of ``torchvision.models.
mobilenet_v2`` (:func:`~mmsk.converters.mobilenet.
convert_torchvision_mobilenet_v2`) and writes an mmengine checkpoint that
carries its classifier config, as :mod:`mmsk.converters.timm` does.
"""
from typing import Callable, Optional

from .mobilenet import convert_torchvision_mobilenet_v2
from .timm import convert_file, table_entry

#: torchvision model name -> the mmsk backbone config with its structure
#: (torchvision ships weights for ``width_mult=1.0`` only)
TORCHVISION_MODELS = {
    'mobilenet_v2': dict(type='InvertedResidualNet'),
}


def supported_models():
    return sorted(TORCHVISION_MODELS)


def convert_checkpoint(model_name: str,
                       src: str,
                       dst: str,
                       progress: Optional[Callable[[str], None]] = print):
    """Convert the torchvision weights in ``src`` (``torch.save(model.
    state_dict(), SRC)`` or the file torchvision downloads; read with
    ``weights_only=True``) to an mmengine checkpoint ``dst``."""
    backbone = table_entry(TORCHVISION_MODELS, 'torchvision', model_name)
    return convert_file('torchvision', model_name, backbone, src, dst,
                        'classifier.1.weight',
                        convert_torchvision_mobilenet_v2, progress)
