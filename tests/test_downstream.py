"""mmsk backbones and attention in real mmdetection / mmsegmentation models.

Every config of ``configs/downstream`` is built with mmdet's / mmseg's own
registries under their default scope, at full size (channels wired as the
necks expect) and at tiny widths for one training step and one prediction.
Two of them run through MMEngine's Runner (train, then test, then test again
from the saved checkpoint) on tiny data sets written in COCO / Cityscapes
format. Then: ``Pretrained`` checkpoints of mmsk classifiers, the SE / SK
plug-ins in mmdet's ResNet, and the docs that show the configs.
"""
import copy
import importlib
import json
import logging
import os.path as osp
import re

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image
from torch.nn.modules.batchnorm import _BatchNorm

from conftest import ROOT, run_python

CONFIG_DIR = osp.join(ROOT, 'configs', 'downstream')
W8 = dict(stem_channels=8, base_channels=8)
# config -> backbone overrides that make it tiny (the structure stays)
DET_CONFIGS = {
    'retinanet_sknet50_fpn_1x_coco.py': dict(groups=4, **W8),
    'faster-rcnn_res2net50-w26-s4_fpn_1x_coco.py': dict(base_width=4, **W8),
    'mask-rcnn_seresnext50-32x4d_fpn_1x_coco.py': dict(groups=4, **W8),
    'retinanet_r50-sk-c3-c5_fpn_1x_coco.py': dict(
        stem_channels=16, base_channels=16),
}
SEG_CONFIGS = {
    'deeplabv3_sknet50-d8_4xb2-40k_cityscapes-512x1024.py': dict(
        groups=4, **W8),
    'deeplabv3_mobilenet-v2-d8_4xb2-80k_cityscapes-512x1024.py': dict(
        widen_factor=0.25),
}
CONFIGS = {**DET_CONFIGS, **SEG_CONFIGS}
WIDTH = 16  # neck / head channels of the tiny models
DET_SIZE = 64
SEG_SIZE = (32, 32)


def registry(scope):
    init_default_scope(scope)
    return importlib.import_module(f'{scope}.registry').MODELS


def load_config(name):
    cfg = Config.fromfile(osp.join(CONFIG_DIR, name))
    assert cfg.custom_imports == dict(
        imports=['mmsk'], allow_failed_imports=False)
    return cfg


def backbone_channels(cfg, size=64):
    """Channels and spatial sizes of the backbone's outputs (eval mode)."""
    backbone = registry(cfg.default_scope).build(copy.deepcopy(
        cfg.model.backbone))
    backbone.eval()  # mmdet's ResNet.train returns None: no chaining
    with torch.no_grad():
        outs = backbone(torch.rand(1, 3, size, size))
    return [o.shape[1] for o in outs], [o.shape[-1] for o in outs]


def set_in_pipeline(pipeline, type_name, **kwargs):
    steps = [step for step in pipeline if step['type'] == type_name]
    assert steps, f'no {type_name} in the pipeline'
    for step in steps:
        step.update(kwargs)


