# Baseline: mmpretrain's own ResNet-18 with the CIFAR stem, on the same data
# with the same recipe and budget as configs/sknet/sknet18-cifar_1xb64_mnist5k.py.
_base_ = ['../sknet/sknet18-cifar_1xb64_mnist5k.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNet_CIFAR',
        depth=18,
        in_channels=1,
        stem_channels=16,
        base_channels=16))
