"""Deploy folding: ``switch_to_deploy()`` and ``deploy=True`` on every
backbone and block (see :mod:`mmsk.models.deploy`)."""
import copy

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from conftest import ROOT, build_backbone, randomize_bn, run_python
from test_backbones import BACKBONES, _cfg, _family

# the suite's backbones, and the output-stride-8 form of each family:
# id -> (suite entry, config)
CASES = {name: (name, _cfg(name)) for name in BACKBONES}
CASES.update({
    f'{name}-os8': (name, _cfg(name, **_family(name).dilated))
    for name in ('sknet18-timm', 'senet50', 'res2next50-v1b',
                 'sk-mobilenet-v2')
})


def _trained_like(model, seed=0):
    """Initialised weights with non-trivial norm statistics and scales, and
    no zero-initialised last norms, so that every path contributes."""
    model.init_weights()
    return randomize_bn(model, seed)


def _assert_close(got, want, tol=1e-4):
    """Max abs difference within ``tol`` of the largest value (at least 1):
    folding rounds each weight once, and deep maps are not unit-scale."""
    diff = (got - want).abs().max().item()
    assert diff <= tol * max(1.0, want.abs().max().item()), diff


def _outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize('name', sorted(CASES))
def test_switch_to_deploy_folds_every_norm_and_keeps_outputs(name, tmp_path):
    entry, cfg = CASES[name]
    cfg = dict(cfg, out_indices=_family(entry).all_outputs)
    model = _trained_like(build_backbone(cfg))
    x = torch.randn(2, 3, 32, 32)
    want = _outputs(model, x)
    assert any(isinstance(m, _BatchNorm) for m in model.modules())
    assert model.switch_to_deploy() is model
    assert model.deploy
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())
    # two-branch SK units select with one C-wide logit
    for m in model.modules():
        if type(m).__name__ == 'ChannelAttention' and m.num_paths == 2:
            assert m.collapsed and m.expand.out_channels == m.in_channels
    got = _outputs(model, x)
    for a, b in zip(got, want):
        _assert_close(a, b)
    model.switch_to_deploy()  # idempotent
    _assert_close(_outputs(model, x)[-1], want[-1])
    # deploy=True builds the same structure: the folded weights reload
    path = tmp_path / 'deploy.pth'
    torch.save(model.state_dict(), path)
    rebuilt = build_backbone(dict(cfg, deploy=True))
    assert not any(isinstance(m, _BatchNorm) for m in rebuilt.modules())
    rebuilt.load_state_dict(torch.load(path, weights_only=True), strict=True)
    for a, b in zip(_outputs(rebuilt, x), want):
        _assert_close(a, b)


@pytest.mark.parametrize('cfg', [
    dict(type='SKNet', depth=50),
    dict(type='SKNet', depth=50, sk_form='pytorchinsight'),
    dict(type='SENet', depth=50, groups=32, width_per_group=4),
    dict(type='MultiScaleResNet', depth=50, deep_stem=True, avg_down=True),
    dict(type='InvertedResidualNet', attn_cfg=dict(type='SKConv')),
], ids=lambda c: c['type'] + '-' + str(c.get('depth', 'v2')))
def test_full_width_folding_within_1e4(cfg):
    model = build_backbone(cfg)
    model.init_weights()
    randomize_bn(model)
    x = torch.randn(1, 3, 64, 64)
    want = _outputs(model, x)[-1]
    _assert_close(_outputs(model.switch_to_deploy(), x)[-1], want)


# block -> constructor arguments, input channels
BLOCKS = {
    'SKConv': (dict(in_channels=32, out_channels=32, groups=4), 32),
    'SKAttention': (dict(in_channels=32, groups=4), 32),
    'ChannelAttention': (dict(in_channels=32, num_paths=2,
                              norm_cfg=dict(type='BN')), 32),
    'SEAttention': (dict(in_channels=32), 32),
    'Res2Conv': (dict(channels=32, scales=4), 32),
    'SKBasicBlock': (dict(in_channels=32, out_channels=32), 32),
    'SEBasicBlock': (dict(in_channels=32, out_channels=32), 32),
    'SKBottleneck': (dict(in_channels=64, out_channels=64, groups=2,
                          width_per_group=32), 64),
    'SEBottleneck': (dict(in_channels=64, out_channels=64), 64),
    'Res2Bottleneck': (dict(in_channels=256, out_channels=256), 256),
    'InvertedResidualBlock': (dict(in_channels=32, out_channels=32,
                                   attn_cfg=dict(type='SEAttention')), 32),
}


