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

Graph passes for ONNX Runtime (``ort_nchwc=True``, the default; :func:`optimize_for_onnxruntime`). On x86 ONNX
Runtime runs convolutions in a channel-blocked layout (NCHWc, 16 channels per block with AVX-512) and converts
to and from plain NCHW around every node its layout pass does not cover. As exported, each squeeze-and-excite
block leaves that layout twice: its ``ReduceMean`` and its broadcasting ``Mul`` (``(N,C,H,W) * (N,C,1,1)``) are
not covered, so ORT reorders the whole expanded activation out (``ReorderOutput``), multiplies in NCHW and
reorders it back in (``ReorderInput``): two extra passes over the block's largest tensor, 8 blocks in Large, 9 in
Small. (torchvision's and timm's own exports have the same SE pattern, timm's after ORT's fusions the very graph
ours is without these passes, and they ran as fast.) Three rewrites, each keeping the outputs (to float rounding),
keep the network in the blocked layout:

* SE squeeze: ``ReduceMean`` over H and W -> ``GlobalAveragePool`` (which has an NCHWc kernel);
* SE excite: the gate's broadcast made explicit as a nearest-neighbour ``Resize`` with constant integer scales
  (``(N,C,1,1) -> (N,C,H,W)``, an exact copy; NCHWc ``Upsample``), so that the ``Mul`` has two equal shapes,
  which ORT runs in NCHWc. The scales are constants, so this needs the spatial size fixed at export: with
  ``dynamic_resolution`` the SE ``Mul`` keeps its implicit broadcast;
* classifier: ``Flatten -> Gemm`` on the ``(N,1280,1,1)`` pooled features -> a 1x1 ``Conv`` and then ``Flatten``,
  so the head stays blocked up to the logits.

ORT then runs Large with 7 layout conversions instead of 33 and Small with 4 instead of 38 (x86 with AVX-512,
ORT 1.32): measured 2-4% faster for Large and 7-8% for Small, at batch 1 on one thread. ``ort_nchwc=False``
writes the graph as the exporter made it, which is the better input for everything else that reads it: OpenVINO
runs the explicit broadcast as a real copy (2-3% slower with it), the int8 path (:mod:`.quantize`, whose integer
kernels run channels-last) gets 12-17% slower, and runtimes without a blocked layout (ONNX Runtime on ARM) only
get the extra copy.
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

from ..extras import require
from ..inputs import input_shape_for
from ..layers import SameConv2d
from ..runtime.onnxruntime import ort_session
from .fold import fold_bn

EXPORTERS = ("torchscript", "dynamo")
MIN_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"
# The file's input layout: NCHW as PyTorch, or NHWC (images as decoders and cameras hand them over). With NHWC the
# graph starts with a Transpose that OpenVINO folds into the stem convolution, which then reads the input as it
# is; from NCHW it reorders the input to NHWC first (0.1 ms in its counters at 224x224 here; README for timings).
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

    @property
    def max_abs_diff(self) -> float | None:
        return max((c["max_abs_diff"] for c in self.checks), default=None)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["max_abs_diff"] = self.max_abs_diff
        return d


# -- graph passes for ONNX Runtime's blocked (NCHWc) CPU layout -----------------------------------------------
def _constants(graph) -> dict[str, Any]:
    """Initializers and ``Constant`` node outputs of ``graph`` by name, as numpy arrays."""
    from onnx import numpy_helper

    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _unique_name(taken: set[str], stem: str) -> str:
    name, i = stem, 0
    while name in taken:
        i += 1
        name = f"{stem}_{i}"
    taken.add(name)
    return name


def _all_names(proto) -> set[str]:
    g = proto.graph
    return ({i.name for i in g.initializer} | {v.name for v in g.input} | {v.name for v in g.output}
            | {o for n in g.node for o in n.output} | {n.name for n in g.node})


def _dims(value_info) -> list[int | str | None] | None:
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]


def _value_infos(proto) -> dict[str, Any]:
    """Every tensor's ``ValueInfoProto`` after ONNX shape inference."""
    from onnx import shape_inference

    g = shape_inference.infer_shapes(proto).graph
    return {v.name: v for v in (*g.value_info, *g.input, *g.output)}


def _shapes(proto) -> dict[str, list[int | str | None] | None]:
    """Every tensor's shape after ONNX shape inference (ints where known, dim_param names where symbolic)."""
    return {name: _dims(v) for name, v in _value_infos(proto).items()}


def _drop_unused_constants(proto, candidates: set[str]) -> None:
    """Remove the initializers and ``Constant`` nodes among ``candidates`` that nothing reads any more."""
    used = {i for n in proto.graph.node for i in n.input} | {v.name for v in proto.graph.output}
    for init in [i for i in proto.graph.initializer if i.name in candidates and i.name not in used]:
        proto.graph.initializer.remove(init)
    for node in [n for n in proto.graph.node
                 if n.op_type == "Constant" and n.output[0] in candidates and n.output[0] not in used]:
        proto.graph.node.remove(node)


