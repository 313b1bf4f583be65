# SKNet-18: SK basic blocks (paper SK unit on a ResNet-18).
_base_ = ['./sknet50_8xb32_in1k.py']
model = dict(backbone=dict(depth=18), head=dict(in_channels=512))
