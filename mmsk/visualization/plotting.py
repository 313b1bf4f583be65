"""Small helpers for the look-inside figures and tables (matplotlib, Agg)."""
import csv
import json
import os
import os.path as osp
from typing import Iterable, Sequence


def pyplot():
    import matplotlib
    matplotlib.use('Agg', force=True)
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: str, dpi: int = 90) -> str:
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches='tight')
    pyplot().close(fig)
    return path


def write_csv(path: str, header: Sequence[str], rows: Iterable[Sequence]):
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            writer.writerow([
                f'{v:.6g}' if isinstance(v, float) else v for v in row])
    return path


def write_json(path: str, data) -> str:
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(data, f, indent=1)
    return path


def scale_label(scale: float) -> str:
    return f'{scale:g}x'