def se_pool_to_global_pool(proto) -> int:
    """``ReduceMean`` of a 4-D tensor over axes (2, 3) with ``keepdims=1`` -> ``GlobalAveragePool`` (the same
    numbers), which ONNX Runtime runs in its blocked layout. Axes as an attribute (opset < 18) or a constant input.
    Returns how many were replaced."""
    from onnx import helper

    consts = _constants(proto.graph)
    shapes = _shapes(proto)
    axes_inputs: set[str] = set()
    done = 0
    for i, node in enumerate(proto.graph.node):
        if node.op_type != "ReduceMean" or node.domain not in ("", "ai.onnx"):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1] in consts:
            axes = consts[node.input[1]].reshape(-1).tolist()
        rank = len(shapes.get(node.input[0]) or [])
        if attrs.get("keepdims", 1) != 1 or axes is None or rank != 4:
            continue
        if len(axes) != 2 or sorted(int(a) % 4 for a in axes) != [2, 3]:
            continue
        if len(node.input) > 1:
            axes_inputs.add(node.input[1])
        proto.graph.node[i].CopyFrom(helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output),
                                                      name=node.name))
        done += 1
    _drop_unused_constants(proto, axes_inputs)
    return done


def explicit_channel_broadcast(proto) -> int:
    """Each ``Mul(x, s)`` of an ``(N,C,H,W)`` tensor by an ``(N,C,1,1)`` one (squeeze-and-excite), with ``C``, ``H``
    and ``W`` known, gets ``s`` expanded to ``(N,C,H,W)`` by a nearest ``Resize`` with constant integer scales (a
    copy, so the product is unchanged): ONNX Runtime runs a ``Mul`` of equal shapes, and the ``Resize``, in its
    blocked layout, but not a broadcasting one. Returns how many ``Mul`` nodes were changed."""
    import numpy as np
    from onnx import helper, numpy_helper

    infos = _value_infos(proto)
    shapes = {name: _dims(v) for name, v in infos.items()}
    consts = _constants(proto.graph)
    names = _all_names(proto)
    scales: dict[tuple[int, int], str] = {}
    nodes = []
    done = 0
    for node in proto.graph.node:
        if node.op_type == "Mul" and node.domain in ("", "ai.onnx") and len(node.input) == 2:
            a, b = (shapes.get(n) for n in node.input)
            for big, small, k in ((a, b, 1), (b, a, 0)):
                if (big is None or small is None or len(big) != 4 or small != [*big[:2], 1, 1] or big[0] is None
                        or not all(isinstance(d, int) and d > 0 for d in big[1:]) or big[2:] == [1, 1]
                        or node.input[k] in consts):  # a constant scale is not a gate: leave it to ORT's fusions
                    continue
                hw = (big[2], big[3])
                if hw not in scales:
                    scales[hw] = _unique_name(names, f"se_broadcast_scales_{hw[0]}x{hw[1]}")
                    proto.graph.initializer.append(numpy_helper.from_array(
                        np.array([1, 1, *hw], dtype=np.float32), scales[hw]))
                out = _unique_name(names, f"{node.input[k]}_broadcast")
                attrs = dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
                nodes.append(helper.make_node("Resize", [node.input[k], "", scales[hw]], [out],
                                              name=_unique_name(names, f"{node.name or out}/broadcast"), **attrs))
                # The Resize's output shape, stated: shape inference leaves a symbolic batch unknown there, and
                # ONNX Runtime, unable to prove the Mul's two inputs equal in shape, would then keep that Mul and,
                # after it, the residual Adds out of the blocked layout (slower than without the rewrite).
                elem_type = infos[node.input[k]].type.tensor_type.elem_type
                proto.graph.value_info.append(helper.make_tensor_value_info(out, elem_type, big))
                node.input[k] = out
                done += 1
                break
        nodes.append(node)
    if done:
        del proto.graph.node[:]
        proto.graph.node.extend(nodes)
    return done


