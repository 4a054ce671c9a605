"""OpenVINO: an ONNX (or IR) file compiled by the CPU plugin for batch-1 latency, and its per-layer counters.

:func:`openvino_compile` sets ``INFERENCE_NUM_THREADS`` = the thread count, one stream, the LATENCY hint and no
core pinning (the OS schedules it, as it does ONNX Runtime's threads), and the inference precision explicitly:
on CPUs with AMX or AVX-512 BF16 OpenVINO's default is bf16, which a float path must not take silently
(``openvino-bf16`` asks for it). With one thread the inference runs on the calling thread, so the ``cpu`` clock
sees all of it. The compile keeps the thread's alternate signal stack (:mod:`.signal_stack`). Needs the
``openvino`` extra.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..extras import require
from .backend import Prepared, check_layout
from .cpu import isa_cap_note, onednn_isa_cap
from .signal_stack import keeping_signal_stack
from .timing import percentile


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


class OpenVINO(Prepared):
    """A model file (or ``ov.Model``) compiled by :func:`openvino_compile` on the fixed input ``x`` (default: a
    seeded random input of the model's shape). ``layout="nhwc"``: the file takes N x H x W x C images, and an
    NCHW ``x`` is reordered for it once, here."""

    package = "openvino"

    def __init__(self, compiled: Any, request: Any, threads: int, version: str, precision: str, used: str) -> None:
        detail = (f"CPU, INFERENCE_NUM_THREADS={threads}, NUM_STREAMS=1, LATENCY hint, no pinning, "
                  f"INFERENCE_PRECISION_HINT={used}") + isa_cap_note(onednn_isa_cap())
        super().__init__("openvino" if precision == "f32" else f"openvino-{precision}", detail, version, threads,
                         {"inference_precision": used})
        self.compiled, self.request = compiled, request
        self.forward: Callable[[Any], Any] | None = None

    @classmethod
    def prepare(cls, source: Any, x: Any = None, *, threads: int = 1, layout: str = "nchw", precision: str = "f32",
                seed: int = 0) -> OpenVINO:
        import numpy as np

        check_layout(layout, runtime="openvino")
        ov = require("openvino", extra="openvino", purpose="the OpenVINO runtime")
        if x is None:
            model = ov.Core().read_model(str(source)) if isinstance(source, (str, os.PathLike)) else source
            shape = tuple(d.get_length() if d.is_static else 1 for d in model.input(0).get_partial_shape())
            feed = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
            source = model
        else:
            feed = x.detach().cpu().float().numpy() if hasattr(x, "detach") else np.asarray(x, np.float32)
            if layout == "nhwc":
                feed = feed.transpose(0, 2, 3, 1)
        compiled = openvino_compile(source, threads, precision)
        request = compiled.create_infer_request()
        request.set_input_tensor(ov.Tensor(np.ascontiguousarray(feed)))  # a copy, made once: the input is fixed
        used = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()  # what the CPU plugin took
        prepared = cls(compiled, request, threads, ov.__version__, precision, used)
        prepared.input = np.ascontiguousarray(feed)
        return prepared

    def run(self) -> Any:
        self.request.infer()
        return self.request.get_output_tensor(0).data.copy()

    def __call__(self, x: Any) -> Any:
        if self.forward is None:  # a request of its own, so the fixed input of run() stays set
            self.forward = openvino_forward(self.compiled)
        return self.forward(x)


def profile_openvino(source: Any, *, threads: int = 1, precision: str = "f32", warmup: int = 5, runs: int = 30,
                     x: Any = None) -> dict[str, Any]:
    """OpenVINO's per-layer profile (``PERF_COUNT``) of a model file compiled as :func:`openvino_compile` does:
    each executed node's median time over ``runs`` inferences, summed by ``"<layer type> (<kernel>)"``
    (``by_kind``; the kernel names the precision that ran, e.g. ``brgconv_avx512_amx_1x1_I8``), and the
    ``nodes`` list, slowest first. Fused layers appear once, under the node OpenVINO kept. The counters add
    their own overhead: compare kinds within a profile, and time without them."""
    import numpy as np

    ov = require("openvino", extra="openvino", purpose="the OpenVINO runtime")
    compiled = openvino_compile(source, threads, precision, perf_count=True)
    if x is None:
        shape = [d.get_length() if d.is_static else 1 for d in compiled.input(0).get_partial_shape()]
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    request = compiled.create_infer_request()
    per_node: dict[str, list[float]] = {}
    kind_of: dict[str, str] = {}
    for i in range(warmup + runs):
        request.infer({0: x})
        if i < warmup:
            continue
        for info in request.profiling_info:
            if info.status == ov.ProfilingInfo.Status.EXECUTED:
                per_node.setdefault(info.node_name, []).append(info.real_time.total_seconds() * 1e3)
                kind_of[info.node_name] = f"{info.node_type} ({info.exec_type})"
    nodes = sorted(({"node": k, "kind": kind_of[k], "ms": percentile(v, 50)} for k, v in per_node.items()),
                   key=lambda r: -r["ms"])
    by_kind: dict[str, float] = {}
    for n in nodes:
        by_kind[n["kind"]] = by_kind.get(n["kind"], 0.0) + n["ms"]
    return {"total_ms": sum(n["ms"] for n in nodes), "by_kind": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
            "nodes": nodes, "precision": compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
            "threads": threads, "runs": runs, "openvino": ov.__version__}
