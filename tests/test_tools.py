"""The train/test tools, mmpretrain's shipped tool, and the dist scripts."""
import json
import os
import re

from conftest import MAIN_CONFIG, ROOT, run_python, train_tool


def test_resume_continues_from_the_last_checkpoint(trained_work_dir,
                                                   tmp_path):
    import shutil
    work_dir = tmp_path / 'resume'
    shutil.copytree(trained_work_dir, work_dir)
    proc = train_tool(work_dir, '--resume', epochs=2)
    log = proc.stdout + proc.stderr
    assert re.search(r'resumed epoch: 1', log), log[-2000:]
    assert (work_dir / 'epoch_2.pth').is_file()


def test_test_tool_prints_accuracy(trained_work_dir, tmp_path):
    out = tmp_path / 'metrics.json'
    proc = run_python(args=[
        f'{ROOT}/tools/test.py', MAIN_CONFIG,
        str(trained_work_dir / 'epoch_1.pth'), '--work-dir',
        str(tmp_path), '--out',
        str(out), '--out-item', 'metrics', '--cfg-options',
        'test_dataloader.dataset.indices=64', 'test_dataloader.num_workers=0',
        'test_dataloader.persistent_workers=False',
        'model.backbone.stem_channels=8', 'model.backbone.base_channels=8',
        'model.head.in_channels=64'
    ])
    assert 'accuracy/top1' in proc.stdout + proc.stderr
    assert 0 <= json.loads(out.read_text())['accuracy/top1'] <= 100


def test_mmpretrain_shipped_train_tool_runs_mmsk_config(tmp_path):
    from mmsk.utils.tools import mmpretrain_tool_path
    train_tool(tmp_path, tool=mmpretrain_tool_path('train.py'))
    assert (tmp_path / 'epoch_1.pth').is_file()


def test_dist_scripts_on_cpu(trained_work_dir, tmp_path):
    import subprocess
    import sys
    from conftest import TINY_OPTIONS
    env = dict(os.environ, PYTHON=sys.executable, PORT='29533')
    train = subprocess.run([
        'bash', f'{ROOT}/tools/dist_train.sh', MAIN_CONFIG, '1',
        '--work-dir',
        str(tmp_path), '--cfg-options', *TINY_OPTIONS,
        'train_cfg.max_epochs=1'
    ],
                           env=env,
                           capture_output=True,
                           text=True,
                           timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    assert (tmp_path / 'epoch_1.pth').is_file()
    test = subprocess.run([
        'bash', f'{ROOT}/tools/dist_test.sh', MAIN_CONFIG,
        str(tmp_path / 'epoch_1.pth'), '1', '--work-dir',
        str(tmp_path), '--cfg-options', *TINY_OPTIONS
    ],
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=600)
    assert test.returncode == 0, test.stderr[-3000:]
    assert 'accuracy/top1' in test.stdout + test.stderr
