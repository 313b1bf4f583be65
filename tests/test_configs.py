"""Every config of the listed config folders loads and builds its model.

ImageNet configs only build the classifier (a forward at 224x224 would add
nothing but time); built-in data configs run a forward on MNIST-sized input.
"""
import glob
import os.path as osp

import pytest
import torch

from conftest import ROOT

# config folders checked here; add a folder when it gets configs
FOLDERS = ('senet', 'res2net', 'sknet')
CONFIGS = sorted(
    osp.relpath(path, ROOT) for folder in FOLDERS
    for path in glob.glob(f'{ROOT}/configs/{folder}/*.py'))


def test_every_folder_has_configs_readme_and_metafile():
    for folder in FOLDERS:
        assert glob.glob(f'{ROOT}/configs/{folder}/*.py'), folder
        for name in ('README.md', 'metafile.yml'):
            assert osp.isfile(f'{ROOT}/configs/{folder}/{name}'), \
                f'{folder}/{name}'


def test_metafiles_name_existing_configs():
    import yaml
    for folder in FOLDERS:
        with open(f'{ROOT}/configs/{folder}/metafile.yml') as f:
            meta = yaml.safe_load(f)
        for model in meta['Models']:
            assert osp.isfile(f"{ROOT}/{model['Config']}"), model['Name']
            assert model['Name'] == osp.splitext(
                osp.basename(model['Config']))[0]
        # and every config of the folder is listed
        listed = {model['Config'] for model in meta['Models']}
        assert listed == {c for c in CONFIGS
                          if c.startswith(f'configs/{folder}/')}, folder


@pytest.mark.parametrize('path', CONFIGS)
def test_config_loads_and_builds(path):
    from mmengine.config import Config
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(f'{ROOT}/{path}')
    assert cfg.custom_imports['imports'] == ['mmsk']
    assert cfg.model.backbone.type in ('SENet', 'MultiScaleResNet', 'SKNet')
    model = MODELS.build(cfg.model)
    assert model.backbone.feat_dim == cfg.model.head.in_channels
    if path.endswith('_mnist5k.py'):
        assert cfg.train_dataloader.dataset.type == 'MNIST5k'
        model.eval()
        with torch.no_grad():
            logits = model(torch.rand(2, 1, 28, 28), mode='tensor')
        assert logits.shape == (2, 10)
    else:
        assert cfg.model.head.num_classes == 1000
        assert cfg.train_dataloader.dataset.type == 'ImageNet'
        # the folder README's params column is this model's
        count = sum(p.numel() for p in model.parameters())
        params = count / 1e6
        assert _readme_params(path) == pytest.approx(params, abs=0.006)
        # and the metafile's: the exact count, as mmpretrain's metafiles
        # give it
        listed = _metafile_figure(path, 'Parameters')
        assert listed == count, (path, listed, count)
        # the metafile's FLOPs: this model's, at 224x224, as
        # tools/analysis_tools/complexity.py and mmpretrain's get_flops.py
        # count them (the element-wise ops included, mmsk.utils.flops)
        listed = _metafile_figure(path, 'FLOPs')
        assert listed is not None, f'{path}: no FLOPs in the metafile'
        assert listed == pytest.approx(model_flops(model), rel=1e-3)


def model_flops(model, size=224):
    """FLOPs of a classifier on one ``size`` x ``size`` image."""
    from mmengine.analysis import FlopAnalyzer
    model.eval()
    with torch.no_grad():
        analyzer = FlopAnalyzer(model, torch.zeros(1, 3, size, size))
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        return analyzer.total()


def _metafile_figure(path, key):
    import yaml
    with open(f'{ROOT}/{osp.dirname(path)}/metafile.yml') as f:
        meta = yaml.safe_load(f)
    (model, ) = [m for m in meta['Models'] if m['Config'] == path]
    return (model.get('Metadata') or {}).get(key)


def _readme_params(path):
    folder, name = osp.split(path)
    with open(f'{ROOT}/{folder}/README.md') as f:
        rows = [line for line in f if f'| {name} |' in line]
    assert len(rows) == 1, f'{name}: {len(rows)} rows in the README table'
    return float(rows[0].split('|')[3])


def test_the_resnet_baseline_config_builds_and_runs():
    """configs/resnet holds the baseline the family READMEs compare with
    (mmpretrain's own ResNet-18, the same data and recipe as SKNet-18);
    it has no metafile, being no mmsk model."""
    from mmengine.config import Config
    from mmpretrain.registry import MODELS
    (path, ) = glob.glob(f'{ROOT}/configs/resnet/*.py')
    cfg = Config.fromfile(path)
    base = Config.fromfile(f'{ROOT}/configs/sknet/'
                           'sknet18-cifar_1xb64_mnist5k.py')
    assert cfg.model.backbone.type == 'ResNet_CIFAR'
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader',
                'optim_wrapper', 'param_scheduler', 'train_cfg'):
        assert cfg[key] == base[key], key
    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 1, 28, 28), mode='tensor').shape == (2, 10)


def test_model_index_imports_every_metafile():
    # model-index.yml at the root, as in mmpretrain: what OpenMMLab's
    # model-index tools (mim, modelindex) read
    import yaml
    from modelindex.load_model_index import load
    with open(f'{ROOT}/model-index.yml') as f:
        imports = yaml.safe_load(f)['Import']
    metafiles = sorted(
        osp.relpath(path, ROOT)
        for path in glob.glob(f'{ROOT}/configs/*/metafile.yml'))
    assert sorted(imports) == metafiles
    index = load(f'{ROOT}/model-index.yml')
    index.build_models_with_collections()
    names = [model.name for model in index.models]
    assert len(names) == len(set(names)), 'a model name twice'
    # paths in metafiles are relative to the root (mmpretrain's rule)
    collections = {c.name: c.readme for c in index.collections}
    for readme in collections.values():
        assert osp.isfile(f'{ROOT}/{readme}'), readme
    for model in index.models:
        assert osp.isfile(f'{ROOT}/{model.config}'), model.name
        assert model.in_collection in collections, model.name
    configs = sorted(osp.relpath(path, ROOT) for path in glob.glob(
        f'{ROOT}/configs/*/*_in1k.py'))
    assert sorted(model.config for model in index.models
                  if model.config.endswith('_in1k.py')) == configs
