# Res2NeXt-50 4s: 8 groups of 4 channels per split at 64 planes.
_base_ = ['./res2net50-w26-s4_8xb32_in1k.py']
model = dict(backbone=dict(groups=8, base_width=4, scales=4))
