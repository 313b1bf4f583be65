"""mmsk's registries and how its names reach other OpenMMLab scopes.

mmsk keeps its own ``MODELS`` / ``DATASETS`` registries (scope ``mmsk``) as
children of MMEngine's root registries, so ``type='mmsk.SKNet'`` resolves from
any scope (mmdet, mmseg, mmpretrain, ...). Every mmsk class is also added,
under the same name, to mmpretrain's registries, so that mmpretrain configs
(default scope ``mmpretrain``) may write ``type='SKNet'`` with no prefix.
Adding never overwrites: a name mmpretrain already has is an error at import.
"""
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry(
    'model', parent=MMENGINE_MODELS, scope='mmsk', locations=['mmsk.models'])
DATASETS = Registry(
    'dataset',
    parent=MMENGINE_DATASETS,
    scope='mmsk',
    locations=['mmsk.datasets'])


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