def classifier_to_conv(proto) -> int:
    """``Flatten(axis=1) -> Gemm`` (or ``Reshape`` to ``(N,K)`` -> ``Gemm``) on an ``(N,K,1,1)`` tensor with
    constant weights -> ``Conv`` 1x1 with the same weights, then ``Flatten``: the same numbers, and ONNX Runtime
    keeps the head in its blocked layout up to the logits. Returns how many classifiers were rewritten (1 for our
    models)."""
    from onnx import helper, numpy_helper

    shapes = _shapes(proto)
    inits = {i.name: i for i in proto.graph.initializer}
    producer = {o: i for i, n in enumerate(proto.graph.node) for o in n.output}
    uses: dict[str, int] = {}
    for n in proto.graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    graph_outputs = {v.name for v in proto.graph.output}
    names = _all_names(proto)
    replace: dict[int, list] = {}  # node index -> its replacement nodes
    drop: set[int] = set()  # Flatten/Reshape nodes only the rewritten Gemm used
    old_weights: set[str] = set()
    for index, gemm in enumerate(proto.graph.node):
        if gemm.op_type != "Gemm" or gemm.domain not in ("", "ai.onnx") or gemm.input[1] not in inits:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in gemm.attribute}
        if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0):
            continue
        flat_index = producer.get(gemm.input[0])
        flat = proto.graph.node[flat_index] if flat_index is not None else None
        if flat is None or flat.domain not in ("", "ai.onnx"):
            continue
        x_shape = shapes.get(flat.input[0])
        if x_shape is None or len(x_shape) != 4 or x_shape[2:] != [1, 1] or not isinstance(x_shape[1], int):
            continue
        if flat.op_type == "Flatten":
            if {a.name: helper.get_attribute_value(a) for a in flat.attribute}.get("axis", 1) != 1:
                continue
        elif flat.op_type != "Reshape" or shapes.get(flat.output[0]) != x_shape[:2] or x_shape[0] is None:
            continue
        bias = gemm.input[2] if len(gemm.input) > 2 and gemm.input[2] else None
        if bias is not None and (bias not in inits or len(inits[bias].dims) != 1):
            continue
        w = numpy_helper.to_array(inits[gemm.input[1]])
        if not attrs.get("transB", 0):
            w = w.T
        if w.ndim != 2 or w.shape[1] != x_shape[1]:
            continue
        w_name = _unique_name(names, f"{gemm.input[1]}_1x1")
        proto.graph.initializer.append(numpy_helper.from_array(w.reshape(*w.shape, 1, 1).copy(), w_name))
        conv_out = _unique_name(names, f"{gemm.output[0]}_1x1")
        stem = gemm.name or conv_out
        replace[index] = [
            helper.make_node("Conv", [flat.input[0], w_name] + ([bias] if bias else []), [conv_out],
                             name=_unique_name(names, f"{stem}_1x1/Conv"), kernel_shape=[1, 1]),
            helper.make_node("Flatten", [conv_out], list(gemm.output),
                             name=_unique_name(names, f"{stem}_1x1/Flatten"), axis=1)]
        old_weights.add(gemm.input[1])
        if uses.get(flat.output[0], 0) == 1 and flat.output[0] not in graph_outputs:
            drop.add(flat_index)
    if not replace:
        return 0
    nodes = []
    for index, n in enumerate(proto.graph.node):
        if index in replace:
            nodes += replace[index]
        elif index not in drop:
            nodes.append(n)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    used = {i for n in proto.graph.node for i in n.input}
    stale = [i for i in proto.graph.initializer if i.name in old_weights and i.name not in used]
    for i in stale:
        proto.graph.initializer.remove(i)
    return len(replace)