@pytest.mark.parametrize('block', sorted(BLOCKS))
def test_every_block_switches_to_deploy(block):
    import mmsk  # noqa: F401
    from mmsk.models.layers import ChannelAttention, attention_weights
    from mmsk.registry import MODELS
    args, channels = BLOCKS[block]
    module = randomize_bn(MODELS.build(dict(type=block, **args))).eval()
    x = torch.randn(2, channels, 8, 8)
    want = _outputs(module, x)
    module.switch_to_deploy()
    assert not any(isinstance(m, _BatchNorm) for m in module.modules())
    got = _outputs(module, x)
    if type(module) is ChannelAttention:  # one logit for two paths
        assert got.shape == (2, 1, 32, 1, 1)
        got, want = attention_weights(got, 2), attention_weights(want, 2)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_the_deploy_form_refuses_to_train(name):
    """A folded model trained without a word: no BatchNorm left (norm_eval
    did nothing), the folded biases trainable. Folding leaves it in eval
    mode, and a forward in train mode is refused with the way out;
    ``train()`` itself stays harmless, since tools that switch to eval and
    back (torch's ONNX exporter) call ``train(True)`` at the end."""
    from mmpretrain.registry import MODELS
    model = build_backbone(_cfg(name)).train()
    model.switch_to_deploy()
    assert not model.training
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model(x)
    assert model.train() is model
    with pytest.raises(ValueError, match=r'is in its deploy form .* called '
                       r'in train mode\. Call model\.eval\(\)'):
        model(x)
    classifier = MODELS.build(dict(
        type='ImageClassifier', backbone=dict(_cfg(name), deploy=True),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=3,
                  in_channels=model.feat_dim)))
    assert not classifier.backbone.training  # built folded: eval mode
    classifier.train()  # what the Runner's train loop does
    with pytest.raises(ValueError, match='deploy form'):
        classifier(x, mode='tensor')
    with torch.no_grad():
        assert classifier.eval()(x, mode='tensor').shape == (2, 3)


def test_deploy_refuses_what_it_cannot_fold():
    with pytest.raises(ValueError, match='deploy'):
        build_backbone(dict(BACKBONES['senet18'], deploy='yes'))
    model = build_backbone(
        dict(BACKBONES['senet18'], conv_cfg=dict(type='ConvWS')))
    with pytest.raises(NotImplementedError, match='ConvWS'):
        model.switch_to_deploy()
    # mmcv's Conv2d (type 'Conv', nn.Conv2d plus empty batches) folds, and
    # SK's select step collapses with it (it was refused after the BNs had
    # been folded, which left a half-folded model)
    for name in ('senet18', 'sknet18-timm', 'sknet50-paper',
                 'sk-mobilenet-v2'):
        model = randomize_bn(build_backbone(
            dict(BACKBONES[name], conv_cfg=dict(type='Conv')))).eval()
        x = torch.randn(2, 3, 32, 32)
        want = _outputs(model, x)
        model.switch_to_deploy()
        assert not any(isinstance(m, _BatchNorm) for m in model.modules())
        for a, b in zip(_outputs(model, x), want):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_a_select_step_that_cannot_collapse_leaves_the_model_as_it_was():
    """The select conv is checked with the conv + BN pairs, before any
    change: the refusal leaves every BN and every parameter in place."""
    from mmsk.models.deploy import CannotFoldError

    class Expand(torch.nn.Module):  # not a conv: nothing to subtract

        def __init__(self, conv):
            super().__init__()
            self.conv = conv

        def forward(self, x):
            return self.conv(x)

    model = build_backbone(dict(type='SKNet', depth=18, stem_channels=8,
                                base_channels=8)).eval()
    attention = next(m for m in model.modules()
                     if hasattr(m, 'collapse_paths'))
    attention.expand = Expand(attention.expand)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CannotFoldError,
                       match='cannot collapse a select conv of type '
                       r'.*Expand \(conv_cfg\)'):
        model.switch_to_deploy()
    after = model.state_dict()
    assert list(after) == list(before)
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert not attention.collapsed and not model.deploy


