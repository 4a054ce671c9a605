"""Latency measured the paper's way: batch 1, one thread by default, warm-up runs, then the median of many runs.

The harness (:func:`time_callable`) runs a callable until it has at least ``min_runs`` timed runs *and* at least
``min_seconds`` of timing, then reports the median, p10, p90 and mean. :func:`measure_latency` builds a model's
runtime, pins the thread count (PyTorch's intra-op threads, ONNX Runtime's ``intra_op_num_threads``, OpenVINO's
``INFERENCE_NUM_THREADS``), times it, and records what is needed to compare figures later: input shape, threads,
runtime and its version, CPU model, load average and date.

Runtimes (:data:`RUNTIMES`):

``eager``
    The module in eval mode under ``torch.inference_mode()``, in channels-last memory format by default: on this
    project's CPU it was 8-30% faster than contiguous NCHW for Large and Small at 224, batch 1, 1 thread, over
    several runs (``benchmarks/latency_runtimes.py --variants`` measures it again); ``channels_last=False`` turns
    it off.
``frozen``
    A frozen graph: TorchScript ``trace`` + ``freeze`` (which folds BatchNorm and propagates constants), in
    channels-last. Measured against the alternatives on Large and Small (224, batch 1, 1 thread, ``--variants``):
    1.55x (Large) and 1.7x (Small) the speed of channels-last eager, and 1.4x that of ``torch.compile`` (Inductor,
    whose first compile also takes 25-50 s here), while adding ``torch.jit.optimize_for_inference`` made it
    *slower* than eager (it moves the convolutions to MKL-DNN tensors: Small's graph gains 24 ``to_mkldnn`` and
    15 ``to_dense`` conversions around the SE means and products). The other methods stay selectable with
    ``frozen_method`` (:data:`FROZEN_METHODS`).
``onnxruntime``
    The model exported to ONNX (BatchNorm folded) in an ONNX Runtime session: CPU provider, graph optimisation
    level ALL, sequential execution, ``intra_op_num_threads`` = the thread count. Needs the ``deploy`` extra.
``onnxruntime-int8``
    The model quantised to int8 by :func:`~mobilenetv3.deploy.quantize.quantize_onnx` (QDQ, its default
    graph-level set-up) in the same kind of session. Calibrated on ``calibration`` when given, else on a few
    seeded random inputs: kernel times do not depend on the values, accuracy does (use real images for a model
    you ship). Needs the ``deploy`` extra.
``openvino``
    The same BN-folded ONNX export compiled by OpenVINO's CPU plugin (:func:`openvino_compile`):
    ``INFERENCE_NUM_THREADS`` = the thread count, one stream, the LATENCY hint, no core pinning, and
    ``INFERENCE_PRECISION_HINT=f32`` set explicitly: on CPUs with AMX or AVX-512 BF16 OpenVINO's default is bf16,
    which a float path must not take silently (outputs match eager to ~1e-6). With one thread the inference runs
    on the calling thread, so the ``cpu`` clock sees all of it. Kept because it was the fastest exact float path
    here: measured against ``onnxruntime`` on the same file, interleaved (224, batch 1, 1 thread, CPU clock, a
    busy 2-core Xeon with AMX, OpenVINO 2026.4, ONNX Runtime 1.32): 1.06x (Large, 5.51 vs 5.90 ms) and 1.17x
    (Small, 1.58 vs 1.86 ms), per-round ratios 1.00-1.13 and 1.10-1.20. Needs the ``openvino`` extra.
``openvino-bf16``
    The same with ``INFERENCE_PRECISION_HINT=bf16`` (AMX bf16 matrix kernels where the CPU has them; f32
    elsewhere, and ``extra["inference_precision"]`` says which ran): 2.1x (Large) and 1.5x (Small) the speed of
    ``onnxruntime`` float in the run above, with bf16's error: logits off by ~2% of their range; on
    Fashion-MNIST (a trained Small, 10k test images) 99.87% of top-1 answers agree with eager and top-1 is 0.07
    points lower. A reduced-precision path, reported apart from the float ones.
``openvino-int8``
    The model quantised by :func:`~mobilenetv3.deploy.quantize.quantize_onnx` with the OpenVINO target
    (``INT8_TARGETS["openvino"]``: the same calibration and quantisation as ``onnxruntime-int8``, but no
    quantise/dequantise pair between a convolution and its activation, and hard-swish left as an op) and
    compiled by OpenVINO, which runs each ``DQ -> Conv -> activation -> Q`` as one int8 kernel (AMX for the 1x1
    convolutions and the classifier, AVX-512 for the depthwise ones) and its float parts (stem, block 1) in f32.
    On ONNX Runtime's file it ran every hard-swish as a separate int8 -> float -> int8 pass (per-layer counters,
    :func:`profile_openvino`). ``benchmarks/int8_quantize.py ablation --runtime openvino`` times the set-ups
    against each other (224, batch 1, 1 thread, quiet 2-core Xeon with AMX, 2026-11-26): ONNX Runtime's file
    2.80 ms (Large) and 1.55 ms (Small), this target 2.67 and 1.39 ms, OpenVINO f32 4.25 and 1.59 ms; leaving the
    depthwise padding out, quantising the stem and block 1 too, or the SE squeeze as ReduceMean changed nothing
    beyond the noise. In the counters the 1x1 convolutions run 2.2x faster than f32 (AMX int8), the depthwise ones
    no faster, and the input reorder and f32 stem are the same in both. NNCF's own post-training quantisation
    (nncf 3.4, 0.8-1.3x of ``onnxruntime`` float) was no faster. Needs the ``openvino`` and ``deploy`` extras.

    On a CPU with AMX, capping oneDNN at AVX-512 VNNI (:data:`INT8_ISA_CAP`, :func:`set_onednn_isa_cap`,
    ``$ONEDNN_MAX_CPU_ISA``, ``mnv3 latency --onednn-max-isa``) made this path faster: at batch 1 the 1x1
    matrices are too small for AMX tiles to pay off (Small's 1x1 convolutions 0.49 -> 0.42 ms in the counters).
    ``benchmarks/latency_vs_peers.py`` (5 interleaved rounds, 2026-11-26) gave Large 2.59 -> 2.55 ms and Small
    1.31 -> 1.24 ms; shorter interleaved runs that day gave 3-10%. f32 kernels do not use AMX, so they are
    unaffected. The cap holds for a whole process, so :func:`compare_with_peers` times capped paths in a worker.
``litert``
    The model converted to ``.tflite`` by ``litert-torch`` (BatchNorm folded) in the LiteRT interpreter with
    ``num_threads`` = the thread count (XNNPACK on CPU): the paper's runtime. Needs the ``litert`` extra.

Per-layer profiles: :func:`profile_layers` times every top-level block of the eager model with forward hooks;
:func:`profile_onnxruntime` uses ONNX Runtime's own profiler and sums kernel times per op type and per block.

Comparisons: :func:`time_interleaved` times several prepared paths round after round, so that a change in the
machine's load touches them alike (on a busy machine, ``clock="cpu"`` times the calling thread's CPU time);
:func:`compare_with_peers` puts ours next to torchvision's and timm's models, which run in a worker of the peer
environment (:class:`PeerWorker`); :func:`paper_comparisons` (``mnv3 bench``) re-measures the paper's tables on
this machine: V3 against V2 (Table 3), the h-swish ablation (Table 5, :func:`hswish_from`,
:func:`with_naive_hswish`), multipliers x resolutions (Figure 7) and float against int8 (Table 4).
"""

