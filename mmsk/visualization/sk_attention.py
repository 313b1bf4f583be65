"""SK attention versus object scale: the SKNet paper's analysis (Sec. 4.3).

The paper enlarges the object (center crop, resize back) and reads, per SK
unit, the selection weights of the branches: in the low and middle units the
weight of the branch with the larger receptive field grows with the object.

:func:`collect_sk_attention` reads those weights with forward hooks on each
SK unit's attention (:class:`~mmsk.models.layers.SKConv`, also inside
:class:`~mmsk.models.layers.SKAttention` plug-ins and SK-MobileNetV2), at
every scale, for every image; :func:`summarize` turns them into numbers and
:func:`plot_all` / :func:`write_tables` into PNGs, CSV and JSON.

Branches are labelled by their receptive field ``dilation * (k - 1) + 1``
read from each branch conv. "Larger" is the branch with the largest
receptive field; where all branches see the same field (the
``pytorchinsight`` form: a dense and a grouped 3x3) the difference is
"last branch minus first" and every output says so.
"""
import os.path as osp
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from mmsk.models.layers.selective_kernel import SKConv, attention_weights
from mmsk.utils import check_positive_int
from .inputs import (ImageSet, backbone_of, check_crops, check_scales, enlarge,
                     module_name, to_input)
from .plotting import (check_outputs, pyplot, save_figure, scale_label,
                       write_csv, write_json)

