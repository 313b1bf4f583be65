"""Safe loading of MMEngine checkpoints on torch>=2.6.

torch>=2.6 loads with ``weights_only=True`` by default, and mmengine 0.10.7's
local loader calls ``torch.load`` without saying which globals its own
checkpoints need, so ``tools/test.py CONFIG CKPT`` and ``--resume`` fail
("Unsupported global: mmengine.logging.history_buffer.HistoryBuffer").
Passing ``weights_only=False`` would let any checkpoint run code on load.

:func:`install` (run by ``import mmsk``) replaces mmengine's loader of local
files by :func:`load_local_checkpoint`, which keeps ``weights_only=True`` and
allows exactly the extra types that mmengine checkpoints hold
(:func:`allowed_globals`). Anything else, such as a pickled callable in a
hostile file, is refused with :class:`UnsafeCheckpointError` before any of it
runs; an unreadable file (truncated, random bytes, text) raises
:class:`CorruptCheckpointError`.
"""
import os.path as osp
import pickle
import re
import zipfile
from functools import lru_cache
from typing import List, Optional

import numpy as np
import torch


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The checkpoint holds a type outside the allow-list; nothing ran."""


class CorruptCheckpointError(RuntimeError):
    """The file is not a readable torch checkpoint."""


class _StaticMethodsOf:
    """What the unpickler gets for a class of which a checkpoint may only
    look up some static methods: never the class itself (a checkpoint that
    calls it is refused, and nothing runs)."""

    def __init__(self, load_class, names):
        self.load_class = load_class
        self.names = frozenset(names)

    def __repr__(self):
        cls = self.load_class()
        return f'{cls.__module__}.{cls.__qualname__} (static methods only)'

    def __call__(self, *args, **kwargs):
        cls = self.load_class()
        raise pickle.UnpicklingError(
            f'Unsupported global: a call of {cls.__module__}.'
            f'{cls.__qualname__} (only its static methods '
            f'{sorted(self.names)} may be looked up)')


def _one_cycle_class():
    from mmengine.optim.scheduler.param_scheduler import \
        OneCycleParamScheduler
    return OneCycleParamScheduler


#: ``OneCycleParamScheduler`` (and ``OneCycleLR``) keeps its annealing
#: function, a static method, in the state it saves (``anneal_func``):
#: pickle stores it as ``getattr(OneCycleParamScheduler, '_annealing_cos')``
_ONE_CYCLE = _StaticMethodsOf(_one_cycle_class,
                              ('_annealing_cos', '_annealing_linear'))


def _restricted_getattr(obj, name: str):
    """``getattr`` as the unpickler may call it: only to look up the
    statistics methods of :class:`HistoryBuffer` (protocol-2 pickles store
    ``HistoryBuffer.min`` as ``getattr(HistoryBuffer, 'min')``) and the
    annealing functions of ``OneCycleParamScheduler``."""
    from mmengine.logging.history_buffer import HistoryBuffer
    allowed = {'min', 'max', 'current', 'mean'}
    allowed |= set(HistoryBuffer._statistics_methods)  # registered ones
    if obj is HistoryBuffer and name in allowed:
        return getattr(HistoryBuffer, name)
    if obj is _ONE_CYCLE and name in _ONE_CYCLE.names:
        return getattr(_ONE_CYCLE.load_class(), name)
    raise pickle.UnpicklingError(
        f'Unsupported global: GLOBAL builtins.getattr on {obj!r}.{name} '
        f'(only HistoryBuffer statistics methods and OneCycleParamScheduler '
        f'annealing functions may be looked up)')


@lru_cache(maxsize=None)
def allowed_globals() -> List:
    """The globals beyond torch's defaults that mmengine checkpoints hold.

    ``meta['message_hub']`` holds :class:`~mmengine.logging.HistoryBuffer`
    objects: their logs are numpy arrays (``_reconstruct``, ``ndarray``,
    ``dtype``), their latest values numpy scalars (``scalar``), and their
    statistics methods are pickled as ``getattr(HistoryBuffer, 'min')``,
    which is served by a ``getattr`` that allows only that lookup. The
    state of a ``OneCycleParamScheduler`` holds its annealing function,
    pickled as ``getattr(OneCycleParamScheduler, '_annealing_cos')``: the
    class is served by a stand-in that allows only that lookup.
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    multiarray = np._core.multiarray if hasattr(np, '_core') \
        else np.core.multiarray
    return [
        HistoryBuffer,
        np.ndarray,
        np.dtype,
        multiarray._reconstruct,
        multiarray.scalar,
        (_restricted_getattr, 'builtins.getattr'),
        (_ONE_CYCLE, 'mmengine.optim.scheduler.param_scheduler.'
         'OneCycleParamScheduler'),
        *numeric_dtype_classes(),
    ]