SK18 = dict(type='SKNet', depth=18, stem_channels=8, base_channels=8)


@pytest.mark.parametrize('where', ['norm_cfg', 'attn_norm_cfg'])
def test_folds_a_norm_without_affine_and_refuses_one_without_statistics(
        where):
    """A BN without affine parameters folds with scale 1 and shift 0 (it
    crashed inside mmcv); a BN without running statistics normalises with
    the batch's own, which no weight can hold: refused, naming the option,
    with the model left as it was (it was half folded)."""
    from mmsk.models.deploy import CannotFoldError

    def build(**bn):
        norm = dict(type='BN', **bn)
        return build_backbone(
            dict(SK18, norm_cfg=norm) if where == 'norm_cfg' else
            dict(SK18, sk_cfg=dict(attn_norm_cfg=norm)))

    torch.manual_seed(0)
    model = _trained_like(build(affine=False))
    x = torch.randn(2, 3, 32, 32)
    want = _outputs(model, x)
    model.switch_to_deploy()
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())
    _assert_close(_outputs(model, x)[-1], want[-1])

    model = build(track_running_stats=False).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    norms = sum(isinstance(m, _BatchNorm) for m in model.modules())
    with pytest.raises(CannotFoldError, match=r'without running statistics '
                       r'\(track_running_stats=False in norm_cfg / '
                       r'attn_norm_cfg\)'):
        model.switch_to_deploy()
    with pytest.raises(ValueError):  # what the tools report as one line
        model.switch_to_deploy()
    assert sum(isinstance(m, _BatchNorm) for m in model.modules()) == norms
    assert not model.deploy
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize('cfg', [
    dict(SK18, frozen_stages=1),
    dict(type='SENet', depth=50, stem_channels=8, base_channels=8,
         frozen_stages=2),
    dict(type='InvertedResidualNet', widen_factor=0.25, frozen_stages=2),
], ids=['SKNet', 'SENet', 'InvertedResidualNet'])
def test_folding_keeps_frozen_stages_frozen(cfg):
    """The folded convs got new parameters that required gradients, so a
    deploy switch (or ``deploy=True`` at build, for the ResNet family)
    unfroze the frozen stages until the next ``train()``."""
    def frozen(model):
        return sorted(name for name, p in model.named_parameters()
                      if not p.requires_grad)

    model = build_backbone(cfg)
    model.train()
    want = frozen(model)
    assert want
    model.switch_to_deploy()
    # a parameter is frozen exactly when its module's weight was: the
    # folded convs keep theirs, the biases they gain and the collapsed
    # select convs follow them
    frozen_modules = {name.rsplit('.', 1)[0] for name in want}
    got = frozen(model)
    for name, p in model.named_parameters():
        assert p.requires_grad == (
            name.rsplit('.', 1)[0] not in frozen_modules), name
    assert len(got) < len(list(model.parameters()))
    built = build_backbone(dict(cfg, deploy=True))
    built.train(False)  # a mode switch keeps them frozen
    assert frozen(built) == got


def test_the_tools_report_a_model_that_cannot_fold_in_one_line(
        tmp_path, capsys):
    from mmsk.deploy.cli import main, reparameterize_main
    config, cfg = _tiny_config(
        tmp_path, **{'model.backbone.conv_cfg': dict(type='ConvWS')})
    ckpt = _tiny_checkpoint(cfg, tmp_path / 'model.pth')
    assert reparameterize_main(
        [str(config), str(ckpt), str(tmp_path / 'folded.pth')]) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: switch_to_deploy: ') and \
        'is a ConvWS2d (conv_cfg)' in err and 'Traceback' not in err
    assert main([str(config), str(ckpt), '--shape', '28', '28', '--deploy',
                 '--out', str(tmp_path / 'm.onnx')]) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: switch_to_deploy: ') and 'ConvWS2d' in err
    assert not (tmp_path / 'folded.pth').exists()
    assert not (tmp_path / 'm.onnx').exists()


