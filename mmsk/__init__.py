"""mmsk: SKNet, SE, Res2Net and inverted-residual backbones for OpenMMLab.

Importing mmsk checks the OpenMMLab versions it needs, registers its models,
data sets and hooks (scope ``mmsk``, and unscoped in mmpretrain's
registries), lets MMEngine load its own checkpoints on torch>=2.6 with
``weights_only=True`` (see :mod:`mmsk.checkpoint`), makes MMEngine's Runner
load checkpoints strictly, save them atomically and resume from the newest
readable one (see :mod:`mmsk.engine`), and makes MMEngine's FLOP counter
count the attention's element-wise ops (see :mod:`mmsk.utils.flops`).
"""
from .version import __version__
from .utils.compat import check_versions

check_versions()

from . import checkpoint  # noqa: E402
from . import datasets, engine, models  # noqa: E402,F401
from .models import *  # noqa: E402,F401,F403

checkpoint.install()
engine.install()

from .utils.flops import register_flop_handles  # noqa: E402

register_flop_handles()

__all__ = ['__version__', 'checkpoint', 'datasets', 'engine', 'models']
