from .attention import ChannelAttention, SEAttention, reduced_channels
from .config import (fast_path_enabled, fast_path_set_to, reference_forward,
                     set_fast_path)
from .res2 import Res2Conv
from .selective_kernel import (SK_FORMS, SKAttention, SKConv,
                               attention_weights, sk_form)

__all__ = [
    'ChannelAttention', 'SEAttention', 'reduced_channels', 'Res2Conv',
    'SK_FORMS', 'SKAttention', 'SKConv', 'attention_weights', 'sk_form',
    'fast_path_enabled', 'fast_path_set_to', 'reference_forward',
    'set_fast_path'
]
