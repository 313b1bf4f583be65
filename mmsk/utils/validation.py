"""Argument checks that name the offending option in their error."""
from numbers import Integral, Real
from typing import Any, Iterable, Sequence, Tuple


def check_positive_int(name: str, value: Any, allow_zero: bool = False) -> int:
    ok = isinstance(value, Integral) and not isinstance(value, bool) and (
        value >= 0 if allow_zero else value > 0)
    if not ok:
        want = 'a non-negative' if allow_zero else 'a positive'
        raise ValueError(f'{name} must be {want} integer, got {value!r}')
    return int(value)


def check_choice(name: str, value: Any, choices: Iterable) -> Any:
    choices = list(choices)
    if value not in choices:
        raise ValueError(f'{name} must be one of {choices}, got {value!r}')
    return value


def check_sequence(name: str, value: Any, length: int) -> Sequence:
    if not isinstance(value, (list, tuple)) or len(value) != length:
        raise ValueError(f'{name} must be a list/tuple of length {length}, '
                         f'got {value!r}')
    return value


def check_unit_interval(name: str, value: Any) -> float:
    if not isinstance(value, Real) or isinstance(value, bool) \
            or not 0 <= value < 1:
        raise ValueError(f'{name} must be a float in [0, 1), got {value!r}')
    return float(value)


def check_out_indices(value: Any, num_outputs: int,
                      what: str = 'stages') -> Tuple[int, ...]:
    """``out_indices`` as sorted, distinct, non-negative indices.

    An int or a non-empty sequence of ints in ``[-num_outputs,
    num_outputs)``; negative ones count from the last output, as in a Python
    sequence. ``what`` names the outputs in the error message.
    """
    if isinstance(value, Integral) and not isinstance(value, bool):
        value = (value, )
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f'out_indices must be an int or a non-empty '
                         f'sequence, got {value!r}')
    normalised = set()
    for index in value:
        if not isinstance(index, Integral) or isinstance(index, bool) \
                or not -num_outputs <= index < num_outputs:
            raise ValueError(f'out_indices entry {index!r} is out of range '
                             f'for {num_outputs} {what} '
                             f'([{-num_outputs}, {num_outputs - 1}])')
        normalised.add(int(index) % num_outputs)
    return tuple(sorted(normalised))
