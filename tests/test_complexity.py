"""Paper fidelity: params and FLOPs at 224x224 against the papers."""
import pytest

from conftest import ROOT, run_python


# the figures with a paper FLOPs count (the tolerances, with their reasons,
# are mmsk.utils.complexity's, which the tool uses too)
WITH_FLOPS = ['SKNet-50 (paper)', 'Res2Net-50 26w4s']


@pytest.mark.parametrize('name', WITH_FLOPS)
def test_params_and_flops_within_their_tolerance(name):
    from mmsk.utils.complexity import PAPER_FIGURES, complexity, tolerance
    cfg, params, flops, _ = PAPER_FIGURES[name]
    got = complexity(cfg)
    assert got['params'] == pytest.approx(params, rel=0.02)
    assert got['flops'] == pytest.approx(
        flops, rel=tolerance(name, 'flops') / 100)
    if name == 'Res2Net-50 26w4s':
        # the tool, run as documented (its default tolerances), passes it:
        # it failed on these 2.07% with one 2% for every figure
        proc = run_python(args=[
            f'{ROOT}/tools/analysis_tools/complexity.py', '--names', name],
            check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize('name', [
    'SKNet-101 (paper)', 'SK-ResNet-50 (PytorchInsight)', 'SE-ResNet-50',
    'SE-ResNeXt-50 32x4d', 'Res2Net-101 26w4s'
])
def test_params_within_2_percent(name):
    from mmsk.utils.complexity import PAPER_FIGURES, complexity
    cfg, params, _, _ = PAPER_FIGURES[name]
    assert complexity(cfg, flops=False)['params'] == pytest.approx(
        params, rel=0.02)


def test_complexity_tool_writes_a_table(tmp_path):
    """--names takes the short keys (any case) as well as the table's
    names."""
    out = tmp_path / 'table.md'
    run_python(args=[
        f'{ROOT}/tools/analysis_tools/complexity.py', '--names',
        'SKnet50-PytorchInsight', 'SE-ResNet-50', '--out',
        str(out)
    ])
    table = out.read_text()
    assert '| SK-ResNet-50 (PytorchInsight) | 26.15 | 26.15 |' in table
    assert '| SE-ResNet-50 | 28.09 | 28.09 |' in table


def test_every_paper_figure_has_a_short_key():
    from mmsk.utils.complexity import PAPER_FIGURES, PAPER_KEYS, paper_name
    assert sorted(PAPER_KEYS.values()) == sorted(PAPER_FIGURES)
    for key, name in PAPER_KEYS.items():
        assert paper_name(key) == paper_name(key.upper()) == \
            paper_name(name) == name
    with pytest.raises(ValueError, match="unknown model 'sknet5': expected "
                       "one of sknet50, .*did you mean 'sknet50'"):
        paper_name('sknet5')


def test_mobilenet_v2_within_2_percent_and_in_the_tool_table(tmp_path):
    from mmsk.utils.complexity import PAPER_FIGURES, complexity
    name = 'MobileNetV2 1.0'
    cfg, params, flops, _ = PAPER_FIGURES[name]
    got = complexity(cfg)
    assert got['params'] == pytest.approx(params, rel=0.02)
    assert got['flops'] == pytest.approx(flops, rel=0.02)
    out = tmp_path / 'table.md'
    # one --tolerance for every figure: its FLOPs (+1.4%) are over 0.5%;
    # the table is written all the same
    proc = run_python(args=[
        f'{ROOT}/tools/analysis_tools/complexity.py', '--names', name,
        '--out', str(out), '--tolerance', '0.5'], check=False)
    assert proc.returncode == 1
    assert f"'{name} (flops, over 0.5%)'" in proc.stderr
    row = f"| {name} | {got['params'] / 1e6:.2f} | {params / 1e6:.2f} |"
    assert row in out.read_text()
    assert f"| {got['flops'] / 1e9:.2f} | {flops / 1e9:.2f} |" in \
        out.read_text()


def test_attention_ops_are_counted():
    """SE's gating multiply and sigmoid, and the squeeze, are FLOPs once
    mmsk is imported (mmengine alone skips them)."""
    import torch
    from mmengine.analysis import FlopAnalyzer

    import mmsk  # noqa: F401
    from mmsk.models.layers import SEAttention
    se = SEAttention(64, reduction=4).eval()
    x = torch.rand(1, 64, 8, 8)
    flops = FlopAnalyzer(se, x)
    flops.unsupported_ops_warnings(False)
    by_op = flops.by_operator()
    assert by_op['mean'] == 64 * 8 * 8  # squeeze: one add per element
    assert by_op['sigmoid'] == 64  # the gate
    assert by_op['mul'] == 64 * 8 * 8  # the gating multiply
    assert by_op['conv'] == 2 * 64 * 16  # reduce, expand


# an ImageNet config per family, at a small size to keep it quick, through
# mmsk's tools/analysis_tools/get_flops.py or mmpretrain's own
GET_FLOPS_CONFIGS = [
    ('configs/sknet/sknet18_8xb32_in1k.py', 'mmsk'),
    ('configs/res2net/se-res2net50-w26-s4_8xb32_in1k.py', 'mmpretrain'),
    ('configs/mobilenet_v2/sk-mobilenet-v2_8xb32_in1k.py', 'mmpretrain'),
]


@pytest.mark.parametrize('config,tool', GET_FLOPS_CONFIGS)
def test_get_flops_gives_mmsk_figures(config, tool):
    """get_flops.py (backbone + neck; mmpretrain's own imports mmsk
    through the config) and mmsk's complexity() count the same."""
    import re

    from mmengine.analysis.print_helper import _format_size
    from mmengine.config import Config

    from mmsk.utils.complexity import complexity
    from mmsk.utils.tools import mmpretrain_tool_path
    size = 64
    proc = run_python(args=[
        mmpretrain_tool_path('analysis_tools/get_flops.py')
        if tool == 'mmpretrain' else
        f'{ROOT}/tools/analysis_tools/get_flops.py',
        f'{ROOT}/{config}', '--shape', str(size)
    ])
    flops = re.search(r'^Flops: (\S+)$', proc.stdout, re.M).group(1)
    params = re.search(r'^Params: (\S+)$', proc.stdout, re.M).group(1)
    backbone = Config.fromfile(f'{ROOT}/{config}').model.backbone
    ours = complexity(backbone, input_size=size)
    from mmsk.registry import MODELS
    feat_dim = MODELS.build(backbone).feat_dim
    # get_flops counts no head; complexity() adds the 1000-way linear layer
    assert flops == _format_size(int(ours['flops'] - feat_dim * 1000))
    assert params == _format_size(int(ours['params']))


def test_bad_arguments_are_named(capsys):
    """names as one string (iterated letter by letter), unknown names, a
    backbone whose out_indices stop early (the head's input differed from
    feat_dim), a float size, and a tolerance that turns the check off."""
    from mmsk.utils.complexity import complexity, paper_table
    with pytest.raises(ValueError, match='paper_table: names must be a '
                       'list/tuple'):
        paper_table('SKNet-50 (paper)', flops=False)
    with pytest.raises(ValueError, match=r"paper_table: names\[0\] must be "
                       r"one of .*got 'SKNet-50'"):
        paper_table(['SKNet-50'], flops=False)
    with pytest.raises(ValueError, match='complexity: backbone_cfg must be'):
        complexity(None)
    with pytest.raises(ValueError, match='complexity: input_size must be'):
        complexity(dict(type='SKNet', depth=18), input_size=224.0)
    small = dict(type='SKNet', depth=18, stem_channels=8, base_channels=8)
    assert complexity(dict(small, out_indices=(0, )), input_size=32) == \
        complexity(small, input_size=32)
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'complexity_tool', f'{ROOT}/tools/analysis_tools/complexity.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    for names, error in [(['sknet5'], "--names: unknown model 'sknet5'"),
                         (['sknet50', 'SKNet-50 (paper)'],
                          '--names lists a model twice')]:
        assert tool.main(['--names', *names]) == 1
        assert capsys.readouterr().err.startswith(f'error: {error}')
    for tolerance in ('nan', 'inf', '-1'):
        assert tool.main(['--names', 'SK-ResNet-50 (PytorchInsight)',
                          '--tolerance', tolerance]) == 1
        assert '--tolerance must be a' in capsys.readouterr().err
