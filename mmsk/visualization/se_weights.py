"""SE excitation per class: the analysis of the SE paper (Hu et al., Fig. 6).

The paper averages, per class, the excitation (the sigmoid gate, one weight
per channel) of chosen SE blocks over the images of that class: in early
blocks the classes share one profile (class-agnostic), in late blocks they
differ (class-specific). :func:`collect_se_excitation` reads the gate with
forward hooks on ``se.gate`` of every :class:`~mmsk.models.layers.SEAttention`;
:func:`summarize` gives per block the class means and a class-specificity
number: the across-class standard deviation of the class-mean excitation,
averaged over channels, and its ratio to the within-class standard deviation
(how far apart the class profiles are, in units of the image-to-image
spread). With ``n`` images per class the class means scatter by about
``within / sqrt(n)`` even when the excitation ignores the class, so the
ratio is only class-specific where it clearly exceeds ``chance_ratio``,
``sqrt(mean(1 / n_k))``.
"""
import os.path as osp
from typing import List, Optional, Sequence, Union

import numpy as np
import torch

from mmsk.models.layers.attention import SEAttention
from mmsk.utils import check_positive_int
from .inputs import ImageSet, backbone_of, module_name, to_input
from .plotting import (check_outputs, pyplot, save_figure, write_csv,
                       write_json)


