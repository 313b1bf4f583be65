"""The command line shared by mmsk's weight converters (``tools/
model_converters/*_to_mmsk.py``): ``NAME SRC DST`` or ``--list``; a bad name,
a checkpoint that does not fit, an unsafe / corrupt file, or a DST that is
SRC itself or a folder ends with ``error: ...`` on stderr and exit code 1.
DST is written atomically and its missing parent folders are created
(:mod:`mmsk.utils.io`)."""
import argparse
import os
import sys
from typing import Callable, Iterable, Optional, Sequence

from mmsk.checkpoint import CorruptCheckpointError, UnsafeCheckpointError
from mmsk.utils import error_message

#: What a converter raises for bad input (never a traceback for these).
INPUT_ERRORS = (KeyError, ValueError, FileNotFoundError, UnsafeCheckpointError,
                CorruptCheckpointError)


def converter_main(doc: str,
                   source: str,
                   convert: Callable[[str, str, str], object],
                   supported: Callable[[], Iterable[str]],
                   argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('name', nargs='?', help=f'{source} model name')
    parser.add_argument('src', nargs='?', help=f'{source} weights')
    parser.add_argument('dst', nargs='?', help='output mmengine checkpoint')
    parser.add_argument(
        '--list', action='store_true', help='list the supported models')
    args = parser.parse_args(argv)
    if args.list:
        try:
            print('\n'.join(supported()))
            sys.stdout.flush()
        except BrokenPipeError:  # `--list | head`: the reader has enough
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if not (args.name and args.src and args.dst):
        parser.error('NAME, SRC and DST are required (or --list)')
    try:
        convert(args.name, args.src, args.dst)
    except INPUT_ERRORS as e:
        print(f'error: {error_message(e)}', file=sys.stderr)
        return 1
    return 0
