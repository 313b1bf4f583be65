"""ChannelsLastHook: the main job trains in channels_last to the same
result, the model and every batch really are channels_last, checkpoints
load anywhere, and mmdet / mmseg models train with it."""
import ast
import copy
import json
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import init_default_scope

from conftest import MAIN_CONFIG, ROOT, TINY_OPTIONS, train_tool

CL = torch.channels_last
CL_CONFIG = (f'{ROOT}/configs/sknet/'
             'sknet18-cifar-channels-last_1xb64_mnist5k.py')


def is_cl(t):
    return t.dim() == 4 and t.is_contiguous(memory_format=CL)


def is_nchw(t):
    """Contiguous in NCHW and not in NHWC (for tensors where the two
    differ: more than one channel and more than one pixel)."""
    return t.is_contiguous() and not is_cl(t)


def conv_weights(model):
    return [p for p in model.parameters() if p.dim() == 4]


def val_top1(work_dir):
    (log, ) = work_dir.glob('*/vis_data/scalars.json')
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    return [line['accuracy/top1'] for line in lines if 'accuracy/top1' in line]


def test_main_job_with_the_hook_reaches_the_same_result(trained_work_dir,
                                                        tmp_path):
    train_tool(tmp_path, config=CL_CONFIG)
    from mmsk.checkpoint import load_local_checkpoint  # weights_only=True
    plain = load_local_checkpoint(str(trained_work_dir / 'epoch_1.pth'))
    ours = load_local_checkpoint(str(tmp_path / 'epoch_1.pth'))
    assert ours['state_dict'].keys() == plain['state_dict'].keys()
    for key, value in ours['state_dict'].items():
        # saved as plain NCHW tensors, equal to the NCHW run's (to 1e-4:
        # two steps of BatchNorm-amplified rounding of other conv kernels)
        assert value.is_contiguous(), key
        torch.testing.assert_close(value, plain['state_dict'][key],
                                   rtol=1e-4, atol=1e-4, msg=key)
    assert val_top1(tmp_path) == val_top1(trained_work_dir) and \
        val_top1(tmp_path)

    # the checkpoint loads into the plain config's model (no hook)
    from mmpretrain.apis import init_model
    cfg = tiny_config(MAIN_CONFIG)
    x = torch.randn(2, 1, 28, 28)
    outs = []
    for ckpt in (trained_work_dir / 'epoch_1.pth', tmp_path / 'epoch_1.pth'):
        model = init_model(cfg, str(ckpt))
        assert all(p.is_contiguous() for p in conv_weights(model))
        with torch.no_grad():
            outs.append(model(x, mode='tensor'))
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-4)


def tiny_config(path, work_dir=None):
    cfg = Config.fromfile(path)
    for option in TINY_OPTIONS:
        key, value = option.split('=', 1)
        cfg.merge_from_dict({key: ast.literal_eval(value)})
    cfg.train_cfg.max_epochs = 1
    cfg.log_level = 'WARNING'
    if work_dir is not None:
        cfg.work_dir = str(work_dir)
    return cfg


class Probe(Hook):
    """Records the layout of the first stage's inputs (the digits have one
    channel, for which NCHW and NHWC are the same) and of the conv weights,
    and the losses."""

    def __init__(self):
        self.inputs, self.weights, self.losses = [], [], []

    def before_run(self, runner):
        def record(module, args):
            x = args[0]
            self.inputs.append((module.training, 'nhwc' if is_cl(x) else
                                'nchw' if is_nchw(x) else 'other'))

        backbone = runner.model.backbone
        stage = getattr(backbone, backbone.res_layers[0])
        stage.register_forward_pre_hook(record)

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        convs = conv_weights(runner.model)
        self.weights.append(all(is_cl(p) for p in convs) and
                            any(not p.is_contiguous() for p in convs))
        self.losses.append(outputs['loss'].item())


def probe_run(config, work_dir):
    from mmengine.runner import Runner
    cfg = tiny_config(config, work_dir)
    probe = Probe()
    runner = Runner.from_cfg(cfg)
    runner.register_hook(probe)
    runner.train()
    return probe


