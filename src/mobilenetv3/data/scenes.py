"""Scenes composed from Fashion-MNIST items: a segmentation data set with exact labels that trains on 2 cores.

A scene is a canvas (default 256x512) with a textured colour background and several garments of random class,
size, position and colour, later ones covering earlier ones where they overlap. Labels: 0 background, 1..10 the
Fashion-MNIST classes (label ``k + 1`` is Fashion-MNIST class ``k``, :data:`SCENE_CLASSES`). A garment's pixels
are those where its resized intensity exceeds ``threshold``; only those are painted (intensity times the item's
colour) and labelled, so every pixel labelled ``k`` shows garment ``k`` and every pixel labelled 0 shows the
background: the labels are exact by construction.

The same scenes serve detection (:meth:`FashionScenes.objects`): each garment's box is the tight box around its
pixels as they are visible in the finished scene (after later garments cover parts of it), ``x1 y1 x2 y2`` in
pixels with ``x2``/``y2`` one past the last visible column/row, with its visible pixel count as the COCO ``area``.
A garment of which less than ``min_visible`` (default :data:`MIN_VISIBLE`, a quarter) of its own pixels remain
visible is dropped from the boxes (its visible pixels stay labelled in the mask): a sliver of a covered item is
not a fair target for a box.

Splits: ``train`` and ``val`` scenes draw their items from Fashion-MNIST's training images, split once by a fixed
permutation (:func:`source_indices`: a sixth, 10,000 of 60,000, for ``val``), ``test`` scenes from its test
images; no garment image appears in two splits. Scenes are generated on the fly: scene ``i`` of a split comes from
a NumPy generator seeded with ``(seed, split, i)``, so the same index gives the same scene in any process, any
DataLoader worker and any run.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import DataError
from .fashion_mnist import CLASSES, read_fashion_mnist
from .transforms import resize

SCENE_CLASSES = ("background", *CLASSES)
DEFAULT_SIZE = (256, 512)
DEFAULT_LENGTHS = {"train": 10000, "val": 1000, "test": 1000}
SPLIT_SOURCES = {"train": "train", "val": "train", "test": "test"}
SPLIT_CODES = {"train": 1, "val": 2, "test": 3}
VAL_FRACTION = 1 / 6
SOURCE_SEED = 0x5CE2E  # fixed, not the run's seed: every run holds out the same training images for val
# Measured over 150 scenes of the train and test splits at 256x512 (means 0.398-0.409, stds 0.173-0.178 per
# channel): one value for all channels. Garments cover about 14% of a default scene.
MEAN = (0.405,)
STD = (0.175,)
OPTION_KEYS = ("size", "train", "val", "test", "items", "scale", "threshold", "seed", "min_visible")
MIN_VISIBLE = 0.25  # garments with less than this fraction of their pixels visible get no box


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are drawn: canvas ``size`` (height, width); ``items`` (min, max) garments per scene; ``scale``
    (min, max) of a garment's height as a fraction of the canvas height; ``threshold``: the intensity in ``[0, 1]``
    above which a garment pixel is painted and labelled; ``seed`` of the scene stream; ``min_visible``: the
    fraction of a garment's pixels that must stay visible for it to get a box (detection)."""

    size: tuple[int, int] = DEFAULT_SIZE
    items: tuple[int, int] = (3, 8)
    scale: tuple[float, float] = (0.2, 0.5)
    threshold: float = 0.2
    seed: int = 0
    min_visible: float = MIN_VISIBLE

    def __post_init__(self) -> None:
        size = tuple(int(v) for v in self.size)
        if len(size) != 2 or min(size) < 8:
            raise ValueError(f"scene size must be (height, width), each >= 8, got {self.size}")
        items = tuple(int(v) for v in self.items)
        if len(items) != 2 or not 1 <= items[0] <= items[1]:
            raise ValueError(f"items must be (min, max) with 1 <= min <= max, got {self.items}")
        scale = tuple(float(v) for v in self.scale)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must be (min, max) fractions of the canvas height in (0, 1], got {self.scale}")
        if not 0 <= self.threshold < 1:
            raise ValueError(f"threshold must be in [0, 1), got {self.threshold}")
        if not 0 <= self.min_visible <= 1:
            raise ValueError(f"min_visible must be in [0, 1], got {self.min_visible}")
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "items", items)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "threshold", float(self.threshold))
        object.__setattr__(self, "min_visible", float(self.min_visible))


@dataclass(frozen=True)
class Placement:
    """One garment of a scene: its scene label (1..10), its index among the split's source images, its box and
    colour, and whether it is mirrored."""

    label: int
    source: int
    top: int
    left: int
    height: int
    width: int
    colour: tuple[float, float, float]
    flipped: bool


