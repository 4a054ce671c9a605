"""Modules from detection specs: ``build_detection`` and one builder per registered network."""

from __future__ import annotations

from typing import Any

from .model import DetectionModel
from .spec import DetSpec
from .zoo import get_det_spec


def build_detection(spec: DetSpec | str, **overrides: Any) -> DetectionModel:
    """A model from a DetSpec, a registered name (:data:`~.zoo.DET_MODELS`; ``overrides`` are its options,
    ``width_mult`` included) or a DetSpec JSON file (``overrides`` set fields)."""
    if isinstance(spec, str) and not spec.endswith(".json"):
        return DetectionModel(get_det_spec(spec, **overrides))
    if isinstance(spec, str):
        spec = DetSpec.load(spec)
    if overrides:
        spec = spec.replace(**overrides)
    return DetectionModel(spec)


def ssdlite_mobilenet_v3_large(**options: Any) -> DetectionModel:
    """SSDLite on MobileNetV3-Large (Table 6 "V3"): C4 = block 13's expansion (672), C5 = the 960 conv."""
    return build_detection("ssdlite_mobilenet_v3_large", **options)


def ssdlite_mobilenet_v3_large_y(**options: Any) -> DetectionModel:
    """SSDLite on MobileNetV3-Large with the channels between C4 and C5 halved (Table 6 "V3^Y")."""
    return build_detection("ssdlite_mobilenet_v3_large_y", **options)


def ssdlite_mobilenet_v3_small(**options: Any) -> DetectionModel:
    """SSDLite on MobileNetV3-Small (Table 6 "V3-Small"): C4 = block 9's expansion (288), C5 = the 576 conv."""
    return build_detection("ssdlite_mobilenet_v3_small", **options)


def ssdlite_mobilenet_v3_small_y(**options: Any) -> DetectionModel:
    """SSDLite on MobileNetV3-Small with the channels between C4 and C5 halved (Table 6 "V3-Small^Y")."""
    return build_detection("ssdlite_mobilenet_v3_small_y", **options)


def ssdlite_mobilenet_v2(**options: Any) -> DetectionModel:
    """SSDLite on MobileNetV2 (Table 6 "V2"): C4 = block 14's expansion (576), C5 = the 1280 conv."""
    return build_detection("ssdlite_mobilenet_v2", **options)


def ssdlite_mnasnet_a1(**options: Any) -> DetectionModel:
    """SSDLite on MnasNet-A1 (Table 6 "MnasNet"): C4 = block 13's expansion (672), C5 = the 1280 conv."""
    return build_detection("ssdlite_mnasnet_a1", **options)
