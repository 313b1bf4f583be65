# The PytorchInsight SK-ResNet-50: ResNet-50 base, one dense and one
# 32-group 3x3 per SK unit, no dilation, d = C/16.
_base_ = ['./sknet50_8xb32_in1k.py']
model = dict(backbone=dict(sk_form='pytorchinsight'))
