# Res2Net-101 v1b (timm's res2net101d).
_base_ = ['./res2net50d_8xb32_in1k.py']
model = dict(backbone=dict(depth=101))
