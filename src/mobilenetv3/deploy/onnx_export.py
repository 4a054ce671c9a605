"""ONNX export, checked: the exported graph is run in ONNX Runtime and compared with eager PyTorch.

Exporter: PyTorch 2.13 has two. ``torch.onnx.export(..., dynamo=True)`` (the default since 2.9) needs
``onnxscript``, takes ~15 s for MobileNetV3-Large and, asked for opset 17, writes opset 18 (its down-conversion
fails on ReduceMean). The TorchScript-based exporter (``dynamo=False``) needs nothing beyond torch and onnx, takes
well under a second, honours the opset, folds BatchNorm itself and, like the dynamo one, writes ``HardSwish`` and
``HardSigmoid`` nodes for the paper's activations (opset >= 14). It is deprecated but present in 2.13, so it is
the default here (``exporter="torchscript"``); ``exporter="dynamo"`` uses the other (``pip install onnxscript``).

Whichever exporter runs, the model is BN-folded first (:func:`~mobilenetv3.deploy.fold.fold_bn`) so the graph
holds only what runs at inference, and the check compares against the *unfolded* eval model, so it covers the
folding too.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..latency import _model_spec, check_input_shape, ort_session, require
from ..layers import SameConv2d
from .fold import fold_bn

EXPORTERS = ("torchscript", "dynamo")
MIN_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"


class ExportMismatchError(RuntimeError):
    """ONNX Runtime's outputs differ from eager PyTorch's by more than the tolerance."""

    def __init__(self, message: str, report: ExportReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class ExportReport:
    path: str
    exporter: str
    opset: int | None  # None for formats without opsets (LiteRT)
    input_shape: tuple[int, ...]
    dynamic_batch: bool
    dynamic_resolution: bool
    folded: bool
    ops: dict[str, int]
    atol: float
    checks: list[dict[str, Any]] = field(default_factory=list)  # per input shape: max abs diff and output scale

    @property
    def max_abs_diff(self) -> float | None:
        return max((c["max_abs_diff"] for c in self.checks), default=None)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["max_abs_diff"] = self.max_abs_diff
        return d


def _input_shape(model: nn.Module, input_shape: Sequence[int] | None, resolution: int | None,
                 batch: int) -> tuple[int, ...]:
    spec = _model_spec(model)
    if input_shape is None:
        if spec is None and resolution is None:
            raise ValueError("give input_shape or resolution for a module without a spec")
        res = resolution or spec.resolution
        input_shape = (batch, spec.in_channels if spec is not None else 3, res, res)
    input_shape = tuple(int(v) for v in input_shape)
    if spec is not None:
        check_input_shape(spec, input_shape)
    return input_shape


def _export_torchscript(model: nn.Module, x: torch.Tensor, path: str, opset: int, dynamic_axes: dict) -> None:
    with warnings.catch_warnings():
        # The exporter's deprecation notice, and tracer/constant-folding notes: the verification below is what
        # tells whether the graph is right.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding")
        torch.onnx.export(model, (x,), path, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_axes=dynamic_axes or None, do_constant_folding=True)


def _export_dynamo(model: nn.Module, x: torch.Tensor, path: str, opset: int, dynamic_batch: bool,
                   dynamic_resolution: bool) -> None:
    require("onnxscript", extra=None, purpose="the dynamo-based ONNX exporter")
    from torch.export import Dim

    dims: dict[int, Any] = {}
    if dynamic_batch:
        dims[0] = Dim("batch", min=1)
    if dynamic_resolution:
        dims[2], dims[3] = Dim("height", min=x.shape[2] // 2), Dim("width", min=x.shape[3] // 2)
    program = torch.onnx.export(model, (x,), None, dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                                output_names=[OUTPUT_NAME], dynamic_shapes=(dims,) if dims else None,
                                verbose=False, external_data=False)
    program.save(path)


def export_onnx(model: nn.Module, path: str | os.PathLike, *, resolution: int | None = None, batch: int = 1,
                input_shape: Sequence[int] | None = None, dynamic_batch: bool = False,
                dynamic_resolution: bool = False, opset: int = MIN_OPSET, fold: bool = True,
                exporter: str = "torchscript", verify: bool = True, atol: float = 1e-4,
                check_resolutions: Sequence[int] | None = None, seed: int = 0) -> ExportReport:
    """Export ``model`` (eval mode, BN folded unless ``fold=False``) to ONNX at ``path`` and check it.

    The input is ``(batch, C, resolution, resolution)`` (default: the spec's resolution) or ``input_shape``;
    ``dynamic_batch`` / ``dynamic_resolution`` make those axes symbolic. With ``verify`` (default) the file is
    checked with ``onnx.checker`` and run in ONNX Runtime on seeded random inputs: at the export shape, at
    batch 2 when the batch is dynamic, and at ``check_resolutions`` (default: two other sizes) when the
    resolution is dynamic. :class:`ExportMismatchError` is raised when any output differs from eager PyTorch by
    more than ``atol``; the report lists every check.
    """
    onnx = require("onnx", purpose="ONNX export")
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r} (choose from {', '.join(EXPORTERS)})")
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise ValueError(f"opset must be an integer >= {MIN_OPSET}, got {opset!r}")
    shape = _input_shape(model, input_shape, resolution, batch)
    if check_resolutions and not dynamic_resolution and any(r != shape[2] or r != shape[3]
                                                            for r in check_resolutions):
        raise ValueError("check_resolutions other than the export size need dynamic_resolution=True")
    if dynamic_resolution and exporter == "torchscript" and any(isinstance(m, SameConv2d) for m in model.modules()):
        raise ValueError("'same'-padded convolutions compute their padding from the input size, which the "
                         "TorchScript exporter fixes at export time: export at a fixed resolution, or use "
                         "exporter='dynamo'")
    was_training = model.training
    model.eval()
    try:
        graph_model = fold_bn(model) if fold else model
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
        path = str(Path(path))
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        axes: dict[str, dict[int, str]] = {}
        if dynamic_batch:
            axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
        if dynamic_resolution:
            axes.setdefault(INPUT_NAME, {}).update({2: "height", 3: "width"})
        with torch.no_grad():
            if exporter == "torchscript":
                _export_torchscript(graph_model, x, path, opset, axes)
            else:
                _export_dynamo(graph_model, x, path, opset, dynamic_batch, dynamic_resolution)
        proto = onnx.load(path)
        written_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
        ops = dict(sorted(Counter(n.op_type for n in proto.graph.node).items()))
        report = ExportReport(path, exporter, written_opset, shape, dynamic_batch, dynamic_resolution, fold, ops,
                              atol)
        if verify:
            onnx.checker.check_model(proto)
            shapes = [shape]
            if dynamic_batch:
                shapes.append((2 if shape[0] != 2 else 3, *shape[1:]))
            if dynamic_resolution:
                extra = check_resolutions or (shape[2] + 32, shape[2] + 1)
                shapes += [(shape[0], shape[1], r, r) for r in extra if (r, r) != shape[2:]]
            report.checks.extend(verify_onnx(path, model, shapes, seed=seed))
            worst = report.max_abs_diff
            if worst is not None and worst > atol:
                bad = [c for c in report.checks if c["max_abs_diff"] > atol]
                raise ExportMismatchError(
                    f"ONNX Runtime and PyTorch disagree by up to {worst:.3g} (tolerance {atol:g}) at input "
                    f"shape(s) {', '.join(str(c['input_shape']) for c in bad)}", report)
        return report
    finally:
        model.train(was_training)


def verify_onnx(path: str | os.PathLike, model: nn.Module, shapes: Sequence[Sequence[int]], *, seed: int = 0,
                threads: int | None = None) -> list[dict[str, Any]]:
    """Run the ONNX file and the eager ``model`` (eval mode) on the same seeded random inputs; per shape, the
    largest absolute difference of the outputs and the largest absolute output (the scale it is relative to)."""
    require("onnxruntime", purpose="checking an ONNX export")
    session = ort_session(path, threads or torch.get_num_threads())
    name = session.get_inputs()[0].name
    was_training = model.training
    model.eval()
    results = []
    try:
        for i, shape in enumerate(shapes):
            x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed + 1 + i))
            with torch.no_grad():
                expected = model(x).float()
            got = torch.from_numpy(session.run(None, {name: x.numpy()})[0])
            if tuple(got.shape) != tuple(expected.shape):
                raise ExportMismatchError(f"ONNX output shape {tuple(got.shape)} differs from PyTorch's "
                                          f"{tuple(expected.shape)} at input shape {list(shape)}", None)
            results.append({"input_shape": list(shape), "max_abs_diff": float((got - expected).abs().max()),
                             "max_abs_output": float(expected.abs().max())})
    finally:
        model.train(was_training)
    return results
