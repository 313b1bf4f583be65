# SKNet-18 (paper SK unit: 3x3 dilation 1 and 2; basic blocks) with a
# CIFAR-style stem, trained on the built-in MNIST5k digits: the main job.
_base_ = [
    '../_base_/datasets/mnist5k_bs64.py',
    '../_base_/schedules/mnist5k_sgd_12e.py',
    '../_base_/mnist5k_runtime.py',
]
custom_imports = dict(imports=['mmsk'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='SKNet',
        depth=18,
        sk_form='paper',
        in_channels=1,
        stem_channels=16,
        base_channels=16,
        cifar_stem=True),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=128,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))
