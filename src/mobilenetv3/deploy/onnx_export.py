"""ONNX export, checked: the exported graph is run in ONNX Runtime and compared with eager PyTorch.

Exporter: ``torch.onnx.export`` has two. The TorchScript-based one (``dynamo=False``, the default here,
``exporter="torchscript"``) needs nothing beyond torch and onnx, is fast, honours the opset and writes
``HardSwish`` and ``HardSigmoid`` nodes for the paper's activations (opset >= 14). The dynamo-based one
(``exporter="dynamo"``, ``pip install onnxscript``) is slower and may write a newer opset than asked for.

Whichever exporter runs, the model is BN-folded first (:func:`~mobilenetv3.deploy.fold.fold_bn`) so the graph
holds only what runs at inference, and the check compares against the *unfolded* eval model, so it covers the
folding too. With ``ort_nchwc=True`` (the default) the graph is then rewritten so that ONNX Runtime's blocked
CPU layout covers the squeeze-and-excite blocks and the classifier (:mod:`.onnx_passes` says why).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..extras import require
from ..inputs import input_shape_for
from ..layers import SameConv2d
from ..runtime.onnxruntime import ort_session
from .fold import fold_bn
from .onnx_passes import optimize_for_onnxruntime
from .output import writable_output

EXPORTERS = ("torchscript", "dynamo")
MIN_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"
# The file's input layout: NCHW as PyTorch, or NHWC (images as decoders and cameras hand them over). With NHWC the
# graph starts with a Transpose that OpenVINO folds into the stem convolution, which then reads the input as it
# is; from NCHW it reorders the input to NHWC first (measured: docs/benchmarks.md).
INPUT_LAYOUTS = ("nchw", "nhwc")
LAYOUT_KEY = "mobilenetv3.input_layout"  # metadata_props entry that records the layout in every file


class ChannelsLastInput(nn.Module):
    """``model`` fed ``N x H x W x C`` images: the input is permuted to NCHW first (one Transpose in the graph)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.permute(0, 3, 1, 2))


def to_layout(x: Any, layout: str) -> Any:
    """An NCHW numpy array or tensor in ``layout``: itself for ``nchw``, a contiguous NHWC copy for ``nhwc``."""
    if layout == "nchw":
        return x
    return x.transpose(0, 2, 3, 1).copy() if hasattr(x, "flags") else x.permute(0, 2, 3, 1).contiguous()


def record_input_layout(proto: Any, layout: str) -> None:
    """Write ``layout`` into ``proto``'s metadata, keeping its other entries."""
    onnx = require("onnx", purpose="writing an ONNX file")
    onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props}, LAYOUT_KEY: layout})


def input_layout_of(proto_or_path: Any) -> str:
    """The input layout recorded in an ONNX file written by :func:`export_onnx` (``nchw`` for other files)."""
    if isinstance(proto_or_path, (str, os.PathLike)):
        onnx = require("onnx", purpose="reading an ONNX file")
        proto_or_path = onnx.load(str(proto_or_path), load_external_data=False)
    return next((p.value for p in proto_or_path.metadata_props if p.key == LAYOUT_KEY), "nchw")


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
    graph_changes: dict[str, int] = field(default_factory=dict)  # what optimize_for_onnxruntime rewrote
    input_layout: str = "nchw"  # input_shape is NCHW (the model's view); the file takes it in this layout
    outputs: tuple[str, ...] = (OUTPUT_NAME,)  # the file's output names
    check_inputs: str = "seeded random inputs"  # what the checks fed both runtimes

    @property
    def max_abs_diff(self) -> float | None:
        """The largest output difference over the checks that compare one output tensor (a detector's checks
        compare detections instead: their own keys)."""
        return max((c["max_abs_diff"] for c in self.checks if "max_abs_diff" in c), default=None)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["outputs"] = list(self.outputs)
        d["max_abs_diff"] = self.max_abs_diff
        return d



def _export_torchscript(model: nn.Module, x: torch.Tensor, path: str, opset: int, dynamic_axes: dict,
                        output_names: Sequence[str] = (OUTPUT_NAME,)) -> None:
    with warnings.catch_warnings():
        # The exporter's deprecation notice, and tracer/constant-folding notes: the verification below is what
        # tells whether the graph is right.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding")
        torch.onnx.export(model, (x,), path, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                          output_names=list(output_names), dynamic_axes=dynamic_axes or None,
                          do_constant_folding=True)


