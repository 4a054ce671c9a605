"""Deployment: BatchNorm folding, ONNX and LiteRT export (each checked against eager PyTorch).

:func:`fold_bn` needs only PyTorch; :func:`export_onnx` needs the ``deploy`` extra
(``pip install 'mobilenetv3[deploy]'``) and :func:`export_litert` the ``litert`` extra, imported only when called.
"""

from .fold import calibrate_bn, calibrate_bn_on_noise, count_batchnorms, fold_bn
from .litert_export import export_litert
from .onnx_export import ExportMismatchError, ExportReport, export_onnx, verify_onnx

__all__ = [
    "ExportMismatchError", "ExportReport", "calibrate_bn", "calibrate_bn_on_noise", "count_batchnorms",
    "export_litert", "export_onnx", "fold_bn", "verify_onnx",
]
