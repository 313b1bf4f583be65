"""The look-inside tools: SK attention vs scale, SE excitation per class,
and mmpretrain's Grad-CAM tool (vis_cam.py) on mmsk classifiers."""
import copy
import json
import os.path as osp
import types

import numpy as np
import pytest
import torch

from conftest import ROOT, randomize_bn, run_python

TINY = dict(in_channels=1, stem_channels=8, base_channels=8, cifar_stem=True)
MEAN, STD = 33.32, 78.57


def classifier(backbone, num_classes=10):
    import mmsk  # noqa: F401
    from mmpretrain.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(
        dict(
            type='ImageClassifier',
            data_preprocessor=dict(
                type='ClsDataPreprocessor', mean=[MEAN], std=[STD],
                to_rgb=False),
            backbone=backbone,
            neck=dict(type='GlobalAveragePooling'),
            head=dict(
                type='LinearClsHead', num_classes=num_classes,
                in_channels=8 * 8)))
    model.init_weights()
    return randomize_bn(model).eval()


@pytest.fixture(scope='module')
def digits():
    from mmsk.visualization import builtin_images
    return builtin_images('val', max_images=10)  # one per class


@torch.no_grad()
def direct_sk_weights(sk, x):
    """The SK unit's branch weights ``(B, M, C)`` computed here, from its
    branches and attention layers, not through its forward."""
    if sk.split_input:
        inputs = torch.chunk(x, sk.num_paths, dim=1)
    else:
        inputs = [x] * sk.num_paths
    fused = sum(path(xi) for path, xi in zip(sk.paths, inputs))
    attn = sk.attn
    z = attn.act(attn.norm(attn.reduce(fused.mean((2, 3), keepdim=True))))
    logits = attn.expand(z).view(x.shape[0], sk.num_paths, -1)
    return logits.softmax(dim=1)


def module_inputs(model, modules, batch):
    """The input of each module in a forward pass of the backbone."""
    seen = {}
    handles = [
        m.register_forward_pre_hook(
            lambda mod, args, i=i: seen.__setitem__(i, args[0]))
        for i, m in enumerate(modules)
    ]
    with torch.no_grad():
        getattr(model, 'backbone', model)(batch)
    for h in handles:
        h.remove()
    return [seen[i] for i in range(len(modules))]


def normalized(images):
    return torch.stack([
        (torch.from_numpy(img).float()[None] - MEAN) / STD for img in images
    ])


def test_enlarge_is_center_crop_and_resize():
    from mmsk.visualization import enlarge
    img = np.zeros((28, 28), np.uint8)
    img[12:16, 12:16] = 255  # a 4x4 square in the middle
    assert enlarge(img, 1.0) is img
    big = enlarge(img, 2.0)
    assert big.shape == (28, 28)
    assert int((big > 127).sum()) == 64  # now 8x8, still centred
    rows = np.flatnonzero((big > 127).any(1))
    assert (rows.min(), rows.max()) == (10, 17)
    rgb = np.random.default_rng(0).integers(0, 255, (20, 30, 3), np.uint8)
    assert enlarge(rgb, 1.5).shape == (20, 30, 3)
    for bad in (0.5, 0, 'x', True):
        with pytest.raises(ValueError, match='scale'):
            enlarge(img, bad)


SK_MODELS = {
    'sknet18-paper': dict(type='SKNet', depth=18, **TINY),
    'sknet18-timm': dict(type='SKNet', depth=18, sk_form='timm', **TINY),
    'sknet18-pytorchinsight': dict(
        type='SKNet', depth=18, sk_form='pytorchinsight', **TINY),
    'sknet18-three-branches': dict(
        type='SKNet', depth=18, sk_cfg=dict(branches=(
            dict(dilation=1), dict(dilation=2), dict(kernel_size=5))),
        **TINY),
    'sk-mobilenet-v2': dict(
        type='InvertedResidualNet', widen_factor=0.25, head_channels=64,
        in_channels=1, attn_cfg=dict(type='SKConv', min_channels=8)),
}


