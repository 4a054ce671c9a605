"""Registered SSDLite networks (Table 6's backbones) and DetSpecs from zoo backbones.

Every registered network is SSDLite at 320x320 with 91 classes (COCO's 90 + background), TF-style anchors (3 on
the lowest level, 6 elsewhere) and softmax classification: the TF object-detection API's ``ssdlite_*`` configs,
which produced the paper's Table 6. The ``_y`` forms halve the channels between C4 and C5 (``reduce_tail``).
Options override any DetSpec field: ``anchors=AnchorSpec("torchvision")`` gives torchvision's 6 anchors per
level, ``classification="sigmoid"`` the focal-loss head.

Width multipliers scale the backbone as the zoo does and the extra layers as the TF API does
(``max(int(d x width), 16)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..spec import ArchSpec
from ..zoo import get_spec
from .spec import EXTRA_WIDTHS, DetSpec

MIN_DEPTH = 16


def width_suffix(width_mult: float) -> str:
    return "" if width_mult == 1.0 else f"_{round(width_mult * 100):03d}"


def extra_widths(width_mult: float) -> tuple[int, ...]:
    return tuple(max(int(d * width_mult), MIN_DEPTH) for d in EXTRA_WIDTHS)


def det_spec(backbone: str | ArchSpec, *, width_mult: float = 1.0, name: str | None = None,
             **fields: Any) -> DetSpec:
    """A DetSpec on a zoo backbone (a name for :func:`~mobilenetv3.zoo.get_spec`, at ``width_mult``, extra layers
    scaled alike) or on an ArchSpec taken as it is; ``fields`` set the other DetSpec fields."""
    if isinstance(backbone, str):
        arch = get_spec(backbone, width_mult)
        fields.setdefault("extra_widths", extra_widths(width_mult))
    else:
        if width_mult != 1.0:
            raise ValueError("width_mult applies to zoo backbone names; an ArchSpec already holds its widths")
        arch = backbone
    y = "_y" if fields.get("reduce_tail") else ""
    return DetSpec(name=name or f"ssdlite_{arch.name}{y}", backbone=arch, **fields)


@dataclass(frozen=True)
class DetEntry:
    """A registered detector: backbone family and default options."""

    backbone: str
    defaults: dict[str, Any] = field(default_factory=dict)
    notes: str = ""


DET_MODELS: dict[str, DetEntry] = {
    "ssdlite_mobilenet_v3_large": DetEntry("mobilenet_v3_large", {}, "Table 6: V3"),
    "ssdlite_mobilenet_v3_large_y": DetEntry("mobilenet_v3_large", {"reduce_tail": True},
                                             "Table 6: V3^Y (TF's released ssdlite_mobilenet_v3_large)"),
    "ssdlite_mobilenet_v3_small": DetEntry("mobilenet_v3_small", {}, "Table 6: V3-Small"),
    "ssdlite_mobilenet_v3_small_y": DetEntry("mobilenet_v3_small", {"reduce_tail": True}, "Table 6: V3-Small^Y"),
    "ssdlite_mobilenet_v2": DetEntry("mobilenet_v2", {}, "Table 6: V2 (MobileNetV2 paper's SSDLite)"),
    "ssdlite_mnasnet_a1": DetEntry("mnasnet_a1", {}, "Table 6: MnasNet (MnasNet paper's SSDLite)"),
}


def list_det_models() -> list[str]:
    return list(DET_MODELS)


def get_det_spec(name: str, width_mult: float = 1.0, **options: Any) -> DetSpec:
    """The DetSpec of a registered network at a backbone width; ``options`` override its defaults."""
    if name not in DET_MODELS:
        import difflib

        close = difflib.get_close_matches(name, DET_MODELS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown detection model {name!r}.{hint} Known: {', '.join(DET_MODELS)}")
    entry = DET_MODELS[name]
    fields = {**entry.defaults, "notes": entry.notes, **options}
    return det_spec(entry.backbone, width_mult=width_mult, name=name + width_suffix(width_mult), **fields)
