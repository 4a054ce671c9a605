"""Joint image/box transforms for detection, in torch only.

An item is an image (``uint8`` or ``[0, 1]`` float, ``C x H x W``) and a target dict holding at least ``boxes``
(``(G, 4)`` float xyxy in pixels, ``x2``/``y2`` exclusive), ``labels`` (``(G,)`` int64) and optionally ``area``
and ``iscrowd`` (``(G,)``); every per-box entry is kept, cut and reordered with the boxes. The image comes out
normalised; the target gains ``size`` (the output height and width) and keeps ``orig_size`` (set by the dataset).

- :class:`DetEvalTransform`: the whole image, resized to ``size`` when one is given (SSD's fixed square input),
  boxes and areas scaled alike, so that detections can be mapped back exactly (:func:`to_original`).
- :class:`DetTrainTransform`: the image resized to ``crop`` times a random factor (SSD's resize to its fixed input,
  as evaluation does, then a zoom in or out), padded with the mean colour to ``crop`` where smaller, a random
  ``crop`` window (boxes shifted and clipped to it; a box keeping less than ``min_kept`` of its area is dropped),
  a horizontal flip with probability ``hflip``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .seg_transforms import SegEvalTransform
from .transforms import normalize, resize

PER_BOX = ("boxes", "labels", "area", "iscrowd")


def pair(value: Any, name: str) -> tuple[int, int]:
    size = tuple(int(v) for v in (value if isinstance(value, (tuple, list)) else (value, value)))
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"{name} must be (height, width) >= 1, got {value}")
    return size


def select(target: dict[str, Any], keep: torch.Tensor) -> dict[str, Any]:
    """``target`` with only the boxes where ``keep`` is true (every per-box entry alike)."""
    return {k: (v[keep] if k in PER_BOX else v) for k, v in target.items()}


def scale_target(target: dict[str, Any], sy: float, sx: float) -> dict[str, Any]:
    out = dict(target)
    out["boxes"] = target["boxes"] * torch.tensor([sx, sy, sx, sy], dtype=torch.float32)
    if "area" in target:
        out["area"] = target["area"] * (sx * sy)
    return out


def to_original(boxes: torch.Tensor, size: Any, orig_size: Any) -> torch.Tensor:
    """xyxy ``boxes`` in an evaluation input of ``size`` (height, width) mapped back to the original image."""
    (h, w), (oh, ow) = (int(v) for v in size), (int(v) for v in orig_size)
    return boxes * torch.tensor([ow / w, oh / h, ow / w, oh / h], dtype=boxes.dtype, device=boxes.device)


@dataclass(frozen=True)
class DetEvalTransform(SegEvalTransform):
    """Evaluation: the image resized to ``size`` (height, width) if given, else kept; normalised."""

    size: Any = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.size is not None:
            object.__setattr__(self, "size", pair(self.size, "size"))

    def __call__(self, img: torch.Tensor, target: dict[str, Any],
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        img = self.prepare(img)
        h, w = img.shape[-2:]
        if self.size is not None and tuple(self.size) != (h, w):
            img = resize(img, self.size).clamp_(0.0, 1.0)
            target = scale_target(target, self.size[0] / h, self.size[1] / w)
        return self.finish_pair(img, target)

    def finish_pair(self, img: torch.Tensor, target: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        target = dict(target, size=torch.tensor(img.shape[-2:], dtype=torch.int64))
        target.setdefault("orig_size", target["size"].clone())
        return normalize(img, self.stat("mean"), self.stat("std")).contiguous(), target

    def stat(self, name: str) -> torch.Tensor:
        """``mean`` or ``std`` as a ``C x 1 x 1`` tensor."""
        return torch.tensor(getattr(self, name), dtype=torch.float32).view(-1, 1, 1)


@dataclass(frozen=True)
class DetTrainTransform(DetEvalTransform):
    """Training: resize to ``crop`` x a random factor in ``scale``, pad to ``crop`` with the mean colour, random
    ``crop`` window, flip."""

    crop: Any = (320, 320)
    scale: tuple[float, float] = (0.5, 1.5)
    hflip: float = 0.5
    min_kept: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "crop", pair(self.crop, "crop"))
        lo, hi = (float(v) for v in self.scale)
        if not 0 < lo <= hi:
            raise ValueError(f"scale must be (low, high) factors with 0 < low <= high, got {self.scale}")
        if not 0 <= self.hflip <= 1 or not 0 <= self.min_kept <= 1:
            raise ValueError(f"hflip and min_kept must be in [0, 1], got {self.hflip}, {self.min_kept}")
        object.__setattr__(self, "scale", (lo, hi))

    def __call__(self, img: torch.Tensor, target: dict[str, Any],
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        img = self.prepare(img)
        lo, hi = self.scale
        s = lo + (hi - lo) * float(torch.rand((), generator=generator))
        h, w = img.shape[-2:]
        ch, cw = self.crop
        size = (max(1, round(ch * s)), max(1, round(cw * s)))  # the crop's size (SSD's fixed input) times s
        img = resize(img, size).clamp_(0.0, 1.0)
        target = scale_target(target, size[0] / h, size[1] / w)
        ph, pw = max(0, ch - size[0]), max(0, cw - size[1])
        if ph or pw:  # pad right and bottom with the mean colour (zero once normalised)
            mean = self.stat("mean")
            img = F.pad(img - mean, (0, pw, 0, ph)) + mean
        top = int(torch.randint(img.shape[-2] - ch + 1, (), generator=generator))
        left = int(torch.randint(img.shape[-1] - cw + 1, (), generator=generator))
        img = img[:, top:top + ch, left:left + cw]
        target = self.crop_boxes(target, top, left)
        if self.hflip and float(torch.rand((), generator=generator)) < self.hflip:
            img = img.flip(-1)
            boxes = target["boxes"].clone()
            boxes[:, 0], boxes[:, 2] = cw - target["boxes"][:, 2], cw - target["boxes"][:, 0]
            target = dict(target, boxes=boxes)
        return self.finish_pair(img, target)

    def crop_boxes(self, target: dict[str, Any], top: int, left: int) -> dict[str, Any]:
        """Boxes shifted into the crop window and clipped to it; those keeping under ``min_kept`` of their area
        (or none) dropped; ``area`` scaled by the kept fraction."""
        ch, cw = self.crop
        boxes = target["boxes"] - torch.tensor([left, top, left, top], dtype=torch.float32)
        clipped = torch.stack([boxes[:, 0].clamp(0, cw), boxes[:, 1].clamp(0, ch),
                               boxes[:, 2].clamp(0, cw), boxes[:, 3].clamp(0, ch)], 1)
        before = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        after = (clipped[:, 2] - clipped[:, 0]).clamp(min=0) * (clipped[:, 3] - clipped[:, 1]).clamp(min=0)
        kept = after / before.clamp(min=1e-6)
        keep = (after > 0) & (kept >= self.min_kept)
        out = dict(target, boxes=clipped)
        if "area" in target:
            out["area"] = target["area"] * kept.clamp(max=1.0)
        return select(out, keep)
