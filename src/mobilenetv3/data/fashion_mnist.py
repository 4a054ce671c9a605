"""Fashion-MNIST (Xiao et al. 2017) from its four IDX files, held in memory as one uint8 tensor per split.

Where the files are looked for, in order: an explicit ``data_dir``; ``$MNV3_DATA``; Debian's
``/usr/share/datasets/fashion-mnist`` (package ``dataset-fashion-mnist``). In each place the folder itself, its
``fashion-mnist/`` subfolder and torchvision's ``FashionMNIST/raw/`` are tried. An explicit ``data_dir`` is the
only place looked at when given: a wrong path should fail, not quietly pick up another copy.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .errors import DataError
from .idx import read_idx
from .transforms import EvalTransform, TrainTransform

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# Over every pixel of the 60,000 training images scaled to [0, 1] (0.28604, 0.35302 before rounding).
MEAN = (0.2860,)
STD = (0.3530,)
# Inception's (0.08, 1) crops of a 28x28 image can keep under 8x8 pixels of it; a quarter of the area or more
# still varies position and scale while keeping the garment recognisable.
TRAIN_SCALE = (0.25, 1.0)
DEFAULT_CHANNELS = 1
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SPLITS = {"train": "train", "test": "test", "val": "test"}  # there is no separate validation set
ENV_VAR = "MNV3_DATA"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
SUBDIRS = ("", "fashion-mnist", "FashionMNIST/raw")
HOW_TO_GET = (
    "Get it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu; installs to "
    f"{DEBIAN_DIR}), or download {', '.join(f + '.gz' for pair in FILES.values() for f in pair)} from "
    "https://github.com/zalandoresearch/fashion-mnist and pass their folder as --data-dir (data_dir=) or set "
    f"${ENV_VAR} to it."
)


def candidate_dirs(data_dir: str | os.PathLike | None = None) -> list[tuple[Path, str]]:
    """The folders searched, in order, each with where it came from (for the error message)."""
    if data_dir is not None:
        roots = [(Path(data_dir), "data_dir")]
    else:
        roots = [(Path(os.environ[ENV_VAR]), f"${ENV_VAR}")] if os.environ.get(ENV_VAR) else []
        roots.append((DEBIAN_DIR, "Debian package dataset-fashion-mnist"))
    return [(root / sub if sub else root, origin) for root, origin in roots for sub in SUBDIRS]


def _holds_fashion_mnist(folder: Path) -> bool:
    return any((folder / f).is_file() or (folder / (f + ".gz")).is_file() for pair in FILES.values() for f in pair)


def find_fashion_mnist(data_dir: str | os.PathLike | None = None) -> Path:
    """The first searched folder holding any Fashion-MNIST file; :class:`DataError` saying where it looked if none."""
    searched = candidate_dirs(data_dir)
    for folder, _ in searched:
        if _holds_fashion_mnist(folder):
            return folder
    looked = "\n".join(f"  {folder}  ({origin})" for folder, origin in searched)
    if data_dir is None and not os.environ.get(ENV_VAR):
        looked += f"\n  (${ENV_VAR} is not set)"
    raise DataError(f"Fashion-MNIST not found. Looked for its IDX files in:\n{looked}\n{HOW_TO_GET}")


def _file(folder: Path, name: str, split: str) -> Path:
    for candidate in (folder / name, folder / (name + ".gz")):  # the uncompressed file loads faster
        if candidate.is_file():
            return candidate
    raise DataError(f"Fashion-MNIST in {folder} lacks {name} (or {name}.gz), needed for the {split} split. "
                    f"{HOW_TO_GET}")


def read_fashion_mnist(split: str, data_dir: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``N x 28 x 28`` uint8 and labels ``N`` int64 of ``split`` ("train", or "test" alias "val")."""
    if split not in SPLITS:
        raise ValueError(f"Fashion-MNIST split must be one of {sorted(SPLITS)}, got {split!r}")
    split = SPLITS[split]
    folder = find_fashion_mnist(data_dir)
    image_path, label_path = (_file(folder, name, split) for name in FILES[split])
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or images.dtype != "uint8":
        raise DataError(f"{image_path}: expected N x H x W unsigned bytes, got shape {images.shape} of {images.dtype}")
    if labels.ndim != 1 or labels.dtype != "uint8":
        raise DataError(f"{label_path}: expected N unsigned bytes, got shape {labels.shape} of {labels.dtype}")
    if len(images) != len(labels):
        raise DataError(f"{label_path} holds {len(labels)} labels but {image_path} holds {len(images)} images")
    if len(labels) and labels.max() >= len(CLASSES):
        raise DataError(f"{label_path}: label {int(labels.max())} out of range 0..{len(CLASSES) - 1}")
    return torch.from_numpy(images), torch.from_numpy(labels.astype("int64"))


class FashionMNIST(Dataset):
    """One split of Fashion-MNIST; items are ``(transform(image), label)``.

    ``transform.channels`` decides the output: 1 (the default in :func:`~mobilenetv3.data.load_dataset`; the model
    spec then records ``in_channels=1``, the stem is cheaper and no pretrained RGB weights are involved) or 3 (the
    grey image repeated, for a standard RGB stem).
    """

    def __init__(self, split: str, *, transform: TrainTransform | EvalTransform,
                 data_dir: str | os.PathLike | None = None) -> None:
        self.split = SPLITS.get(split, split)
        self.images, self.labels = read_fashion_mnist(split, data_dir)
        self.transform = transform
        self.classes = list(CLASSES)
        self.channels = transform.channels
        self.mean = transform.mean
        self.std = transform.std
        self.num_skipped = 0  # in memory and checked on load: nothing is ever skipped

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[index][None]), int(self.labels[index])