def tiny_config(name):
    """The config at tiny widths: backbone overrides, necks and heads wired
    to the backbone's real output channels, no checkpoint to load."""
    cfg = load_config(name)
    model = cfg.model
    model.backbone.update(CONFIGS[name], init_cfg=None)
    channels, _ = backbone_channels(cfg)
    if cfg.default_scope == 'mmdet':
        model.neck.update(in_channels=channels, out_channels=WIDTH)
        if 'bbox_head' in model:  # one-stage
            model.bbox_head.update(
                in_channels=WIDTH, feat_channels=WIDTH, stacked_convs=1)
            model.test_cfg.score_thr = 0.0
        if 'rpn_head' in model:
            model.rpn_head.update(in_channels=WIDTH, feat_channels=WIDTH)
            roi = model.roi_head
            roi.bbox_roi_extractor.out_channels = WIDTH
            roi.bbox_head.update(in_channels=WIDTH, fc_out_channels=32)
            if 'mask_head' in roi:
                roi.mask_roi_extractor.out_channels = WIDTH
                roi.mask_head.update(
                    in_channels=WIDTH, conv_out_channels=WIDTH)
            # fewer proposals and RoIs: seconds instead of tens on 2 cores
            model.train_cfg.rpn_proposal.update(nms_pre=200, max_per_img=100)
            model.train_cfg.rcnn.sampler.num = 64
            model.test_cfg.rpn.update(nms_pre=200, max_per_img=100)
            model.test_cfg.rcnn.update(score_thr=0.0, max_per_img=20)
    else:
        for head in (model.decode_head, model.auxiliary_head):
            head.update(
                in_channels=channels[head.in_index], channels=WIDTH)
        model.data_preprocessor.size = SEG_SIZE
    return cfg


def build_model(cfg):
    from mmengine.model import revert_sync_batchnorm
    model = registry(cfg.default_scope).build(copy.deepcopy(cfg.model))
    # what MMEngine's Runner does when it runs without distribution
    return revert_sync_batchnorm(model)


def det_batch(with_masks, num=2, size=DET_SIZE):
    from mmdet.structures import DetDataSample
    from mmdet.structures.bbox import HorizontalBoxes
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    gen = torch.Generator().manual_seed(0)
    boxes = torch.tensor([[4., 6., 36., 40.], [20., 16., 60., 56.]])
    inputs, samples = [], []
    for i in range(num):
        inputs.append(
            torch.randint(0, 256, (3, size, size), generator=gen).byte())
        sample = DetDataSample(
            metainfo=dict(
                img_id=i,
                img_shape=(size, size),
                ori_shape=(size, size),
                scale_factor=(1.0, 1.0)))
        gt = InstanceData(
            bboxes=HorizontalBoxes(boxes), labels=torch.tensor([0, 1]))
        if with_masks:
            masks = np.zeros((len(boxes), size, size), np.uint8)
            for k, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
                masks[k, y1:y2, x1:x2] = 1
            gt.masks = BitmapMasks(masks, size, size)
        sample.gt_instances = gt
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def seg_batch(num=2, size=SEG_SIZE):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    gen = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(num):
        inputs.append(torch.randint(0, 256, (3, *size), generator=gen).byte())
        sample = SegDataSample(
            metainfo=dict(img_shape=size, ori_shape=size, pad_shape=size))
        label = torch.zeros((1, *size), dtype=torch.long)
        label[:, :, size[1] // 2:] = 1
        label[:, :2] = 255  # ignored
        sample.gt_sem_seg = PixelData(data=label)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def is_frozen_name(name, frozen_stages):
    """Whether ``frozen_stages`` freezes the backbone parameter ``name``: the
    stem for 0, the stem and stages (rows) 1..k for k."""
    top = name.split('.')[0]
    if frozen_stages < 0:
        return False
    if top.startswith('layer'):
        return int(top[len('layer'):]) <= frozen_stages
    return top != 'conv2'  # the inverted-residual head conv


# --- every config: full size wiring, one train step, one prediction -------


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_config_at_full_size_feeds_the_neck(name):
    cfg = load_config(name)
    backbone = cfg.model.backbone
    init = backbone.get('init_cfg')
    if backbone.type.startswith('mmsk.'):
        # loads an mmsk classifier's backbone
        assert init['type'] == 'Pretrained' and init['prefix'] == \
            'backbone.', init
    channels, sizes = backbone_channels(cfg, size=64)
    if cfg.default_scope == 'mmdet':
        assert channels == list(cfg.model.neck.in_channels)
        assert sizes == [16, 8, 4, 2]  # strides 4, 8, 16, 32
        assert backbone.frozen_stages == 1 and backbone.norm_eval
    else:
        for head in (cfg.model.decode_head, cfg.model.auxiliary_head):
            assert channels[head.in_index] == head.in_channels
        assert sizes[-2:] == [8, 8]  # output stride 8
        assert cfg.model.pretrained is None


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_one_training_step_and_prediction(name):
    cfg = tiny_config(name)
    model = build_model(cfg)
    model.init_weights()
    model.train()
    backbone = model.backbone
    bb_cfg = cfg.model.backbone
    frozen_stages = bb_cfg.get('frozen_stages', -1)
    params = dict(backbone.named_parameters())
    frozen = {n for n, p in params.items() if not p.requires_grad}
    assert frozen == {n for n in params if is_frozen_name(n, frozen_stages)}
    norms = [m for m in backbone.modules() if isinstance(m, _BatchNorm)]
    assert norms and all(m.training != bb_cfg.norm_eval for m in norms)
    before = copy.deepcopy(backbone.state_dict())

    detection = cfg.default_scope == 'mmdet'
    with_masks = 'mask_head' in cfg.model.get('roi_head', {})
    batch = det_batch(with_masks) if detection else seg_batch()
    data = model.data_preprocessor(copy.deepcopy(batch), True)
    losses = model(**data, mode='loss')
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss), losses
    loss.backward()
    no_grad = [n for n in params if n not in frozen and params[n].grad is None]
    assert not no_grad, f'no gradient for {no_grad[:5]}'
    assert all(params[n].grad is None for n in frozen)
    assert sum(p.grad.abs().sum() for p in params.values()
               if p.grad is not None) > 0
    # frozen stages keep their statistics; norm_eval keeps all of them
    for key, value in backbone.state_dict().items():
        if 'running' in key and (bb_cfg.norm_eval or is_frozen_name(
                key, frozen_stages)):
            torch.testing.assert_close(value, before[key], msg=key)

    model.eval()
    with torch.no_grad():
        results = model.test_step(copy.deepcopy(batch))
    assert len(results) == 2
    for result in results:
        if detection:
            pred = result.pred_instances
            assert len(pred) > 0 and pred.bboxes.shape == (len(pred), 4)
            assert pred.scores.shape == pred.labels.shape == (len(pred), )
            assert pred.bboxes.min() >= 0 and pred.bboxes.max() <= DET_SIZE
            if with_masks:
                assert pred.masks.shape == (len(pred), DET_SIZE, DET_SIZE)
        else:
            assert result.pred_sem_seg.data.shape == (1, *SEG_SIZE)
            num_classes = cfg.model.decode_head.num_classes
            assert result.seg_logits.data.shape == (num_classes, *SEG_SIZE)


