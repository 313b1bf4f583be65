from .validation import (BACKBONE_OPTIONS, OptionTypeError, accepted_kwargs,
                         check_act_cfg, check_bool, check_cfg, check_channels,
                         check_choice, check_conv_cfg, check_dict,
                         check_init_cfg, check_input, check_int,
                         check_non_negative_int, check_norm_cfg, check_option,
                         check_options, check_out_indices, check_positive_int,
                         check_positive_number, check_sequence, check_sync_bn,
                         check_unit_interval, check_unknown_keys,
                         error_message, forward_batch_checked, instance_of,
                         int_in, number_in, one_of, optional, out_indices_in,
                         registered_class, seq_of)

__all__ = [
    'BACKBONE_OPTIONS', 'OptionTypeError', 'accepted_kwargs', 'check_act_cfg',
    'check_bool', 'check_cfg', 'check_channels', 'check_choice',
    'check_conv_cfg', 'check_dict', 'check_init_cfg', 'check_input',
    'check_int', 'check_non_negative_int', 'check_norm_cfg', 'check_option',
    'check_options', 'check_out_indices', 'check_positive_int',
    'check_positive_number', 'check_sequence', 'check_sync_bn',
    'check_unit_interval', 'check_unknown_keys', 'error_message',
    'forward_batch_checked', 'instance_of', 'int_in', 'number_in', 'one_of',
    'optional', 'out_indices_in', 'registered_class', 'seq_of'
]
