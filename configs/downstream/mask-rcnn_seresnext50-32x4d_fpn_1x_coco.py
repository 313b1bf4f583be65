# Mask R-CNN with an SE-ResNeXt-50 32x4d backbone (mmsk's SENet) on COCO:
# mmdet's Mask R-CNN R-50 recipe with the backbone replaced.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['mmsk'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmsk.SENet',
        depth=50,
        groups=32,
        width_per_group=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(
            type='Pretrained',
            # tools/model_converters/timm_to_mmsk.py seresnext50_32x4d
            checkpoint='checkpoints/seresnext50_32x4d_mmsk.pth',
            prefix='backbone.')),
    neck=dict(in_channels=[256, 512, 1024, 2048]))
