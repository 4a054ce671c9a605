"""Semantic segmentation on MobileNet backbones (section 6.4): LR-ASPP and R-ASPP heads, their specs and costs.

- :mod:`.backbone`: RF2 (the reduced last block, DeepLab's and SSDLite's forms) and the stride-8 skip taps.
- :mod:`.spec`: :class:`SegSpec` (backbone ArchSpec + head options), JSON round trip, validation.
- :mod:`.model`: :class:`SegmentationModel` and the two heads.
- :mod:`.zoo`: SegSpecs from zoo backbones, the registry :data:`SEG_MODELS`.
- :mod:`.builders`: :func:`build_segmentation` and one builder per registered network.
- :mod:`.cost`: exact parameters and multiply-adds (:func:`seg_cost`).
- :mod:`.paper`: Tables 7 and 8 as specs, the printed figures and ours beside them.
"""

from .backbone import LOW_TAPS, RF2_FORMS, LowTap, find_low_tap, reduce_last_block
from .builders import (
    build_segmentation,
    lraspp_mobilenet_v2,
    lraspp_mobilenet_v3_large,
    lraspp_mobilenet_v3_small,
    raspp_mobilenet_v2,
    raspp_mobilenet_v3_large,
    raspp_mobilenet_v3_small,
)
from .cost import seg_cost
from .model import LRASPPHead, RASPPHead, SegmentationModel
from .spec import FIGURE10_POOLING, HEADS, POOLINGS, SegSpec, SegSpecError
from .zoo import SEG_MODELS, get_seg_spec, list_seg_models, seg_spec

__all__ = [
    "FIGURE10_POOLING", "HEADS", "LOW_TAPS", "LRASPPHead", "LowTap", "POOLINGS", "RASPPHead", "RF2_FORMS",
    "SEG_MODELS", "SegSpec", "SegSpecError", "SegmentationModel", "build_segmentation", "find_low_tap",
    "get_seg_spec", "list_seg_models", "lraspp_mobilenet_v2", "lraspp_mobilenet_v3_large",
    "lraspp_mobilenet_v3_small", "raspp_mobilenet_v2", "raspp_mobilenet_v3_large", "raspp_mobilenet_v3_small",
    "reduce_last_block", "seg_cost", "seg_spec",
]
