"""mmsk.benchmark and tools/analysis_tools/benchmark.py on tiny inputs: the
numbers are produced, positive and written; the same-weights check catches
a model that computes something else. (No timing is asserted.)"""
import copy
import json

import pytest
import torch

from conftest import ROOT, run_python

from mmsk import benchmark
from mmsk.benchmark import Options, ParityError

# one comparison with a converter (timm's SK-ResNet-18) and one peer
# without (plain ResNet-18: random weights of its own)
TINY = dict(
    models={'timm/resnet18': benchmark.timm_model('resnet18',
                                                  convert=False)},
    table={'tiny': ('mmsk/sknet18-timm', ('timm/skresnet18',
                                          'timm/resnet18'))})


def tiny_options(**kwargs):
    return Options(**dict(
        dict(comparisons=['tiny'], sizes=[32], batch=2, warmup=1,
             repeats=2, threads=1, memory=False), **TINY, **kwargs))


def test_default_table_names_known_models():
    opts = Options().validate()
    models = opts.all_models()
    for mine, peers in benchmark.COMPARISONS.values():
        assert models[mine]['source'] == 'mmsk'
        assert all(models[p]['source'] != 'mmsk' for p in peers)


@pytest.mark.parametrize('name', sorted(benchmark.COMPARISONS))
def test_every_default_pair_with_a_converter_has_the_same_weights(name):
    """Every comparison of the default table, each peer at full width (on
    32x32 images, to keep it short); ResNeXt-50 is the one peer of
    another architecture (SKNet-50's FLOPs reference), without weights in
    common."""
    opts = Options()
    models = opts.all_models()
    mine, peers = opts.all_comparisons()[name]
    mmsk = benchmark.build_model(models[mine])
    unconverted = set()
    for key in peers:
        peer = benchmark.build_model(models[key])
        diff = benchmark.check_same_weights(mmsk, models[key], peer, key,
                                            size=32)
        if diff is None:
            unconverted.add(key)
        else:
            assert diff <= 1e-4, key
    assert unconverted == ({'timm/resnext50_32x4d'} if name == 'sknet50'
                           else set())


def test_same_weights_check_catches_a_different_model():
    models = Options().all_models()
    # the paper SK unit is not timm's SK-ResNet-18: the weights do not fit
    paper = benchmark.build_model(
        dict(source='mmsk', backbone=dict(type='SKNet', depth=18)))
    peer = benchmark.build_model(models['timm/skresnet18'])
    with pytest.raises(ParityError, match='do not fit'):
        benchmark.check_same_weights(paper, models['timm/skresnet18'], peer,
                                     'paper vs timm')
    # the same keys and shapes, but another function: SiLU, not ReLU6
    silu = benchmark.build_model(
        dict(source='mmsk', backbone=dict(
            type='InvertedResidualNet', widen_factor=0.35,
            act_cfg=dict(type='SiLU'))))
    spec = dict(models['torchvision/mobilenet_v2'],
                kwargs=dict(width_mult=0.35))
    with pytest.raises(ParityError, match='logit difference'):
        benchmark.check_same_weights(silu, spec,
                                     benchmark.build_model(spec), 'silu')


def test_run_benchmark_both_layouts_both_modes_and_with_cp(tmp_path):
    opts = tiny_options(layout='best', peer_layout='nchw', with_cp=True)
    messages = []
    record = benchmark.run_benchmark(opts, 'the command', messages.append)
    assert any('repeat 2/2' in m for m in messages)
    rows = record['results']
    # mmsk in both layouts, with_cp (train only), two peers in NCHW
    keys = {(r['model'], r['flavour'], r['mode']) for r in rows}
    assert keys == {('mmsk/sknet18-timm', '', 'infer'),
                    ('mmsk/sknet18-timm', '', 'train'),
                    ('mmsk/sknet18-timm', 'with_cp', 'train'),
                    ('timm/skresnet18', '', 'infer'),
                    ('timm/skresnet18', '', 'train'),
                    ('timm/resnet18', '', 'infer'),
                    ('timm/resnet18', '', 'train')}
    for r in rows:
        layouts = set(r['img_per_s_by_layout'])
        assert layouts == ({'nchw', 'channels_last'} if r['role'] == 'mmsk'
                           else {'nchw'})
        assert all(len(t) == 2 and min(t) > 0
                   for t in r['times_s_by_layout'].values())
        assert r['img_per_s'] == max(r['img_per_s_by_layout'].values()) > 0
        assert r['img_per_s_by_layout'][r['layout']] == r['img_per_s']
    parity = {c['peer']: c['max_abs_diff'] for c in record['parity']}
    assert parity['timm/resnet18'] is None
    assert 0 <= parity['timm/skresnet18'] <= 1e-4
    assert record['machine']['threads'] == 1
    assert record['versions']['timm'] and record['versions']['mmsk']
    assert record['command'] == 'the command'

    md, js = benchmark.write_record(record, str(tmp_path / 'out'), 'run')
    text = open(md).read()
    assert '## infer, 32x32' in text and '## train, 32x32' in text
    assert '## with_cp, training, 32x32' in text
    assert 'timm/skresnet18 (nchw)' in text and 'no converter' in text
    assert json.load(open(js))['results'] == json.loads(json.dumps(rows))


