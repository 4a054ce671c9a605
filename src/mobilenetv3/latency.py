"""Latency measured the paper's way: batch 1, one thread by default, warm-up runs, then the median of many runs.

The harness (:func:`time_callable`) runs a callable until it has at least ``min_runs`` timed runs *and* at least
``min_seconds`` of timing, then reports the median, p10, p90 and mean. :func:`measure_latency` builds a model's
runtime, pins the thread count (PyTorch's intra-op threads, or ONNX Runtime's ``intra_op_num_threads``), times
it, and records what is needed to compare figures later: input shape, threads, runtime and its version, CPU model,
load average and date.

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
``litert``
    The model converted to ``.tflite`` by ``litert-torch`` (BatchNorm folded) in the LiteRT interpreter with
    ``num_threads`` = the thread count (XNNPACK on CPU): the paper's runtime. Needs the ``litert`` extra.

Per-layer profiles: :func:`profile_layers` times every top-level block of the eager model with forward hooks;
:func:`profile_onnxruntime` uses ONNX Runtime's own profiler and sums kernel times per op type and per block.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .cost import spec_cost
from .spec import ArchSpec

RUNTIMES = ("eager", "frozen", "onnxruntime", "onnxruntime-int8", "litert")
CORE_RUNTIMES = ("eager", "frozen", "onnxruntime")
FROZEN_METHODS = ("torchscript", "torchscript_ofi", "compile")
DEFAULT_FROZEN = "torchscript"


class InputError(ValueError):
    """An input a model cannot take: the message says what was given and what is expected."""


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that provides it."""


def require(module: str, extra: str | None = "deploy", purpose: str = "") -> Any:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra to install (``extra=None``: the
    package itself)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        what = f" (needed for {purpose})" if purpose else ""
        how = f"pip install 'mobilenetv3[{extra}]'" if extra else f"pip install {module}"
        raise MissingExtraError(f"{module} is not installed{what}; install it with: {how}") from None


# -- statistics -------------------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass(frozen=True)
class TimingStats:
    """Summary of timed runs, in milliseconds."""

    runs: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    total_s: float

    @classmethod
    def from_samples(cls, samples_s: Sequence[float]) -> TimingStats:
        if not samples_s:
            raise ValueError("no timed runs")
        ms = [s * 1e3 for s in samples_s]
        return cls(runs=len(ms), median_ms=percentile(ms, 50), p10_ms=percentile(ms, 10),
                   p90_ms=percentile(ms, 90), mean_ms=sum(ms) / len(ms), min_ms=min(ms), max_ms=max(ms),
                   total_s=sum(samples_s))


def time_callable(fn: Callable[[], Any], *, warmup: int = 10, min_runs: int = 50, min_seconds: float = 2.0,
                  max_runs: int = 100_000, max_seconds: float = 120.0,
                  timer: Callable[[], float] = time.perf_counter) -> TimingStats:
    """Call ``fn`` ``warmup`` times untimed, then time single calls until there are at least ``min_runs`` of
    them and at least ``min_seconds`` have passed.

    Two limits stop a slow callable early: ``max_runs`` calls, or ``max_seconds`` of timing (after at least one
    run). ``timer`` is injectable so the bookkeeping can be tested with a fake clock.
    """
    if warmup < 0 or min_runs < 1 or max_runs < 1 or min_seconds < 0 or max_seconds <= 0:
        raise ValueError("warmup >= 0, min_runs >= 1, max_runs >= 1, min_seconds >= 0 and max_seconds > 0 needed")
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    start = timer()
    while True:
        t0 = timer()
        fn()
        t1 = timer()
        samples.append(t1 - t0)
        elapsed = t1 - start
        if len(samples) >= max_runs or elapsed >= max_seconds:
            break
        if len(samples) >= min_runs and elapsed >= min_seconds:
            break
    return TimingStats.from_samples(samples)


