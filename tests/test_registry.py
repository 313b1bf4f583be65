"""How mmsk's names reach mmpretrain, mmdet and mmseg configs."""
import json
import textwrap

import pytest

from conftest import run_python

SKNET = "dict(type='{}', depth=18, stem_channels=16, base_channels=16)"


def test_unscoped_name_in_mmpretrain_config_with_custom_imports(tmp_path):
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(
        textwrap.dedent(f"""
        custom_imports = dict(imports=['mmsk'], allow_failed_imports=False)
        default_scope = 'mmpretrain'
        model = dict(
            type='ImageClassifier',
            backbone={SKNET.format('SKNet')},
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=10, in_channels=128))
        """))
    # fresh interpreter: only custom_imports imports mmsk
    out = run_python(
        textwrap.dedent(f"""
        import sys
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        assert 'mmsk' not in sys.modules
        cfg = Config.fromfile({str(cfg)!r})
        init_default_scope(cfg.default_scope)
        from mmpretrain.registry import MODELS
        model = MODELS.build(cfg.model)
        print(type(model.backbone).__module__, type(model.backbone).__name__)
        """)).stdout
    assert 'mmsk.models.backbones.sknet SKNet' in out


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmpretrain'])
@pytest.mark.parametrize('custom_imports', [False, True])
def test_scoped_name_from_other_projects(scope, custom_imports, tmp_path):
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(
        ("custom_imports = dict(imports=['mmsk'], "
         "allow_failed_imports=False)\n" if custom_imports else '') +
        f"backbone = {SKNET.format('mmsk.SKNet')}\n")
    out = run_python(
        textwrap.dedent(f"""
        import importlib, sys
        import torch
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        cfg = Config.fromfile({str(cfg)!r})
        assert ('mmsk' in sys.modules) == {custom_imports}
        init_default_scope({scope!r})
        MODELS = importlib.import_module({scope!r} + '.registry').MODELS
        model = MODELS.build(cfg.backbone).eval()
        outs = model(torch.rand(1, 3, 32, 32))
        print(type(model).__module__, tuple(outs[-1].shape))
        """)).stdout
    assert 'mmsk.models.backbones.sknet (1, 128, 1, 1)' in out


def test_no_mmsk_name_shadows_an_openmmlab_name():
    # names registered before mmsk is imported
    others = json.loads(
        run_python(
            textwrap.dedent("""
        import json
        import mmcv.cnn, mmcv.ops  # noqa: F401 (registers mmcv layers)
        import mmpretrain.models, mmpretrain.datasets
        import mmdet.models, mmdet.datasets
        import mmseg.models, mmseg.datasets
        import mmengine.hooks, mmpretrain.engine, mmdet.engine, mmseg.engine
        from mmengine import registry as root
        import mmpretrain.registry as a, mmdet.registry as b
        import mmseg.registry as c
        out = {}
        for kind in ('MODELS', 'DATASETS', 'TRANSFORMS', 'HOOKS'):
            names = set(getattr(root, kind).module_dict)
            for pkg in (a, b, c):
                names |= set(getattr(pkg, kind).module_dict)
            out[kind] = sorted(names)
        print(json.dumps(out))
        """)).stdout.splitlines()[-1])
    import mmsk  # noqa: F401
    from mmsk.registry import DATASETS, HOOKS, MODELS
    for kind, registry in (('MODELS', MODELS), ('DATASETS', DATASETS),
                           ('HOOKS', HOOKS)):
        ours = set(registry.module_dict)
        assert ours, f'mmsk registers no {kind}'
        clash = ours & set(others[kind])
        assert not clash, f'mmsk {kind} shadow OpenMMLab names: {clash}'


def test_registering_an_existing_mmpretrain_name_is_refused():
    import mmsk  # noqa: F401
    from mmsk.registry import register_model

    class ResNet:  # same name as mmpretrain's
        pass

    with pytest.raises(KeyError, match='ResNet'):
        register_model(ResNet)
