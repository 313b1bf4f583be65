"""Shared helpers of mmsk's test suite."""
import contextlib
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

# Keep the 2-core CI fast and deterministic: at most 2 torch threads. Under
# pytest-xdist (`make test` runs two workers, one per core of the CI) each
# worker takes its share of the cores, and so do the Python subprocesses that
# its tests start: workers that each ask for every core slow each other down.
WORKERS = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
THREADS = max(1, min(2, (os.cpu_count() or 1) // WORKERS))
torch.set_num_threads(THREADS)
if WORKERS > 1:
    os.environ['OMP_NUM_THREADS'] = str(THREADS)


def run_python(code=None, args=(), timeout=600, cwd=ROOT, check=True,
               env=None):
    """Run Python in a fresh interpreter (nothing imported beforehand);
    ``env``: variables to set in it besides this process's."""
    cmd = [sys.executable] + (['-c', code] if code is not None else []) + \
        list(args)
    proc = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env=None if env is None else {**os.environ, **env})
    if check and proc.returncode != 0:
        raise AssertionError(f'{cmd[:4]} failed ({proc.returncode}):\n'
                             f'{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}')
    return proc


def free_port():
    """A TCP port that no process listens on now, for a test's torchrun
    (a fixed port fails when another run of the suite holds it)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return str(sock.getsockname()[1])


def randomize_bn(model, seed=0):
    """Give every norm layer non-trivial statistics and affine weights, so
    that weight-parity tests compare something."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)
    return model


@pytest.fixture(autouse=True)
def _mmpretrain_scope():
    from mmengine.logging import MMLogger
    # init_weights logs every parameter at INFO: keep test output readable
    MMLogger.get_instance('mmengine').setLevel('WARNING')
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')
    yield


def build_backbone(cfg):
    import mmsk  # noqa: F401
    from mmsk.registry import MODELS
    return MODELS.build(dict(cfg))


MAIN_CONFIG = f'{ROOT}/configs/sknet/sknet18-cifar_1xb64_mnist5k.py'
# Shrink the main job to seconds: tiny widths, a slice of the data.
TINY_OPTIONS = [
    'model.backbone.stem_channels=8', 'model.backbone.base_channels=8',
    'model.head.in_channels=64', 'train_dataloader.dataset.indices=128',
    'val_dataloader.dataset.indices=64', 'train_dataloader.num_workers=0',
    'val_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
    'val_dataloader.persistent_workers=False'
]


def build_runner(work_dir, tiny=True, **options):
    """An MMEngine Runner of the main config (TINY_OPTIONS unless ``tiny``
    is False, then ``options``), built in this process."""
    import mmsk  # noqa: F401
    from mmengine.config import Config, DictAction
    from mmengine.runner import Runner
    cfg = Config.fromfile(MAIN_CONFIG)
    if tiny:
        cfg.merge_from_dict({
            key: DictAction._parse_iterable(value)
            for key, value in (o.split('=', 1) for o in TINY_OPTIONS)
        })
    cfg.merge_from_dict(options)
    cfg.work_dir = str(work_dir)
    return Runner.from_cfg(cfg)


def train_tool(work_dir, *extra, tool=f'{ROOT}/tools/train.py', epochs=1,
               config=MAIN_CONFIG):
    return run_python(args=[
        tool, config, '--work-dir',
        str(work_dir), *extra, '--cfg-options', *TINY_OPTIONS,
        f'train_cfg.max_epochs={epochs}'
    ])


@pytest.fixture(scope='session')
def trained_work_dir(tmp_path_factory):
    """A work dir with epoch_1.pth written by tools/train.py."""
    work_dir = tmp_path_factory.mktemp('train')
    train_tool(work_dir)
    assert (work_dir / 'epoch_1.pth').is_file()
    return work_dir


def convert_and_rebuild(tool, convert, name, src, dst, cli=False):
    """Convert ``src`` to ``dst`` with ``tools/model_converters/TOOL`` (in a
    fresh interpreter) or with ``convert``, and rebuild the eval-mode
    classifier from the config that ``dst`` carries in ``meta['cfg']``, as
    the converters' docstrings say (read as data, not run)."""
    from mmpretrain.apis import init_model

    from mmsk.checkpoint import config_from_checkpoint
    if cli:
        run_python(args=[
            f'{ROOT}/tools/model_converters/{tool}', name,
            str(src), str(dst)
        ])
    else:
        convert(name, str(src), str(dst), progress=None)
    return init_model(config_from_checkpoint(str(dst)), str(dst)).eval()


@contextlib.contextmanager
def cuda_autocast_policy():
    """Inside a CPU ``torch.autocast``, the ops whose autocast policy differs
    on CUDA follow CUDA's: ``softmax`` and ``sum`` run in fp32 when given
    fp16 / bf16 inputs (on CPU they keep the input's dtype), and
    ``group_norm`` takes fp32 inputs. What a GPU's mixed precision hands a
    block, without a GPU."""
    low = (torch.float16, torch.bfloat16)
    below_autocast = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)

    def fp32_unless_given(x, dtype):
        # CUDA's "fp32_set_opt_dtype" ops: fp32 when no dtype is asked for
        return torch.float32 if dtype is None and x.dtype in low else dtype

    def softmax(x, dim, dtype=None):
        with torch._C._ExcludeDispatchKeyGuard(below_autocast):
            return torch.ops.aten.softmax.int(x, dim,
                                              fp32_unless_given(x, dtype))

    def sum_dim(x, dim, keepdim=False, dtype=None):
        with torch._C._ExcludeDispatchKeyGuard(below_autocast):
            return torch.ops.aten.sum.dim_IntList(
                x, dim, keepdim, dtype=fp32_unless_given(x, dtype))

    def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5,
                   cudnn_enabled=True):
        def fp32(t):
            return t.float() if t is not None and t.dtype in low else t

        with torch._C._ExcludeDispatchKeyGuard(below_autocast):
            return torch.ops.aten.group_norm(fp32(x), num_groups,
                                             fp32(weight), fp32(bias), eps,
                                             cudnn_enabled)

    lib = torch.library.Library('aten', 'IMPL')
    try:
        lib.impl('softmax.int', softmax, 'AutocastCPU')
        lib.impl('sum.dim_IntList', sum_dim, 'AutocastCPU')
        lib.impl('group_norm', group_norm, 'AutocastCPU')
        yield
    finally:
        lib._destroy()