def test_compiled_rows_run_compiled_beside_eager(tmp_path, monkeypatch):
    """--compile adds every model again under torch.compile (really
    compiled: each model's frames reach the compiler), compared compiled
    against compiled, with a compiled / eager table."""
    tiny = dict(stem_channels=8, base_channels=8)
    opts = Options(
        comparisons=['compiled'], sizes=[32], batch=2, repeats=2, threads=1,
        memory=False, layout='channels_last', compile=True, warmup=2,
        models={
            'mmsk/tiny-sk': benchmark.mmsk_model(
                dict(type='SKNet', depth=18, sk_form='timm', **tiny)),
            'mmsk/tiny-se': benchmark.mmsk_model(
                dict(type='SENet', depth=18, **tiny))},
        table={'compiled': ('mmsk/tiny-sk', ('mmsk/tiny-se', ))})
    compiled = []
    real_compile = torch.compile

    def counting_compile(model, **kwargs):
        # dynamo's graphs, run as they are (inductor's code generation
        # would add a minute here; the tool passes no backend)
        assert not kwargs

        def backend(gm, example_inputs):
            compiled.append(type(model).__name__)
            return gm.forward
        return real_compile(model, backend=backend)

    monkeypatch.setattr(torch, 'compile', counting_compile)
    record = benchmark.run_benchmark(opts)
    rows = record['results']
    assert {(r['model'], r['flavour']) for r in rows} == {
        ('mmsk/tiny-sk', ''), ('mmsk/tiny-sk', 'compiled'),
        ('mmsk/tiny-se', ''), ('mmsk/tiny-se', 'compiled')}
    assert all(r['img_per_s'] > 0 for r in rows)
    # graphs of both models in both modes
    assert len(compiled) >= 4
    text = benchmark.markdown(record)
    assert ('mmsk/tiny-sk compiled (channels_last) ' in text
            and 'mmsk/tiny-se compiled (channels_last)' in text)
    assert '## torch.compile against eager, 32x32' in text
    assert text.count('| mmsk/tiny-sk | infer |') == 1
    for line in text.splitlines():  # compiled never against eager
        if line.startswith('| compiled | mmsk/tiny-sk compiled'):
            assert 'tiny-se compiled' in line
        elif line.startswith('| compiled | mmsk/tiny-sk ('):
            assert 'tiny-se (' in line


def test_peak_memory_is_measured_in_a_fresh_process():
    opts = tiny_options(layout='channels_last')
    # full widths on 64x64 maps: the weights outweigh the activations, so
    # that a training step's peak must count them three times (weights,
    # gradients, momentum); the gradients were left out once
    spec = benchmark.mmsk_model(
        dict(type='SKNet', depth=18, sk_form='timm'))
    jobs = [dict(spec=spec, layout='channels_last', mode=mode,
                 with_cp=with_cp, deploy=False, size=64)
            for mode, with_cp in (('infer', False), ('train', False),
                                  ('train', True))]
    infer, train, train_cp = benchmark.measure_memory_in_subprocess(
        jobs, opts)
    weights = sum(p.numel() * 4 for p in benchmark.build_model(
        spec).parameters())
    # at least the weights; training also holds gradients, momentum and
    # activations
    assert weights < infer < train
    assert weights * 3 < train and weights * 3 < train_cp


def test_step_peak_memory_sees_a_large_temporary():
    """In a fresh process, as the benchmark measures memory: in a process
    that freed large blocks before (a test worker), the allocator may serve
    the temporary from pages that are already resident."""
    proc = run_python(code=(
        'import torch\n'
        'from mmsk import benchmark\n'
        'def step():\n'
        '    torch.ones(64, 2**20, dtype=torch.uint8).sum()  # 64 MiB\n'
        "print(benchmark.step_peak_memory(step, 'cpu'))\n"))
    assert int(proc.stdout.split()[-1]) >= 32 * 2**20


def test_options_are_validated():
    cases = [
        (dict(comparisons=['sknet5']), "unknown comparison 'sknet5'.*sknet50"),
        (dict(sizes=[16]), 'size must be at least 32'),
        (dict(batch=0), 'batch must be a positive int'),
        (dict(modes=['eval']), 'modes must be one of'),
        (dict(layout='nhwc'), 'layout must be one of'),
        (dict(amp='fp8'), 'amp must be one of'),
        (dict(compile=True, warmup=1), 'warmup must be at least 2'),
        (dict(with_cp=True, modes=['infer']), 'with_cp compares training'),
        (dict(repeats=0), 'repeats must be a positive int'),
        # a list with a value twice timed it twice into one median
        (dict(modes=['infer', 'infer']), 'modes lists infer more than once'),
        (dict(sizes=[64, 32, 64]), 'size lists 64 more than once'),
        (dict(comparisons=['sknet18', 'sknet18']),
         'models lists sknet18 more than once'),
        # ran, and recorded deploy: true, without a deploy row
        (dict(deploy=True, modes=['train']), 'deploy times the deploy form'),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            Options(**kwargs).validate()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match='device is cuda'):
            Options(device='cuda').validate()


