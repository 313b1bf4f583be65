_base_ = ['./skresnet50-pytorchinsight_8xb32_in1k.py']
model = dict(backbone=dict(depth=101))