def _tiny_config(tmp_path, **options):
    """A config file of the main job at tiny width (with ``options``): the
    reparameterize tool takes no --cfg-options. Returns (path, Config)."""
    from mmengine.config import Config

    from conftest import MAIN_CONFIG, TINY_OPTIONS
    model_options = {
        key: int(value)
        for key, value in (o.split('=') for o in TINY_OPTIONS)
        if key.startswith('model.')
    }
    config = tmp_path / 'tiny.py'
    config.write_text(f'_base_ = [{MAIN_CONFIG!r}]\n')
    cfg = Config.fromfile(str(config))
    cfg.merge_from_dict(dict(model_options, **options))
    cfg.dump(str(config))
    return config, cfg


def _tiny_checkpoint(cfg, path, seed=0):
    """A checkpoint of ``cfg``'s model with non-trivial norm statistics."""
    from mmpretrain.registry import MODELS
    torch.manual_seed(seed)
    model = randomize_bn(MODELS.build(copy.deepcopy(cfg.model)), seed)
    torch.save({'state_dict': model.state_dict(), 'meta': {'seed': seed}},
               path)
    return path


def test_reparameterize_tool_on_a_trained_checkpoint(trained_work_dir,
                                                     tmp_path):
    """tools/model_converters/reparameterize_model.py (mmpretrain's
    arguments) folds a trained mmsk classifier; the folded checkpoint,
    loaded with ``model.backbone.deploy=True``, predicts what the original
    does."""
    from mmpretrain.apis import init_model

    config, cfg = _tiny_config(tmp_path)
    folded = tmp_path / 'folded.pth'
    proc = run_python(args=[
        f'{ROOT}/tools/model_converters/reparameterize_model.py',
        str(config),
        str(trained_work_dir / 'epoch_1.pth'),
        str(folded)
    ])
    assert 'Done!' in proc.stdout
    # the optimizer state of the unfolded parameters is not carried over
    from mmsk.checkpoint import load_local_checkpoint
    trained = load_local_checkpoint(str(trained_work_dir / 'epoch_1.pth'))
    assert 'optimizer' in trained
    assert set(load_local_checkpoint(str(folded))) == {'state_dict', 'meta'}
    original = init_model(copy.deepcopy(cfg),
                          str(trained_work_dir / 'epoch_1.pth')).eval()
    cfg.merge_from_dict({'model.backbone.deploy': True})
    deployed = init_model(cfg, str(folded)).eval()
    assert not any(isinstance(m, _BatchNorm) for m in deployed.modules())
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        want = original(x, mode='tensor')
        got = deployed(x, mode='tensor')
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert (got.argmax(1) == want.argmax(1)).all()


def test_reparameterize_keeps_meta_and_loads_strictly_deployed(tmp_path):
    """The folded checkpoint keeps ``meta``, fits a ``deploy=True`` model
    exactly (strict) and predicts what the original does."""
    from mmsk.deploy import build_classifier
    from mmsk.deploy.cli import reparameterize
    config, cfg = _tiny_config(tmp_path)
    ckpt = _tiny_checkpoint(cfg, tmp_path / 'model.pth')
    out = tmp_path / 'deploy' / 'folded.pth'  # a new folder
    lines = []
    assert reparameterize(str(config), str(ckpt), str(out),
                          log=lines.append) == str(out)
    assert lines[-1] == f'Done! Save at path "{out}"'
    folded = torch.load(out, weights_only=True)
    assert folded['meta']['seed'] == 0
    original = build_classifier(copy.deepcopy(cfg), str(ckpt))
    # the config it carries builds the folded model (deploy=True) that
    # loads it strictly
    from mmsk.checkpoint import config_from_checkpoint
    carried = config_from_checkpoint(str(out))
    assert carried.model.backbone.deploy is True
    deployed = build_classifier(carried, str(out))
    assert not any(isinstance(m, _BatchNorm) for m in deployed.modules())
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(
            deployed(x, mode='tensor'), original(x, mode='tensor'),
            atol=1e-4, rtol=1e-4)


def test_reparameterize_tool_refuses_a_checkpoint_that_does_not_fit(
        tmp_path):
    """A checkpoint of another model (here: the weights under 'model', as
    some other tools save them) is an error naming the keys, not a folded
    random model; nothing is written."""
    config, cfg = _tiny_config(tmp_path)
    ckpt = _tiny_checkpoint(cfg, tmp_path / 'model.pth')
    state_dict = torch.load(ckpt, weights_only=True)['state_dict']
    torch.save({'model': state_dict}, ckpt)
    out = tmp_path / 'folded.pth'
    proc = run_python(args=[
        f'{ROOT}/tools/model_converters/reparameterize_model.py',
        str(config), str(ckpt), str(out)
    ], check=False)
    assert proc.returncode == 1, proc.stdout
    assert 'Traceback' not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"error: checkpoint '{ckpt}' does not fit the model")
    assert 'missing keys: backbone.' in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize('bad', ['deeper', 'wider', 'list'])
