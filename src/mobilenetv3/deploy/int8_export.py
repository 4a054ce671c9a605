"""One call for an int8 file, as ``mnv3 export --int8`` writes it: the toolchain's extras checked before any
image is read, calibration images drawn (:func:`~.quantize.calibration_for`), then ONNX Runtime's QDQ file for
a target runtime, the conversion of a quantisation-aware-trained model, or a PT2E program. A segmentation run's
file comes through :func:`~.task_export.export_task_int8`, which picks its size and calls this."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from torch import nn

from ..extras import require
from ..inputs import input_shape_for
from .fake_quant import FakeQuantization, QATError
from .output import writable_output
from .qat_convert import convert_qat
from .quantize.calibration import calibration_for
from .quantize.options import (
    DEFAULT_CALIBRATION_SAMPLES,
    DEFAULT_TOOLCHAIN,
    INT8_TARGETS,
    TOOLCHAINS,
    replace_options,
)
from .quantize.pt2e import export_pt2e, pt2e_modules
from .quantize.qdq import quantize_onnx


def export_int8(model: nn.Module, path: str | os.PathLike, calibration_source: str, *,
                samples: int = DEFAULT_CALIBRATION_SAMPLES, run_data: dict[str, Any] | None = None,
                toolchain: str = DEFAULT_TOOLCHAIN, target: str = "onnxruntime",
                resolution: int | Sequence[int] | None = None, batch: int = 1, dynamic_batch: bool = False,
                input_layout: str = "nchw", qat: tuple[nn.Module, FakeQuantization] | None = None,
                task: str = "classification", reduce_range: bool = False, calibrate_method: str = "minmax",
                keep_float: Sequence[str] | None = None) -> dict[str, Any]:
    """Write ``model`` as an int8 file at ``path`` and return its report as a dict (with ``calibration_data``, a
    label for where the calibration images came from, and ``target`` for an ONNX Runtime QDQ file).

    ``calibration_source``, ``run_data`` and ``task`` (the run's; a segmentation run calibrates on its task's
    evaluation data): as :func:`~.quantize.calibration_for` takes them (``samples`` images). ``resolution``: a
    side or (height, width) (default: the spec's). ``toolchain``: ``onnxruntime`` (a QDQ ONNX file shaped for
    ``target``, one of :data:`~.quantize.INT8_TARGETS`) or ``pt2e`` (a ``torch.export`` program). ``qat``: a
    quantisation-aware-trained model and its fake quantisation; the file then takes the ranges it learned
    (:func:`~.qat_convert.convert_qat`; the calibration images only feed the checks), which needs the
    ``onnxruntime`` toolchain and target and NCHW input, the graph the training simulated (:class:`QATError`).
    ``reduce_range``: 7-bit weights in the QDQ file (:class:`~.quantize.Int8Options`), for CPUs whose uint8 x int8
    products saturate (AVX2 without VNNI: :func:`~mobilenetv3.runtime.cpu.u8s8_saturates`); not with ``qat``.
    ``calibrate_method``: how ONNX Runtime's calibrator turns the observed activations into ranges (``minmax``,
    ``percentile``: the 0.001st and 99.999th percentiles of each tensor's histogram; ``entropy`` is ONNX
    Runtime's KL method, which gives min-max's ranges: ``quantize_static`` passes no bin counts to it, and with
    its defaults of 128 histogram bins and 128 quantized bins the KL search has one candidate, the whole range);
    the onnxruntime toolchain's QDQ files only. ``keep_float``: the parts left in float
    (:data:`~.quantize.options.FLOAT_PARTS` or node-name substrings; default the target's, stem and block 1).
    """
    if toolchain not in TOOLCHAINS:
        raise ValueError(f"toolchain must be one of {', '.join(TOOLCHAINS)}, got {toolchain!r}")
    if target not in INT8_TARGETS:
        raise ValueError(f"target must be one of {', '.join(INT8_TARGETS)}, got {target!r}")
    if qat is not None and (toolchain, target, input_layout) != ("onnxruntime", "onnxruntime", "nchw"):
        raise QATError("quantisation-aware training simulates the onnxruntime target's graph with NCHW input: "
                       "convert it with the onnxruntime toolchain and target and an NCHW input layout")
    if reduce_range and qat is not None:
        raise QATError("quantisation-aware training simulates 8-bit weights: convert it without reduce_range")
    if reduce_range and toolchain != "onnxruntime":
        raise ValueError("reduce_range applies to the onnxruntime toolchain's QDQ files")
    if keep_float is not None and (toolchain != "onnxruntime" or qat is not None):
        raise ValueError("keep_float applies to the onnxruntime toolchain's calibrated QDQ files")
    if calibrate_method != "minmax" and (toolchain != "onnxruntime" or qat is not None):
        raise ValueError("calibrate_method applies to the onnxruntime toolchain's calibrated QDQ files (not PT2E, "
                         "not a quantisation-aware-trained run, whose ranges are learned)")
    writable_output(path)
    if toolchain == "onnxruntime":  # fail before the calibration images are read
        require("onnx", purpose="int8 export")
        require("onnxruntime.quantization", purpose="int8 quantisation")
    else:
        pt2e_modules()
    shape = input_shape_for(model, None, resolution, batch)
    calibration, source = calibration_for(calibration_source, shape, samples=samples, run_data=run_data,
                                          dynamic_batch=dynamic_batch, task=task)
    if qat is not None:
        qat_model, fake_quant = qat
        result = convert_qat(qat_model, fake_quant, path, calibration, input_shape=shape,
                             dynamic_batch=dynamic_batch).to_dict()
        source = f"{source} (checks only: the ranges are the run's quantisation-aware training's)"
    elif toolchain == "onnxruntime":
        result = quantize_onnx(model, path, calibration, input_shape=shape, dynamic_batch=dynamic_batch,
                               options=replace_options(INT8_TARGETS[target], reduce_range=reduce_range,
                                                       calibrate_method=calibrate_method,
                                                       **({} if keep_float is None else
                                                          {"keep_float": tuple(keep_float)})),
                               input_layout=input_layout).to_dict()
        result["target"] = target
    else:
        result = export_pt2e(model, path, calibration, shape)
    result["calibration_data"] = source
    return result