def run_tool(*argv):
    import runpy
    tool = runpy.run_path(f'{ROOT}/tools/analysis_tools/benchmark.py')
    return tool['main'](list(argv))


def test_tool_smoke_run_writes_the_table(tmp_path, capsys):
    assert run_tool(
        '--models', 'sknet18', '--size', '64', '--batch', '2', '--repeats',
        '1', '--warmup', '1', '--threads', '1', '--layout', 'nchw',
        '--modes', 'infer', '--no-memory', '--out-dir', str(tmp_path),
        '--name', 'smoke', '--plot') == 0
    assert 'repeat 1/1' in capsys.readouterr().out
    record = json.loads((tmp_path / 'smoke.json').read_text())
    assert record['command'].startswith('python ')
    assert 'benchmark.py --models sknet18 --size 64' in record['command']
    (row, ) = [r for r in record['results'] if r['role'] == 'mmsk']
    assert row['img_per_s'] > 0 and row['layout'] == 'nchw'
    text = (tmp_path / 'smoke.md').read_text()
    assert '| sknet18 | mmsk/sknet18-timm (nchw) |' in text
    # the run's own check of the goal for this comparison and mode
    assert '| 64 | inference speed >= 1.20x | mmsk/sknet18-timm (nchw) | ' \
        'timm/skresnet18 (nchw) |' in text
    assert (tmp_path / 'smoke.png').read_bytes()[:4] == b'\x89PNG'


def test_tool_reports_a_bad_option(capsys):
    assert run_tool('--models', 'nope', '--no-memory') == 1
    assert "error: models: unknown comparison 'nope'" in \
        capsys.readouterr().err


def test_tool_profile_by_shape_names_the_convs(capsys):
    """--profile prints the operators of a few steps; --by-shape splits
    them by input shapes (which conv); --reference turns the fast paths
    off (the strided dilated branch then runs as declared)."""
    args = ('--profile', 'sknet18', '--size', '64', '--batch', '2',
            '--threads', '1', '--layout', 'channels_last', '--modes',
            'train', '--by-shape', '--rows', '200')
    assert run_tool(*args) == 0
    fast = capsys.readouterr().out
    assert 'aten::convolution_backward' in fast
    assert '[2, 128, 8, 8]' in fast  # a stage-2 input, by shape
    assert 'aten::lerp' in fast
    assert run_tool(*args, '--reference') == 0
    reference = capsys.readouterr().out
    assert 'aten::lerp' not in reference and 'aten::stack' in reference


def test_conv_events_count_the_flops_of_each_kind():
    """Kinds and FLOPs of known convs, forward and backward: the stem's
    backward computes only the weight gradient (its input needs none), a
    stride-2 dilated grouped conv is told apart, attention convs on 1x1
    maps are a kind of their own."""
    from torch import nn
    torch.manual_seed(0)
    stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    grouped = nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2, groups=4)
    fc = nn.Conv2d(8, 4, 1)
    x = torch.randn(2, 3, 16, 16)
    with torch.profiler.profile(record_shapes=True) as prof:
        y = grouped(stem(x))  # 8x8, then 4x4
        z = fc(y.mean((2, 3), keepdim=True))
        (y.sum() + z.sum()).backward()
    calls = benchmark.conv_events(prof.events())
    got = {(c['kind'], c['direction']): c['flops'] for c in calls}
    stem_macs = 2 * 8 * 8 * 8 * 3 * 3 * 3
    grouped_macs = 2 * 8 * 4 * 4 * 2 * 3 * 3
    fc_macs = 2 * 4 * 8
    assert got == {
        ('3x3 dense, stride 2', 'forward'): 2 * stem_macs,
        ('3x3 dense, stride 2', 'backward'): 2 * stem_macs,  # weight only
        ('3x3 grouped, 2 ch/group, stride 2, dilation 2', 'forward'):
            2 * grouped_macs,
        ('3x3 grouped, 2 ch/group, stride 2, dilation 2', 'backward'):
            4 * grouped_macs,
        ('1x1 dense, on 1x1 maps', 'forward'): 2 * fc_macs,
        ('1x1 dense, on 1x1 maps', 'backward'): 4 * fc_macs}
    table = benchmark.conv_table(calls, steps=1)
    total = 4 * stem_macs + 6 * grouped_macs + 6 * fc_macs
    assert '| all | 3 |' in table
    assert f'| {total / 1e9:.2f} |' in table.splitlines()[-3]
    assert benchmark.conv_table([]) == 'no convolutions recorded'


def test_conv_table_takes_each_calls_median_over_the_steps():
    """A step slowed down by the machine does not move the figures: each
    call's median over the steps; steps that ran other convolutions fall
    back to the mean."""
    def call(kind, direction, ms):
        return dict(kind=kind, direction=direction, ms=ms, flops=10**9)
    steps = [[call('1x1 dense', 'forward', 2.0), call('3x3 grouped',
                                                     'forward', 4.0)],
             [call('1x1 dense', 'forward', 2.0), call('3x3 grouped',
                                                     'forward', 40.0)],
             [call('1x1 dense', 'forward', 2.0), call('3x3 grouped',
                                                     'forward', 5.0)]]
    table = benchmark.conv_table([c for s in steps for c in s], steps=3)
    assert '| 3x3 grouped | 1 | 5.0 | 0.0 | 1.00 | 200 |' in table
    assert '| all | 2 | 7.0 |' in table
    assert "each call's median over 3 steps" in table
    other = [c for s in steps for c in s][:-1]  # the last step differs
    table = benchmark.conv_table(other + [call('1x1 dense', 'forward', 2.0)],
                                 steps=3)
    assert 'mean of 3 steps' in table
    assert '| all | 2 | 17.3 |' in table