def test_model_and_batches_are_channels_last_during_the_run(tmp_path):
    ours = probe_run(CL_CONFIG, tmp_path / 'cl')
    plain = probe_run(MAIN_CONFIG, tmp_path / 'plain')
    # 128 images in batches of 64, then validation
    assert len(ours.losses) == 2
    assert {training for training, _ in ours.inputs} == {True, False}
    assert {layout for _, layout in ours.inputs} == {'nhwc'}
    assert all(ours.weights)
    assert {layout for _, layout in plain.inputs} == {'nchw'}
    assert not any(plain.weights)
    torch.testing.assert_close(ours.losses, plain.losses, rtol=1e-5,
                               atol=1e-5)


def test_hook_is_registered_in_every_scope():
    import mmsk  # noqa: F401
    from mmengine.registry import HOOKS
    from mmpretrain.registry import HOOKS as MMPRETRAIN_HOOKS

    from mmsk.engine import ChannelsLastHook
    assert MMPRETRAIN_HOOKS.get('ChannelsLastHook') is ChannelsLastHook
    for scope in ('mmpretrain', 'mmdet', 'mmseg'):
        init_default_scope(scope)
        hook = HOOKS.build(dict(type='mmsk.ChannelsLastHook'))
        assert type(hook) is ChannelsLastHook


@pytest.mark.parametrize('name', [
    'retinanet_sknet50_fpn_1x_coco.py',
    'deeplabv3_sknet50-d8_4xb2-40k_cityscapes-512x1024.py'
])
def test_downstream_model_trains_a_step_in_channels_last(name):
    from mmengine.registry import HOOKS
    from test_downstream import build_model, det_batch, seg_batch
    from test_downstream import tiny_config as tiny_downstream_config
    cfg = tiny_downstream_config(name)
    plain = build_model(cfg)
    plain.init_weights()
    model = copy.deepcopy(plain)
    init_default_scope(cfg.default_scope)
    hook = HOOKS.build(dict(type='mmsk.ChannelsLastHook'))
    hook.before_train(SimpleNamespace(model=model))
    assert all(is_cl(p) for p in conv_weights(model))

    batch = det_batch(False) if cfg.default_scope == 'mmdet' else seg_batch()
    losses = []
    for m in (plain, model):
        m.train()
        torch.manual_seed(0)  # the same dropout masks
        data = m.data_preprocessor(copy.deepcopy(batch), True)
        assert (is_cl if m is model else is_nchw)(data['inputs'])
        loss, _ = m.parse_losses(m(**data, mode='loss'))
        loss.backward()
        losses.append(loss.item())
    grads = [p.grad for p in conv_weights(model.backbone) if p.requires_grad]
    assert grads and all(g is not None and is_cl(g) for g in grads)
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
    hook.after_run(None)
    data = model.data_preprocessor(copy.deepcopy(batch), True)
    assert is_nchw(data['inputs'])  # the hook left nothing behind


class StateProbe(Hook):
    """The layouts of the optimizer's state and of EMAHook's copy of the
    model, as the first training step after (re)starting left them."""

    def __init__(self):
        self.state = self.ema = None

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if self.state is not None:
            return
        optimizer = runner.optim_wrapper.optimizer
        self.state = [
            (layout(p), layout(optimizer.state[p]['momentum_buffer']))
            for p in conv_weights(runner.model)]
        for hook in runner.hooks:
            if hasattr(hook, 'ema_model'):
                self.ema = [layout(p) for p in conv_weights(hook.ema_model)]


def layout(t):
    """'nhwc' or 'nchw' where the two differ, else 'either' (1x1 kernels,
    one input channel)."""
    return 'nhwc' if is_cl(t) and not t.is_contiguous() else \
        'nchw' if is_nchw(t) else 'either'



def run_tiny(work_dir, hook, epochs=1, probe=None, extra=(), **options):
    from mmengine.runner import Runner
    cfg = tiny_config(MAIN_CONFIG, work_dir)
    cfg.train_cfg.max_epochs = epochs
    cfg.custom_hooks = [dict(type='ExactResumeHook'), *extra] + (
        [dict(type='mmsk.ChannelsLastHook')] if hook else [])
    cfg.merge_from_dict(options)
    runner = Runner.from_cfg(cfg)
    if probe is not None:
        runner.register_hook(probe)
    runner.train()
    return runner


