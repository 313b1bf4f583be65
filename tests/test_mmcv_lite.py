"""mmsk on mmcv-lite: pure Python mmcv without ``mmcv.ops``, what a machine
without an mmcv build of its own installs (README, "Install into an existing
environment").

``tools/setup_env.sh`` installs mmcv-lite into ``.venv/mmcv-lite``, beside
the full mmcv that mmdet and mmseg need; these tests run fresh interpreters
with that folder first on the path, so that ``import mmcv`` finds the lite
package there, and check that

- every backbone of the parametrized suite builds, computes the same
  outputs (eval) and the same gradients (a training step) as under the full
  mmcv, to the bit: the blocks use only mmcv's pure Python bricks;
- the main job's train and test tools train, validate, save and test.

mmdet and mmseg import ``mmcv.ops`` and need the full mmcv; that is their
requirement, not mmsk's.
"""
import os.path as osp
import sys

import torch

from conftest import (MAIN_CONFIG, ROOT, TINY_OPTIONS, build_backbone,
                      randomize_bn, run_python)
from test_backbones import BACKBONES, _cfg, _family

LITE = osp.join(sys.prefix, 'mmcv-lite')
TESTS = osp.join(ROOT, 'tests')


def lite_env():
    assert osp.isfile(osp.join(LITE, 'mmcv', 'version.py')), (
        f'mmcv-lite is not installed in {LITE}: run tools/setup_env.sh '
        '(make setup)')
    return dict(PYTHONPATH=osp.pathsep.join([LITE, TESTS]))


# the interpreter is on mmcv-lite: no ops, and the package from LITE
CHECK_LITE = f'''
import importlib.util, os.path as osp
import mmcv
assert osp.dirname(osp.dirname(mmcv.__file__)) == {LITE!r}, mmcv.__file__
assert importlib.util.find_spec('mmcv._ext') is None, 'mmcv has its ops'
'''


def all_outputs(name):
    return _cfg(name, out_indices=_family(name).all_outputs)


def outputs_and_grads(states: dict, x: torch.Tensor) -> dict:
    """Per backbone: its eval outputs, and the gradients of one training
    step (train mode, batch statistics) from the given weights."""
    results = {}
    for name, state in states.items():
        model = build_backbone(all_outputs(name))
        model.load_state_dict(state, strict=True)
        with torch.no_grad():
            outs = model.eval()(x)
        model.train()
        sum(o.pow(2).mean() for o in model(x)).backward()
        results[name] = dict(
            outputs=[o.clone() for o in outs],
            grads={k: p.grad.clone()
                   for k, p in model.named_parameters()})
    return results


def test_backbones_on_mmcv_lite_equal_full_mmcv(tmp_path):
    states = {}
    for name in sorted(BACKBONES):
        torch.manual_seed(0)
        model = randomize_bn(build_backbone(all_outputs(name)))
        states[name] = model.state_dict()
    x = torch.randn(2, 3, 32, 32)
    torch.save(dict(states=states, x=x), tmp_path / 'in.pth')
    run_python(CHECK_LITE + f'''
import torch
from mmengine.registry import init_default_scope
from test_mmcv_lite import outputs_and_grads
init_default_scope('mmpretrain')
torch.set_num_threads({torch.get_num_threads()})
inputs = torch.load({str(tmp_path / 'in.pth')!r})
torch.save(outputs_and_grads(inputs['states'], inputs['x']),
           {str(tmp_path / 'out.pth')!r})
''', env=lite_env())
    lite = torch.load(tmp_path / 'out.pth')
    full = outputs_and_grads(states, x)
    assert sorted(lite) == sorted(full) == sorted(BACKBONES)
    for name in full:
        for i, (a, b) in enumerate(zip(lite[name]['outputs'],
                                       full[name]['outputs'])):
            assert torch.equal(a, b), f'{name}: output {i} differs'
        assert lite[name]['grads'].keys() == full[name]['grads'].keys()
        for key, grad in full[name]['grads'].items():
            assert torch.equal(lite[name]['grads'][key], grad), \
                f'{name}: gradient of {key} differs'


def test_main_job_tools_on_mmcv_lite(tmp_path):
    """tools/train.py (one epoch of the tiny main job, with validation and
    a checkpoint) and tools/test.py on it, both on mmcv-lite."""
    env = lite_env()
    run_python(CHECK_LITE, env=env)
    run_python(args=[
        f'{ROOT}/tools/train.py', MAIN_CONFIG, '--work-dir', str(tmp_path),
        '--cfg-options', *TINY_OPTIONS, 'train_cfg.max_epochs=1'
    ], env=env)
    assert (tmp_path / 'epoch_1.pth').is_file()
    proc = run_python(args=[
        f'{ROOT}/tools/test.py', MAIN_CONFIG, str(tmp_path / 'epoch_1.pth'),
        '--work-dir', str(tmp_path), '--cfg-options', *TINY_OPTIONS
    ], env=env)
    assert 'accuracy/top1' in proc.stdout + proc.stderr
