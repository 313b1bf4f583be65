"""mmsk's registries and how its names reach other OpenMMLab scopes.

mmsk keeps its own ``MODELS`` / ``DATASETS`` registries (scope ``mmsk``) as
children of MMEngine's root registries, so ``type='mmsk.SKNet'`` resolves from
any scope (mmdet, mmseg, mmpretrain, ...). Every mmsk class is also added,
under the same name, to mmpretrain's registries, so that mmpretrain configs
(default scope ``mmpretrain``) may write ``type='SKNet'`` with no prefix.
The same holds for its ``HOOKS`` (:mod:`mmsk.engine`).
Adding never overwrites: a name mmpretrain already has is an error at import.
"""
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry, build_model_from_cfg


def _in_mmsk_scope(cfg):
    if isinstance(cfg, list):
        return [_in_mmsk_scope(c) for c in cfg]
    if isinstance(cfg, dict) and '_scope_' not in cfg:
        cfg = cfg.copy()
        cfg['_scope_'] = 'mmsk'
    return cfg


def build_in_mmsk_scope(cfg, registry, default_args=None):
    """Build from mmsk's ``MODELS``: unscoped names are mmsk's whatever the
    default scope, so a backbone that builds its blocks' attention
    (``attn_cfg=dict(type='SEAttention')``) also builds under mmdet's or
    mmseg's default scope, whose registries do not hold mmsk's names."""
    return build_model_from_cfg(_in_mmsk_scope(cfg), registry, default_args)


MODELS = Registry(
    'model',
    parent=MMENGINE_MODELS,
    scope='mmsk',
    locations=['mmsk.models'],
    build_func=build_in_mmsk_scope)
DATASETS = Registry(
    'dataset',
    parent=MMENGINE_DATASETS,
    scope='mmsk',
    locations=['mmsk.datasets'])
HOOKS = Registry(
    'hook', parent=MMENGINE_HOOKS, scope='mmsk', locations=['mmsk.engine'])


def _register(own, foreign_name):

    def decorator(cls):
        from mmpretrain import registry as mmpretrain_registry
        foreign = getattr(mmpretrain_registry, foreign_name)
        if cls.__name__ in foreign.module_dict:
            raise KeyError(f'{cls.__name__} is already registered in '
                           f'mmpretrain ({foreign.name}); an mmsk class must '
                           f'not shadow it: choose another name')
        own.register_module(module=cls)
        foreign.register_module(module=cls)
        return cls

    return decorator


register_model = _register(MODELS, 'MODELS')
register_dataset = _register(DATASETS, 'DATASETS')
register_hook = _register(HOOKS, 'HOOKS')