@pytest.mark.parametrize('name', list(SK_MODELS))
def test_sk_attention_numbers_match_the_sk_units(name, digits, tmp_path):
    from mmsk.visualization import enlarge, sk_attention
    model = classifier(SK_MODELS[name])
    scales = (1.0, 1.5, 2.0) if name == 'sknet18-paper' else (1.0, 2.0)
    result = sk_attention.analyze(
        model, digits, str(tmp_path), scales=scales, unit=2, batch_size=4,
        progress=False)
    for f in result['files']:
        assert osp.getsize(f) > 0, f
    names = {osp.basename(f) for f in result['files']}
    assert names == {
        'sk_attention_difference.png', 'sk_attention_channels.png',
        'sk_attention_classes.png', 'sk_attention.json',
        'sk_attention_units.csv', 'sk_attention_channels.csv'
    }
    units = sk_attention.find_sk_units(model)
    assert len(result['units']) == len(units) > 0
    # weights computed directly from each SK unit on the enlarged digits
    for s, scale in enumerate(scales):
        batch = normalized([enlarge(img, scale) for img in digits.images])
        inputs = module_inputs(model, [sk for _, sk in units], batch)
        for u, ((_, sk), x) in enumerate(zip(units, inputs)):
            w = direct_sk_weights(sk, x)  # (N, M, C)
            torch.testing.assert_close(w.sum(1), torch.ones_like(w[:, 0]))
            entry = result['units'][u]
            mean = w.mean(2).mean(0)
            np.testing.assert_allclose(entry['mean_weight'][s], mean,
                                       rtol=1e-4, atol=1e-5)
            large, small = entry['larger'], entry['smaller']
            np.testing.assert_allclose(entry['mean_difference'][s],
                                       float(mean[large] - mean[small]),
                                       rtol=1e-4, atol=1e-5)
            if u == 2:
                chosen = result['chosen_unit']
                np.testing.assert_allclose(chosen['channel_mean'][s],
                                           w[:, large].mean(0), rtol=1e-4,
                                           atol=1e-5)
                labels = torch.tensor(digits.labels)
                for k in range(10):
                    np.testing.assert_allclose(
                        chosen['per_class_channel_mean'][k][s],
                        w[labels == k, large].mean(0), rtol=1e-4, atol=1e-5)
    # the numbers on disk are the returned ones
    saved = json.load(open(tmp_path / 'sk_attention.json'))
    assert saved['units'] == json.loads(json.dumps(result['units']))
    rows = open(tmp_path / 'sk_attention_units.csv').read().splitlines()
    m = sum(u['num_paths'] for u in result['units'])
    assert len(rows) == 1 + m * len(scales)


def test_sk_branch_labels_follow_the_branch_convs():
    from mmsk.visualization import sk_attention
    paper = classifier(SK_MODELS['sknet18-paper'])
    unit = sk_attention.find_sk_units(paper)[0][1]
    info = sk_attention.branch_info(unit)
    assert [b['receptive_field'] for b in info] == [3, 5]
    assert sk_attention.larger_smaller(info) == (1, 0, False)
    insight = classifier(SK_MODELS['sknet18-pytorchinsight'])
    unit = sk_attention.find_sk_units(insight)[0][1]
    info = sk_attention.branch_info(unit)
    assert [b['receptive_field'] for b in info] == [3, 3]
    assert info[0]['groups'] == 1 and info[1]['groups'] > 1
    assert sk_attention.larger_smaller(info) == (1, 0, True)
    three = classifier(SK_MODELS['sknet18-three-branches'])
    info = sk_attention.branch_info(sk_attention.find_sk_units(three)[0][1])
    assert [b['receptive_field'] for b in info] == [3, 5, 5]
    assert sk_attention.larger_smaller(info)[:2] == (2, 0)


def test_sk_attention_in_mmdet_resnet_plugin(tmp_path):
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    from mmsk.visualization import ImageSet, sk_attention
    init_default_scope('mmdet')
    torch.manual_seed(0)
    resnet = MODELS.build(
        dict(
            type='ResNet', depth=50, stem_channels=8, base_channels=8,
            plugins=[
                dict(
                    cfg=dict(type='mmsk.SKAttention'),
                    stages=(False, True, True, True),
                    position='after_conv2')
            ]))
    resnet.eval()
    rng = np.random.default_rng(0)
    images = ImageSet(
        [rng.integers(0, 255, (32, 32, 3), np.uint8) for _ in range(3)])
    result = sk_attention.analyze(
        resnet, images, str(tmp_path), scales=(1.0, 2.0), progress=False)
    units = sk_attention.find_sk_units(resnet)
    assert len(result['units']) == len(units) == 4 + 6 + 3
    assert result['units'][0]['name'] == 'layer2.0.sk_attention'
    # no labels: no per-class figure
    assert not (tmp_path / 'sk_attention_classes.png').exists()
    x = torch.stack([torch.from_numpy(img).permute(2, 0, 1).float()
                     for img in images.images])
    inputs = module_inputs(resnet, [sk for _, sk in units], x)
    for u, ((_, sk), xi) in enumerate(zip(units, inputs)):
        w = direct_sk_weights(sk, xi).mean(2).mean(0)
        np.testing.assert_allclose(result['units'][u]['mean_weight'][0], w,
                                   rtol=1e-4, atol=1e-5)


