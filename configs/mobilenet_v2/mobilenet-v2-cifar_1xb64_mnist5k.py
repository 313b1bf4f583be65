# MobileNetV2 0.5 on the built-in MNIST5k digits, with the same data, recipe
# and budget as configs/sknet/sknet18-cifar_1xb64_mnist5k.py: only the
# backbone (and the head's input width) changes.
# The digits are 28x28, so the stem and the first stride-2 row run at
# stride 1 (as CIFAR ports of MobileNetV2 do): the rows see 28, 28, 28, 14,
# 7, 7, 4, 4 pixels instead of ImageNet's 112 ... 7, which would leave 1x1
# maps from the fifth row on. Width 0.5 keeps a training step close to
# SKNet-18's at width 16 (24.6M vs 41.8M FLOPs per digit; depthwise
# convs run slower per multiply-add on the CPU).
_base_ = ['../sknet/sknet18-cifar_1xb64_mnist5k.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='InvertedResidualNet',
        widen_factor=0.5,
        in_channels=1,
        stem_stride=1,
        strides=(1, 1, 2, 2, 1, 2, 1)),
    head=dict(in_channels=1280))
