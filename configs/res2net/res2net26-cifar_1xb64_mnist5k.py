# Res2Net-26 (2 bottlenecks per stage, 4 splits) with a CIFAR-style stem on
# the built-in MNIST5k digits: the recipe and budget of
# configs/sknet/sknet18-cifar_1xb64_mnist5k.py with only the backbone swapped.
# Middle (split) widths 16-128 as SKNet-18's widths; outputs 64-512.
_base_ = ['../sknet/sknet18-cifar_1xb64_mnist5k.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='MultiScaleResNet',
        depth=26,
        scales=4,
        base_width=4,
        in_channels=1,
        stem_channels=16,
        base_channels=16,
        cifar_stem=True),
    head=dict(in_channels=512))
