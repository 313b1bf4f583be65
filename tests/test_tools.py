"""The train/test tools, mmpretrain's shipped tool, and the dist scripts."""
import json
import os
import re
import sys

import pytest

from conftest import MAIN_CONFIG, ROOT, free_port, run_python, train_tool


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
    # --out is written aside and renamed: no temporary file is left
    assert sorted(p.name for p in tmp_path.iterdir()
                  if p.name.startswith('.')) == []


def test_test_tool_with_tta_loads_the_checkpoint(trained_work_dir, tmp_path):
    """--tta wraps the model in mmpretrain's AverageClsScoreTTA, whose keys
    carry 'module.': the strict check refused every checkpoint (190
    missing keys) although MMEngine's loader unwraps the TTA model. A
    checkpoint of another model is still refused."""
    args = [
        f'{ROOT}/tools/test.py', MAIN_CONFIG,
        str(trained_work_dir / 'epoch_1.pth'), '--tta', '--work-dir',
        str(tmp_path), '--cfg-options', 'test_dataloader.dataset.indices=16',
        'test_dataloader.num_workers=0',
        'test_dataloader.persistent_workers=False',
        # the options apply after --tta has wrapped the model
        'model.module.backbone.stem_channels=8',
        'model.module.backbone.base_channels=8',
        'model.module.head.in_channels=64'
    ]
    proc = run_python(args=args)
    assert 'accuracy/top1' in proc.stdout + proc.stderr
    proc = run_python(args=args[:-3] + ['model.module.head.in_channels=512'],
                      check=False)
    assert proc.returncode == 1
    assert re.search(r'does not fit the model ImageClassifier: .*'
                     r'mis-shaped keys: backbone\.bn1', proc.stderr), \
        proc.stderr[-2000:]


def test_mmpretrain_shipped_train_tool_runs_mmsk_config(tmp_path):
    from mmsk.utils.tools import mmpretrain_tool_path
    train_tool(tmp_path, tool=mmpretrain_tool_path('train.py'))
    assert (tmp_path / 'epoch_1.pth').is_file()


# Saves every rank's parameters at the end of training (rank{R}.pth).
RANK_DUMP = '''
import os.path as osp
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class DumpRankWeights(Hook):
    def after_train(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) \\
            else runner.model
        # parameters (DDP keeps them equal; BN statistics are each rank's
        # own after its last forward, and rank 0's are saved)
        torch.save({k: v.detach() for k, v in model.named_parameters()},
                   osp.join(runner.work_dir, f'rank{get_rank()}.pth'))
'''


