"""One entry point for every classification dataset, and the collate function that drops skipped samples."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, default_collate

from . import fashion_mnist
from .errors import DataError
from .folder import ON_CORRUPT, ImageFolder, find_classes
from .transforms import IMAGENET_GRAY_MEAN, IMAGENET_GRAY_STD, IMAGENET_MEAN, IMAGENET_STD, build_transform

FASHION_MNIST_NAMES = ("fashion-mnist", "fashion_mnist", "fashionmnist")
DATASET_NAMES = ("fashion-mnist",)
# Split name -> folder names tried in order; ImageNet calls its held-out split "val", other sets "test".
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "validation", "test"), "test": ("test", "val", "validation")}
# The images held out of the training split for validation (``holdout=N``): a split of its own name, so that a
# recipe can be tuned without ever looking at the test set. The choice is fixed (not the run's seed), so every run
# with the same N holds out the same images and their validation figures compare.
HOLDOUT = "holdout"
HOLDOUT_SEED = 0x401D


def holdout_indices(total: int, holdout: int) -> tuple[list[int], list[int]]:
    """``(kept, held)``: sorted indices of ``range(total)``, ``holdout`` of them drawn at random (fixed seed)."""
    if not 0 < holdout < total:
        raise ValueError(f"holdout must be between 1 and {total - 1} (the training split has {total} images), "
                         f"got {holdout}")
    order = torch.randperm(total, generator=torch.Generator().manual_seed(HOLDOUT_SEED)).tolist()
    return sorted(order[holdout:]), sorted(order[:holdout])


class DatasetPart(Dataset):
    """Some images of a dataset, by index, with the dataset's classes, channels, statistics and transform."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[self.indices[i]]

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes

    @property
    def channels(self) -> int:
        return self.dataset.channels

    @property
    def mean(self) -> tuple[float, ...]:
        return self.dataset.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.dataset.std

    @property
    def transform(self) -> Any:
        return self.dataset.transform

    @property
    def num_skipped(self) -> int:
        return self.dataset.num_skipped


def collate(batch: list[Any]) -> Any:
    """``default_collate`` after dropping ``None`` (skipped) samples; ``None`` if the whole batch was skipped.

    A training loop using ``on_corrupt="skip"`` must therefore accept batches smaller than the batch size, and
    skip a ``None`` batch.
    """
    kept = [sample for sample in batch if sample is not None]
    return default_collate(kept) if kept else None


def _resolve_folder(name_or_path: str | os.PathLike, data_dir: str | os.PathLike | None) -> Path:
    path = Path(name_or_path)
    tried = [path]
    if not path.is_absolute():
        # A bare name such as "imagenet" may live under the data folder, as Fashion-MNIST may.
        for root in (data_dir, os.environ.get(fashion_mnist.ENV_VAR)):
            if root:
                tried.append(Path(root) / path)
    for candidate in tried:
        if candidate.is_dir():
            return candidate
    raise DataError(f"no dataset named {str(name_or_path)!r} (known: {', '.join(DATASET_NAMES)}) and no image "
                    f"folder at {', '.join(str(t) for t in tried)}")


def _split_folder(root: Path, split: str) -> Path:
    names = SPLIT_FOLDERS.get(split, (split,))
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise DataError(f"no {split!r} split in {root}: expected one of the folders {', '.join(names)} "
                    f"(layout ROOT/train/<class>/<image>, ROOT/val/<class>/<image>)")


def load_dataset(name_or_path: str | os.PathLike, split: str, *, resolution: int, train: bool,
                 data_dir: str | os.PathLike | None = None, channels: int | None = None, on_corrupt: str = "fail",
                 holdout: int = 0, **transform_options: Any) -> Dataset:
    """A classification dataset whose items are ``(normalised float tensor C x H x W, int label)``.

    ``name_or_path``: ``"fashion-mnist"`` (IDX files looked up in ``data_dir``, then ``$MNV3_DATA``, then Debian's
    ``/usr/share/datasets/fashion-mnist``), or an image folder in the ImageNet layout (``ROOT/train/<class>/...``,
    ``ROOT/val/<class>/...``; a relative path is also tried under ``data_dir`` and ``$MNV3_DATA``).
    ``split``: ``"train"``, or ``"test"``/``"val"`` (the same split for Fashion-MNIST), or ``"holdout"``.
    ``holdout``: N > 0 sets aside N training images (a fixed random choice, see :func:`holdout_indices`): split
    ``"train"`` is then the rest and split ``"holdout"`` those N; other splits are unaffected.
    ``train``: random training augmentation, or the deterministic evaluation transform, independent of the split.
    ``channels``: 1 (grey) or 3 (RGB); default 1 for Fashion-MNIST (grey images: a 1-channel stem is cheaper and
    nothing pretrained needs RGB; the spec records ``in_channels=1``) and 3 for image folders.
    ``on_corrupt``: ``"fail"`` or ``"skip"`` unreadable images (image folders; see :mod:`.folder`).
    ``transform_options``: ``scale``, ``ratio``, ``hflip``, ``color_jitter``, ``random_erase`` (training),
    ``crop_fraction`` (evaluation), ``mean``, ``std``; options for the other kind of transform are ignored, ``None``
    means default.
    Defaults per dataset: Fashion-MNIST crops ``scale=(0.25, 1.0)`` and its own mean/std; folders Inception's
    ``(0.08, 1.0)`` and ImageNet's mean/std.

    The dataset has ``classes`` (list of names, label order), ``channels``, ``mean``/``std`` (tuples, one per
    channel), ``transform`` (with ``config()``), ``num_skipped`` and ``len()``.
    """
    if on_corrupt not in ON_CORRUPT:
        raise ValueError(f"on_corrupt must be one of {ON_CORRUPT}, got {on_corrupt!r}")
    if channels is not None and channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if holdout < 0:
        raise ValueError(f"holdout must be >= 0, got {holdout}")
    if split == HOLDOUT and not holdout:
        raise ValueError(f"split {HOLDOUT!r} needs the number of held-out training images (holdout=N)")
    if holdout and split in ("train", HOLDOUT):
        full = load_dataset(name_or_path, "train", resolution=resolution, train=train, data_dir=data_dir,
                            channels=channels, on_corrupt=on_corrupt, **transform_options)
        kept, held = holdout_indices(len(full), holdout)
        return DatasetPart(full, held if split == HOLDOUT else kept)
    options = dict(transform_options)
    mean, std = options.pop("mean", None), options.pop("std", None)
    if str(name_or_path).lower() in FASHION_MNIST_NAMES:
        channels = channels or fashion_mnist.DEFAULT_CHANNELS
        if train and options.get("scale") is None:
            options["scale"] = fashion_mnist.TRAIN_SCALE
        transform = build_transform(train, resolution, channels, mean or fashion_mnist.MEAN,
                                    std or fashion_mnist.STD, **options)
        return fashion_mnist.FashionMNIST(split, transform=transform, data_dir=data_dir)
    channels = channels or 3
    default_mean, default_std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else (IMAGENET_GRAY_MEAN,
                                                                                    IMAGENET_GRAY_STD)
    transform = build_transform(train, resolution, channels, mean or default_mean, std or default_std, **options)
    root = _resolve_folder(name_or_path, data_dir)
    directory = _split_folder(root, split)
    # Labels come from the training split's folders whatever the split, so every split numbers classes alike.
    classes = find_classes(root / "train") if (root / "train").is_dir() else None
    return ImageFolder(directory, transform=transform, classes=classes, on_corrupt=on_corrupt)
