"""Skip markers shared by the test modules (pytest puts this folder on sys.path: ``from markers import ...``)."""

import importlib.util

import pytest

needs_onnx = pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime")),
                                reason="needs the deploy extra (onnx, onnxruntime)")
needs_openvino = pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("onnx", "openvino")),
                                    reason="needs the openvino extra (onnx, openvino)")
