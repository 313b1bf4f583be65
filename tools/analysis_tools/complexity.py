"""Params / FLOPs of mmsk models next to the papers' figures.

    python tools/analysis_tools/complexity.py [--names NAME ...] [--out F.md]

NAME: a short key (sknet50, sknet101, sknet50-pytorchinsight, senet50,
seresnext50, res2net50, res2net101, mobilenetv2) or the table's name.

Prints a markdown table (deviation in %), optionally writes it to a file, and
exits with 1 when a figure is off by more than its tolerance: --tolerance
percent for every figure when given, else each figure's own
(mmsk.utils.complexity.tolerance: 2%, Res2Net-50's FLOPs 2.5%).
"""
import argparse
import sys

from mmengine.utils import ProgressBar

from mmsk.utils import check_option, number_in
from mmsk.utils.complexity import (PAPER_FIGURES, PAPER_KEYS, paper_name,
                                   paper_table, tolerance)
from mmsk.utils.io import OutputPathError, atomic_write_text, check_output_path


def _fmt(value, unit):
    return '-' if value is None else f'{value / unit:.2f}'


def _dev(got, ref):
    return '-' if got is None or ref is None else \
        f'{100 * (got - ref) / ref:+.1f}%'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--names', nargs='+', metavar='NAME',
        help=f'models to count (default: all): {", ".join(PAPER_KEYS)}, '
        "or the table's names")
    parser.add_argument('--out', help='also write the table to this file')
    parser.add_argument(
        '--tolerance', type=float, default=None,
        help='allowed deviation in %% for every figure (default: each '
        "figure's own, 2%% but 2.5%% for Res2Net-50's FLOPs)")
    args = parser.parse_args(argv)
    try:
        try:
            names = [paper_name(n) for n in args.names or PAPER_FIGURES]
        except ValueError as e:
            raise ValueError(f'--names: {e}') from None
        if len(set(names)) < len(names):
            raise ValueError(f'--names lists a model twice: {args.names}')
        if args.tolerance is not None:
            check_option('complexity', '--tolerance', args.tolerance,
                         number_in(0, None))
    except ValueError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    if args.out:
        try:  # before the counting; its folders are made when writing
            check_output_path(args.out, create=False)
        except OutputPathError as e:
            print(f'error: {e}', file=sys.stderr)
            return 1
    bar = ProgressBar(len(names))
    rows = paper_table(names, progress=lambda _: bar.update())
    lines = [
        '| model | params (M) | paper (M) | dev | FLOPs (G) | paper (G) | '
        'dev | source |', '|---|---|---|---|---|---|---|---|'
    ]
    bad = []
    for name, params, p_params, flops, p_flops, source in rows:
        lines.append(f'| {name} | {_fmt(params, 1e6)} | {_fmt(p_params, 1e6)}'
                     f' | {_dev(params, p_params)} | {_fmt(flops, 1e9)} | '
                     f'{_fmt(p_flops, 1e9)} | {_dev(flops, p_flops)} | '
                     f'{source} |')
        for kind, got, ref in (('params', params, p_params),
                               ('flops', flops, p_flops)):
            allowed = tolerance(name, kind) if args.tolerance is None \
                else args.tolerance
            if got is not None and ref is not None and \
                    abs(got - ref) / ref * 100 > allowed:
                bad.append(f'{name} ({kind}, over {allowed:g}%)')
    table = '\n'.join(lines)
    print('\n' + table)
    if args.out:
        try:
            atomic_write_text(table + '\n', args.out)
        except (OSError, ValueError) as e:  # e.g. made unwritable since
            print(f'error: cannot write {args.out}: {e}', file=sys.stderr)
            return 1
    if bad:
        print(f'off by more than the tolerance: {sorted(set(bad))}',
              file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
