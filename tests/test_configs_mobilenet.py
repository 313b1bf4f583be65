"""The MobileNetV2 configs load with Config.fromfile and build."""
import glob
import os.path as osp

import pytest
import torch

from conftest import ROOT

FOLDER = f'{ROOT}/configs/mobilenet_v2'
CONFIGS = sorted(osp.basename(p) for p in glob.glob(f'{FOLDER}/*.py'))


def test_folder_has_configs_readme_and_metafile():
    import yaml
    assert len(CONFIGS) >= 4, CONFIGS
    with open(f'{FOLDER}/metafile.yml') as f:
        meta = yaml.safe_load(f)
    names = {m['Name'] for m in meta['Models']}
    for model in meta['Models']:
        assert osp.isfile(f"{ROOT}/{model['Config']}"), model['Name']
    assert names == {osp.splitext(c)[0] for c in CONFIGS}
    readme = open(f'{FOLDER}/README.md').read()
    assert 'https://arxiv.org/abs/1801.04381' in readme
    for config in CONFIGS:
        assert config in readme, config


@pytest.mark.parametrize('name', CONFIGS)
def test_config_loads_and_builds(name):
    from mmengine.config import Config
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(f'{FOLDER}/{name}')
    assert cfg.custom_imports['imports'] == ['mmsk']
    assert cfg.model.backbone.type == 'InvertedResidualNet'
    model = MODELS.build(cfg.model)
    assert type(model.backbone).__name__ == 'InvertedResidualNet'
    assert model.backbone.feat_dim == cfg.model.head.in_channels
    model.eval()
    if name.endswith('_mnist5k.py'):
        assert cfg.train_dataloader.dataset.type == 'MNIST5k'
        x = torch.rand(2, 1, 28, 28)
        with torch.no_grad():
            feats = model.backbone(x)
            logits = model(x, mode='tensor')
        # the last feature map keeps 4x4 of the 28x28 digit
        assert feats[-1].shape[-2:] == (4, 4)
        assert logits.shape == (2, 10)
    else:
        assert cfg.model.head.num_classes == 1000
        assert cfg.train_dataloader.dataset.type == 'ImageNet'
        with torch.no_grad():
            logits = model(torch.rand(1, 3, 64, 64), mode='tensor')
        assert logits.shape == (1, 1000)
        # the metafile's figures are this model's
        from test_configs import _metafile_figure, model_flops
        path = f'configs/mobilenet_v2/{name}'
        params = sum(p.numel() for p in model.parameters())
        assert _metafile_figure(path, 'Parameters') == params
        assert _metafile_figure(path, 'FLOPs') == pytest.approx(
            model_flops(model), rel=1e-3)
