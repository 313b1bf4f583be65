# SE-ResNet-18: SE basic blocks.
_base_ = ['./seresnet50_8xb32_in1k.py']
model = dict(backbone=dict(depth=18), head=dict(in_channels=512))
