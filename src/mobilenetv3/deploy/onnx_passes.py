"""Graph rewrites for ONNX Runtime's blocked (NCHWc) CPU layout, applied by :func:`optimize_for_onnxruntime`.

On x86 ONNX Runtime runs convolutions in a channel-blocked layout (NCHWc, 16 channels per block with AVX-512) and
converts to and from plain NCHW around every node its layout pass does not cover. As exported, each
squeeze-and-excite block leaves that layout twice: its ``ReduceMean`` and its broadcasting ``Mul``
(``(N,C,H,W) * (N,C,1,1)``) are not covered, so ORT reorders the whole expanded activation out (``ReorderOutput``),
multiplies in NCHW and reorders it back in (``ReorderInput``): two extra passes over the block's largest tensor.
Three rewrites, each keeping the outputs (to float rounding), keep the network in the blocked layout:

* SE squeeze: ``ReduceMean`` over H and W -> ``GlobalAveragePool`` (which has an NCHWc kernel);
* SE excite: the gate's broadcast made explicit as a nearest-neighbour ``Resize`` with constant integer scales
  (``(N,C,1,1) -> (N,C,H,W)``, an exact copy; NCHWc ``Upsample``), so that the ``Mul`` has two equal shapes,
  which ORT runs in NCHWc. The scales are constants, so this needs the spatial size fixed at export: with
  ``dynamic_resolution`` the SE ``Mul`` keeps its implicit broadcast;
* classifier: ``Flatten -> Gemm`` on the ``(N,1280,1,1)`` pooled features -> a 1x1 ``Conv`` and then ``Flatten``,
  so the head stays blocked up to the logits.

Only ONNX Runtime's blocked layout gains: OpenVINO runs the explicit broadcast as a real copy, the int8 path
(whose integer kernels run channels-last) is slower with these rewrites, and runtimes without a blocked layout
(ONNX Runtime on ARM) only get the extra copy, so ``export_onnx(ort_nchwc=False)`` writes the graph as the
exporter made it (measured: docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Any


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


def drop_unused_constants(proto, candidates: set[str]) -> None:
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
    drop_unused_constants(proto, axes_inputs)
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
