"""Image classification: MobileNetV3's classifier head, cross-entropy with label smoothing, top-1/top-5 accuracy.

Accuracies are percentages (0-100); ``per_class`` is each class's recall (the percentage of its images classified
correctly); ``confusion[true][predicted]`` counts images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import collate, load_dataset
from ..model import MobileNetV3
from ..spec import ArchSpec
from .base import Reduce, Task, autocast_context, to_device


class ClassificationTask(Task):
    """One label per image; the model is :class:`~mobilenetv3.model.MobileNetV3` with ``num_classes`` outputs."""

    name = "classification"
    primary_metric = "top1"
    eval_metrics = ("loss", "top1", "top5")
    step_keys = ("correct",)

    def __init__(self, num_classes: int, *, in_channels: int | None = None, label_smoothing: float = 0.0,
                 classes: Sequence[str] | None = None) -> None:
        if classes is not None and len(classes) != num_classes:
            raise ValueError(f"{len(classes)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.label_smoothing = label_smoothing
        self.classes = list(classes) if classes is not None else None

    @classmethod
    def for_run(cls, data_info: Mapping[str, Any], options: Mapping[str, Any]) -> ClassificationTask:
        classes = list(data_info["classes"])
        return cls(len(classes), in_channels=int(data_info["channels"]), classes=classes,
                   label_smoothing=options.get("label_smoothing") or 0.0)

    # -- the data
    @classmethod
    def load_data(cls, options: Mapping[str, Any], val_split: str) -> tuple[Any, Any]:
        o = options
        common = dict(resolution=o["resolution"], data_dir=o["data_dir"], channels=o["channels"],
                      on_corrupt=o["on_corrupt"], holdout=o["holdout"])
        train_set = load_dataset(o["data"], "train", train=True, scale=o["crop_scale"], hflip=o["hflip"],
                                 color_jitter=o["color_jitter"], random_erase=o["random_erase"], **common)
        val_set = load_dataset(o["data"], val_split, train=False, crop_fraction=o["crop_fraction"],
                               mean=train_set.mean, std=train_set.std, **common)
        return train_set, val_set

    @classmethod
    def eval_data(cls, data_info: Mapping[str, Any], split: str, *, data: str | None = None,
                  data_dir: str | None = None) -> Any:
        d = data_info
        return load_dataset(data or d["name"], split, resolution=d["resolution"], train=False,
                            data_dir=data_dir if data_dir is not None else d.get("data_dir"),
                            channels=d["channels"], mean=tuple(d["mean"]), std=tuple(d["std"]),
                            crop_fraction=d.get("crop_fraction"), holdout=d.get("holdout") or 0)

    # -- the model
    def adapt_spec(self, spec: ArchSpec) -> ArchSpec:
        changes: dict[str, Any] = {"num_classes": self.num_classes}
        if self.in_channels is not None:
            changes["in_channels"] = self.in_channels
        return spec.replace(**changes)

    def check_spec(self, spec: ArchSpec) -> None:
        if (spec.in_channels, spec.num_classes) != (self.in_channels, self.num_classes):
            raise ValueError(f"the data has {self.in_channels} channel(s) and {self.num_classes} classes; the run's "
                             f"spec {spec.in_channels} and {spec.num_classes}")

    def build_model(self, spec: ArchSpec) -> nn.Module:
        return MobileNetV3(spec)

    @classmethod
    def run_model(cls, spec_path: Any, data_info: Mapping[str, Any], options: Mapping[str, Any]) -> nn.Module:
        """The spec alone makes a classifier: a run whose config records no classes (assembled by hand, or
        older) still loads."""
        return MobileNetV3(cls.load_spec(spec_path))

    def collate(self, samples: list[Any]) -> Any:
        return collate(samples)

    # -- training
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), targets, label_smoothing=self.label_smoothing)

    def step_stats(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"correct": (outputs.detach().argmax(dim=1) == targets).sum()}

    def train_metrics(self, totals: Mapping[str, float], count: int) -> dict[str, float]:
        return {"train_acc": 100.0 * totals["correct"] / count}

    def describe(self, record: Mapping[str, Any]) -> str:
        ema = f", EMA top-1 {record['ema_val_top1']:.2f}%" if "ema_val_top1" in record else ""
        return (f"acc {record['train_acc']:.2f}%, val top-1 {record['val_top1']:.2f}% top-5 "
                f"{record['val_top5']:.2f}%{ema}")

    # -- evaluation
    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, *, device: torch.device | str = "cpu",
                 channels_last: bool = False, amp: bool = False, reduce: Reduce | None = None) -> dict[str, Any]:
        """Top-1/top-5 accuracy (%), mean cross-entropy, per-class accuracy (a list, or a dict by class name when
        the task knows the names) and the confusion matrix of ``model``.

        ``loader`` yields ``(images, labels)`` (``None`` batches, from skipped images, are ignored). Under DDP each
        process evaluates its shard and ``reduce`` sums the counts over processes.
        """
        num_classes = self.num_classes
        device = torch.device(device)
        was_training = model.training
        model.eval()
        confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
        sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, top-5 hits
        k = min(5, num_classes)
        try:
            for batch in loader:
                if batch is None:
                    continue
                x, y = batch
                x, y = to_device(x, device, channels_last), y.to(device)
                with autocast_context(device, amp):
                    logits = model(x)
                logits = logits.float()
                sums[0] += F.cross_entropy(logits, y, reduction="sum").double()
                sums[1] += (logits.topk(k, dim=1).indices == y[:, None]).any(dim=1).sum()
                confusion += torch.bincount(y * num_classes + logits.argmax(dim=1), minlength=num_classes ** 2)
        finally:
            model.train(was_training)
        if reduce is not None:
            reduce(confusion)
            reduce(sums)
        confusion = confusion.view(num_classes, num_classes).cpu()
        count = int(confusion.sum())
        correct = int(confusion.diag().sum())
        per_class_total = confusion.sum(dim=1)
        per_class: list[float | None] = [
            100.0 * int(confusion[i, i]) / int(per_class_total[i]) if int(per_class_total[i]) else None
            for i in range(num_classes)]
        return {
            "count": count,
            "loss": float(sums[0]) / count if count else float("nan"),
            "top1": 100.0 * correct / count if count else float("nan"),
            "top5": 100.0 * float(sums[1]) / count if count else float("nan"),
            "per_class": dict(zip(self.classes, per_class, strict=True)) if self.classes else per_class,
            "confusion": confusion.tolist(),
        }