def optimize_for_onnxruntime(proto) -> dict[str, int]:
    """Rewrite an exported graph in place so that ONNX Runtime's blocked (NCHWc) CPU layout covers the squeeze-
    and-excite blocks and the classifier (module doc); every rewrite keeps the outputs. Returns what changed."""
    return {"se_global_pool": se_pool_to_global_pool(proto),
            "se_explicit_broadcast": explicit_channel_broadcast(proto),
            "classifier_conv": classifier_to_conv(proto)}


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
                   dynamic_resolution: bool, spatial: tuple[int, int] = (2, 3)) -> None:
    require("onnxscript", extra=None, purpose="the dynamo-based ONNX exporter")
    from torch.export import Dim

    dims: dict[int, Any] = {}
    if dynamic_batch:
        dims[0] = Dim("batch", min=1)
    if dynamic_resolution:
        h, w = spatial
        dims[h], dims[w] = Dim("height", min=x.shape[h] // 2), Dim("width", min=x.shape[w] // 2)
    program = torch.onnx.export(model, (x,), None, dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                                output_names=[OUTPUT_NAME], dynamic_shapes=(dims,) if dims else None,
                                verbose=False, external_data=False)
    program.save(path)


def export_onnx(model: nn.Module, path: str | os.PathLike, *, resolution: int | None = None, batch: int = 1,
                input_shape: Sequence[int] | None = None, dynamic_batch: bool = False,
                dynamic_resolution: bool = False, opset: int = MIN_OPSET, fold: bool = True,
                exporter: str = "torchscript", verify: bool = True, atol: float = 1e-4,
                check_resolutions: Sequence[int] | None = None, seed: int = 0, ort_nchwc: bool = True,
                input_layout: str = "nchw") -> ExportReport:
    """Export ``model`` (eval mode, BN folded unless ``fold=False``) to ONNX at ``path`` and check it.

    The input is ``(batch, C, resolution, resolution)`` (default: the spec's resolution) or ``input_shape``;
    ``dynamic_batch`` / ``dynamic_resolution`` make those axes symbolic. With ``verify`` (default) the file is
    checked with ``onnx.checker`` and run in ONNX Runtime on seeded random inputs: at the export shape, at
    batch 2 when the batch is dynamic, and at ``check_resolutions`` (default: two other sizes) when the
    resolution is dynamic. :class:`ExportMismatchError` is raised when any output differs from eager PyTorch by
    more than ``atol``; the report lists every check. With ``ort_nchwc`` (default) the graph is rewritten for
    ONNX Runtime's blocked CPU layout (:func:`optimize_for_onnxruntime`, module doc; ``report.graph_changes``).
    ``input_layout="nhwc"`` makes the file take ``N x H x W x C`` images (shapes and ``input_shape`` stay NCHW, the
    model's view); the layout is recorded in the file's metadata (:func:`input_layout_of`).
    """
    onnx = require("onnx", purpose="ONNX export")
    if input_layout not in INPUT_LAYOUTS:
        raise ValueError(f"unknown input layout {input_layout!r} (choose from {', '.join(INPUT_LAYOUTS)})")
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r} (choose from {', '.join(EXPORTERS)})")
    if input_layout == "nhwc" and exporter == "dynamo" and dynamic_batch:
        # torch.export (torch 2.13) guards the permuted batch-1 example to batch <= 2 and refuses the dimension
        raise ValueError("the dynamo exporter cannot give an NHWC input a dynamic batch; use "
                         "exporter='torchscript' (the default) or a fixed batch")
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise ValueError(f"opset must be an integer >= {MIN_OPSET}, got {opset!r}")
    shape = input_shape_for(model, input_shape, resolution, batch)
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
        if input_layout == "nhwc":
            graph_model = ChannelsLastInput(graph_model).eval()
        x = to_layout(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), input_layout)
        path = str(Path(path))
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        spatial = (2, 3) if input_layout == "nchw" else (1, 2)
        axes: dict[str, dict[int, str]] = {}
        if dynamic_batch:
            axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
        if dynamic_resolution:
            axes.setdefault(INPUT_NAME, {}).update({spatial[0]: "height", spatial[1]: "width"})
        with torch.no_grad():
            if exporter == "torchscript":
                _export_torchscript(graph_model, x, path, opset, axes)
            else:
                _export_dynamo(graph_model, x, path, opset, dynamic_batch, dynamic_resolution, spatial)
        proto = onnx.load(path)
        changes = optimize_for_onnxruntime(proto) if ort_nchwc else {}
        record_input_layout(proto, input_layout)
        onnx.save(proto, path)
        written_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
        ops = dict(sorted(Counter(n.op_type for n in proto.graph.node).items()))
        report = ExportReport(path, exporter, written_opset, shape, dynamic_batch, dynamic_resolution, fold, ops,
                              atol, graph_changes=changes, input_layout=input_layout)
        if verify:
            onnx.checker.check_model(proto)
            shapes = [shape]
            if dynamic_batch:
                shapes.append((2 if shape[0] != 2 else 3, *shape[1:]))
            if dynamic_resolution:
                extra = check_resolutions or (shape[2] + 32, shape[2] + 1)
                shapes += [(shape[0], shape[1], r, r) for r in extra if (r, r) != shape[2:]]
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


def verify_onnx(path: str | os.PathLike, model: nn.Module, shapes: Sequence[Sequence[int]], *, seed: int = 0,
                threads: int | None = None, input_layout: str = "nchw") -> list[dict[str, Any]]:
    """Run the ONNX file and the eager ``model`` (eval mode) on the same seeded random inputs; per shape, the
    largest absolute difference of the outputs and the largest absolute output (the scale it is relative to).
    ``shapes`` are NCHW; the file is fed them in ``input_layout``."""
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
            got = torch.from_numpy(session.run(None, {name: to_layout(x, input_layout).numpy()})[0])
            if tuple(got.shape) != tuple(expected.shape):
                raise ExportMismatchError(f"ONNX output shape {tuple(got.shape)} differs from PyTorch's "
                                          f"{tuple(expected.shape)} at input shape {list(shape)}", None)
            results.append({"input_shape": list(shape), "max_abs_diff": float((got - expected).abs().max()),
                             "max_abs_output": float(expected.abs().max())})
    finally:
        model.train(was_training)
    return results
