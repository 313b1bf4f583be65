"""A checkpoint that does not fit the model is an error when evaluating,
resuming or loading (``load_from``), not a warning and a wrong result;
fine-tuning from a partial checkpoint is an explicit opt-in."""
import re

import pytest

from conftest import ROOT, TINY_OPTIONS, build_runner, run_python

SENET_CONFIG = f'{ROOT}/configs/senet/seresnet18-cifar_1xb64_mnist5k.py'


def _runner(tmp_path, tiny=True, **options):
    return build_runner(tmp_path / 'work', tiny, **options)


def test_test_tool_refuses_a_checkpoint_of_another_model(
        trained_work_dir, tmp_path):
    # an SKNet-18 checkpoint evaluated with the SE-ResNet-18 config
    proc = run_python(
        args=[
            f'{ROOT}/tools/test.py', SENET_CONFIG,
            str(trained_work_dir / 'epoch_1.pth'), '--work-dir',
            str(tmp_path), '--cfg-options', *TINY_OPTIONS,
            'test_dataloader.dataset.indices=64',
            'test_dataloader.num_workers=0',
            'test_dataloader.persistent_workers=False'
        ],
        check=False)
    assert proc.returncode != 0
    err = proc.stderr
    assert 'CheckpointMismatchError' in err, err[-3000:]
    # SE attention keys missing, SK unit keys unexpected
    assert re.search(r'\d+ missing keys: backbone\.layer1\.0\.attn\.', err)
    assert re.search(r'\d+ unexpected keys: backbone\.layer1\.0\.conv1\.'
                     r'attn\.', err), err[-3000:]
    assert 'load_from_strict=False' in err
    assert 'accuracy/top1' not in proc.stdout + err


def test_mis_shaped_keys_are_named(trained_work_dir, tmp_path):
    from mmsk.engine import CheckpointMismatchError
    runner = _runner(tmp_path, tiny=False)  # widths 16..128, not 8..64
    with pytest.raises(CheckpointMismatchError) as info:
        runner.load_checkpoint(str(trained_work_dir / 'epoch_1.pth'))
    message = str(info.value)
    assert 'backbone.conv1.weight (checkpoint (8, 1, 3, 3), model ' \
        '(16, 1, 3, 3))' in message, message
    assert 'missing keys' not in message and 'unexpected' not in message
    assert '... and ' in message  # long lists are cut, with a count


def test_values_that_are_not_tensors_are_named(trained_work_dir, tmp_path):
    """A numpy array or a number in a weight's place had the right key (and
    an array the right shape), so it passed the check; MMEngine's loader
    then only logged that it could not copy it, and the test tool
    evaluated the random weight (exit 0)."""
    import torch

    from mmsk.checkpoint import load_local_checkpoint
    from mmsk.engine import CheckpointMismatchError
    from mmsk.engine.loading import load_checkpoint_strict
    ckpt = load_local_checkpoint(str(trained_work_dir / 'epoch_1.pth'))
    state = ckpt['state_dict']
    state['backbone.conv1.weight'] = state['backbone.conv1.weight'].numpy()
    state['head.fc.bias'] = 5
    bad = tmp_path / 'numpy.pth'
    torch.save(ckpt, bad)
    runner = _runner(tmp_path)
    before = runner.model.state_dict()['backbone.conv1.weight'].clone()
    with pytest.raises(CheckpointMismatchError,
                       match=r'2 keys hold no tensor: backbone\.conv1\.'
                       r'weight \(numpy\.ndarray\), head\.fc\.bias '
                       r'\(builtins\.int\)'):
        runner.load_checkpoint(str(bad))
    with pytest.raises(CheckpointMismatchError, match='hold no tensor'):
        load_checkpoint_strict(runner.model, str(bad))
    assert torch.equal(runner.model.state_dict()['backbone.conv1.weight'],
                       before)


