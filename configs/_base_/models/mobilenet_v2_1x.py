# MobileNetV2 1.0 (the paper's table, ReLU6, 1280-channel final conv) as an
# mmpretrain ImageNet classifier on mmsk's InvertedResidualNet.
custom_imports = dict(imports=['mmsk'], allow_failed_imports=False)
model = dict(
    type='ImageClassifier',
    backbone=dict(type='InvertedResidualNet', widen_factor=1.0),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=1280,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5)))