def test_tool_profile_by_conv_adds_the_kinds(capsys):
    assert run_tool('--profile', 'sknet18', '--size', '64', '--batch', '2',
                    '--threads', '1', '--modes', 'infer', '--by-conv',
                    '--steps', '2') == 0
    out = capsys.readouterr().out
    assert 'Convolutions by kind' in out
    assert "each call's median over 2 steps" in out
    assert '| 3x3 dense, dilation 2 |' in out  # the SK branch of timm's form
    assert '| 1x1 dense, on 1x1 maps |' in out  # its attention


def test_tool_profile_options_are_checked(capsys):
    assert run_tool('--reference', '--no-memory') == 1
    assert '--reference, --by-shape and --by-conv go with --profile' in \
        capsys.readouterr().err
    assert run_tool('--by-conv') == 1
    assert '--by-conv go with --profile' in capsys.readouterr().err
    assert run_tool('--profile', 'sknet18', '--steps', '0') == 1
    assert 'steps must be a positive int' in capsys.readouterr().err
    assert run_tool('--steps', '5', '--no-memory') == 1
    assert '--steps goes with --profile' in capsys.readouterr().err
    assert run_tool('--profile', 'sknet18', '--rows', '0') == 1
    assert 'rows must be a positive int' in capsys.readouterr().err
    # options that a profile does not use were ignored without a word
    assert run_tool('--profile', 'sknet18', '--with-cp', '--repeats', '3',
                    '--name', 'x') == 1
    assert capsys.readouterr().err.strip() == (
        'error: --profile profiles one model and writes no record; it '
        'takes none of --with-cp, --repeats, --name')
    assert run_tool('--profile', 'sknet18', '--size', '32', '64') == 1
    assert 'takes one --size value, got 2' in capsys.readouterr().err
    # on a GPU the CPU activity shows kernel launches, not kernel time
    with pytest.raises(ValueError, match='profile times the CPU operators'):
        benchmark.profile_model(benchmark.Options().all_models()['timm/'
                                'skresnet18'], 32, Options(device='cuda'))


def two_tiny_comparisons(**kwargs):
    tiny = dict(stem_channels=8, base_channels=8)
    return Options(**dict(dict(
        comparisons=['a', 'b'], sizes=[32], batch=2, warmup=1, repeats=2,
        threads=1, memory=False, layout='nchw',
        models={
            'mmsk/tiny-sk': benchmark.mmsk_model(
                dict(type='SKNet', depth=18, sk_form='timm', **tiny)),
            'mmsk/tiny-se': benchmark.mmsk_model(
                dict(type='SENet', depth=18, **tiny))},
        table={'a': ('mmsk/tiny-sk', ('mmsk/tiny-se', )),
               'b': ('mmsk/tiny-se', ('mmsk/tiny-sk', ))}), **kwargs))


def test_a_crashed_run_keeps_its_comparisons_and_resumes(tmp_path,
                                                         monkeypatch):
    """The record is written after every comparison; a run that dies in
    the second keeps the first, and resuming runs only the second."""
    built, crash = [], [True]
    real_build = benchmark.build_variants

    def build(name, opts, progress=None):
        built.append(name)
        if name == 'b' and crash:
            crash.pop()
            raise RuntimeError('the machine fell over')
        return real_build(name, opts, progress)

    monkeypatch.setattr(benchmark, 'build_variants', build)
    out = str(tmp_path)
    with pytest.raises(RuntimeError, match='fell over'):
        benchmark.run_benchmark(
            two_tiny_comparisons(), 'first command',
            on_update=lambda r: benchmark.write_record(r, out, 'run'))
    partial = benchmark.load_record(str(tmp_path / 'run.json'))
    assert partial['complete'] is False and partial['done'] == [[32, 'a']]
    assert {r['comparison'] for r in partial['results']} == {'a'}
    assert '**partial**: 1 of 2 comparisons' in (tmp_path / 'run.md'
                                                 ).read_text()
    assert not list(tmp_path.glob('*.tmp'))

    built.clear()
    messages = []
    record = benchmark.run_benchmark(
        two_tiny_comparisons(), 'second command', messages.append,
        previous=partial)
    assert built == ['b']  # 'a' is not measured again
    assert any('a at 32x32: in the record already' in m for m in messages)
    assert record['complete'] is True
    assert record['done'] == [[32, 'a'], [32, 'b']]
    assert record['command'] == 'first command'
    assert record['resumed_with'] == ['second command']
    kept = [r for r in record['results'] if r['comparison'] == 'a']
    assert kept == partial['results']
    assert {r['comparison'] for r in record['results']} == {'a', 'b'}
    assert '**partial**' not in record['markdown']


