"""Argument checks that name the offending option in their error."""
from numbers import Integral, Real
from typing import Any, Iterable, Sequence


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