def test_reparameterize_refuses_other_checkpoints(bad, tmp_path, capsys):
    from mmsk.deploy.cli import reparameterize_main
    config, cfg = _tiny_config(tmp_path)
    ckpt = tmp_path / 'model.pth'
    other = copy.deepcopy(cfg)
    if bad == 'deeper':  # a checkpoint of SKNet-34
        other.merge_from_dict({'model.backbone.depth': 34})
        _tiny_checkpoint(other, ckpt)
        want = 'unexpected keys: backbone.layer1.2.'
    elif bad == 'wider':
        other.merge_from_dict({
            'model.backbone.base_channels': 16,
            'model.head.in_channels': 128
        })
        _tiny_checkpoint(other, ckpt)
        want = 'mis-shaped keys: '
    else:
        torch.save([1, 2], ckpt)
        want = 'holds no state dict'
    out = tmp_path / 'folded.pth'
    assert reparameterize_main([str(config), str(ckpt), str(out)]) == 1
    err = capsys.readouterr().err
    assert want in err and err.startswith('error: ')
    assert not out.exists()


def test_reparameterize_refuses_to_write_over_its_input(tmp_path, capsys):
    from mmsk.deploy.cli import reparameterize_main
    config, cfg = _tiny_config(tmp_path)
    ckpt = _tiny_checkpoint(cfg, tmp_path / 'model.pth')
    before = ckpt.read_bytes()
    (tmp_path / 'sub').mkdir()
    (tmp_path / 'link.pth').symlink_to(ckpt)
    for out in [ckpt, tmp_path / 'sub' / '..' / 'model.pth',
                tmp_path / 'link.pth', config]:
        assert reparameterize_main([str(config), str(ckpt), str(out)]) == 1
        assert 'refusing to overwrite' in capsys.readouterr().err
    assert ckpt.read_bytes() == before
    assert reparameterize_main([str(config), str(ckpt), str(tmp_path)]) == 1
    assert 'is a folder' in capsys.readouterr().err
    # a missing checkpoint or a config that is not Python: one line, and
    # the output's folder is not left behind
    out = tmp_path / 'new' / 'folded.pth'
    assert reparameterize_main([str(config), str(tmp_path / 'none.pth'),
                                str(out)]) == 1
    assert 'none.pth does not exist' in capsys.readouterr().err
    (tmp_path / 'broken.py').write_text('model = dict(type=\n')
    assert reparameterize_main([str(tmp_path / 'broken.py'), str(ckpt),
                                str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: config {tmp_path / 'broken.py'} is not "
                          'valid Python') and 'Traceback' not in err, err
    # in a _base_ file: the config is named, and where to look
    (tmp_path / 'top.py').write_text("_base_ = ['broken.py']\n")
    assert reparameterize_main([str(tmp_path / 'top.py'), str(ckpt),
                                str(out)]) == 1
    assert 'top.py or one of its _base_ files is not valid Python' in \
        capsys.readouterr().err
    assert not (tmp_path / 'new').exists()


def test_reparameterize_writes_atomically(tmp_path, monkeypatch):
    """A save that fails half-way leaves the old output, and no other
    file."""
    from mmsk.deploy.cli import reparameterize
    config, cfg = _tiny_config(tmp_path)
    ckpt = _tiny_checkpoint(cfg, tmp_path / 'model.pth')
    out = tmp_path / 'folded.pth'
    out.write_bytes(b'the old file')
    files = sorted(p.name for p in tmp_path.iterdir())

    def half_save(obj, f, *args, **kwargs):
        with open(f, 'wb') as file:
            file.write(b'half a checkpoint')
        raise OSError('disk full')

    monkeypatch.setattr(torch, 'save', half_save)
    with pytest.raises(OSError, match='disk full'):
        reparameterize(str(config), str(ckpt), str(out), log=lambda _: None)
    assert out.read_bytes() == b'the old file'
    assert sorted(p.name for p in tmp_path.iterdir()) == files