from __future__ import annotations

# ruff: noqa: F401  (names moved to extras, inputs and runtime/ are re-exported here until every user imports them there)
import contextlib
import ctypes
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .cost import spec_cost
from .extras import MissingExtraError, require
from .inputs import (
    InputError,
    as_model,
    check_input,
    check_input_shape,
    example_input,
    min_resolution,
    model_dtype,
    model_spec,
    resolve_input,
)
from .runtime.cpu import (
    INT8_ISA_CAP,
    ONEDNN_ISA_VARIABLE,
    ONEDNN_ISAS,
    check_onednn_isa,
    cpu_model,
    cpu_peak,
    isa_cap_note,
    machine_info,
    onednn_isa_cap,
    pinned_threads,
    set_onednn_isa_cap,
)
from .runtime.onnxruntime import ort_session, parse_ort_profile, profile_onnx
from .runtime.openvino import openvino_compile, openvino_forward
from .runtime.signal_stack import keeping_signal_stack, signal_stack
from .runtime.timing import CLOCKS, TimingStats, clock_timer, percentile, time_callable, time_interleaved
from .spec import ArchSpec

RUNTIMES = ("eager", "frozen", "onnxruntime", "onnxruntime-int8", "openvino", "openvino-int8", "openvino-bf16",
            "litert")
OPENVINO_RUNTIMES = ("openvino", "openvino-int8", "openvino-bf16")
CORE_RUNTIMES = ("eager", "frozen", "onnxruntime")
FROZEN_METHODS = ("torchscript", "torchscript_ofi", "compile")
DEFAULT_FROZEN = "torchscript"


# -- inputs -----------------------------------------------------------------------------------------------
@dataclass
class Prepared:
    """A runtime ready to run one forward pass on a fixed input (``run()``) and a description of its set-up."""

    runtime: str
    detail: str
    run: Callable[[], Any]
    version: str
    threads: int
    extra: dict[str, Any] = field(default_factory=dict)


def _to_channels_last(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    import copy

    return copy.deepcopy(model).to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)


def _eager(model: nn.Module, x: torch.Tensor, threads: int, channels_last: bool) -> Prepared:
    model = model.eval()
    detail = "eval, inference_mode"
    if channels_last:
        model, x = _to_channels_last(model, x)
        detail += ", channels_last"

    def run() -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    return Prepared("eager", detail, run, torch.__version__, threads)


