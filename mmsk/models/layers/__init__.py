from .attention import ChannelAttention, SEAttention, reduced_channels
from .res2 import Res2Conv
from .selective_kernel import SK_FORMS, SKAttention, SKConv, sk_form

__all__ = [
    'ChannelAttention', 'SEAttention', 'reduced_channels', 'Res2Conv',
    'SK_FORMS', 'SKAttention', 'SKConv', 'sk_form'
]
