# RetinaNet R-50 with mmsk's Selective Kernel unit plugged in after the 3x3
# conv of every bottleneck in stages 2-4 (c3-c5). The ImageNet ResNet-50
# weights load as usual; the plugins start from scratch (MMEngine lists them
# as missing keys). For SE write type='mmsk.SEAttention'.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['mmsk'], allow_failed_imports=False)

model = dict(
    backbone=dict(plugins=[
        dict(
            cfg=dict(type='mmsk.SKAttention'),
            stages=(False, True, True, True),
            position='after_conv2')
    ]))
