# SK-MobileNetV2 1.0: every depthwise 3x3 becomes a depthwise Selective
# Kernel unit (3x3 dilation 1 and 2, paper form, d = max(C/16, 32)).
_base_ = ['./mobilenet-v2_8xb32_in1k.py']
model = dict(backbone=dict(attn_cfg=dict(type='SKConv')))