def source_indices(total: int, split: str) -> torch.Tensor:
    """The indices of the Fashion-MNIST images (of split ``SPLIT_SOURCES[split]``) that ``split``'s scenes use."""
    if split == "test":
        return torch.arange(total)
    if total < 2:
        raise DataError(f"Fashion-MNIST's training split has {total} image(s); the scene splits train and val "
                        f"need at least 2")
    held = min(total - 1, max(1, round(total * VAL_FRACTION)))
    order = torch.randperm(total, generator=torch.Generator().manual_seed(SOURCE_SEED))
    return order[:held].sort().values if split == "val" else order[held:].sort().values


def background(rng: np.random.Generator, size: tuple[int, int]) -> torch.Tensor:
    """A textured colour background ``3 x H x W`` in ``[0, 1]``: a smooth colour field, stripes and grain."""
    h, w = size
    grid = rng.uniform(0.1, 0.7, (3, int(rng.integers(2, 7)), int(rng.integers(2, 7)))).astype(np.float32)
    field = torch.nn.functional.interpolate(torch.from_numpy(grid)[None], size=size, mode="bicubic",
                                            align_corners=False)[0]
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    angle, period, phase = rng.uniform(0, math.pi), rng.uniform(4, 24), rng.uniform(0, 2 * math.pi)
    stripes = torch.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period + phase)
    tint = torch.from_numpy(rng.uniform(0.0, 0.15, (3, 1, 1)).astype(np.float32))
    grain = torch.from_numpy(rng.normal(0, 0.03, (1, h, w)).astype(np.float32))
    return (field + tint * stripes + grain).clamp_(0.0, 1.0)


def draw_placements(rng: np.random.Generator, labels: torch.Tensor, config: SceneConfig) -> list[Placement]:
    """The garments of one scene, in painting order (later ones cover earlier ones)."""
    h, w = config.size
    out = []
    for _ in range(int(rng.integers(config.items[0], config.items[1] + 1))):
        source = int(rng.integers(len(labels)))
        height = min(h, max(4, round(rng.uniform(*config.scale) * h)))
        width = min(w, max(4, round(height * rng.uniform(0.8, 1.25))))
        top, left = int(rng.integers(h - height + 1)), int(rng.integers(w - width + 1))
        colour = tuple(float(c) for c in rng.uniform(0.35, 1.0, 3))
        out.append(Placement(int(labels[source]) + 1, source, top, left, height, width, colour,
                             bool(rng.integers(2))))
    return out


def garment(images: torch.Tensor, p: Placement) -> torch.Tensor:
    """The intensity ``height x width`` in ``[0, 1]`` of placement ``p``'s garment, resized and mirrored."""
    item = resize(images[p.source][None].to(torch.float32).div_(255.0), (p.height, p.width))[0].clamp_(0.0, 1.0)
    return item.flip(-1) if p.flipped else item


def compose_layers(images: torch.Tensor, labels: torch.Tensor, config: SceneConfig, rng: np.random.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[Placement], list[int]]:
    """One scene with who is where: image ``3 x H x W`` float in ``[0, 1]``, labels ``H x W`` uint8, the owner of
    each pixel ``H x W`` int64 (the placement's index, -1 for the background), the placements and each
    placement's own pixel count before anything covers it."""
    image = background(rng, config.size)
    mask = torch.zeros(config.size, dtype=torch.uint8)
    owner = torch.full(config.size, -1, dtype=torch.int64)
    placements = draw_placements(rng, labels, config)
    areas = []
    for i, p in enumerate(placements):
        item = garment(images, p)
        visible = item > config.threshold
        areas.append(int(visible.sum()))
        window = (slice(p.top, p.top + p.height), slice(p.left, p.left + p.width))
        colour = torch.tensor(p.colour, dtype=torch.float32).view(3, 1, 1)
        image[(slice(None), *window)] = torch.where(visible, colour * item, image[(slice(None), *window)])
        mask[window] = torch.where(visible, torch.tensor(p.label, dtype=torch.uint8), mask[window])
        owner[window] = torch.where(visible, torch.tensor(i), owner[window])
    return image, mask, owner, placements, areas


def compose(images: torch.Tensor, labels: torch.Tensor, config: SceneConfig, rng: np.random.Generator
            ) -> tuple[torch.Tensor, torch.Tensor, list[Placement]]:
    """One scene: image ``3 x H x W`` float in ``[0, 1]``, labels ``H x W`` uint8, and its placements."""
    image, mask, _, placements, _ = compose_layers(images, labels, config, rng)
    return image, mask, placements


