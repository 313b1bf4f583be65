from .validation import (check_choice, check_out_indices, check_positive_int,
                         check_sequence, check_unit_interval)

__all__ = [
    'check_choice', 'check_out_indices', 'check_positive_int',
    'check_sequence', 'check_unit_interval'
]
