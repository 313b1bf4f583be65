"""Throughput (img/s) and peak memory of mmsk models next to timm,
mmpretrain and torchvision, same weights where a converter exists.

    python tools/analysis_tools/benchmark.py [--models sknet50 senet50 ...]
        [--size 160 224] [--batch 16] [--modes infer train]
        [--layout best] [--peer-layout best] [--amp bf16] [--compile]
        [--deploy] [--with-cp] [--device cpu] [--threads 2]
        [--warmup 2] [--repeats 5] [--iters 1] [--out-dir benchmarks]
        [--resume benchmarks/benchmark_....json]
    python tools/analysis_tools/benchmark.py --report RECORD.json [--plot]

Writes benchmarks/benchmark_*.md and .json (machine, versions, command),
after every comparison: an interrupted run keeps what it measured, and
``--resume`` with the same options continues it.
The method (interleaving, medians, how peak memory is measured) is in the
docstring of mmsk/benchmark.py and in benchmarks/README.md.
"""
import argparse
import os.path as osp
import shlex
import sys

from mmsk.benchmark import (AMP_CHOICES, COMPARISONS, DEVICES,
                            LAYOUT_CHOICES, MODES, Options, ParityError,
                            check_one_image_trains, default_stem,
                            load_record, profile_model, record_paths,
                            report_record, run_benchmark, write_record)
from mmsk.utils import check_positive_int


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='comparisons: ' + '; '.join(
            f'{name}: {mine} vs {", ".join(peers)}'
            for name, (mine, peers) in COMPARISONS.items()))
    parser.add_argument('--models', nargs='+', default=list(COMPARISONS),
                        metavar='NAME', help='comparisons to run (default: '
                        'all)')
    parser.add_argument('--size', nargs='+', type=int, default=[224],
                        help='input sizes (square)')
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--modes', nargs='+', default=list(MODES),
                        choices=MODES)
    parser.add_argument('--layout', default='best', choices=LAYOUT_CHOICES,
                        help="mmsk's memory format ('best': time both, "
                        'report the faster)')
    parser.add_argument('--peer-layout', choices=LAYOUT_CHOICES,
                        help="the peers' memory format (default: --layout)")
    parser.add_argument('--amp', default='none', choices=AMP_CHOICES,
                        help='autocast dtype')
    parser.add_argument('--compile', action='store_true',
                        help='also time every model under torch.compile '
                        '(inductor): compiled rows against compiled peers, '
                        'and a compiled / eager table')
    parser.add_argument('--deploy', action='store_true',
                        help='also time mmsk in deploy form (inference)')
    parser.add_argument('--with-cp', action='store_true',
                        help="also train mmsk with with_cp=True (memory)")
    parser.add_argument('--device', default='cpu', choices=DEVICES)
    parser.add_argument('--threads', type=int,
                        help='torch.set_num_threads (default: torch\'s)')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--iters', type=int, default=1,
                        help='steps per timing (use more on a GPU)')
    parser.add_argument('--no-memory', action='store_true',
                        help='skip the peak-memory runs')
    parser.add_argument('--out-dir',
                        help='where the .md/.json go (default: benchmarks, '
                        "or with --resume the record's folder)")
    parser.add_argument('--name', help='file stem of the .md/.json (a '
                        'file name: the folder is --out-dir)')
    parser.add_argument('--plot', action='store_true',
                        help='also draw the speed ratios (mmsk / peer) as '
                        'a .png beside the .md')
    parser.add_argument(
        '--resume', metavar='JSON',
        help='continue the run that wrote this .json (partial after a crash '
        'or an interrupt), with the same options: the comparisons it holds '
        'are kept, the rest are run, and the record is rewritten in place '
        '(unless --out-dir / --name say otherwise)')
    parser.add_argument(
        '--report', metavar='JSON',
        help='instead of timing, write the report of a stored record again '
        '(its .md, with --plot its .png) with this version\'s tables, e.g. '
        'the Targets table; beside the .json unless --out-dir / --name say '
        'otherwise')
    parser.add_argument(
        '--profile', metavar='MODEL',
        help='instead of timing, profile one model (a key of the '
        'comparisons, e.g. sknet50 or timm/skresnext50_32x4d) on the CPU at '
        'one --size and --layout (nchw or channels_last; best: '
        'channels_last) in one of --modes (default: infer); with '
        '--reference, mmsk\'s plain reference forwards')
    parser.add_argument('--reference', action='store_true',
                        help='with --profile: the reference forwards')
    parser.add_argument('--by-shape', action='store_true',
                        help='with --profile: a row per operator and input '
                        'shapes')
    parser.add_argument('--by-conv', action='store_true',
                        help='with --profile: also the convolutions by kind '
                        '(kernel, groups, stride, dilation): time, GFLOP '
                        'and the GFLOP/s each kind reaches')
    parser.add_argument('--steps', type=int,
                        help='with --profile: how many steps to record '
                        '(default 3; --by-conv takes each call\'s median '
                        'over them)')
    parser.add_argument('--rows', type=int, default=12,
                        help='with --profile: how many rows (default 12)')
    return parser


def parse_args(argv=None):
    return build_parser().parse_args(argv)


#: the options that go with --report
REPORT_OPTIONS = ('report', 'out_dir', 'name', 'plot')
#: what --profile uses (the first --size and --modes only)
PROFILE_OPTIONS = ('profile', 'size', 'batch', 'modes', 'layout', 'amp',
                   'compile', 'device', 'threads', 'warmup', 'reference',
                   'by_shape', 'by_conv', 'steps', 'rows')


