_base_ = ['./res2net50-w26-s4_8xb32_in1k.py']
model = dict(backbone=dict(base_width=48, scales=2))