STAGES = (0, 1, 2, 3)
# Backbones whose blocks build their attention from a config: they must
# build under mmdet's / mmseg's default scope too, not only mmpretrain's.
ATTENTION_BACKBONES = {
    'senet50': dict(type='mmsk.SENet', depth=50, out_indices=STAGES, **W8),
    'se-res2net50': dict(
        type='mmsk.MultiScaleResNet', depth=50, base_width=4,
        attn_cfg=dict(type='SEAttention'), out_indices=STAGES, **W8),
    'sknet50': dict(
        type='mmsk.SKNet', depth=50, groups=4, out_indices=STAGES, **W8),
    'se-mobilenet-v2': dict(
        type='mmsk.InvertedResidualNet', widen_factor=0.25,
        out_indices=(1, 2, 4, 6), attn_cfg=dict(type='SEAttention')),
    'sk-mobilenet-v2': dict(
        type='mmsk.InvertedResidualNet', widen_factor=0.25,
        out_indices=(1, 2, 4, 6), attn_cfg=dict(type='SKConv')),
}


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
@pytest.mark.parametrize('name', sorted(ATTENTION_BACKBONES))
def test_backbones_with_attention_build_under_other_scopes(name, scope):
    cfg = dict(ATTENTION_BACKBONES[name], frozen_stages=1, norm_eval=True)
    model = registry(scope).build(cfg)
    model.train()
    outs = model(torch.rand(2, 3, 32, 32))
    assert len(outs) == 4
    assert [o.shape[1] for o in outs] == [
        model.out_channels[i] for i in model.out_indices
    ]
    assert all(not m.training for m in model.modules()
               if isinstance(m, _BatchNorm))
    sum(o.mean() for o in outs).backward()
    for n, p in model.named_parameters():
        frozen = is_frozen_name(n, 1)
        assert p.requires_grad != frozen, n
        assert (p.grad is None) == frozen, n