def test_resumed_optimizer_state_takes_the_weights_layout(tmp_path):
    """A plain checkpoint resumed with the hook left the momentum NCHW next
    to channels_last weights: the fused SGD then read the momentum in the
    wrong order, and the resumed epoch went 76% of its update off course,
    without an error. (The hook also saved the momentum channels_last, the
    reverse mismatch for a resume without the hook: now saved NCHW.)"""
    from mmsk.checkpoint import load_local_checkpoint
    fused = {'optim_wrapper.optimizer.fused': True}
    run_tiny(tmp_path / 'base', hook=False, **fused)
    start = str(tmp_path / 'base' / 'epoch_1.pth')
    ends = {}
    for hook in (False, True):
        probe = StateProbe()
        run_tiny(tmp_path / str(hook), hook, epochs=2, probe=probe,
                 resume=True, load_from=start, **fused)
        # each momentum buffer in its weight's layout
        assert probe.state and all(w == m for w, m in probe.state)
        assert {w for w, _ in probe.state} == {
            'nhwc' if hook else 'nchw', 'either'}
        saved = load_local_checkpoint(
            str(tmp_path / str(hook) / 'epoch_2.pth'))
        momenta = [s['momentum_buffer']
                   for s in saved['optimizer']['state'].values()]
        assert any(m.dim() == 4 for m in momenta)
        assert all(m.is_contiguous() for m in momenta)  # saved NCHW
        ends[hook] = saved['state_dict']
    # the two resumed epochs end where the same updates lead, up to the
    # rounding of the convs' other kernels (1% of the stem's small update
    # with other thread counts); the mismatch went 76% off
    before = load_local_checkpoint(start)['state_dict']
    for key, value in ends[True].items():
        if value.dim() == 4:
            update = (ends[False][key] - before[key]).norm()
            off = (value - ends[False][key]).norm()
            assert off <= 0.1 * update, (key, off / update)


def test_ema_copy_runs_in_channels_last_to_the_same_average(tmp_path):
    """EMAHook copies the model before the hook converts it: the average
    was updated across layouts. With ``update_buffers=True`` the averaged
    tensors are views of the copy's storage, which the conversion
    replaces, so they are taken again (else the saved average would be the
    first weights)."""
    from mmsk.checkpoint import load_local_checkpoint
    ema = dict(type='EMAHook', momentum=0.1, update_buffers=True,
               priority='ABOVE_NORMAL')
    averages, metadata = {}, {}
    for hook in (False, True):
        probe = StateProbe()
        run_tiny(tmp_path / str(hook), hook, probe=probe, extra=[ema])
        assert set(probe.ema) == {'nhwc' if hook else 'nchw', 'either'}
        saved = load_local_checkpoint(
            str(tmp_path / str(hook) / 'epoch_1.pth'))
        assert all(v.is_contiguous()
                   for v in saved['ema_state_dict'].values())
        averages[hook] = saved['ema_state_dict']
        # the module versions that loading passes on (the hook's copy
        # dropped them)
        metadata[hook] = [getattr(saved[key], '_metadata', None)
                          for key in ('state_dict', 'ema_state_dict')]
    assert metadata[True] == metadata[False] and all(metadata[True])
    assert averages[True].keys() == averages[False].keys()
    for key, value in averages[False].items():
        torch.testing.assert_close(averages[True][key], value, rtol=1e-4,
                                   atol=1e-4, msg=key)


def test_batches_of_a_test_time_augmentation_model_are_channels_last():
    """mmpretrain's TTA wrapper runs its model's data preprocessor, not its
    own: the batches stayed NCHW while the log said channels_last."""
    from mmengine.registry import HOOKS
    from mmpretrain.models import AverageClsScoreTTA
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    init_default_scope('mmpretrain')
    model = AverageClsScoreTTA(module=MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='mmsk.SKNet', depth=18, stem_channels=8,
                      base_channels=8),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=64),
        data_preprocessor=dict(type='ClsDataPreprocessor',
                               mean=[0, 0, 0], std=[1, 1, 1])))).eval()
    hook = HOOKS.build(dict(type='mmsk.ChannelsLastHook'))
    hook.before_test(SimpleNamespace(model=model))
    seen = []  # the batches as the model's preprocessor hands them on
    model.module.data_preprocessor.register_forward_hook(
        lambda module, args, out: seen.append(layout(out['inputs'])))
    image = torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        model.test_step(dict(inputs=[[image], [image.flip(-1)]],
                             data_samples=[[DataSample()], [DataSample()]]))
    assert seen == ['nhwc', 'nhwc']
    hook.after_run(None)
