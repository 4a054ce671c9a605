"""Deployment: BatchNorm folding, ONNX and LiteRT export (each checked against eager PyTorch), int8 quantisation.

:func:`fold_bn` needs only PyTorch; :func:`export_onnx` and :func:`quantize_onnx` need the ``deploy`` extra
(``pip install 'mobilenetv3[deploy]'``), :func:`export_litert` the ``litert`` extra and :func:`quantize_pt2e` the
``pt2e`` extra (torchao), each imported only when called. :func:`prepare_qat` (quantisation-aware training)
needs only PyTorch; :func:`convert_qat` writes its int8 ONNX file (``deploy``).
"""

from .fold import calibrate_bn, calibrate_bn_on_noise, count_batchnorms, fold_bn
from .litert_export import export_litert
from .onnx_export import ExportMismatchError, ExportReport, export_onnx, verify_onnx
from .qat import FakeQuantization, QATError, convert_qat, prepare_qat
from .quantize import CalibrationError, Int8Options, QuantizeReport, calibration_data, quantize_onnx, quantize_pt2e

__all__ = [
    "CalibrationError", "ExportMismatchError", "ExportReport", "FakeQuantization", "Int8Options", "QATError",
    "QuantizeReport", "calibrate_bn", "calibrate_bn_on_noise", "calibration_data", "convert_qat", "count_batchnorms",
    "export_litert", "export_onnx", "fold_bn", "prepare_qat", "quantize_onnx", "quantize_pt2e", "verify_onnx",
]