def test_mmseg_model_level_pretrained_gets_a_clear_error():
    # mmseg's base configs set model.pretrained, which EncoderDecoder hands
    # to the backbone; mmsk's configs set it to None
    cfg = load_config('deeplabv3_sknet50-d8_4xb2-40k_cityscapes-512x1024.py')
    cfg.model.pretrained = 'open-mmlab://resnet50_v1c'
    with pytest.raises(TypeError, match='model.pretrained=None'):
        registry('mmseg').build(cfg.model)


# --- the tools' code path: MMEngine's Runner on tiny data on disk ----------


def write_coco(root, split, num, size=DET_SIZE):
    """``num`` images and a COCO instances json with two boxes each."""
    (root / split).mkdir(parents=True)
    (root / 'annotations').mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(num):
        name = f'{i:012d}.png'
        Image.fromarray(rng.integers(0, 256, (size, size, 3),
                                     dtype=np.uint8)).save(root / split / name)
        images.append(dict(id=i + 1, file_name=name, height=size, width=size))
        for category, (x, y, w, h) in ((1, (4, 6, 32, 34)),
                                       (2, (20, 16, 40, 40))):
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=i + 1,
                    category_id=category,
                    bbox=[x, y, w, h],
                    area=w * h,
                    iscrowd=0,
                    segmentation=[[x, y, x + w, y, x + w, y + h, x, y + h]]))
    # all COCO classes, as real COCO files list them (1: person, 2: bicycle)
    from mmdet.datasets import CocoDataset
    categories = [
        dict(id=i + 1, name=name)
        for i, name in enumerate(CocoDataset.METAINFO['classes'])
    ]
    ann_file = root / 'annotations' / f'instances_{split}.json'
    ann_file.write_text(
        json.dumps(
            dict(
                images=images,
                annotations=annotations,
                categories=categories)))
    return str(ann_file)


def write_cityscapes(root, split, num, size=(32, 64)):
    """``num`` images and train-id label maps in Cityscapes' layout."""
    img_dir = root / 'leftImg8bit' / split / 'tinycity'
    seg_dir = root / 'gtFine' / split / 'tinycity'
    img_dir.mkdir(parents=True)
    seg_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(num):
        stem = f'tinycity_{i:06d}_000019'
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
            img_dir / f'{stem}_leftImg8bit.png')
        label = np.zeros(size, np.uint8)  # road
        label[:, size[1] // 2:] = 1  # sidewalk
        label[:2] = 255  # ignored
        Image.fromarray(label).save(seg_dir /
                                    f'{stem}_gtFine_labelTrainIds.png')


def quiet_loaders(cfg):
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].update(num_workers=0, persistent_workers=False)
    cfg.log_level = 'WARNING'


def run_train_and_test(cfg, work_dir, checkpoint_name):
    """Train, test; then test again in a new Runner that loads the saved
    checkpoint (``tools/test.py CONFIG CKPT``): same metrics."""
    from mmengine.runner import Runner
    cfg.work_dir = str(work_dir / 'train')
    runner = Runner.from_cfg(copy.deepcopy(cfg))
    runner.train()
    metrics = runner.test()
    checkpoint = work_dir / 'train' / checkpoint_name
    assert checkpoint.is_file()
    cfg.work_dir = str(work_dir / 'test')
    cfg.load_from = str(checkpoint)
    again = Runner.from_cfg(copy.deepcopy(cfg)).test()
    assert again == metrics
    return runner, metrics


