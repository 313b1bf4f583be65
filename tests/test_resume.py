"""Exact resume, atomic checkpoint saving and the resume fallback.

A short SKNet run (tiny widths, 128 training digits = 2 iterations per
epoch, one data-loader worker, deterministic) is killed with SIGKILL in the
middle of an epoch, or in the middle of writing a checkpoint, and resumed
with ``--resume``; its final weights must equal those of the uninterrupted
run bit for bit.
"""
import re
import shutil
import signal

import pytest
import torch

from conftest import MAIN_CONFIG, ROOT, TINY_OPTIONS, build_runner, run_python

EPOCHS = 3
OPTIONS = TINY_OPTIONS + [
    'train_dataloader.num_workers=1', 'randomness.deterministic=True'
]

# Registers KillAt, a hook that SIGKILLs the process at (epoch, iteration),
# and, with KILL_IN_SAVE set, a torch.save that writes half a checkpoint of
# that epoch and then SIGKILLs the process.
KILLER = '''
import os, signal
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class KillAt(Hook):
    def __init__(self, epoch=-1, iteration=-1, in_save=-1):
        self.epoch, self.iteration = epoch, iteration
        if in_save >= 0:
            save = torch.save

            def half_save_then_die(obj, f, *args, **kwargs):
                if isinstance(obj, dict) and \\
                        obj.get('meta', {}).get('epoch') == in_save:
                    save(obj, f, *args, **kwargs)
                    size = os.path.getsize(f)
                    with open(f, 'r+b') as fh:
                        fh.truncate(size // 2)
                    os.kill(os.getpid(), signal.SIGKILL)
                return save(obj, f, *args, **kwargs)

            torch.save = half_save_then_die

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if (runner.epoch, batch_idx) == (self.epoch, self.iteration):
            os.kill(os.getpid(), signal.SIGKILL)
'''


def _train(work_dir, *extra, epochs=EPOCHS, config=MAIN_CONFIG, check=True):
    return run_python(
        args=[
            f'{ROOT}/tools/train.py', config, '--work-dir',
            str(work_dir), *extra, '--cfg-options', *OPTIONS,
            f'train_cfg.max_epochs={epochs}'
        ],
        check=check)


def _killing_config(tmp_path, **kill):
    (tmp_path / 'killer.py').write_text(KILLER)
    args = ', '.join(f'{k}={v}' for k, v in kill.items())
    config = tmp_path / 'killed.py'
    config.write_text(
        f'_base_ = [{MAIN_CONFIG!r}]\n'
        "custom_imports = dict(imports=['mmsk', 'killer'], "
        'allow_failed_imports=False)\n'
        "custom_hooks = [dict(type='ExactResumeHook'), "
        f"dict(type='KillAt', {args})]\n")
    return str(config)


