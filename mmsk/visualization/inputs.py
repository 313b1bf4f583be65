"""What the look-inside tools share: images, labels, enlarging, the model.

Images come from files / folders (a folder whose images sit in
sub-folders gives each image its sub-folder's name as class label, as
mmpretrain's ``CustomDataset`` does) or from the built-in MNIST5k digits.
"""
import math
import os.path as osp
import sys
from numbers import Real
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif',
                    '.tiff', '.webp')


class ImageSet:
    """Images (``H x W`` or ``H x W x C`` arrays on the 0-255 scale: uint8,
    or float32 for images read from 16-bit files) with optional labels.

    Args:
        images (list[np.ndarray]): The images.
        labels (list[int], optional): One class index per image.
        classes (list[str], optional): Class names, indexed by label.
        names (list[str], optional): One name per image (file path).
    """

    def __init__(self,
                 images: Sequence[np.ndarray],
                 labels: Optional[Sequence[int]] = None,
                 classes: Optional[Sequence[str]] = None,
                 names: Optional[Sequence[str]] = None):
        if len(images) == 0:
            raise ValueError('no images to look at')
        for i, img in enumerate(images):
            if not isinstance(img, np.ndarray) or img.ndim not in (2, 3):
                raise ValueError(f'image {i} must be an H x W (x C) array, '
                                 f'got {type(img).__name__} '
                                 f'{getattr(img, "shape", "")}')
        if labels is not None:
            if len(labels) != len(images):
                raise ValueError(f'{len(labels)} labels for {len(images)} '
                                 f'images')
            labels = [int(label) for label in labels]
            if classes is None:
                classes = [str(c) for c in range(max(labels) + 1)]
            if min(labels) < 0 or max(labels) >= len(classes):
                raise ValueError(f'labels must lie in [0, {len(classes)}), '
                                 f'got {min(labels)}..{max(labels)}')
        self.images = list(images)
        self.labels = labels
        self.classes = list(classes) if classes is not None else None
        self.names = list(names) if names is not None else \
            [f'image{i}' for i in range(len(images))]

    def __len__(self):
        return len(self.images)


def builtin_images(split: str = 'val',
                   max_images: Optional[int] = None) -> ImageSet:
    """The built-in MNIST5k digits (stratified subset when ``max_images``
    is smaller than the split: every class keeps the same share)."""
    from mmpretrain.datasets.categories import MNIST_CATEGORITES

    from mmsk.datasets.mnist5k import load_mnist5k
    images, labels = load_mnist5k(split)
    keep = np.arange(len(labels))
    if max_images is not None:
        _check_max_images(max_images)
        if max_images < len(labels):
            # round-robin over the classes, in file order within each
            per_class = [np.flatnonzero(labels == c) for c in range(10)]
            order = np.stack(per_class, 1).reshape(-1)
            keep = np.sort(order[:max_images])
    return ImageSet([images[i] for i in keep], labels[keep].tolist(),
                    list(MNIST_CATEGORITES),
                    [f'mnist5k-{split}-{i}' for i in keep])


def _check_max_images(max_images):
    if not isinstance(max_images, int) or isinstance(max_images, bool) or \
            max_images < 1:
        raise ValueError(f'max_images must be a positive integer, got '
                         f'{max_images!r}')


def _list_images(folder: str) -> List[Tuple[str, Optional[str]]]:
    """``(path, class name or None)`` of the images in a folder: those at
    its top level have no class, those in a sub-folder (at any depth) take
    the name of the sub-folder right below ``folder``."""
    import os
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        rel = osp.relpath(root, folder)
        label = None if rel == '.' else rel.split(os.sep)[0]
        for name in sorted(files):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append((osp.join(root, name), label))
    return found


