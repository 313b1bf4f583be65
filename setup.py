"""mmsk: attention and multi-scale CNN backbones for the OpenMMLab stack."""
import os.path as osp

from setuptools import find_packages, setup


def get_version():
    scope = {}
    with open(osp.join(osp.dirname(__file__), 'mmsk', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


setup(
    name='mmsk',
    version=get_version(),
    description='SKNet, SE, Res2Net and inverted-residual backbones for '
    'mmpretrain, mmdetection and mmsegmentation',
    long_description=open('README.md', encoding='utf-8').read()
    if osp.exists('README.md') else '',
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('tests', 'tests.*', 'configs', 'tools')),
    python_requires='>=3.8',
    # mmcv is deliberately not listed: users bring mmcv or mmcv-lite (or a
    # CUDA build); mmsk checks the versions at import time, as mmpretrain does.
    install_requires=['mmengine>=0.10.0,<1.0.0', 'mmpretrain>=1.2.0,<1.3.0'],
    extras_require={'tests': ['timm>=1.0', 'pytest'],
                    'data': ['mlxtend>=0.23']},
    license='Apache License 2.0',
    zip_safe=False,
)
