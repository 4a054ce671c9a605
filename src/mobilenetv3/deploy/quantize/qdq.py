"""int8 post-training quantisation with ONNX Runtime's ``quantize_static`` into QDQ form: the BN-folded, padded
float export (:mod:`.surgery`) is rewritten (:mod:`.passes`), calibrated and quantised, then checked against the
float model. The :class:`~.options.Int8Options` choose the graph; :data:`~.options.INT8_TARGETS` the runtime."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ...extras import require
from ...inputs import input_shape_for
from ...runtime.cpu import u8s8_saturates
from ..evaluate import compare_onnx_with_model
from ..onnx_export import INPUT_LAYOUTS, INPUT_NAME, export_onnx, record_input_layout, verify_onnx
from ..output import writable_output
from .calibration import calibration_reader, check_calibration
from .options import SE_POOLS, Int8Options
from .passes import (
    float_nodes,
    float_ops,
    int8_hardswish,
    materialize_shared_initializers,
    reduce_mean_to_global_pool,
    unquantize_conv_activations,
)
from .surgery import int8_ready

SATURATION_NOTE = ("this CPU has AVX2 but no VNNI: ONNX Runtime's uint8 x int8 kernels can saturate here, so the "
                   "checks may show more error than the file has on VNNI or ARM CPUs (reduce_range avoids it, at "
                   "some accuracy cost)")


@dataclass
class QuantizeReport:
    """What :func:`quantize_onnx` wrote and how it checks against the float model."""

    path: str
    float_path: str | None
    toolchain: str
    options: dict[str, Any]
    input_shape: tuple[int, ...]
    dynamic_batch: bool
    calibration_samples: int
    graph_changes: dict[str, int]
    ops: dict[str, int]
    checks: dict[str, Any] = field(default_factory=dict)
    input_layout: str = "nchw"  # input_shape is NCHW; the file takes it in this layout
    float_ops: dict[str, int] = field(default_factory=dict)  # what computes in float (passes.float_ops)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d


def quantize_onnx(model: nn.Module, path: str | os.PathLike, calibration: Sequence[np.ndarray], *,
                  resolution: int | Sequence[int] | None = None, batch: int = 1,
                  input_shape: Sequence[int] | None = None,
                  dynamic_batch: bool = False, options: Int8Options | None = None,
                  float_path: str | os.PathLike | None = None, verify: bool = True,
                  tensor_overrides: Callable[[Any], dict[str, list[dict[str, Any]]]] | None = None,
                  input_layout: str = "nchw") -> QuantizeReport:
    """Quantise ``model`` to an int8 QDQ ONNX file at ``path``, calibrated on ``calibration`` (arrays shaped like
    the model input, e.g. from :func:`calibration_data`; a sequence that loads them when read, as
    :func:`~.calibration.run_calibration_data` gives, is read as it is).

    ``model``: a classifier, or a segmentation model (logits at the input's size: ``input_shape`` (N, C, H, W)
    or ``resolution`` (height, width) gives its size; the checks then compare the logits pixel by pixel).

    ``tensor_overrides`` maps the float graph (an ``onnx.ModelProto``) to ONNX Runtime's ``TensorQuantOverrides``
    (tensor name -> ``[{"scale": ..., "zero_point": ...}]``): those tensors take the given quantisation instead of
    the calibrated one (quantisation-aware training passes its learned ranges this way,
    :mod:`~mobilenetv3.deploy.qat_convert`).

    The float graph is the BN-folded export of :func:`int8_ready` (checked against ``model`` to 1e-4); it is
    also written to ``float_path`` when given. With ``verify`` the int8 file is run on the calibration images and
    compared with the float model: ``checks`` holds the argmax agreement and the logits' error relative to
    their range (no threshold: how much error is acceptable is the caller's call).

    ``input_layout="nhwc"``: the file takes N x H x W x C images (as :func:`export_onnx`'s option; the stem's
    input transpose stays float); ``calibration`` and ``input_shape`` stay NCHW.
    """
    onnx = require("onnx", purpose="int8 quantisation")
    ort_quant = require("onnxruntime.quantization", purpose="int8 quantisation")
    options = options or Int8Options()
    if input_layout not in INPUT_LAYOUTS:
        raise ValueError(f"unknown input layout {input_layout!r} (choose from {', '.join(INPUT_LAYOUTS)})")
    shape = input_shape_for(model, input_shape, resolution, batch)
    calibration = calibration if isinstance(calibration, Sequence) else list(calibration)  # may load lazily
    check_calibration(calibration, shape, dynamic_batch)
    was_training = model.training
    model.eval()
    path = writable_output(path)
    try:
        prepared = int8_ready(model, options)
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "float.onnx"
            export_onnx(prepared, raw, input_shape=shape, dynamic_batch=dynamic_batch, fold=False, verify=False,
                        ort_nchwc=False,  # the NCHWc rewrites slow the int8 graph down
                        input_layout=input_layout)
            proto = onnx.load(str(raw))
            changes = {"shared_initializers": materialize_shared_initializers(proto),
                       "se_global_pool": reduce_mean_to_global_pool(proto) if options.se_pool == SE_POOLS[0]
                       else 0}
            float_file = (writable_output(float_path) if float_path is not None
                          else Path(tmp) / "float_prepared.onnx")
            onnx.save(proto, str(float_file))
            if verify:
                worst = max(c["max_abs_diff"] for c in verify_onnx(float_file, model, [shape],
                                                                   input_layout=input_layout))
                if worst > 1e-3:
                    raise RuntimeError(f"the padded float graph differs from the model by {worst:.3g}")
            qtype = ort_quant.QuantType
            act = qtype.QUInt8 if options.activation_type == "uint8" else qtype.QInt8
            method = {"minmax": ort_quant.CalibrationMethod.MinMax,
                      "percentile": ort_quant.CalibrationMethod.Percentile,
                      "entropy": ort_quant.CalibrationMethod.Entropy}[options.calibrate_method]
            extra: dict[str, Any] = {"WeightSymmetric": True, "ActivationSymmetric": False}
            if tensor_overrides is not None:
                extra["TensorQuantOverrides"] = tensor_overrides(proto)
                changes["tensor_overrides"] = len(extra["TensorQuantOverrides"])
            level = logging.getLogger().level
            logging.getLogger().setLevel(logging.ERROR)  # the quantiser's "consider pre-processing" notes
            try:  # the histogram calibrators print their progress: to stderr, so --json's stdout stays JSON
                with contextlib.redirect_stdout(sys.stderr):
                    ort_quant.quantize_static(
                        str(float_file), str(path), calibration_reader(calibration, INPUT_NAME, input_layout),
                        quant_format=ort_quant.QuantFormat.QDQ, per_channel=options.per_channel,
                        reduce_range=options.reduce_range, activation_type=act, weight_type=qtype.QInt8,
                        calibrate_method=method, extra_options=extra,
                        nodes_to_exclude=float_nodes(proto, options.keep_float)
                        + [n.name for n in proto.graph.node if n.op_type == "Transpose" and INPUT_NAME in n.input])
            finally:
                logging.getLogger().setLevel(level)
        q_proto = onnx.load(str(path))
        if options.int8_hardswish:
            changes["int8_hardswish"] = int8_hardswish(q_proto)
        if options.fuse_conv_act:
            changes["conv_act_qdq_removed"] = unquantize_conv_activations(q_proto)
        q_proto.producer_name = "mobilenetv3 int8 (onnxruntime.quantization)"
        record_input_layout(q_proto, input_layout)
        onnx.checker.check_model(q_proto)
        onnx.save(q_proto, str(path))
        ops = dict(sorted(Counter(n.op_type for n in q_proto.graph.node).items()))
        report = QuantizeReport(str(path), str(float_path) if float_path is not None else None, "onnxruntime",
                                options.to_dict(), shape, dynamic_batch, len(calibration), changes, ops,
                                input_layout=input_layout, float_ops=float_ops(q_proto))
        if verify:
            report.checks = compare_onnx_with_model(path, model, calibration[: min(len(calibration), 32)])
            if options.activation_type == "uint8" and not options.reduce_range and u8s8_saturates():
                report.checks["note"] = SATURATION_NOTE
        return report
    finally:
        model.train(was_training)