def tiny_coco_config(tmp_path):
    """The tiny RetinaNet SKNet-50 on 4 train / 2 val images in COCO format,
    one epoch (two iterations of 2 images)."""
    cfg = tiny_config('retinanet_sknet50_fpn_1x_coco.py')
    root = tmp_path / 'coco'
    ann = {split: write_coco(root, split, num) for split, num in
           (('train2017', 4), ('val2017', 2))}
    quiet_loaders(cfg)
    for key, split in (('train_dataloader', 'train2017'),
                       ('val_dataloader', 'val2017'),
                       ('test_dataloader', 'val2017')):
        dataset = cfg[key].dataset
        dataset.update(
            data_root=str(root),
            ann_file=ann[split],
            data_prefix=dict(img=f'{split}/'))
        set_in_pipeline(dataset.pipeline, 'Resize', scale=(DET_SIZE,
                                                           DET_SIZE))
    for key in ('val_evaluator', 'test_evaluator'):
        cfg[key].ann_file = ann['val2017']
    cfg.train_cfg.max_epochs = 1
    return cfg


def test_runner_trains_and_tests_a_detector_on_coco_files(tmp_path):
    cfg = tiny_coco_config(tmp_path)
    runner, metrics = run_train_and_test(cfg, tmp_path, 'epoch_1.pth')
    assert runner.iter == 2
    assert type(runner.model.backbone).__name__ == 'SKNet'
    assert 0 <= metrics['coco/bbox_mAP'] <= 1


def test_mmdet_tools_train_and_test_the_config(tmp_path):
    # mmdetection's own tools/train.py and tools/test.py CONFIG CKPT in a
    # fresh interpreter: only custom_imports imports mmsk
    import mmdet
    tools = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools')
    config = tmp_path / 'tiny_retinanet_sknet50.py'
    tiny_coco_config(tmp_path).dump(str(config))
    work_dir = tmp_path / 'work'
    run_python(args=[
        osp.join(tools, 'train.py'),
        str(config), '--work-dir',
        str(work_dir)
    ])
    run_python(args=[
        osp.join(tools, 'test.py'),
        str(config),
        str(work_dir / 'epoch_1.pth'), '--work-dir',
        str(tmp_path / 'test')
    ])
    # the test tool's metrics, as MMEngine's LoggerHook writes them
    (log, ) = (tmp_path / 'test').glob('*/*.json')
    metrics = json.loads(log.read_text().splitlines()[-1])
    assert 0 <= metrics['coco/bbox_mAP'] <= 1


def test_runner_trains_and_tests_a_segmentor_on_cityscapes_files(tmp_path):
    name = 'deeplabv3_sknet50-d8_4xb2-40k_cityscapes-512x1024.py'
    cfg = tiny_config(name)
    root = tmp_path / 'cityscapes'
    write_cityscapes(root, 'train', 2)
    write_cityscapes(root, 'val', 2)
    quiet_loaders(cfg)
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = cfg[key].dataset
        dataset.data_root = str(root)
        if key == 'train_dataloader':
            set_in_pipeline(dataset.pipeline, 'RandomResize', scale=(64, 32))
            set_in_pipeline(dataset.pipeline, 'RandomCrop',
                            crop_size=SEG_SIZE)
        else:
            set_in_pipeline(dataset.pipeline, 'Resize', scale=(64, 32))
    cfg.train_cfg.update(max_iters=2, val_interval=2)
    cfg.default_hooks.checkpoint.interval = 2
    runner, metrics = run_train_and_test(cfg, tmp_path, 'iter_2.pth')
    assert runner.iter == 2
    assert type(runner.model.backbone).__name__ == 'SKNet'
    assert 0 <= metrics['mIoU'] <= 100


