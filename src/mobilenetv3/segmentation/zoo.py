"""Named segmentation networks: SegSpecs from a zoo backbone and a head, and the registry of named ones.

Backbone features end where DeepLab's do (research/deeplab/core/feature_extractor.py): MobileNetV3 at its last
1x1 conv (``layer_17`` of Large, ``layer_13`` of Small: 960/576 channels, 480/288 reduced), MobileNetV2 at its
last bottleneck (``layer_18``, 320 channels), without the 1280 conv. MnasNet-A1 is treated as V2 (its last conv
is the same 1280-wide classification layer).

Defaults of the registered LR-ASPP models are the paper's segmentation candidates (Table 7 rows 8 and 11): RF2,
F = 128, output stride 16, DeepLab's stride-8 depthwise skip; RF2 in the DeepLab form for V3 and the SSDLite form
for V2 (the forms that reproduce Table 7's parameter counts, :mod:`.paper`). The R-ASPP models default to
MobileNetV2's paper: no RF2, F = 256. Pooling defaults to global (exports anywhere); Figure 10's large-kernel
pooling is ``**FIGURE10_POOLING`` (:mod:`.spec`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..spec import ArchSpec
from ..zoo import get_spec
from .spec import SegSpec


def deeplab_features(spec: ArchSpec) -> ArchSpec:
    """``spec`` ending where DeepLab's feature extractor ends: MobileNetV3 keeps its last 1x1 conv, the others
    (MobileNetV2, MnasNet-A1) stop at their last bottleneck."""
    if spec.name.startswith("mobilenet_v3"):
        return spec
    return spec.replace(last_channels=0, last_se=False)


def width_suffix(width_mult: float) -> str:
    return "" if width_mult == 1.0 else f"_{round(width_mult * 100):03d}"


def seg_spec(backbone: str | ArchSpec, head: str = "lraspp", *, width_mult: float = 1.0, name: str | None = None,
             **fields: Any) -> SegSpec:
    """A SegSpec on a zoo backbone (a name for :func:`~mobilenetv3.zoo.get_spec`, at ``width_mult``, cut where
    DeepLab cuts it) or on an ArchSpec taken as it is; ``fields`` set the other SegSpec fields."""
    if isinstance(backbone, str):
        arch = deeplab_features(get_spec(backbone, width_mult))
    else:
        if width_mult != 1.0:
            raise ValueError("width_mult applies to zoo backbone names; an ArchSpec already holds its widths")
        arch = backbone
    return SegSpec(name=name or f"{head}_{arch.name}", backbone=arch, head=head, **fields)


@dataclass(frozen=True)
class SegEntry:
    """A registered segmentation network: backbone family, head and default options."""

    backbone: str
    head: str
    defaults: dict[str, Any] = field(default_factory=dict)
    notes: str = ""


SEG_MODELS: dict[str, SegEntry] = {
    "lraspp_mobilenet_v3_large": SegEntry("mobilenet_v3_large", "lraspp", {"rf2": "deeplab", "filters": 128},
                                          "Table 7 row 8: the paper's MobileNetV3-Large candidate"),
    "lraspp_mobilenet_v3_small": SegEntry("mobilenet_v3_small", "lraspp", {"rf2": "deeplab", "filters": 128},
                                          "Table 7 row 11: the paper's MobileNetV3-Small candidate"),
    "lraspp_mobilenet_v2": SegEntry("mobilenet_v2", "lraspp", {"rf2": "ssdlite", "filters": 128},
                                    "Table 7 row 4 (rows 9, 10 at widths 0.5, 0.35)"),
    "raspp_mobilenet_v3_large": SegEntry("mobilenet_v3_large", "raspp", {"rf2": "none", "filters": 256},
                                         "Table 7 row 5"),
    "raspp_mobilenet_v3_small": SegEntry("mobilenet_v3_small", "raspp", {"rf2": "none", "filters": 256}),
    "raspp_mobilenet_v2": SegEntry("mobilenet_v2", "raspp", {"rf2": "none", "filters": 256},
                                   "Table 7 row 1: MobileNetV2's DeepLabv3 head"),
}


def list_seg_models() -> list[str]:
    return list(SEG_MODELS)


def get_seg_spec(name: str, width_mult: float = 1.0, **options: Any) -> SegSpec:
    """The SegSpec of a registered network at a backbone width; ``options`` override its defaults."""
    if name not in SEG_MODELS:
        import difflib

        close = difflib.get_close_matches(name, SEG_MODELS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown segmentation model {name!r}.{hint} Known: {', '.join(SEG_MODELS)}")
    entry = SEG_MODELS[name]
    fields = {**entry.defaults, "notes": entry.notes, **options}
    return seg_spec(entry.backbone, entry.head, width_mult=width_mult, name=name + width_suffix(width_mult),
                    **fields)