def _given_options(argv: list) -> dict:
    """The options given on the command line (also those given their
    default value), ``{dest: flag}``."""
    parser = build_parser()
    flags = {}
    for action in parser._actions:  # no default: only what was given
        action.default = argparse.SUPPRESS
        if action.option_strings:
            flags[action.dest] = action.option_strings[-1]
    return {dest: flags[dest] for dest in vars(parser.parse_args(argv))}


TOOL = osp.relpath(osp.abspath(__file__))


def _kept(saved: list, argv: list) -> str:
    if not saved:
        return 'no comparison was complete, nothing was written'
    again = []
    for arg in argv:  # the command again, without an earlier --resume
        if again[-1:] == ['--resume']:
            again.pop()
        elif not arg.startswith('--resume='):
            again.append(arg)
    command = ' '.join(shlex.quote(a) for a in ['python', TOOL] + again +
                       ['--resume', saved[1]])
    files = ' and '.join(p for p in saved if osp.exists(p))
    return (f'the comparisons measured so far are in {files}; continue '
            f'with: {command}')


def main(argv=None):
    if argv is None:
        argv = sys.argv[1:]
    args = parse_args(argv)
    opts = Options(
        comparisons=args.models,
        sizes=args.size,
        batch=args.batch,
        modes=args.modes,
        layout=args.layout,
        peer_layout=args.peer_layout,
        amp=args.amp,
        compile=args.compile,
        deploy=args.deploy,
        with_cp=args.with_cp,
        device=args.device,
        threads=args.threads,
        warmup=args.warmup,
        repeats=args.repeats,
        iters=args.iters,
        memory=not args.no_memory)
    command = ' '.join(shlex.quote(a) for a in ['python', TOOL] + list(argv))
    saved = []  # the .md and .json written so far
    resumed = []  # the record that --resume continues, until then
    try:
        # a stored record's report: no timing option applies
        if args.report:
            extra = [flag for dest, flag in _given_options(argv).items()
                     if dest not in REPORT_OPTIONS]
            if extra:
                raise ValueError(
                    '--report writes the report of a stored record and '
                    'takes only --out-dir, --name and --plot; got '
                    f'{", ".join(extra)}')
            md, js = report_record(args.report, args.out_dir, args.name,
                                   args.plot)
            print(f'wrote {md}' + (
                f" and {osp.splitext(md)[0] + '.png'}" if args.plot else '') +
                f' (and the report in {js})')
            return 0
        opts.validate()
        if (args.reference or args.by_shape or args.by_conv) and \
                not args.profile:
            raise ValueError('--reference, --by-shape and --by-conv go '
                             'with --profile')
        if args.steps is not None and not args.profile:
            raise ValueError('--steps goes with --profile (the timing runs '
                             'take --repeats and --iters)')
        check_positive_int('steps', 3 if args.steps is None else args.steps)
        check_positive_int('rows', args.rows)
        if args.profile:
            given = _given_options(argv)
            extra = [flag for dest, flag in given.items()
                     if dest not in PROFILE_OPTIONS]
            if extra:
                raise ValueError(
                    '--profile profiles one model and writes no record; it '
                    'takes none of ' + ', '.join(extra))
            for dest, values in (('size', opts.sizes),
                                 ('modes', opts.modes)):
                if dest in given and len(values) > 1:
                    raise ValueError(f'--profile takes one {given[dest]} '
                                     f'value, got {len(values)}')
            models = opts.all_models()
            key = args.profile if args.profile in models else \
                COMPARISONS.get(args.profile, (args.profile, ))[0]
            if key not in models:
                raise ValueError(f'profile: unknown model {args.profile!r}; '
                                 f'known: {sorted(models)}')
            if opts.modes[0] == 'train':
                check_one_image_trains(key, models[key], opts.sizes[0], opts)
            print(profile_model(
                models[key], opts.sizes[0], opts, mode=opts.modes[0],
                layout=opts.layout if opts.layout != 'best' else
                'channels_last', reference=args.reference,
                steps=args.steps or 3, row_limit=args.rows,
                by_shape=args.by_shape,
                by_conv=args.by_conv))
            return 0
        previous = None
        out_dir, stem = args.out_dir or 'benchmarks', args.name
        if args.resume:
            previous = load_record(args.resume)
            # until a comparison is added, what is kept is that record
            resumed[:] = [osp.splitext(args.resume)[0] + '.md', args.resume]
            stem = stem or osp.splitext(osp.basename(args.resume))[0]
            out_dir = args.out_dir or osp.dirname(args.resume) or '.'
        stem = stem or default_stem(opts)
        # where the record goes, checked before the (long) timing
        record_paths(out_dir, stem, args.plot)

        def save(partial):
            saved[:] = write_record(partial, out_dir, stem, args.plot)
            print(f"saved {len(partial['done'])} comparison(s) so far to "
                  f'{saved[1]}', flush=True)

        record = run_benchmark(
            opts, command, progress=lambda msg: print(msg, flush=True),
            previous=previous, on_update=save)
        md, js = write_record(record, out_dir, stem, args.plot)
    except KeyboardInterrupt:
        print(f'interrupted: {_kept(saved or resumed, argv)}',
              file=sys.stderr)
        return 130
    except (ValueError, ParityError) as e:
        print(f'error: {e}', file=sys.stderr)
        if saved:
            print(_kept(saved, argv), file=sys.stderr)
        return 1
    except Exception:
        if saved:
            print(_kept(saved, argv), file=sys.stderr)
        raise
    print('\n' + record['markdown'])
    print(f'wrote {md} and {js}' +
          (f" and {osp.join(out_dir, stem + '.png')}" if args.plot else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
