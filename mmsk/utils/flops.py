"""FLOP counting that sees the attention.

mmengine's ``FlopAnalyzer`` (behind ``get_model_complexity_info``, mmsk's
``tools/analysis_tools/complexity.py`` and mmpretrain's
``tools/analysis_tools/get_flops.py``) counts convolutions, linear layers,
norms, pooling and upsampling, and silently skips element-wise ops. SE and SK
*are* element-wise ops around two tiny 1x1 convs, so their cost, and that of
Res2Net's split adds and every residual add, went uncounted.

:func:`register_flop_handles` (run by ``import mmsk``) adds handles to
mmengine's default table, so that every analyzer built afterwards, in any
tool, counts them too. The convention stays the papers' (one multiply-add =
one FLOP; activations such as ReLU are not counted), and each element-wise op
counts one FLOP per element it produces:

============================  ==========================================
op                            FLOPs
============================  ==========================================
``aten::sigmoid``             one per output element (SE gate, SK M=2)
``aten::softmax``             one per output element (SK select)
``aten::mul`` / ``mul_``      one per output element (the gating multiply)
``aten::add`` / ``add_``      one per output element (residual and Res2Net
                              adds, SK fuse)
``aten::sub``                 one per output element
``aten::lerp``                three per output element (``a + w * (b - a)``)
``aten::sum``                 input elements minus output elements (SK
                              fuse / weighted sum over the paths)
``aten::mean``                one per input element (the squeeze, as
                              mmengine counts ``adaptive_avg_pool2d``)
============================  ==========================================
"""
from typing import Any, List

#: ops :func:`register_flop_handles` adds to mmengine's default FLOP handles
ATTENTION_OPS = ('aten::sigmoid', 'aten::softmax', 'aten::mul', 'aten::mul_',
                 'aten::add', 'aten::add_', 'aten::sub', 'aten::lerp',
                 'aten::sum', 'aten::mean')


def _numel(value) -> int:
    from mmengine.analysis.jit_handles import get_shape
    from numpy import prod
    shape = get_shape(value)
    return int(prod(shape)) if shape is not None else 0


def _per_output(scale: int):

    def handle(inputs: List[Any], outputs: List[Any]) -> int:
        return scale * _numel(outputs[0])

    return handle


def _reduction(inputs: List[Any], outputs: List[Any]) -> int:
    """``aten::sum``: one add per input element that is not the first of
    its output element."""
    return max(_numel(inputs[0]) - _numel(outputs[0]), 0)


def _per_input(inputs: List[Any], outputs: List[Any]) -> int:
    return _numel(inputs[0])


def flop_handles() -> dict:
    """``{op: handle}`` of :data:`ATTENTION_OPS`."""
    one = _per_output(1)
    handles = {op: one for op in ATTENTION_OPS}
    handles.update({
        'aten::lerp': _per_output(3),
        'aten::sum': _reduction,
        'aten::mean': _per_input
    })
    return handles


def register_flop_handles() -> None:
    """Add :func:`flop_handles` to mmengine's default FLOP table (idempotent;
    a handle mmengine already has is kept)."""
    from mmengine.analysis import complexity_analysis
    table = complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS
    for op, handle in flop_handles().items():
        table.setdefault(op, handle)
