"""Deployment: BatchNorm folding, ONNX and LiteRT export (each checked against eager PyTorch), int8 quantisation.

:func:`fold_bn` needs only PyTorch; :func:`export_onnx` and :func:`quantize_onnx` need the ``deploy`` extra
(``pip install 'mobilenetv3[deploy]'``), :func:`export_litert` the ``litert`` extra and :func:`quantize_pt2e` the
``pt2e`` extra (torchao), each imported only when called. :func:`prepare_qat` (quantisation-aware training)
needs only PyTorch; :func:`convert_qat` writes its int8 ONNX file (``deploy``).

The names below are loaded on first use (module ``__getattr__``), so ``from mobilenetv3.deploy import fold_bn``
imports neither the export nor the quantisation modules.

Modules: :mod:`.fold` (BatchNorm folding), :mod:`.onnx_export` and :mod:`.onnx_passes` (ONNX export and its
graph rewrites for ONNX Runtime), :mod:`.litert_export`, :mod:`.quantize` (int8 post-training quantisation),
:mod:`.fake_quant` and :mod:`.qat_convert` (quantisation-aware training's simulation and its int8 file),
:mod:`.int8_export` (the one call behind ``mnv3 export --int8``), :mod:`.task_export` (segmentation and detection
models, the detector with its NMS), :mod:`.evaluate` (a file against its float model), :mod:`.output` (where a file
may be written).
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the submodule that defines it
_HOMES = {
    "calibrate_bn": "fold", "calibrate_bn_on_noise": "fold", "count_batchnorms": "fold", "fold_bn": "fold",
    "export_litert": "litert_export",
    "ExportMismatchError": "onnx_export", "ExportReport": "onnx_export", "export_onnx": "onnx_export",
    "verify_onnx": "onnx_export",
    "FakeQuantization": "fake_quant", "QATError": "fake_quant", "prepare_qat": "fake_quant",
    "convert_qat": "qat_convert",
    "TaskExportError": "task_export", "export_detection": "task_export", "export_segmentation": "task_export",
    "export_task_int8": "task_export", "export_task_onnx": "task_export", "verify_detections": "task_export",
    "CalibrationError": "quantize", "Int8Options": "quantize", "QuantizeReport": "quantize",
    "calibration_data": "quantize", "quantize_onnx": "quantize", "quantize_pt2e": "quantize",
}

__all__ = [
    "CalibrationError", "ExportMismatchError", "ExportReport", "FakeQuantization", "Int8Options", "QATError",
    "QuantizeReport", "TaskExportError", "calibrate_bn", "calibrate_bn_on_noise", "calibration_data", "convert_qat",
    "count_batchnorms", "export_detection", "export_litert", "export_onnx", "export_segmentation",
    "export_task_int8", "export_task_onnx", "fold_bn", "prepare_qat", "quantize_onnx", "quantize_pt2e",
    "verify_detections", "verify_onnx",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
