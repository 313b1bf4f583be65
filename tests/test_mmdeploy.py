"""OpenMMLab's own deployment tool on mmsk models: ``mmdeploy.apis.
torch2onnx`` (run by :func:`mmsk.deploy.mmdeploy_cfgs.torch2onnx`, see there
for the torch 2.14 workaround) with mmsk's deploy configs, then onnxruntime
against PyTorch, for an mmsk classifier and a tiny segmentor of
configs/downstream."""
# mmdeploy is installed by tools/setup_env.sh (requirements/deploy.txt): an
# import that fails fails these tests instead of skipping them
import mmdeploy  # noqa: F401
import numpy as np
import pytest
import torch

from conftest import MAIN_CONFIG, randomize_bn


def ort_run(onnx_file, x):
    import onnxruntime as ort
    session = ort.InferenceSession(
        onnx_file, providers=['CPUExecutionProvider'])
    outs = session.run(None, {'input': x.numpy()})
    return [torch.from_numpy(a) for a in outs]


@pytest.mark.parametrize('paths', [2, 3])
def test_classifier_through_mmdeploy(paths, tmp_path):
    """mmdeploy folds the backbone (``switch_to_deploy``), which turns
    two-path SK units into one logit; SK units of three paths keep their
    softmax across paths, and export at mmdeploy's opset 11 as well (their
    reshape was an ``unflatten``, which opset 11 lacks)."""
    import onnx
    from mmengine.config import Config
    from mmpretrain.registry import MODELS

    from mmsk.deploy.mmdeploy_cfgs import classification_cfg, torch2onnx
    cfg = Config.fromfile(MAIN_CONFIG)
    cfg.model.backbone.update(stem_channels=8, base_channels=8)
    if paths == 3:
        cfg.model.backbone.sk_cfg = dict(
            branches=[dict(dilation=d) for d in (1, 2, 3)])
    cfg.model.head.in_channels = 64
    torch.manual_seed(0)
    model = randomize_bn(MODELS.build(cfg.model)).eval()
    ckpt = str(tmp_path / 'model.pth')
    torch.save(dict(state_dict=model.state_dict()), ckpt)
    img = np.random.RandomState(0).randint(0, 256, (28, 28, 1), np.uint8)
    onnx_file = torch2onnx(img, str(tmp_path / 'work'),
                           classification_cfg((28, 28), dynamic=True), cfg,
                           ckpt)
    proto = onnx.load(onnx_file)
    assert proto.opset_import[0].version == 11  # mmdeploy's own opset
    x = torch.randn(3, 1, 28, 28)
    (scores, ) = ort_run(onnx_file, x)
    with torch.no_grad():
        expected = model(x, mode='tensor').softmax(-1)
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-4)


def test_segmentor_through_mmdeploy(tmp_path):
    from test_downstream import SEG_SIZE, build_model, tiny_config

    from mmsk.deploy.mmdeploy_cfgs import segmentation_cfg, torch2onnx
    cfg = tiny_config(
        'deeplabv3_mobilenet-v2-d8_4xb2-80k_cityscapes-512x1024.py')
    for step in cfg.test_pipeline:
        if step['type'] == 'Resize':
            step.update(scale=SEG_SIZE, keep_ratio=False)
    torch.manual_seed(0)
    model = randomize_bn(build_model(cfg)).eval()
    ckpt = str(tmp_path / 'model.pth')
    torch.save(dict(state_dict=model.state_dict()), ckpt)
    img = np.random.RandomState(0).randint(0, 256, (*SEG_SIZE, 3), np.uint8)
    onnx_file = torch2onnx(
        img, str(tmp_path / 'work'),
        segmentation_cfg(SEG_SIZE, with_argmax=False), cfg, ckpt)
    x = torch.randn(1, 3, *SEG_SIZE)
    (logits, ) = ort_run(onnx_file, x)
    meta = dict(img_shape=SEG_SIZE, ori_shape=SEG_SIZE, pad_shape=SEG_SIZE)
    with torch.no_grad():
        expected = model.encode_decode(x, [meta])
    assert logits.shape == expected.shape
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