def test_se_weights_numbers_match_the_se_modules(digits, tmp_path):
    from mmsk.visualization import se_weights
    model = classifier(dict(type='SENet', depth=18, **TINY))
    result = se_weights.analyze(
        model, digits, str(tmp_path), blocks=['layer1.0.attn', -1],
        batch_size=5, progress=False)
    assert {osp.basename(f) for f in result['files']} == {
        'se_weights.png', 'se_weights_specificity.png', 'se_weights.json',
        'se_weights_blocks.csv', 'se_weights_channels.csv'
    }
    for f in result['files']:
        assert osp.getsize(f) > 0, f
    assert [b['name'] for b in result['blocks']] == ['layer1.0.attn',
                                                      'layer4.1.attn']
    se = dict(se_weights.find_se_units(model))
    modules = [se['backbone.layer1.0.attn'], se['backbone.layer4.1.attn']]
    inputs = module_inputs(model, modules, normalized(digits.images))
    labels = np.asarray(digits.labels)
    for b, m, x in zip(result['blocks'], modules, inputs):
        with torch.no_grad():
            pooled = x.mean((2, 3), keepdim=True)
            exc = torch.sigmoid(m.expand(m.act(m.norm(m.reduce(pooled)))))
        exc = exc.flatten(1).numpy()  # computed here, (N, C)
        np.testing.assert_allclose(b['mean'], exc.mean(0), rtol=1e-4,
                                   atol=1e-6)
        means = np.stack([exc[labels == k].mean(0) for k in range(10)])
        np.testing.assert_allclose(b['per_class_mean'], means, rtol=1e-4,
                                   atol=1e-6)
        np.testing.assert_allclose(b['across_class_std'],
                                   means.std(0).mean(), rtol=1e-4)


def test_class_specificity_by_hand():
    from mmsk.visualization.se_weights import class_specificity
    # two classes, two channels; class means (0.2, 0.5) and (0.6, 0.5)
    x = np.array([[0.1, 0.4], [0.3, 0.6], [0.5, 0.5], [0.7, 0.5]])
    labels = np.array([0, 0, 1, 1])
    spec = class_specificity(x, labels, 2)
    assert spec['across_class_std'] == pytest.approx((0.2 + 0.0) / 2)
    # pooled within-class std per channel: 0.1 and sqrt((2 * 0.1**2) / 4)
    within = (0.1 + np.sqrt(0.005)) / 2
    assert spec['within_class_std'] == pytest.approx(within)
    assert spec['ratio'] == pytest.approx(0.1 / within)
    assert spec['chance_ratio'] == pytest.approx(np.sqrt(0.5))
    same = class_specificity(np.tile([[0.3, 0.7]], (4, 1)), labels, 2)
    assert same['across_class_std'] == 0


def test_cli_runs_on_a_config_and_reports_bad_input(tmp_path, capsys):
    from mmsk.visualization.cli import se_weights_main, sk_attention_main

    # a checkpoint of the tiny model, read back through the safe loader
    config, tiny, net, ckpt = _tiny_cli_setup(tmp_path)
    out = tmp_path / 'sk'
    argv = [config, ckpt, '--dataset', 'built-in', '--max-images', '4',
            '--scales', '1', '2', '--out', str(out), '--cfg-options', *tiny]
    assert sk_attention_main(argv) == 0
    assert 'mean attention difference' in capsys.readouterr().out
    assert (out / 'sk_attention_difference.png').exists()
    assert sk_attention_main(argv[:-len(tiny) - 1] + [
        '--scales', '0.5', '--cfg-options', *tiny]) == 1
    assert 'scale' in capsys.readouterr().err
    assert sk_attention_main([config, str(tmp_path / 'missing.pth'),
                              '--dataset', 'built-in', '--out', str(out)]
                             ) == 1
    assert 'missing.pth' in capsys.readouterr().err
    # images from a folder with class sub-folders
    import mmcv
    from mmsk.visualization import builtin_images
    few = builtin_images('val', max_images=4)
    for i, (img, label) in enumerate(zip(few.images, few.labels)):
        mmcv.imwrite(img, str(tmp_path / 'imgs' / str(label) / f'{i}.png'))
    assert sk_attention_main(
        [config, ckpt, str(tmp_path / 'imgs'), '--out', str(tmp_path / 'f'),
         '--unit', 'layer1.1.conv1', '--cfg-options', *tiny]) == 0
    saved = json.load(open(tmp_path / 'f' / 'sk_attention.json'))
    assert saved['classes'] == ['0', '1', '2', '3']
    assert saved['chosen_unit']['name'] == 'layer1.1.conv1'
    # SE tool on an SK model: a clear error, not a traceback
    assert se_weights_main([config, ckpt, '--dataset', 'built-in', '--out',
                            str(out), '--cfg-options', *tiny]) == 1
    assert 'no SE module' in capsys.readouterr().err


