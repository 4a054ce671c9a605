"""Table 6 of the paper (SSDLite on COCO, 320x320): each row as a DetSpec, its printed parameters and
multiply-adds, and ours beside them.

Counting rule that fits: the TF object-detection API's SSDLite as built by its ``ssdlite_*`` configs, which
produced the table: TF-style anchors (3 on the lowest level, 6 elsewhere: 2034 anchors at 320x320), 91 class
slots per anchor (90 COCO classes + background), the extra layers and both depthwise-separable heads counted, BN
scale and offset counted as parameters, convolution multiply-accumulates only (``MADDS_RULE``), the
post-processing (decoding, NMS) left out. Every V3 row and MnasNet fall within 1.5% that way. Alternatives that do
not fit: torchvision's 6 anchors on every level (3234 anchors) puts parameters 4-9% and multiply-adds 9-22% over
(its V3^Y is exactly torchvision's published 3,440,060 parameters for ``ssdlite320_mobilenet_v3_large``);
the backbones alone are only 25-59% of the parameters, so the heads are in the figures. 90 slots (no background)
instead of 91 changes parameters by 0.2-0.6% and multiply-adds by 0.2-0.4% and fits the parameters slightly
better (``ours_90`` in :func:`paper_comparison`): the table cannot tell the two apart; 91 is what the TF API builds.

Outside 3% (:data:`EXPLAINED`): V2's parameters, 4.50M against 4.3M printed (+4.7%), while its multiply-adds agree
(+0.5%). The row is the MobileNetV2 paper's own figure (its Table 6). The same head on MnasNet-A1, also with a
1280-channel C5, lands within 0.7% of the MnasNet row, and the same paper prints our V2 backbone's classification
count (3.50M; TF-slim's README: 3.47M) as 3.4M: its parameter figures run low. We found no reading of the V2 row
(90 slots: 4.48M; no BN scales: 4.48M; both: 4.46M) that reaches 4.3M.
"""

from __future__ import annotations

from dataclasses import dataclass

from .cost import det_cost
from .spec import DetSpec
from .zoo import get_det_spec

RESOLUTION = 320
TOLERANCE = 0.03


@dataclass(frozen=True)
class Table6Row:
    backbone: str  # as printed
    model: str  # registered name (detection.zoo.DET_MODELS)
    width: float
    map: float
    latency_ms: float
    params_m: float
    madds_b: float

    def spec(self, **options) -> DetSpec:
        return get_det_spec(self.model, self.width, **options)


TABLE6 = (
    Table6Row("V2", "ssdlite_mobilenet_v2", 1.0, 22.1, 162, 4.3, 0.80),
    Table6Row("MnasNet", "ssdlite_mnasnet_a1", 1.0, 23.0, 174, 4.88, 0.84),
    Table6Row("V3", "ssdlite_mobilenet_v3_large", 1.0, 22.0, 137, 4.97, 0.62),
    Table6Row("V3^Y", "ssdlite_mobilenet_v3_large_y", 1.0, 22.0, 119, 3.22, 0.51),
    Table6Row("V3-Small", "ssdlite_mobilenet_v3_small", 1.0, 16.0, 52, 2.49, 0.21),
    Table6Row("V3-Small^Y", "ssdlite_mobilenet_v3_small_y", 1.0, 16.1, 43, 1.77, 0.16),
)

# (backbone as printed, quantity) -> why it is outside TOLERANCE
EXPLAINED = {
    ("V2", "params"): ("the MobileNetV2 paper's own figure: its multiply-adds agree (+0.5%) and the same head on "
                       "MnasNet-A1 fits within 0.7%; that paper prints its V2 backbone's 3.50M as 3.4M too"),
}


def paper_comparison() -> list[dict]:
    """One entry per printed parameter and multiply-add figure of Table 6 (the rows the registry builds): ours
    (91 class slots), ours with 90, the paper's, the relative difference and the explanation where recorded."""
    out = []
    for r in TABLE6:
        cost = det_cost(r.spec(), RESOLUTION)
        cost90 = det_cost(r.spec(num_classes=90), RESOLUTION)
        for quantity, ours, ours90, paper in (("params", cost.params, cost90.params, r.params_m * 1e6),
                                              ("madds", cost.madds, cost90.madds, r.madds_b * 1e9)):
            rel = ours / paper - 1.0
            out.append({"row": r.backbone, "model": r.model, "quantity": quantity, "ours": ours, "ours_90": ours90,
                        "paper": paper, "relative": rel, "relative_90": ours90 / paper - 1.0,
                        "within_tolerance": abs(rel) <= TOLERANCE,
                        "explanation": EXPLAINED.get((r.backbone, quantity))})
    return out