def to_8bit_range(img: np.ndarray, path: str = 'image') -> np.ndarray:
    """An image on the 0-255 scale the models' ``mean`` / ``std`` are
    given in: uint8 as it is, 16-bit (uint16) scaled by ``255 / 65535``
    to float32 (no rounding, so the 16 bits are kept). Other types (e.g.
    a float TIFF, whose range is unknown) give ``ValueError``.

    >>> to_8bit_range(np.array([[0, 257, 65535]], np.uint16)).tolist()
    [[0.0, 1.0, 255.0]]
    """
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return (img.astype(np.float64) * (255 / 65535)).astype(np.float32)
    raise ValueError(f'{path}: {img.dtype} pixels, give an 8- or 16-bit '
                     f'image (uint8 or uint16)')


def drop_alpha(img: np.ndarray) -> np.ndarray:
    """A 4-channel image (PNG, TIFF with transparency; OpenCV reads it
    ``unchanged`` as BGRA) as its 3 colour channels, in the order of the
    3-channel images (BGR, which the data preprocessor's ``to_rgb``
    turns), as mmpretrain's ``LoadImageFromFile`` reads it; other images as
    they are.

    >>> drop_alpha(np.array([[[1, 2, 3, 255]]], np.uint8)).tolist()
    [[[1, 2, 3]]]
    """
    if img.ndim == 3 and img.shape[-1] == 4:
        return np.ascontiguousarray(img[..., :3])
    return img


#: numpy steps that undo each EXIF orientation (2-8), as Pillow's
#: ``ImageOps.exif_transpose`` and OpenCV's colour read do
_EXIF_STEPS = {
    2: lambda img: img[:, ::-1],  # mirrored left-right
    3: lambda img: img[::-1, ::-1],  # turned 180 degrees
    4: lambda img: img[::-1],  # mirrored top-bottom
    5: lambda img: img.swapaxes(0, 1),  # transposed
    6: lambda img: np.rot90(img, -1),  # turned 90 degrees clockwise
    7: lambda img: img.swapaxes(0, 1)[::-1, ::-1],  # transversed
    8: lambda img: np.rot90(img, 1),  # turned 90 degrees anticlockwise
}


def exif_upright(img: np.ndarray, path: str) -> np.ndarray:
    """``img``, read from ``path`` by OpenCV's ``unchanged`` read, turned
    upright by the file's EXIF orientation tag, as mmpretrain's
    ``LoadImageFromFile`` (OpenCV's colour read) sees it: the ``unchanged``
    read, which keeps 16 bits and alpha, ignores the tag (but for TIFF,
    whose reader applies it), so a phone photo would be looked at on its
    side. Files without the tag are returned as they are."""
    try:
        from PIL import Image
        with Image.open(path) as image:
            if image.format == 'TIFF':  # OpenCV turned it already
                return img
            orientation = image.getexif().get(0x0112, 1)
    except Exception:  # not an image Pillow reads: OpenCV read it
        return img
    step = _EXIF_STEPS.get(orientation)
    return img if step is None else np.ascontiguousarray(step(img))


def load_images(paths: Sequence[str],
                max_images: Optional[int] = None,
                flag: str = 'unchanged') -> ImageSet:
    """Read image files and folders (see the module doc for labels).

    Labels are set only when every image lies in a class sub-folder.
    16-bit images are scaled to the 0-255 scale (:func:`to_8bit_range`);
    the alpha channel of 4-channel images is dropped (:func:`drop_alpha`);
    images are turned upright by their EXIF orientation
    (:func:`exif_upright`).
    """
    import mmcv
    if not paths:
        raise ValueError('give image files / folders or --dataset built-in')
    entries = []
    for path in paths:
        if osp.isdir(path):
            found = _list_images(path)
            if not found:
                raise FileNotFoundError(
                    f'no images ({", ".join(IMAGE_EXTENSIONS)}) in folder '
                    f'{path}')
            entries += found
        elif osp.isfile(path):
            entries.append((path, None))
        else:
            raise FileNotFoundError(f'no such image file or folder: {path}')
    if max_images is not None:
        _check_max_images(max_images)
        entries = entries[:max_images]
    images = []
    for path, _ in entries:
        if osp.getsize(path) == 0:
            raise ValueError(f'cannot read image {path}: the file is empty')
        try:
            img = mmcv.imread(path, flag=flag, channel_order='rgb')
        except Exception as e:  # OpenCV asserts on an empty file
            raise ValueError(f'cannot read image {path}: '
                             f'{str(e).strip().splitlines()[-1]}') from e
        if img is None:
            raise ValueError(f'cannot read image {path}')
        if flag == 'unchanged':  # the other reads apply the tag
            img = exif_upright(img, path)
        images.append(to_8bit_range(drop_alpha(img), path))
    labels = classes = None
    if all(label is not None for _, label in entries):
        classes = sorted({label for _, label in entries})
        labels = [classes.index(label) for _, label in entries]
    return ImageSet(images, labels, classes, [p for p, _ in entries])