def test_16bit_images_give_the_numbers_of_their_8bit_version(digits,
                                                             tmp_path):
    """A 16-bit PNG is read on the 0-255 scale of the models' mean / std:
    its images, SK weights and SE excitation are those of the same picture
    in 8 bits (within rounding), not ~257 times larger."""
    import cv2

    from mmsk.visualization import load_images, se_weights, sk_attention
    few = digits.images[:4]
    for i, img in enumerate(few):
        for bits, pixels in ((8, img), (16, img.astype(np.uint16) * 257)):
            folder = tmp_path / f'png{bits}'
            folder.mkdir(exist_ok=True)
            assert cv2.imwrite(str(folder / f'{i}.png'), pixels)
    eight = load_images([str(tmp_path / 'png8')])
    sixteen = load_images([str(tmp_path / 'png16')])
    assert cv2.imread(str(tmp_path / 'png16' / '0.png'),
                      cv2.IMREAD_UNCHANGED).dtype == np.uint16
    for a, b in zip(eight.images, sixteen.images):
        assert a.dtype == np.uint8 and b.dtype == np.float32
        np.testing.assert_allclose(b, a, atol=1e-3)
    # any 16-bit value, not only multiples of 257: within 8-bit rounding
    noise = np.random.default_rng(0).integers(0, 65536, (8, 8), np.uint16)
    assert cv2.imwrite(str(tmp_path / 'noise.png'), noise)
    (read, ) = load_images([str(tmp_path / 'noise.png')]).images
    np.testing.assert_allclose(read, noise / 257, atol=1e-3)
    assert read.max() <= 255
    # the same numbers from both tools
    model = classifier(SK_MODELS['sknet18-paper'])
    a, b = (sk_attention.analyze(model, images, str(tmp_path / name),
                                 scales=(1.0, 2.0), progress=False)
            for name, images in (('sk8', eight), ('sk16', sixteen)))
    for ua, ub in zip(a['units'], b['units']):
        # scale 1: the same input; scale 2: uint8 resizing rounds
        np.testing.assert_allclose(ua['mean_weight'][0],
                                   ub['mean_weight'][0], atol=1e-5)
        np.testing.assert_allclose(ua['mean_weight'][1],
                                   ub['mean_weight'][1], atol=2e-3)
    model = classifier(dict(type='SENet', depth=18, **TINY))
    a, b = (se_weights.analyze(model, images, str(tmp_path / name),
                               progress=False)
            for name, images in (('se8', eight), ('se16', sixteen)))
    for ba, bb in zip(a['blocks'], b['blocks']):
        np.testing.assert_allclose(ba['mean'], bb['mean'], atol=1e-5)
    # pixels of another type: a clear error, not a wrong figure
    from mmsk.visualization.inputs import to_8bit_range
    with pytest.raises(ValueError, match='float32 pixels, give an 8- or '
                       '16-bit image'):
        to_8bit_range(np.zeros((4, 4), np.float32), 'x.tif')


def _tiny_cli_setup(tmp_path):
    """The config, its tiny --cfg-options and a checkpoint of that model."""
    from mmengine.runner import save_checkpoint

    from mmsk.visualization.inputs import load_model
    config = f'{ROOT}/configs/sknet/sknet18-cifar_1xb64_mnist5k.py'
    tiny = ['model.backbone.stem_channels=8', 'model.backbone.base_channels=8',
            'model.head.in_channels=64']
    net = load_model(config, None, cfg_options={
        k: int(v) for k, v in (o.split('=') for o in tiny)})
    ckpt = str(tmp_path / 'tiny.pth')
    save_checkpoint(net.state_dict(), ckpt)
    return config, tiny, net, ckpt


def test_cli_refuses_a_checkpoint_that_does_not_fit(tmp_path, capsys):
    """A checkpoint of another model: `error: ...` naming the keys, exit 1
    (not a traceback); what loading accepts as it is still loads."""
    from mmengine.runner import save_checkpoint

    from mmsk.engine import CheckpointMismatchError
    from mmsk.visualization.cli import se_weights_main, sk_attention_main
    from mmsk.visualization.inputs import load_model
    config, tiny, net, ckpt = _tiny_cli_setup(tmp_path)
    options = {k: int(v) for k, v in (o.split('=') for o in tiny)}
    state = net.state_dict()
    wider = {k: torch.zeros(v.shape[0] + 1, *v.shape[1:])
             if k == 'head.fc.weight' else v for k, v in state.items()}
    fewer = {k: v for k, v in state.items() if k != 'head.fc.bias'}
    more = dict(state, **{'head.extra': torch.zeros(1)})
    cases = [(wider, 'mis-shaped keys: head.fc.weight (checkpoint '
              '(11, 64), model (10, 64))'),
             (fewer, '1 missing keys: head.fc.bias'),
             (more, '1 unexpected keys: head.extra')]
    for i, (sd, message) in enumerate(cases):
        bad = str(tmp_path / f'bad{i}.pth')
        save_checkpoint(sd, bad)
        for main in (sk_attention_main, se_weights_main):
            assert main([config, bad, '--dataset', 'built-in',
                         '--max-images', '2', '--out', str(tmp_path / 'o'),
                         '--cfg-options', *tiny]) == 1
            err = capsys.readouterr().err
            assert err.startswith(f'error: checkpoint {bad!r} does not fit '
                                  'the model ImageClassifier') and \
                message in err, err
        with pytest.raises(CheckpointMismatchError, match='missing|unexp|mis'):
            load_model(config, bad, cfg_options=options)
    assert not (tmp_path / 'o').exists()
    # a DataParallel prefix and no num_batches_tracked load as before
    plain = {'module.' + k: v for k, v in state.items()
             if not k.endswith('num_batches_tracked')}
    save_checkpoint(plain, str(tmp_path / 'plain.pth'))
    loaded = load_model(config, str(tmp_path / 'plain.pth'),
                        cfg_options=options)
    for k, v in loaded.state_dict().items():
        if not k.endswith('num_batches_tracked'):
            torch.testing.assert_close(v, state[k])