def numeric_dtype_classes() -> List[type]:
    """The dtype classes of numpy's bool, integer and float types (the
    arrays and scalars of a HistoryBuffer); object/void/str dtypes are not
    allowed."""
    kinds = [np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8,
             np.uint16, np.uint32, np.uint64, np.float16, np.float32,
             np.float64, np.longlong, np.ulonglong, np.longdouble]
    return sorted({type(np.dtype(k)) for k in kinds},
                  key=lambda c: c.__name__)


def _global_name(entry) -> str:
    if isinstance(entry, tuple):
        return f'{entry[1]} (restricted)'
    return f'{entry.__module__}.{entry.__qualname__}'


_GLOBAL = re.compile(
    r"unsupported (?:global: )?GLOBAL ([\w.]+)|but got <class '([\w.]+)'>",
    re.IGNORECASE)


def load_local_checkpoint(filename: str, map_location=None):
    """Load a local checkpoint with ``weights_only=True`` and mmengine's types.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the file needs a global outside the allow-list.
        CorruptCheckpointError: the file is truncated or not a checkpoint.
    """
    filename = osp.expanduser(filename)
    if osp.isdir(filename):
        raise FileNotFoundError(
            f'{filename} is a folder, not a checkpoint file: give a .pth '
            f'file (to resume, --resume alone picks the newest readable '
            f'checkpoint of the work dir)')
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    if is_safetensors_file(filename):
        raise CorruptCheckpointError(
            f'Cannot read checkpoint {filename!r}: it is a safetensors file '
            f'of weights (the format timm downloads), not a torch '
            f'checkpoint: convert it first with '
            f'tools/model_converters/timm_to_mmsk.py MODEL {filename} '
            f'OUT.pth')
    if not _looks_like_torch_file(filename):
        raise CorruptCheckpointError(
            f'Cannot read checkpoint {filename!r}: it is corrupt, truncated '
            f'or not a torch checkpoint (neither a zip archive nor a legacy '
            f'torch file)')
    damage = zip_damage(filename)
    if damage is not None:
        # torch reads the records without checking their CRCs: flipped
        # bytes in a tensor would load as wrong weights
        raise CorruptCheckpointError(
            f'Cannot read checkpoint {filename!r}: it is corrupt ({damage}); '
            f'its contents differ from what was saved')
    # only the entries not allowed already: leaving the context removes
    # them, and must not remove what add_safe_globals allowed for good
    present = set(torch.serialization.get_safe_globals())
    extra = [g for g in allowed_globals() if g not in present]
    try:
        with torch.serialization.safe_globals(extra):
            return torch.load(
                filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if not _refused_a_type(str(e)):
            raise _corrupt(filename, e) from e
        found = _GLOBAL.search(str(e))
        what = f'the global {found.group(1) or found.group(2)!r}' if found \
            else \
            'an object outside the allow-list'
        raise UnsafeCheckpointError(
            f'Refused to load checkpoint {filename!r}: it holds {what}, which '
            f'mmsk does not load (weights_only=True; allowed extra types: '
            f'{[_global_name(g) for g in allowed_globals()]}'
            f'). Nothing in the file was run.') from None
    except Exception as e:  # noqa: BLE001 - garbage fails in many ways
        raise _corrupt(filename, e) from e


def zip_damage(filename: str) -> Optional[str]:
    """What is wrong with a torch zip checkpoint, record by record
    (CRC-32, no unpickling), or None when every record reads back as saved
    (and for files that are not zip archives)."""
    if not zipfile.is_zipfile(filename):
        return None
    try:
        with zipfile.ZipFile(filename) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return f'{type(e).__name__}: {e}'
    return None if bad is None else f'bad CRC in record {bad!r}'


def is_safetensors_file(filename: str) -> bool:
    """Whether ``filename`` starts like a safetensors file: a little-endian
    64-bit header length that fits in the file, then a JSON object."""
    with open(filename, 'rb') as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b'{':
        return False
    return 0 < int.from_bytes(head[:8], 'little') <= \
        osp.getsize(filename) - 8


def load_safetensors(filename: str) -> dict:
    """The tensors of a safetensors file (which holds no code to run), on
    the CPU; :class:`CorruptCheckpointError` when it does not read."""
    try:
        from safetensors.torch import load_file
    except ImportError as e:
        raise CorruptCheckpointError(
            f'{filename!r} is a safetensors file; reading it needs the '
            f'safetensors package (pip install safetensors)') from e
    try:
        return load_file(filename, device='cpu')
    except Exception as e:  # noqa: BLE001 - SafetensorError and others
        raise CorruptCheckpointError(
            f'Cannot read {filename!r}: it is a corrupt or truncated '
            f'safetensors file ({type(e).__name__}: {e})') from e


def _looks_like_torch_file(filename: str) -> bool:
    """A complete zip archive (torch>=1.6) or a file that starts with the
    pickled magic number of torch's legacy format."""
    if zipfile.is_zipfile(filename):
        return True
    magic = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)
    with open(filename, 'rb') as f:
        return f.read(len(magic)) == magic


