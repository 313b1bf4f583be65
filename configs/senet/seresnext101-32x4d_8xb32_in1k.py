_base_ = ['./seresnext50-32x4d_8xb32_in1k.py']
model = dict(backbone=dict(depth=101))
