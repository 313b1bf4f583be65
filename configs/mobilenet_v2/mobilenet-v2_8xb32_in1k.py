# MobileNetV2 1.0 on ImageNet-1k with mmpretrain's MobileNetV2 recipe
# (SGD lr 0.045, decay 0.98 per epoch, 300 epochs, 8 GPUs x 32 images).
_base_ = [
    '../_base_/models/mobilenet_v2_1x.py',
    'mmpretrain::_base_/datasets/imagenet_bs32_pil_resize.py',
    'mmpretrain::_base_/schedules/imagenet_bs256_epochstep.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmsk'], allow_failed_imports=False)
