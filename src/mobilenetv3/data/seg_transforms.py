"""Joint image/mask transforms for segmentation, in plain torch: random scale, crop with ignore padding, flip.

An item is an image (``uint8`` or ``[0, 1]`` float, ``C x H x W``) and its mask (integer class ids ``H x W``); both
go through the same geometric changes. Images are resized bilinearly (antialiased when shrinking, as
:func:`~mobilenetv3.data.transforms.resize`), masks with nearest-neighbour interpolation (``nearest-exact``: the
source pixel whose centre is nearest, so a mask and its image stay aligned), so no class id is ever blended into
another. Padding (when a scaled image is smaller than the crop) fills the image with the normalisation mean (0
after normalising) and the mask with :data:`IGNORE_INDEX`, so padded pixels count in no loss and no metric.

Randomness comes only from torch's generator, as in :mod:`.transforms`: the training loop's per-sample seeding
then reproduces every scale, crop and flip on resume.

Measured against albumentations on the same pipeline (``benchmarks/augment_compare.py``): within 0.7x-1.1x of
this code per item for masks, 1.9x slower for boxes, and negligible against a training step either way, so the
core stays torch-only (``docs/segmentation.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .transforms import match_channels, normalize, resize, to_float

IGNORE_INDEX = 255


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of an ``H x W`` integer mask to ``size = (height, width)``; ids are kept exactly."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    # float32 holds every id below 2**24 exactly; nearest-exact only copies values.
    out = F.interpolate(mask[None, None].to(torch.float32), size=size, mode="nearest-exact")[0, 0]
    return out.to(mask.dtype)


def pad_pair(img: torch.Tensor, mask: torch.Tensor, size: tuple[int, int], fill: torch.Tensor,
             ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad ``img`` (with ``fill``, one value per channel) and ``mask`` (with ``ignore_index``) at the bottom and
    right up to at least ``size``."""
    h, w = mask.shape[-2:]
    ph, pw = max(size[0], h), max(size[1], w)
    if (ph, pw) == (h, w):
        return img, mask
    out = fill.to(img.dtype).view(-1, 1, 1).expand(img.shape[0], ph, pw).clone()
    out[:, :h, :w] = img
    out_mask = torch.full((ph, pw), ignore_index, dtype=mask.dtype)
    out_mask[:h, :w] = mask
    return out, out_mask


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _stats(values: Any, channels: int, name: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in (values if isinstance(values, (tuple, list)) else (values,)))
    values = values * channels if len(values) == 1 else values
    if len(values) != channels:
        raise ValueError(f"{name} has {len(values)} values for {channels} channels")
    return values


@dataclass(frozen=True)
class SegEvalTransform:
    """Evaluation: the whole image at its own size, normalised; the mask as ``int64``."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int = 3
    _mean: torch.Tensor = field(init=False, repr=False, compare=False)
    _std: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        mean, std = _stats(self.mean, self.channels, "mean"), _stats(self.std, self.channels, "std")
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {std}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "_mean", torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1))
        object.__setattr__(self, "_std", torch.tensor(std, dtype=torch.float32).view(-1, 1, 1))

    def prepare(self, img: torch.Tensor) -> torch.Tensor:
        """``img`` as float ``[0, 1]`` with this transform's channels (not yet normalised)."""
        return match_channels(to_float(img), self.channels)

    def finish(self, img: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return normalize(img, self._mean, self._std).contiguous(), mask.to(torch.int64)

    def __call__(self, img: torch.Tensor, mask: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if tuple(img.shape[-2:]) != tuple(mask.shape[-2:]):
            raise ValueError(f"image {tuple(img.shape[-2:])} and mask {tuple(mask.shape[-2:])} differ in size")
        return self.finish(self.prepare(img), mask)

    def config(self) -> dict[str, Any]:
        """The settings as plain JSON-ready values (for a run's recorded config)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items() if not k.startswith("_")}


@dataclass(frozen=True)
class SegTrainTransform(SegEvalTransform):
    """Training: scale the pair by a factor uniform in ``scale``, pad to ``crop`` (mean / ignore), take a random
    ``crop = (height, width)`` window, mirror with probability ``hflip``, normalise."""

    crop: tuple[int, int] = (256, 256)
    scale: tuple[float, float] = (0.5, 2.0)
    hflip: float = 0.5
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self) -> None:
        super().__post_init__()
        crop = tuple(int(v) for v in (self.crop if isinstance(self.crop, (tuple, list)) else (self.crop,) * 2))
        if len(crop) != 2 or min(crop) < 1:
            raise ValueError(f"crop must be (height, width) >= 1, got {self.crop}")
        lo, hi = (float(v) for v in self.scale)
        if not 0 < lo <= hi:
            raise ValueError(f"scale must be (low, high) factors with 0 < low <= high, got {self.scale}")
        if not 0 <= self.hflip <= 1:
            raise ValueError(f"hflip is a probability, got {self.hflip}")
        object.__setattr__(self, "crop", crop)
        object.__setattr__(self, "scale", (lo, hi))

    def __call__(self, img: torch.Tensor, mask: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if tuple(img.shape[-2:]) != tuple(mask.shape[-2:]):
            raise ValueError(f"image {tuple(img.shape[-2:])} and mask {tuple(mask.shape[-2:])} differ in size")
        img = self.prepare(img)
        s = _uniform(*self.scale, generator)
        h, w = mask.shape[-2:]
        size = (max(1, round(h * s)), max(1, round(w * s)))
        img, mask = resize(img, size), resize_mask(mask, size)
        img, mask = pad_pair(img, mask, self.crop, self._mean, self.ignore_index)
        ch, cw = self.crop
        top = int(torch.randint(mask.shape[-2] - ch + 1, (), generator=generator))
        left = int(torch.randint(mask.shape[-1] - cw + 1, (), generator=generator))
        img, mask = img[:, top:top + ch, left:left + cw], mask[top:top + ch, left:left + cw]
        if self.hflip and float(torch.rand((), generator=generator)) < self.hflip:
            img, mask = img.flip(-1), mask.flip(-1)
        return self.finish(img, mask)
