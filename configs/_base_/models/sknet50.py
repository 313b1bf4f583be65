# SKNet-50 (paper form: ResNeXt-50 32x4d base, SK branches 3x3 d1 + 3x3 d2,
# d = max(C/16, 32)) as an mmpretrain ImageNet classifier.
custom_imports = dict(imports=['mmsk'], allow_failed_imports=False)
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='SKNet', depth=50, sk_form='paper', out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=2048,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5)))
