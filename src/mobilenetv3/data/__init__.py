"""Data, torch-only: classification (Fashion-MNIST from IDX files, image folders) and segmentation (scenes
composed from Fashion-MNIST items, Cityscapes folders), with their transforms.

``load_dataset(name_or_path, split, resolution=..., train=...)`` is the classification entry point; ``collate``
goes with it in a DataLoader; ``load_image`` prepares one file for prediction. ``load_segmentation_dataset(name,
split, train=...)`` is the segmentation one (``scenes[:OPTIONS]``, ``cityscapes:PATH``), and
``load_detection_dataset(name, split, train=...)`` the detection one (``scenes[:OPTIONS]`` with boxes,
``coco:PATH``). Every failure to find or
read data is a :class:`DataError` naming the file or folder.
"""

from .coco import CocoDetection
from .det_loader import DET_DATASETS, load_detection_dataset
from .det_transforms import DetEvalTransform, DetTrainTransform
from .errors import CorruptImageWarning, DataError
from .fashion_mnist import FashionMNIST, find_fashion_mnist, read_fashion_mnist
from .folder import IMAGE_EXTENSIONS, ImageFolder, decode_image, load_image
from .idx import parse_idx, read_idx
from .loader import HOLDOUT, DatasetPart, collate, holdout_indices, load_dataset
from .scene_coco import SceneDetection, scenes_coco, write_scenes_coco
from .seg_loader import SEG_DATASETS, is_seg_data, load_segmentation_dataset
from .seg_transforms import IGNORE_INDEX, SegEvalTransform, SegTrainTransform
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
    "DET_DATASETS", "CocoDetection", "DetEvalTransform", "DetTrainTransform", "SceneDetection",
    "load_detection_dataset", "scenes_coco", "write_scenes_coco",
    "DEFAULT_CROP_FRACTION", "HOLDOUT", "IGNORE_INDEX", "IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_EXTENSIONS",
    "INCEPTION_RATIO", "INCEPTION_SCALE", "SEG_DATASETS", "CorruptImageWarning", "DataError", "DatasetPart",
    "EvalTransform", "FashionMNIST", "ImageFolder", "SegEvalTransform", "SegTrainTransform", "TrainTransform",
    "build_transform", "collate", "decode_image", "find_fashion_mnist", "holdout_indices", "is_seg_data",
    "load_dataset", "load_image", "load_segmentation_dataset", "parse_idx", "read_fashion_mnist", "read_idx",
]
