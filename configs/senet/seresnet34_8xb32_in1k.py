_base_ = ['./seresnet18_8xb32_in1k.py']
model = dict(backbone=dict(depth=34))
