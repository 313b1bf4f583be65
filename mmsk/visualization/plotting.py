"""Small helpers for the look-inside figures and tables (matplotlib, Agg).

Every file is written whole or not at all, through
:func:`mmsk.utils.io.atomic_output`: a crash or an error while writing
keeps the file of an earlier run (or none), never half a file.
"""
import csv
import json
import math
import os.path as osp
from typing import Iterable, Sequence

from mmsk.utils.io import atomic_output, atomic_write_text, check_output_path


def pyplot():
    import matplotlib
    matplotlib.use('Agg', force=True)
    import matplotlib.pyplot as plt
    return plt


def check_outputs(out_dir: str, names: Iterable[str]) -> None:
    """Check, before any work, that the files ``names`` can be written in
    ``out_dir`` (created with the first file, so a run that fails leaves
    nothing behind): ``OutputPathError`` (a ``ValueError``) when
    ``out_dir`` is a file or a name is a folder."""
    for name in names:
        check_output_path(osp.join(out_dir, name), create=False)


def save_figure(fig, path: str, dpi: int = 90) -> str:
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches='tight',
                        format=osp.splitext(path)[1][1:] or 'png')
    finally:
        pyplot().close(fig)
    return path


def write_csv(path: str, header: Sequence[str], rows: Iterable[Sequence]):
    with atomic_output(path) as tmp:
        with open(tmp, 'w', newline='', encoding='utf-8') as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for row in rows:
                writer.writerow([
                    f'{v:.6g}' if isinstance(v, float) else v for v in row])
    return path


def _finite(value):
    """``value`` with NaN and infinities as None (JSON has no NaN; e.g. a
    ratio over initial weights, whose gates are all alike, is undefined)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json(path: str, data) -> str:
    """Strict JSON (NaN and infinities written as null), atomically."""
    atomic_write_text(
        json.dumps(_finite(data), indent=1, allow_nan=False), path)
    return path


def scale_label(scale: float) -> str:
    return f'{scale:g}x'
