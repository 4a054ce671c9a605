"""Matching anchors to ground-truth boxes, SSD's way (TF's ``ArgMaxMatcher`` with ``force_match_for_each_row``,
torchvision's ``SSDMatcher``).

Each anchor takes the ground truth it overlaps most when that IoU is at least ``positive_threshold``; anchors
below ``negative_threshold`` are background; anchors in between are ignored (with the usual SSD setting, both
thresholds 0.5, nothing is ignored). Then every ground truth is forced onto its best anchor (the first one on
ties), whatever the IoU, so that no box goes without an anchor; when two boxes share a best anchor the later box
keeps it (torchvision's order). Boxes with zero area match nothing (their IoU is 0) and are never forced.
"""

from __future__ import annotations

import torch

from .boxes import box_iou, cxcywh_to_xyxy

BACKGROUND = -1
IGNORED = -2


def match_anchors(gt_boxes: torch.Tensor, anchors: torch.Tensor, positive_threshold: float = 0.5,
                  negative_threshold: float | None = None) -> torch.Tensor:
    """For ``(G, 4)`` xyxy ground truth and ``(A, 4)`` cxcywh anchors (same units), an ``(A,)`` int64 tensor: the
    matched box's index, :data:`BACKGROUND` (-1) or :data:`IGNORED` (-2)."""
    if negative_threshold is None:
        negative_threshold = positive_threshold
    if negative_threshold > positive_threshold:
        raise ValueError(f"negative_threshold {negative_threshold} is above positive_threshold {positive_threshold}")
    num_anchors = anchors.shape[0]
    matches = torch.full((num_anchors,), BACKGROUND, dtype=torch.int64, device=anchors.device)
    if gt_boxes.numel() == 0:
        return matches
    iou = box_iou(gt_boxes, cxcywh_to_xyxy(anchors))  # (G, A)
    best_iou, best_gt = iou.max(0)
    matches = torch.where(best_iou >= positive_threshold, best_gt, matches)
    matches = torch.where((best_iou >= negative_threshold) & (best_iou < positive_threshold),
                          torch.full_like(matches, IGNORED), matches)
    gt_best = iou.argmax(1)  # first maximum: each box's best anchor
    for g in range(gt_boxes.shape[0]):  # in order, so that a later box wins a shared best anchor
        if iou[g, gt_best[g]] > 0:
            matches[gt_best[g]] = g
    return matches
