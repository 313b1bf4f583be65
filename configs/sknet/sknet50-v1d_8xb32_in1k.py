# SKNet-50 with the deep stem and avg-down shortcuts (ResNet-D tricks).
_base_ = ['./sknet50_8xb32_in1k.py']
model = dict(backbone=dict(deep_stem=True, avg_down=True))
