"""Look inside mmsk models: SK attention versus object scale
(:mod:`.sk_attention`), SE excitation per class (:mod:`.se_weights`)."""
from . import se_weights, sk_attention
from .inputs import ImageSet, builtin_images, enlarge, load_images, load_model

__all__ = [
    'ImageSet', 'builtin_images', 'enlarge', 'load_images', 'load_model',
    'se_weights', 'sk_attention'
]
