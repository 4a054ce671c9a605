"""Semantic segmentation: LR-ASPP / R-ASPP networks (:mod:`mobilenetv3.segmentation`), per-pixel cross-entropy
with ignored pixels, and mIoU, per-class IoU and pixel accuracy from a confusion matrix.

The architecture is a :class:`~mobilenetv3.segmentation.SegSpec`: ``--model`` names a registered network
(``lraspp_mobilenet_v3_small``, ...; ``--width-mult`` scales its backbone), ``--spec`` a SegSpec file; the task
fits its classes and input channels to the data. A run's options apply to the backbone: ``resolution`` is the side
of the square training crop (and the backbone's nominal resolution), ``bn_momentum`` and ``dropout`` the
backbone's (the heads take their BN settings from it). ``crop_scale`` is the range of the random scale factor
applied before cropping (a factor, not the area fraction it is for classification).

Figures are percentages (0-100). Evaluation returns ``count`` (images), ``loss`` (mean cross-entropy per labelled
pixel), ``miou`` (the primary metric), ``pixel_acc``, ``per_class`` (IoU by class name, ``None`` for a class absent
from both truth and predictions) and ``confusion`` (pixels, ``[true][predicted]``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..cost import Cost
from ..data import IGNORE_INDEX, collate, load_segmentation_dataset
from ..data.scenes import canvas_size
from ..data.seg_loader import parse_seg_name
from ..segmentation import SegmentationModel, SegSpec, get_seg_spec, seg_cost
from .base import Reduce, Task, autocast_context, to_device
from .seg_metrics import ConfusionMatrix

CITYSCAPES_FRAME = (1024, 2048)  # every Cityscapes image (height, width)


def resize_logits(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``logits`` (N, K, h, w) bilinearly resized to the masks' ``size`` (a no-op when they match)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


class SegmentationTask(Task):
    """One class id per pixel (255 ignored); the model is a
    :class:`~mobilenetv3.segmentation.SegmentationModel`."""

    name = "segmentation"
    primary_metric = "miou"
    eval_metrics = ("loss", "miou", "pixel_acc")
    step_keys = ("correct", "pixels")

    def __init__(self, num_classes: int, *, in_channels: int | None = None, classes: Sequence[str] | None = None,
                 ignore_index: int = IGNORE_INDEX) -> None:
        if classes is not None and len(classes) != num_classes:
            raise ValueError(f"{len(classes)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.classes = list(classes) if classes is not None else None
        self.ignore_index = ignore_index

    @classmethod
    def for_run(cls, data_info: Mapping[str, Any], options: Mapping[str, Any]) -> SegmentationTask:
        if options.get("qat"):
            raise ValueError("quantisation-aware training (--qat) is not available for segmentation yet")
        if options.get("label_smoothing"):
            raise ValueError("label smoothing is not used by the segmentation task; leave --label-smoothing out")
        classes = list(data_info["classes"])
        return cls(len(classes), in_channels=int(data_info["channels"]), classes=classes)

    # -- the architecture and the data
    @classmethod
    def named_spec(cls, name: str, width_mult: float) -> SegSpec:
        return get_seg_spec(name, width_mult)

    @classmethod
    def load_spec(cls, path: Any) -> SegSpec:
        return SegSpec.load(path)

    @classmethod
    def spec_model(cls, spec: SegSpec) -> nn.Module:
        return SegmentationModel(spec)

    @classmethod
    def spec_cost(cls, spec: SegSpec, size: tuple[int, int]) -> Cost:
        return seg_cost(spec, size)

    @classmethod
    def default_input_size(cls, spec: SegSpec) -> tuple[int, int]:
        """Cityscapes' frame, 1024x2048: the size of Table 7 (and of the paper's latency at half, 512x1024)."""
        return CITYSCAPES_FRAME

    @classmethod
    def spec_resolution(cls, spec: SegSpec) -> int:
        return spec.backbone.resolution

    @classmethod
    def eval_input_size(cls, data_info: Mapping[str, Any]) -> tuple[int, int]:
        """Evaluation takes whole images: a scenes run's canvas, Cityscapes' frames (:data:`CITYSCAPES_FRAME`)."""
        kind, argument = parse_seg_name(data_info["name"])
        return canvas_size(argument) if kind == "scenes" else CITYSCAPES_FRAME

    @classmethod
    def with_run_options(cls, spec: SegSpec, changes: Mapping[str, Any]) -> SegSpec:
        return spec.replace(backbone=spec.backbone.replace(**changes)) if changes else spec

    @classmethod
    def load_data(cls, options: Mapping[str, Any], val_split: str) -> tuple[Any, Any]:
        o = options
        if o.get("holdout"):
            raise ValueError("--holdout applies to classification data; the scene data has its own val split "
                             "(drawn from Fashion-MNIST's training images), Cityscapes its val folder")
        common = dict(channels=o["channels"], data_dir=o["data_dir"])
        train_set = load_segmentation_dataset(o["data"], "train", train=True, crop=o["resolution"],
                                              scale=o["crop_scale"], hflip=o["hflip"], **common)
        val_set = load_segmentation_dataset(o["data"], val_split, train=False, mean=train_set.mean,
                                            std=train_set.std, **common)
        return train_set, val_set

    @classmethod
    def eval_data(cls, data_info: Mapping[str, Any], split: str, *, data: str | None = None,
                  data_dir: str | None = None) -> Any:
        d = data_info
        return load_segmentation_dataset(data or d["name"], split, train=False, channels=d["channels"],
                                         mean=tuple(d["mean"]), std=tuple(d["std"]),
                                         data_dir=data_dir if data_dir is not None else d.get("data_dir"))

    # -- the model
    def adapt_spec(self, spec: SegSpec) -> SegSpec:
        if not isinstance(spec, SegSpec):
            raise ValueError(f"the segmentation task trains segmentation networks (--model lraspp_..., raspp_..., "
                             f"or a SegSpec file); {getattr(spec, 'name', spec)!r} is a classifier")
        backbone = spec.backbone
        if self.in_channels is not None:
            backbone = backbone.replace(in_channels=self.in_channels)
        return spec.replace(num_classes=self.num_classes, backbone=backbone)

    def check_spec(self, spec: SegSpec) -> None:
        if (spec.backbone.in_channels, spec.num_classes) != (self.in_channels, self.num_classes):
            raise ValueError(f"the data has {self.in_channels} channel(s) and {self.num_classes} classes; the run's "
                             f"spec {spec.backbone.in_channels} and {spec.num_classes}")

    def build_model(self, spec: SegSpec) -> nn.Module:
        return SegmentationModel(spec)

    def collate(self, samples: list[Any]) -> Any:
        return collate(samples)

    # -- training
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = resize_logits(outputs.float(), targets.shape[-2:])
        return F.cross_entropy(logits, targets, ignore_index=self.ignore_index)

    def step_stats(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        predicted = resize_logits(outputs.detach(), targets.shape[-2:]).argmax(dim=1)
        labelled = targets != self.ignore_index
        return {"correct": ((predicted == targets) & labelled).sum(), "pixels": labelled.sum()}

    def train_metrics(self, totals: Mapping[str, float], count: int) -> dict[str, float]:
        pixels = totals["pixels"]
        return {"train_pixel_acc": 100.0 * totals["correct"] / pixels if pixels else float("nan")}

    def describe(self, record: Mapping[str, Any]) -> str:
        ema = f", EMA mIoU {record['ema_val_miou']:.2f}%" if "ema_val_miou" in record else ""
        return (f"pixel acc {record['train_pixel_acc']:.2f}%, val mIoU {record['val_miou']:.2f}% pixel acc "
                f"{record['val_pixel_acc']:.2f}%{ema}")

    # -- evaluation
    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, *, device: torch.device | str = "cpu",
                 channels_last: bool = False, amp: bool = False, reduce: Reduce | None = None) -> dict[str, Any]:
        """mIoU, per-class IoU, pixel accuracy (%) and mean cross-entropy of ``model`` over ``loader``'s
        ``(images, masks)``; under DDP ``reduce`` sums the confusion matrix and the loss over processes."""
        device = torch.device(device)
        was_training = model.training
        model.eval()
        confusion = ConfusionMatrix(self.num_classes, ignore_index=self.ignore_index, device=device)
        sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum over labelled pixels, images
        try:
            for batch in loader:
                if batch is None:
                    continue
                x, y = batch
                x, y = to_device(x, device, channels_last), y.to(device)
                with autocast_context(device, amp):
                    logits = model(x)
                logits = resize_logits(logits.float(), y.shape[-2:])
                sums[0] += F.cross_entropy(logits, y, ignore_index=self.ignore_index, reduction="sum").double()
                sums[1] += len(y)
                confusion.update(logits.argmax(dim=1), y)
        finally:
            model.train(was_training)
        confusion.reduce(reduce)
        if reduce is not None:
            reduce(sums)
        pixels = confusion.count()
        per_class = confusion.iou()
        return {
            "count": int(sums[1]),
            "pixels": pixels,
            "loss": float(sums[0]) / pixels if pixels else float("nan"),
            "miou": confusion.miou(),
            "pixel_acc": confusion.pixel_accuracy(),
            "per_class": dict(zip(self.classes, per_class, strict=True)) if self.classes else per_class,
            "confusion": confusion.matrix.cpu().tolist(),
        }
