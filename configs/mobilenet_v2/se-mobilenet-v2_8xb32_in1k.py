# SE-MobileNetV2 1.0: squeeze-and-excitation after every depthwise conv
# (as MobileNetV3 / EfficientNet). The squeeze width is the expanded width
# / 24, i.e. a quarter of the block's input width for t = 6 (EfficientNet's
# se_ratio 0.25), rounded to a multiple of 8.
_base_ = ['./mobilenet-v2_8xb32_in1k.py']
model = dict(
    backbone=dict(attn_cfg=dict(type='SEAttention', reduction=24)))