def test_dist_scripts_two_processes_on_cpu(tmp_path):
    """tools/dist_train.sh CONFIG 2 (torchrun, gloo): both ranks end with
    the same parameters and one checkpoint is written; tools/dist_test.sh
    evaluates it with 2 processes."""
    import subprocess
    import sys

    import torch

    from conftest import TINY_OPTIONS
    (tmp_path / 'rank_dump.py').write_text(RANK_DUMP)
    config = tmp_path / 'dist.py'
    config.write_text(
        f'_base_ = [{MAIN_CONFIG!r}]\n'
        "custom_imports = dict(imports=['mmsk', 'rank_dump'], "
        'allow_failed_imports=False)\n'
        "custom_hooks = [dict(type='ExactResumeHook'), "
        "dict(type='DumpRankWeights')]\n")
    work_dir = tmp_path / 'work'
    env = dict(
        os.environ,
        PYTHON=sys.executable,
        PORT=free_port(),
        OMP_NUM_THREADS='1',
        PYTHONPATH=os.pathsep.join(
            [str(tmp_path), os.environ.get('PYTHONPATH', '')]))
    train = subprocess.run([
        'bash', f'{ROOT}/tools/dist_train.sh',
        str(config), '2', '--work-dir',
        str(work_dir), '--cfg-options', *TINY_OPTIONS,
        'train_cfg.max_epochs=1'
    ],
                           env=env,
                           capture_output=True,
                           text=True,
                           timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    assert sorted(p.name for p in work_dir.glob('epoch_*.pth')) == \
        ['epoch_1.pth']
    ranks = [
        torch.load(work_dir / f'rank{r}.pth', weights_only=True)
        for r in (0, 1)
    ]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
    import mmsk  # noqa: F401
    from mmsk.checkpoint import load_local_checkpoint
    saved = load_local_checkpoint(str(work_dir / 'epoch_1.pth'))
    assert all(
        torch.equal(saved['state_dict'][k], v) for k, v in ranks[0].items())
    # --out: the predictions of both ranks' images, written once (by rank
    # 0) through a temporary file that no rank leaves behind
    preds = tmp_path / 'out' / 'preds.pkl'
    test = subprocess.run([
        'bash', f'{ROOT}/tools/dist_test.sh', MAIN_CONFIG,
        str(work_dir / 'epoch_1.pth'), '2', '--work-dir',
        str(tmp_path / 'test'), '--out', str(preds),
        '--cfg-options', *TINY_OPTIONS,
        'test_dataloader.dataset.indices=64', 'test_dataloader.num_workers=0',
        'test_dataloader.persistent_workers=False'
    ],
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=600)
    assert test.returncode == 0, test.stderr[-3000:]
    assert re.search(r'accuracy/top1: \d', test.stdout + test.stderr)
    assert [p.name for p in preds.parent.iterdir()] == ['preds.pkl']
    import pickle
    with open(preds, 'rb') as f:
        samples = pickle.load(f)
    assert len(samples) == 64
    assert sorted(int(s['sample_idx']) for s in samples) == list(range(64))


# (case, tool arguments, start of the last stderr line); {ckpt}: a corrupt
# checkpoint, {given}: the folder that holds it, {tmp}: the test's folder
BAD_INPUT = [
    ('missing-config', ['train.py', '{tmp}/missing.py'],
     'error: FileNotFoundError: [Errno 2] No such file or directory: '),
    ('corrupt-checkpoint', ['test.py', '--work-dir', '{tmp}/wd'],
     "error: CorruptCheckpointError: Cannot read checkpoint '{ckpt}'"),
    # a config that is not Python
    ('broken-config',
     ['train.py', '{given}/broken.py', '--work-dir', '{tmp}/wd'],
     'error: SyntaxError: config {given}/broken.py is not valid Python: '),
    # output paths, checked before any work: --out over an input (it
    # replaced the checkpoint with the results), a folder, a suffix that
    # the tool cannot write; a --work-dir that is a file
    ('out-is-input', ['test.py', '--out', '{ckpt}'],
     "error: output '{ckpt}' is the input"),
    ('out-is-folder', ['test.py', '--out', '{given}', '--out-item',
                       'metrics'],
     "error: output '{given}' is a folder: give a file name"),
    ('out-suffix', ['test.py', '--out={given}/m.pth', '--out-item',
                    'metrics'],
     "error: --out '{given}/m.pth': --out-item metrics writes .json, "),
    ('out-new-folder', ['test.py', '--out', '{tmp}/new/preds.json'],
     "error: --out '"),
    ('work-dir-is-file', ['test.py', '--work-dir', '{ckpt}'],
     "error: --work-dir '{ckpt}' is a file, not a folder"),
    # folders no one can write to (sysfs creates no files, not even for
    # root): a PermissionError traceback after the whole test, or at once
    ('out-unwritable', ['test.py', '--out', '/sys/mmsk/preds.pkl'],
     "error: cannot write '/sys/mmsk/preds.pkl': folder '/sys' is not "
     "writable"),
    ('work-dir-unwritable', ['train.py', MAIN_CONFIG, '--work-dir',
                             '/sys/mmsk-run'],
     "error: cannot write --work-dir '/sys/mmsk-run': folder '/sys' is not "
     "writable"),
    # CONFIG and CHECKPOINT swapped, or a folder: 'Only py/yml/yaml/json
    # type are supported now!' in a traceback
    ('config-is-checkpoint', ['train.py', '{ckpt}'],
     "error: config '{ckpt}' is not a config file (.py, .yml, .yaml, "
     ".json): it looks like a checkpoint; the config comes first"),
    ('config-is-folder', ['train.py', '{given}'],
     "error: config '{given}' is a folder, not a config file"),
    # a run that fails after --out's folders were made removes them all
    ('out-new-folders', ['test.py', '--out', '{tmp}/new/sub/preds.pkl'],
     "error: CorruptCheckpointError: "),
]


@pytest.mark.parametrize('case, args, want', BAD_INPUT,
                         ids=[case for case, _, _ in BAD_INPUT])
def test_train_and_test_tools_report_bad_input_in_one_line(tmp_path, case,
                                                           args, want):
    """A missing config or checkpoint and a corrupt checkpoint ended in a
    traceback; now one ``error:`` line and exit code 1."""
    given = tmp_path / 'in'
    given.mkdir()
    (given / 'corrupt.pth').write_text('not a checkpoint')
    (given / 'broken.py').write_text('model = dict(type=\n')
    ckpt = str(given / 'corrupt.pth')
    names = dict(ckpt=ckpt, given=str(given), tmp=str(tmp_path))
    tool, *rest = [arg.format(**names) for arg in args]
    if tool == 'test.py':
        rest = [MAIN_CONFIG, ckpt] + rest
    proc = run_python(args=[f'{ROOT}/tools/{tool}', *rest], check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(
        want.format(**names)), proc.stderr[-2000:]
    # nothing was written or created
    assert (given / 'corrupt.pth').read_text() == 'not a checkpoint'
    assert sorted(p.name for p in given.iterdir()) == [
        'broken.py', 'corrupt.pth']
    assert not (tmp_path / 'new').exists()


def test_dist_scripts_check_their_arguments_and_find_the_venv(tmp_path):
    """Without PYTHON the scripts ran the first ``python`` on PATH (often
    one without torch); now the set-up's .venv when there is one. Missing
    arguments gave a torchrun traceback; now a usage line."""
    import subprocess
    env = {k: v for k, v in os.environ.items() if k != 'PYTHON'}
    for script, args in [('dist_train.sh', ['cfg.py']),
                         ('dist_train.sh', ['cfg.py', 'two']),
                         ('dist_test.sh', ['cfg.py', 'ckpt.pth'])]:
        proc = subprocess.run(['bash', f'{ROOT}/tools/{script}', *args],
                              env=env, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 2
        assert proc.stderr.startswith(f'usage: tools/{script} CONFIG ')
    # a missing config or checkpoint: one line, before torchrun starts a
    # process (each of which printed its traceback)
    for script, args in [
            ('dist_train.sh', [str(tmp_path / 'none.py'), '2']),
            ('dist_test.sh', [MAIN_CONFIG, str(tmp_path / 'none.pth'), '2'])]:
        proc = subprocess.run(['bash', f'{ROOT}/tools/{script}', *args],
                              env=env, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 1
        assert proc.stderr.startswith('error: no such ') and \
            proc.stderr.count('\n') == 1, proc.stderr
    # a folder where a file goes ('no such checkpoint file' before)
    for script, args, what in [
            ('dist_train.sh', [str(tmp_path), '2'], 'config'),
            ('dist_test.sh', [MAIN_CONFIG, str(tmp_path), '2'],
             'checkpoint')]:
        proc = subprocess.run(['bash', f'{ROOT}/tools/{script}', *args],
                              env=env, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 1
        assert proc.stderr == f'error: {what} {tmp_path} is a folder, not ' \
            f'a {what} file\n', proc.stderr
    # PATH without a python: only the .venv's can run train.py, which
    # then reports the config that is not Python in one line
    (tmp_path / 'bin').mkdir()
    (tmp_path / 'broken.py').write_text('model = dict(type=\n')
    bare = dict(env, PATH=f"{tmp_path / 'bin'}:/bin", OMP_NUM_THREADS='1',
                PORT=free_port())
    proc = subprocess.run(
        ['bash', f'{ROOT}/tools/dist_train.sh', str(tmp_path / 'broken.py'),
         '1', '--work-dir', str(tmp_path / 'wd')], env=bare,
        capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    if not os.path.exists(os.path.join(ROOT, '.venv', 'bin', 'python')):
        # mmsk installed without the set-up: the first python on PATH
        assert 'python: command not found' in proc.stderr, proc.stderr
        return
    assert 'error: SyntaxError: ' in proc.stderr, proc.stderr[-3000:]


def _anchors(markdown: str) -> set:
    """GitHub's anchors of a markdown file's headings."""
    anchors = set()
    for heading in re.findall(r'^#+ (.+)$', markdown, flags=re.M):
        slug = re.sub(r'[^\w\- ]', '', heading.strip().lower())
        anchors.add(slug.replace(' ', '-'))
    return anchors


def test_relative_links_in_the_docs_resolve():
    """Every relative link of the READMEs and docs names a file of the
    repository (a benchmark record, a figure, a config), and its
    ``#anchor``, if any, a heading of that file."""
    from pathlib import Path
    root = Path(ROOT)
    docs = [root / 'README.md', root / 'benchmarks' / 'README.md',
            *sorted((root / 'docs').glob('*.md')),
            *sorted((root / 'configs').glob('*/README.md'))]
    broken, checked = [], 0
    for doc in docs:
        text = doc.read_text()
        for target in re.findall(r'\]\(([^)\s]+)\)', text):
            if re.match(r'[a-z]+:', target):
                continue  # https://, mailto:
            path, _, anchor = target.partition('#')
            linked = (doc.parent / path) if path else doc
            checked += 1
            if not linked.exists():
                broken.append(f'{doc.relative_to(root)}: {target}')
            elif anchor and linked.suffix == '.md' and \
                    anchor not in _anchors(linked.read_text()):
                broken.append(f'{doc.relative_to(root)}: {target} (no '
                              f'heading #{anchor})')
    assert checked > 20
    assert not broken, broken


def test_test_workers_share_the_cores():
    """Under `make test`'s pytest-xdist workers, no worker, and no Python
    subprocess that a test starts, asks for more than its share of the
    cores; in one process, torch keeps at most 2 threads."""
    import torch

    from conftest import WORKERS
    cores = os.cpu_count() or 1
    assert 1 <= torch.get_num_threads() <= min(2, max(1, cores // WORKERS))
    if WORKERS > 1:
        child = run_python('import torch; print(torch.get_num_threads())')
        assert int(child.stdout) == torch.get_num_threads()


def test_main_job_takes_relative_paths_and_says_when_no_best_exists(
        tmp_path):
    """CONFIG and WORK_DIR relative to the caller's folder (they were read
    from the repository root), and a config that saves no best checkpoint
    (a bare `ls: cannot access` before)."""
    import subprocess
    (tmp_path / 'cfgs').mkdir()
    (tmp_path / 'cfgs' / 'tiny.py').write_text(f'''
_base_ = {MAIN_CONFIG!r}
model = dict(backbone=dict(stem_channels=8, base_channels=8),
             head=dict(in_channels=64))
train_dataloader = dict(dataset=dict(indices=64), num_workers=0,
                        persistent_workers=False)
val_dataloader = dict(dataset=dict(indices=32), num_workers=0,
                      persistent_workers=False)
train_cfg = dict(max_epochs=1)
default_hooks = dict(checkpoint=dict(save_best=None))
''')
    env = dict(os.environ, PYTHON=sys.executable)
    # an earlier run's best file in the work dir was tested and its
    # accuracy reported as this run's
    (tmp_path / 'work').mkdir()
    (tmp_path / 'work' / 'best_accuracy_top1_epoch_3.pth').write_bytes(b'x')
    proc = subprocess.run(
        ['bash', f'{ROOT}/tools/main_job.sh', 'cfgs/tiny.py', 'work'],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert 'error: training wrote no best_*.pth in' in proc.stderr
    assert 'testing' not in proc.stdout
    assert (tmp_path / 'work' / 'epoch_1.pth').is_file()
    proc = subprocess.run(
        ['bash', f'{ROOT}/tools/main_job.sh', 'cfgs/missing.py'],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert 'error: no such config: cfgs/missing.py' in proc.stderr
    # an argument past WORK_DIR was ignored without a word
    proc = subprocess.run(
        ['bash', f'{ROOT}/tools/main_job.sh', 'cfgs/tiny.py', 'work',
         'extra'], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith('error: too many arguments: cfgs/tiny.py '
                                  'work extra (usage: ')


def test_main_job_resumes_a_run_that_stopped(tmp_path):
    """`make main RESUME=1` / `main_job.sh --resume` continue a run that
    stopped from its newest whole checkpoint (a rerun trained from the start
    before, and said nothing of the run it started over)."""
    import subprocess
    import torch
    (tmp_path / 'tiny.py').write_text(f'''
_base_ = {MAIN_CONFIG!r}
model = dict(backbone=dict(stem_channels=8, base_channels=8),
             head=dict(in_channels=64))
train_dataloader = dict(dataset=dict(indices=64), num_workers=0,
                        persistent_workers=False)
val_dataloader = dict(dataset=dict(indices=32), num_workers=0,
                      persistent_workers=False)
test_dataloader = dict(dataset=dict(indices=32), num_workers=0,
                       persistent_workers=False)
train_cfg = dict(max_epochs=2)
''')
    work = tmp_path / 'work'
    work.mkdir()
    # a work dir that holds an earlier run: a fresh run says it starts over
    (work / 'last_checkpoint').write_text(str(work / 'epoch_9.pth'))
    env = dict(os.environ, PYTHON=sys.executable)
    job = ['bash', f'{ROOT}/tools/main_job.sh']
    proc = subprocess.run(job + ['tiny.py', 'work'], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'holds an earlier run (last checkpoint:' in proc.stderr
    assert 'epoch_9.pth); this run trains from the start' in proc.stderr
    assert 'main_job.sh --resume' in proc.stderr
    assert 'resumed epoch' not in proc.stdout + proc.stderr
    full = torch.load(work / 'epoch_2.pth', map_location='cpu',
                      weights_only=False)
    # the run stopped during epoch 2: only epoch 1's checkpoint was written
    (work / 'epoch_2.pth').unlink()
    for best in work.glob('best_*.pth'):
        best.unlink()
    (work / 'last_checkpoint').write_text(str(work / 'epoch_1.pth'))
    proc = subprocess.run(job + ['--resume', 'tiny.py', 'work'],
                          cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert 'resuming from the newest whole checkpoint' in proc.stderr
    assert 'resumed epoch: 1, iter: 1' in log
    assert 'holds an earlier run' not in proc.stderr
    assert re.search(r'\[main\] \S*tiny\.py: test top-1 = [0-9.]+%',
                     proc.stdout)
    resumed = torch.load(work / 'epoch_2.pth', map_location='cpu',
                         weights_only=False)
    assert resumed['meta']['epoch'] == 2
    # only epoch 2 was trained again, from epoch 1's weights and state: the
    # same weights as the run that never stopped
    for key, value in full['state_dict'].items():
        assert torch.equal(value, resumed['state_dict'][key]), key
    proc = subprocess.run(job + ['--resum', 'tiny.py'], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert 'error: unknown option --resum' in proc.stderr
