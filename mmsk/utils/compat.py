"""Version checks at import, in mmpretrain's manner."""
from importlib import import_module

from mmengine.utils import digit_version

#: package -> (minimum inclusive, maximum exclusive)
REQUIREMENTS = {
    'mmcv': ('2.0.0', '2.4.0'),
    'mmengine': ('0.10.0', '1.0.0'),
    'mmpretrain': ('1.2.0', '1.3.0'),
}


def check_versions(requirements=REQUIREMENTS):
    """Raise ``ImportError`` naming the package whose version mmsk cannot
    use. mmcv and mmcv-lite both satisfy ``mmcv``."""
    for name, (low, high) in requirements.items():
        try:
            version = import_module(name).__version__
        except ImportError as e:
            raise ImportError(
                f'mmsk needs {name}>={low},<{high}, which is not installed '
                f'({e}). See README.md, "Install into an existing '
                f'environment".') from e
        if not digit_version(low) <= digit_version(version) < \
                digit_version(high):
            raise ImportError(
                f'{name}=={version} is incompatible with mmsk: please install '
                f'{name}>={low},<{high}.')
