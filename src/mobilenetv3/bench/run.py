"""``mnv3 bench``: the paper's comparisons measured on this machine in one run (:func:`paper_comparisons`)."""

from __future__ import annotations

import platform
import sys
from collections.abc import Sequence
from typing import Any

import torch

from ..cost import MADDS_RULE, spec_cost
from ..deploy.fold import calibrate_bn_on_noise
from ..extras import require
from ..inputs import example_input
from ..latency.targets import prepare_runtime, target
from ..runtime.cpu import machine_info, pinned_threads
from ..runtime.peer_env import PEER_SETUP_HINT, find_peer_python
from ..runtime.timing import clock_timer, percentile, time_interleaved
from .peers.compare import compare_with_peers
from .peers.prepare import PEER_MODELS, bench_model
from .sections import (
    BENCH_RUNTIMES,
    BENCH_SECTIONS,
    DEFAULT_BENCH_SECTIONS,
    GRID_MULTIPLIERS,
    GRID_RESOLUTIONS,
    QUICK_GRID,
    SECTIONS,
)
from .tasks import DET_RESOLUTION, SEG_SIZE


def check_bench_args(sections: Sequence[str] | str | None, peers: bool, runtime: str, threads: int,
                     resolution: int, multipliers: Sequence[float], resolutions: Sequence[int], rounds: int,
                     warmup: int, min_runs: int, min_seconds: float, clock: str,
                     seg_size: Sequence[int] = SEG_SIZE, det_resolution: int = DET_RESOLUTION) -> list[str]:
    """The sections to run, in :data:`BENCH_SECTIONS` order, after checking every argument of
    :func:`paper_comparisons` (a ValueError naming the bad one; :class:`MissingExtraError` when a section needs
    ONNX Runtime and it is missing)."""
    if sections is None:
        wanted = list(DEFAULT_BENCH_SECTIONS)
    else:
        if isinstance(sections, str):
            sections = [sections]
        wanted = [p.strip() for item in sections for p in str(item).split(",") if p.strip()]
        if not wanted:
            raise ValueError(f"no section given (choose from {', '.join(BENCH_SECTIONS)})")
    unknown = [w for w in wanted if w not in BENCH_SECTIONS]
    if unknown:
        raise ValueError(f"unknown section(s) {', '.join(map(repr, unknown))} "
                         f"(choose from {', '.join(BENCH_SECTIONS)})")
    if peers:
        wanted.append("peers")
    if runtime not in BENCH_RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r} for the bench (choose from {', '.join(BENCH_RUNTIMES)})")
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    clock_timer(clock, threads)
    if len(seg_size) != 2:
        raise ValueError(f"seg_size must be (height, width), got {seg_size!r}")
    sizes = (("resolution", resolution), *(("resolutions", r) for r in resolutions),
             *(("seg_size", v) for v in seg_size), ("det_resolution", det_resolution))
    for name, value in sizes:
        if not isinstance(value, int) or isinstance(value, bool) or value < 3:
            raise ValueError(f"{name} must be integers of at least 3 (the stem kernel), got {value!r}")
    for w in multipliers:
        if not isinstance(w, (int, float)) or isinstance(w, bool) or not 0 < w <= 4:
            raise ValueError(f"multipliers must be numbers in (0, 4], got {w!r}")
    if not multipliers or not resolutions:
        raise ValueError("the grid needs at least one multiplier and one resolution")
    if not isinstance(rounds, int) or rounds < 1 or not isinstance(min_runs, int) or min_runs < 1:
        raise ValueError(f"rounds and min_runs must be positive integers, got {rounds!r} and {min_runs!r}")
    if not isinstance(warmup, int) or warmup < 0 or min_seconds < 0:
        raise ValueError(f"warmup and min_seconds must not be negative, got {warmup!r} and {min_seconds!r}")
    ordered = [s for s in BENCH_SECTIONS if s in wanted]
    needs_ort = [s for s in ordered if s == "int8"]
    if needs_ort:
        purpose = "the int8 section (ONNX Runtime)"
        require("onnxruntime", purpose=purpose)
        require("onnx", purpose=purpose)
    if any(s in SECTIONS for s in ordered):
        target(runtime).require()  # the chosen runtime's extra (ONNX Runtime, OpenVINO), before any work
    return ordered


