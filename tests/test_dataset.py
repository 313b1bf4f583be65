"""The built-in MNIST5k data set."""
import numpy as np
import pytest


def test_split_is_fixed_stratified_and_disjoint():
    from mmsk.datasets.mnist5k import load_mnist5k
    train_x, train_y = load_mnist5k('train')
    val_x, val_y = load_mnist5k('val')
    assert train_x.shape == (4000, 28, 28) and val_x.shape == (1000, 28, 28)
    assert train_x.dtype == np.uint8
    assert np.bincount(train_y).tolist() == [400] * 10
    assert np.bincount(val_y).tolist() == [100] * 10
    flat_train = {x.tobytes() for x in train_x}
    assert sum(x.tobytes() in flat_train for x in val_x) < 5  # (duplicates)


def test_dataset_through_registry_and_pipeline():
    import mmsk  # noqa: F401
    from mmpretrain.registry import DATASETS
    ds = DATASETS.build(
        dict(
            type='MNIST5k',
            split='val',
            pipeline=[
                dict(type='RandomCrop', crop_size=28, padding=2),
                dict(type='PackInputs')
            ]))
    assert len(ds) == 1000 and ds.metainfo['classes'][3] == '3 - three'
    item = ds[0]
    assert tuple(item['inputs'].shape) == (1, 28, 28)
    assert item['data_samples'].gt_label.item() == 0


def test_bad_split():
    from mmsk.datasets import MNIST5k
    with pytest.raises(ValueError, match='split'):
        MNIST5k(split='test')
