# SE-Res2Net-50 26w4s: Res2Net bottlenecks with SE after the last conv.
_base_ = ['./res2net50-w26-s4_8xb32_in1k.py']
model = dict(backbone=dict(attn_cfg=dict(type='SEAttention')))