def test_strict_loading_takes_what_loading_renames(tmp_path):
    """The fit check compares keys as loading sees them: mmpretrain's
    ``conv.0/1/2`` keys of MobileNetV2 blocks load (renamed), as before."""
    import re

    from mmengine.runner import save_checkpoint

    from mmsk.engine.loading import load_checkpoint_strict
    state = classifier(SK_MODELS['sk-mobilenet-v2']).state_dict()
    legacy = {}
    for key, value in state.items():
        found = re.match(r'(.*layer\d+\.\d+)\.(expand|depthwise|project)\.'
                         r'(.*)', key)
        if found:
            block, part, rest = found.groups()
            parts = (['expand'] if f'{block}.expand.conv.weight' in state
                     else []) + ['depthwise', 'project']
            key = f'{block}.conv.{parts.index(part)}.{rest}'
        legacy[key] = value
    assert sum(k not in state for k in legacy) > 10
    save_checkpoint(legacy, str(tmp_path / 'legacy.pth'))
    model = classifier(SK_MODELS['sk-mobilenet-v2'])
    for value in model.state_dict().values():
        value.zero_()
    load_checkpoint_strict(model, str(tmp_path / 'legacy.pth'))
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key])


def test_cli_refuses_an_out_that_is_a_file(tmp_path, capsys):
    from mmsk.visualization.cli import se_weights_main, sk_attention_main
    config = f'{ROOT}/configs/sknet/sknet18-cifar_1xb64_mnist5k.py'
    tiny = ['model.backbone.stem_channels=8', 'model.backbone.base_channels=8',
            'model.head.in_channels=64']
    (tmp_path / 'file').write_text('keep me')
    for main in (sk_attention_main, se_weights_main):
        assert main([config, 'none', '--dataset', 'built-in',
                     '--max-images', '2', '--out', str(tmp_path / 'file'),
                     '--cfg-options', *tiny]) == 1
        err = capsys.readouterr().err
        assert err.startswith('error: cannot write') and \
            'is not a folder' in err, err
    assert (tmp_path / 'file').read_text() == 'keep me'
    # checked before the images and the model are loaded: a missing config
    # is not reached
    for main in (sk_attention_main, se_weights_main):
        assert main([str(tmp_path / 'missing.py'), 'none', '--dataset',
                     'built-in', '--out', str(tmp_path / 'file')]) == 1
        err = capsys.readouterr().err
        assert err.startswith('error: cannot write') and 'missing.py' \
            not in err, err
    # a folder where an output file goes: refused before the analysis
    (tmp_path / 'out' / 'sk_attention.json').mkdir(parents=True)
    assert sk_attention_main([
        config, 'none', '--dataset', 'built-in', '--max-images', '2',
        '--out', str(tmp_path / 'out'), '--cfg-options', *tiny]) == 1
    assert 'sk_attention.json' in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == [
        'sk_attention.json']


def test_cli_checks_device_scales_and_leaves_no_out_behind(tmp_path, capsys):
    """A bad --device, a scale that is not finite, or scales that crop too
    few or the same pixels: one error line, before the model is built (a
    missing config is not reached), and no --out folder is left."""
    import torch

    from mmsk.visualization.cli import se_weights_main, sk_attention_main
    missing = str(tmp_path / 'missing.py')
    out = tmp_path / 'out'

    def error(main, *args):
        assert main([missing, 'none', '--dataset', 'built-in', '--out',
                     str(out), *args]) == 1
        return capsys.readouterr().err

    for main in (sk_attention_main, se_weights_main):
        assert "device 'foo' is not a torch device" in error(
            main, '--device', 'foo')
        if not torch.cuda.is_available():
            assert "device 'cuda': this machine has 0 CUDA device(s)" in \
                error(main, '--device', 'cuda')
    for scale in ('nan', 'inf'):
        assert f'finite number >= 1 (1 = the image as it is), got {scale}' \
            in error(sk_attention_main, '--scales', '1', scale)
    assert not out.exists()
    # scales are checked against the images' size
    config = f'{ROOT}/configs/sknet/sknet18-cifar_1xb64_mnist5k.py'
    tiny = ['model.backbone.stem_channels=8', 'model.backbone.base_channels=8',
            'model.head.in_channels=64']
    for scales, want in [
            (['1', '1e6'], 'scale 1e+06 crops 1x1 pixels of a 28x28 image: '
             'too few to enlarge (2x2 at least; scales below 18.67 there)'),
            (['1', '18.7'], 'scale 18.7 crops 1x1 pixels'),
            (['1', '1.01'], 'scales 1 and 1.01 crop the same 28x28 pixels of '
             'a 28x28 image')]:
        assert sk_attention_main([
            config, 'none', '--dataset', 'built-in', '--max-images', '2',
            '--out', str(out), '--scales', *scales, '--cfg-options',
            *tiny]) == 1
        assert want in capsys.readouterr().err
        assert not out.exists()
    # 18 still crops 2x2 pixels of 28 (round(28 / 18) == 2)
    from mmsk.visualization.inputs import check_crops
    check_crops([1.0, 18.0], [(28, 28)])
    # --unit 99 fails in the analysis: nothing left
    assert sk_attention_main([
        config, 'none', '--dataset', 'built-in', '--max-images', '2', '--out',
        str(out), '--unit', '99', '--cfg-options', *tiny]) == 1
    assert 'unit' in capsys.readouterr().err and not out.exists()


