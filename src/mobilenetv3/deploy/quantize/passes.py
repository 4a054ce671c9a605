"""The int8 graph rewrites on ONNX files, around ONNX Runtime's ``quantize_static``: shared initializers made real
and the SE's ``ReduceMean`` made a ``GlobalAveragePool`` before it, the integer hard-swish (:mod:`.options` says
why it is exact) or the removal of ``Q -> DQ`` pairs between a convolution and its activation (the OpenVINO
target) after it, the node names that ``keep_float`` leaves in float, and what computes in float in the result
(:func:`float_ops`)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..onnx_passes import drop_unused_constants


def _initializers(graph) -> dict[str, Any]:
    return {init.name: init for init in graph.initializer}


def materialize_shared_initializers(proto) -> int:
    """Replace ``Identity`` nodes that copy an initializer (the TorchScript exporter's de-duplication of equal
    weights) with a real initializer, so the quantiser sees every bias as a constant. Returns how many."""
    from onnx import numpy_helper

    inits = _initializers(proto.graph)
    keep, done = [], 0
    for node in proto.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            array = numpy_helper.to_array(inits[node.input[0]])
            proto.graph.initializer.append(numpy_helper.from_array(array, node.output[0]))
            done += 1
        else:
            keep.append(node)
    del proto.graph.node[:]
    proto.graph.node.extend(keep)
    return done


def reduce_mean_to_global_pool(proto) -> int:
    """``ReduceMean`` over axes (2, 3) with ``keepdims=1`` of a 4-D tensor -> ``GlobalAveragePool`` (same
    result), which ONNX Runtime quantises. Returns how many were replaced."""
    from onnx import helper, numpy_helper

    inits = _initializers(proto.graph)
    done = 0
    for i, node in enumerate(proto.graph.node):
        if node.op_type != "ReduceMean":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1] in inits:
            axes = numpy_helper.to_array(inits[node.input[1]]).tolist()
        if attrs.get("keepdims", 1) != 1 or axes is None or sorted(int(a) % 4 for a in axes) != [2, 3]:
            continue
        if any(int(a) < 0 for a in axes) and not all(int(a) in (-1, -2) for a in axes):
            continue
        proto.graph.node[i].CopyFrom(helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output),
                                                      name=node.name))
        done += 1
    return done


def _scalar(inits: dict[str, Any], name: str) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(inits[name])


def hardswish_qparams(scale: float, zero_point: int, qmin: int = 0, qmax: int = 255) -> tuple[int, float, int]:
    """The quantisation of a hard-swish input that :func:`int8_hardswish` uses instead of ``(scale, zero_point)``:
    ``(k, 3 / k, zero point)``, the range widened to include -3 and the scale snapped (at most one step coarser)
    to ``3 / k``. Quantisation-aware training
    (:mod:`~mobilenetv3.deploy.fake_quant`) fake-quantises with the same numbers."""
    rmin, rmax = min(scale * (qmin - zero_point), -3.0), max(scale * (qmax - zero_point), 0.0)
    k = max(1, math.floor(3.0 / ((rmax - rmin) / (qmax - qmin))))
    s_new = 3.0 / k
    return k, s_new, int(min(qmax, max(qmin, qmin + round(-rmin / s_new))))


def int8_hardswish(proto) -> int:
    """Rewrite ``DQ -> HardSwish -> Q`` as ``Mul(DQ(q), DQ'(Clip(q)))`` with the input's scale snapped to
    ``3 / k`` (:mod:`.options`), which ONNX Runtime runs as a uint8 ``Clip`` and a ``QLinearMul``.

    The conv output's quantisation parameters change (scale ``s -> 3 / floor(3 / s)``, range widened to include
    -3 if it did not): the Q node that produces the tensor and every DQ that reads it get the new ones.
    Returns the number of hard-swishes rewritten.
    """
    from onnx import helper, numpy_helper

    graph = proto.graph
    inits = _initializers(graph)
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    new_nodes: list[Any] = []
    done = 0
    for node in graph.node:
        if node.op_type != "HardSwish":
            new_nodes.append(node)
            continue
        dq = producer.get(node.input[0])
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        outs = consumers.get(node.output[0], [])
        if (q is None or q.op_type != "QuantizeLinear" or len(q.input) < 3 or len(dq.input) < 3
                or len(outs) != 1 or outs[0].op_type != "QuantizeLinear"
                or not all(n in inits for n in (*q.input[1:3], *dq.input[1:3]))):
            new_nodes.append(node)
            continue
        s = float(_scalar(inits, q.input[1]))
        zp = _scalar(inits, q.input[2])
        if zp.size != 1 or _scalar(inits, q.input[1]).size != 1:
            new_nodes.append(node)
            continue
        info = np.iinfo(zp.dtype)
        qmin, qmax = int(info.min), int(info.max)
        k, s_new, z_new = hardswish_qparams(s, int(zp), qmin, qmax)
        base = q.output[0]
        scale_name, zp_name = f"{base}_hs_scale", f"{base}_hs_zero_point"
        gate_scale, gate_zp = f"{base}_hs_gate_scale", f"{base}_hs_gate_zero_point"
        lo_name, hi_name = f"{base}_hs_lo", f"{base}_hs_hi"
        graph.initializer.extend([
            numpy_helper.from_array(np.array(s_new, np.float32), scale_name),
            numpy_helper.from_array(np.array(z_new, zp.dtype), zp_name),
            numpy_helper.from_array(np.array(s_new / 6.0, np.float32), gate_scale),
            numpy_helper.from_array(np.array(z_new - k, zp.dtype), gate_zp),
            numpy_helper.from_array(np.array(z_new - k, zp.dtype), lo_name),
            numpy_helper.from_array(np.array(min(qmax, z_new + k), zp.dtype), hi_name),
        ])
        q.input[1], q.input[2] = scale_name, zp_name
        for reader in consumers.get(base, []):
            if reader.op_type == "DequantizeLinear":
                reader.input[1], reader.input[2] = scale_name, zp_name
        stem = node.name or base
        clipped, gate = f"{base}_hs_clipped", f"{base}_hs_gate"
        new_nodes += [
            helper.make_node("Clip", [base, lo_name, hi_name], [clipped], name=f"{stem}/gate_clip"),
            helper.make_node("DequantizeLinear", [clipped, gate_scale, gate_zp], [gate], name=f"{stem}/gate_dq"),
            helper.make_node("Mul", [dq.output[0], gate], list(node.output), name=f"{stem}/mul"),
        ]
        done += 1
    del graph.node[:]
    graph.node.extend(new_nodes)
    return done


FUSED_ACTIVATIONS = ("HardSwish", "HardSigmoid", "Relu")


def unquantize_conv_activations(proto, activations: Sequence[str] = FUSED_ACTIVATIONS) -> int:
    """Remove the ``QuantizeLinear -> DequantizeLinear`` pair between a ``Conv`` and the activation(s) that alone
    read its output, so the graph reads ``DQ -> Conv -> activation -> Q``: the pattern OpenVINO runs as one int8
    convolution with the activation and the output quantisation as post-ops (with the pair in between it runs
    a separate int8 -> float -> int8 pass over the tensor for each activation). The result is at least as
    accurate (one rounding fewer). ONNX Runtime only fuses ``DQ -> Conv -> Q`` and would run these convolutions
    in float, so its target keeps the pair. Returns how many pairs were removed."""
    graph = proto.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    outputs = {o.name for o in graph.output}
    dropped: set[int] = set()
    removed = 0
    for q in graph.node:
        if q.op_type != "QuantizeLinear" or q.input[0] in outputs or q.output[0] in outputs:
            continue
        conv = producer.get(q.input[0])
        dqs = consumers.get(q.output[0], [])
        if conv is None or conv.op_type != "Conv" or len(consumers.get(q.input[0], [])) != 1 or not dqs:
            continue
        if any(d.op_type != "DequantizeLinear" or d.output[0] in outputs for d in dqs):
            continue
        readers = [r for d in dqs for r in consumers.get(d.output[0], [])]
        if not readers or any(r.op_type not in activations for r in readers):
            continue
        for d in dqs:
            for r in consumers.get(d.output[0], []):
                for k, name in enumerate(r.input):
                    if name == d.output[0]:
                        r.input[k] = q.input[0]
            dropped.add(id(d))
        dropped.add(id(q))
        removed += 1
    orphans = {name for n in graph.node if id(n) in dropped for name in n.input[1:]}  # their scales, zero points
    kept = [n for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(kept)
    drop_unused_constants(proto, orphans)
    return removed


def _part_needles(part: str) -> tuple[str, ...]:
    # A layer's scope is "/features/features.<i>/" when a classifier calls ``features`` whole and "/features.<i>/"
    # when a segmentation or detection model runs the backbone's layers one by one (forward_taps): the needle
    # "/features.<i>/" matches both (and not "/features.<i>0/"). A needle starting with "^" matches the start of a
    # name only: the stem's "^/Pad" is a Pad at the graph's top level, never the explicit Pads that TF-style SAME
    # padding puts inside every strided depthwise block ("/features/features.2/dw/conv/Pad").
    m = re.fullmatch(r"block(\d+)", part)
    if m:
        return (f"/features.{int(m.group(1))}/",)
    fixed = {"stem": ("/features.0/", "^/Pad"), "se": ("/se/",),
             "head": ("/conv_head/", "/classifier/", "/head_act/", "/pool/", "/head/")}
    return fixed.get(part, (part,))


def float_nodes(proto, keep_float: Sequence[str]) -> list[str]:
    """Names of the float graph's nodes matched by ``keep_float`` (:data:`FLOAT_PARTS` or name substrings)."""
    needles = [n for k in keep_float for n in _part_needles(k)]

    def matches(name: str, needle: str) -> bool:
        return name.startswith(needle[1:]) if needle.startswith("^") else needle in name

    return [node.name for node in proto.graph.node if any(matches(node.name, s) for s in needles)]


QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def float_ops(proto) -> dict[str, int]:
    """Op-type counts of the nodes of a QDQ graph that compute in float: a node that reads activations (tensors
    that depend on the graph input other than through ``Shape``) counts unless each activation it reads is
    dequantised (``DequantizeLinear``) and each output is quantised (read by ``QuantizeLinear`` alone), the
    groups ONNX Runtime fuses into integer kernels, or it reads only integer tensors (``QuantizeLinear``'s, as
    the integer hard-swish's ``Clip``). Size computations (``Shape -> Slice -> Concat`` into a ``Resize``) do not
    count."""
    graph = proto.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    outputs = {o.name for o in graph.output}
    data = {i.name for i in graph.input} - {init.name for init in graph.initializer}
    integer: set[str] = set()
    counts: dict[str, int] = {}
    for node in graph.node:  # topologically sorted, as ONNX requires
        reads = [name for name in node.input if name in data]
        if not reads or node.op_type == "Shape":
            continue
        data.update(node.output)
        if node.op_type == "DequantizeLinear":
            continue
        if node.op_type == "QuantizeLinear" or all(name in integer for name in reads):
            integer.update(node.output)
            continue
        dequantised = all(name in producer and producer[name].op_type == "DequantizeLinear" for name in reads)
        quantised = all(o not in outputs and consumers.get(o) and all(c.op_type == "QuantizeLinear"
                                                                      for c in consumers[o])
                        for o in node.output)
        if not (dequantised and quantised):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))
