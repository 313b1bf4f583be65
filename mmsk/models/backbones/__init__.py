from .mobilenet_v2 import InvertedResidualBlock, InvertedResidualNet
from .res2net import MultiScaleResNet, Res2Bottleneck
from .resnet import BasicBlock, Bottleneck, ResLayer, ResNetStages
from .senet import SEBasicBlock, SEBottleneck, SENet
from .sknet import SKBasicBlock, SKBottleneck, SKNet

__all__ = [
    'BasicBlock', 'Bottleneck', 'ResLayer', 'ResNetStages', 'SKBasicBlock',
    'SKBottleneck', 'SKNet', 'SEBasicBlock', 'SEBottleneck', 'SENet',
    'Res2Bottleneck', 'MultiScaleResNet', 'InvertedResidualBlock',
    'InvertedResidualNet'
]
