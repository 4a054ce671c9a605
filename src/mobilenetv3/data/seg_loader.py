"""One entry point for the segmentation data sets: a ``--data`` name, a split and the joint transform.

Names: ``scenes`` (the composed Fashion-MNIST scenes, :mod:`.scenes`), optionally with options after a colon,
``scenes:size=128x256,train=2000,val=200,items=2-6,seed=0``; ``cityscapes:PATH`` (the folder holding
``leftImg8bit/`` and ``gtFine/``), or ``cityscapes`` with the folder given as ``data_dir``.
"""

from __future__ import annotations

import os
from typing import Any

from torch.utils.data import Dataset

from . import cityscapes, scenes
from .errors import DataError
from .seg_transforms import SegEvalTransform, SegTrainTransform
from .transforms import grey_stats

SEG_DATASETS = ("scenes", "cityscapes")


def parse_seg_name(name: str) -> tuple[str, str]:
    """``(kind, argument)`` of a segmentation data name: ``("scenes", "size=64x128")``, ``("cityscapes", PATH)``."""
    kind, _, argument = str(name).partition(":")
    kind = kind.strip().lower()
    if kind not in SEG_DATASETS:
        raise DataError(f"unknown segmentation data {name!r}: expected scenes[:OPTIONS] or cityscapes:PATH")
    return kind, argument


def is_seg_data(name: str | None) -> bool:
    """Whether ``name`` names a segmentation data set."""
    return name is not None and str(name).partition(":")[0].strip().lower() in SEG_DATASETS


def load_segmentation_dataset(name: str, split: str, *, train: bool, crop: int | tuple[int, int] | None = None,
                              scale: tuple[float, float] | None = None, hflip: float | None = None,
                              channels: int | None = None, mean: Any = None, std: Any = None,
                              data_dir: str | os.PathLike | None = None) -> Dataset:
    """A segmentation dataset whose items are ``(normalised float image C x H x W, int64 mask H x W)``.

    ``train``: the random training transform (scale by a factor in ``scale``, default (0.5, 2.0); a ``crop``
    window, padded with ignored pixels where the image is smaller; a flip with probability ``hflip``, default
    0.5) or the evaluation one (the whole image). ``crop`` defaults to the scene size for scenes and 768 for
    Cityscapes. ``channels``: 3 by default (1 gives grey images). The dataset has ``classes`` (label order, 255
    ignored), ``channels``, ``mean``, ``std``, ``transform`` (with ``config()``), ``num_skipped`` and ``len()``.
    """
    kind, argument = parse_seg_name(name)
    channels = channels or 3
    if kind == "scenes":
        config, lengths = scenes.scene_source(argument)
        default_crop, default_mean, default_std = config.size, scenes.MEAN, scenes.STD
    else:
        root = argument or data_dir
        if not root:
            raise DataError("cityscapes needs its folder: --data cityscapes:PATH (PATH holds leftImg8bit/ and "
                            "gtFine/)")
        default_crop, default_mean, default_std = (768, 768), cityscapes.MEAN, cityscapes.STD
    default_mean, default_std = grey_stats(default_mean, default_std, channels)
    stats = dict(mean=mean or default_mean, std=std or default_std, channels=channels)
    if train:
        transform: SegEvalTransform = SegTrainTransform(
            crop=crop or default_crop, **({} if scale is None else {"scale": scale}),
            **({} if hflip is None else {"hflip": hflip}), **stats)
    else:
        transform = SegEvalTransform(**stats)
    if kind == "scenes":
        return scenes.FashionScenes(split, transform=transform, config=config, length=lengths.get(split),
                                    data_dir=data_dir)
    return cityscapes.Cityscapes(root, split, transform=transform)
