"""SSD anchors ("default boxes") in the two common styles, as data (:class:`AnchorSpec`) and as tensors.

Both styles spread ``num_levels`` scales linearly from ``min_scale`` to ``max_scale`` (level k:
``s_k = min + (max - min) k / (L - 1)``, and ``s_L = 1``), give each anchor a width ``s sqrt(ar)`` and a height
``s / sqrt(ar)`` as fractions of the image width and height, and centre the anchors of a ``H x W`` map at
``((x + 0.5) / W, (y + 0.5) / H)``. Anchors are ordered row by row, then column, then anchor (the order of the
heads' outputs).

- ``"tf"``: the TF object-detection API's ``ssd_anchor_generator`` (the paper's SSDLite configs:
  ``min_scale 0.2, max_scale 0.95, aspect_ratios 1, 2, 0.5, 3, 0.3333``). With ``reduce_lowest`` the lowest level
  has 3 anchors, ``(lowest_scale=0.1, 1)``, ``(s_0, 2)``, ``(s_0, 0.5)``; every other level has one anchor per
  aspect ratio at ``s_k`` and, with ``interpolated``, one more at ``sqrt(s_k s_{k+1})`` with aspect ratio 1:
  6 per level. Not clipped.
- ``"torchvision"``: torchvision's ``DefaultBoxGenerator`` (``ssdlite320_mobilenet_v3_large``:
  ``[[2, 3]] * 6``, 0.2 to 0.95): per level ``(s_k, s_k)``, ``(s'_k, s'_k)`` with ``s'_k = sqrt(s_k s_{k+1})``,
  then for each aspect ratio ``r`` the pair ``(s_k sqrt(r), s_k / sqrt(r))`` and its transpose: 6 per level.
  Widths and heights are clipped to [0, 1] (``clip``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any

import torch

from ..spec import SpecError

ANCHOR_STYLES = ("tf", "torchvision")
STYLE_DEFAULTS: dict[str, dict[str, Any]] = {
    "tf": {"aspect_ratios": (1.0, 2.0, 0.5, 3.0, 0.3333), "reduce_lowest": True, "clip": False},
    "torchvision": {"aspect_ratios": (2.0, 3.0), "reduce_lowest": False, "clip": True},
}


@dataclass(frozen=True)
class AnchorSpec:
    """Anchor settings (module docstring). ``aspect_ratios``, ``reduce_lowest`` and ``clip`` default by style."""

    style: str = "tf"
    min_scale: float = 0.2
    max_scale: float = 0.95
    aspect_ratios: tuple[float, ...] | None = None
    reduce_lowest: bool | None = None
    lowest_scale: float = 0.1
    interpolated: bool = True
    clip: bool | None = None

    def __post_init__(self) -> None:
        if self.style not in ANCHOR_STYLES:
            raise SpecError(f"anchors: unknown style {self.style!r} (choose from {', '.join(ANCHOR_STYLES)})")
        for name, value in STYLE_DEFAULTS[self.style].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if isinstance(self.aspect_ratios, list):
            object.__setattr__(self, "aspect_ratios", tuple(self.aspect_ratios))
        validate_anchors(self)

    def scales(self, num_levels: int) -> list[float]:
        """``s_0 .. s_{L-1}`` and the closing 1.0 (``L + 1`` values)."""
        if num_levels == 1:
            return [self.min_scale, 1.0]
        step = (self.max_scale - self.min_scale) / (num_levels - 1)
        return [self.min_scale + step * k for k in range(num_levels)] + [1.0]

    def level_sizes(self, num_levels: int) -> list[list[tuple[float, float]]]:
        """Per level, the (width, height) of each anchor as fractions of the image, in head-output order."""
        s = self.scales(num_levels)
        levels = []
        for k in range(num_levels):
            between = math.sqrt(s[k] * s[k + 1])
            if self.style == "tf":
                if k == 0 and self.reduce_lowest:
                    specs = [(self.lowest_scale, 1.0), (s[0], 2.0), (s[0], 0.5)]
                else:
                    specs = [(s[k], ar) for ar in self.aspect_ratios]
                    if self.interpolated:
                        specs.append((between, 1.0))
                sizes = [(scale * math.sqrt(ar), scale / math.sqrt(ar)) for scale, ar in specs]
            else:
                sizes = [(s[k], s[k])] + ([(between, between)] if self.interpolated else [])
                for ar in self.aspect_ratios:
                    w, h = s[k] * math.sqrt(ar), s[k] / math.sqrt(ar)
                    sizes += [(w, h), (h, w)]
            if self.clip:
                sizes = [(min(max(w, 0.0), 1.0), min(max(h, 0.0), 1.0)) for w, h in sizes]
            levels.append(sizes)
        return levels

    def anchors_per_level(self, num_levels: int) -> list[int]:
        return [len(sizes) for sizes in self.level_sizes(num_levels)]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Any) -> AnchorSpec:
        if not isinstance(data, dict):
            raise SpecError(f"anchors must be an object, got {type(data).__name__}")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise SpecError(f"anchors: unknown field(s): {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> AnchorSpec:
        return dataclasses.replace(self, **changes)


def validate_anchors(a: AnchorSpec) -> None:
    for name in ("min_scale", "max_scale", "lowest_scale"):
        value = getattr(a, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise SpecError(f"anchors: {name} must be a positive number, got {value!r}")
    if a.min_scale > a.max_scale:
        raise SpecError(f"anchors: min_scale {a.min_scale} is above max_scale {a.max_scale}")
    if not isinstance(a.aspect_ratios, tuple) or not a.aspect_ratios:
        raise SpecError(f"anchors: aspect_ratios must be a non-empty list, got {a.aspect_ratios!r}")
    for ar in a.aspect_ratios:
        if isinstance(ar, bool) or not isinstance(ar, (int, float)) or not ar > 0:
            raise SpecError(f"anchors: every aspect ratio must be a positive number, got {ar!r}")
    for name in ("reduce_lowest", "interpolated", "clip"):
        if not isinstance(getattr(a, name), bool):
            raise SpecError(f"anchors: {name} must be true or false, got {getattr(a, name)!r}")
    if a.reduce_lowest and a.style != "tf":
        raise SpecError("anchors: reduce_lowest (3 anchors on the lowest level) is the 'tf' style's option")


def make_anchors(spec: AnchorSpec, feature_sizes: list[tuple[int, int]],
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """All anchors as ``(A, 4)`` ``(cx, cy, w, h)`` fractions of the image, level by level, each level row by
    row, then column, then anchor."""
    out = []
    for (h, w), sizes in zip(feature_sizes, spec.level_sizes(len(feature_sizes)), strict=True):
        cy = (torch.arange(h, dtype=torch.float64) + 0.5) / h
        cx = (torch.arange(w, dtype=torch.float64) + 0.5) / w
        yy, xx = torch.meshgrid(cy, cx, indexing="ij")
        centres = torch.stack([xx, yy], -1).reshape(h * w, 1, 2).expand(h * w, len(sizes), 2)
        wh = torch.tensor(sizes, dtype=torch.float64).reshape(1, len(sizes), 2).expand(h * w, len(sizes), 2)
        out.append(torch.cat([centres, wh], -1).reshape(-1, 4))
    return torch.cat(out).to(dtype)
