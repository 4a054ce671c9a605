"""Modules from segmentation specs: ``build_segmentation`` and one builder per registered network."""

from __future__ import annotations

from typing import Any

from .model import SegmentationModel
from .spec import SegSpec
from .zoo import get_seg_spec


def build_segmentation(spec: SegSpec | str, **overrides: Any) -> SegmentationModel:
    """A model from a SegSpec, a registered name (:data:`~.zoo.SEG_MODELS`; ``overrides`` are its options,
    ``width_mult`` included) or a SegSpec JSON file (``overrides`` set fields)."""
    if isinstance(spec, str) and not spec.endswith(".json"):
        return SegmentationModel(get_seg_spec(spec, **overrides))
    if isinstance(spec, str):
        spec = SegSpec.load(spec)
    if overrides:
        spec = spec.replace(**overrides)
    return SegmentationModel(spec)


def lraspp_mobilenet_v3_large(**options: Any) -> SegmentationModel:
    """LR-ASPP on MobileNetV3-Large (Table 7 row 8 by default: RF2, F=128, OS16, 19 classes)."""
    return build_segmentation("lraspp_mobilenet_v3_large", **options)


def lraspp_mobilenet_v3_small(**options: Any) -> SegmentationModel:
    """LR-ASPP on MobileNetV3-Small (Table 7 row 11 by default)."""
    return build_segmentation("lraspp_mobilenet_v3_small", **options)


def lraspp_mobilenet_v2(**options: Any) -> SegmentationModel:
    """LR-ASPP on MobileNetV2 (Table 7 row 4 by default; ``width_mult=0.5`` / ``0.35``: rows 9 and 10)."""
    return build_segmentation("lraspp_mobilenet_v2", **options)


def raspp_mobilenet_v3_large(**options: Any) -> SegmentationModel:
    """R-ASPP on MobileNetV3-Large (Table 7 row 5 by default: no RF2, F=256)."""
    return build_segmentation("raspp_mobilenet_v3_large", **options)


def raspp_mobilenet_v3_small(**options: Any) -> SegmentationModel:
    """R-ASPP on MobileNetV3-Small (no RF2, F=256)."""
    return build_segmentation("raspp_mobilenet_v3_small", **options)


def raspp_mobilenet_v2(**options: Any) -> SegmentationModel:
    """R-ASPP on MobileNetV2 (Table 7 row 1: MobileNetV2's DeepLabv3 head)."""
    return build_segmentation("raspp_mobilenet_v2", **options)
