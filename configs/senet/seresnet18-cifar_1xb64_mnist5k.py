# SE-ResNet-18 with a CIFAR-style stem (widths 16-128) on the built-in
# MNIST5k digits: the recipe and budget of
# configs/sknet/sknet18-cifar_1xb64_mnist5k.py with only the backbone swapped.
_base_ = ['../sknet/sknet18-cifar_1xb64_mnist5k.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='SENet',
        depth=18,
        in_channels=1,
        stem_channels=16,
        base_channels=16,
        cifar_stem=True))