def visible_boxes(owner: torch.Tensor, placements: list[Placement], areas: list[int], min_visible: float
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Boxes ``(G, 4)`` float xyxy (pixels, ``x2``/``y2`` exclusive), labels ``(G,)`` int64 (1..10) and visible
    areas ``(G,)`` of the placements with at least ``min_visible`` of their ``areas`` still visible in ``owner``."""
    boxes, classes, visible_areas = [], [], []
    for i, p in enumerate(placements):
        ys, xs = torch.nonzero(owner == i, as_tuple=True)
        if len(ys) == 0 or len(ys) < min_visible * areas[i]:
            continue
        boxes.append([float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1])
        classes.append(p.label)
        visible_areas.append(float(len(ys)))
    return (torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(classes, dtype=torch.int64),
            torch.tensor(visible_areas, dtype=torch.float32))


def parse_scene_options(text: str) -> dict[str, Any]:
    """``"size=64x128,train=200,items=2-5"`` -> keyword arguments of :class:`FashionScenes` (the part of a
    ``--data scenes:...`` name after the colon)."""
    options: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in OPTION_KEYS:
            raise DataError(f"scene option {part!r}: expected KEY=VALUE with KEY one of {', '.join(OPTION_KEYS)} "
                            f"(e.g. scenes:size=128x256,train=2000,items=2-6)")
        try:
            if key == "size":
                options["size"] = tuple(int(v) for v in value.lower().split("x"))
            elif key in ("items", "scale"):
                kind = int if key == "items" else float
                options[key] = tuple(kind(v) for v in value.split("-"))
            elif key in ("threshold", "min_visible"):
                options[key] = float(value)
            else:
                options[key] = int(value)
        except ValueError:
            raise DataError(f"scene option {part!r}: bad value {value!r}") from None
    return options


def scene_source(text: str) -> tuple[SceneConfig, dict[str, int]]:
    """The scene configuration and the per-split lengths given in a ``--data scenes:OPTIONS`` name's options
    (what the segmentation and detection loaders both read)."""
    options = parse_scene_options(text)
    lengths = {s: options.pop(s) for s in DEFAULT_LENGTHS if s in options}
    return SceneConfig(**options), lengths


def canvas_size(text: str) -> tuple[int, int]:
    """The canvas (height, width) of the scenes named by ``text`` (the options after ``scenes:``): every scene
    of the name is drawn, and evaluated, at this size."""
    return scene_source(text)[0].size


class FashionScenes(Dataset):
    """One split of the composed scenes; items are ``transform(image, mask)`` (a joint transform of
    :mod:`.seg_transforms`).

    ``length`` scenes (default :data:`DEFAULT_LENGTHS`); ``config`` how they are drawn; ``data_dir`` where the
    Fashion-MNIST files are (as :func:`~mobilenetv3.data.read_fashion_mnist`).
    """

    def __init__(self, split: str, *, transform: Any, config: SceneConfig | None = None, length: int | None = None,
                 data_dir: str | os.PathLike | None = None) -> None:
        if split not in SPLIT_SOURCES:
            raise ValueError(f"scene split must be one of {', '.join(SPLIT_SOURCES)}, got {split!r}")
        self.split = split
        self.config = config or SceneConfig()
        self.length = DEFAULT_LENGTHS[split] if length is None else int(length)
        if self.length < 1:
            raise ValueError(f"a scene split needs at least 1 scene, got {self.length}")
        images, labels = read_fashion_mnist(SPLIT_SOURCES[split], data_dir)
        keep = source_indices(len(labels), split)
        self.images, self.labels = images[keep], labels[keep]
        self.transform = transform
        self.classes = list(SCENE_CLASSES)
        self.channels = transform.channels
        self.mean, self.std = transform.mean, transform.std
        self.num_skipped = 0

    def __len__(self) -> int:
        return self.length

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, SPLIT_CODES[self.split], int(index)])

    def scene(self, index: int) -> tuple[torch.Tensor, torch.Tensor, list[Placement]]:
        """Scene ``index`` before the transform: image (float ``[0, 1]``), uint8 labels, placements."""
        if not 0 <= index < self.length:
            raise IndexError(f"scene {index} out of range (the {self.split} split has {self.length})")
        return compose(self.images, self.labels, self.config, self.rng(index))

    def objects(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Scene ``index`` for detection, before any transform: the image (float ``[0, 1]``) and its boxes
        ``{"boxes" (G, 4) xyxy pixels, "labels" (G,) 1..10, "area" (G,) visible pixels}`` (module docstring)."""
        if not 0 <= index < self.length:
            raise IndexError(f"scene {index} out of range (the {self.split} split has {self.length})")
        image, _, owner, placements, areas = compose_layers(self.images, self.labels, self.config, self.rng(index))
        boxes, classes, area = visible_boxes(owner, placements, areas, self.config.min_visible)
        return image, {"boxes": boxes, "labels": classes, "area": area}

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask, _ = self.scene(index)
        return self.transform(image, mask)
