"""LiteRT (TFLite) export with ``litert-torch``, checked in the LiteRT interpreter against eager PyTorch.

``litert-torch`` (formerly ``ai-edge-torch``) converts a PyTorch module straight to a ``.tflite`` flatbuffer
without TensorFlow; ``ai-edge-litert`` runs it (XNNPACK on CPU), the runtime the paper measured on phones. It is
heavy (JAX, transformers, torchao...) and tied to a narrow range of torch versions, so it is its own
extra, ``pip install 'mobilenetv3[litert]'``, not part of ``deploy``.

The converted model takes the same NCHW input as PyTorch (the converter adds one transpose). hard-swish becomes
TFLite's ``HARD_SWISH``; hard-sigmoid is lowered to arithmetic.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..extras import require
from ..inputs import input_shape_for
from ..runtime.litert import LiteRTRunner
from .fold import fold_bn
from .onnx_export import ExportMismatchError, ExportReport
from .output import writable_output


def convert_litert(model: nn.Module, x: torch.Tensor) -> bytes:
    """The ``.tflite`` flatbuffer of an eval-mode ``model`` traced on ``x``."""
    litert_torch = require("litert_torch", extra="litert", purpose="LiteRT conversion")
    # the converter reports progress on stdout; keep stdout for our own (JSON) output
    with contextlib.redirect_stdout(sys.stderr), torch.no_grad():
        edge_model = litert_torch.convert(model.eval(), (x,))
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.tflite")
        with contextlib.redirect_stdout(sys.stderr):
            edge_model.export(path)
        return Path(path).read_bytes()


def litert_version() -> str:
    litert_torch = require("litert_torch", extra="litert", purpose="LiteRT conversion")
    return getattr(litert_torch, "__version__", "?")


def export_litert(model: nn.Module, path: str | os.PathLike, *, resolution: int | None = None, batch: int = 1,
                  input_shape: Sequence[int] | None = None, fold: bool = True, verify: bool = True,
                  atol: float = 1e-4, seed: int = 0) -> ExportReport:
    """Convert ``model`` (eval mode, BN folded unless ``fold=False``) to a ``.tflite`` file at ``path``.

    The input shape is fixed. With ``verify`` the file is run in the LiteRT interpreter on a seeded random input
    and compared with the unfolded eager model; :class:`ExportMismatchError` above ``atol``.
    """
    shape = input_shape_for(model, input_shape, resolution, batch)
    path = writable_output(path)  # before the conversion: a clear error for a directory that cannot be written
    was_training = model.training
    model.eval()
    try:
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
        content = convert_litert(fold_bn(model) if fold else model, x)
        path.write_bytes(content)
        runner = LiteRTRunner(content, torch.get_num_threads())
        report = ExportReport(str(path), f"litert-torch {litert_version()}", None, shape, False, False, fold,
                              runner.ops(), atol)
        if verify:
            xv = torch.randn(*shape, generator=torch.Generator().manual_seed(seed + 1))
            with torch.no_grad():
                expected = model(xv).float()
            got = torch.from_numpy(runner(xv.numpy()).copy())
            if tuple(got.shape) != tuple(expected.shape):
                raise ExportMismatchError(f"LiteRT output shape {tuple(got.shape)} differs from PyTorch's "
                                          f"{tuple(expected.shape)}", report)
            report.checks.append({"input_shape": list(shape), "max_abs_diff": float((got - expected).abs().max()),
                                  "max_abs_output": float(expected.abs().max())})
            if report.max_abs_diff > atol:
                raise ExportMismatchError(f"LiteRT and PyTorch disagree by up to {report.max_abs_diff:.3g} "
                                          f"(tolerance {atol:g})", report)
        return report
    finally:
        model.train(was_training)
