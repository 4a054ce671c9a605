"""The sections of ``mnv3 bench``: for each, the models to time and how their rows compare with the paper.

A section is a function of the settings (``runtime``, ``resolution``, ``multipliers``, ``resolutions``) returning
its entries (one model each: label, spec, resolution, runtime, the paper's figures) and a ``summarise(rows)``
that adds the comparisons once every entry has its ``median_ms``, ``params`` and ``madds``. :data:`SECTIONS`
names them; ``peers`` (:mod:`.peers`) is run apart, since it times models of another environment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..latency.targets import CORE_RUNTIMES
from ..zoo import REGISTRY, get_spec
from .paper import PAPER_FLOAT_MS, PAPER_INT8_MS, PHONES, TABLE5
from .table5 import table5_spec
from .tasks import segmentation_heads, ssdlite_detectors

BENCH_SECTIONS = ("v3-vs-v2", "hswish", "grid", "int8", "segmentation", "detection", "peers")
DEFAULT_BENCH_SECTIONS = ("v3-vs-v2", "hswish", "grid", "int8")
BENCH_RUNTIMES = (*CORE_RUNTIMES, "openvino")  # OpenVINO (float) with its extra
# Figure 7: multipliers at 224, resolutions at 1.0; the bench times the whole cross product of the two.
GRID_MULTIPLIERS = (0.35, 0.5, 0.75, 1.0, 1.25)
GRID_RESOLUTIONS = (96, 128, 160, 192, 224, 256)
QUICK_GRID = ((0.5, 1.0), (128, 224))
_FAMILY_LABEL = {"mobilenet_v3_large": "V3-Large", "mobilenet_v3_small": "V3-Small", "mobilenet_v2": "V2"}


def _width(w: float) -> str:
    return "1.0" if w == 1 else f"{w:g}"


def _paper(table: dict, family: str, width: float, resolution: int) -> dict[str, float] | None:
    ms = table.get((family, width)) if resolution == 224 else None
    return dict(zip(PHONES, ms, strict=True)) if ms else None


def _ratios(a: dict[str, float] | None, b: dict[str, float] | None) -> dict[str, float] | None:
    return {p: a[p] / b[p] for p in PHONES} if a and b else None


def _zoo_entry(family: str, width: float, resolution: int, table: dict = PAPER_FLOAT_MS) -> dict[str, Any]:
    paper = (REGISTRY[family].paper or {}).get(width) if resolution == 224 else None
    return {"label": f"{_FAMILY_LABEL[family]} {_width(width)}", "spec": get_spec(family, width),
            "resolution": resolution, "family": family, "width_mult": width,
            "paper_params_m": paper[0] if paper else None, "paper_madds_m": paper[1] if paper else None,
            "paper_ms": _paper(table, family, width, resolution)}


def v3_against_v2(s: dict) -> tuple[list[dict], Callable]:
    """Table 3: V3-Large 1.0 against V2 1.0 and V3-Small 1.0 against V2 0.35 (their latency and MAdds ratios)."""
    r = s["resolution"]
    entries = [_zoo_entry(f, w, r) for f, w in (("mobilenet_v3_large", 1.0), ("mobilenet_v2", 1.0),
                                                ("mobilenet_v3_small", 1.0), ("mobilenet_v2", 0.35))]
    for e in entries:
        e["runtime"] = s["runtime"]

    def summarise(rows: list[dict]) -> dict:
        comparisons = []
        for a, b in ((rows[0], rows[1]), (rows[2], rows[3])):
            comparisons.append({
                "pair": f"{a['label']} / {b['label']}", "latency_ratio": a["median_ms"] / b["median_ms"],
                "madds_ratio": a["madds"] / b["madds"], "paper_latency_ratio": _ratios(a["paper_ms"], b["paper_ms"]),
                "paper_madds_ratio": a["paper_madds_m"] / b["paper_madds_m"] if a["paper_madds_m"] else None})
        return {"title": "MobileNetV3 against MobileNetV2 (float)",
                "paper": "Table 3: float, ms on a single large core of Pixel 1/2/3, TFLite, batch 1, 224x224",
                "comparisons": comparisons,
                "notes": ["latency_ratio: V3 / V2 latency (below 1: V3 is faster), next to the paper's per phone",
                          "V3-Small's paper MAdds (66M) is not reproduced by Table 2 as printed (about 57M); see "
                          "NOTES.md"]}

    return entries, summarise


def hswish_ablation(s: dict) -> tuple[list[dict], Callable]:
    """Table 5: V3-Large 1.0 with h-swish from 16, 80 (the model) and 112 channels, fused and naive, and ReLU."""
    entries = []
    for key, v in TABLE5.items():
        for naive in (False, True) if v.channels is not None else (False,):
            entries.append({"label": v.label + (" naive" if naive else ""), "spec": table5_spec(key, naive),
                            "resolution": s["resolution"], "runtime": s["runtime"], "variant": key,
                            "hswish": "none" if v.channels is None else "naive" if naive else "fused",
                            "paper_ms": {"Pixel 1": v.paper_naive_ms if naive else v.paper_ms}
                            if s["resolution"] == 224 else None})

    def summarise(rows: list[dict]) -> dict:
        relu = rows[0]
        for r in rows:
            r["vs_relu"] = r["median_ms"] / relu["median_ms"]
            r["paper_vs_relu"] = r["paper_ms"]["Pixel 1"] / TABLE5["relu"].paper_ms if r["paper_ms"] else None
        fused = {r["variant"]: r for r in rows if r["hswish"] == "fused"}
        comparisons = [{"variant": TABLE5[r["variant"]].label, "naive_vs_fused": r["median_ms"] /
                        fused[r["variant"]]["median_ms"],
                        "paper_naive_vs_fused": TABLE5[r["variant"]].paper_naive_ms / TABLE5[r["variant"]].paper_ms}
                       for r in rows if r["hswish"] == "naive"]
        return {"title": "h-swish ablation on MobileNetV3-Large 1.0 (Table 5)",
                "paper": "Table 5: ms on a Pixel 1 large core, optimised and naive ('no-opt') h-swish",
                "comparisons": comparisons,
                "notes": ["vs_relu: latency / the ReLU variant's (paper: / 50.5 ms); h-swish @N: from the first "
                          "layer with N channels on (ReLU before it, the stem included, except V3-Large's own "
                          "h-swish stem); naive: x * relu6(x + 3) / 6 as four ops, SE's hard sigmoid fused",
                          "multiply-adds and parameters are the same for every variant"]}

    return entries, summarise


def multiplier_resolution_grid(s: dict) -> tuple[list[dict], Callable]:
    """Figure 7: Large and Small at every multiplier x resolution of the settings, against 1.0 at 224."""
    entries = []
    for family in ("mobilenet_v3_large", "mobilenet_v3_small"):
        for w in s["multipliers"]:
            for r in s["resolutions"]:
                e = _zoo_entry(family, w, r)
                e.update(label=f"{e['label']} @{r}", runtime=s["runtime"])
                entries.append(e)

    def summarise(rows: list[dict]) -> dict:
        for r in rows:
            ref = next((q for q in rows if q["family"] == r["family"] and q["width_mult"] == 1.0
                        and q["resolution"] == 224), None)
            r["gmadds_per_s"] = r["madds"] / r["median_ms"] / 1e6
            r["vs_ref"] = r["median_ms"] / ref["median_ms"] if ref else None
            r["paper_vs_ref"] = _ratios(r["paper_ms"], ref["paper_ms"]) if ref else None
        return {"title": "multipliers x resolutions (Figure 7)",
                "paper": "Figure 7 plots accuracy against Pixel 1 latency (its values are not in the text); "
                         "Table 3 gives 1.0 and 0.75 at 224",
                "comparisons": [],
                "notes": ["vs_ref: latency / the same family's 1.0 at 224, next to the paper's (Table 3) where it "
                          "has both", "GMAdd/s: multiply-adds per second achieved"]}

    return entries, summarise


def float_against_int8(s: dict) -> tuple[list[dict], Callable]:
    """Table 4: Large and Small in ONNX Runtime, float against int8."""
    entries = []
    for family in ("mobilenet_v3_large", "mobilenet_v3_small"):
        for runtime, table in (("onnxruntime", PAPER_FLOAT_MS), ("onnxruntime-int8", PAPER_INT8_MS)):
            e = _zoo_entry(family, 1.0, s["resolution"], table)
            e.update(label=f"{e['label']} {'int8' if runtime.endswith('int8') else 'float'}", runtime=runtime)
            entries.append(e)

    def summarise(rows: list[dict]) -> dict:
        comparisons = [{"model": f["label"].rsplit(" ", 1)[0],
                        "int8_speedup": f["median_ms"] / q["median_ms"],
                        "paper_int8_speedup": _ratios(f["paper_ms"], q["paper_ms"])}
                       for f, q in zip(rows[::2], rows[1::2], strict=True)]
        return {"title": "float against int8 (Table 4)",
                "paper": "Table 3 (float) and Table 4 (quantised): ms on Pixel 1/2/3 large cores, TFLite",
                "comparisons": comparisons,
                "notes": ["int8_speedup: float ms / int8 ms, both in ONNX Runtime (int8: QDQ from "
                          "mobilenetv3.deploy.quantize, calibrated on noise: the speed does not depend on it)",
                          "top-1 accuracy is not measured here (random weights)"]}

    return entries, summarise


# section name -> its plan, in the order the bench runs them (peers, the last of BENCH_SECTIONS, is run apart)
SECTIONS: dict[str, Callable[[dict], tuple[list[dict], Callable]]] = {
    "v3-vs-v2": v3_against_v2, "hswish": hswish_ablation, "grid": multiplier_resolution_grid,
    "int8": float_against_int8, "segmentation": segmentation_heads, "detection": ssdlite_detectors,
}


__all__ = ["BENCH_RUNTIMES", "BENCH_SECTIONS", "DEFAULT_BENCH_SECTIONS", "GRID_MULTIPLIERS", "GRID_RESOLUTIONS",
           "QUICK_GRID", "SECTIONS", "float_against_int8", "hswish_ablation", "multiplier_resolution_grid",
           "v3_against_v2"]
