"""Per-layer profiles of a model, attributed to the stages of the paper's tables (``stem``, ``block1``...).

:func:`profile_layers` times every top-level stage of the eager model with forward hooks;
:func:`profile_onnxruntime` (and :func:`profile_onnxruntime_int8` for the int8 QDQ model) reads ONNX Runtime's own
profiler and sums kernel times per op type and per stage. OpenVINO's counters are
:func:`mobilenetv3.runtime.openvino.profile_openvino`, with that backend.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..cost import spec_cost
from ..extras import require
from ..inputs import as_model, input_shape_for, model_spec, resolve_input
from ..runtime.cpu import pinned_threads
from ..runtime.onnxruntime import profile_onnx
from ..runtime.timing import percentile
from ..runtime.torch_eager import to_channels_last
from ..spec import ArchSpec
from .measure import model_name
from .targets import onnx_export


def stage_names(spec: ArchSpec) -> list[str]:
    """The names of a MobileNetV3's ``features`` children in order: ``stem``, ``block1``... (numbered as in the
    paper's tables), then ``last_conv`` and ``last_se`` where the spec has them."""
    names = ["stem"] + [f"block{i}" for i in range(1, len(spec.blocks) + 1)]
    if spec.last_channels:
        names.append("last_conv")
        if spec.last_se:
            names.append("last_se")
    return names


def layer_names(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """(name, modules) of the top-level stages of a model, in forward order.

    For a :class:`~mobilenetv3.model.MobileNetV3`: ``stem``, ``block1``... (:func:`stage_names`), ``last_conv``,
    ``last_se`` and ``head`` (pool, head conv and classifier). Any other module: its children.
    """
    spec = model_spec(model)
    features = getattr(model, "features", None)
    if spec is None or not isinstance(features, nn.Sequential):
        return [(name, [m]) for name, m in model.named_children()]
    names = stage_names(spec)
    stages = [(names[i], [m]) for i, m in enumerate(features)]
    head = [getattr(model, n) for n in ("pool", "conv_head", "head_act", "dropout", "classifier")
            if isinstance(getattr(model, n, None), nn.Module)]
    stages.append(("head", head))
    return stages


def stage_madds(spec: ArchSpec, resolution: tuple[int, int]) -> dict[str, int]:
    """Analytic multiply-adds per stage (:func:`layer_names`' stages; the head conv and classifier in ``head``)."""
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
        model, x = to_channels_last(model, x)
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
    madds = stage_madds(spec, tuple(x.shape[-2:])) if spec is not None else {}
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
    names = stage_names(spec) if spec is not None else []
    with tempfile.TemporaryDirectory() as tmp:
        result = profile_onnx(onnx_export(model, x, tmp), threads=threads, warmup=warmup, runs=runs, names=names,
                              x=x.numpy())
    del result["nodes"]
    stages = [n for n, _ in layer_names(model)]
    result["by_stage"] = {s: result["by_stage"][s] for s in stages if s in result["by_stage"]} | {
        s: v for s, v in result["by_stage"].items() if s not in stages}
    result.update({"model": model_name(model), "input_shape": list(x.shape), "threads": threads})
    return result


def profile_onnxruntime_int8(model: nn.Module, *, resolution: int | None = None, batch: int = 1, threads: int = 1
                             ) -> dict[str, Any]:
    """ONNX Runtime's profile of ``model`` quantised as the ``onnxruntime-int8`` runtime does (calibrated on
    random inputs: kernel times do not depend on them), by op type and by stage as :func:`profile_onnxruntime`."""
    from ..deploy.quantize import quantize_onnx, random_calibration_data

    shape = input_shape_for(model, None, resolution, batch)
    spec = model_spec(model)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "int8.onnx")
        quantize_onnx(model, path, random_calibration_data(shape), input_shape=shape, verify=False)
        prof = profile_onnx(path, threads=threads, names=stage_names(spec) if spec is not None else [])
    prof.pop("nodes")
    return prof


__all__ = ["LayerTime", "layer_names", "profile_layers", "profile_onnxruntime", "profile_onnxruntime_int8",
           "stage_madds", "stage_names"]
