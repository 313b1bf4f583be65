"""The built-in MNIST5k data set."""
import numpy as np
import pytest


def test_split_is_fixed_stratified_and_disjoint():
    from mmsk.datasets.mnist5k import _load_table, load_mnist5k, split_rows
    sizes = dict(train=3500, val=500, test=1000)
    _, labels = _load_table()
    rows = {split: split_rows(labels, split) for split in sizes}
    for split, size in sizes.items():
        images, targets = load_mnist5k(split)
        assert images.shape == (size, 28, 28) and images.dtype == np.uint8
        assert np.bincount(targets).tolist() == [size // 10] * 10
        assert len(set(rows[split])) == size
    # the three splits partition the 5,000 rows
    every = np.concatenate(list(rows.values()))
    assert sorted(every.tolist()) == list(range(5000))
    # shuffled within each class, not the file's first/last rows
    first_350 = np.flatnonzero(labels == 0)[:350]
    train_0 = rows['train'][labels[rows['train']] == 0]
    assert len(train_0) == 350 and set(train_0) != set(first_350)
    # the classes interleaved: any first N holds every class equally
    for split, size in sizes.items():
        assert labels[rows[split]].tolist() == list(range(10)) * (size // 10)
    # fixed: the same rows on every call (the seed is a constant)
    assert np.array_equal(split_rows(labels, 'test'), rows['test'])
    # no test image is (a duplicate of) a training image, save a few
    seen = {x.tobytes() for x in load_mnist5k('train')[0]}
    assert sum(x.tobytes() in seen for x in load_mnist5k('test')[0]) < 5


def test_normalisation_is_the_train_split_statistics():
    from mmengine.config import Config

    from conftest import MAIN_CONFIG
    from mmsk.datasets.mnist5k import load_mnist5k
    cfg = Config.fromfile(MAIN_CONFIG)
    train = load_mnist5k('train')[0].astype(np.float64)
    assert cfg.data_preprocessor.mean == [round(train.mean(), 2)]
    assert cfg.data_preprocessor.std == [round(train.std(), 2)]
    assert cfg.val_dataloader.dataset.split == 'val'
    assert cfg.test_dataloader.dataset.split == 'test'


def test_dataset_through_registry_and_pipeline():
    import mmsk  # noqa: F401
    from mmpretrain.registry import DATASETS
    ds = DATASETS.build(
        dict(
            type='MNIST5k',
            split='test',
            pipeline=[
                dict(type='RandomCrop', crop_size=28, padding=2),
                dict(type='PackInputs')
            ]))
    assert len(ds) == 1000 and ds.metainfo['classes'][3] == '3 - three'
    assert ds.test_mode
    item = ds[0]
    assert tuple(item['inputs'].shape) == (1, 28, 28)
    assert item['data_samples'].gt_label.item() == 0


def test_bad_split():
    from mmsk.datasets import MNIST5k
    with pytest.raises(ValueError, match='split'):
        MNIST5k(split='holdout')


@pytest.mark.parametrize('split,n', [('train', 128), ('val', 64),
                                     ('test', 64)])
def test_a_subset_holds_every_class(split, n):
    """indices=N (the tests' tiny runs, a user's quick check) took the
    first N rows, which were digits 0 (and 1) only."""
    from mmsk.datasets import MNIST5k
    ds = MNIST5k(split=split, indices=n)
    counts = np.bincount([ds.get_data_info(i)['gt_label']
                          for i in range(len(ds))], minlength=10)
    assert len(ds) == n and counts.max() - counts.min() <= 1, counts


@pytest.mark.parametrize('options,pattern', [
    (dict(indices=0), r'indices must be an int in \[1, 3500\], got 0'),
    (dict(indices=5000), r'indices must be an int in \[1, 3500\]'),
    (dict(indices=[]), 'indices must not be empty'),
    (dict(indices=[3499, 3500]), r'indices\[1\] must be an int in'),
    (dict(indices=[3, 7, 3]), r'indices lists an image twice \(3 twice\)'),
    (dict(indices=[3499, -1]),
     r'indices lists an image twice \(3499 and -1, the same one of 3500\)'),
    (dict(indices='10'), r'indices must be an int in \[1, 3500\] \(the '
     r'first N images\) or a list/tuple/range of positions, got \'10\''),
    (dict(indices=True), 'indices must be an int .* or a list/tuple'),
    (dict(indices=1.5), 'indices must be an int .* or a list/tuple'),
    (dict(test_mode='yes'), 'test_mode must be a bool'),
    (dict(data_root='/data/mnist'), "data_root='/data/mnist' is not used"),
    (dict(data_prefix=dict(img_path='imgs')), 'data_prefix=.* is not used'),
    (dict(metainfo=dict(classes=['a', 'b'])),
     r'metainfo classes must name the 10 digits \(a list, or a file of '
     r'names\), got 2'),
    (dict(metainfo=dict(classes=7)), 'metainfo classes must name the 10 '
     'digits .*got int'),
    (dict(metainfo=dict(classes='/no/such/classes.txt')),
     "metainfo classes '/no/such/classes.txt' is read as a file of class "
     'names'),
])
def test_bad_options_are_named(options, pattern):
    from mmsk.datasets import MNIST5k
    with pytest.raises(ValueError, match=f'MNIST5k: {pattern}'):
        MNIST5k(**options)
    # what mmengine passes by default still builds, and so do mmpretrain's
    # default ann_file and a numpy int (both failed inside mmengine)
    MNIST5k(data_prefix=dict(img_path=''), data_root='', indices=[0, -1])
    assert len(MNIST5k(ann_file='', indices=np.int64(20))) == 20
    assert len(MNIST5k(indices=range(5))) == 5


def test_classes_from_a_file(tmp_path):
    """mmengine's metainfo classes may name a file, one class a line."""
    from mmsk.datasets import MNIST5k
    names = [f'digit {i}' for i in range(10)]
    path = tmp_path / 'classes.txt'
    path.write_text('\n'.join(names) + '\n')
    assert MNIST5k(split='val', metainfo=dict(classes=str(path))) \
        .metainfo['classes'] == names
    path.write_text('\n'.join(names[:9]) + '\n')
    with pytest.raises(ValueError, match='must name the 10 digits .*got 9'):
        MNIST5k(split='val', metainfo=dict(classes=str(path)))
