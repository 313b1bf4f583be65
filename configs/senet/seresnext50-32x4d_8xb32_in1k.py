# SE-ResNeXt-50 32x4d: 32 groups of 4 channels at 64 planes.
_base_ = ['./seresnet50_8xb32_in1k.py']
model = dict(backbone=dict(groups=32, width_per_group=4))