def find_se_units(model: torch.nn.Module) -> List[tuple]:
    """``(name, SEAttention)`` of every SE module, in module order."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, SEAttention)]


def resolve_blocks(units: Sequence[tuple],
                   blocks: Optional[Sequence[Union[int, str]]]) -> List[int]:
    """Indices of the chosen blocks: indices (negative from the end) or
    module names (with or without ``backbone.``); None: all of them."""
    names = [module_name(n) for n, _ in units]
    if blocks is None or len(blocks) == 0:
        return list(range(len(units)))
    chosen = []
    for block in blocks:
        if isinstance(block, str) and block.lstrip('-').isdigit():
            block = int(block)
        if isinstance(block, int) and not isinstance(block, bool):
            if not -len(units) <= block < len(units):
                raise ValueError(f'block index {block} out of range for '
                                 f'{len(units)} SE blocks ({names})')
            index = block % len(units)
        elif isinstance(block, str) and module_name(block) in names:
            index = names.index(module_name(block))
        else:
            raise ValueError(f'blocks must be indices or SE modules of '
                             f'{names}, got {block!r}')
        if index in chosen:
            raise ValueError(f'block {names[index]} chosen twice')
        chosen.append(index)
    return chosen


@torch.no_grad()
def collect_se_excitation(model: torch.nn.Module,
                          images: ImageSet,
                          blocks: Optional[Sequence[Union[int, str]]] = None,
                          device: str = 'cpu',
                          batch_size: int = 32,
                          progress: bool = True) -> dict:
    """The excitation ``(N, C)`` of each chosen SE block for every image.

    Returns:
        dict: ``names``, ``excitation`` (one ``(N, C)`` array per chosen
        block), ``labels``, ``classes``.
    """
    from mmengine.utils import ProgressBar
    check_positive_int('batch_size', batch_size)
    units = find_se_units(model)
    if not units:
        raise ValueError(f'{type(model).__name__} holds no SE module '
                         f'(SEAttention): nothing to look at')
    chosen = resolve_blocks(units, blocks)
    model.eval()
    backbone = backbone_of(model)
    taken = {}
    handles = []

    def hook(index):

        def record(module, inputs, output):
            taken[index] = output.detach().flatten(1).float().cpu()

        return record

    for i in chosen:
        handles.append(units[i][1].gate.register_forward_hook(hook(i)))
    excitation = {i: [] for i in chosen}
    bar = ProgressBar(len(images)) if progress else None
    try:
        start = 0
        while start < len(images):
            chunk = images.images[start:start + batch_size]
            if len({img.shape for img in chunk}) > 1:
                chunk = chunk[:1]
            backbone(to_input(model, chunk, device))
            for i in chosen:
                if i not in taken:
                    raise RuntimeError(f'SE block {units[i][0]} did not run '
                                       f'in the forward pass')
                excitation[i].append(taken.pop(i))
            start += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        for h in handles:
            h.remove()
    if bar is not None:
        print()
    return dict(
        names=[module_name(units[i][0]) for i in chosen],
        excitation=[torch.cat(excitation[i]).numpy() for i in chosen],
        labels=None if images.labels is None else np.asarray(images.labels),
        classes=images.classes)


def class_specificity(excitation: np.ndarray, labels: np.ndarray,
                      num_classes: int) -> dict:
    """Across-class std of the class means (mean over channels), the
    pooled within-class std (mean over channels) and their ratio."""
    present = [c for c in range(num_classes) if (labels == c).any()]
    means = np.stack([excitation[labels == c].mean(0) for c in present])
    across = float(means.std(0).mean()) if len(present) > 1 else 0.0
    residual = excitation - means[np.searchsorted(present, labels)]
    within = float(np.sqrt((residual**2).mean(0)).mean())
    counts = np.array([(labels == c).sum() for c in present])
    return dict(
        across_class_std=across,
        within_class_std=within,
        ratio=across / within if within > 0 else float('nan'),
        chance_ratio=float(np.sqrt((1 / counts).mean())))


def summarize(collected: dict) -> dict:
    """Per block: channel count, overall mean excitation per channel, the
    class means per channel and :func:`class_specificity` (with labels)."""
    labels, classes = collected['labels'], collected['classes']
    blocks = []
    for name, x in zip(collected['names'], collected['excitation']):
        entry = dict(
            name=name,
            channels=int(x.shape[1]),
            mean=x.mean(0).tolist(),
            mean_excitation=float(x.mean()),
            image_std=float(x.std(0).mean()))
        if labels is not None:
            entry['per_class_mean'] = [
                x[labels == c].mean(0).tolist() if (labels == c).any() else
                [float('nan')] * x.shape[1] for c in range(len(classes))
            ]
            entry.update(class_specificity(x, labels, len(classes)))
        blocks.append(entry)
    return dict(
        num_images=int(collected['excitation'][0].shape[0]),
        classes=classes,
        class_counts=None if labels is None else
        [int((labels == c).sum()) for c in range(len(classes))],
        blocks=blocks)


def plot_per_class(summary: dict, path: str, title: str = '') -> str:
    """One panel per block: the excitation per channel averaged per class
    (one line per class; the overall mean without labels)."""
    plt = pyplot()
    blocks = summary['blocks']
    ncols = min(4, len(blocks))
    nrows = int(np.ceil(len(blocks) / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.2 * ncols, 2.3 * nrows + 0.8),
        sharey=True, squeeze=False)
    cmap = plt.get_cmap('tab10' if len(summary['classes'] or []) <= 10 else
                        'tab20')
    for ax, b in zip(axes.flat, blocks):
        if 'per_class_mean' in b:
            for k, name in enumerate(summary['classes']):
                ax.plot(b['per_class_mean'][k], lw=0.7, color=cmap(k % 20),
                        label=str(name))
            sub = (f'across-class std {b["across_class_std"]:.3f}, '
                   f'ratio {b["ratio"]:.2f}')
        else:
            ax.plot(b['mean'], lw=0.8, label='all images')
            sub = f'mean {b["mean_excitation"]:.3f}'
        ax.set_title(f'{b["name"]}\n{sub}', fontsize=7)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(blocks):]:
        ax.axis('off')
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc='lower center', ncol=min(10, len(names)),
               fontsize=7, frameon=False)
    fig.suptitle(f'{title} SE excitation per channel, mean per class'.strip(),
                 fontsize=9)
    fig.supxlabel('channel', fontsize=8, y=0.06)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    # many thin lines: a lower resolution keeps the PNG small
    return save_figure(fig, path, dpi=65)


def plot_specificity(summary: dict, path: str, title: str = '') -> str:
    """Class-specificity per block: across-class std of the class means
    and its ratio to the within-class std."""
    plt = pyplot()
    blocks = summary['blocks']
    x = np.arange(len(blocks))
    fig, ax = plt.subplots(figsize=(max(4.5, 0.45 * len(blocks) + 2), 3.4))
    ax.plot(x, [b['across_class_std'] for b in blocks], 'o-', ms=4,
            label='across-class std of class means')
    ax.plot(x, [b['within_class_std'] for b in blocks], 's--', ms=4,
            label='within-class std')
    ax.set_ylabel('excitation std (mean over channels)')
    right = ax.twinx()
    right.plot(x, [b['ratio'] for b in blocks], '^:', ms=4, color='C3',
               label='ratio (right axis)')
    right.plot(x, [b['chance_ratio'] for b in blocks], color='C3', lw=0.8,
               alpha=0.5, label='ratio expected by chance (right)')
    right.set_ylim(bottom=0)
    right.set_ylabel('across / within', fontsize=8)
    ax.set_xticks(x)
    ax.set_xticklabels([b['name'] for b in blocks], rotation=60, ha='right',
                       fontsize=7)
    ax.set_xlabel('SE block')
    ax.grid(alpha=0.3)
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7)
    ax.set_title(f'{title} class-specificity of the SE excitation'.strip(),
                 fontsize=9)
    return save_figure(fig, path)


def write_tables(summary: dict, out_dir: str, prefix: str = 'se_weights',
                 meta: Optional[dict] = None) -> List[str]:
    """``{prefix}.json`` (everything), ``{prefix}_blocks.csv`` (one row per
    block) and ``{prefix}_channels.csv`` (per block, class, channel)."""
    keys = ['channels', 'mean_excitation', 'image_std', 'across_class_std',
            'within_class_std', 'ratio', 'chance_ratio']
    blocks_csv = write_csv(
        osp.join(out_dir, f'{prefix}_blocks.csv'), ['block', 'name'] + keys,
        [[i, b['name']] + [b.get(k, '') for k in keys]
         for i, b in enumerate(summary['blocks'])])
    rows = []
    for b in summary['blocks']:
        rows += [[b['name'], 'all', ch, v] for ch, v in enumerate(b['mean'])]
        for k, name in enumerate(summary['classes'] or []):
            if 'per_class_mean' in b:
                rows += [[b['name'], name, ch, v]
                         for ch, v in enumerate(b['per_class_mean'][k])]
    channels_csv = write_csv(
        osp.join(out_dir, f'{prefix}_channels.csv'),
        ['block', 'class', 'channel', 'mean_excitation'], rows)
    json_path = write_json(
        osp.join(out_dir, f'{prefix}.json'), dict(meta or {}, **summary))
    return [json_path, blocks_csv, channels_csv]


def analyze(model: torch.nn.Module,
            images: ImageSet,
            out_dir: str,
            blocks: Optional[Sequence[Union[int, str]]] = None,
            device: str = 'cpu',
            batch_size: int = 32,
            title: str = '',
            meta: Optional[dict] = None,
            progress: bool = True) -> dict:
    """Collect, summarize, plot and write; returns the summary with the
    written ``files``. Where they go is checked first (``out_dir`` is
    created; a file there gives ``OutputPathError``)."""
    check_outputs(out_dir, [
        'se_weights.png', 'se_weights.json', 'se_weights_blocks.csv',
        'se_weights_channels.csv'
    ] + (['se_weights_specificity.png']
         if images.labels is not None else []))
    collected = collect_se_excitation(model, images, blocks, device,
                                      batch_size, progress)
    summary = summarize(collected)
    files = [plot_per_class(summary, osp.join(out_dir, 'se_weights.png'),
                            title)]
    if summary['classes'] is not None:
        files.append(
            plot_specificity(
                summary, osp.join(out_dir, 'se_weights_specificity.png'),
                title))
    files += write_tables(summary, out_dir, meta=meta)
    return dict(summary, files=files)
