"""Data for classification: Fashion-MNIST from IDX files, image folders, and torch-only transforms.

``load_dataset(name_or_path, split, resolution=..., train=...)`` is the entry point; ``collate`` goes with it in
a DataLoader; ``load_image`` prepares one file for prediction. Every failure to find or read data is a
:class:`DataError` naming the file or folder.
"""

from .errors import CorruptImageWarning, DataError
from .fashion_mnist import FashionMNIST, find_fashion_mnist, read_fashion_mnist
from .folder import IMAGE_EXTENSIONS, ImageFolder, decode_image, load_image
from .idx import parse_idx, read_idx
from .loader import HOLDOUT, DatasetPart, collate, holdout_indices, load_dataset
from .transforms import (
    DEFAULT_CROP_FRACTION,
    IMAGENET_MEAN,
    IMAGENET_STD,
    INCEPTION_RATIO,
    INCEPTION_SCALE,
    EvalTransform,
    TrainTransform,
    build_transform,
)

__all__ = [
    "DEFAULT_CROP_FRACTION", "HOLDOUT", "IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_EXTENSIONS", "INCEPTION_RATIO",
    "INCEPTION_SCALE", "CorruptImageWarning", "DataError", "DatasetPart", "EvalTransform", "FashionMNIST",
    "ImageFolder", "TrainTransform", "build_transform", "collate", "decode_image", "find_fashion_mnist",
    "holdout_indices", "load_dataset", "load_image", "parse_idx", "read_fashion_mnist", "read_idx",
]
