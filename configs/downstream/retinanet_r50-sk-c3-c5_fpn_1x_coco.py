# RetinaNet R-50 with mmsk's Selective Kernel unit plugged in after the 3x3
# conv of every bottleneck in stages 2-4 (c3-c5). The ImageNet ResNet-50
# weights load as usual; the plugins start from scratch (MMEngine lists them
# as missing keys). The base keeps every BatchNorm of the backbone in eval
# mode (norm_eval=True), which would hold new BatchNorms at their initial
# statistics (mean 0, variance 1): they would never normalise. So the units
# normalise with GroupNorm, which keeps no running statistics: 32 groups on
# the branches, one over the attention's 32-wide descriptor. For SE write
# cfg=dict(type='mmsk.SEAttention'): it has no norm.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['mmsk'], allow_failed_imports=False)

model = dict(
    backbone=dict(plugins=[
        dict(
            cfg=dict(
                type='mmsk.SKAttention',
                norm_cfg=dict(type='GN', num_groups=32),
                attn_norm_cfg=dict(type='GN', num_groups=1)),
            stages=(False, True, True, True),
            position='after_conv2')
    ]))
