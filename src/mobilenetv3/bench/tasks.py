"""The bench's task sections: Table 7's segmentation networks and Table 6's SSDLite detectors, timed as the
classifiers are (random weights with BatchNorm statistics from noise, batch 1, interleaved rounds).

Entries here carry what the classifier sections take from an ``ArchSpec``: ``build`` (the module), ``input_shape``
and ``cost`` (exact parameters and multiply-adds at the timed size), which :func:`.run.measure_entries` uses.
The paper timed Table 7 on a Pixel 3 and Table 6 on a Pixel 1 (large core, TFLite), so only ratios compare.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..detection import RawOutputs, build_detection, det_cost
from ..detection.paper import TABLE6
from ..segmentation import build_segmentation, seg_cost
from ..segmentation.paper import TABLE7

# Table 7, "CPU (h)": ms on a Pixel 3 large core at 512x1024, rows 4 (V2, LR-ASPP F=128), 6 (V3 R-ASPP), 7 (V3
# LR-ASPP F=256), 8 (V3 LR-ASPP F=128)
SEG_ROWS = (4, 6, 7, 8)
PAPER_SEG_HALF_MS = {1: 1020, 2: 793, 3: 786, 4: 766, 5: 906, 6: 668, 7: 659, 8: 657, 9: 415, 10: 354, 11: 327}
SEG_SIZE = (512, 1024)
DET_RESOLUTION = 320
# (numerator, denominator, what the pair shows)
SEG_PAIRS = ((7, 6, "LR-ASPP / R-ASPP (V3, rows 7/6)"), (8, 4, "V3 / V2 (LR-ASPP F=128, rows 8/4)"))
DET_PAIRS = (("V3", "V2", "V3 / V2"), ("V3^Y", "V2", "V3-Y / V2"), ("V3-Small", "V2", "V3-Small / V2"),
             ("V3-Small^Y", "V2", "V3-Small-Y / V2"), ("MnasNet", "V2", "MnasNet / V2"))


def fastest_ratio(a: dict, b: dict) -> float:
    """The ratio of two rows' fastest rounds: on a shared machine other tenants only add time, so the fastest
    round is the most repeatable figure."""
    return min(a["round_medians_ms"]) / min(b["round_medians_ms"])


def pair_comparisons(rows: dict[Any, dict], pairs: tuple, phone: str) -> list[dict]:
    out = []
    for a, b, what in pairs:
        ra, rb = rows[a], rows[b]
        out.append({"pair": what, "latency_ratio": ra["median_ms"] / rb["median_ms"],
                    "fastest_ratio": fastest_ratio(ra, rb), "madds_ratio": ra["madds"] / rb["madds"],
                    "paper_latency_ratio": ra["paper_ms"][phone] / rb["paper_ms"][phone],
                    "paper_madds_ratio": ra["paper_madds_b"] / rb["paper_madds_b"]})
    return out


def segmentation_heads(s: dict) -> tuple[list[dict], Callable]:
    """Table 7's rows 4, 6, 7 and 8 at ``seg_size`` (default 512x1024, the paper's half resolution), 19 classes."""
    h, w = s["seg_size"]
    entries = []
    for r in TABLE7:
        if r.row not in SEG_ROWS:
            continue
        spec = r.spec()
        entries.append({"label": f"row {r.row}: {r.backbone} {'LR-ASPP' if 'lraspp' in r.model else 'R-ASPP'} "
                                 f"F={r.filters}", "model": spec.name, "row": r.row, "resolution": [h, w],
                        "runtime": s["runtime"], "build": lambda spec=spec: build_segmentation(spec),
                        "input_shape": (1, 3, h, w), "cost": lambda spec=spec: seg_cost(spec, (h, w)),
                        "paper_ms": {"Pixel 3": PAPER_SEG_HALF_MS[r.row]}, "paper_madds_b": r.madds_b})

    def summarise(rows: list[dict]) -> dict:
        by_row = {r["row"]: r for r in rows}
        return {"title": "segmentation heads (Table 7)",
                "paper": "Table 7, CPU (h): ms on a Pixel 3 large core at 512x1024 (TFLite, float), Cityscapes "
                         "19 classes",
                "comparisons": pair_comparisons(by_row, SEG_PAIRS, "Pixel 3"),
                "notes": [f"input {h}x{w}, 19 classes; MAdds at that size (the paper's MAdds column is at "
                          "1024x2048: its ratios are compared)",
                          "ratio: median of rounds; fastest: the fastest rounds' ratio (the repeatable one on a "
                          "shared machine)"]}

    return entries, summarise


def ssdlite_detectors(s: dict) -> tuple[list[dict], Callable]:
    """Table 6's six SSDLite networks at ``det_resolution`` (default 320), 91 classes, head outputs only."""
    res = s["det_resolution"]
    entries = []
    for r in TABLE6:
        spec = r.spec()
        entries.append({"label": f"SSDLite {r.backbone.replace('^Y', '-Y')}", "model": spec.name,
                        "backbone": r.backbone, "resolution": res, "runtime": s["runtime"],
                        "build": lambda spec=spec: RawOutputs(build_detection(spec)), "input_shape": (1, 3, res, res),
                        "cost": lambda spec=spec: det_cost(spec, res), "paper_ms": {"Pixel 1": r.latency_ms},
                        "paper_madds_b": r.madds_b})

    def summarise(rows: list[dict]) -> dict:
        by_backbone = {r["backbone"]: r for r in rows}
        return {"title": "SSDLite detectors (Table 6)",
                "paper": "Table 6: ms on a Pixel 1 large core at 320x320 (TFLite, float), COCO 91 classes",
                "comparisons": pair_comparisons(by_backbone, DET_PAIRS, "Pixel 1"),
                "notes": [f"input {res}x{res}, 91 classes; class logits and box regressions (no decoding or NMS, "
                          "the same for every backbone)",
                          "ratio: median of rounds; fastest: the fastest rounds' ratio (the repeatable one on a "
                          "shared machine)"]}

    return entries, summarise


__all__ = ["DET_PAIRS", "DET_RESOLUTION", "PAPER_SEG_HALF_MS", "SEG_PAIRS", "SEG_ROWS", "SEG_SIZE",
           "fastest_ratio", "pair_comparisons", "segmentation_heads", "ssdlite_detectors"]
