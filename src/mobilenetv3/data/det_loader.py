"""One entry point for the detection data sets: a ``--data`` name, a split and the joint image/box transform.

Names: ``scenes`` (the composed Fashion-MNIST scenes with boxes, generated on the fly), optionally with options
after a colon as for segmentation (``scenes:size=128x128,train=2000,min_visible=0.25``); ``coco:PATH`` (a COCO
folder, :mod:`.coco`), or ``coco`` with the folder given as ``data_dir``. A scene folder written by
:func:`~.scene_coco.write_scenes_coco` is read as ``coco:PATH``.
"""

from __future__ import annotations

import os
from typing import Any

from torch.utils.data import Dataset

from . import scenes
from .coco import CocoDetection
from .det_transforms import DetEvalTransform, DetTrainTransform
from .errors import DataError
from .scene_coco import SceneDetection
from .transforms import IMAGENET_MEAN, IMAGENET_STD, grey_stats

DET_DATASETS = ("scenes", "coco")


def parse_det_name(name: str) -> tuple[str, str]:
    """``(kind, argument)`` of a detection data name: ``("scenes", "size=64x64")``, ``("coco", PATH)``."""
    kind, _, argument = str(name).partition(":")
    kind = kind.strip().lower()
    if kind not in DET_DATASETS:
        raise DataError(f"unknown detection data {name!r}: expected scenes[:OPTIONS] or coco:PATH")
    return kind, argument


def load_detection_dataset(name: str, split: str, *, train: bool, size: int | tuple[int, int] | None = None,
                           scale: tuple[float, float] | None = None, hflip: float | None = None,
                           channels: int | None = None, mean: Any = None, std: Any = None,
                           data_dir: str | os.PathLike | None = None) -> Dataset:
    """A detection dataset whose items are ``(normalised float image C x H x W, target dict)``
    (:mod:`.det_transforms`).

    ``size`` (COCO only): the training crop and the evaluation input (images resized to it), default 320. Scenes
    are their canvas: training crops are canvas-sized windows of the scaled scene, evaluation takes the canvas as
    it is (give a square canvas, ``scenes:size=256x256``, for square anchors). ``scale`` (default (0.5, 1.5))
    and ``hflip`` (0.5) shape the training transform. The dataset has ``classes`` (``"background"`` first),
    ``channels``, ``mean``, ``std``, ``transform`` and ``len()``.
    """
    kind, argument = parse_det_name(name)
    channels = channels or 3
    if kind == "scenes":
        config, lengths = scenes.scene_source(argument)
        default_size, default_mean, default_std = config.size, scenes.MEAN, scenes.STD
    else:
        root = argument or data_dir
        if not root:
            raise DataError("coco needs its folder: --data coco:PATH (PATH holds annotations/instances_<split>.json "
                            "and the images)")
        default_size, default_mean, default_std = (320, 320), IMAGENET_MEAN, IMAGENET_STD
    default_mean, default_std = grey_stats(default_mean, default_std, channels)
    stats = dict(mean=mean or default_mean, std=std or default_std, channels=channels)
    if kind == "scenes":  # the canvas is the input: train on whole canvases (scaled and cropped back), test as is
        size, eval_size = config.size, None
    else:
        size = eval_size = size or default_size
    if train:
        transform: DetEvalTransform = DetTrainTransform(
            crop=size, **({} if scale is None else {"scale": scale}),
            **({} if hflip is None else {"hflip": hflip}), **stats)
    else:
        transform = DetEvalTransform(size=eval_size, **stats)
    if kind == "scenes":
        return SceneDetection(split, transform=transform, config=config, length=lengths.get(split),
                              data_dir=data_dir)
    return CocoDetection(root, split, transform=transform)