def find_sk_units(model: torch.nn.Module) -> List[tuple]:
    """``(name, SKConv)`` of every SK unit, in module order."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, SKConv)]


def branch_info(sk: SKConv) -> List[dict]:
    """Kernel size, dilation, groups and receptive field of each branch."""
    info = []
    for path in sk.paths:
        conv = path.conv
        k, d = conv.kernel_size[0], conv.dilation[0]
        info.append(
            dict(
                kernel_size=int(k),
                dilation=int(d),
                groups=int(conv.groups),
                receptive_field=int(d * (k - 1) + 1)))
    return info


def branch_label(branch: dict) -> str:
    k, d, g = branch['kernel_size'], branch['dilation'], branch['groups']
    text = f'{k}x{k}'
    if d > 1:
        text += f' dil {d}'
    if g > 1:
        text += f' g{g}'
    return f'{text} (RF {branch["receptive_field"]})'


def larger_smaller(branches: Sequence[dict]) -> tuple:
    """Indices of the largest- and smallest-field branch (ties: the last
    resp. the first), and whether all fields are equal."""
    fields = [b['receptive_field'] for b in branches]
    large = max(range(len(fields)), key=lambda i: (fields[i], i))
    small = min(range(len(fields)), key=lambda i: (fields[i], i))
    same = len(set(fields)) == 1
    if same:
        large, small = len(fields) - 1, 0
    return large, small, same


class _Recorder:
    """Forward hooks on ``sk.attn`` of the given units; ``take()`` returns
    and clears the ``(B, M, C)`` weights of the last forward per unit."""

    def __init__(self, units):
        self.units = units
        self.weights: Dict[int, torch.Tensor] = {}
        self.handles = []

    def __enter__(self):
        for i, (_, sk) in enumerate(self.units):
            self.handles.append(
                sk.attn.register_forward_hook(self._hook(i, sk.num_paths)))
        return self

    def _hook(self, index, num_paths):

        def hook(module, inputs, output):
            self.weights[index] = attention_weights(
                output.detach(), num_paths).float().cpu()

        return hook

    def take(self):
        missing = [self.units[i][0] for i in range(len(self.units))
                   if i not in self.weights]
        if missing:
            raise RuntimeError(f'SK units {missing} did not run in the '
                               f'forward pass')
        out, self.weights = self.weights, {}
        return out

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def resolve_unit(units: Sequence[tuple], unit: Union[int, str, None]) -> int:
    """Index of the chosen unit: an index (negative counts from the end),
    a module name (with or without ``backbone.``), or None: the unit a
    quarter of the way through the network, a low-to-middle unit, where
    the paper saw the effect."""
    names = [module_name(n) for n, _ in units]
    if unit is None:
        return len(units) // 4
    if isinstance(unit, str) and unit.lstrip('-').isdigit():
        unit = int(unit)
    if isinstance(unit, int) and not isinstance(unit, bool):
        if not -len(units) <= unit < len(units):
            raise ValueError(f'unit index {unit} out of range for '
                             f'{len(units)} SK units ({names})')
        return unit % len(units)
    if isinstance(unit, str) and module_name(unit) in names:
        return names.index(module_name(unit))
    raise ValueError(f'unit must be an index or one of the SK units '
                     f'{names}, got {unit!r}')


@torch.no_grad()
def collect_sk_attention(model: torch.nn.Module,
                         images: ImageSet,
                         scales: Sequence[float] = (1.0, 1.5, 2.0),
                         unit: Union[int, str, None] = None,
                         device: str = 'cpu',
                         batch_size: int = 32,
                         progress: bool = True) -> dict:
    """Selection weights of every SK unit, for every image at every scale.

    Args:
        model (nn.Module): A model (an mmpretrain classifier, an mmdet
            detector, a bare backbone) holding SK units; its ``backbone``
            (if any) runs on images prepared by its ``data_preprocessor``.
        images (ImageSet): The images (and labels, if any).
        scales (list[float]): Object scales (``>= 1``), see :func:`enlarge`.
        unit: The unit whose per-channel weights are kept
            (:func:`resolve_unit`).
        batch_size (int): Images per forward pass (each at every scale).
        progress (bool): Show a progress bar over the images.

    Returns:
        dict: ``units`` (name, branches, larger/smaller index per unit),
        ``means`` (per unit ``(N, S, M)`` channel-mean weights), ``unit``
        (chosen index) and ``channels`` (``(N, S, M, C)`` weights of it),
        ``scales``, ``labels``, ``classes``.
    """
    from mmengine.utils import ProgressBar
    scales = check_scales(list(scales))
    check_crops(scales, [img.shape for img in images.images])
    check_positive_int('batch_size', batch_size)
    units = find_sk_units(model)
    if not units:
        raise ValueError(f'{type(model).__name__} holds no SK unit (SKConv, '
                         f'SKAttention): nothing to look at')
    chosen = resolve_unit(units, unit)
    model.eval()
    backbone = backbone_of(model)
    means = [[] for _ in units]
    channels = []
    bar = ProgressBar(len(images)) if progress else None
    with _Recorder(units) as recorder:
        start = 0
        while start < len(images):
            chunk = images.images[start:start + batch_size]
            if len({img.shape for img in chunk}) > 1:
                chunk = chunk[:1]  # different sizes: one image at a time
            batch = [enlarge(img, s) for img in chunk for s in scales]
            backbone(to_input(model, batch, device))
            weights = recorder.take()
            for i, (_, sk) in enumerate(units):
                w = weights[i].view(len(chunk), len(scales), sk.num_paths,
                                    -1)
                means[i].append(w.mean(-1))
                if i == chosen:
                    channels.append(w)
            start += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        print()
    info = []
    for name, sk in units:
        branches = branch_info(sk)
        large, small, same = larger_smaller(branches)
        info.append(
            dict(
                name=module_name(name),
                num_paths=sk.num_paths,
                channels=sk.out_channels,
                branches=branches,
                larger=large,
                smaller=small,
                same_receptive_field=same))
    return dict(
        units=info,
        means=[torch.cat(m).numpy() for m in means],
        unit=chosen,
        channels=torch.cat(channels).numpy(),
        scales=list(scales),
        labels=None if images.labels is None else np.asarray(images.labels),
        classes=images.classes)


def _sem(x: np.ndarray, axis=0) -> np.ndarray:
    n = x.shape[axis]
    return x.std(axis=axis, ddof=1) / np.sqrt(n) if n > 1 else \
        np.zeros_like(x.mean(axis=axis))


def summarize(collected: dict) -> dict:
    """The numbers behind the figures, JSON-ready.

    Per unit and scale: the mean weight of each branch (over images and
    channels) with its standard error over images, the mean difference
    ``w[larger] - w[smaller]``, and its change from the first scale
    (paired over images, with standard error). For the chosen unit: per
    channel the mean, std, 10th and 90th percentile over images of the
    larger branch's weight at each scale, and per class the channel means.
    """
    scales = collected['scales']
    labels, classes = collected['labels'], collected['classes']
    units = []
    for info, means in zip(collected['units'], collected['means']):
        large, small = info['larger'], info['smaller']
        diff = means[:, :, large] - means[:, :, small]  # (N, S)
        change = diff - diff[:, :1]
        entry = dict(
            info,
            mean_weight=means.mean(0).tolist(),  # (S, M)
            sem_weight=_sem(means).tolist(),
            mean_difference=diff.mean(0).tolist(),  # (S,)
            sem_difference=_sem(diff).tolist(),
            change_from_first_scale=change.mean(0).tolist(),
            sem_change=_sem(change).tolist())
        if labels is not None:
            entry['per_class_mean_difference'] = [
                diff[labels == c].mean(0).tolist()
                if (labels == c).any() else [float('nan')] * len(scales)
                for c in range(len(classes))
            ]
        units.append(entry)
    index = collected['unit']
    info = collected['units'][index]
    large = collected['channels'][:, :, info['larger']]  # (N, S, C)
    chosen = dict(
        index=index,
        name=info['name'],
        branch=info['larger'],
        branch_label=branch_label(info['branches'][info['larger']]),
        channel_mean=large.mean(0).tolist(),
        channel_std=large.std(0).tolist(),
        channel_p10=np.percentile(large, 10, axis=0).tolist(),
        channel_p90=np.percentile(large, 90, axis=0).tolist())
    if labels is not None:
        chosen['per_class_channel_mean'] = [
            large[labels == c].mean(0).tolist() if (labels == c).any() else
            np.full(large.shape[1:], np.nan).tolist()
            for c in range(len(classes))
        ]
    return dict(
        scales=scales,
        num_images=int(large.shape[0]),
        classes=classes,
        class_counts=None if labels is None else
        [int((labels == c).sum()) for c in range(len(classes))],
        units=units,
        chosen_unit=chosen)


def _difference_title(units):
    if all(u['same_receptive_field'] for u in units):
        return ('branch 1 minus branch 0 (same receptive field: ' +
                ' vs '.join(branch_label(b)
                            for b in units[0]['branches']) + ')')
    first = units[0]
    return (f'larger minus smaller receptive field, e.g. '
            f'{branch_label(first["branches"][first["larger"]])} - '
            f'{branch_label(first["branches"][first["smaller"]])}')


def plot_mean_difference(summary: dict, path: str, title: str = '') -> str:
    """The paper's figure: per SK unit, the mean attention difference
    (larger- minus smaller-field branch), one line per scale; with more
    than two branches, one panel per branch with its mean weight."""
    plt = pyplot()
    units, scales = summary['units'], summary['scales']
    x = np.arange(len(units))
    names = [u['name'] for u in units]
    max_m = max(u['num_paths'] for u in units)
    if max_m == 2:
        fig, ax = plt.subplots(figsize=(max(5, 0.45 * len(units) + 2), 3.6))
        for s, scale in enumerate(scales):
            y = [u['mean_difference'][s] for u in units]
            e = [u['sem_difference'][s] for u in units]
            ax.errorbar(x, y, yerr=e, marker='o', ms=4, capsize=2,
                        label=scale_label(scale))
        ax.axhline(0, color='grey', lw=0.5)
        ax.set_ylabel('mean attention difference')
        ax.set_title(f'{title}\n{_difference_title(units)}'.strip(),
                     fontsize=8)
        axes = [ax]
    else:
        fig, axes = plt.subplots(
            1, max_m, figsize=(3.2 * max_m + 1, 3.6), sharey=True)
        for m, ax in enumerate(axes):
            for s, scale in enumerate(scales):
                y = [u['mean_weight'][s][m] if m < u['num_paths'] else np.nan
                     for u in units]
                ax.plot(x, y, marker='o', ms=4, label=scale_label(scale))
            ax.set_title(f'branch {m}: ' + branch_label(
                units[0]['branches'][m]) if m < units[0]['num_paths'] else
                f'branch {m}', fontsize=8)
        axes[0].set_ylabel('mean branch weight')
        if title:
            fig.suptitle(title, fontsize=9)
    for ax in axes:
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=60, ha='right', fontsize=7)
        ax.set_xlabel('SK unit')
        ax.grid(alpha=0.3)
    axes[-1].legend(title='object scale', fontsize=7, title_fontsize=7)
    return save_figure(fig, path)


def plot_channel_distribution(summary: dict, path: str,
                              title: str = '') -> str:
    """Per channel of the chosen unit: the larger-field branch's weight over
    the images (mean line, 10-90 percentile band) at each scale, and the
    change of the channel mean from the first scale."""
    plt = pyplot()
    c = summary['chosen_unit']
    scales = summary['scales']
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(7, 5), sharex=True,
        gridspec_kw=dict(height_ratios=(2, 1)))
    channels = np.arange(len(c['channel_mean'][0]))
    for s, scale in enumerate(scales):
        line, = top.plot(channels, c['channel_mean'][s], lw=1,
                         label=scale_label(scale))
        top.fill_between(channels, c['channel_p10'][s], c['channel_p90'][s],
                         color=line.get_color(), alpha=0.15, lw=0)
        if s:
            bottom.plot(channels, np.subtract(c['channel_mean'][s],
                                              c['channel_mean'][0]),
                        lw=1, color=line.get_color(),
                        label=f'{scale_label(scale)} - '
                        f'{scale_label(scales[0])}')
    top.set_ylabel(f'weight of branch {c["branch"]}')
    top.set_title(f'{title} {c["name"]}: per-channel weight of '
                  f'{c["branch_label"]}\n(line: mean over '
                  f'{summary["num_images"]} images, band: 10-90 percentile)'
                  .strip(), fontsize=8)
    top.legend(title='object scale', fontsize=7, title_fontsize=7)
    bottom.axhline(0, color='grey', lw=0.5)
    bottom.set_ylabel('change of mean')
    bottom.set_xlabel('channel')
    if len(scales) > 1:
        bottom.legend(fontsize=7)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_per_class(summary: dict, path: str, title: str = '') -> str:
    """The chosen unit's per-channel mean larger-branch weight, one panel
    per class, one line per scale."""
    plt = pyplot()
    c = summary['chosen_unit']
    classes, scales = summary['classes'], summary['scales']
    ncols = min(5, len(classes))
    nrows = int(np.ceil(len(classes) / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(2.6 * ncols, 2.0 * nrows + 0.6),
        sharex=True, sharey=True, squeeze=False)
    for k, name in enumerate(classes):
        ax = axes.flat[k]
        for s, scale in enumerate(scales):
            ax.plot(c['per_class_channel_mean'][k][s], lw=0.8,
                    label=scale_label(scale))
        ax.set_title(f'{name} (n={summary["class_counts"][k]})', fontsize=8)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(classes):]:
        ax.axis('off')
    axes.flat[0].legend(fontsize=6)
    fig.suptitle(f'{title} {c["name"]}: mean weight of {c["branch_label"]} '
                 f'per channel, per class'.strip(), fontsize=9)
    fig.supxlabel('channel', fontsize=8)
    return save_figure(fig, path)


def write_tables(summary: dict, out_dir: str, prefix: str = 'sk_attention',
                 meta: Optional[dict] = None) -> List[str]:
    """``{prefix}.json`` (everything), ``{prefix}_units.csv`` (per unit,
    scale and branch), ``{prefix}_channels.csv`` (chosen unit per channel,
    overall and per class)."""
    scales = summary['scales']
    rows = []
    for i, u in enumerate(summary['units']):
        for s, scale in enumerate(scales):
            for m, b in enumerate(u['branches']):
                rows.append([
                    i, u['name'], scale, m, b['kernel_size'], b['dilation'],
                    b['groups'], b['receptive_field'],
                    m == u['larger'], u['mean_weight'][s][m],
                    u['sem_weight'][s][m], u['mean_difference'][s],
                    u['sem_difference'][s], u['change_from_first_scale'][s],
                    u['sem_change'][s]
                ])
    units_csv = write_csv(
        osp.join(out_dir, f'{prefix}_units.csv'), [
            'unit', 'name', 'scale', 'branch', 'kernel_size', 'dilation',
            'groups', 'receptive_field', 'is_larger', 'mean_weight',
            'sem_weight', 'mean_difference', 'sem_difference',
            'change_from_first_scale', 'sem_change'
        ], rows)
    c = summary['chosen_unit']
    rows = []
    for s, scale in enumerate(scales):
        for ch, value in enumerate(c['channel_mean'][s]):
            rows.append([
                c['name'], c['branch'], scale, 'all', ch, value,
                c['channel_std'][s][ch], c['channel_p10'][s][ch],
                c['channel_p90'][s][ch]
            ])
        for k, name in enumerate(summary['classes'] or []):
            if 'per_class_channel_mean' not in c:
                break
            for ch, value in enumerate(c['per_class_channel_mean'][k][s]):
                rows.append([c['name'], c['branch'], scale, name, ch, value,
                             '', '', ''])
    channels_csv = write_csv(
        osp.join(out_dir, f'{prefix}_channels.csv'), [
            'unit', 'branch', 'scale', 'class', 'channel', 'mean', 'std',
            'p10', 'p90'
        ], rows)
    json_path = write_json(
        osp.join(out_dir, f'{prefix}.json'), dict(meta or {}, **summary))
    return [json_path, units_csv, channels_csv]


def plot_all(summary: dict, out_dir: str, prefix: str = 'sk_attention',
             title: str = '') -> List[str]:
    """The PNGs: ``{prefix}_difference.png``, ``{prefix}_channels.png``
    and, with labels, ``{prefix}_classes.png``."""
    paths = [
        plot_mean_difference(summary,
                             osp.join(out_dir, f'{prefix}_difference.png'),
                             title),
        plot_channel_distribution(
            summary, osp.join(out_dir, f'{prefix}_channels.png'), title)
    ]
    if summary['classes'] is not None and \
            'per_class_channel_mean' in summary['chosen_unit']:
        paths.append(
            plot_per_class(summary,
                           osp.join(out_dir, f'{prefix}_classes.png'), title))
    return paths


def analyze(model: torch.nn.Module,
            images: ImageSet,
            out_dir: str,
            scales: Sequence[float] = (1.0, 1.5, 2.0),
            unit: Union[int, str, None] = None,
            device: str = 'cpu',
            batch_size: int = 32,
            title: str = '',
            meta: Optional[dict] = None,
            progress: bool = True) -> dict:
    """Collect, summarize, plot and write; returns the summary with the
    written ``files``. Where they go is checked first (``out_dir`` is
    created; a file there gives ``OutputPathError``)."""
    check_outputs(out_dir, [
        'sk_attention_difference.png', 'sk_attention_channels.png',
        'sk_attention.json', 'sk_attention_units.csv',
        'sk_attention_channels.csv'
    ] + (['sk_attention_classes.png'] if images.labels is not None else []))
    collected = collect_sk_attention(model, images, scales, unit, device,
                                     batch_size, progress)
    summary = summarize(collected)
    files = plot_all(summary, out_dir, title=title)
    files += write_tables(summary, out_dir, meta=meta)
    return dict(summary, files=files)
