# DeepLabV3 with a dilated SKNet-50 (output stride 8) on Cityscapes: mmseg's
# DeepLabV3 R-50-D8 recipe with the backbone replaced.
_base_ = ['mmseg::deeplabv3/deeplabv3_r50-d8_4xb2-40k_cityscapes-512x1024.py']
custom_imports = dict(imports=['mmsk'], allow_failed_imports=False)

model = dict(
    pretrained=None,  # the backbone's init_cfg says what to load
    backbone=dict(
        _delete_=True,
        type='mmsk.SKNet',
        depth=50,
        sk_form='paper',
        strides=(1, 2, 1, 1),
        dilations=(1, 1, 2, 4),
        out_indices=(0, 1, 2, 3),
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        init_cfg=dict(
            type='Pretrained',
            # tools/model_converters/timm_to_mmsk.py skresnext50_32x4d
            checkpoint='checkpoints/skresnext50_32x4d_mmsk.pth',
            prefix='backbone.')),
    decode_head=dict(in_channels=2048, in_index=3),
    auxiliary_head=dict(in_channels=1024, in_index=2))
