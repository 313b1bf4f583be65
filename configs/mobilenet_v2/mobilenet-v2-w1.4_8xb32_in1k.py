# MobileNetV2 1.4: every width x1.4 (rounded to multiples of 8), final conv
# 1792 channels.
_base_ = ['./mobilenet-v2_8xb32_in1k.py']
model = dict(backbone=dict(widen_factor=1.4), head=dict(in_channels=1792))
