"""Latency measured the paper's way: batch 1, one thread by default, warm-up runs, then the median of many runs.

:func:`measure_latency` prepares a model on one of :data:`~.targets.RUNTIMES`, pins the thread count (PyTorch's
intra-op threads, ONNX Runtime's ``intra_op_num_threads``, OpenVINO's ``INFERENCE_NUM_THREADS``), times it with
:func:`~mobilenetv3.runtime.timing.time_callable`, and records what is needed to compare figures later: input
shape, threads, runtime and its version, CPU model, load average and date. :func:`measure_onnx_file` times a file
as it is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..extras import require
from ..inputs import as_model, resolve_input
from ..runtime.cpu import machine_info, pinned_threads
from ..runtime.onnxruntime import OnnxRuntime
from ..runtime.openvino import OpenVINO
from ..runtime.timing import TimingStats, clock_timer, time_callable
from ..spec import ArchSpec
from .targets import DEFAULT_FROZEN, prepare_runtime, target

FILE_RUNTIMES = ("onnxruntime", "openvino", "openvino-bf16")
INT8_OPS = {"QuantizeLinear", "QLinearConv", "ConvInteger", "MatMulInteger"}


@dataclass(frozen=True)
class LatencyResult:
    """One latency measurement and everything needed to compare it with another."""

    model: str
    runtime: str
    detail: str
    input_shape: tuple[int, ...]
    threads: int
    warmup: int
    stats: TimingStats
    runtime_version: str
    machine: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median_ms(self) -> float:
        return self.stats.median_ms

    def to_dict(self) -> dict[str, Any]:
        d = {"model": self.model, "runtime": self.runtime, "detail": self.detail,
             "input_shape": list(self.input_shape), "threads": self.threads, "warmup": self.warmup}
        d.update(asdict(self.stats))
        d.update({"runtime_version": self.runtime_version, "torch_version": torch.__version__})
        d.update(self.machine)
        d.update(self.extra)
        return d


def model_name(model: nn.Module) -> str:
    """The name of the module's spec (a classifier's, or a segmentation or detection network's), else its class
    name."""
    name = getattr(getattr(model, "spec", None), "name", None)
    return name if isinstance(name, str) else type(model).__name__


def measure_latency(model: nn.Module | ArchSpec | str, *, runtime: str = "eager", resolution: int | None = None,
                    batch: int = 1, threads: int = 1, warmup: int = 10, min_runs: int = 50,
                    min_seconds: float = 2.0, max_seconds: float = 120.0, x: torch.Tensor | None = None,
                    channels_last: bool = True, frozen_method: str = DEFAULT_FROZEN,
                    calibration: Sequence[Any] | None = None, clock: str = "wall") -> LatencyResult:
    """Median latency (and p10/p90/mean) of one forward pass of ``model`` on ``runtime``.

    ``model``: a module (its weights are used), a spec, a zoo name or a spec file (random weights: latency does
    not depend on them). The input is ``x`` or a seeded random ``(batch, C, resolution, resolution)`` tensor;
    ``calibration`` (arrays shaped like it) calibrates the ``onnxruntime-int8`` and ``openvino-int8`` runtimes.
    ``clock``: ``wall`` or ``cpu`` (the calling thread's CPU time, one thread only; see ``CLOCKS``).
    The model is measured in eval mode; its own mode and the thread count are restored afterwards.
    """
    chosen = target(runtime)
    timer = clock_timer(clock, threads)
    chosen.require()
    model = as_model(model)
    x = resolve_input(model, x, resolution, batch, require_float32=chosen.float32_only)
    info = machine_info()
    was_training = model.training
    try:
        with pinned_threads(threads) as used:
            prepared = prepare_runtime(runtime, model, x, used, channels_last=channels_last,
                                       frozen_method=frozen_method, calibration=calibration)
            stats = time_callable(prepared.run, warmup=warmup, min_runs=min_runs, min_seconds=min_seconds,
                                  max_seconds=max_seconds, timer=timer)
    finally:
        model.train(was_training)
    return LatencyResult(model_name(model), runtime, prepared.detail, tuple(x.shape), prepared.threads, warmup,
                         stats, prepared.version, info, {**prepared.extra, "clock": clock})


def measure_onnx_file(path: str | os.PathLike, *, runtime: str = "onnxruntime", threads: int = 1, warmup: int = 10,
                      min_runs: int = 50, min_seconds: float = 2.0, max_seconds: float = 120.0, seed: int = 0
                      ) -> LatencyResult:
    """Latency of an ONNX file as it is (say one written by ``mnv3 export --int8``) on a seeded random input of
    its shape (symbolic dimensions taken as 1), in ``runtime``: ``onnxruntime`` (the session ``ort_session``
    sets up), ``openvino`` (``openvino_compile``, f32 inference precision) or ``openvino-bf16``; the
    ``-int8`` names are accepted too, since the file decides.

    The runtime is reported with ``-int8`` (``onnxruntime-int8``, ``openvino-int8``) when the graph holds
    quantisation nodes.
    """
    base = runtime.removesuffix("-int8")
    if base not in FILE_RUNTIMES:
        raise ValueError(f"an ONNX file runs in {', '.join(FILE_RUNTIMES)} (or their -int8 names), not {runtime!r}")
    onnx = require("onnx", purpose="reading an ONNX file")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    int8 = bool({n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node} & INT8_OPS)
    info = machine_info()
    if base == "onnxruntime":
        prepared = OnnxRuntime.prepare(path, threads=threads, seed=seed)
        prepared.described(before=f"{path.name}: ", extra={"file": str(path)})
    else:
        prepared = OpenVINO.prepare(path, threads=threads, seed=seed,
                                    precision="bf16" if base == "openvino-bf16" else "f32")
        prepared.described(before=f"{path.name}: OpenVINO, ", extra={"file": str(path)})
    extra = prepared.extra
    stats = time_callable(prepared.run, warmup=warmup, min_runs=min_runs, min_seconds=min_seconds,
                          max_seconds=max_seconds)
    name = f"{base}-int8" if int8 and base != "openvino-bf16" else base
    if int8 and base == "openvino-bf16":
        extra["int8_file"] = True
    return LatencyResult(path.stem, name, prepared.detail, tuple(prepared.input.shape), threads, warmup, stats,
                         prepared.version, info, extra)


__all__ = ["FILE_RUNTIMES", "LatencyResult", "measure_latency", "measure_onnx_file", "model_name"]
