# SE-ResNet-50 (SE after the last conv of every bottleneck, reduction 16)
# as an mmpretrain ImageNet classifier.
custom_imports = dict(imports=['mmsk'], allow_failed_imports=False)
model = dict(
    type='ImageClassifier',
    backbone=dict(type='SENet', depth=50, out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=2048,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5)))