def _export_dynamo(model: nn.Module, x: torch.Tensor, path: str, opset: int, dynamic_batch: bool,
                   dynamic_resolution: bool, spatial: tuple[int, int] = (2, 3),
                   output_names: Sequence[str] = (OUTPUT_NAME,)) -> None:
    require("onnxscript", extra=None, purpose="the dynamo-based ONNX exporter")
    from torch.export import Dim

    dims: dict[int, Any] = {}
    if dynamic_batch:
        dims[0] = Dim("batch", min=1)
    if dynamic_resolution:
        h, w = spatial
        dims[h], dims[w] = Dim("height", min=x.shape[h] // 2), Dim("width", min=x.shape[w] // 2)
    program = torch.onnx.export(model, (x,), None, dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                                output_names=list(output_names), dynamic_shapes=(dims,) if dims else None,
                                verbose=False, external_data=False)
    program.save(path)


def export_onnx(model: nn.Module, path: str | os.PathLike, *, resolution: int | None = None, batch: int = 1,
                input_shape: Sequence[int] | None = None, dynamic_batch: bool = False,
                dynamic_resolution: bool = False, opset: int = MIN_OPSET, fold: bool = True,
                exporter: str = "torchscript", verify: bool = True, atol: float = 1e-4,
                check_resolutions: Sequence[int | Sequence[int]] | None = None, seed: int = 0,
                ort_nchwc: bool = True, input_layout: str = "nchw",
                output_names: Sequence[str] = (OUTPUT_NAME,)) -> ExportReport:
    """Export ``model`` (eval mode, BN folded unless ``fold=False``) to ONNX at ``path`` and check it.

    The input is ``(batch, C, resolution, resolution)`` (default: the spec's resolution) or ``input_shape``;
    ``dynamic_batch`` / ``dynamic_resolution`` make those axes symbolic. With ``verify`` (default) the file is
    checked with ``onnx.checker`` and run in ONNX Runtime on seeded random inputs: at the export shape, at
    batch 2 when the batch is dynamic, and at ``check_resolutions`` (sides, or (height, width) pairs; default:
    32 and 1 pixel more than the export size) when the resolution is dynamic. :class:`ExportMismatchError` is
    raised when any output differs from eager PyTorch by more than ``atol``; the report lists every check. With
    ``ort_nchwc`` (default) the graph is rewritten for ONNX Runtime's blocked CPU layout
    (:func:`optimize_for_onnxruntime`, module doc; ``report.graph_changes``).
    ``input_layout="nhwc"`` makes the file take ``N x H x W x C`` images (shapes and ``input_shape`` stay NCHW, the
    model's view); the layout is recorded in the file's metadata (:func:`input_layout_of`). ``output_names``
    name the model's outputs in the file (one per tensor it returns; the batch axis of each is dynamic with
    ``dynamic_batch``); the checks here compare a single output, so a model returning several is exported with
    ``verify=False`` and checked by its caller (:mod:`.task_export` does so for detectors).
    """
    onnx = require("onnx", purpose="ONNX export")
    if input_layout not in INPUT_LAYOUTS:
        raise ValueError(f"unknown input layout {input_layout!r} (choose from {', '.join(INPUT_LAYOUTS)})")
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r} (choose from {', '.join(EXPORTERS)})")
    if input_layout == "nhwc" and exporter == "dynamo" and dynamic_batch:
        # torch.export guards the permuted batch-1 example to batch <= 2 and refuses the dimension
        raise ValueError("the dynamo exporter cannot give an NHWC input a dynamic batch; use "
                         "exporter='torchscript' (the default) or a fixed batch")
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise ValueError(f"opset must be an integer >= {MIN_OPSET}, got {opset!r}")
    shape = input_shape_for(model, input_shape, resolution, batch)
    check_sizes = [size_pair(r) for r in check_resolutions or ()]
    if not dynamic_resolution and any(hw != tuple(shape[2:]) for hw in check_sizes):
        raise ValueError("check_resolutions other than the export size need dynamic_resolution=True")
    if dynamic_resolution and exporter == "torchscript" and any(isinstance(m, SameConv2d) for m in model.modules()):
        raise ValueError("'same'-padded convolutions compute their padding from the input size, which the "
                         "TorchScript exporter fixes at export time: export at a fixed resolution, or use "
                         "exporter='dynamo'")
    writable_output(path)  # before the export work: a clear error for a directory that cannot be written
    was_training = model.training
    model.eval()
    try:
        graph_model = fold_bn(model) if fold else model
        if input_layout == "nhwc":
            graph_model = ChannelsLastInput(graph_model).eval()
        x = to_layout(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), input_layout)
        path = str(writable_output(path))
        spatial = (2, 3) if input_layout == "nchw" else (1, 2)
        axes: dict[str, dict[int, str]] = {}
        if dynamic_batch:
            axes = {INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in output_names}}
        if dynamic_resolution:
            axes.setdefault(INPUT_NAME, {}).update({spatial[0]: "height", spatial[1]: "width"})
        with torch.no_grad():
            if exporter == "torchscript":
                _export_torchscript(graph_model, x, path, opset, axes, output_names)
            else:
                _export_dynamo(graph_model, x, path, opset, dynamic_batch, dynamic_resolution, spatial,
                               output_names)
        proto = onnx.load(path)
        changes = optimize_for_onnxruntime(proto) if ort_nchwc else {}
        record_input_layout(proto, input_layout)
        onnx.save(proto, path)
        written_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
        ops = dict(sorted(Counter(n.op_type for n in proto.graph.node).items()))
        report = ExportReport(path, exporter, written_opset, shape, dynamic_batch, dynamic_resolution, fold, ops,
                              atol, graph_changes=changes, input_layout=input_layout,
                              outputs=tuple(output_names))
        if verify:
            onnx.checker.check_model(proto)
            shapes = [shape]
            if dynamic_batch:
                shapes.append((2 if shape[0] != 2 else 3, *shape[1:]))
            if dynamic_resolution:
                h, w = shape[2:]
                extra = check_sizes or [(h + 32, w + 32), (h + 1, w + 1)]
                shapes += [(shape[0], shape[1], *hw) for hw in extra if hw != (h, w)]
            report.checks.extend(verify_onnx(path, model, shapes, seed=seed, input_layout=input_layout))
            worst = report.max_abs_diff
            if worst is not None and worst > atol:
                bad = [c for c in report.checks if c["max_abs_diff"] > atol]
                raise ExportMismatchError(
                    f"ONNX Runtime and PyTorch disagree by up to {worst:.3g} (tolerance {atol:g}) at input "
                    f"shape(s) {', '.join(str(c['input_shape']) for c in bad)}", report)
        return report
    finally:
        model.train(was_training)


