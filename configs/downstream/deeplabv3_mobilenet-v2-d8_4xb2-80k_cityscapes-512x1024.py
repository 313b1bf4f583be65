# DeepLabV3 with MobileNetV2 1.0 (mmsk's InvertedResidualNet) at output
# stride 8 on Cityscapes: mmseg's MobileNetV2-D8 DeepLabV3 recipe on mmsk's
# backbone (rows 4-7 run at stride 1, dilated 2 and 4).
_base_ = ['mmseg::deeplabv3/deeplabv3_r50-d8_4xb2-80k_cityscapes-512x1024.py']
custom_imports = dict(imports=['mmsk'], allow_failed_imports=False)

model = dict(
    pretrained=None,  # the backbone's init_cfg says what to load
    backbone=dict(
        _delete_=True,
        type='mmsk.InvertedResidualNet',
        widen_factor=1.0,
        strides=(1, 2, 2, 1, 1, 1, 1),
        dilations=(1, 1, 1, 2, 2, 4, 4),
        out_indices=(1, 2, 4, 6),
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        norm_eval=False,
        init_cfg=dict(
            type='Pretrained',
            # tools/model_converters/timm_to_mmsk.py mobilenetv2_100
            checkpoint='checkpoints/mobilenetv2_100_mmsk.pth',
            prefix='backbone.')),
    decode_head=dict(in_channels=320, in_index=3),
    auxiliary_head=dict(in_channels=96, in_index=2))
