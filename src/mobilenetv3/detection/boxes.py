"""Box arithmetic: corner and centre forms, pairwise IoU, and the SSD box coder.

Boxes are ``(x1, y1, x2, y2)`` ("xyxy", corners) or ``(cx, cy, w, h)`` ("cxcywh"). Anchors are cxcywh fractions of
the image; ground truth and detections in the model's API are xyxy.

The box coder is Faster R-CNN's, used by SSD in both the TF object-detection API (``FasterRcnnBoxCoder`` with
``scale_factors [10, 10, 5, 5]``, in (y, x, h, w) order) and torchvision (``BoxCoder(weights=(10, 10, 5, 5))``, in
(x, y, w, h) order, the order used here)::

    t_x = wx (cx - cx_a) / w_a,   t_y = wy (cy - cy_a) / h_a,   t_w = ww log(w / w_a),   t_h = wh log(h / h_a)

Decoding clamps ``t_w / ww`` and ``t_h / wh`` at ``log(1000 / 16)`` before the exponential, as torchvision does, so
that an untrained head cannot overflow; real boxes never come near it.
"""

from __future__ import annotations

import math

import torch

BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
SIZE_CLAMP = math.log(1000.0 / 16)


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], -1)


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every box of ``a`` (``(..., N, 4)`` xyxy) with every box of ``b`` (``(..., M, 4)``):
    ``(..., N, M)``. A pair with an empty box (zero area) or an empty union has IoU 0."""
    area_a, area_b = box_area(a), box_area(b)
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[..., :, None] + area_b[..., None, :] - inter
    valid = (area_a[..., :, None] > 0) & (area_b[..., None, :] > 0) & (union > 0)
    return torch.where(valid, inter / torch.where(valid, union, torch.ones_like(union)), torch.zeros_like(inter))


class BoxCoder:
    """Encode boxes against anchors and decode regressions back (module docstring). Anchors are cxcywh."""

    def __init__(self, weights: tuple[float, float, float, float] = BOX_WEIGHTS) -> None:
        if len(weights) != 4 or any(not w > 0 for w in weights):
            raise ValueError(f"box coder weights must be four positive numbers, got {weights!r}")
        self.weights = tuple(float(w) for w in weights)

    def encode(self, boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Regression targets ``(..., 4)`` for xyxy ``boxes`` against cxcywh ``anchors`` (broadcast)."""
        wx, wy, ww, wh = self.weights
        b = xyxy_to_cxcywh(boxes)
        return torch.stack([
            wx * (b[..., 0] - anchors[..., 0]) / anchors[..., 2],
            wy * (b[..., 1] - anchors[..., 1]) / anchors[..., 3],
            ww * torch.log(b[..., 2] / anchors[..., 2]),
            wh * torch.log(b[..., 3] / anchors[..., 3]),
        ], -1)

    def decode(self, codes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """xyxy boxes from regressions ``(..., 4)`` and cxcywh ``anchors`` (broadcast)."""
        wx, wy, ww, wh = self.weights
        cx = codes[..., 0] / wx * anchors[..., 2] + anchors[..., 0]
        cy = codes[..., 1] / wy * anchors[..., 3] + anchors[..., 1]
        w = torch.exp((codes[..., 2] / ww).clamp(max=SIZE_CLAMP)) * anchors[..., 2]
        h = torch.exp((codes[..., 3] / wh).clamp(max=SIZE_CLAMP)) * anchors[..., 3]
        return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
