"""Deploy configs for OpenMMLab's mmdeploy (1.3.1), and its ONNX export run
the way it was written for.

mmdeploy's wheel ships no deploy configs; these functions return the small
``deploy_cfg`` dicts (``onnx_config``, ``codebase_config``,
``backend_config=dict(type='onnxruntime')``) for mmsk classifiers and for the
mmseg / mmdet models of ``configs/downstream``.

mmdeploy 1.3.1 on torch >= 2.9 (checked on 2.14): ``mmdeploy.apis.
torch2onnx`` calls ``torch.onnx.export`` without ``dynamo=``, so torch's new
default exporter runs instead of the TorchScript-based one mmdeploy's
rewriters target. It cannot emit mmdeploy's opset 11, exports at 18, logs a
failed version conversion (``axes_input_to_attribute ... Assertion``) and
bypasses mmdeploy's symbolic rewrites. :func:`torch2onnx` runs mmdeploy's
export with ``dynamo=False``, which restores mmdeploy's own behaviour.

Example:
    >>> from mmsk.deploy.mmdeploy_cfgs import classification_cfg, torch2onnx
    >>> onnx_file = torch2onnx(img, 'work_dir', classification_cfg((28, 28)),
    ...                        model_cfg, 'model.pth')
"""
import contextlib
import os.path as osp
from typing import Optional, Sequence

from mmsk.utils import check_positive_int


def _onnx_config(shape, output_names, dynamic, opset, dynamic_axes=None):
    height, width = (check_positive_int(f'shape[{i}]', s)
                     for i, s in enumerate(shape))
    cfg = dict(
        type='onnx',
        export_params=True,
        keep_initializers_as_inputs=False,
        opset_version=opset,
        save_file='end2end.onnx',
        input_names=['input'],
        output_names=list(output_names),
        input_shape=[width, height],  # mmdeploy's order: width, height
        optimize=False)
    if dynamic:
        cfg['dynamic_axes'] = dynamic_axes
    return cfg


def classification_cfg(shape: Sequence[int],
                       dynamic: bool = False,
                       opset: int = 11) -> dict:
    """mmpretrain classifier -> ``output``: the class scores (softmax)."""
    axes = dict(input={0: 'batch'}, output={0: 'batch'})
    return dict(
        onnx_config=_onnx_config(shape, ['output'], dynamic, opset, axes),
        codebase_config=dict(type='mmpretrain', task='Classification'),
        backend_config=dict(type='onnxruntime'))


def segmentation_cfg(shape: Sequence[int],
                     dynamic: bool = False,
                     opset: int = 11,
                     with_argmax: bool = True) -> dict:
    """mmseg segmentor -> ``output``: the label map ``(N, 1, H, W)`` (or the
    logits with ``with_argmax=False``)."""
    axes = dict(
        input={0: 'batch', 2: 'height', 3: 'width'},
        output={0: 'batch', 2: 'height', 3: 'width'})
    return dict(
        onnx_config=_onnx_config(shape, ['output'], dynamic, opset, axes),
        codebase_config=dict(
            type='mmseg', task='Segmentation', with_argmax=with_argmax),
        backend_config=dict(type='onnxruntime'))


def detection_cfg(shape: Sequence[int],
                  dynamic: bool = False,
                  opset: int = 11,
                  score_threshold: float = 0.05,
                  keep_top_k: int = 100) -> dict:
    """mmdet detector -> ``dets`` ``(N, K, 5)`` and ``labels`` ``(N, K)``,
    NMS inside the graph."""
    axes = dict(
        input={0: 'batch', 2: 'height', 3: 'width'},
        dets={0: 'batch', 1: 'num_dets'},
        labels={0: 'batch', 1: 'num_dets'})
    return dict(
        onnx_config=_onnx_config(shape, ['dets', 'labels'], dynamic, opset,
                                 axes),
        codebase_config=dict(
            type='mmdet',
            task='ObjectDetection',
            model_type='end2end',
            post_processing=dict(
                score_threshold=score_threshold,
                confidence_threshold=0.005,
                iou_threshold=0.5,
                max_output_boxes_per_class=200,
                pre_top_k=5000,
                keep_top_k=keep_top_k,
                background_label_id=-1)),
        backend_config=dict(type='onnxruntime'))


@contextlib.contextmanager
def torchscript_onnx_exporter():
    """Within the block, ``torch.onnx.export`` defaults to ``dynamo=False``
    (the TorchScript-based exporter mmdeploy 1.3.1 was written for)."""
    import torch
    export = torch.onnx.export

    def legacy_export(*args, **kwargs):
        kwargs.setdefault('dynamo', False)
        return export(*args, **kwargs)

    torch.onnx.export = legacy_export
    try:
        yield
    finally:
        torch.onnx.export = export


def torch2onnx(img,
               work_dir: str,
               deploy_cfg: dict,
               model_cfg,
               checkpoint: Optional[str] = None,
               device: str = 'cpu') -> str:
    """``mmdeploy.apis.torch2onnx`` with the TorchScript-based exporter;
    returns the ONNX file's path."""
    import warnings

    from mmdeploy.apis import torch2onnx as mmdeploy_torch2onnx
    from mmengine.config import Config
    deploy_cfg = Config(deploy_cfg) if isinstance(deploy_cfg, dict) \
        else deploy_cfg
    save_file = deploy_cfg.onnx_config.save_file
    with torchscript_onnx_exporter(), warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        mmdeploy_torch2onnx(img, work_dir, save_file, deploy_cfg, model_cfg,
                            checkpoint, device)
    return osp.join(work_dir, save_file)
