"""Segmentation metrics from one confusion matrix accumulated over a split: IoU per class, mIoU, pixel accuracy.

``matrix[true][predicted]`` counts pixels; pixels whose true label is the ignore index (255) are left out. The
matrix is a plain ``int64`` tensor, so a distributed evaluation sums it over processes with one all-reduce and
every metric follows from the sum (averaging per-process mIoUs would be wrong).

IoU of class c = TP / (TP + FP + FN) = ``matrix[c, c] / (row c + column c - matrix[c, c])``; a class with no
pixels in the truth and none predicted has no IoU (``None``) and is left out of the mean, as in the Cityscapes
and PASCAL VOC evaluations. Pixel accuracy = the trace over the total. Figures are percentages (0-100).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

IGNORE_INDEX = 255


class ConfusionMatrix:
    """A ``num_classes x num_classes`` pixel count, ``update``-d with batches of predictions and labels."""

    def __init__(self, num_classes: int, *, ignore_index: int = IGNORE_INDEX,
                 device: torch.device | str = "cpu") -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, predicted: torch.Tensor, target: torch.Tensor) -> None:
        """Count ``predicted`` class ids against ``target`` labels (same shape; ignored labels skipped). A label
        outside ``0..num_classes-1`` other than the ignore index is a ``ValueError``."""
        if predicted.shape != target.shape:
            raise ValueError(f"predictions {tuple(predicted.shape)} and labels {tuple(target.shape)} differ in shape")
        keep = target != self.ignore_index
        t, p = target[keep].to(torch.int64), predicted[keep].to(torch.int64)
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_classes):
            bad = sorted(set(t[(t < 0) | (t >= self.num_classes)].unique().tolist()))
            raise ValueError(f"label(s) {bad[:8]} outside 0..{self.num_classes - 1} (ignore index "
                             f"{self.ignore_index})")
        n = self.num_classes
        self.matrix += torch.bincount(t * n + p, minlength=n * n).view(n, n)

    def reduce(self, reduce: Callable[[torch.Tensor], Any] | None) -> None:
        """Sum the matrix over processes in place (``reduce`` all-reduces a tensor; ``None``: one process)."""
        if reduce is not None:
            reduce(self.matrix)

    def iou(self) -> list[float | None]:
        """IoU per class, in percent (``None``: a class absent from both the truth and the predictions)."""
        return class_iou(self.matrix)

    def miou(self) -> float:
        return mean_iou(self.iou())

    def pixel_accuracy(self) -> float:
        total = int(self.matrix.sum())
        return 100.0 * int(self.matrix.diag().sum()) / total if total else float("nan")

    def count(self) -> int:
        """Labelled pixels counted."""
        return int(self.matrix.sum())


def class_iou(matrix: torch.Tensor) -> list[float | None]:
    """IoU per class (percent) of a confusion matrix ``[true][predicted]``."""
    m = matrix.to(torch.float64).cpu()
    tp = m.diag()
    union = m.sum(dim=0) + m.sum(dim=1) - tp
    return [100.0 * float(tp[c] / union[c]) if float(union[c]) > 0 else None for c in range(len(tp))]


def mean_iou(ious: Sequence[float | None]) -> float:
    """The mean of the IoUs that exist (``nan`` when none does)."""
    present = [v for v in ious if v is not None]
    return sum(present) / len(present) if present else float("nan")