def size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    """``(height, width)`` of a side or a pair."""
    if isinstance(size, int):
        return size, size
    h, w = (int(v) for v in size)
    return h, w


def verify_onnx(path: str | os.PathLike, model: nn.Module, shapes: Sequence[Sequence[int]], *, seed: int = 0,
                threads: int | None = None, input_layout: str = "nchw") -> list[dict[str, Any]]:
    """Run the ONNX file and the eager ``model`` (eval mode) on the same seeded random inputs; per shape, the
    largest absolute difference of the outputs and the largest absolute output (the scale it is relative to).
    ``shapes`` are NCHW; the file is fed them in ``input_layout``."""
    results = []
    with checking_session(path, model, threads) as (session, name):
        for i, shape in enumerate(shapes):
            x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed + 1 + i))
            with torch.no_grad():
                expected = model(x).float()
            got = torch.from_numpy(session.run(None, {name: to_layout(x, input_layout).numpy()})[0])
            if tuple(got.shape) != tuple(expected.shape):
                raise ExportMismatchError(f"ONNX output shape {tuple(got.shape)} differs from PyTorch's "
                                          f"{tuple(expected.shape)} at input shape {list(shape)}", None)
            results.append({"input_shape": list(shape), "max_abs_diff": float((got - expected).abs().max()),
                             "max_abs_output": float(expected.abs().max())})
    return results


@contextlib.contextmanager
def checking_session(path: str | os.PathLike, model: nn.Module, threads: int | None = None):
    """An ONNX Runtime session of the file at ``path`` and its input's name, with ``model`` in eval mode while the
    two are compared (its mode restored afterwards)."""
    require("onnxruntime", purpose="checking an ONNX export")
    session = ort_session(path, threads or torch.get_num_threads())
    was_training = model.training
    model.eval()
    try:
        yield session, session.get_inputs()[0].name
    finally:
        model.train(was_training)
