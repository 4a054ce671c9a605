"""Cityscapes (Cordts et al. 2016) from its folder layout: fine annotations, label ids mapped to the 19 train ids.

Layout (as the official download unpacks)::

    ROOT/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png
    ROOT/gtFine/<split>/<city>/<name>_gtFine_labelIds.png

Label ids 0..33 map to the 19 evaluated classes by the official table (cityscapesScripts' ``labels.py``,
:data:`LABEL_TO_TRAIN`); every other listed id, and 255 (the license plate's id -1 written as a byte), maps to
:data:`~.seg_transforms.IGNORE_INDEX`. Any other id means the mask is not a ``labelIds`` image (a ``color`` or
``instanceIds`` file, say): a :class:`DataError` naming the file and the ids. So is a mask whose size differs from
its image, an image without its mask (named), and a missing folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .errors import DataError
from .folder import decode_image
from .seg_transforms import IGNORE_INDEX

CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
           "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
# label id -> train id, for the ids that are evaluated (cityscapesScripts, labels.py); ids 0..33 not listed here
# (unlabeled, ego vehicle, rectification border, out of roi, static, dynamic, ground, parking, rail track,
# guard rail, bridge, tunnel, polegroup, caravan, trailer) and 255 (license plate, id -1) are ignored.
LABEL_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                  26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
KNOWN_IDS = (*range(34), 255)
IMAGE_SUFFIX = "_leftImg8bit.png"
MASK_SUFFIX = "_gtFine_labelIds.png"
# Cityscapes' own statistics are close to ImageNet's; DeepLab and torchvision normalise with ImageNet's.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SPLITS = ("train", "val", "test")


def train_id_table() -> torch.Tensor:
    """A 256-entry lookup table: label id -> train id (255 ignored; -1 for ids outside the class map)."""
    table = torch.full((256,), -1, dtype=torch.int16)
    table[list(KNOWN_IDS)] = IGNORE_INDEX
    for label, train in LABEL_TO_TRAIN.items():
        table[label] = train
    return table


TRAIN_IDS = train_id_table()


def to_train_ids(label_ids: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """Map a ``uint8`` label-id mask to train ids (``uint8``, 255 ignored); :class:`DataError` naming ``name`` and
    the offending ids when some are outside the class map."""
    mapped = TRAIN_IDS[label_ids.to(torch.int64)]
    if bool((mapped < 0).any()):
        bad = sorted(set(label_ids[mapped < 0].unique().tolist()))
        raise DataError(f"{name}: label id(s) {bad[:8]} are not Cityscapes label ids (known: 0..33 and 255); is "
                        f"it a *_gtFine_labelIds.png file?")
    return mapped.to(torch.uint8)


def read_mask(path: str | os.PathLike) -> torch.Tensor:
    """A ``labelIds`` PNG as a ``uint8`` ``H x W`` tensor of label ids."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16"):
                raise DataError(f"{path}: a labelIds mask is a one-channel image, got mode {im.mode}")
            array = np.array(im)
    except FileNotFoundError:
        raise DataError(f"mask not found: {path}") from None
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"cannot read mask {path}: {type(e).__name__}: {e}") from e
    if array.min(initial=0) < 0 or array.max(initial=0) > 255:
        raise DataError(f"{path}: label id(s) outside 0..255 (max {int(array.max())}); not a labelIds mask")
    return torch.from_numpy(array.astype(np.uint8))


def _folder(root: Path, kind: str, split: str) -> Path:
    folder = root / kind / split
    if not folder.is_dir():
        raise DataError(f"Cityscapes folder not found: {folder} (expected ROOT/leftImg8bit/<split>/<city>/ and "
                        f"ROOT/gtFine/<split>/<city>/ under {root})")
    return folder


def list_pairs(root: str | os.PathLike, split: str) -> list[tuple[Path, Path]]:
    """``(image, mask)`` paths of ``split``, sorted by city and name; every image must have its mask."""
    if split not in SPLITS:
        raise ValueError(f"Cityscapes split must be one of {', '.join(SPLITS)}, got {split!r}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Cityscapes root not found: {root}")
    images, masks = _folder(root, "leftImg8bit", split), _folder(root, "gtFine", split)
    pairs, missing = [], []
    for city in sorted(e.name for e in os.scandir(images) if e.is_dir() and not e.name.startswith(".")):
        for name in sorted(f for f in os.listdir(images / city) if f.endswith(IMAGE_SUFFIX)):
            mask = masks / city / (name[: -len(IMAGE_SUFFIX)] + MASK_SUFFIX)
            (pairs if mask.is_file() else missing).append((images / city / name, mask))
    if missing:
        image, mask = missing[0]
        raise DataError(f"{len(missing)} Cityscapes image(s) without a mask, e.g. {image}: expected {mask}")
    if not pairs:
        raise DataError(f"no Cityscapes images in {images} (expected <city>/<name>{IMAGE_SUFFIX})")
    return pairs


class Cityscapes(Dataset):
    """One split of Cityscapes; items are ``transform(image, train-id mask)`` (a joint transform of
    :mod:`.seg_transforms`)."""

    def __init__(self, root: str | os.PathLike, split: str, *, transform: Any) -> None:
        self.root = Path(root)
        self.split = split
        self.pairs = list_pairs(self.root, split)
        self.transform = transform
        self.classes = list(CLASSES)
        self.channels = transform.channels
        self.mean, self.std = transform.mean, transform.std
        self.num_skipped = 0

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``uint8`` image and train-id mask of item ``index``, checked, before the transform."""
        image_path, mask_path = self.pairs[index]
        image = decode_image(image_path, 3)
        label_ids = read_mask(mask_path)
        if tuple(image.shape[-2:]) != tuple(label_ids.shape):
            raise DataError(f"{mask_path} is {label_ids.shape[1]}x{label_ids.shape[0]} (WxH) but its image "
                            f"{image_path} is {image.shape[-1]}x{image.shape[-2]}")
        return image, to_train_ids(label_ids, str(mask_path))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(*self.load(index))