# --- Pretrained: an mmsk classifier checkpoint into a detector -----------

DETECTOR = 'retinanet_sknet50_fpn_1x_coco.py'


def save_classifier(path, **backbone):
    """An mmpretrain ImageClassifier with random weights, saved the way
    MMEngine's Runner saves it (``meta`` + ``state_dict``)."""
    cfg = tiny_config(DETECTOR)
    backbone = dict(cfg.model.backbone, out_indices=(3, ), **backbone)
    classifier = registry('mmpretrain').build(
        dict(
            type='ImageClassifier',
            backbone=backbone,
            neck=dict(type='GlobalAveragePooling'),
            head=dict(
                type='LinearClsHead', num_classes=10, in_channels=256)))
    gen = torch.Generator().manual_seed(0)
    for value in classifier.state_dict().values():
        if value.is_floating_point():
            value.copy_(torch.rand(value.shape, generator=gen))
    torch.save(
        dict(meta=dict(epoch=1), state_dict=classifier.state_dict()), path)
    return classifier


def detector_with_checkpoint(path, **backbone):
    cfg = tiny_config(DETECTOR)
    init_cfg = load_config(DETECTOR).model.backbone.init_cfg
    cfg.model.backbone.update(
        backbone, init_cfg=dict(init_cfg, checkpoint=str(path)))
    return build_model(cfg)


def test_pretrained_classifier_checkpoint_loads_into_the_detector(tmp_path):
    path = tmp_path / 'classifier.pth'
    classifier = save_classifier(path)
    detector = detector_with_checkpoint(path)
    detector.init_weights()
    loaded = detector.backbone.state_dict()
    expected = classifier.backbone.state_dict()
    assert set(loaded) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(loaded[key], value, msg=key)


@pytest.mark.parametrize(
    'checkpoint_backbone,detector_backbone,pattern', [
        (dict(), dict(stem_channels=16, base_channels=16),
         r'keys with another shape: conv1\.weight \(checkpoint \(8, 3, 7, '
         r'7\), model \(16, 3, 7, 7\)\)'),
        (dict(), dict(depth=101),
         r'keys missing in the checkpoint: layer3\.6\.conv1\.conv\.weight'),
    ],
    ids=['width', 'depth'])
def test_mismatched_checkpoint_names_the_keys(tmp_path, checkpoint_backbone,
                                             detector_backbone, pattern):
    from mmsk.models.backbones.pretrained import PretrainedMismatchError
    path = tmp_path / 'classifier.pth'
    save_classifier(path, **checkpoint_backbone)
    detector = detector_with_checkpoint(path, **detector_backbone)
    with pytest.raises(PretrainedMismatchError) as error:
        detector.init_weights()
    message = str(error.value)
    assert re.search(pattern, message), message
    assert str(path) in message and "prefix 'backbone.'" in message


def test_extra_checkpoint_keys_are_logged_by_name(tmp_path):
    # a deeper classifier covers every key of the detector's backbone: it
    # loads, and MMEngine's warning names what was left over
    from mmengine.logging import MMLogger
    path = tmp_path / 'classifier.pth'
    classifier = save_classifier(path, depth=101)
    detector = detector_with_checkpoint(path)
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        detector.init_weights()
    finally:
        logger.removeHandler(handler)
    text = '\n'.join(r.getMessage() for r in records)
    assert re.search(r'unexpected key in source state_dict: .*'
                     r'layer3\.6\.conv1\.conv\.weight', text), text
    expected = classifier.backbone.state_dict()
    for key, value in detector.backbone.state_dict().items():
        torch.testing.assert_close(value, expected[key], msg=key)


# --- SE and SK as plug-ins of mmdet's ResNet ------------------------------

PLUGIN_CONFIG = 'retinanet_r50-sk-c3-c5_fpn_1x_coco.py'


