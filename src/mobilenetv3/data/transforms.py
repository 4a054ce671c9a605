"""Image preprocessing in plain torch: Inception-style training crops and resize + centre-crop evaluation.

Every transform takes a ``uint8`` (or ``[0, 1]`` float) tensor ``C x H x W`` at any size and returns a normalised
float tensor ``channels x resolution x resolution``. Working on tensors rather than PIL images keeps Fashion-MNIST
(held in memory as one uint8 tensor) fast and makes image folders and in-memory data share one code path.

Randomness comes only from torch's generator (the default one, or one passed in), never from Python's ``random``:
``torch.manual_seed`` in the main process and the DataLoader's per-worker seeding then reproduce every crop, flip
and jitter, which is what exact resume of a training run relies on.

Resizing is bilinear with ``align_corners=False`` and antialiasing, which matches PIL's bilinear resize: plain
bilinear interpolation when upsampling (28 -> 64), a widened filter when downsampling (so no aliasing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# For 1-channel models fed colour photos converted to grey: the mean of the three channels' statistics.
IMAGENET_GRAY_MEAN = (0.449,)
IMAGENET_GRAY_STD = (0.226,)
DEFAULT_CROP_FRACTION = 0.875  # resize to resolution / 0.875 (256 for 224), then take the central crop
INCEPTION_SCALE = (0.08, 1.0)  # fraction of the image area a training crop covers
INCEPTION_RATIO = (3 / 4, 4 / 3)  # aspect ratio (width / height) of a training crop
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2 weights, as PIL's "L" conversion and torchvision use

# Random erasing (Zhong et al., 2017, "Random Erasing Data Augmentation"): the area and aspect-ratio ranges of the
# erased rectangle they use, and how many placements are tried before giving up on one image.
ERASE_SCALE = (0.02, 0.4)
ERASE_RATIO = (0.3, 1 / 0.3)
ERASE_ATTEMPTS = 10

TRAIN_OPTIONS = ("scale", "ratio", "hflip", "color_jitter", "random_erase")
EVAL_OPTIONS = ("crop_fraction",)


def grey_stats(mean: Sequence[float], std: Sequence[float], channels: int) -> tuple[tuple[float, ...], ...]:
    """``(mean, std)`` for ``channels`` input channels: as given for colour, one statistic (the mean of the colour
    channels') for grey inputs."""
    if channels == 1:
        return (sum(mean) / len(mean),), (sum(std) / len(std),)
    return tuple(mean), tuple(std)


def to_float(img: torch.Tensor) -> torch.Tensor:
    """``uint8`` in ``[0, 255]`` -> float32 in ``[0, 1]``; float input is taken to be in ``[0, 1]`` already."""
    if img.dtype == torch.uint8:
        return img.to(torch.float32).div_(255.0)
    if not img.is_floating_point():
        raise TypeError(f"expected a uint8 or float image tensor, got {img.dtype}")
    return img.to(torch.float32)


def resize(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a float ``C x H x W`` tensor to ``size = (height, width)``, antialiased when shrinking."""
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    # antialias=True changes nothing when enlarging (checked: identical to plain bilinear) and filters properly
    # when shrinking, so it is always on.
    return F.interpolate(img[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def resize_shorter(img: torch.Tensor, size: int) -> torch.Tensor:
    """Resize so that the shorter side is ``size``, keeping the aspect ratio (torchvision's ``Resize(int)``)."""
    h, w = img.shape[-2:]
    if h <= w:
        return resize(img, (size, max(1, int(size * w / h))))
    return resize(img, (max(1, int(size * h / w)), size))


def center_crop(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The central ``size = (height, width)`` window; offsets rounded as torchvision rounds them."""
    h, w = img.shape[-2:]
    ch, cw = size
    if ch > h or cw > w:
        raise ValueError(f"crop {size} is larger than the image ({h}, {w})")
    top = int(round((h - ch) / 2.0))
    left = int(round((w - cw) / 2.0))
    return img[..., top:top + ch, left:left + cw]


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(high_exclusive: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(high_exclusive, (), generator=generator))


def random_resized_crop_box(height: int, width: int, scale: tuple[float, float] = INCEPTION_SCALE,
                            ratio: tuple[float, float] = INCEPTION_RATIO,
                            generator: torch.Generator | None = None) -> tuple[int, int, int, int]:
    """Sample the Inception crop ``(top, left, crop_height, crop_width)`` (torchvision's algorithm).

    Area fraction uniform in ``scale``, aspect ratio log-uniform in ``ratio``; ten tries to fit the image, then the
    largest central crop with the aspect ratio clamped into ``ratio``.
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * _uniform(scale[0], scale[1], generator)
        aspect = math.exp(_uniform(log_lo, log_hi, generator))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = _randint(height - h + 1, generator)
            left = _randint(width - w + 1, generator)
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def random_erase_box(height: int, width: int, scale: tuple[float, float] = ERASE_SCALE,
                     ratio: tuple[float, float] = ERASE_RATIO,
                     generator: torch.Generator | None = None) -> tuple[int, int, int, int] | None:
    """``(top, left, h, w)`` of a rectangle covering ``scale`` of the area with aspect ratio (h / w) in ``ratio``
    (log-uniform, so ratios r and 1/r are equally likely), or ``None`` when no draw fits in ``ERASE_ATTEMPTS``."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(ERASE_ATTEMPTS):
        target = area * _uniform(scale[0], scale[1], generator)
        aspect = math.exp(_uniform(log_lo, log_hi, generator))
        h = int(round(math.sqrt(target * aspect)))
        w = int(round(math.sqrt(target / aspect)))
        if 0 < h <= height and 0 < w <= width:
            return _randint(height - h + 1, generator), _randint(width - w + 1, generator), h, w
    return None


def to_grayscale(img: torch.Tensor) -> torch.Tensor:
    """Luma of a float ``3 x H x W`` image as ``1 x H x W``."""
    r, g, b = img.unbind(-3)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(-3)


def _blend(img: torch.Tensor, other: torch.Tensor | float, factor: float) -> torch.Tensor:
    return (factor * img + (1.0 - factor) * other).clamp_(0.0, 1.0)


def adjust_brightness(img: torch.Tensor, factor: float) -> torch.Tensor:
    return (img * factor).clamp_(0.0, 1.0)


def adjust_contrast(img: torch.Tensor, factor: float) -> torch.Tensor:
    gray = to_grayscale(img) if img.shape[-3] == 3 else img
    return _blend(img, float(gray.mean()), factor)


def adjust_saturation(img: torch.Tensor, factor: float) -> torch.Tensor:
    if img.shape[-3] != 3:
        return img  # a grey image has no saturation to change
    return _blend(img, to_grayscale(img), factor)


def match_channels(img: torch.Tensor, channels: int) -> torch.Tensor:
    """Repeat a grey image to 3 channels, or take the luma of a colour one, so it has ``channels``."""
    c = img.shape[-3]
    if c == channels:
        return img
    if c == 1 and channels == 3:
        return img.expand(3, -1, -1)
    if c == 3 and channels == 1:
        return to_grayscale(img)
    raise ValueError(f"cannot turn a {c}-channel image into {channels} channels")


def normalize(img: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(img - mean) / std`` per channel; ``mean`` and ``std`` are shaped ``C x 1 x 1``."""
    return (img - mean) / std


def _stats(values: Any, channels: int, name: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in (values if isinstance(values, (tuple, list)) else (values,)))
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ValueError(f"{name} has {len(values)} values for {channels} channels")
    return values


def _pair(value: Any, name: str) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not 0 < lo <= hi:
        raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {value}")
    return lo, hi


@dataclass(frozen=True)
class _Normalized:
    """Shared fields: output size, channels and normalisation statistics (one per channel, or one for all)."""

    resolution: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int
    _mean: torch.Tensor = field(init=False, repr=False, compare=False)
    _std: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if int(self.resolution) < 1:
            raise ValueError(f"resolution must be >= 1, got {self.resolution}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        mean = _stats(self.mean, self.channels, "mean")
        std = _stats(self.std, self.channels, "std")
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {std}")
        object.__setattr__(self, "resolution", int(self.resolution))
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "_mean", torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1))
        object.__setattr__(self, "_std", torch.tensor(std, dtype=torch.float32).view(-1, 1, 1))

    def _finish(self, img: torch.Tensor) -> torch.Tensor:
        return normalize(match_channels(img, self.channels), self._mean, self._std)

    def config(self) -> dict[str, Any]:
        """The settings as plain JSON-ready values (for a run's resolved config)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items() if not k.startswith("_")}


@dataclass(frozen=True)
class TrainTransform(_Normalized):
    """Inception-style training preprocessing: random resized crop, horizontal flip, optional colour jitter and
    random erasing.

    ``scale``: range of the crop's area as a fraction of the image; ``ratio``: range of its aspect ratio;
    ``hflip``: probability of a mirror image; ``color_jitter``: strength of brightness, contrast and saturation
    changes (one number for all three, or a triple; 0 = off), each factor uniform in ``[1 - s, 1 + s]`` and applied
    in that fixed order; ``random_erase``: probability of replacing a rectangle of 2-40% of the resized image (aspect
    ratio 0.3 to 3.3) with uniform noise in ``[0, 1]``, as in Zhong et al.'s random erasing (0 = off). Erasing
    comes last, on the ``[0, 1]`` image before normalisation, so the noise has the pixels' range.
    """

    scale: tuple[float, float] = INCEPTION_SCALE
    ratio: tuple[float, float] = INCEPTION_RATIO
    hflip: float = 0.5
    color_jitter: float | tuple[float, float, float] = 0.0
    random_erase: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.random_erase <= 1:
            raise ValueError(f"random_erase is a probability, got {self.random_erase}")
        object.__setattr__(self, "random_erase", float(self.random_erase))
        scale = _pair(self.scale, "scale")
        if scale[1] > 1:
            raise ValueError(f"scale is a fraction of the image area, at most 1; got {self.scale}")
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "ratio", _pair(self.ratio, "ratio"))
        if not 0 <= self.hflip <= 1:
            raise ValueError(f"hflip is a probability, got {self.hflip}")
        jitter = self.color_jitter
        jitter = tuple(float(j) for j in (jitter if isinstance(jitter, (tuple, list)) else (jitter,) * 3))
        if len(jitter) != 3 or min(jitter) < 0:
            raise ValueError(f"color_jitter must be >= 0, one value or (brightness, contrast, saturation); got "
                             f"{self.color_jitter}")
        object.__setattr__(self, "color_jitter", jitter)

    def __call__(self, img: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        top, left, h, w = random_resized_crop_box(img.shape[-2], img.shape[-1], self.scale, self.ratio, generator)
        # Crop before converting or resizing: a large photo is only ever touched inside the crop.
        out = resize(to_float(img[..., top:top + h, left:left + w]), (self.resolution, self.resolution))
        if self.hflip and float(torch.rand((), generator=generator)) < self.hflip:
            out = out.flip(-1)
        for strength, adjust in zip(self.color_jitter, (adjust_brightness, adjust_contrast, adjust_saturation),
                                    strict=True):
            if strength:
                out = adjust(out, _uniform(max(0.0, 1.0 - strength), 1.0 + strength, generator))
        if self.random_erase and float(torch.rand((), generator=generator)) < self.random_erase:
            box = random_erase_box(out.shape[-2], out.shape[-1], generator=generator)
            if box is not None:
                top, left, h, w = box
                out = out.clone()
                out[..., top:top + h, left:left + w] = torch.rand((out.shape[0], h, w), generator=generator)
        return self._finish(out)


@dataclass(frozen=True)
class EvalTransform(_Normalized):
    """Evaluation preprocessing: resize the shorter side to ``floor(resolution / crop_fraction)``, centre-crop.

    Deterministic; ``crop_fraction=1`` resizes straight to the resolution (for square inputs).
    """

    crop_fraction: float = DEFAULT_CROP_FRACTION

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.crop_fraction <= 1:
            raise ValueError(f"crop_fraction must be in (0, 1], got {self.crop_fraction}")

    def __call__(self, img: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        size = self.resolution
        out = resize_shorter(to_float(img), math.floor(size / self.crop_fraction + 1e-6))
        return self._finish(center_crop(out, (size, size)))


def build_transform(train: bool, resolution: int, channels: int, mean: Any, std: Any,
                    **options: Any) -> TrainTransform | EvalTransform:
    """The training or evaluation transform; options meant only for the other kind are accepted and ignored.

    That lets one set of options (say, from the command line) configure both the training and validation data.
    Options set to ``None`` take their defaults.
    """
    unknown = set(options) - set(TRAIN_OPTIONS) - set(EVAL_OPTIONS)
    if unknown:
        raise TypeError(f"unknown transform option(s) {sorted(unknown)}; known: "
                        f"{sorted({*TRAIN_OPTIONS, *EVAL_OPTIONS, 'mean', 'std'})}")
    if train:
        kept = {k: v for k, v in options.items() if k in TRAIN_OPTIONS and v is not None}
        return TrainTransform(resolution=resolution, mean=mean, std=std, channels=channels, **kept)
    kept = {k: v for k, v in options.items() if k in EVAL_OPTIONS and v is not None}
    return EvalTransform(resolution=resolution, mean=mean, std=std, channels=channels, **kept)