def test_images_of_another_channel_count_are_refused():
    """Without a normalisation to go by, the backbone's in_channels says:
    an RGB image for a 1-channel model failed in the backbone, which named
    the number of scales as the batch."""
    import numpy as np

    from mmsk.registry import MODELS
    from mmsk.visualization.inputs import to_input
    model = MODELS.build(dict(type='SKNet', depth=18, in_channels=1,
                              stem_channels=8, base_channels=8))
    with pytest.raises(ValueError, match='expects 1-channel images, got 3'):
        to_input(model, [np.zeros((28, 28, 3), np.uint8)])
    assert to_input(model, [np.zeros((28, 28), np.uint8)]).shape == \
        (1, 1, 28, 28)
    rgb = MODELS.build(dict(type='SKNet', depth=18, stem_channels=8,
                            base_channels=8))
    assert to_input(rgb, [np.zeros((28, 28), np.uint8)]).shape == \
        (1, 3, 28, 28)


def test_images_with_alpha_read_as_their_colours(tmp_path):
    """A PNG with an alpha channel was refused ('expects 3-channel
    images, got 4'); mmpretrain's loader drops the alpha: the same
    colours as the image saved without it."""
    import cv2
    import numpy as np

    from mmsk.visualization.inputs import load_images
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (12, 10, 1), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / 'rgb.png'), bgr)
    cv2.imwrite(str(tmp_path / 'rgba.png'), np.concatenate([bgr, alpha], -1))
    rgb, rgba = load_images([str(tmp_path / 'rgb.png'),
                             str(tmp_path / 'rgba.png')]).images
    assert rgba.shape == (12, 10, 3)
    np.testing.assert_array_equal(rgba, rgb)
    # mmpretrain's LoadImageFromFile reads the two the same way
    from mmpretrain.datasets.transforms import LoadImageFromFile
    for name in ('rgb.png', 'rgba.png'):
        loaded = LoadImageFromFile()(dict(img_path=str(tmp_path / name)))
        np.testing.assert_array_equal(loaded['img'], rgb)