@pytest.mark.parametrize('attn,abbr', [('mmsk.SEAttention', 'se_attention'),
                                       ('mmsk.SKAttention', 'sk_attention')])
def test_attention_plugin_in_mmdet_resnet50(attn, abbr):
    backbone = copy.deepcopy(load_config(PLUGIN_CONFIG).model.backbone)
    plugins = backbone.plugins
    if attn == 'mmsk.SEAttention':  # as the config's comment says
        plugins[0]['cfg'] = dict(type=attn)
    assert plugins[0]['cfg']['type'] == attn
    # the config's backbone (its norm_eval, frozen_stages), narrower
    resnet = dict(backbone, stem_channels=16, base_channels=16,
                  init_cfg=None)
    resnet.pop('plugins')
    MODELS = registry('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(dict(resnet, plugins=plugins))
    model.train()
    assert backbone.norm_eval
    plugged = []
    for i, layer in enumerate(model.res_layers):
        for block in getattr(model, layer):
            assert block.after_conv2_plugin_names == ([abbr] if i else [])
            if i:
                plugin = getattr(block, abbr)
                assert type(plugin).__name__ == attn.split('.')[1]
                assert plugin.in_channels == block.conv2.out_channels
                plugged.append(plugin)
    x = torch.rand(2, 3, 64, 64)
    outs = model(x)
    assert [tuple(o.shape) for o in outs] == [(2, 64, 16, 16),
                                              (2, 128, 8, 8), (2, 256, 4, 4),
                                              (2, 512, 2, 2)]
    sum(o.mean() for o in outs).backward()
    for plugin in plugged:
        for n, p in plugin.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, n
        # the plug-ins start from scratch, so their norms must normalise:
        # norm_eval=True held the SK units' BatchNorms at mean 0, variance 1
        for n, m in plugin.named_modules():
            assert not isinstance(m, _BatchNorm) or m.training, n
    # the plug-ins change what the network computes
    plain = MODELS.build(resnet)
    plain.load_state_dict(model.state_dict(), strict=False)
    plain.train()
    assert not torch.allclose(plain(x)[-1], outs[-1])


def test_sk_attention_keeps_the_shape_and_refuses_shape_arguments():
    import mmsk  # noqa: F401
    from mmsk.models.layers import SKAttention
    sk = SKAttention(64)
    assert sk.in_channels == sk.out_channels == 64
    assert sk(torch.rand(2, 64, 8, 8)).shape == (2, 64, 8, 8)
    for bad in (dict(out_channels=32), dict(stride=2)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SKAttention(64, **bad)


# --- the docs show exactly the tested configs ----------------------------


def _config_snippets(doc):
    """``{config path: body}`` of the python blocks that name a config."""
    text = open(osp.join(ROOT, doc)).read()
    shown = {}
    for block in re.findall(r'```python\n(.*?)```', text, re.S):
        first, _, body = block.partition('\n')
        match = re.fullmatch(r'# (configs/downstream/\S+\.py)', first)
        if match:
            shown[match.group(1)] = body
    return shown


def test_docs_show_every_downstream_config_verbatim():
    shown = _config_snippets(osp.join('docs', 'downstream.md'))
    on_disk = {f'configs/downstream/{name}' for name in CONFIGS}
    assert set(shown) == on_disk
    for path, body in shown.items():
        assert body == open(osp.join(ROOT, path)).read(), path


def test_readme_snippets_are_the_tested_configs():
    shown = _config_snippets('README.md')
    assert {
        'configs/downstream/retinanet_sknet50_fpn_1x_coco.py',
        'configs/downstream/retinanet_r50-sk-c3-c5_fpn_1x_coco.py'
    } <= set(shown)
    on_disk = {f'configs/downstream/{name}' for name in CONFIGS}
    assert set(shown) <= on_disk
    for path, body in shown.items():
        assert body == open(osp.join(ROOT, path)).read(), path
