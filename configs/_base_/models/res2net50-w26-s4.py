# Res2Net-50 26w4s (4 splits of 26 channels at 64 planes; 7x7 stem, strided
# projection shortcuts) as an mmpretrain ImageNet classifier.
custom_imports = dict(imports=['mmsk'], allow_failed_imports=False)
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='MultiScaleResNet',
        depth=50,
        scales=4,
        base_width=26,
        out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=2048,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5)))
