# Res2Net-50 v1b (timm's res2net50d): deep 3x3 stem and average-pooled
# projection shortcuts.
_base_ = ['./res2net50-w26-s4_8xb32_in1k.py']
model = dict(backbone=dict(deep_stem=True, avg_down=True))
