# RetinaNet with an SKNet-50 backbone (paper SK unit on a ResNeXt-50 32x4d
# base; timm's skresnext50_32x4d) on COCO: mmdet's RetinaNet R-50 recipe with
# the backbone replaced.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['mmsk'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmsk.SKNet',
        depth=50,
        sk_form='paper',
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(
            type='Pretrained',
            # an mmsk classifier checkpoint: tools/train.py, or
            # tools/model_converters/timm_to_mmsk.py skresnext50_32x4d
            checkpoint='checkpoints/skresnext50_32x4d_mmsk.pth',
            prefix='backbone.')),
    neck=dict(in_channels=[256, 512, 1024, 2048]))
