"""Quantisation-aware training's int8 file (:func:`convert_qat`): the float weights go through
:func:`~mobilenetv3.deploy.quantize.quantize_onnx` as usual, with every activation's quantisation given by ONNX
Runtime's ``TensorQuantOverrides`` from the observers of :mod:`.fake_quant` instead of calibration, so the int8
file computes what the fake-quantised model computed (the overrides cover every activation ``QuantizeLinear`` of
the graph, or the conversion fails)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..extras import require
from .evaluate import compare_outputs, onnx_logits
from .fake_quant import FakeQuantization, QATError
from .quantize.qdq import QuantizeReport, quantize_onnx


def tensor_key(node_name: str, op_type: str, leaves: set[str]) -> str:
    """The observer key of the tensor an exported node produces: ``/features/features.4/expand/act/HardSwish`` ->
    ``features.4.expand.act`` (the output of a leaf module, one of ``leaves``) and ``/features/features.3/Add`` ->
    ``features.3:Add`` (an op in a composite module's forward)."""
    parts = [p for p in node_name.split("/") if p][:-1]
    path = ""
    for p in parts:
        path = p if not path or p.startswith(path + ".") else f"{path}.{p}"
    if path in leaves:
        return path
    return f"{path}:{'GlobalAveragePool' if op_type == 'ReduceMean' else op_type}"


def onnx_overrides(qat: FakeQuantization, proto) -> dict[str, list[dict[str, Any]]]:
    """``TensorQuantOverrides`` for the float graph ``proto`` (as :func:`~mobilenetv3.deploy.quantize.quantize_onnx`
    exports it): each tensor that one of ``qat``'s observers watches, by name, with the observer's scale and zero
    point. Every observer must find its tensor, or :class:`QATError`."""
    by_key: dict[str, str] = {}
    for node in proto.graph.node:  # in graph order: a module's last node gives its output
        if node.output:
            by_key[tensor_key(node.name, node.op_type, qat.leaves)] = node.output[0]
    if proto.graph.input:
        by_key["input"] = proto.graph.input[0].name
    overrides, missing = {}, []
    for fq in qat.observers.values():
        tensor = by_key.get(fq.key)
        if tensor is None:
            missing.append(fq.key)
        elif int(fq.updates) > 0:
            overrides[tensor] = [fq.override()]
    if missing:
        raise QATError(f"no tensor of the exported graph matches the fake-quantised {', '.join(missing[:5])}")
    return overrides


def float_copy(model: nn.Module) -> nn.Module:
    """A float copy of a spec-built model (fresh modules, same weights), in eval mode, without any QAT attached."""
    from ..model import MobileNetV3

    spec = getattr(model, "spec", None)
    if spec is None:
        raise QATError("converting needs a spec-built MobileNetV3")
    copy = MobileNetV3(spec)
    copy.load_state_dict({k: v.detach().to("cpu") for k, v in model.state_dict().items()})
    return copy.eval()


def convert_qat(model: nn.Module, qat: FakeQuantization, path: str | os.PathLike,
                calibration: Sequence[np.ndarray], *, input_shape: Sequence[int] | None = None,
                dynamic_batch: bool = False, verify: bool = True) -> QuantizeReport:
    """Write the int8 ONNX file of a QAT-trained ``model``: its float weights quantised by
    :func:`~mobilenetv3.deploy.quantize.quantize_onnx` with the activation quantisation that ``qat`` learned
    (every activation ``QuantizeLinear``; ``calibration`` only feeds ONNX Runtime's calibrator, whose ranges are
    all overridden, and the checks). ``report.checks`` compares the file with the float weights;
    ``report.checks["qat"]`` with the fake-quantised model itself, which the file should reproduce (argmax
    agreement near 100%).
    """
    onnx = require("onnx", purpose="quantisation-aware training's int8 conversion")
    given: dict[str, Any] = {}

    def overrides(proto) -> dict[str, list[dict[str, Any]]]:
        given.update(onnx_overrides(qat, proto))
        return given

    deployable = float_copy(model)
    report = quantize_onnx(deployable, path, calibration, input_shape=input_shape, dynamic_batch=dynamic_batch,
                           options=qat.options, verify=verify, tensor_overrides=overrides)
    graph = onnx.load(str(path)).graph
    constants = {i.name for i in graph.initializer}
    quantized = [n.input[0] for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in constants]
    # ONNX Runtime renames a quantised graph output X to X_QuantizeLinear_Input
    uncovered = [t for t in quantized if t.removesuffix("_QuantizeLinear_Input") not in given]
    if uncovered:
        raise QATError(f"the int8 graph quantises {len(uncovered)} tensor(s) that quantisation-aware training did "
                       f"not simulate: {', '.join(uncovered[:5])}")
    report.checks["qat_tensors"] = len(quantized)
    if verify:
        sample = list(calibration)[: min(len(calibration), 32)]
        with torch.no_grad():
            was_training = model.training
            model.eval()
            device = next(model.parameters()).device
            want = torch.cat([model(torch.from_numpy(b).to(device)).float().cpu() for b in sample]).numpy()
            model.train(was_training)
        report.checks["qat"] = compare_outputs(onnx_logits(path, sample), want)
    return report


def levels_per_channel(weight: torch.Tensor) -> int:
    """The largest number of distinct values in one output channel of ``weight`` (int8: at most 255)."""
    flat = weight.detach().reshape(weight.shape[0], -1)
    return max(int(torch.unique(row).numel()) for row in flat)
