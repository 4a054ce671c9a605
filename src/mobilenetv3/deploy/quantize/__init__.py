"""int8 post-training quantisation, calibrated on real images: ONNX Runtime's QDQ files (the default) or PyTorch
PT2E, split along its seams:

- :mod:`.options`: :class:`Int8Options`, the per-runtime set-ups :data:`INT8_TARGETS`, and why each graph change
  makes the int8 model faster (depthwise padding, integer hard-swish, SE pooling, float stem);
- :mod:`.calibration`: calibration images (:func:`calibration_data`, :func:`calibration_for`);
- :mod:`.surgery`: exact model edits before export (:func:`int8_ready`);
- :mod:`.passes`: the ONNX int8 graph rewrites;
- :mod:`.qdq`: :func:`quantize_onnx` (ONNX Runtime's ``quantize_static``);
- :mod:`.pt2e`: :func:`quantize_pt2e` and its save / load / compile / export.

Comparing a file with its float model lives in :mod:`mobilenetv3.deploy.evaluate`, ONNX Runtime's per-node
profile (:func:`profile_onnx`) in :mod:`mobilenetv3.runtime.onnxruntime`; both are re-exported here. Measured
speeds and accuracies: docs/benchmarks.md.
"""

from ...runtime.onnxruntime import profile_onnx
from ..evaluate import (
    EVAL_RUNTIMES,
    compare_onnx_with_model,
    compare_outputs,
    evaluate_onnx,
    evaluate_torch,
    onnx_logits,
)
from .calibration import CalibrationError, calibration_data, calibration_for, random_calibration_data
from .options import (
    ACTIVATION_TYPES,
    CALIBRATION_METHODS,
    DEFAULT_CALIBRATION_SAMPLES,
    DEFAULT_TOOLCHAIN,
    FLOAT_PARTS,
    INT8_TARGETS,
    PLAIN,
    SE_POOLS,
    TOOLCHAINS,
    Int8Options,
    replace_options,
)
from .passes import (
    FUSED_ACTIVATIONS,
    float_ops,
    hardswish_qparams,
    int8_hardswish,
    materialize_shared_initializers,
    reduce_mean_to_global_pool,
    unquantize_conv_activations,
)
from .pt2e import compile_pt2e, export_pt2e, load_pt2e, quantize_pt2e, save_pt2e
from .qdq import QuantizeReport, quantize_onnx
from .surgery import PaddedInput, int8_ready, pad_depthwise_channels

__all__ = [
    "ACTIVATION_TYPES", "CALIBRATION_METHODS", "DEFAULT_CALIBRATION_SAMPLES", "DEFAULT_TOOLCHAIN", "EVAL_RUNTIMES",
    "FLOAT_PARTS", "FUSED_ACTIVATIONS", "INT8_TARGETS", "PLAIN",
    "SE_POOLS", "TOOLCHAINS", "CalibrationError", "Int8Options", "PaddedInput", "QuantizeReport",
    "calibration_data", "calibration_for", "compare_onnx_with_model", "compare_outputs", "compile_pt2e",
    "evaluate_onnx", "evaluate_torch", "export_pt2e", "float_ops", "hardswish_qparams", "int8_hardswish",
    "int8_ready",
    "load_pt2e", "materialize_shared_initializers", "onnx_logits", "pad_depthwise_channels", "profile_onnx",
    "quantize_onnx", "quantize_pt2e", "random_calibration_data", "reduce_mean_to_global_pool", "replace_options",
    "save_pt2e", "unquantize_conv_activations",
]