def test_module_cli_runs_the_tool_it_names(tmp_path, capsys):
    """``python -m mmsk.visualization.cli`` did nothing and exited 0: it
    now runs the tool named first and refuses anything else."""
    import subprocess
    import sys

    from mmsk.visualization import cli
    assert cli.main([]) == 2
    assert 'error: name the tool first' in capsys.readouterr().err
    assert cli.main(['sk_attention']) == 2
    assert "unknown tool 'sk_attention'" in capsys.readouterr().err
    config = f'{ROOT}/configs/sknet/sknet18-cifar_1xb64_mnist5k.py'
    assert cli.main(['sk-attention', config, 'none', '--dataset', 'built-in',
                     '--max-images', '2', '--out', str(tmp_path / 'o'),
                     '--cfg-options', 'model.backbone.stem_channels=8',
                     'model.backbone.base_channels=8',
                     'model.head.in_channels=64']) == 0
    assert (tmp_path / 'o' / 'sk_attention.json').is_file()
    proc = subprocess.run(
        [sys.executable, '-m', 'mmsk.visualization.cli', 'sk-attention',
         '--help'], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and '--scales' in proc.stdout, proc.stderr


def test_checkpoint_none_skips_the_configs_pretrained_init(capsys):
    """``none`` means initial weights: a config whose backbone loads a
    Pretrained checkpoint (a detector's torchvision://resnet50) tried to
    download or load it and failed offline."""
    from mmsk.visualization.inputs import load_model
    config = f'{ROOT}/configs/sknet/sknet18-cifar_1xb64_mnist5k.py'
    options = {'model.backbone.stem_channels': 8,
               'model.backbone.base_channels': 8,
               'model.head.in_channels': 64,
               'model.backbone.init_cfg': [
                   dict(type='Kaiming', layer='Conv2d'),
                   dict(type='Pretrained', checkpoint='/nowhere/r50.pth')]}
    model = load_model(config, None, cfg_options=options)
    assert not model.training
    assert 'skipping the config\'s Pretrained init from /nowhere/r50.pth' \
        in capsys.readouterr().err


def test_json_outputs_are_strict_json(tmp_path):
    """NaN (e.g. the SE ratio over initial weights, whose gates are all
    0.5) was written as the bare word NaN, which strict parsers refuse."""
    import json

    from mmsk.visualization.plotting import write_json
    path = write_json(str(tmp_path / 'a.json'), {
        'ratio': float('nan'), 'rows': [1.5, float('inf'), {'x': 2}]})

    def refuse(constant):
        raise ValueError(f'not JSON: {constant}')

    data = json.loads(open(path).read(), parse_constant=refuse)
    assert data == {'ratio': None, 'rows': [1.5, None, {'x': 2}]}


def test_outputs_are_written_whole_or_not_at_all(tmp_path):
    """A figure, CSV or JSON whose writing fails keeps the file of an
    earlier run, and leaves no temporary file behind."""
    from mmsk.visualization import plotting
    old = {name: f'old {name}' for name in ('a.png', 'a.csv', 'a.json')}
    for name, text in old.items():
        (tmp_path / name).write_text(text)

    plt = plotting.pyplot()
    fig = plt.figure()

    def crash(path, **kwargs):
        with open(path, 'wb') as f:
            f.write(b'\x89PNG half a figure')
        raise OSError('disk full')

    fig.savefig = crash
    with pytest.raises(OSError, match='disk full'):
        plotting.save_figure(fig, str(tmp_path / 'a.png'))
    assert not plt.fignum_exists(fig.number)  # closed all the same

    def rows():
        yield [1, 2.0]
        raise RuntimeError('no more rows')

    with pytest.raises(RuntimeError, match='no more rows'):
        plotting.write_csv(str(tmp_path / 'a.csv'), ['x', 'y'], rows())
    with pytest.raises(TypeError, match='not JSON serializable'):
        plotting.write_json(str(tmp_path / 'a.json'),
                            dict(numbers=list(range(5000)), bad=object()))
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == old
    # and when they succeed, the new files replace the old ones whole
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    plotting.save_figure(fig, str(tmp_path / 'a.png'))
    assert (tmp_path / 'a.png').read_bytes()[:4] == b'\x89PNG'
    plotting.write_csv(str(tmp_path / 'a.csv'), ['x', 'y'], [[1, 0.5]])
    assert (tmp_path / 'a.csv').read_text().splitlines() == ['x,y', '1,0.5']
    plotting.write_json(str(tmp_path / 'a.json'), dict(a=[1, 2]))
    assert json.loads((tmp_path / 'a.json').read_text()) == dict(a=[1, 2])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(old)


# --- Grad-CAM (mmpretrain's vis_cam.py) on mmsk classifiers ---------------


def vis_cam_module():
    # grad-cam is a test requirement (requirements/tests.txt): a failing
    # import fails the tests, it does not skip them
    import pytorch_grad_cam  # noqa: F401
    import runpy

    from mmsk.utils.tools import mmpretrain_tool_path
    return runpy.run_path(
        mmpretrain_tool_path('visualization/vis_cam.py'),
        run_name='vis_cam')


def _default_layer_cases():
    from test_backbones import BACKBONES
    cases = copy.deepcopy(BACKBONES)
    # SKAttention as the attention slot after the last conv of each block:
    # its attention's BatchNorm on pooled 1x1 features must not be chosen
    cases['sknet18-sk-attention-slot'] = dict(
        type='SKNet', depth=18, stem_channels=8, base_channels=8,
        attn_cfg=dict(type='SKAttention', groups=1, min_channels=8))
    return cases


@pytest.mark.parametrize('name', list(_default_layer_cases()))
def test_vis_cam_default_target_layer_is_spatial(name):
    """vis_cam picks the last norm layer of the backbone (in module
    order); for every mmsk backbone it must see the last feature map."""
    from mmsk.registry import MODELS
    get_default = vis_cam_module()['get_default_target_layers']
    torch.manual_seed(0)
    backbone = MODELS.build(_default_layer_cases()[name]).eval()
    model = types.SimpleNamespace(backbone=backbone)
    args = types.SimpleNamespace(vit_like=False, num_extra_tokens=None)
    layer, = get_default(model, args)
    seen = []
    handle = layer.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        outs = backbone(torch.rand(1, backbone_in_channels(backbone), 64,
                                   64))
    handle.remove()
    assert seen[-1].shape[-2:] == outs[-1].shape[-2:]
    assert seen[-1].shape[-2:].numel() > 1


def test_vis_cam_default_target_layer_with_mmdet_sk_plugin():
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    get_default = vis_cam_module()['get_default_target_layers']
    init_default_scope('mmdet')
    resnet = MODELS.build(
        dict(type='ResNet', depth=50, stem_channels=8, base_channels=8,
             plugins=[dict(cfg=dict(type='mmsk.SKAttention'),
                           stages=(False, True, True, True),
                           position='after_conv2')]))
    resnet.eval()
    layer, = get_default(types.SimpleNamespace(backbone=resnet),
                         types.SimpleNamespace(vit_like=False))
    seen = []
    handle = layer.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        outs = resnet(torch.rand(1, 3, 64, 64))
    handle.remove()
    assert seen[-1].shape[-2:] == outs[-1].shape[-2:] == (2, 2)


def backbone_in_channels(backbone):
    first = next(m for m in backbone.modules()
                 if isinstance(m, torch.nn.Conv2d))
    return first.in_channels


VIS_CAM_RUNNER = '''
import runpy, sys
import numpy as np
import mmsk
from mmsk.utils.tools import mmpretrain_tool_path
out = sys.argv.pop()
path = mmpretrain_tool_path('visualization/vis_cam.py')
sys.argv = [path] + sys.argv[1:]
tool = runpy.run_path(path, run_name='vis_cam')
show = tool['main'].__globals__['show_cam_grad']
def keep(grayscale_cam, *args, **kwargs):
    np.save(out, grayscale_cam)
    return show(grayscale_cam, *args, **kwargs)
tool['main'].__globals__['show_cam_grad'] = keep
tool['main']()
'''


def test_vis_cam_runs_on_an_mmsk_classifier(tmp_path, digits):
    """mmpretrain's vis_cam.py, unchanged, on a small SKNet classifier
    (default target layer) gives a non-constant map."""
    vis_cam_module()
    import mmcv
    from mmengine.runner import save_checkpoint
    config = tmp_path / 'sknet_tiny.py'
    config.write_text(
        f"_base_ = ['{ROOT}/configs/sknet/sknet18-cifar_1xb64_mnist5k.py']\n"
        "model = dict(backbone=dict(stem_channels=8, base_channels=8),\n"
        "             head=dict(in_channels=64))\n"
        "test_dataloader = dict(dataset=dict(pipeline=[\n"
        "    dict(type='LoadImageFromFile', color_type='grayscale'),\n"
        "    dict(type='PackInputs')]))\n")
    model = classifier(dict(type='SKNet', depth=18, **TINY))
    ckpt = tmp_path / 'tiny.pth'
    save_checkpoint(model.state_dict(), str(ckpt))
    image = tmp_path / 'digit.png'
    mmcv.imwrite(digits.images[3], str(image))
    cam_file = tmp_path / 'cam.npy'
    proc = run_python(VIS_CAM_RUNNER, args=[
        str(image), str(config), str(ckpt), '--save-path',
        str(tmp_path / 'cam.png'), str(cam_file)
    ], timeout=300)
    assert 'layer4.1.conv2.bn' in proc.stdout, proc.stdout
    cam = np.load(cam_file)
    assert cam.shape == (1, 28, 28)
    assert cam.max() - cam.min() > 0.1
    assert (tmp_path / 'cam.png').exists()


@pytest.mark.parametrize('ext', ['jpg', 'png', 'webp', 'tiff'])
def test_images_turned_upright_by_their_exif_orientation(tmp_path, ext):
    """Phone photos carry an EXIF orientation tag; mmpretrain's loader
    (OpenCV's colour read) turns them upright, the look-inside tools read
    them 'unchanged' (for 16 bits and alpha), which ignores the tag: the
    attention was drawn for an image on its side. Each of the eight
    orientations reads as mmpretrain's LoadImageFromFile reads it."""
    import numpy as np
    from mmpretrain.datasets.transforms import LoadImageFromFile
    from PIL import Image

    from mmsk.visualization.inputs import load_images
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    paths = []
    for orientation in range(1, 9):
        image = Image.fromarray(pixels)
        exif = image.getexif()
        exif[0x0112] = orientation
        path = str(tmp_path / f'o{orientation}.{ext}')
        kwargs = dict(quality=95) if ext == 'jpg' else \
            dict(lossless=True) if ext == 'webp' else {}
        image.save(path, exif=exif, **kwargs)
        paths.append(path)
    shapes = set()
    # the tools' read (unchanged: 16 bits, alpha) and a colour read, which
    # OpenCV turns itself (TIFF is turned by OpenCV in both)
    for flag in ('unchanged', 'color'):
        read = load_images(paths, flag=flag).images
        for path, img in zip(paths, read):
            loaded = LoadImageFromFile()(dict(img_path=path))['img']
            if flag == 'color':  # load_images reads it as RGB
                img = img[..., ::-1]
            np.testing.assert_array_equal(img, loaded, err_msg=path)
            shapes.add(img.shape)
    assert shapes == {(12, 20, 3), (20, 12, 3)}


def test_unreadable_image_files_are_named(tmp_path):
    """A 0-byte image ended the look-inside tools in OpenCV's assertion
    traceback ('!buf.empty() in function imdecode_'); a file that is no
    image gets the same one-line error."""
    from mmsk.visualization.inputs import load_images
    (tmp_path / 'empty.png').write_bytes(b'')
    (tmp_path / 'text.png').write_text('not an image')
    with pytest.raises(ValueError, match=r'cannot read image \S*empty.png: '
                       'the file is empty'):
        load_images([str(tmp_path / 'empty.png')])
    with pytest.raises(ValueError, match=r'cannot read image \S*text.png'):
        load_images([str(tmp_path / 'text.png')])