def test_resume_refuses_a_record_of_another_setup(tmp_path):
    opts = two_tiny_comparisons()
    benchmark.run_benchmark(
        opts, on_update=lambda r: benchmark.write_record(r, str(tmp_path),
                                                         'run'))
    partial = benchmark.load_record(str(tmp_path / 'run.json'))
    with pytest.raises(ValueError, match=r'options batch: 2 in the record, '
                       r'4 now'):
        benchmark.check_resumable(partial, two_tiny_comparisons(batch=4))
    with pytest.raises(ValueError, match=r'options layout'):
        benchmark.run_benchmark(two_tiny_comparisons(layout='best'),
                                previous=partial)
    other = json.loads(json.dumps(partial))
    other['machine']['cpu'] = 'another CPU'
    with pytest.raises(ValueError, match="machine cpu: 'another CPU'"):
        benchmark.check_resumable(other, opts)
    other = json.loads(json.dumps(partial))
    other['versions']['torch'] = '1.0'
    with pytest.raises(ValueError, match="versions torch: '1.0'"):
        benchmark.check_resumable(other, opts)
    with pytest.raises(ValueError, match='not a benchmark record'):
        benchmark.check_resumable({'results': []}, opts)
    (tmp_path / 'bad.json').write_text('{"results": [')
    with pytest.raises(ValueError, match='is not JSON'):
        benchmark.load_record(str(tmp_path / 'bad.json'))
    with pytest.raises(ValueError, match='cannot read'):
        benchmark.load_record(str(tmp_path / 'missing.json'))
    (tmp_path / 'list.json').write_text('[1, 2]')
    with pytest.raises(ValueError, match=r'resume: .* is not a benchmark '
                       r'record \(a JSON list'):
        benchmark.load_record(str(tmp_path / 'list.json'))
    (tmp_path / 'old.json').write_text('{"results": []}')
    with pytest.raises(ValueError, match='not a benchmark record that can'):
        benchmark.load_record(str(tmp_path / 'old.json'))


def test_tool_interrupted_run_tells_how_to_resume(tmp_path, capsys,
                                                  monkeypatch):
    """Ctrl-C in the second size: the first is on disk, the tool prints
    the command that continues it, and that command finishes the table."""
    real_time = benchmark.time_variants
    sizes, interrupt = [], [True]

    def time_variants(variants, size, opts, progress=None):
        sizes.append(size)
        if size == 64 and interrupt:
            interrupt.pop()
            raise KeyboardInterrupt
        return real_time(variants, size, opts, progress)

    monkeypatch.setattr(benchmark, 'time_variants', time_variants)
    args = ['--models', 'sknet18', '--size', '32', '64', '--batch', '1',
            '--repeats', '1', '--warmup', '1', '--threads', '1',
            '--layout', 'nchw', '--modes', 'infer', '--no-memory',
            '--out-dir', str(tmp_path), '--name', 'run']
    assert run_tool(*args) == 130
    err = capsys.readouterr().err
    js = str(tmp_path / 'run.json')
    assert 'continue with: python tools/analysis_tools/benchmark.py ' \
        '--models sknet18' in err and err.rstrip().endswith(
            f'--resume {js}')
    assert json.loads(open(js).read())['done'] == [[32, 'sknet18']]

    # interrupted again before the resumed run adds a comparison: the
    # record on disk is still the one to continue (it said that nothing
    # was written)
    interrupt.append(True)
    assert run_tool(*args, '--resume', js) == 130
    err = capsys.readouterr().err
    assert f"are in {tmp_path / 'run.md'} and {js}; continue with: " in err
    assert err.rstrip().endswith(f'--resume {js}') and \
        err.count('--resume') == 1
    assert json.loads(open(js).read())['done'] == [[32, 'sknet18']]

    sizes.clear()
    assert run_tool(*args, '--resume', js) == 0
    assert sizes == [64]
    record = json.loads(open(js).read())
    assert record['complete'] is True
    assert {r['size'] for r in record['results']} == {32, 64}
    text = (tmp_path / 'run.md').read_text()
    assert '## infer, 32x32' in text and '## infer, 64x64' in text


def test_batch_one_training_is_refused_before_any_timing(monkeypatch,
                                                        capsys):
    """The SK attention's BatchNorm (on pooled features) cannot train on
    one image: the run failed after it had timed the inference. Models
    that can train on one image still run at batch 1."""
    timed = []
    monkeypatch.setattr(benchmark, 'time_variants',
                        lambda variants, *args, **kwargs: timed.append(1))
    with pytest.raises(ValueError, match=r'batch 1 cannot train '
                       r'mmsk/sknet18-timm at 64x64: .*2 or more images.*'
                       r'use --batch 2 or more, or --modes infer'):
        benchmark.run_benchmark(tiny_options(batch=1, sizes=[64]))
    assert not timed
    se = dict(table={'se': ('mmsk/senet50', ('timm/seresnet50', ))})
    benchmark.check_one_image_trains(
        'mmsk/senet50', Options(**se).all_models()['mmsk/senet50'], 64,
        Options(batch=1))
    # inference at batch 1, and the profile of its default (first) mode
    benchmark.run_benchmark(tiny_options(batch=1, modes=['infer']))
    assert timed == [1]
    assert run_tool('--profile', 'sknet18', '--batch', '1', '--size', '32',
                    '--steps', '1', '--threads', '1') == 0
    capsys.readouterr()
    assert run_tool('--profile', 'sknet18', '--batch', '1', '--size', '32',
                    '--modes', 'train') == 1
    assert capsys.readouterr().err.startswith(
        'error: batch 1 cannot train mmsk/sknet18-timm at 32x32: ')