#: What torch's weights-only unpickler says when it refuses a type or a
#: call (a well-formed pickle asking for something not allowed), as opposed
#: to bytes that are no pickle at all ("Unsupported operand", an empty stack).
_REFUSAL = re.compile(r'global|reduce|allowlist|class|not allowed|callable',
                      re.IGNORECASE)


def _refused_a_type(message: str) -> bool:
    detail = message.split('WeightsUnpickler error:', 1)[-1]
    detail = detail.split('Check the documentation of torch.load')[0]
    return bool(_REFUSAL.search(detail))


def _corrupt(filename: str, error: Exception) -> CorruptCheckpointError:
    detail = str(error).split('WeightsUnpickler error:', 1)[-1]
    detail = ' '.join(detail.split('Check the documentation')[0].split())
    return CorruptCheckpointError(
        f'Cannot read checkpoint {filename!r}: it is corrupt, truncated or '
        f'not a torch checkpoint ({type(error).__name__}: {detail})')


# --- the config a checkpoint carries ----------------------------------------
class UnsafeConfigError(ValueError):
    """A config text holds more than data (calls, imports, names); nothing of
    it ran."""


def _config_value(node, where: str):
    """The value of a config expression made of data only: constants,
    lists, tuples, sets, dicts and ``dict(key=value)`` calls of them, and
    signed numbers."""
    import ast
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_config_value(item, where) for item in node.elts]
        return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(
            node)](items)
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {
            _config_value(key, where): _config_value(value, where)
            for key, value in zip(node.keys, node.values)
        }
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
            node.func.id == 'dict' and not node.args and \
            all(kw.arg is not None for kw in node.keywords):
        return {kw.arg: _config_value(kw.value, where)
                for kw in node.keywords}
    if isinstance(node, ast.UnaryOp) and isinstance(
            node.op, (ast.USub, ast.UAdd)) and isinstance(
                node.operand, ast.Constant) and isinstance(
                    node.operand.value, (int, float, complex)):
        value = node.operand.value
        return -value if isinstance(node.op, ast.USub) else value
    raise UnsafeConfigError(
        f'{where}: line {node.lineno}: {ast.unparse(node)[:80]!r} is not '
        f'plain data (only constants, lists, tuples, dicts and dict(...) '
        f'are read); refused, nothing of it ran')


def config_from_text(text: str, where: str = 'config'):
    """An mmengine ``Config`` from the text of a dumped config (a
    checkpoint's ``meta['cfg']``, ``Config.pretty_text``), read as data.

    ``Config.fromstring(text, '.py')`` executes the text, so a checkpoint
    from elsewhere could run code through it even when its tensors load
    with ``weights_only=True``. Here the text is parsed, not run: every
    statement must be ``name = value`` with a value of plain data (what
    mmengine dumps), anything else raises :class:`UnsafeConfigError`.
    ``custom_imports`` stays data: nothing is imported.
    """
    import ast

    from mmengine.config import Config
    try:
        tree = ast.parse(text)
    except SyntaxError as e:
        raise UnsafeConfigError(f'{where}: not a config ({e})') from None
    values = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            raise UnsafeConfigError(
                f'{where}: line {node.lineno}: {ast.unparse(node)[:80]!r} '
                f'is not an assignment "name = value"; refused, nothing of '
                f'it ran')
        values[node.targets[0].id] = _config_value(node.value, where)
    return Config(values)


def config_from_checkpoint(checkpoint):
    """The config that an mmsk or mmengine checkpoint carries in
    ``meta['cfg']`` (a path, loaded with :func:`load_local_checkpoint`, or
    a loaded checkpoint dict), read as data (:func:`config_from_text`)::

        from mmpretrain.apis import init_model
        model = init_model(config_from_checkpoint(DST), DST)
    """
    where = 'checkpoint'
    if not isinstance(checkpoint, dict):
        where = repr(str(checkpoint))
        checkpoint = load_local_checkpoint(str(checkpoint), 'cpu')
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    text = meta.get('cfg') if isinstance(meta, dict) else None
    if not isinstance(text, str):
        raise ValueError(f'{where} carries no config (no meta["cfg"] text); '
                         f'build the model from its config file instead')
    return config_from_text(text, f'{where} meta["cfg"]')


def install():
    """Make mmengine load local checkpoints with :func:`load_local_checkpoint`.

    Idempotent. Only the loader for plain paths (prefix ``''``) changes.
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(
        prefixes='', loader=load_local_checkpoint, force=True)
