# Faster R-CNN with a Res2Net-50 26w x 4s backbone (mmsk's MultiScaleResNet)
# on COCO: mmdet's Faster R-CNN R-50 recipe with the backbone replaced.
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['mmsk'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmsk.MultiScaleResNet',
        depth=50,
        scales=4,
        base_width=26,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(
            type='Pretrained',
            # tools/model_converters/timm_to_mmsk.py res2net50_26w_4s
            checkpoint='checkpoints/res2net50_26w_4s_mmsk.pth',
            prefix='backbone.')),
    neck=dict(in_channels=[256, 512, 1024, 2048]))
