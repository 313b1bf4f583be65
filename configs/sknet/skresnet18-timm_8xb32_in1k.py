# timm's skresnet18 layout (split input, d rounded to 16); converted timm
# weights load into it (tools/model_converters/timm_to_mmsk.py).
_base_ = ['./sknet18_8xb32_in1k.py']
model = dict(backbone=dict(sk_form='timm'))
