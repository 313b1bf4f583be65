from .timm import (TIMM_MODELS, classifier_config, convert_checkpoint,
                   convert_state_dict, supported_models)

__all__ = [
    'TIMM_MODELS', 'classifier_config', 'convert_checkpoint',
    'convert_state_dict', 'supported_models'
]