def freeze_torchscript(model: nn.Module, x: torch.Tensor, optimize_for_inference: bool = False
                       ) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` + ``torch.jit.freeze`` of an eval model (+ ``optimize_for_inference`` if asked)."""
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice; the traced graph is what we time
        frozen = torch.jit.freeze(torch.jit.trace(model.eval(), x).eval())
        return torch.jit.optimize_for_inference(frozen) if optimize_for_inference else frozen


def _frozen(model: nn.Module, x: torch.Tensor, threads: int, method: str, channels_last: bool) -> Prepared:
    if method not in FROZEN_METHODS:
        raise ValueError(f"unknown frozen method {method!r} (choose from {', '.join(FROZEN_METHODS)})")
    model = model.eval()
    if channels_last:
        model, x = _to_channels_last(model, x)
    if method.startswith("torchscript"):
        graph = freeze_torchscript(model, x, optimize_for_inference=method == "torchscript_ofi")
        detail = "torchscript: trace + freeze" + (" + optimize_for_inference" if method == "torchscript_ofi" else "")
    else:
        graph = torch.compile(model)
        detail = "torch.compile (inductor, default mode)"
    if channels_last:
        detail += ", channels_last"
    started = time.perf_counter()
    with torch.inference_mode():
        graph(x)  # compiles now, so the build time is not mixed into the warm-up
    build_s = time.perf_counter() - started

    def run() -> torch.Tensor:
        with torch.inference_mode():
            return graph(x)

    return Prepared("frozen", detail, run, torch.__version__, threads, {"frozen_method": method,
                                                                        "first_run_s": round(build_s, 3)})


def _exported(model: nn.Module, x: torch.Tensor, tmp: str, ort_nchwc: bool = True, input_layout: str = "nchw") -> str:
    """The BN-folded ONNX export; ``ort_nchwc`` applies the graph passes written for ONNX Runtime's blocked layout
    (OpenVINO measured 2.6-3.2% slower with them, so its runtime leaves them out)."""
    from .deploy.onnx_export import export_onnx

    path = os.path.join(tmp, "model.onnx")
    export_onnx(model, path, input_shape=tuple(x.shape), verify=False, ort_nchwc=ort_nchwc, input_layout=input_layout)
    return path


def _onnxruntime(model: nn.Module, x: torch.Tensor, threads: int) -> Prepared:
    ort = require("onnxruntime", purpose="the ONNX Runtime runtime")
    require("onnx", purpose="exporting to ONNX")
    with tempfile.TemporaryDirectory() as tmp:
        session = ort_session(_exported(model, x, tmp), threads)
    name = session.get_inputs()[0].name
    feed = {name: x.detach().cpu().float().numpy()}

    def run() -> Any:
        return session.run(None, feed)

    detail = f"CPUExecutionProvider, ORT_ENABLE_ALL, sequential, intra_op_num_threads={threads}"
    return Prepared("onnxruntime", detail, run, ort.__version__, threads)


def _onnxruntime_int8(model: nn.Module, x: torch.Tensor, threads: int, calibration: Sequence[Any] | None) -> Prepared:
    from .deploy.quantize import quantize_onnx, random_calibration_data

    ort = require("onnxruntime", purpose="the ONNX Runtime runtime")
    calib = list(calibration) if calibration is not None else random_calibration_data(tuple(x.shape))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model_int8.onnx")
        report = quantize_onnx(model, path, calib, input_shape=tuple(x.shape), verify=False)
        session = ort_session(path, threads)
    feed = {session.get_inputs()[0].name: x.detach().cpu().float().numpy()}

    def run() -> Any:
        return session.run(None, feed)

    detail = (f"int8 QDQ ({'real' if calibration is not None else 'random'} calibration, {len(calib)} inputs), "
              f"CPUExecutionProvider, ORT_ENABLE_ALL, sequential, intra_op_num_threads={threads}")
    return Prepared("onnxruntime-int8", detail, run, ort.__version__, threads,
                    {"int8_graph_changes": report.graph_changes})


def _litert(model: nn.Module, x: torch.Tensor, threads: int) -> Prepared:
    from .deploy.fold import fold_bn
    from .deploy.litert_export import LiteRTRunner, convert_litert, litert_version

    runner = LiteRTRunner(convert_litert(fold_bn(model), x), threads)
    feed = x.detach().cpu().float().numpy()

    def run() -> Any:
        return runner(feed)

    version = require("ai_edge_litert", extra="litert", purpose="the LiteRT interpreter")
    return Prepared("litert", f"litert-torch {litert_version()} conversion, interpreter num_threads={threads}",
                    run, getattr(version, "__version__", "?"), threads)



def _openvino_prepared(runtime: str, path: Any, x: torch.Tensor, threads: int, precision: str, detail: str,
                       extra: dict[str, Any] | None = None) -> Prepared:
    import numpy as np

    ov = require("openvino", extra="openvino", purpose="the OpenVINO runtime")
    compiled = openvino_compile(path, threads, precision)
    request = compiled.create_infer_request()
    feed = np.ascontiguousarray(x.detach().cpu().float().numpy())
    request.set_input_tensor(ov.Tensor(feed))  # a copy, made once: the input is fixed

    def run() -> Any:
        request.infer()
        return request.get_output_tensor(0).data.copy()

    used = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()  # what the CPU plugin took: f32, bf16
    detail += (f", CPU, INFERENCE_NUM_THREADS={threads}, NUM_STREAMS=1, LATENCY hint, no pinning, "
               f"INFERENCE_PRECISION_HINT={used}")
    detail += isa_cap_note(onednn_isa_cap())
    return Prepared(runtime, detail, run, ov.__version__, threads,
                    {"inference_precision": used, **(extra or {})})


def _openvino(model: nn.Module, x: torch.Tensor, threads: int, precision: str, input_layout: str = "nchw"
              ) -> Prepared:
    require("onnx", extra="openvino", purpose="exporting to ONNX")
    from .deploy.onnx_export import to_layout

    runtime = "openvino" if precision == "f32" else f"openvino-{precision}"
    with tempfile.TemporaryDirectory() as tmp:
        path = _exported(model, x, tmp, ort_nchwc=False, input_layout=input_layout)
        return _openvino_prepared(runtime, path, to_layout(x, input_layout), threads, precision,
                                  f"ONNX export (BN folded, {input_layout.upper()} input)")


def _openvino_int8(model: nn.Module, x: torch.Tensor, threads: int, calibration: Sequence[Any] | None,
                   input_layout: str = "nchw") -> Prepared:
    from .deploy.onnx_export import to_layout
    from .deploy.quantize import INT8_TARGETS, quantize_onnx, random_calibration_data

    calib = list(calibration) if calibration is not None else random_calibration_data(tuple(x.shape))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model_int8.onnx")
        report = quantize_onnx(model, path, calib, input_shape=tuple(x.shape), verify=False,
                               options=INT8_TARGETS["openvino"], input_layout=input_layout)
        detail = (f"int8 QDQ for OpenVINO, convolutions fused with their activations "
                  f"({'real' if calibration is not None else 'random'} calibration, {len(calib)} inputs), "
                  f"float parts in f32, {input_layout.upper()} input")
        return _openvino_prepared("openvino-int8", path, to_layout(x, input_layout), threads, "f32", detail,
                                  {"int8_graph_changes": report.graph_changes})


def prepare_runtime(runtime: str, model: nn.Module, x: torch.Tensor, threads: int = 1, *,
                    channels_last: bool = True, frozen_method: str = DEFAULT_FROZEN,
                    calibration: Sequence[Any] | None = None, input_layout: str = "nchw") -> Prepared:
    """Set up ``runtime`` for ``model`` on the fixed input ``x``; call within :func:`pinned_threads`.
    ``calibration``: inputs shaped like ``x`` for ``onnxruntime-int8`` and ``openvino-int8``. ``input_layout``:
    ``nhwc`` feeds the OpenVINO runtimes ``x`` as N x H x W x C (``export_onnx(input_layout=...)``)."""
    if input_layout != "nchw" and runtime not in OPENVINO_RUNTIMES:
        raise ValueError(f"input_layout={input_layout!r} applies to the OpenVINO runtimes, not {runtime!r}")
    if runtime == "eager":
        return _eager(model, x, threads, channels_last)
    if runtime == "frozen":
        return _frozen(model, x, threads, frozen_method, channels_last)
    if runtime == "onnxruntime":
        return _onnxruntime(model, x, threads)
    if runtime == "onnxruntime-int8":
        return _onnxruntime_int8(model, x, threads, calibration)
    if runtime == "openvino":
        return _openvino(model, x, threads, "f32", input_layout)
    if runtime == "openvino-bf16":
        return _openvino(model, x, threads, "bf16", input_layout)
    if runtime == "openvino-int8":
        return _openvino_int8(model, x, threads, calibration, input_layout)
    if runtime == "litert":
        return _litert(model, x, threads)
    raise ValueError(f"unknown runtime {runtime!r} (choose from {', '.join(RUNTIMES)})")


def available_runtimes() -> list[str]:
    """The core runtimes, plus OpenVINO (float) and LiteRT when their extras are installed."""
    import importlib.util

    extra = [] if importlib.util.find_spec("openvino") is None else ["openvino"]
    extra += [] if importlib.util.find_spec("litert_torch") is None else ["litert"]
    return [*CORE_RUNTIMES, *extra]


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


def _model_name(model: nn.Module) -> str:
    spec = model_spec(model)
    return spec.name if spec is not None else type(model).__name__


def measure_latency(model: nn.Module | ArchSpec | str, *, runtime: str = "eager", resolution: int | None = None,
                    batch: int = 1, threads: int = 1, warmup: int = 10, min_runs: int = 50,
                    min_seconds: float = 2.0, max_seconds: float = 120.0, x: torch.Tensor | None = None,
                    channels_last: bool = True, frozen_method: str = DEFAULT_FROZEN,
                    calibration: Sequence[Any] | None = None, clock: str = "wall") -> LatencyResult:
    """Median latency (and p10/p90/mean) of one forward pass of ``model`` on ``runtime``.

    ``model``: a module (its weights are used), a spec, a zoo name or a spec file (random weights: latency does
    not depend on them). The input is ``x`` or a seeded random ``(batch, C, resolution, resolution)`` tensor;
    ``calibration`` (arrays shaped like it) calibrates the ``onnxruntime-int8`` and ``openvino-int8`` runtimes.
    ``clock``: ``wall`` or ``cpu`` (the calling thread's CPU time, one thread only; see :data:`CLOCKS`).
    The model is measured in eval mode; its own mode and the thread count are restored afterwards.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r} (choose from {', '.join(RUNTIMES)})")
    timer = clock_timer(clock, threads)
    if runtime in ("onnxruntime", "onnxruntime-int8"):
        require("onnxruntime", purpose="the ONNX Runtime runtime")
        require("onnx", purpose="exporting to ONNX")
    if runtime in OPENVINO_RUNTIMES:
        require("openvino", extra="openvino", purpose="the OpenVINO runtime")
        require("onnx", extra="openvino", purpose="exporting to ONNX")
    if runtime == "openvino-int8":
        require("onnxruntime", purpose="int8 quantisation (onnxruntime.quantization)")
    if runtime == "litert":
        require("litert_torch", extra="litert", purpose="LiteRT conversion")
        require("ai_edge_litert", extra="litert", purpose="the LiteRT interpreter")
    model = as_model(model)
    x = resolve_input(model, x, resolution, batch,
                       require_float32=runtime in ("onnxruntime", "onnxruntime-int8", "litert", *OPENVINO_RUNTIMES))
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
    return LatencyResult(_model_name(model), runtime, prepared.detail, tuple(x.shape), prepared.threads, warmup,
                         stats, prepared.version, info, {**prepared.extra, "clock": clock})


FILE_RUNTIMES = ("onnxruntime", "openvino", "openvino-bf16")


def measure_onnx_file(path: str | os.PathLike, *, runtime: str = "onnxruntime", threads: int = 1, warmup: int = 10,
                      min_runs: int = 50, min_seconds: float = 2.0, max_seconds: float = 120.0, seed: int = 0
                      ) -> LatencyResult:
    """Latency of an ONNX file as it is (say one written by ``mnv3 export --int8``) on a seeded random input of
    its shape (symbolic dimensions taken as 1), in ``runtime``: ``onnxruntime`` (the session :func:`ort_session`
    sets up), ``openvino`` (:func:`openvino_compile`, f32 inference precision) or ``openvino-bf16``; the
    ``-int8`` names are accepted too, since the file decides.

    The runtime is reported with ``-int8`` (``onnxruntime-int8``, ``openvino-int8``) when the graph holds
    quantisation nodes.
    """
    import numpy as np

    base = runtime.removesuffix("-int8")
    if base not in FILE_RUNTIMES:
        raise ValueError(f"an ONNX file runs in {', '.join(FILE_RUNTIMES)} (or their -int8 names), not {runtime!r}")
    onnx = require("onnx", purpose="reading an ONNX file")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    ops = {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
    int8 = bool(ops & {"QuantizeLinear", "QLinearConv", "ConvInteger", "MatMulInteger"})
    info = machine_info()
    extra: dict[str, Any] = {"file": str(path)}
    if base == "onnxruntime":
        ort = require("onnxruntime", purpose="the ONNX Runtime runtime")
        session = ort_session(path, threads)
        inp = session.get_inputs()[0]
        shape = tuple(d if isinstance(d, int) else 1 for d in inp.shape)
        feed = {inp.name: np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}
        run, version = (lambda: session.run(None, feed)), ort.__version__
        detail = f"{path.name}: CPUExecutionProvider, ORT_ENABLE_ALL, sequential, intra_op_num_threads={threads}"
    else:
        ov = require("openvino", extra="openvino", purpose="the OpenVINO runtime")
        ov_model = ov.Core().read_model(str(path))
        shape = tuple(d.get_length() if d.is_static else 1 for d in ov_model.input(0).get_partial_shape())
        x = torch.from_numpy(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))
        prepared = _openvino_prepared(base, ov_model, x, threads, "bf16" if base == "openvino-bf16" else "f32",
                                      f"{path.name}: OpenVINO", extra)
        run, version, detail, extra = prepared.run, prepared.version, prepared.detail, prepared.extra
    stats = time_callable(run, warmup=warmup, min_runs=min_runs, min_seconds=min_seconds, max_seconds=max_seconds)
    name = f"{base}-int8" if int8 and base != "openvino-bf16" else base
    if int8 and base == "openvino-bf16":
        extra["int8_file"] = True
    return LatencyResult(path.stem, name, detail, shape, threads, warmup, stats, version, info, extra)


# -- per-layer profiles -------------------------------------------------------------------------------------
def layer_names(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """(name, modules) of the top-level stages of a model, in forward order.

    For a :class:`~mobilenetv3.model.MobileNetV3`: ``stem``, ``block1``... (numbered as in the paper's tables),
    ``last_conv``, ``last_se`` and ``head`` (pool, head conv and classifier). Any other module: its children.
    """
    spec = model_spec(model)
    features = getattr(model, "features", None)
    if spec is None or not isinstance(features, nn.Sequential):
        return [(name, [m]) for name, m in model.named_children()]
    names = _feature_names(spec)
    stages = [(names[i], [m]) for i, m in enumerate(features)]
    head = [getattr(model, n) for n in ("pool", "conv_head", "head_act", "dropout", "classifier")
            if isinstance(getattr(model, n, None), nn.Module)]
    stages.append(("head", head))
    return stages


def _feature_names(spec: ArchSpec) -> list[str]:
    names = ["stem"] + [f"block{i}" for i in range(1, len(spec.blocks) + 1)]
    if spec.last_channels:
        names.append("last_conv")
        if spec.last_se:
            names.append("last_se")
    return names


def _stage_madds(spec: ArchSpec, resolution: tuple[int, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in spec_cost(spec, resolution).layers:
        stage = row.name.split(".")[0]
        if stage in ("conv_head", "classifier"):
            stage = "head"
        out[stage] = out.get(stage, 0) + row.madds
    return out


@dataclass(frozen=True)
class LayerTime:
    name: str
    median_ms: float
    p90_ms: float
    share: float  # of the sum of the stages' medians
    madds: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def profile_layers(model: nn.Module | ArchSpec | str, *, resolution: int | None = None, batch: int = 1,
                   threads: int = 1, warmup: int = 5, runs: int = 30, x: torch.Tensor | None = None,
                   channels_last: bool = True) -> list[LayerTime]:
    """Eager time of each top-level stage (see :func:`layer_names`), from forward hooks, median over ``runs``.

    A stage's time runs from its first module's forward-pre hook to its last module's forward hook. The
    analytic multiply-adds of each stage are given beside its time (for MobileNetV3 models), so that time per
    multiply-add shows which layers run below the CPU's best throughput.
    """
    model = as_model(model)
    x = resolve_input(model, x, resolution, batch, require_float32=False)
    original, was_training = model, model.training
    model.eval()
    if channels_last:  # as the eager runtime measures it (a copy)
        model, x = _to_channels_last(model, x)
    stages = layer_names(model)
    times: dict[str, list[float]] = {name: [] for name, _ in stages}
    started: dict[str, float] = {}
    recording = [False]
    handles = []

    def make_pre(name: str):
        def hook(module, args):
            started[name] = time.perf_counter()
        return hook

    def make_post(name: str):
        def hook(module, args, output):
            if recording[0]:
                times[name].append(time.perf_counter() - started[name])
        return hook

    for name, modules in stages:
        handles.append(modules[0].register_forward_pre_hook(make_pre(name)))
        handles.append(modules[-1].register_forward_hook(make_post(name)))
    try:
        with pinned_threads(threads), torch.inference_mode():
            for i in range(warmup + runs):
                recording[0] = i >= warmup
                model(x)
    finally:
        for h in handles:
            h.remove()
        original.train(was_training)
    spec = model_spec(model)
    madds = _stage_madds(spec, tuple(x.shape[-2:])) if spec is not None else {}
    medians = {n: percentile(t, 50) * 1e3 for n, t in times.items() if t}
    total = sum(medians.values()) or 1.0
    return [LayerTime(n, medians[n], percentile(times[n], 90) * 1e3, medians[n] / total, madds.get(n))
            for n, _ in stages if n in medians]



def profile_onnxruntime(model: nn.Module | ArchSpec | str, *, resolution: int | None = None, batch: int = 1,
                        threads: int = 1, warmup: int = 5, runs: int = 30, x: torch.Tensor | None = None
                        ) -> dict[str, Any]:
    """ONNX Runtime's own profile of the exported model: kernel ms per run (each node's median over ``runs``)
    by op type and by stage; the total is below the session's latency, which adds the executor's overhead.

    Node names keep the module path (``/features/features.3/dw/conv/Conv``), so kernels are attributed to the
    same stages as :func:`profile_layers`, including nodes ONNX Runtime fused (a Conv with its activation).
    """
    require("onnxruntime", purpose="the ONNX Runtime profiler")
    require("onnx", purpose="exporting to ONNX")
    model = as_model(model).eval()
    x = resolve_input(model, x, resolution, batch, require_float32=True)
    spec = model_spec(model)
    names = _feature_names(spec) if spec is not None else []
    with tempfile.TemporaryDirectory() as tmp:
        result = profile_onnx(_exported(model, x, tmp), threads=threads, warmup=warmup, runs=runs, names=names,
                              x=x.numpy())
    del result["nodes"]
    stages = [n for n, _ in layer_names(model)]
    result["by_stage"] = {s: result["by_stage"][s] for s in stages if s in result["by_stage"]} | {
        s: v for s, v in result["by_stage"].items() if s not in stages}
    result.update({"model": _model_name(model), "input_shape": list(x.shape), "threads": threads})
    return result


def profile_openvino(source: Any, *, threads: int = 1, precision: str = "f32", warmup: int = 5, runs: int = 30,
                     x: Any = None) -> dict[str, Any]:
    """OpenVINO's per-layer profile (``PERF_COUNT``) of a model file compiled as :func:`openvino_compile` does:
    each executed node's median time over ``runs`` inferences, summed by ``"<layer type> (<kernel>)"``
    (``by_kind``; the kernel names the precision that ran, e.g. ``brgconv_avx512_amx_1x1_I8``), and the
    ``nodes`` list, slowest first. Fused layers appear once, under the node OpenVINO kept. The counters add
    their own overhead: compare kinds within a profile, and time without it (:func:`measure_onnx_file`)."""
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


# -- peers: torchvision and timm in their own environment ------------------------------------------------------
# torchvision and timm need a newer torch than the core's, so they run under the peer environment's python in a
# worker subprocess (`make peer-setup` builds .peer-venv); the two processes take turns, never run at once.
PEER_MODELS = {"mobilenet_v3_large": "mobilenetv3_large_100", "mobilenet_v3_small": "mobilenetv3_small_100"}
PEER_SETUP_HINT = ("build it with `make peer-setup` (a .peer-venv with torch 2.15, torchvision, timm and ONNX "
                   "Runtime) or pass --peer-python / set $MNV3_PEER_PYTHON")


class PeerUnavailableError(RuntimeError):
    """No usable peer environment (torchvision and timm); the message says how to make one."""


def _repo_root() -> Path | None:
    root = Path(__file__).resolve().parents[2]  # src/mobilenetv3/latency.py in a checkout
    return root if (root / "pyproject.toml").is_file() else None


def find_peer_python(given: str | None = None) -> str | None:
    """The peer environment's python: ``given``, else ``$MNV3_PEER_PYTHON``, else the checkout's
    ``.peer-venv/bin/python`` (``make peer-setup``); ``None`` if neither exists.
    A ``given`` path that does not exist is an error, not a fallback."""
    if given is not None:
        if not Path(given).is_file():
            raise FileNotFoundError(f"peer python not found: {given}; {PEER_SETUP_HINT}")
        return given
    root = _repo_root()
    candidates = [os.environ.get("MNV3_PEER_PYTHON"), str(root / ".peer-venv/bin/python") if root else None]
    return next((c for c in candidates if c and Path(c).is_file()), None)


def _noise_bn(model: nn.Module, resolution: int) -> nn.Module:
    from .deploy.fold import calibrate_bn

    g = torch.Generator().manual_seed(0)
    return calibrate_bn(model, [torch.randn(4, 3, resolution, resolution, generator=g) for _ in range(2)])


def peer_prepare(models: Sequence[str], resolution: int, threads: int, tmp: str, onnx: bool = True,
                 int8: bool = False) -> tuple[dict, dict]:
    """(Runs in the peer environment.) The peers' paths for each of ``models``, each called once: torchvision
    eager (NCHW as shipped, and channels-last), timm eager; with ``onnx`` (and ONNX Runtime installed) the
    torchvision and timm models exported by their own ``torch.onnx.export`` (its default exporter) in an ONNX
    Runtime session set up as ours; with ``int8`` the torchvision export quantised by a plain
    ``quantize_static`` call. Random weights, BatchNorm statistics estimated on noise."""
    import copy

    import timm
    import torchvision

    torch.set_num_threads(threads)
    x = torch.randn(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
    runners: dict = {}
    info: dict = {"torch": torch.__version__, "torchvision": torchvision.__version__, "timm": timm.__version__,
                  "details": {}}
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
    except ImportError as e:
        ort = None
        info["onnx_missing"] = str(e)

    def eager(m, inp):
        def run():
            with torch.inference_mode():
                return m(inp)
        return run

    def session_run(session):
        feed = {session.get_inputs()[0].name: x.numpy()}
        return lambda: session.run(None, feed)

    def exported(m, path):
        import warnings

        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            torch.onnx.export(m, (x,), path, input_names=["input"], output_names=["output"], verbose=False)
        return session_run(ort_session(path, threads))

    for name in models:
        tv = _noise_bn(getattr(torchvision.models, name)(weights=None), resolution).eval()
        tv_cl = copy.deepcopy(tv).to(memory_format=torch.channels_last)
        tm = _noise_bn(timm.create_model(PEER_MODELS[name], pretrained=False), resolution).eval()
        runs = {"torchvision eager (NCHW)": eager(tv, x),
                "torchvision eager channels-last": eager(tv_cl, x.contiguous(memory_format=torch.channels_last)),
                "timm eager (NCHW)": eager(tm, x)}
        if onnx and ort is not None:
            tv_path = os.path.join(tmp, f"{name}_tv.onnx")
            runs["torchvision ONNX -> ORT float"] = exported(tv, tv_path)
            runs["timm ONNX -> ORT float"] = exported(tm, os.path.join(tmp, f"{name}_timm.onnx"))
            if int8:
                from .deploy.quantize import random_calibration_data

                qpath = os.path.join(tmp, f"{name}_tv_int8.onnx")
                _plain_quantize_static(tv_path, qpath, random_calibration_data(tuple(x.shape), 8, seed=1))
                runs["torchvision ONNX -> ORT int8 (plain quantize_static)"] = session_run(ort_session(qpath, threads))
        for label, fn in runs.items():
            fn()  # first-call set-up outside the timing
            runners[(name, label)] = fn
        info["details"][name] = list(runs)
    return runners, info


def _plain_quantize_static(path: str, out: str, calibration: Sequence[Any]) -> None:
    """A plain ``quantize_static`` call (QDQ, per-channel int8 weights, uint8 activations): the reference point
    the issue names for int8."""
    import logging

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    input_name = onnx.load(path, load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calibration)

        def get_next(self):
            b = next(self.it, None)
            return None if b is None else {input_name: b}

    logging.getLogger().setLevel(logging.ERROR)
    quantize_static(path, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def ours_prepare(models: Sequence[str], resolution: int, threads: int, paths: Sequence[str],
                 suffix: str = "", on_step: Callable[[str], None] | None = None) -> tuple[dict, dict]:
    """Our ``paths`` (of :data:`OUR_PATHS`) for each of ``models`` (random weights, BatchNorm statistics from noise) as
    :func:`compare_with_peers` times them, in its process or in a worker (under an instruction-set cap): runners
    keyed ``(model, label)``, each label its :data:`OUR_PATHS` label plus ``suffix``. ``on_step(label)`` after
    each one."""
    from .zoo import get_spec

    labels = {path: label + suffix for label, path in OUR_PATHS.items()}
    runners: dict = {}
    info: dict = {"torch": torch.__version__, "onednn_max_cpu_isa": onednn_isa_cap(), "details": {}}
    with pinned_threads(threads):
        for name in models:
            model = _bench_model(get_spec(name), resolution)
            x = example_input(model, resolution)
            info["details"][name] = {}
            for path in paths:
                runtime, layout = path_runtime(path)
                prepared = prepare_runtime(runtime, model, x, threads, input_layout=layout)
                runners[(name, labels[path])] = prepared.run
                info["details"][name][labels[path]] = prepared.detail
                if on_step is not None:
                    on_step(labels[path])
    torch.set_num_threads(threads)  # a worker's timings run outside the block
    return runners, info


def peer_worker() -> None:
    """(Runs in the peer environment, or the core one for :func:`ours_prepare`.) Answer JSON commands on stdin,
    one per line, with one JSON line each on the real stdout: ``prepare`` (see :func:`peer_prepare`),
    ``prepare_ours`` (:func:`ours_prepare`), ``time`` (one model's path, with :func:`time_callable`), ``quit``."""
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything else printed goes to stderr
    runners: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for line in sys.stdin:
            cmd = json.loads(line)
            try:
                if cmd["cmd"] == "prepare":
                    runners, info = peer_prepare(cmd["models"], cmd["resolution"], cmd["threads"], tmp,
                                                 onnx=cmd.get("onnx", True), int8=cmd.get("int8", False))
                    reply = {"ok": True, **info}
                elif cmd["cmd"] == "prepare_ours":
                    runners, info = ours_prepare(cmd["models"], cmd["resolution"], cmd["threads"], cmd["paths"],
                                                 cmd.get("suffix", ""))
                    reply = {"ok": True, **info}
                elif cmd["cmd"] == "time":
                    stats = time_callable(runners[(cmd["model"], cmd["label"])], warmup=cmd["warmup"],
                                          min_runs=cmd["min_runs"], min_seconds=cmd["min_seconds"],
                                          timer=CLOCKS[cmd.get("clock", "wall")])
                    reply = {"ok": True, "median_ms": stats.median_ms, "p90_ms": stats.p90_ms}
                else:
                    reply = {"ok": True}
            except Exception as e:  # report, keep serving
                reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            out.write(json.dumps(reply) + "\n")
            out.flush()
            if cmd["cmd"] == "quit":
                break


class PeerWorker:
    """The peer worker: a subprocess of the peer environment's python running :func:`peer_worker`.

    The worker imports this package from a directory holding only a link to it, so nothing of the core
    environment (its torch) is on the worker's path. Its stderr goes to a log whose end is shown on failure.
    """

    def __init__(self, python: str, env: dict[str, str] | None = None) -> None:
        import subprocess

        self._tmp = tempfile.TemporaryDirectory()
        os.symlink(Path(__file__).resolve().parent, Path(self._tmp.name) / "mobilenetv3")
        self._log_path = Path(self._tmp.name) / "worker.log"
        self._log = open(self._log_path, "w")  # noqa: SIM115  (closed in close())
        self.python = python
        self.proc = subprocess.Popen(
            [python, "-c", "from mobilenetv3.latency import peer_worker; peer_worker()"], cwd=self._tmp.name,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
            env=dict(os.environ, **(env or {}), PYTHONPATH=self._tmp.name))

    def _log_tail(self, chars: int = 1500) -> str:
        try:
            return self._log_path.read_text()[-chars:].strip()
        except OSError:
            return ""

    def ask(self, **cmd: Any) -> dict:
        try:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            raise RuntimeError(f"the peer worker ({self.python}) exited with code {self.proc.wait()}:\n"
                               f"{self._log_tail()}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"peer worker ({self.python}): {reply.get('error')}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask(cmd="quit")
            except RuntimeError:
                pass
            try:
                self.proc.wait(timeout=30)
            except Exception:
                self.proc.kill()
        self._log.close()
        self._tmp.cleanup()

    def __enter__(self) -> PeerWorker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclass(frozen=True)
class PeerPath:
    """One of the peer worker's prepared paths, timed there (see :func:`time_interleaved`)."""

    worker: PeerWorker
    model: str
    label: str

    def time_round(self, *, warmup: int, min_runs: int, min_seconds: float, clock: str) -> float:
        return self.worker.ask(cmd="time", model=self.model, label=self.label, warmup=warmup, min_runs=min_runs,
                               min_seconds=min_seconds, clock=clock)["median_ms"]


def _bench_model(spec: ArchSpec, resolution: int) -> nn.Module:
    """A model of ``spec`` with random weights and BatchNorm statistics estimated on noise: latency does not
    depend on the weights, and realistic activation scales keep denormal numbers out."""
    from .deploy.fold import calibrate_bn_on_noise
    from .model import build

    return calibrate_bn_on_noise(build(spec).eval(), resolution, batches=2, batch_size=2).eval()


# ours: label -> path, in the order they are timed; a path is a runtime, or "RUNTIME:nhwc" for an OpenVINO
# runtime fed N x H x W x C images (``prepare_runtime(input_layout="nhwc")``, see :func:`path_runtime`)
OUR_PATHS = {"ours eager (channels-last)": "eager", "ours frozen (TorchScript)": "frozen",
             "ours ONNX -> ORT float": "onnxruntime", "ours ONNX -> ORT int8": "onnxruntime-int8",
             "ours ONNX -> OpenVINO f32": "openvino", "ours ONNX -> OpenVINO f32, NHWC input": "openvino:nhwc",
             "ours ONNX -> OpenVINO int8": "openvino-int8",
             "ours ONNX -> OpenVINO int8, NHWC input": "openvino-int8:nhwc",
             "ours ONNX -> OpenVINO bf16": "openvino-bf16"}


def path_runtime(path: str) -> tuple[str, str]:
    """The runtime and input layout of one of :data:`OUR_PATHS`' paths: ``"openvino:nhwc"`` ->
    ``("openvino", "nhwc")``, ``"eager"`` -> ``("eager", "nchw")``."""
    runtime, _, layout = path.partition(":")
    return runtime, layout or "nchw"


def compare_with_peers(models: Sequence[str] = tuple(PEER_MODELS), *, resolution: int = 224, threads: int = 1,
                       ours: Sequence[str] = ("eager", "frozen", "onnxruntime"), peer_onnx: bool = True,
                       peer_int8: bool = False, peer_python: str | None = None, rounds: int = 3, warmup: int = 5,
                       min_runs: int = 30, min_seconds: float = 1.0, clock: str = "wall",
                       isa_cap: str | None = None, capped: Sequence[str] = ("openvino-int8", "openvino-int8:nhwc"),
                       on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Our paths (``ours``: paths of :data:`OUR_PATHS`, runtime names or ``"RUNTIME:nhwc"``) against torchvision's
    and timm's models of the same architectures, measured in the same run.

    ``isa_cap`` (e.g. :data:`INT8_ISA_CAP`): the paths in ``capped`` are also timed under that oneDNN
    instruction-set cap, in a worker process of this python (the cap holds for a whole process), as extra rows
    labelled ``"..., oneDNN ISA <= CAP"`` interleaved with the rest.

    The peers need a newer torch than the core's, so they cannot share this process: they run in a worker of the
    peer environment's python (:func:`find_peer_python`; :class:`PeerUnavailableError` when there is none). Every
    path is prepared first, then timed in ``rounds`` interleaved rounds, ours and the peers' in turn (the two
    processes never compute at the same time), with the same harness and settings; each row has the median of its
    rounds' medians and its ratio to the peers' fastest float path for the model (above 1: faster). ``on_step``
    is called after each preparation and each timing.
    """
    from .zoo import get_spec

    unknown = sorted(set(models) - set(PEER_MODELS))
    if unknown:
        raise ValueError(f"no peer model for {', '.join(unknown)} (peers exist for {', '.join(PEER_MODELS)})")
    bad = sorted(set(ours) - set(OUR_PATHS.values()))
    if bad:
        raise ValueError(f"unknown path(s) {', '.join(bad)} (choose from {', '.join(OUR_PATHS.values())})")
    clock_timer(clock, threads)
    python = find_peer_python(peer_python)
    if python is None:
        raise PeerUnavailableError(f"no peer environment found ($MNV3_PEER_PYTHON, .peer-venv); "
                                   f"{PEER_SETUP_HINT}")
    to_cap = [r for r in capped if r in ours] if isa_cap is not None else []
    if isa_cap is not None:
        isa_cap = check_onednn_isa(isa_cap)
        if not to_cap:
            raise ValueError(f"isa_cap={isa_cap!r} but none of capped={tuple(capped)!r} is among ours={tuple(ours)!r}")
    suffix = f", oneDNN ISA <= {isa_cap}"
    step = on_step or (lambda _label: None)
    capped_info: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        worker = stack.enter_context(PeerWorker(python))
        stack.enter_context(pinned_threads(threads))
        peer_info = worker.ask(cmd="prepare", models=list(models), resolution=resolution, threads=threads,
                               onnx=peer_onnx, int8=peer_int8)
        peer_info.pop("ok", None)
        step("peers prepared")
        if to_cap:
            capped_worker = stack.enter_context(PeerWorker(sys.executable, {ONEDNN_ISA_VARIABLE: isa_cap}))
            capped_info = capped_worker.ask(cmd="prepare_ours", models=list(models), resolution=resolution,
                                            threads=threads, paths=to_cap, suffix=suffix)
            step(f"capped paths prepared ({ONEDNN_ISA_VARIABLE}={isa_cap})")
        ours_runners, _ = ours_prepare(models, resolution, threads, ours, on_step=step)
        runners: dict[Any, Any] = {}
        for name in models:
            for label, path in OUR_PATHS.items():
                if path in ours:
                    runners[(name, label, "ours")] = ours_runners[(name, label)]
                if path in to_cap:
                    runners[(name, label + suffix, "ours")] = PeerPath(capped_worker, name, label + suffix)
            for label in peer_info["details"][name]:
                runners[(name, label, "peer")] = PeerPath(worker, name, label)
        medians = time_interleaved(runners, rounds=rounds, warmup=warmup, min_runs=min_runs,
                                   min_seconds=min_seconds, clock=clock, on_step=step)
    rows = []
    for name in models:
        cost = spec_cost(get_spec(name), resolution)
        peer_float = [percentile(v, 50) for (n, label, who), v in medians.items()
                      if n == name and who == "peer" and "int8" not in label]
        best = min(peer_float) if peer_float else None
        for (n, label, who), v in medians.items():
            if n == name:
                med = percentile(v, 50)
                rows.append({"model": name, "path": label, "who": who, "median_ms": med, "round_medians_ms": v,
                             "vs_best_peer": best / med if best else None, "params": cost.params,
                             "madds": cost.madds})
    return {"peer_python": python, "peer": peer_info, "resolution": resolution, "threads": threads,
            "rounds": rounds, "clock": clock, "isa_cap": isa_cap if to_cap else None,
            "capped_details": capped_info.get("details", {}),
            "onednn_max_cpu_isa": onednn_isa_cap(), "rows": rows}


# -- the paper's comparisons, measured here (mnv3 bench) ---------------------------------------------------
PHONES = ("Pixel 1", "Pixel 2", "Pixel 3")
# Table 3: float latency in ms on each phone's large core (TFLite, one thread, batch 1, 224x224).
PAPER_FLOAT_MS: dict[tuple[str, float], tuple[float, float, float]] = {
    ("mobilenet_v3_large", 1.0): (51, 61, 44), ("mobilenet_v3_large", 0.75): (39, 46, 40),
    ("mobilenet_v2", 1.0): (64, 76, 56), ("mobilenet_v3_small", 1.0): (15.8, 19.4, 14.4),
    ("mobilenet_v3_small", 0.75): (12.8, 15.6, 11.7), ("mobilenet_v2", 0.35): (16.6, 19.6, 13.9),
}
# Table 4: the same, quantised.
PAPER_INT8_MS: dict[tuple[str, float], tuple[float, float, float]] = {
    ("mobilenet_v3_large", 1.0): (44, 42.5, 31.7), ("mobilenet_v2", 1.0): (52, 48.3, 37.0),
    ("mobilenet_v3_small", 1.0): (15.5, 14.9, 10.7), ("mobilenet_v2", 0.35): (16.7, 15.6, 11.9),
}


@dataclass(frozen=True)
class Table5Variant:
    """A row of Table 5 (MobileNetV3-Large 1.0, Pixel 1): where h-swish starts, and the paper's latency with the
    optimised (fused) and the naive h-swish."""

    label: str
    channels: int | None  # h-swish from the first layer with this many output channels; None: ReLU everywhere
    stem_hswish: bool
    paper_ms: float
    paper_naive_ms: float


# Which layers switch. "h-swish @N: N is the number of channels in the first layer that has h-swish enabled";
# layers in order: stem, bottlenecks (a bottleneck's width is its #out in Table 1), last conv, head conv. @16 is
# then h-swish everywhere (the stem is the first 16-channel layer). The row "V3-Large 1.0" is Table 1's model:
# h-swish from the first 80-channel bottleneck *and* in the stem (Figure 8 calls it "h-swish at all layers with 80
# channels or more (V3)"). For @112 the stem is ReLU, as read literally: the paper's naive-minus-fused times fit
# it (h-swish's naive cost scales with the activations it touches: 6.1 ms for V3 predicts 15.4 ms for @16, the
# paper's 15.4, and 3.4 ms for @112 with a ReLU stem, the paper's 3.4, against 4.2 ms with an h-swish stem).
# The ReLU row's two times are equal: the naive implementation changes h-swish only, not SE's hard sigmoid.
TABLE5: dict[str, Table5Variant] = {
    "relu": Table5Variant("ReLU", None, False, 50.5, 50.5),
    "hswish@16": Table5Variant("h-swish @16", 16, True, 53.5, 68.9),
    "v3": Table5Variant("V3-Large 1.0 (h-swish @80 + stem)", 80, True, 51.4, 57.5),
    "hswish@112": Table5Variant("h-swish @112", 112, False, 51.0, 54.4),
}


def hswish_from(spec: ArchSpec, channels: int | None, *, stem: bool | None = None, act: str = "hswish",
                before: str = "relu") -> ArchSpec:
    """``spec`` with ``act`` from the first layer that has ``channels`` output channels to the end (Table 5's
    "h-swish @N") and ``before`` in every layer before it.

    The layers, in order: the stem, the bottlenecks (a bottleneck's width is its output width, Table 1's #out),
    the last conv and the head conv. ``channels=None``: ``before`` everywhere. ``stem`` overrides the stem's
    activation (``True``: ``act``, ``False``: ``before``); by default it has ``act`` only when it is itself that
    first layer. SE's inner activation and gate are left as they are.
    """
    if channels is None:
        first, stem_on = len(spec.blocks), False
        tail = before
    elif spec.stem_channels == channels:
        first, stem_on, tail = 0, True, act
    else:
        first = next((i for i, b in enumerate(spec.blocks) if b.out == channels), None)
        if first is None:
            widths = sorted({spec.stem_channels, *(b.out for b in spec.blocks)})
            raise ValueError(f"{spec.name} has no layer with {channels} output channels "
                             f"(its widths: {', '.join(map(str, widths))})")
        stem_on, tail = False, act
    if stem is not None:
        stem_on = stem
    blocks = tuple(dataclasses.replace(b, act=act if i >= first else before) for i, b in enumerate(spec.blocks))
    suffix = "relu" if channels is None else f"hswish{channels}"
    return spec.replace(name=f"{spec.name}_{suffix}", blocks=blocks, stem_act=act if stem_on else before,
                        last_act=tail, head_act=tail)


def with_naive_hswish(spec: ArchSpec) -> ArchSpec:
    """``spec`` with every h-swish computed op by op (``hswish_naive``: add, clamp, multiply, divide) instead of
    the fused operator: Table 5's "no-opt" column. SE's hard-sigmoid gate stays fused."""
    def swap(a: str) -> str:
        return "hswish_naive" if a == "hswish" else a

    if "hswish" not in (spec.stem_act, spec.last_act, spec.head_act, *(b.act for b in spec.blocks)):
        return spec  # nothing to swap (the ReLU variant)
    return spec.replace(name=f"{spec.name}_naive", blocks=tuple(dataclasses.replace(b, act=swap(b.act))
                                                                for b in spec.blocks),
                        stem_act=swap(spec.stem_act), last_act=swap(spec.last_act), head_act=swap(spec.head_act))


def table5_spec(variant: str, naive: bool = False) -> ArchSpec:
    """The spec of a Table 5 row (:data:`TABLE5`) on MobileNetV3-Large 1.0, with the naive h-swish if asked."""
    from .zoo import get_spec

    if variant not in TABLE5:
        raise ValueError(f"unknown Table 5 variant {variant!r} (choose from {', '.join(TABLE5)})")
    v = TABLE5[variant]
    large = get_spec("mobilenet_v3_large")
    spec = large if variant == "v3" else hswish_from(large, v.channels, stem=v.stem_hswish)
    return with_naive_hswish(spec) if naive else spec


BENCH_SECTIONS = ("v3-vs-v2", "hswish", "grid", "int8", "peers")
DEFAULT_BENCH_SECTIONS = ("v3-vs-v2", "hswish", "grid", "int8")
BENCH_RUNTIMES = CORE_RUNTIMES
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
    from .zoo import REGISTRY, get_spec

    paper = (REGISTRY[family].paper or {}).get(width) if resolution == 224 else None
    return {"label": f"{_FAMILY_LABEL[family]} {_width(width)}", "spec": get_spec(family, width),
            "resolution": resolution, "family": family, "width_mult": width,
            "paper_params_m": paper[0] if paper else None, "paper_madds_m": paper[1] if paper else None,
            "paper_ms": _paper(table, family, width, resolution)}


def _plan_v3_vs_v2(s: dict) -> tuple[list[dict], Callable]:
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


def _plan_hswish(s: dict) -> tuple[list[dict], Callable]:
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


def _plan_grid(s: dict) -> tuple[list[dict], Callable]:
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


def _plan_int8(s: dict) -> tuple[list[dict], Callable]:
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


_PLANS = {"v3-vs-v2": _plan_v3_vs_v2, "hswish": _plan_hswish, "grid": _plan_grid, "int8": _plan_int8}


def _check_bench_args(sections: Sequence[str] | str | None, peers: bool, runtime: str, threads: int,
                      resolution: int, multipliers: Sequence[float], resolutions: Sequence[int], rounds: int,
                      warmup: int, min_runs: int, min_seconds: float, clock: str) -> list[str]:
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
    for name, value in (("resolution", resolution), *(("resolutions", r) for r in resolutions)):
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
    needs_ort = [s for s in ordered if s == "int8" or (runtime == "onnxruntime" and s in _PLANS)]
    if needs_ort:
        purpose = f"the {', '.join(needs_ort)} section{'s' if len(needs_ort) > 1 else ''} (ONNX Runtime)"
        require("onnxruntime", purpose=purpose)
        require("onnx", purpose=purpose)
    return ordered


def paper_comparisons(sections: Sequence[str] | str | None = None, *, runtime: str = "eager", threads: int = 1,
                      resolution: int = 224, quick: bool = False, multipliers: Sequence[float] | None = None,
                      resolutions: Sequence[int] | None = None, rounds: int = 3, warmup: int = 5,
                      min_runs: int = 20, min_seconds: float = 0.5, clock: str = "wall", peers: bool = False,
                      peer_python: str | None = None, progress: bool = False) -> dict[str, Any]:
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
    ordered = _check_bench_args(sections, peers, runtime, threads, resolution, multipliers, resolutions, rounds,
                                warmup, min_runs, min_seconds, clock)
    python = find_peer_python(peer_python) if "peers" in ordered else None  # a bad --peer-python fails here
    settings = {"runtime": runtime, "threads": threads, "resolution": resolution, "clock": clock,
                "rounds": rounds, "warmup": warmup, "min_runs": min_runs, "min_seconds": min_seconds,
                "multipliers": list(multipliers), "resolutions": list(resolutions), "quick": quick}
    plans = {name: _PLANS[name](settings) for name in ordered if name in _PLANS}
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

    from . import __version__

    ort = None
    if importlib.util.find_spec("onnxruntime") is not None:
        ort = require("onnxruntime").__version__
    return {"mobilenetv3": __version__, "torch": torch.__version__, "onnxruntime": ort,
            "python": platform.python_version()}


def _madds_rule() -> str:
    from .cost import MADDS_RULE

    return MADDS_RULE


def _measure_entries(entries: list[dict], threads: int, timing: dict, bar: Any) -> list[dict]:
    """Prepare every entry's runtime, time them all in interleaved rounds, and return one row each."""
    runners = {}
    for i, e in enumerate(entries):
        bar.set_postfix_str(f"preparing {e['label']}", refresh=True)
        model = _bench_model(e["spec"], e["resolution"])
        runners[i] = prepare_runtime(e["runtime"], model, example_input(model, e["resolution"]), threads).run
        bar.update()
    bar.set_postfix_str("timing", refresh=True)
    medians = time_interleaved(runners, on_step=lambda _: bar.update(), **timing)
    rows = []
    for i, e in enumerate(entries):
        cost = spec_cost(e["spec"], e["resolution"])
        row = {k: v for k, v in e.items() if k != "spec"}
        row.update(model=e["spec"].name, params=cost.params, madds=cost.madds, median_ms=percentile(medians[i], 50),
                   round_medians_ms=medians[i])
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
