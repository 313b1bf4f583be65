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
    assert val_top1(tmp_path) == val_top1(trained_work_dir)

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
