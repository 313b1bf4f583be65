"""Paper fidelity: params and FLOPs at 224x224 against the papers."""
import pytest

from conftest import ROOT, run_python


@pytest.mark.parametrize('name', ['SKNet-50 (paper)', 'Res2Net-50 26w4s'])
def test_params_and_flops_within_2_percent(name):
    from mmsk.utils.complexity import PAPER_FIGURES, complexity
    cfg, params, flops, _ = PAPER_FIGURES[name]
    got = complexity(cfg)
    assert got['params'] == pytest.approx(params, rel=0.02)
    assert got['flops'] == pytest.approx(flops, rel=0.02)


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
    out = tmp_path / 'table.md'
    run_python(args=[
        f'{ROOT}/tools/analysis_tools/complexity.py', '--names',
        'SK-ResNet-50 (PytorchInsight)', '--out',
        str(out)
    ])
    table = out.read_text()
    assert '| SK-ResNet-50 (PytorchInsight) | 26.15 | 26.15 |' in table


def test_mobilenet_v2_within_2_percent_and_in_the_tool_table(tmp_path):
    from mmsk.utils.complexity import PAPER_FIGURES, complexity
    name = 'MobileNetV2 1.0'
    cfg, params, flops, _ = PAPER_FIGURES[name]
    got = complexity(cfg)
    assert got['params'] == pytest.approx(params, rel=0.02)
    assert got['flops'] == pytest.approx(flops, rel=0.02)
    out = tmp_path / 'table.md'
    run_python(args=[
        f'{ROOT}/tools/analysis_tools/complexity.py', '--names', name,
        '--out',
        str(out)
    ])
    row = f"| {name} | {got['params'] / 1e6:.2f} | {params / 1e6:.2f} |"
    assert row in out.read_text()
    assert f"| {got['flops'] / 1e9:.2f} | {flops / 1e9:.2f} |" in \
        out.read_text()
