"""SSD's training targets and losses.

Targets (:func:`build_targets`): anchors matched by :func:`~.matching.match_anchors`; a positive anchor's label is
its box's class (1 .. num_classes - 1), a background anchor's 0, an ignored anchor's -1; its regression target is
the box encoded against it (:class:`~.boxes.BoxCoder`).

Losses (:func:`detection_loss`), both normalised by the number of positive anchors in the batch (at least 1), as
the TF object-detection API (``normalize_loss_by_num_matches``) and torchvision do:

- box: smooth L1 (Huber, beta 1) summed over the four coordinates of every positive anchor;
- class, ``"softmax"`` (SSD's): cross-entropy over all ``num_classes`` outputs (background included) for every
  positive anchor and the hardest background anchors: per image the ``neg_pos_ratio`` (3) x positives anchors with
  the largest cross-entropy, at least ``min_negatives`` (TF's ``min_negatives_per_image``; 0 = torchvision's rule,
  under which an image without boxes adds nothing), at most all of them;
- class, ``"sigmoid"`` (the option): sigmoid focal loss (``alpha`` 0.25, ``gamma`` 2) on ``num_classes - 1``
  foreground outputs, over every anchor that is not ignored; no mining.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .boxes import BoxCoder
from .matching import IGNORED, match_anchors

CLASSIFICATIONS = ("softmax", "sigmoid")


@dataclass(frozen=True)
class LossOptions:
    """How targets are made and losses weighed (module docstring)."""

    positive_threshold: float = 0.5
    negative_threshold: float | None = None
    neg_pos_ratio: float = 3.0
    min_negatives: int = 0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    box_weight: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.positive_threshold <= 1.0:
            raise ValueError(f"positive_threshold must be in (0, 1], got {self.positive_threshold}")
        if self.neg_pos_ratio < 0 or self.min_negatives < 0:
            raise ValueError("neg_pos_ratio and min_negatives must be >= 0")
        if not 0.0 <= self.focal_alpha <= 1.0 or self.focal_gamma < 0:
            raise ValueError("focal_alpha must be in [0, 1] and focal_gamma >= 0")


def build_targets(gt_boxes: list[torch.Tensor], gt_labels: list[torch.Tensor], anchors: torch.Tensor,
                  coder: BoxCoder, options: LossOptions = LossOptions()) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image xyxy boxes ``(G_i, 4)`` and labels ``(G_i,)`` (1-based classes) in the anchors' units ->
    labels ``(B, A)`` (0 background, -1 ignored) and regression targets ``(B, A, 4)`` (zeros where not positive)."""
    labels, targets = [], []
    for boxes, classes in zip(gt_boxes, gt_labels, strict=True):
        if boxes.shape[0] != classes.shape[0]:
            raise ValueError(f"{boxes.shape[0]} boxes but {classes.shape[0]} labels")
        matches = match_anchors(boxes, anchors, options.positive_threshold, options.negative_threshold)
        positive = matches >= 0
        index = matches.clamp(min=0)
        label = torch.zeros_like(matches)
        if boxes.shape[0]:
            label = torch.where(positive, classes.to(torch.int64)[index], label)
            target = coder.encode(boxes[index], anchors)
            target = torch.where(positive[:, None], target, torch.zeros_like(target))
        else:
            target = torch.zeros_like(anchors)
        label[matches == IGNORED] = -1
        labels.append(label)
        targets.append(target)
    return torch.stack(labels), torch.stack(targets)


def hard_negatives(negative_loss: torch.Tensor, labels: torch.Tensor, neg_pos_ratio: float,
                   min_negatives: int = 0) -> torch.Tensor:
    """``(B, A)`` mask of the background anchors (label 0) with the largest ``negative_loss``: per image
    ``max(neg_pos_ratio x positives, min_negatives)`` of them, at most all."""
    negative = labels == 0
    num_pos = (labels > 0).sum(1)
    wanted = torch.maximum((num_pos * neg_pos_ratio).floor().long(), torch.full_like(num_pos, min_negatives))
    ranked = torch.where(negative, negative_loss, torch.full_like(negative_loss, -float("inf")))
    order = ranked.argsort(dim=1, descending=True, stable=True)
    rank = order.argsort(dim=1)
    return negative & (rank < wanted[:, None])


def sigmoid_focal(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Element-wise sigmoid focal loss (Lin et al.): ``alpha_t (1 - p_t)^gamma BCE``."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * (1 - p_t) ** gamma * ce


def detection_loss(cls_logits: torch.Tensor, box_regression: torch.Tensor, labels: torch.Tensor,
                   box_targets: torch.Tensor, classification: str = "softmax",
                   options: LossOptions = LossOptions()) -> dict[str, torch.Tensor]:
    """``{"loss", "classification", "box", "num_positive"}`` for head outputs ``(B, A, slots)`` / ``(B, A, 4)``
    and targets from :func:`build_targets` (module docstring)."""
    if classification not in CLASSIFICATIONS:
        raise ValueError(f"unknown classification {classification!r} (choose from {', '.join(CLASSIFICATIONS)})")
    positive = labels > 0
    num_pos = positive.sum()
    norm = num_pos.clamp(min=1).to(cls_logits.dtype)
    box = F.smooth_l1_loss(box_regression[positive], box_targets[positive], beta=1.0, reduction="sum")
    if classification == "softmax":
        ce = F.cross_entropy(cls_logits.transpose(1, 2), labels.clamp(min=0), reduction="none")  # (B, A)
        chosen = positive | hard_negatives(ce.detach(), labels, options.neg_pos_ratio, options.min_negatives)
        cls = ce[chosen].sum()
    else:
        onehot = F.one_hot(labels.clamp(min=0), cls_logits.shape[-1] + 1)[..., 1:].to(cls_logits.dtype)
        focal = sigmoid_focal(cls_logits, onehot, options.focal_alpha, options.focal_gamma)
        cls = focal[labels >= 0].sum()
    cls, box = cls / norm, box / norm
    return {"loss": cls + options.box_weight * box, "classification": cls, "box": box, "num_positive": num_pos}
