"""OpenVINO CPU models compiled for latency, and a forward function over them."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..extras import require
from .signal_stack import keeping_signal_stack


def openvino_compile(source: Any, threads: int = 1, precision: str = "f32", perf_count: bool = False) -> Any:
    """An OpenVINO CPU model compiled for latency from ``source`` (an ONNX or IR file, or an ``ov.Model``):
    ``INFERENCE_NUM_THREADS=threads``, one stream, the LATENCY hint, no core pinning (the OS schedules it, as it
    does ONNX Runtime's threads) and ``precision`` as the inference precision (``f32``, or ``bf16``: OpenVINO's
    default on CPUs with AMX / AVX-512 BF16, which a float path must not take silently); ``perf_count`` turns on
    the per-layer counters :func:`profile_openvino` reads."""
    ov = require("openvino", extra="openvino", purpose="the OpenVINO runtime")
    core = ov.Core()
    model = core.read_model(str(source)) if isinstance(source, (str, os.PathLike)) else source
    config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
              "ENABLE_CPU_PINNING": False, "INFERENCE_PRECISION_HINT": precision, "PERF_COUNT": perf_count}
    with keeping_signal_stack():  # see there: OpenVINO's own alternate stack can outlive its memory
        return core.compile_model(model, "CPU", config)


def openvino_forward(compiled: Any) -> Callable[[Any], Any]:
    """A function running a compiled OpenVINO model on one float32 array and returning its first output (a
    new array)."""
    import numpy as np

    request = compiled.create_infer_request()

    def forward(x: Any) -> Any:
        return request.infer({0: np.ascontiguousarray(x, np.float32)})[0].copy()

    return forward