def _killed_train(tmp_path, work_dir, *extra, **kill):
    config = _killing_config(tmp_path, **kill)
    # the config imports killer.py from its own folder
    proc = run_python(
        code=(f'import sys; sys.path.insert(0, {str(tmp_path)!r}); '
              f'sys.argv = ["train.py", {config!r}, "--work-dir", '
              f'{str(work_dir)!r}, *{list(extra)!r}, "--cfg-options", '
              f'*{OPTIONS!r}, '
              f'"train_cfg.max_epochs={EPOCHS}"]; '
              'from mmsk.utils.tools import run_mmpretrain_tool; '
              'run_mmpretrain_tool("train.py")'),
        check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    return proc


def _weights(path):
    import mmsk  # noqa: F401
    from mmsk.checkpoint import load_local_checkpoint
    return load_local_checkpoint(str(path))['state_dict']


def _assert_bit_identical(a, b):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f'{len(different)} tensors differ: {different[:5]}'


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('uninterrupted')
    _train(work_dir)
    return work_dir


def test_sigkills_mid_epoch_and_mid_save_then_resume_is_bit_exact(
        uninterrupted, tmp_path):
    import mmsk  # noqa: F401
    from mmsk.checkpoint import load_local_checkpoint
    work_dir = tmp_path / 'work'
    # 1. killed after the first of the two iterations of epoch 2
    _killed_train(tmp_path, work_dir, epoch=1, iteration=0)
    assert (work_dir / 'epoch_1.pth').is_file()
    assert not (work_dir / 'epoch_2.pth').exists()
    # 2. resumed, and killed while writing epoch 2's checkpoint: half of it
    # was written aside, never under its name
    _killed_train(tmp_path, work_dir, '--resume', in_save=2)
    assert not (work_dir / 'epoch_2.pth').exists()
    leftovers = [p.name for p in work_dir.iterdir() if p.name.startswith('.')]
    assert leftovers and all('.tmp' in n for n in leftovers), leftovers
    assert (work_dir / 'last_checkpoint').read_text().endswith('epoch_1.pth')
    # 3. resumed again (from epoch 1) to the end: the weights are those of
    # the uninterrupted run, bit for bit
    proc = _train(work_dir, '--resume')
    assert 'resumed epoch: 1' in proc.stdout + proc.stderr
    _assert_bit_identical(
        _weights(work_dir / f'epoch_{EPOCHS}.pth'),
        _weights(uninterrupted / f'epoch_{EPOCHS}.pth'))
    # the random state travels in the checkpoint (weights_only loading)
    meta = load_local_checkpoint(str(work_dir / f'epoch_{EPOCHS}.pth'))['meta']
    assert set(meta['rng_state']) >= {'python', 'numpy', 'torch'}


def test_resume_falls_back_to_the_newest_readable_checkpoint(
        uninterrupted, tmp_path):
    import mmsk  # noqa: F401
    from mmsk.checkpoint import CorruptCheckpointError
    from mmsk.engine import find_resumable_checkpoint
    work_dir = tmp_path / 'work'
    shutil.copytree(uninterrupted, work_dir)
    newest = work_dir / f'epoch_{EPOCHS}.pth'
    previous = work_dir / f'epoch_{EPOCHS - 1}.pth'
    (work_dir / 'last_checkpoint').write_text(str(newest))
    assert find_resumable_checkpoint(str(work_dir)) == str(newest)
    data = newest.read_bytes()
    newest.write_bytes(data[:len(data) // 2])  # truncated
    # the best checkpoint (no optimizer state) is never resumed from, even
    # when it is newer than the readable epoch_N
    assert list(work_dir.glob('best_*.pth'))
    import logging

    from mmengine.logging import MMLogger
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        assert find_resumable_checkpoint(str(work_dir)) == str(previous)
    finally:
        logger.removeHandler(handler)
    log = ' '.join(r.getMessage() for r in records)
    assert 'Skipped unreadable checkpoint' in log and str(newest) in log
    # a checkpoint with flipped bytes (same size) is caught as well
    flipped = bytearray(previous.read_bytes())
    middle = len(flipped) // 2
    flipped[middle:middle + 64] = bytes(64)
    previous.write_bytes(bytes(flipped))
    with pytest.raises(CorruptCheckpointError, match='no checkpoint'):
        find_resumable_checkpoint(str(work_dir))
    # an empty work dir is a fresh start, not an error
    assert find_resumable_checkpoint(str(tmp_path / 'empty')) is None


def test_resume_never_picks_a_best_or_unnumbered_checkpoint(tmp_path):
    """``best_*.pth`` holds no optimizer or scheduler state: resuming from
    it would restart the optimizer silently."""
    from mmsk.checkpoint import CorruptCheckpointError
    from mmsk.engine import find_resumable_checkpoint
    for name in ('epoch_2.pth', 'best_accuracy_top1_epoch_3.pth',
                 'epoch_3.pth', 'pretrained.pth', 'ckpt_epoch_1.pth'):
        torch.save({'name': name}, str(tmp_path / name))
    (tmp_path / 'epoch_3.pth').write_bytes(b'PK\x03\x04 truncated')
    assert find_resumable_checkpoint(str(tmp_path)) == str(
        tmp_path / 'epoch_2.pth')
    (tmp_path / 'epoch_2.pth').unlink()
    assert find_resumable_checkpoint(str(tmp_path)) == str(
        tmp_path / 'ckpt_epoch_1.pth')
    (tmp_path / 'ckpt_epoch_1.pth').unlink()
    with pytest.raises(CorruptCheckpointError, match='epoch_3.pth'):
        find_resumable_checkpoint(str(tmp_path))
    (tmp_path / 'epoch_3.pth').unlink()
    assert find_resumable_checkpoint(str(tmp_path)) is None
    # a file that last_checkpoint names is taken, numbered or not
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'pretrained.pth'))
    assert find_resumable_checkpoint(str(tmp_path)) == str(
        tmp_path / 'pretrained.pth')


def test_resume_takes_last_checkpoint_over_an_earlier_runs_files(tmp_path):
    """A second run in the same work dir (a changed config, fewer epochs)
    leaves the first run's higher-numbered files in place: resume goes on
    from the run that stopped, as last_checkpoint says, not from them."""
    from mmsk.engine import find_resumable_checkpoint
    for name in ('epoch_1.pth', 'epoch_2.pth', 'epoch_3.pth'):
        torch.save({'name': name}, str(tmp_path / name))
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_2.pth'))
    assert find_resumable_checkpoint(str(tmp_path)) == str(
        tmp_path / 'epoch_2.pth')
    # its fall-back is the next lower one, never the earlier run's epoch 3
    (tmp_path / 'epoch_2.pth').write_bytes(b'PK\x03\x04 truncated')
    assert find_resumable_checkpoint(str(tmp_path)) == str(
        tmp_path / 'epoch_1.pth')
    # nor to another run's files of another name pattern (iteration-based,
    # or another filename_tmpl)
    torch.save({}, str(tmp_path / 'iter_1.pth'))
    torch.save({}, str(tmp_path / 'ckpt_epoch_1.pth'))
    (tmp_path / 'epoch_1.pth').unlink()
    from mmsk.checkpoint import CorruptCheckpointError
    with pytest.raises(CorruptCheckpointError, match='epoch_2.pth'):
        find_resumable_checkpoint(str(tmp_path))
    # without last_checkpoint, the highest number
    (tmp_path / 'last_checkpoint').unlink()
    assert find_resumable_checkpoint(str(tmp_path)) == str(
        tmp_path / 'epoch_3.pth')


def test_one_cycle_checkpoints_load_and_resume(tmp_path):
    """mmengine's OneCycle scheduler saves its annealing function (a static
    method) in its state: the checkpoints of such runs load with
    weights_only=True and resume with the same function."""
    from mmengine.optim.scheduler.param_scheduler import \
        OneCycleParamScheduler

    from mmsk.checkpoint import UnsafeCheckpointError, load_local_checkpoint
    schedule = [
        dict(type='OneCycleLR', eta_max=0.1, total_steps=8, by_epoch=False,
             anneal_strategy='linear')
    ]
    runner = build_runner(tmp_path, param_scheduler=schedule,
                          **{'train_cfg.max_epochs': 1})
    runner.train()
    path = tmp_path / 'epoch_1.pth'
    state = load_local_checkpoint(str(path))['param_schedulers'][0]
    assert state['anneal_func'] is OneCycleParamScheduler._annealing_linear
    resumed = build_runner(tmp_path / 'resumed', param_scheduler=schedule,
                           **{'train_cfg.max_epochs': 2})
    resumed.resume(str(path))
    (scheduler, ) = resumed.param_schedulers
    assert scheduler.last_step == state['last_step'] > 0
    assert scheduler.anneal_func is OneCycleParamScheduler._annealing_linear

    # the class itself cannot be called from a checkpoint
    class _Call:

        def __reduce__(self):
            return OneCycleParamScheduler, (None, 'lr')

    torch.save({'meta': _Call()}, str(tmp_path / 'call.pth'))
    with pytest.raises(UnsafeCheckpointError, match='Nothing in the file'):
        load_local_checkpoint(str(tmp_path / 'call.pth'))

    # nor any other of its attributes looked up
    class _Lookup:

        def __reduce__(self):
            return getattr, (OneCycleParamScheduler, 'build_iter_from_epoch')

    torch.save({'meta': _Lookup()}, str(tmp_path / 'lookup.pth'))
    with pytest.raises(UnsafeCheckpointError):
        load_local_checkpoint(str(tmp_path / 'lookup.pth'))


def test_exact_resume_hook_refuses_persistent_train_workers(tmp_path):
    from mmsk.engine import ExactResumeHook
    runner = build_runner(
        tmp_path, **{
            'train_dataloader.num_workers': 1,
            'train_dataloader.persistent_workers': True
        })
    with pytest.raises(ValueError, match='persistent_workers=False'):
        ExactResumeHook().before_train(runner)
    # without persistent workers, mmengine's worker seeding (the same
    # every epoch) gives way to torch's, which follows the epoch's seed
    runner = build_runner(tmp_path, **{'train_dataloader.num_workers': 1})
    assert runner.train_dataloader.worker_init_fn is not None
    ExactResumeHook().before_train(runner)
    assert runner.train_dataloader.worker_init_fn is None


def test_exact_resume_hook_refuses_iteration_based_training(tmp_path):
    """An iteration-based run resumed with the hook drew other random
    numbers than the run it continued (up to 1.4e-3 apart in the weights,
    with drop path), without a word."""
    from mmsk.engine import ExactResumeHook
    runner = build_runner(tmp_path, train_cfg=dict(
        _delete_=True, type='IterBasedTrainLoop', max_iters=4))
    with pytest.raises(ValueError, match='ExactResumeHook: makes epoch-based '
                       'training .*IterBasedTrainLoop.*remove ExactResumeHook'):
        ExactResumeHook().before_train(runner)
    ExactResumeHook().before_train(build_runner(tmp_path))


def test_exact_resume_hook_warns_on_a_mid_epoch_checkpoint(monkeypatch):
    import types

    import mmengine.logging

    from mmsk.engine import ExactResumeHook
    said = []
    monkeypatch.setattr(mmengine.logging, 'print_log',
                        lambda msg, **kwargs: said.append(msg))
    runner = types.SimpleNamespace(train_dataloader=[0] * 5)
    ExactResumeHook._warn_mid_epoch(runner, dict(epoch=2, iter=10))
    assert said == []  # the end of epoch 2
    ExactResumeHook._warn_mid_epoch(runner, dict(epoch=2, iter=13))
    assert len(said) == 1 and 'saved mid-epoch (iteration 13, 3 ' \
        'iterations into epoch 3)' in said[0]


def test_resume_takes_a_remote_last_checkpoint_as_mmengine_does(tmp_path):
    """CheckpointHook(out_dir='s3://...') writes a remote path into
    last_checkpoint; only local files are checked for being whole."""
    from mmsk.engine import find_resumable_checkpoint
    (tmp_path / 'last_checkpoint').write_text('s3://bucket/exp/epoch_3.pth')
    assert find_resumable_checkpoint(str(tmp_path)) == \
        's3://bucket/exp/epoch_3.pth'


def test_resume_from_a_folder_says_what_to_give(tmp_path):
    from mmsk.checkpoint import load_local_checkpoint
    with pytest.raises(FileNotFoundError, match='is a folder, not a '
                       'checkpoint file.*--resume alone'):
        load_local_checkpoint(str(tmp_path))


def test_resume_from_a_checkpoint_without_training_state_is_refused(
        trained_work_dir, tmp_path):
    """--resume given a best_*.pth (saved without optimizer and scheduler
    states) went on at epoch 2 with the schedule's first learning rate and
    a fresh momentum, exit 0. It is refused in one line, before any
    weight changes; the run's epoch_1.pth resumes."""
    from conftest import train_tool
    (best, ) = trained_work_dir.glob('best_*.pth')
    work_dir = tmp_path / 'run'
    proc = run_python(args=[
        f'{ROOT}/tools/train.py', MAIN_CONFIG, '--work-dir', str(work_dir),
        '--resume', str(best), '--cfg-options', *TINY_OPTIONS,
        'train_cfg.max_epochs=2'
    ], check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]
    err = proc.stderr.strip().splitlines()[-1]
    assert re.match(r'error: CannotResumeError: checkpoint .*best_accuracy'
                    r'\S*\.pth.? cannot be resumed from: it holds no '
                    r'optimizer, no param_schedulers .*load_from', err), err
    assert not (work_dir / 'epoch_2.pth').exists()
    # what resuming needs, one piece at a time
    from mmsk.engine.loading import CannotResumeError, check_resumable
    full = torch.load(str(trained_work_dir / 'epoch_1.pth'),
                      weights_only=False)
    check_resumable(full, 'f', ('optimizer', 'param_schedulers'))
    for key in ('optimizer', 'param_schedulers'):
        with pytest.raises(CannotResumeError, match=f'holds no {key} '):
            check_resumable({k: v for k, v in full.items() if k != key}, 'f',
                            ('optimizer', 'param_schedulers'))
    with pytest.raises(CannotResumeError, match='no epoch and iteration in '
                       'its meta'):
        check_resumable(dict(full, meta={}), 'f', ('optimizer', ))
    # a run whose CheckpointHook saves no optimizer or scheduler state
    # resumes without them, as before
    from mmengine.hooks import CheckpointHook

    from mmsk.engine.loading import _resume_needs

    class Run:
        hooks = [CheckpointHook(save_optimizer=False)]
        param_schedulers = [object()]

    assert _resume_needs(Run, True, True) == ('param_schedulers', )
    Run.hooks = [CheckpointHook()]
    assert _resume_needs(Run, True, True) == ('optimizer',
                                              'param_schedulers')
    assert _resume_needs(Run, False, True) == ('param_schedulers', )
    Run.hooks = [CheckpointHook(save_param_scheduler=False)]
    assert _resume_needs(Run, True, True) == ('optimizer', )
    Run.hooks, Run.param_schedulers = [CheckpointHook()], None
    assert _resume_needs(Run, True, True) == ('optimizer', )
    # the run's own checkpoint resumes
    shutil.copy(trained_work_dir / 'epoch_1.pth', tmp_path / 'epoch_1.pth')
    proc = train_tool(work_dir, '--resume', str(tmp_path / 'epoch_1.pth'),
                      epochs=2)
    assert (work_dir / 'epoch_2.pth').is_file()
