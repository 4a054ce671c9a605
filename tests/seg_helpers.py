"""Fixtures for the segmentation tests: a miniature Fashion-MNIST (IDX files) and a miniature Cityscapes tree."""

import struct
from pathlib import Path

import numpy as np
from PIL import Image

IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of unsigned bytes: magic 00 00 08 ndim, big-endian dimensions, the bytes."""
    path.write_bytes(bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
                     + array.astype(np.uint8).tobytes())


def garment_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28x28 "garments": class k is a bright filled shape whose width and height depend on k, with a dark
    border row and column of zeros around it and some noise; labels ``i % 10``."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    images = np.zeros((n, 28, 28), np.uint8)
    for i, k in enumerate(labels):
        h, w = 8 + 2 * int(k), 24 - 2 * int(k)
        top, left = (28 - h) // 2, (28 - w) // 2
        images[i, top:top + h, left:left + w] = rng.integers(150, 256, (h, w))
    return images, labels


def make_fashion_mnist(folder: Path, n_train: int = 60, n_test: int = 20) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = garment_images(n, seed=len(split))
        write_idx(folder / IDX_FILES[split][0], images)
        write_idx(folder / IDX_FILES[split][1], labels)
    return folder


def make_cityscapes(root: Path, size=(8, 16), per_city: int = 2, splits=("train", "val"),
                    cities=("aachen", "bremen")) -> Path:
    """A miniature Cityscapes tree: ``per_city`` tiny RGB images per city and split, each with a labelIds mask
    whose pixels cycle through ids 0..33 (every id once at least, given enough pixels)."""
    rng = np.random.default_rng(0)
    for split in splits:
        for city in cities:
            (root / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
            (root / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
            for i in range(per_city):
                stem = f"{city}_{i:06d}_000019"
                image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                ids = (np.arange(size[0] * size[1]).reshape(size) + i) % 34
                Image.fromarray(image).save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
                mask = root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"
                Image.fromarray(ids.astype(np.uint8)).save(mask)
    return root