def paper_comparisons(sections: Sequence[str] | str | None = None, *, runtime: str = "eager", threads: int = 1,
                      resolution: int = 224, quick: bool = False, multipliers: Sequence[float] | None = None,
                      resolutions: Sequence[int] | None = None, rounds: int = 3, warmup: int = 5,
                      min_runs: int = 20, min_seconds: float = 0.5, clock: str = "wall", peers: bool = False,
                      peer_python: str | None = None, progress: bool = False, seg_size: Sequence[int] = SEG_SIZE,
                      det_resolution: int = DET_RESOLUTION) -> dict[str, Any]:
    """The paper's latency comparisons measured on this machine in one run; what ``mnv3 bench`` prints.

    Sections (:data:`BENCH_SECTIONS`; default :data:`DEFAULT_BENCH_SECTIONS`, ``peers=True`` adds ``peers``):

    ``v3-vs-v2``
        V3-Large 1.0 against MobileNetV2 1.0 and V3-Small 1.0 against V2 0.35: our latency ratio next to the
        ratio of the paper's Table 3 figures on each Pixel phone.
    ``hswish``
        Table 5 on V3-Large 1.0: ReLU everywhere, h-swish from the first layer with 16 / 80 (the model itself) /
        112 channels (:data:`TABLE5`, :func:`hswish_from`), each with the fused and the naive h-swish
        (:func:`with_naive_hswish`); latency relative to the ReLU variant next to the paper's.
    ``grid``
        Figure 7: Large and Small at every multiplier x resolution (``multipliers`` x ``resolutions``; default
        :data:`GRID_MULTIPLIERS` x :data:`GRID_RESOLUTIONS`, ``quick``: :data:`QUICK_GRID`); latency relative
        to 1.0 at 224 next to Table 3's where it has both.
    ``int8``
        Table 4: Large and Small in ONNX Runtime, float against int8 (``onnxruntime`` vs ``onnxruntime-int8``);
        our speed-up next to the paper's (its Table 3 over its Table 4), phone by phone.
    ``segmentation``
        Table 7's rows 4, 6, 7 and 8 (LR-ASPP and R-ASPP on V3-Large and V2, 19 classes) at ``seg_size`` (default
        512x1024, the paper's "CPU (h)"): LR-ASPP / R-ASPP and V3 / V2 next to the paper's Pixel 3 ratios.
    ``detection``
        Table 6's SSDLite networks (V2, MnasNet-A1, V3, V3-Y, V3-Small, V3-Small-Y; 91 classes) at
        ``det_resolution`` (default 320), head outputs without NMS: each against V2 next to the paper's Pixel 1
        ratio.
    ``peers``
        torchvision's and timm's Large and Small, eager and exported to ONNX Runtime, next to ours
        (:func:`compare_with_peers`: they run in a subprocess of the peer environment, which needs a newer
        torch, taking turns with this process). Without a peer environment the section is skipped with a
        message saying how to make one.

    Each section's models are prepared first (random weights, BatchNorm statistics estimated on noise) and then
    timed in ``rounds`` interleaved rounds on ``runtime`` (``int8``: ONNX Runtime) with ``threads`` threads, batch
    1, at ``resolution`` (the grid: its own resolutions); a row's figure is the median of its rounds' medians,
    beside its analytic multiply-adds and parameters (:func:`~mobilenetv3.cost.spec_cost`) and the paper's
    figure where it has one. The paper measured TFLite on Pixel phones, so compare ratios, not milliseconds.
    Every section records the CPU, threads, runtime, clock and date. ``clock="cpu"`` times the calling thread's
    CPU time (for a machine busy with other work; one thread only). ``progress``: a progress bar on stderr.
    """
    multipliers = tuple(multipliers) if multipliers is not None else QUICK_GRID[0] if quick else GRID_MULTIPLIERS
    resolutions = tuple(resolutions) if resolutions is not None else QUICK_GRID[1] if quick else GRID_RESOLUTIONS
    ordered = check_bench_args(sections, peers, runtime, threads, resolution, multipliers, resolutions, rounds,
                                warmup, min_runs, min_seconds, clock, seg_size, det_resolution)
    python = find_peer_python(peer_python) if "peers" in ordered else None  # a bad --peer-python fails here
    settings = {"runtime": runtime, "threads": threads, "resolution": resolution, "clock": clock,
                "rounds": rounds, "warmup": warmup, "min_runs": min_runs, "min_seconds": min_seconds,
                "multipliers": list(multipliers), "resolutions": list(resolutions), "quick": quick,
                "seg_size": list(seg_size), "det_resolution": det_resolution}
    plans = {name: SECTIONS[name](settings) for name in ordered if name in SECTIONS}
    from tqdm import tqdm

    total = sum(len(entries) * (1 + rounds) for entries, _ in plans.values())
    bar = tqdm(total=total, desc="bench", unit="step", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    timing = dict(rounds=rounds, warmup=warmup, min_runs=min_runs, min_seconds=min_seconds, clock=clock)
    result: dict[str, Any] = {"machine": machine_info(), "settings": settings, "versions": _versions(),
                              "madds_rule": _madds_rule(), "sections": {}}
    try:
        with pinned_threads(threads):
            for name in ordered:
                bar.set_description(name)
                measured = {**_measured(runtime if name != "int8" else "onnxruntime vs onnxruntime-int8"),
                            "threads": threads, "clock": clock}
                if name == "peers":
                    result["sections"][name] = _peers_section(python, settings, timing, bar, measured)
                    continue
                entries, summarise = plans[name]
                rows = _measure_entries(entries, threads, timing, bar)
                result["sections"][name] = {**summarise(rows), "measured": measured, "rows": rows}
    finally:
        bar.close()
    result["machine"]["load_avg_1m_end"] = machine_info()["load_avg_1m"]
    return result


def _measured(runtime: str) -> dict[str, Any]:
    info = machine_info()
    return {"cpu": info["cpu"], "runtime": runtime, "date": info["date"], "load_avg_1m": info["load_avg_1m"]}


def _versions() -> dict[str, str | None]:
    import importlib.util

    from .. import __version__

    ort = None
    if importlib.util.find_spec("onnxruntime") is not None:
        ort = require("onnxruntime").__version__
    return {"mobilenetv3": __version__, "torch": torch.__version__, "onnxruntime": ort,
            "python": platform.python_version()}


def _madds_rule() -> str:
    return MADDS_RULE


def _measure_entries(entries: list[dict], threads: int, timing: dict, bar: Any) -> list[dict]:
    """Prepare every entry's runtime, time them all in interleaved rounds, and return one row each."""
    runners = {}
    for i, e in enumerate(entries):
        bar.set_postfix_str(f"preparing {e['label']}", refresh=True)
        if "build" in e:  # a task network (.tasks): its own module, input shape and cost
            shape = e["input_shape"]
            model = calibrate_bn_on_noise(e["build"]().eval(), tuple(shape[-2:]), batches=1, batch_size=2).eval()
            x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        else:
            model = bench_model(e["spec"], e["resolution"])
            x = example_input(model, e["resolution"])
        runners[i] = prepare_runtime(e["runtime"], model, x, threads).run
        bar.update()
    bar.set_postfix_str("timing", refresh=True)
    medians = time_interleaved(runners, on_step=lambda _: bar.update(), **timing)
    rows = []
    for i, e in enumerate(entries):
        cost = e["cost"]() if "cost" in e else spec_cost(e["spec"], e["resolution"])
        row = {k: v for k, v in e.items() if k not in ("spec", "build", "cost", "input_shape")}
        row.update(model=e["model"] if "model" in e else e["spec"].name, params=cost.params, madds=cost.madds,
                   median_ms=percentile(medians[i], 50), round_medians_ms=medians[i])
        rows.append(row)
    return rows


def _peers_section(python: str | None, settings: dict, timing: dict, bar: Any, measured: dict) -> dict[str, Any]:
    title = "ours against torchvision and timm (same run)"
    if python is None:
        message = (f"no peer environment found ($MNV3_PEER_PYTHON, .peer-venv): skipped; "
                   f"{PEER_SETUP_HINT}")
        return {"title": title, "skipped": message, "measured": measured, "rows": []}
    import importlib.util

    ours = ["eager", "frozen"] + (["onnxruntime"] if importlib.util.find_spec("onnxruntime") else [])
    models = tuple(PEER_MODELS)
    # the peers' preparation, ours prepared per model, then ours and (about 5) peer paths per model per round
    bar.total += 1 + len(ours) * len(models) + (len(ours) + 5) * len(models) * timing["rounds"]
    bar.set_postfix_str(f"preparing the peers ({python})", refresh=True)
    try:
        res = compare_with_peers(models, resolution=settings["resolution"], threads=settings["threads"], ours=ours,
                                 peer_python=python, on_step=lambda _: bar.update(), **timing)
    except RuntimeError as e:  # the worker failed: say why, keep the other sections
        return {"title": title, "skipped": f"the peer worker failed: {e}; {PEER_SETUP_HINT}", "measured": measured,
                "rows": []}
    return {"title": title, "paper": None, "measured": measured, "peer_python": res["peer_python"],
            "peer_versions": {k: v for k, v in res["peer"].items() if k != "details"}, "rows": res["rows"],
            "comparisons": [],
            "notes": ["torchvision and timm need a newer torch than the core's, so they run in a subprocess of the "
                      "peer environment, taking turns with this process round by round (never at the same time)",
                      "vs_best_peer: the peers' fastest float path for the model / this path (above 1: faster)"]}


__all__ = ["check_bench_args", "paper_comparisons"]
