"""What ``mnv3 latency`` reports: several runtimes measured on one model (or one ONNX file as it is), with the
per-layer profiles each runtime has, as one plain-JSON dictionary."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from torch import nn

from ..runtime.onnxruntime import profile_onnx
from ..runtime.openvino import profile_openvino
from .measure import FILE_RUNTIMES, measure_latency, measure_onnx_file
from .profile import profile_layers, profile_onnxruntime, profile_onnxruntime_int8
from .targets import DEFAULT_FROZEN


def latency_report(model: nn.Module, runtimes: Sequence[str], *, per_layer: bool = False,
                   resolution: int | None = None, batch: int = 1, threads: int = 1, warmup: int = 10,
                   min_runs: int = 50, min_seconds: float = 2.0, channels_last: bool = True,
                   frozen_method: str = DEFAULT_FROZEN) -> dict[str, Any]:
    """``model`` measured on each of ``runtimes`` (:func:`measure_latency`), each result with its speed-up over
    eager when eager is among them; with ``per_layer`` the eager stage times (:func:`profile_layers`) and ONNX
    Runtime's profiles of the float and int8 models, for the runtimes asked for."""
    common = dict(resolution=resolution, batch=batch, threads=threads)
    results = [measure_latency(model, runtime=runtime, warmup=warmup, min_runs=min_runs, min_seconds=min_seconds,
                               channels_last=channels_last, frozen_method=frozen_method, **common).to_dict()
               for runtime in runtimes]
    layers = ort_profile = int8_profile = None
    if per_layer and "eager" in runtimes:
        layers = [t.to_dict() for t in profile_layers(model, channels_last=channels_last, **common)]
    if per_layer and "onnxruntime" in runtimes:
        ort_profile = profile_onnxruntime(model, **common)
    if per_layer and "onnxruntime-int8" in runtimes:
        int8_profile = profile_onnxruntime_int8(model, **common)
    eager = next((r["median_ms"] for r in results if r["runtime"] == "eager"), None)
    for r in results:
        r["vs_eager"] = round(eager / r["median_ms"], 3) if eager else None
    return {"results": results, "per_layer_eager": layers, "per_layer_onnxruntime": ort_profile,
            "per_layer_onnxruntime_int8": int8_profile}


def file_latency_report(path: str | os.PathLike, runtime: str = "onnxruntime", *, per_layer: bool = False,
                        threads: int = 1, warmup: int = 10, min_runs: int = 50, min_seconds: float = 2.0
                        ) -> dict[str, Any]:
    """An ONNX file timed as it is (:func:`measure_onnx_file`; ``runtime`` one of :data:`FILE_RUNTIMES`) and, with
    ``per_layer``, its per-layer profile under ``per_layer_onnxruntime`` (ONNX Runtime's profiler) or
    ``per_layer_openvino`` (OpenVINO's counters, by layer type and kernel in ``by_op``)."""
    result = measure_onnx_file(path, runtime=runtime, threads=threads, warmup=warmup, min_runs=min_runs,
                               min_seconds=min_seconds).to_dict()
    base = runtime.removesuffix("-int8")
    prof = None
    if per_layer and base == "onnxruntime":
        prof = profile_onnx(path, threads=threads)
        prof.pop("nodes")
    elif per_layer:
        prof = profile_openvino(path, threads=threads, precision="bf16" if base == "openvino-bf16" else "f32")
        prof["by_op"] = prof.pop("by_kind")
        prof.pop("nodes")
    return {"results": [result], f"per_layer_{base.split('-')[0]}": prof}


__all__ = ["FILE_RUNTIMES", "file_latency_report", "latency_report"]
