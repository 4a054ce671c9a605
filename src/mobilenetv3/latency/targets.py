"""The runtimes of ``mnv3 latency --runtime``: each a way from a PyTorch module to a timed forward pass, made of a
deploy step (export, quantisation, conversion; none for PyTorch's own) and a :mod:`mobilenetv3.runtime` backend.

:data:`TARGETS` registers them; :func:`prepare_runtime` looks the name up there. Adding one is a preparing
function and one entry. The int8 targets calibrate on ``calibration`` when given, else on a few seeded random
inputs: kernel times do not depend on the values, accuracy does (use real images for a model you ship).
``openvino-int8`` uses :func:`~mobilenetv3.deploy.quantize.quantize_onnx`'s OpenVINO target (no quantisation
between a convolution and its activation, which OpenVINO fuses into one int8 kernel); ``openvino-bf16`` is a
reduced-precision path, reported apart from the float ones.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..extras import require
from ..runtime.backend import Prepared
from ..runtime.onnxruntime import OnnxRuntime
from ..runtime.openvino import OpenVINO
from ..runtime.torch_eager import TorchEager
from ..runtime.torchscript import DEFAULT_FROZEN, FROZEN_METHODS, FrozenGraph

OPENVINO_RUNTIMES = ("openvino", "openvino-int8", "openvino-bf16")
CORE_RUNTIMES = ("eager", "frozen", "onnxruntime")

# (module, extra, purpose) checked before a measurement starts, so a missing extra fails before any work
ORT = (("onnxruntime", "deploy", "the ONNX Runtime runtime"), ("onnx", "deploy", "exporting to ONNX"))
OPENVINO = (("openvino", "openvino", "the OpenVINO runtime"), ("onnx", "openvino", "exporting to ONNX"))
LITERT = (("litert_torch", "litert", "LiteRT conversion"), ("ai_edge_litert", "litert", "the LiteRT interpreter"))


@dataclass(frozen=True)
class Target:
    """One runtime of :data:`RUNTIMES`: how it is prepared, the optional packages it needs, whether it takes a
    float32 input only, and whether ``--runtime all`` includes it (when ``probe``, a module, is installed)."""

    prepare: Callable[..., Prepared]
    needs: tuple[tuple[str, str | None, str], ...] = ()
    float32_only: bool = True
    in_all: bool = False
    probe: str | None = None

    def require(self) -> None:
        for module, extra, purpose in self.needs:
            require(module, extra=extra, purpose=purpose)


def onnx_export(model: nn.Module, x: torch.Tensor, tmp: str, ort_nchwc: bool = True, input_layout: str = "nchw"
                ) -> str:
    """The BN-folded ONNX export in ``tmp``; ``ort_nchwc`` applies the graph passes written for ONNX Runtime's
    blocked layout (OpenVINO measured slower with them, so its runtimes leave them out)."""
    from ..deploy.onnx_export import export_onnx

    path = os.path.join(tmp, "model.onnx")
    export_onnx(model, path, input_shape=tuple(x.shape), verify=False, ort_nchwc=ort_nchwc, input_layout=input_layout)
    return path


def exported_once(model: nn.Module, x: torch.Tensor, tmp: str, onnx_file: str | os.PathLike | None, *,
                  ort_nchwc: bool = True, input_layout: str = "nchw") -> str:
    """The path of ``model``'s ONNX export for ``x``'s shape: ``onnx_file`` as it is when it exists (an earlier
    call's export of the same module), else a new export in ``tmp`` (:func:`onnx_export`), moved to ``onnx_file``
    when one is named so that the next call skips the export."""
    if onnx_file is not None and os.path.exists(onnx_file):
        return os.fspath(onnx_file)
    path = onnx_export(model, x, tmp, ort_nchwc=ort_nchwc, input_layout=input_layout)
    if onnx_file is None:
        return path
    return shutil.move(path, onnx_file)


def _calibration(calibration: Sequence[Any] | None, x: torch.Tensor) -> list[Any]:
    from ..deploy.quantize import random_calibration_data

    return list(calibration) if calibration is not None else random_calibration_data(tuple(x.shape))


def _calibration_note(calibration: Sequence[Any] | None, calib: list[Any]) -> str:
    return f"{'real' if calibration is not None else 'random'} calibration, {len(calib)} inputs"


def _eager(model, x, threads, *, channels_last, **_) -> Prepared:
    return TorchEager.prepare(model, x, threads=threads, channels_last=channels_last)


def _frozen(model, x, threads, *, channels_last, frozen_method, **_) -> Prepared:
    return FrozenGraph.prepare(model, x, threads=threads, method=frozen_method, channels_last=channels_last)


def _onnxruntime(model, x, threads, *, onnx_file, **_) -> Prepared:
    require("onnxruntime", purpose="the ONNX Runtime runtime")
    require("onnx", purpose="exporting to ONNX")
    with tempfile.TemporaryDirectory() as tmp:
        return OnnxRuntime.prepare(exported_once(model, x, tmp, onnx_file), x, threads=threads)


def _onnxruntime_int8(model, x, threads, *, calibration, **_) -> Prepared:
    from ..deploy.quantize import quantize_onnx

    require("onnxruntime", purpose="the ONNX Runtime runtime")
    calib = _calibration(calibration, x)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model_int8.onnx")
        report = quantize_onnx(model, path, calib, input_shape=tuple(x.shape), verify=False)
        prepared = OnnxRuntime.prepare(path, x, threads=threads)
    return prepared.described("onnxruntime-int8", f"int8 QDQ ({_calibration_note(calibration, calib)}), ",
                              {"int8_graph_changes": report.graph_changes})


def _openvino(precision: str) -> Callable[..., Prepared]:
    def prepare(model, x, threads, *, input_layout, onnx_file, **_) -> Prepared:
        require("onnx", extra="openvino", purpose="exporting to ONNX")
        require("openvino", extra="openvino", purpose="the OpenVINO runtime")
        with tempfile.TemporaryDirectory() as tmp:
            path = exported_once(model, x, tmp, onnx_file, ort_nchwc=False, input_layout=input_layout)
            prepared = OpenVINO.prepare(path, x, threads=threads, layout=input_layout, precision=precision)
        return prepared.described(before=f"ONNX export (BN folded, {input_layout.upper()} input), ")
    return prepare


def _openvino_int8(model, x, threads, *, calibration, input_layout, **_) -> Prepared:
    from ..deploy.quantize import INT8_TARGETS, quantize_onnx

    require("openvino", extra="openvino", purpose="the OpenVINO runtime")
    calib = _calibration(calibration, x)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model_int8.onnx")
        report = quantize_onnx(model, path, calib, input_shape=tuple(x.shape), verify=False,
                               options=INT8_TARGETS["openvino"], input_layout=input_layout)
        prepared = OpenVINO.prepare(path, x, threads=threads, layout=input_layout)
    return prepared.described("openvino-int8", f"int8 QDQ for OpenVINO, convolutions fused with their activations "
                                               f"({_calibration_note(calibration, calib)}), float parts in f32, "
                                               f"{input_layout.upper()} input, ",
                              {"int8_graph_changes": report.graph_changes})


def _litert(model, x, threads, **_) -> Prepared:
    from ..deploy.fold import fold_bn
    from ..deploy.litert_export import convert_litert, litert_version
    from ..runtime.litert import LiteRT

    prepared = LiteRT.prepare(convert_litert(fold_bn(model), x), x, threads=threads)
    return prepared.described(before=f"litert-torch {litert_version()} conversion, ")


TARGETS: dict[str, Target] = {
    "eager": Target(_eager, float32_only=False, in_all=True),
    "frozen": Target(_frozen, float32_only=False, in_all=True),
    "onnxruntime": Target(_onnxruntime, ORT, in_all=True),
    "onnxruntime-int8": Target(_onnxruntime_int8, ORT),
    "openvino": Target(_openvino("f32"), OPENVINO, in_all=True, probe="openvino"),
    "openvino-int8": Target(_openvino_int8, (*OPENVINO, ("onnxruntime", "deploy", "int8 quantisation "
                                                                              "(onnxruntime.quantization)"))),
    "openvino-bf16": Target(_openvino("bf16"), OPENVINO),
    "litert": Target(_litert, LITERT, in_all=True, probe="litert_torch"),
}
RUNTIMES = tuple(TARGETS)  # the names above, in order: eager first, litert last
EXPORT_CACHED = ("onnxruntime", "openvino", "openvino-bf16")  # runtimes that run prepare_runtime's onnx_file


def target(runtime: str) -> Target:
    """The :class:`Target` named ``runtime``; a ValueError listing :data:`RUNTIMES` otherwise."""
    if runtime not in TARGETS:
        raise ValueError(f"unknown runtime {runtime!r} (choose from {', '.join(RUNTIMES)})")
    return TARGETS[runtime]


def prepare_runtime(runtime: str, model: nn.Module, x: torch.Tensor, threads: int = 1, *,
                    channels_last: bool = True, frozen_method: str = DEFAULT_FROZEN,
                    calibration: Sequence[Any] | None = None, input_layout: str = "nchw",
                    onnx_file: str | os.PathLike | None = None) -> Prepared:
    """Set up ``runtime`` for ``model`` on the fixed input ``x``; call within :func:`pinned_threads`.
    ``calibration``: inputs shaped like ``x`` for ``onnxruntime-int8`` and ``openvino-int8``. ``input_layout``:
    ``nhwc`` feeds the OpenVINO runtimes ``x`` as N x H x W x C (``export_onnx(input_layout=...)``).
    ``onnx_file``: where the float ONNX runtimes (:data:`EXPORT_CACHED`) keep their export of ``model`` between
    calls: read when it exists (the caller vouches that it is this module at ``x``'s shape and layout), written
    when not; a latency table measured in several sessions exports each block once this way."""
    chosen = target(runtime)
    if input_layout != "nchw" and runtime not in OPENVINO_RUNTIMES:
        raise ValueError(f"input_layout={input_layout!r} applies to the OpenVINO runtimes, not {runtime!r}")
    if onnx_file is not None and runtime not in EXPORT_CACHED:
        raise ValueError(f"onnx_file applies to {', '.join(EXPORT_CACHED)}, not {runtime!r}")
    return chosen.prepare(model, x, threads, channels_last=channels_last, frozen_method=frozen_method,
                          calibration=calibration, input_layout=input_layout, onnx_file=onnx_file)


def available_runtimes() -> list[str]:
    """The core runtimes, plus OpenVINO (float) and LiteRT when their extras are installed."""
    return [name for name, t in TARGETS.items()
            if t.in_all and (t.probe is None or importlib.util.find_spec(t.probe) is not None)]


__all__ = ["CORE_RUNTIMES", "DEFAULT_FROZEN", "EXPORT_CACHED", "FROZEN_METHODS", "OPENVINO_RUNTIMES", "RUNTIMES",
           "TARGETS", "Target", "available_runtimes", "exported_once", "onnx_export", "prepare_runtime", "target"]