def test_partial_load_from_is_an_explicit_opt_in(trained_work_dir, tmp_path):
    import torch

    from mmsk.checkpoint import load_local_checkpoint
    from mmsk.engine import CheckpointMismatchError
    ckpt = load_local_checkpoint(str(trained_work_dir / 'epoch_1.pth'))
    # a backbone-only checkpoint, as a fine-tuning run with a new head has
    ckpt['state_dict'] = {
        k: v
        for k, v in ckpt['state_dict'].items() if not k.startswith('head.')
    }
    partial = tmp_path / 'backbone_only.pth'
    torch.save(ckpt, partial)
    strict = _runner(tmp_path)
    assert strict.train_loop is not None
    with pytest.raises(CheckpointMismatchError, match='missing keys: head.'):
        strict.load_checkpoint(str(partial))
    runner = _runner(tmp_path, load_from_strict=False)
    # evaluating is always strict ...
    with pytest.raises(CheckpointMismatchError, match='Evaluation'):
        runner.load_checkpoint(str(partial))
    # ... training with the opt-in loads what fits
    assert runner.train_loop is not None  # what Runner.train builds first
    runner.load_checkpoint(str(partial))
    assert torch.equal(runner.model.state_dict()['backbone.conv1.weight'],
                       ckpt['state_dict']['backbone.conv1.weight'])
    # resuming is always strict, whatever the opt-in says
    with pytest.raises(CheckpointMismatchError, match='--resume'):
        runner.resume(str(partial))
    with pytest.raises(ValueError, match='load_from_strict'):
        _runner(tmp_path, load_from_strict='no').load_checkpoint(str(partial))
    assert runner.cfg.load_from_strict is False


def test_a_fitting_checkpoint_loads(trained_work_dir, tmp_path):
    import torch

    from mmsk.checkpoint import load_local_checkpoint
    runner = _runner(tmp_path)
    runner.load_checkpoint(str(trained_work_dir / 'epoch_1.pth'))
    saved = load_local_checkpoint(str(trained_work_dir / 'epoch_1.pth'))
    for key, value in runner.model.state_dict().items():
        assert torch.equal(value, saved['state_dict'][key]), key


@pytest.mark.parametrize('content', [[1, 2, 3], 'weights'])
def test_a_file_without_a_state_dict_is_named(tmp_path, content):
    """The exact-resume hook reads the checkpoint's meta first: a file that
    holds a list or a string failed there with an AttributeError."""
    import torch

    from mmsk.engine import CheckpointMismatchError
    path = tmp_path / 'not_a_checkpoint.pth'
    torch.save(content, path)
    runner = _runner(tmp_path)
    assert any(type(h).__name__ == 'ExactResumeHook' for h in runner.hooks)
    with pytest.raises(CheckpointMismatchError,
                       match=f'holds no state dict \\(got '
                       f'{type(content).__name__}\\)'):
        runner.load_checkpoint(str(path))


def test_the_strict_check_sees_keys_as_loading_does():
    """What mmengine's loader accepts the check accepts too: mmpretrain's
    MobileNetV2 key layout (renamed on load) and a state dict without
    BatchNorm's num_batches_tracked; a wrong key is still named."""
    import torch
    from mmpretrain.registry import MODELS

    from conftest import build_backbone
    from mmsk.engine import CheckpointMismatchError
    from mmsk.engine.loading import check_checkpoint_fits
    torch.manual_seed(0)
    ref = MODELS.build(dict(type='MobileNetV2', widen_factor=0.5,
                            out_indices=(1, 2, 4, 6)))
    model = build_backbone(dict(type='mmsk.InvertedResidualNet',
                                widen_factor=0.5, out_indices=(1, 2, 4, 6)))
    legacy = {k: v for k, v in ref.state_dict().items()
              if not k.startswith('conv2.')}  # mmpretrain's unused conv
    assert any('.conv.0.' in k for k in legacy)
    check_checkpoint_fits(model, {'state_dict': legacy})
    check_checkpoint_fits(model, {
        k: v for k, v in model.state_dict().items()
        if not k.endswith('num_batches_tracked')})
    legacy['layer1.0.conv.0.conv.weight'] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError,
                       match=r'layer1\.0\.depthwise\.conv\.weight '
                       r'\(checkpoint \(1,\)'):
        check_checkpoint_fits(model, {'state_dict': legacy})
