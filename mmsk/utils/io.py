"""Writing output files without losing any: the one helper every mmsk tool
that writes a file uses.

- :func:`check_output_path` refuses an output that is a folder or one of the
  tool's inputs, and creates missing parent folders;
- :func:`atomic_output` hands out a temporary path in the output's folder and
  renames it onto the output (``os.replace``) only when writing succeeded, so
  that a crash or an error leaves the old file, or none, never half a file;
- :func:`atomic_save` (``torch.save``) and :func:`atomic_write_text` are the
  two usual writers on top of it.

All errors are :class:`OutputPathError` (a ``ValueError``) with a one-line
message naming the path, so a CLI can print ``error: ...`` and exit 1.

Example:
    >>> from mmsk.utils.io import atomic_output, atomic_save
    >>> atomic_save({'state_dict': {}}, 'out/w.pth', inputs=['in/w.pth'])
    >>> with atomic_output('out/model.onnx') as tmp:
    ...     torch.onnx.export(model, x, tmp)  # any writer that takes a path
"""
import os
import os.path as osp
import tempfile
from contextlib import contextmanager
from typing import Iterable, Iterator, Optional, Union

PathLike = Union[str, 'os.PathLike[str]']


class OutputPathError(ValueError):
    """An output path that cannot be written (the message is one line)."""


def _same_file(a: str, b: str) -> bool:
    if osp.exists(a) and osp.exists(b):
        return osp.samefile(a, b)
    return osp.realpath(a) == osp.realpath(b)


def check_output_path(path: PathLike,
                      inputs: Iterable[Optional[PathLike]] = (),
                      make_dirs: bool = True,
                      create: bool = True) -> str:
    """Check that ``path`` can be written and return it as a string.

    Args:
        path: the output file.
        inputs: the files the tool reads (``None`` entries are skipped);
            writing over one of them is refused, also through a symlink or
            another spelling of the same path.
        make_dirs: create missing parent folders (else name them in the
            error).
        create: with ``make_dirs``, create them now; ``False`` only checks
            that they can be made (the nearest existing one is a folder),
            for a check before any work that must leave nothing behind
            when the work then fails.

    Raises:
        OutputPathError: ``path`` is empty, a folder, one of ``inputs``, or
            its parent cannot be created / is not a folder / cannot be
            written (:func:`check_writable_folder`).
    """
    path = os.fspath(path) if path is not None else ''
    if not path:
        raise OutputPathError('no output path given')
    path = osp.expanduser(path)
    if osp.isdir(path) or path.endswith(os.sep):
        raise OutputPathError(
            f'output {path!r} is a folder: give a file name')
    for src in inputs:
        if src is not None and _same_file(path, osp.expanduser(
                os.fspath(src))):
            raise OutputPathError(
                f'output {path!r} is the input {os.fspath(src)!r}: '
                f'refusing to overwrite it, give another output path')
    parent = osp.dirname(osp.abspath(path))
    if not osp.isdir(parent):
        if osp.exists(parent):
            raise OutputPathError(
                f'cannot write {path!r}: {parent!r} is not a folder')
        if not make_dirs:
            raise OutputPathError(
                f'cannot write {path!r}: folder {parent!r} does not exist')
        if not create:
            existing = parent
            while not osp.lexists(existing):
                existing = osp.dirname(existing)
            if not osp.isdir(existing):
                raise OutputPathError(
                    f'cannot write {path!r}: {existing!r} is not a folder')
            check_writable_folder(existing, repr(path))
            return path
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as e:
            raise OutputPathError(
                f'cannot create folder {parent!r} for {path!r}: '
                f'{e.strerror or e}') from e
    check_writable_folder(parent, repr(path))
    return path


def check_writable_folder(folder: str, what: str):
    """Raise :class:`OutputPathError` unless a file can be created in the
    existing ``folder`` (for ``what``, named in the error): tried with a
    hidden file that is removed at once, since permission bits do not tell
    (root, read-only mounts, immutable folders)."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix='.mmsk-write-check-')
    except OSError as e:
        raise OutputPathError(f'cannot write {what}: folder {folder!r} is '
                              f'not writable ({e.strerror or e})') from e
    try:
        os.close(fd)
        os.remove(probe)
    except OSError:  # a folder that takes new files only (append-only)
        pass


def _fsync_dir(folder: str):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported on this platform / file system
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_output(path: PathLike,
                  inputs: Iterable[Optional[PathLike]] = (),
                  make_dirs: bool = True) -> Iterator[str]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` when
    the block ends without an error, else remove it.

    The temporary file is in the same folder (so the rename is atomic) and
    keeps the extension (writers that pick a format by extension work). It
    is flushed to disk before the rename; the rename is followed by an
    fsync of the folder. :func:`check_output_path` runs first. A SIGTERM
    while the block runs removes the temporary file too
    (:func:`_terminate_as_exit`).
    """
    path = check_output_path(path, inputs, make_dirs)
    folder = osp.dirname(osp.abspath(path))
    stem, ext = osp.splitext(osp.basename(path))
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f'.{stem}.', suffix=f'.tmp{ext}', dir=folder)
    except OSError as e:
        raise OutputPathError(
            f'cannot write in {folder!r}: {e.strerror or e}') from e
    os.close(fd)
    try:
        with _terminate_as_exit():
            yield tmp
            commit_file(tmp, path, mode=_default_mode())
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


@contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """While a file is written, SIGTERM (``kill``, a job scheduler, torchrun
    stopping its workers) ends the process through ``SystemExit`` (exit
    code 143, as the shell reports a SIGTERM death), so the temporary file
    is removed; SIGTERM's default action ends the process at once and left
    it behind. Only in the main thread, and only where SIGTERM has no
    handler of its own."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def exit_on_sigterm(signum, frame):
        raise SystemExit(128 + signum)

    # a process forked inside the block inherits the handler (it removes
    # no file of its own, and exits on SIGTERM all the same)
    previous = signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        yield
    finally:
        # a handler that the block installed itself stays
        if signal.getsignal(signal.SIGTERM) is exit_on_sigterm:
            signal.signal(signal.SIGTERM, previous)


def commit_file(tmp: str, path: str, mode: Optional[int] = None):
    """Flush the complete file ``tmp`` to disk and rename it onto ``path``
    (in the same folder), then flush the folder: ``path`` is either the old
    file or the whole new one, also after a crash."""
    with open(tmp, 'rb+') as f:
        os.fsync(f.fileno())
    if mode is not None:
        os.chmod(tmp, mode)
    os.replace(tmp, path)
    _fsync_dir(osp.dirname(osp.abspath(path)))


def atomic_save(obj,
                path: PathLike,
                inputs: Iterable[Optional[PathLike]] = (),
                make_dirs: bool = True) -> str:
    """``torch.save(obj, path)`` through :func:`atomic_output`."""
    import torch
    with atomic_output(path, inputs, make_dirs) as tmp:
        torch.save(obj, tmp)
    return osp.expanduser(os.fspath(path))


def atomic_write_text(text: str,
                      path: PathLike,
                      inputs: Iterable[Optional[PathLike]] = (),
                      make_dirs: bool = True) -> str:
    """Write ``text`` to ``path`` (UTF-8) through :func:`atomic_output`."""
    with atomic_output(path, inputs, make_dirs) as tmp:
        with open(tmp, 'w', encoding='utf-8') as f:
            f.write(text)
    return osp.expanduser(os.fspath(path))


#: the config file types mmengine reads
CONFIG_SUFFIXES = ('.py', '.yml', '.yaml', '.json')
CHECKPOINT_SUFFIXES = ('.pth', '.pt', '.ckpt', '.bin', '.safetensors')


def check_config_suffix(path: str):
    """``ValueError`` unless ``path`` is a config file by its suffix, as
    mmengine reads them (its own error, 'Only py/yml/yaml/json type are
    supported now!', names no file), and the likely mix-up: a checkpoint
    given where the config goes."""
    if path.lower().endswith(CONFIG_SUFFIXES):
        return
    hint = ': it looks like a checkpoint; the config comes first (CONFIG ' \
        'CHECKPOINT)' if path.lower().endswith(CHECKPOINT_SUFFIXES) else ''
    raise ValueError(f'config {path!r} is not a config file '
                     f'({", ".join(CONFIG_SUFFIXES)}){hint}')


def read_config(path: PathLike):
    """The :class:`mmengine.config.Config` of the file ``path``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a config by its suffix
            (:func:`check_config_suffix`), or not valid Python (naming the
            file and the line; mmengine's own ``SyntaxError`` names
            neither).
    """
    from mmengine.config import Config
    path = osp.expanduser(os.fspath(path))
    if osp.isdir(path):
        raise ValueError(f'config {path!r} is a folder, not a config file')
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file {path} does not exist')
    check_config_suffix(path)
    try:
        return Config.fromfile(path)
    except SyntaxError as e:
        raise config_syntax_error(path, e) from None


def config_syntax_error(path: str, error: SyntaxError) -> ValueError:
    """What is wrong with the config ``path`` that mmengine could not parse
    (its ``SyntaxError`` names no file): the file itself, or one of its
    ``_base_`` files."""
    import ast
    try:
        with open(path, encoding='utf-8') as f:
            ast.parse(f.read(), path)
    except SyntaxError as own:
        return ValueError(f'config {path} is not valid Python: {own.msg} '
                          f'(line {own.lineno})')
    except (OSError, ValueError):
        pass
    return ValueError(f'config {path} or one of its _base_ files is not '
                      f'valid Python: {error.msg} (line {error.lineno})')