# -- machine facts ----------------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info() -> dict[str, Any]:
    """CPU model, logical CPUs, 1-minute load average (others' work on the machine) and the date (UTC)."""
    try:
        load = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        load = None
    return {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "load_avg_1m": load,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


@contextlib.contextmanager
def pinned_threads(threads: int) -> Iterator[int]:
    """Set PyTorch's intra-op thread count for the block and restore the previous count afterwards."""
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


# -- inputs -----------------------------------------------------------------------------------------------
def min_resolution(spec: ArchSpec) -> int:
    """The smallest input side a spec's model takes: its stem kernel.

    Every size from there up runs (feature maps are ``ceil(size / stride)``, so a 33x33 input gives a 2x2 map
    at stride 32 and a 20x20 input a 1x1 map); below the stem kernel the first convolution's window is larger
    than the image and sees more padding than pixels, so such inputs are refused as almost surely a mistake.
    """
    return spec.stem_kernel


def check_input_shape(spec: ArchSpec, shape: Sequence[int]) -> None:
    """Raise :class:`InputError` unless ``shape`` is (N, C, H, W) with the spec's channels and a usable size."""
    shape = tuple(shape)
    if len(shape) != 4:
        raise InputError(f"{spec.name} takes a 4-D input (batch, channels, height, width); got {len(shape)}-D "
                         f"shape {list(shape)}" + (" (add a batch dimension: x.unsqueeze(0))" if len(shape) == 3
                                                  else ""))
    n, c, h, w = shape
    if n < 1:
        raise InputError(f"batch size must be at least 1, got {n}")
    if c != spec.in_channels:
        raise InputError(f"{spec.name} takes {spec.in_channels}-channel inputs; got {c} channels "
                         f"(shape {list(shape)})")
    low = min_resolution(spec)
    if h < low or w < low:
        raise InputError(f"input {h}x{w} is too small for {spec.name}: height and width must be at least {low} "
                         f"(its stem kernel)")


def check_input(spec: ArchSpec, x: torch.Tensor, dtype: torch.dtype | None = torch.float32) -> None:
    """Check a tensor's shape (:func:`check_input_shape`) and dtype (``None``: any floating type)."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"expected a torch.Tensor, got {type(x).__name__}")
    check_input_shape(spec, x.shape)
    if not x.dtype.is_floating_point:
        raise InputError(f"{spec.name} takes floating-point (normalised) images; got dtype {x.dtype} "
                         "(convert with x.float() after normalising)")
    if dtype is not None and x.dtype != dtype:
        raise InputError(f"input dtype {x.dtype} does not match the model's {dtype} (use x.to({dtype}))")


def _model_spec(model: nn.Module) -> ArchSpec | None:
    spec = getattr(model, "spec", None)
    return spec if isinstance(spec, ArchSpec) else None


def _model_dtype(model: nn.Module) -> torch.dtype:
    p = next(model.parameters(), None)
    return p.dtype if p is not None else torch.float32


def as_model(model: nn.Module | ArchSpec | str) -> nn.Module:
    """A module from a module, a spec, a zoo name or a spec file path (random weights for the last three)."""
    if isinstance(model, nn.Module):
        return model
    from .model import build

    return build(model)


def example_input(model: nn.Module, resolution: int | Sequence[int] | None = None, batch: int = 1,
                  seed: int = 0) -> torch.Tensor:
    """A seeded standard-normal input batch for ``model`` at ``resolution`` (default: its spec's)."""
    spec = _model_spec(model)
    if resolution is None:
        if spec is None:
            raise ValueError("give a resolution for a module without a spec")
        resolution = spec.resolution
    h, w = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
    channels = spec.in_channels if spec is not None else 3
    if spec is not None:
        check_input_shape(spec, (batch, channels, h, w))
    elif batch < 1 or h < 1 or w < 1:
        raise InputError(f"batch and resolution must be positive, got batch {batch}, {h}x{w}")
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, h, w, generator=g, dtype=_model_dtype(model))


# -- runtimes ---------------------------------------------------------------------------------------------
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


def ort_session(onnx_path: str | os.PathLike | bytes, threads: int = 1, profile_prefix: str | None = None):
    """An ONNX Runtime CPU session set up for latency: ``threads`` intra-op threads, one inter-op thread,
    sequential execution, every graph optimisation; optionally with its profiler on."""
    ort = require("onnxruntime", purpose="the ONNX Runtime runtime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    source = onnx_path if isinstance(onnx_path, bytes) else str(onnx_path)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def _exported(model: nn.Module, x: torch.Tensor, tmp: str) -> str:
    from .deploy.onnx_export import export_onnx

    path = os.path.join(tmp, "model.onnx")
    export_onnx(model, path, input_shape=tuple(x.shape), verify=False)
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


def prepare_runtime(runtime: str, model: nn.Module, x: torch.Tensor, threads: int = 1, *,
                    channels_last: bool = True, frozen_method: str = DEFAULT_FROZEN,
                    calibration: Sequence[Any] | None = None) -> Prepared:
    """Set up ``runtime`` for ``model`` on the fixed input ``x``; call within :func:`pinned_threads`.
    ``calibration``: inputs shaped like ``x`` for ``onnxruntime-int8``."""
    if runtime == "eager":
        return _eager(model, x, threads, channels_last)
    if runtime == "frozen":
        return _frozen(model, x, threads, frozen_method, channels_last)
    if runtime == "onnxruntime":
        return _onnxruntime(model, x, threads)
    if runtime == "onnxruntime-int8":
        return _onnxruntime_int8(model, x, threads, calibration)
    if runtime == "litert":
        return _litert(model, x, threads)
    raise ValueError(f"unknown runtime {runtime!r} (choose from {', '.join(RUNTIMES)})")


def available_runtimes() -> list[str]:
    """The core runtimes, plus LiteRT when its extra is installed."""
    import importlib.util

    extra = [] if importlib.util.find_spec("litert_torch") is None else ["litert"]
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
    spec = _model_spec(model)
    return spec.name if spec is not None else type(model).__name__


def _resolve_input(model: nn.Module, x: torch.Tensor | None, resolution: int | None, batch: int,
                   require_float32: bool) -> torch.Tensor:
    spec = _model_spec(model)
    if x is None:
        x = example_input(model, resolution, batch)
    elif spec is not None:
        check_input(spec, x, torch.float32 if require_float32 else _model_dtype(model))
    return x


def measure_latency(model: nn.Module | ArchSpec | str, *, runtime: str = "eager", resolution: int | None = None,
                    batch: int = 1, threads: int = 1, warmup: int = 10, min_runs: int = 50,
                    min_seconds: float = 2.0, max_seconds: float = 120.0, x: torch.Tensor | None = None,
                    channels_last: bool = True, frozen_method: str = DEFAULT_FROZEN,
                    calibration: Sequence[Any] | None = None) -> LatencyResult:
    """Median latency (and p10/p90/mean) of one forward pass of ``model`` on ``runtime``.

    ``model``: a module (its weights are used), a spec, a zoo name or a spec file (random weights: latency does
    not depend on them). The input is ``x`` or a seeded random ``(batch, C, resolution, resolution)`` tensor;
    ``calibration`` (arrays shaped like it) calibrates the ``onnxruntime-int8`` runtime.
    The model is measured in eval mode; its own mode and the thread count are restored afterwards.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r} (choose from {', '.join(RUNTIMES)})")
    if runtime in ("onnxruntime", "onnxruntime-int8"):
        require("onnxruntime", purpose="the ONNX Runtime runtime")
        require("onnx", purpose="exporting to ONNX")
    if runtime == "litert":
        require("litert_torch", extra="litert", purpose="LiteRT conversion")
        require("ai_edge_litert", extra="litert", purpose="the LiteRT interpreter")
    model = as_model(model)
    x = _resolve_input(model, x, resolution, batch,
                       require_float32=runtime in ("onnxruntime", "onnxruntime-int8", "litert"))
    info = machine_info()
    was_training = model.training
    try:
        with pinned_threads(threads) as used:
            prepared = prepare_runtime(runtime, model, x, used, channels_last=channels_last,
                                       frozen_method=frozen_method, calibration=calibration)
            stats = time_callable(prepared.run, warmup=warmup, min_runs=min_runs, min_seconds=min_seconds,
                                  max_seconds=max_seconds)
    finally:
        model.train(was_training)
    return LatencyResult(_model_name(model), runtime, prepared.detail, tuple(x.shape), prepared.threads, warmup,
                         stats, prepared.version, info, dict(prepared.extra))


def measure_onnx_file(path: str | os.PathLike, *, threads: int = 1, warmup: int = 10, min_runs: int = 50,
                      min_seconds: float = 2.0, max_seconds: float = 120.0, seed: int = 0) -> LatencyResult:
    """Latency of an ONNX file as it is (say one written by ``mnv3 export --int8``) in the session
    :func:`ort_session` sets up, on a seeded random input of its shape (symbolic dimensions taken as 1).

    The runtime is reported as ``onnxruntime-int8`` when the graph holds quantisation nodes.
    """
    import numpy as np

    ort = require("onnxruntime", purpose="the ONNX Runtime runtime")
    onnx = require("onnx", purpose="reading an ONNX file")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    ops = {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
    int8 = bool(ops & {"QuantizeLinear", "QLinearConv", "ConvInteger", "MatMulInteger"})
    info = machine_info()
    session = ort_session(path, threads)
    inp = session.get_inputs()[0]
    shape = tuple(d if isinstance(d, int) else 1 for d in inp.shape)
    feed = {inp.name: np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}
    stats = time_callable(lambda: session.run(None, feed), warmup=warmup, min_runs=min_runs,
                          min_seconds=min_seconds, max_seconds=max_seconds)
    detail = f"{path.name}: CPUExecutionProvider, ORT_ENABLE_ALL, sequential, intra_op_num_threads={threads}"
    return LatencyResult(path.stem, "onnxruntime-int8" if int8 else "onnxruntime", detail, shape, threads, warmup,
                         stats, ort.__version__, info, {"file": str(path)})


# -- per-layer profiles -------------------------------------------------------------------------------------
def layer_names(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """(name, modules) of the top-level stages of a model, in forward order.

    For a :class:`~mobilenetv3.model.MobileNetV3`: ``stem``, ``block1``... (numbered as in the paper's tables),
    ``last_conv``, ``last_se`` and ``head`` (pool, head conv and classifier). Any other module: its children.
    """
    spec = _model_spec(model)
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
    x = _resolve_input(model, x, resolution, batch, require_float32=False)
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
    spec = _model_spec(model)
    madds = _stage_madds(spec, tuple(x.shape[-2:])) if spec is not None else {}
    medians = {n: percentile(t, 50) * 1e3 for n, t in times.items() if t}
    total = sum(medians.values()) or 1.0
    return [LayerTime(n, medians[n], percentile(times[n], 90) * 1e3, medians[n] / total, madds.get(n))
            for n, _ in stages if n in medians]


_FEATURE_NODE = re.compile(r"(?:^|/)features(?:/features)?\.(\d+)(?:/|$)")


def _node_stage(node: str, op: str, names: list[str]) -> str:
    m = _FEATURE_NODE.search(node)
    if m:
        i = int(m.group(1))
        return names[i] if i < len(names) else f"features.{i}"
    if op.startswith("Reorder"):
        return "reorders"  # layout conversions ONNX Runtime inserts for its blocked (NCHWc) convolutions
    return "head"


def parse_ort_profile(events: list[dict[str, Any]], names: list[str] | None = None) -> dict[str, Any]:
    """Kernel times from an ONNX Runtime profile: each node's median over the runs it appears in (robust to a
    run disturbed by other work), in ms, summed per op type and per stage.

    ``names`` maps ``features.<i>`` in node names to stage names (default: ``features.<i>`` as is); the layout
    conversions ONNX Runtime inserts (``ReorderInput``/``ReorderOutput``) have no module and go to ``reorders``,
    other nodes outside ``features`` to ``head``.
    """
    durations: dict[str, list[float]] = {}
    ops: dict[str, str] = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        node = e["name"][: -len("_kernel_time")]
        durations.setdefault(node, []).append(float(e.get("dur", 0)) / 1e3)
        ops[node] = (e.get("args") or {}).get("op_name", "?")
    by_op: dict[str, float] = {}
    by_stage: dict[str, float] = {}
    for node, values in durations.items():
        ms = percentile(values, 50)
        by_op[ops[node]] = by_op.get(ops[node], 0.0) + ms
        stage = _node_stage(node, ops[node], names or [])
        by_stage[stage] = by_stage.get(stage, 0.0) + ms
    return {"runs": max((len(v) for v in durations.values()), default=0), "nodes": len(durations),
            "total_ms": sum(by_op.values()), "by_op": dict(sorted(by_op.items(), key=lambda kv: -kv[1])),
            "by_stage": by_stage}


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
    x = _resolve_input(model, x, resolution, batch, require_float32=True)
    spec = _model_spec(model)
    names = _feature_names(spec) if spec is not None else []
    with tempfile.TemporaryDirectory() as tmp:
        path = _exported(model, x, tmp)
        session = ort_session(path, threads, profile_prefix=os.path.join(tmp, "ort_profile"))
        feed = {session.get_inputs()[0].name: x.numpy()}
        for _ in range(warmup + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    # Each run's node events come in order; drop the warm-up runs' share.
    node_events = [e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")]
    per_run = len(node_events) // (warmup + runs)
    result = parse_ort_profile(node_events[per_run * warmup:], names)
    stages = [n for n, _ in layer_names(model)]
    result["by_stage"] = {s: result["by_stage"][s] for s in stages if s in result["by_stage"]} | {
        s: v for s, v in result["by_stage"].items() if s not in stages}
    result.update({"model": _model_name(model), "input_shape": list(x.shape), "threads": threads})
    return result