def check_device(device: str) -> str:
    """``device`` as torch names one, and present on this machine."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f'device {device!r} is not a torch device (e.g. '
                         f'cpu, cuda, cuda:1): {e}') from None
    if parsed.type == 'cuda':
        count = torch.cuda.device_count() if torch.cuda.is_available() \
            else 0
        if (parsed.index or 0) >= count:
            raise ValueError(f'device {device!r}: this machine has '
                             f'{count} CUDA device(s)')
    elif parsed.type != 'cpu':
        raise ValueError(f'device {device!r}: give cpu or cuda[:N]')
    return device


def check_scales(scales: Sequence[float]) -> Tuple[float, ...]:
    if not isinstance(scales, (list, tuple)) or not scales:
        raise ValueError(f'scales must be a non-empty list, got {scales!r}')
    for s in scales:
        if not isinstance(s, Real) or isinstance(s, bool) or \
                not math.isfinite(s) or s < 1:
            raise ValueError(f'every scale must be a finite number >= 1 '
                             f'(1 = the image as it is), got {s!r}')
    if len(set(scales)) != len(scales):
        raise ValueError(f'scales must be distinct, got {list(scales)}')
    return tuple(float(s) for s in scales)


def _crop_size(shape, scale: float) -> Tuple[int, int]:
    h, w = shape[:2]
    return max(int(round(h / scale)), 1), max(int(round(w / scale)), 1)


def check_crops(scales: Sequence[float], shapes) -> None:
    """Each scale crops at least 2x2 pixels of every image size in
    ``shapes``, and no two scales the same pixels (they would give the same
    numbers under two names)."""
    for shape in sorted(set(tuple(s[:2]) for s in shapes)):
        h, w = shape
        crops = {}
        for scale in scales:
            crop = _crop_size(shape, scale)
            if min(crop) < 2:
                raise ValueError(
                    f'scale {scale:g} crops {crop[0]}x{crop[1]} pixels of a '
                    f'{h}x{w} image: too few to enlarge (2x2 at least; '
                    f'scales below {min(h, w) / 1.5:.4g} there)')
            if crop in crops:
                raise ValueError(
                    f'scales {crops[crop]:g} and {scale:g} crop the same '
                    f'{crop[0]}x{crop[1]} pixels of a {h}x{w} image: they '
                    f'would give the same numbers; give scales further apart')
            crops[crop] = scale


def enlarge(img: np.ndarray, scale: float) -> np.ndarray:
    """The object ``scale`` times larger: center-crop ``1/scale`` of each
    side and resize the crop back to the image size (bilinear), as the
    SKNet paper did. ``scale=1`` returns the image unchanged.

    >>> img = np.zeros((28, 28), np.uint8); img[12:16, 12:16] = 255
    >>> int((enlarge(img, 2.0) > 127).sum())  # the 4x4 square is now 8x8
    64
    """
    import mmcv
    check_scales([scale])
    if scale == 1:
        return img
    h, w = img.shape[:2]
    ch, cw = _crop_size(img.shape, scale)
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = np.ascontiguousarray(img[top:top + ch, left:left + cw])
    return mmcv.imresize(crop, (w, h), interpolation='bilinear')


def to_input(model: torch.nn.Module, images: Sequence[np.ndarray],
             device: str = 'cpu') -> torch.Tensor:
    """A batch of images as the model's data preprocessor prepares it
    (normalisation, channel order, padding); grey images are repeated to
    three channels when the model takes three (by its normalisation, else
    its backbone's ``in_channels``), and images of another number of
    channels are refused."""
    tensors = []
    preprocessor = getattr(model, 'data_preprocessor', None)
    mean = getattr(preprocessor, 'mean', None)
    channels = mean.numel() if isinstance(mean, torch.Tensor) else None
    if channels is None:  # no normalisation: the backbone says
        given = getattr(backbone_of(model), 'in_channels', None)
        channels = given if isinstance(given, int) else None
    for img in images:
        img = img[..., None] if img.ndim == 2 else img
        if channels == 3 and img.shape[-1] == 1:
            img = np.repeat(img, 3, axis=-1)
        if channels is not None and img.shape[-1] != channels:
            raise ValueError(f'the model expects {channels}-channel images, '
                             f'got {img.shape[-1]} channels')
        tensors.append(torch.from_numpy(np.ascontiguousarray(
            img.transpose(2, 0, 1))))
    if preprocessor is None:
        return torch.stack(tensors).float().to(device)
    data = preprocessor(dict(inputs=tensors), False)
    return data['inputs'].to(device)


def backbone_of(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, 'backbone', model)


def load_model(config: str,
               checkpoint: Optional[str],
               device: str = 'cpu',
               cfg_options: Optional[dict] = None) -> torch.nn.Module:
    """Build ``config``'s model in its own default scope (mmpretrain,
    mmdet, mmseg) and load ``checkpoint`` (None: keep the initial
    weights), strictly (a checkpoint of another model raises
    :class:`~mmsk.engine.CheckpointMismatchError` naming the keys). The
    model is in eval mode."""
    from mmengine.registry import MODELS, init_default_scope

    import mmsk  # noqa: F401  (registers models, safe checkpoint loading)
    from mmsk.engine.loading import load_checkpoint_strict
    from mmsk.utils.io import read_config
    cfg = read_config(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if 'model' not in cfg:
        raise KeyError(f'{config} has no model')
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    if checkpoint is None:
        # initial weights: a Pretrained init_cfg (e.g. a detector's
        # torchvision://resnet50) would download or load a file
        for source in _drop_pretrained(cfg.model):
            print(f'checkpoint "none": initial weights; skipping the '
                  f"config's Pretrained init from {source}", file=sys.stderr)
    model = MODELS.build(cfg.model)
    if checkpoint is not None:
        if not osp.isfile(checkpoint):
            raise FileNotFoundError(f'no such checkpoint: {checkpoint}')
        load_checkpoint_strict(
            model, checkpoint,
            hint="Give a checkpoint of this config's model (with the same "
            '--cfg-options)')
    else:
        model.init_weights()
    return model.to(device).eval()


def _drop_pretrained(cfg) -> list:
    """Remove every ``init_cfg`` entry of type ``Pretrained`` from the
    model config ``cfg`` (in place); returns their checkpoints."""
    dropped = []
    if isinstance(cfg, dict):
        init = cfg.get('init_cfg')
        entries = init if isinstance(init, list) else [init]
        kept = [e for e in entries if not (isinstance(e, dict) and
                                           e.get('type') == 'Pretrained')]
        if len(kept) < len(entries):
            dropped += [e.get('checkpoint') for e in entries
                        if e not in kept]
            cfg['init_cfg'] = kept if isinstance(init, list) else None
        for value in cfg.values():
            dropped += _drop_pretrained(value)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            dropped += _drop_pretrained(value)
    return dropped


def module_name(name: str) -> str:
    """A module's name inside the backbone, for figure labels."""
    return name[len('backbone.'):] if name.startswith('backbone.') else name