def test_tool_resume_options_are_checked(tmp_path, capsys):
    assert run_tool('--resume', str(tmp_path / 'none.json'),
                    '--no-memory') == 1
    assert 'resume: cannot read' in capsys.readouterr().err
    # a record of other options: refused, without the command that just
    # failed as the way to continue it
    record = benchmark.run_benchmark(tiny_options(modes=['infer'],
                                                  repeats=1))
    benchmark.write_record(record, str(tmp_path), 'tiny')
    assert run_tool('--resume', str(tmp_path / 'tiny.json'), '--models',
                    'sknet18', '--batch', '7') == 1
    err = capsys.readouterr().err
    assert 'batch' in err and 'continue with' not in err, err
    assert run_tool('--profile', 'sknet18', '--resume',
                    str(tmp_path / 'none.json')) == 1
    assert 'takes none of --resume' in capsys.readouterr().err


def test_plot_draws_the_ratios_of_the_tables(tmp_path):
    record = benchmark.run_benchmark(two_tiny_comparisons(
        modes=['infer', 'train']))
    benchmark.write_record(record, str(tmp_path), 'run', plot=True)
    png = (tmp_path / 'run.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 5000
    assert not list(tmp_path.glob('*.tmp*'))
    panels = benchmark.speed_ratios(record)
    assert [p['title'] for p in panels] == ['infer, 32x32', 'train, 32x32']
    # every bar is a row of the table, with its speed ratio
    table = {}
    for line in record['markdown'].splitlines():
        if line.startswith('## '):
            title = line[3:]
        elif line.startswith('| a |') or line.startswith('| b |'):
            cells = [c.strip() for c in line.split('|')]
            table.setdefault(title, []).append(float(cells[6]))
    for panel in panels:
        assert [round(r, 2) for _, r in panel['bars']] == \
            table[panel['title']]
        assert [label for label, _ in panel['bars']] == [
            'mmsk/tiny-sk / mmsk/tiny-se', 'mmsk/tiny-se / mmsk/tiny-sk']
        # the whiskers: lowest and highest ratio within one repeat, around
        # the ratio of the medians
        for (_, ratio), (low, high) in zip(panel['bars'],
                                           panel['spreads']):
            assert low <= ratio + 1e-12 and ratio <= high + 1e-12
    with pytest.raises(ValueError, match='no timed pairs'):
        benchmark.plot_record(dict(record, results=[]),
                              str(tmp_path / 'empty.png'))


def test_every_target_names_a_comparison_and_its_peer():
    assert {t.comparison for t in benchmark.TARGETS} == set(
        benchmark.COMPARISONS)
    for t in benchmark.TARGETS:
        assert t.mode in benchmark.MODES and t.bound > 0
        assert t.kind in ('speed', 'memory', 'with_cp')
        if t.peer is not None:
            assert t.peer in benchmark.COMPARISONS[t.comparison][1]


def _row(model, role, mode, times, flavour='', layout='nchw', mem=None):
    return dict(comparison='c', model=model, role=role, flavour=flavour,
                mode=mode, size=32, layout=layout,
                img_per_s=2 / sorted(times)[len(times) // 2],
                times_s_by_layout={layout: times}, peak_mem_mb=mem)


def test_targets_are_checked_against_the_run_with_each_repeat():
    targets = (benchmark.Target('c', 'infer', 'speed', 1.3, 'p1'),
               benchmark.Target('c', 'train', 'speed', 1.05),
               benchmark.Target('c', 'train', 'memory', 0.85, 'p1'),
               benchmark.Target('c', 'train', 'with_cp', 0.7),
               benchmark.Target('other', 'infer', 'speed', 1.0))
    record = dict(comparisons=['c'], parity=[], results=[
        # repeat i of every model ran in turn: paired ratios p / m
        _row('m', 'mmsk', 'infer', [1.0, 1.0, 2.0], layout='channels_last'),
        _row('m', 'mmsk', 'infer', [0.5, 0.5, 0.6], flavour='deploy'),
        _row('p1', 'peer', 'infer', [1.2, 1.4, 1.6]),
        _row('p2', 'peer', 'infer', [0.1, 0.1, 0.1]),  # not the target's
        _row('m', 'mmsk', 'train', [2.0, 2.0, 2.0], mem=80.0),
        _row('m', 'mmsk', 'train', [3.0, 3.0, 3.0], flavour='with_cp',
             mem=40.0),
        _row('p1', 'peer', 'train', [2.2, 2.0, 2.1], mem=100.0),
        _row('p2', 'peer', 'train', [1.9, 2.1, 2.0], mem=90.0),
    ])
    checks = benchmark.check_targets(record, targets)
    got = [(c['target'].kind, c['target'].mode, c['mine']['flavour'],
            c['peer']['model'], round(c['ratio'], 4), c['met'],
            c['repeats'] and [round(r, 4) for r in c['repeats']])
           for c in checks]
    assert got == [
        # ratio of the medians 1.4 / 1.0; per repeat 1.2, 1.4, 0.8
        ('speed', 'infer', '', 'p1', 1.4, True, [1.2, 1.4, 0.8]),
        ('speed', 'infer', 'deploy', 'p1', 2.8, True, [2.4, 2.8, 2.6667]),
        # no peer named: the faster one (p2, median 2.0 s against 2.1 s)
        ('speed', 'train', '', 'p2', 1.0, False, [0.95, 1.05, 1.0]),
        ('memory', 'train', '', 'p1', 0.8, True, None),
        ('with_cp', 'train', 'with_cp', 'm', 0.5, True, None),
    ]
    # the default targets name other comparisons
    assert benchmark._targets_table(record) == []
    lines = benchmark._targets_table(record, targets)
    assert lines[0] == '## Targets' and 'with_cp goal' in lines[2]
    assert lines[6] == ('| 32 | inference speed >= 1.30x | m (channels_last) '
                        '| p1 (nchw) | 1.40 | 0.80-1.40, 1 of 3 | yes |')
    assert lines[8] == ('| 32 | training speed >= 1.05x | m (nchw) | the '
                        'faster peer: p2 (nchw) | 1.00 | 0.95-1.050, 1 of 3 '
                        '| no |')
    # a ratio that rounds to the goal shows on which side it lies
    near = copy.deepcopy(record)
    near['results'][2]['img_per_s'] *= 1.4 / 1.299
    assert '| 1.299 |' in benchmark._targets_table(near, targets)[6]
    # so does a repeat's ratio (it read "1.30, 0 of 1" against 1.3)
    near = copy.deepcopy(record)
    near['results'][0] = _row('m', 'mmsk', 'infer', [1.0],
                              layout='channels_last')
    near['results'][2] = _row('p1', 'peer', 'infer', [1.299])
    assert benchmark._targets_table(near, targets)[6].endswith(
        '| 1.299 | 1.299, 0 of 1 | no |')
    assert lines[10].startswith(
        '| 32 | peak training memory with_cp / without <= 0.70x | '
        'm with_cp (nchw) | m (nchw) | 0.50 | - | yes |')


def test_tool_report_writes_a_stored_records_report_again(tmp_path, capsys):
    with open(f'{ROOT}/benchmarks/cpu_160_r4_deploy.json') as f:
        stored = json.load(f)
    old = dict(stored, markdown='# an older report')
    path = tmp_path / 'old.json'
    path.write_text(json.dumps(old))
    assert run_tool('--report', str(path), '--plot') == 0
    assert 'wrote ' in capsys.readouterr().out
    md = (tmp_path / 'old.md').read_text()
    assert md == benchmark.markdown(stored) + '\n' and '## Targets' in md
    assert '| 160 | inference speed >= 1.30x | mmsk/sknet50 deploy' in md
    new = json.loads(path.read_text())
    assert new['results'] == stored['results'] and new['markdown'] == md[:-1]
    assert (tmp_path / 'old.png').read_bytes()[:4] == b'\x89PNG'
    # the plot marks each bar's goal: against a named peer, or against the
    # faster peer of the run (timm's here), not the slower one
    (panel, ) = benchmark.speed_ratios(stored)
    goals = dict(zip([label for label, _ in panel['bars']], panel['goals']))
    assert goals['mmsk/sknet50 / timm/skresnext50_32x4d'] == 1.3
    assert goals['mmsk/sknet50 deploy / timm/resnext50_32x4d'] == 0.9
    assert goals['mmsk/senet50 / timm/seresnet50'] == 1.1
    assert goals['mmsk/senet50 / mmpretrain/seresnet50'] is None
    # elsewhere, under another name
    assert run_tool('--report', str(path), '--out-dir',
                    str(tmp_path / 'out'), '--name', 'again') == 0
    assert (tmp_path / 'out' / 'again.md').read_text() == md

    def error(*args):
        assert run_tool(*args) == 1
        return capsys.readouterr().err

    assert 'report: cannot read' in error('--report', str(tmp_path / 'no'))
    (tmp_path / 'list.json').write_text('[1]')
    assert 'not a benchmark record (a JSON list' in error(
        '--report', str(tmp_path / 'list.json'))
    (tmp_path / 'part.json').write_text('{"results": []}')
    assert 'missing: command, machine' in error(
        '--report', str(tmp_path / 'part.json'))
    # every key there, holding what no run writes: an error line, nothing
    # written
    keys = ('command', 'machine', 'versions', 'options', 'comparisons',
            'parity', 'results', 'date')
    (tmp_path / 'ones.json').write_text(json.dumps(dict.fromkeys(keys, 1)))
    assert 'ones.json is not a benchmark record that this version can ' \
        'read' in error('--report', str(tmp_path / 'ones.json'))
    assert not (tmp_path / 'ones.md').exists()
    assert 'takes only --out-dir, --name and --plot; got --size, ' \
        '--profile' in error('--report', str(path), '--size', '64',
                             '--profile', 'sknet18')
    # an option given its default value is still refused
    assert 'takes only --out-dir, --name and --plot; got --batch' in error(
        '--batch', '16', '--report', str(path))
    # nothing to draw: refused before the .md and .json are rewritten
    empty = dict(stored, results=[], markdown='# kept')
    (tmp_path / 'empty.json').write_text(json.dumps(empty))
    assert 'empty.json has no timed pairs to draw' in error(
        '--report', str(tmp_path / 'empty.json'), '--plot')
    assert json.loads((tmp_path / 'empty.json').read_text()) == empty
    assert not (tmp_path / 'empty.md').exists()


def test_plot_of_a_single_repeat(tmp_path):
    """With one repeat the ratio of the medians is that repeat's ratio, up
    to the last bit: the whisker must not come out negative."""
    record = dict(comparisons=['c'], parity=[], options=dict(batch=2),
                  machine=dict(cpu='a CPU', threads=1, device='cpu'),
                  results=[_row('m', 'mmsk', 'infer', [1.0]),
                           _row('p', 'peer', 'infer', [1.5])])
    record['results'][0]['img_per_s'] *= 1 + 1e-15
    (panel, ) = benchmark.plot_record(record, str(tmp_path / 'one.png'))
    (_, ratio), = panel['bars']
    assert ratio > panel['spreads'][0][1]
    assert (tmp_path / 'one.png').read_bytes()[:4] == b'\x89PNG'


def test_plot_title_names_precision_and_compile():
    """A plot read on its own says what it measured: bf16 and compiled
    records are not fp32 eager ones."""
    record = dict(options=dict(batch=16, amp='none', compile=False),
                  machine=dict(cpu='AMD EPYC', threads=2, device='cpu'))
    assert benchmark.plot_title(record) == \
        'AMD EPYC, 2 threads, batch 16, device cpu'
    record['options'].update(amp='bf16', compile=True)
    assert benchmark.plot_title(record) == (
        'AMD EPYC, 2 threads, batch 16, bf16 autocast, '
        'eager and torch.compile, device cpu')


def test_tool_checks_where_it_writes_before_timing(tmp_path, capsys,
                                                   monkeypatch):
    """A --name with folders, an --out-dir that is a file or a record path
    that is a folder: `error: ...` before anything is timed; a missing
    --out-dir is created before the timing."""
    timed = []

    def time_variants(variants, size, opts, progress=None):
        timed.append(size)
        raise KeyboardInterrupt

    monkeypatch.setattr(benchmark, 'time_variants', time_variants)
    args = ['--models', 'sknet18', '--size', '32', '--batch', '1',
            '--repeats', '1', '--warmup', '1', '--threads', '1',
            '--layout', 'nchw', '--modes', 'infer', '--no-memory']

    def error(*more):
        assert run_tool(*args, *more) == 1
        err = capsys.readouterr().err
        assert err.startswith('error: ') and 'Traceback' not in err, err
        return err

    out = tmp_path / 'out'
    assert "name 'a/b/c' must be a file name without folders" in error(
        '--out-dir', str(out), '--name', 'a/b/c')
    assert not out.exists()
    for name in ('..', '.'):
        assert 'must be a file name' in error('--out-dir', str(out),
                                              '--name', name)
    (tmp_path / 'file').write_text('not a folder')
    assert 'is a file, not a folder' in error(
        '--out-dir', str(tmp_path / 'file'), '--name', 'run')
    assert 'cannot create folder' in error(
        '--out-dir', str(tmp_path / 'file' / 'sub'), '--name', 'run')
    (tmp_path / 'taken' / 'run.json').mkdir(parents=True)
    assert 'run.json' in error('--out-dir', str(tmp_path / 'taken'),
                               '--name', 'run')
    (tmp_path / 'taken' / 'other.png').mkdir()
    assert 'other.png' in error('--out-dir', str(tmp_path / 'taken'),
                              '--name', 'other', '--plot')
    assert timed == []
    # a missing folder is made before the timing starts
    assert run_tool(*args, '--out-dir', str(out / 'deep'), '--name',
                    'run') == 130
    assert timed == [32] and (out / 'deep').is_dir()
    with pytest.raises(ValueError, match='must be a file name'):
        benchmark.write_record({'markdown': ''}, str(tmp_path), 'a/b')


def test_tool_report_checks_where_it_writes(tmp_path, capsys):
    stored = tmp_path / 'stored.json'
    stored.write_text(open(f'{ROOT}/benchmarks/cpu_160_r4_deploy.json')
                      .read())
    (tmp_path / 'file').write_text('not a folder')
    for more, message in (
            (['--name', 'x/y'], "name 'x/y' must be a file name"),
            (['--out-dir', str(tmp_path / 'file')], 'is a file, not a '
             'folder')):
        assert run_tool('--report', str(stored), *more) == 1
        err = capsys.readouterr().err
        assert err.startswith('error: ') and message in err, err
    assert not (tmp_path / 'x').exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['file',
                                                          'stored.json']
