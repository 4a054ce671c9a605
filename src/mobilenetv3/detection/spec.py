"""DetSpec: an SSDLite detector as data (backbone ArchSpec + extra layers, heads, anchors, post-processing),
serialisable to JSON and back.

The stored backbone is the classification spec as given; the network built is :meth:`DetSpec.backbone_spec`: that
spec with the "Y" reduction when ``reduce_tail`` (:func:`~.backbone.reduce_tail`) and without its classifier head
conv. Its C4 and C5 taps (:mod:`.backbone`) feed the first two prediction levels; ``extra_widths`` add one level
each (SSDLite's 1x1 -> depthwise 3x3 stride 2 -> 1x1, the 1x1s at half and full width).

``num_classes`` counts the background (COCO: 91 = 90 + background, label 0 is the background, as in torchvision
and the TF API's 90 classes + 1 slot). ``classification``: ``"softmax"`` heads give ``num_classes`` scores per
anchor (SSD's softmax with cross-entropy and hard negative mining), ``"sigmoid"`` gives ``num_classes - 1`` (no
background slot; focal loss). Post-processing defaults are the TF SSDLite configs' (IoU 0.6, 100 per class and
100 in all) with torchvision's pre-NMS top-k per class (300) and score threshold (0.001).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from ..spec import ACTIVATIONS, ArchSpec, BackboneSpecIO, SpecError
from .anchors import AnchorSpec
from .backbone import DetTaps, find_taps, reduce_tail
from .boxes import BOX_WEIGHTS
from .loss import CLASSIFICATIONS

DET_SPEC_FORMAT_VERSION = 1
EXTRA_WIDTHS = (512, 256, 256, 128)


class DetSpecError(SpecError):
    """A detection spec that cannot be built; the message names the offending field and value."""


@dataclass(frozen=True)
class DetSpec(BackboneSpecIO):
    """A backbone, SSDLite's extra layers and heads, anchors and post-processing (module docstring)."""

    KIND: ClassVar[str] = "detection"
    FORMAT_VERSION: ClassVar[int] = DET_SPEC_FORMAT_VERSION
    ERROR: ClassVar[type[SpecError]] = DetSpecError
    NESTED: ClassVar[tuple[str, ...]] = ("backbone", "anchors")

    name: str
    backbone: ArchSpec
    num_classes: int = 91
    reduce_tail: bool = False
    extra_widths: tuple[int, ...] = EXTRA_WIDTHS
    extra_act: str = "relu6"
    head_act: str = "relu6"
    head_kernel: int = 3
    classification: str = "softmax"
    anchors: AnchorSpec = dataclasses.field(default_factory=AnchorSpec)
    box_weights: tuple[float, float, float, float] = BOX_WEIGHTS
    score_threshold: float = 0.001
    iou_threshold: float = 0.6
    pre_nms_top_k: int = 300
    max_per_class: int = 100
    max_detections: int = 100
    resolution: int = 320
    notes: str = ""

    def __post_init__(self) -> None:
        for name in ("extra_widths", "box_weights"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if isinstance(self.anchors, dict):
            try:
                object.__setattr__(self, "anchors", AnchorSpec.from_dict(self.anchors))
            except (SpecError, TypeError) as e:
                raise DetSpecError(f"{self.name}: {e}") from None
        validate_det(self)

    # -- derived ---------------------------------------------------------------------------------------
    def backbone_spec(self) -> ArchSpec:
        """The backbone as built: the Y reduction when ``reduce_tail``, no classifier head conv."""
        spec = reduce_tail(self.backbone) if self.reduce_tail else self.backbone
        return spec.replace(head_channels=0)

    def taps(self) -> DetTaps:
        return find_taps(self.backbone_spec())

    @property
    def num_levels(self) -> int:
        return 2 + len(self.extra_widths)

    @property
    def class_slots(self) -> int:
        """Class outputs per anchor: every class with softmax, the foreground classes with sigmoid."""
        return self.num_classes if self.classification == "softmax" else self.num_classes - 1

    def level_channels(self) -> list[int]:
        """Channels of each prediction level's input: C4, C5, then the extra layers."""
        taps = self.taps()
        return [taps.c4_channels, taps.c5_channels, *self.extra_widths]

    def feature_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Each level's map for an input of ``height`` x ``width`` (every stride-2 layer rounds up)."""
        taps = self.taps()
        sizes = [(-(-height // taps.c4_stride), -(-width // taps.c4_stride)),
                 (-(-height // taps.c5_stride), -(-width // taps.c5_stride))]
        for _ in self.extra_widths:
            h, w = sizes[-1]
            sizes.append((-(-h // 2), -(-w // 2)))
        return sizes

    def num_anchors(self, height: int | None = None, width: int | None = None) -> int:
        h = height or self.resolution
        w = width or h
        per = self.anchors.anchors_per_level(self.num_levels)
        return sum(a * fh * fw for a, (fh, fw) in zip(per, self.feature_sizes(h, w), strict=True))

    def replace(self, **changes: Any) -> DetSpec:
        return dataclasses.replace(self, **changes)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_det(spec: DetSpec) -> None:
    """Raise :class:`DetSpecError` naming the first problem found."""
    top = f"detection spec {spec.name!r}"
    if not isinstance(spec.name, str) or not spec.name:
        raise DetSpecError("detection spec name must be a non-empty string")
    if not isinstance(spec.backbone, ArchSpec):
        raise DetSpecError(f"{top}: backbone must be an ArchSpec, got {type(spec.backbone).__name__}")
    if not _positive_int(spec.num_classes) or spec.num_classes < 2:
        raise DetSpecError(f"{top}: num_classes counts the background and must be >= 2, got {spec.num_classes!r}")
    if not isinstance(spec.reduce_tail, bool):
        raise DetSpecError(f"{top}: reduce_tail must be true or false, got {spec.reduce_tail!r}")
    if not isinstance(spec.extra_widths, tuple) or not all(_positive_int(w) and w >= 2 for w in spec.extra_widths):
        raise DetSpecError(f"{top}: extra_widths must be a list of integers >= 2, got {spec.extra_widths!r}")
    for name in ("extra_act", "head_act"):
        if getattr(spec, name) not in ACTIVATIONS:
            raise DetSpecError(f"{top}: unknown {name} {getattr(spec, name)!r} (choose from {', '.join(ACTIVATIONS)})")
    if not _positive_int(spec.head_kernel) or spec.head_kernel % 2 == 0:
        raise DetSpecError(f"{top}: head_kernel must be a positive odd integer, got {spec.head_kernel!r}")
    if spec.classification not in CLASSIFICATIONS:
        raise DetSpecError(f"{top}: unknown classification {spec.classification!r} "
                           f"(choose from {', '.join(CLASSIFICATIONS)})")
    if not isinstance(spec.anchors, AnchorSpec):
        raise DetSpecError(f"{top}: anchors must be an AnchorSpec or an object, got {type(spec.anchors).__name__}")
    if (not isinstance(spec.box_weights, tuple) or len(spec.box_weights) != 4
            or not all(_number(w) and w > 0 for w in spec.box_weights)):
        raise DetSpecError(f"{top}: box_weights must be four positive numbers, got {spec.box_weights!r}")
    if not _number(spec.score_threshold) or not 0.0 <= spec.score_threshold < 1.0:
        raise DetSpecError(f"{top}: score_threshold must be in [0, 1), got {spec.score_threshold!r}")
    if not _number(spec.iou_threshold) or not 0.0 <= spec.iou_threshold <= 1.0:
        raise DetSpecError(f"{top}: iou_threshold must be in [0, 1], got {spec.iou_threshold!r}")
    for name in ("pre_nms_top_k", "max_per_class", "max_detections", "resolution"):
        if not _positive_int(getattr(spec, name)):
            raise DetSpecError(f"{top}: {name} must be a positive integer, got {getattr(spec, name)!r}")
    try:
        spec.taps()
    except SpecError as e:
        raise DetSpecError(f"{top}: {e}") from None
