"""Quantisation-aware training's side in deploy: fake quantisation that simulates, tensor for tensor, the int8 model
:func:`~mobilenetv3.deploy.quantize.quantize_onnx` writes for ONNX Runtime (:func:`prepare_qat`). Converting the
trained model to that int8 file is :mod:`.qat_convert`.

Where the int8 graph quantises (read off the QDQ graph of the default
:class:`~mobilenetv3.deploy.quantize.Int8Options`; the parts in ``keep_float``, the stem and block 1, stay float
here too):

* weights of every convolution and of the classifier: int8, symmetric, per output channel, scale
  ``abs-max / 127``. Simulated by ``torch.fake_quantize_per_channel_affine`` with the scale taken from the
  current weights at every step (straight-through gradient). Per-channel symmetric quantisation commutes with
  BatchNorm folding (folding multiplies each output channel by a constant, which that channel's scale absorbs),
  so the un-folded weights are fake-quantised and BatchNorm keeps training on batch statistics: no folding and
  no BN freezing is needed for the weights to match the folded int8 ones.
* activations: uint8, asymmetric, per tensor, at each tensor ONNX Runtime quantises: the input of the first
  quantised layer; every convolution's output after its ReLU (ONNX Runtime fuses the ReLU into the
  convolution); a hard-swish convolution's output *before* the hard-swish, with the scale snapped to ``3 / k``
  as :func:`~mobilenetv3.deploy.quantize.int8_hardswish` does, and again after it; a projection's output and the
  residual sum; in each squeeze-and-excite the pooled vector, the reduce convolution (+ReLU), the expand
  convolution, the hard-sigmoid gate and the product; in the head the pooled features, the head convolution, the
  hard-swish after it (ONNX quantises the ``Flatten`` that follows) and the logits. Ranges are moving-average
  min/max observers (PyTorch's ``MovingAverageMinMaxObserver`` rule, constant 0.01) updated in training-mode
  forward passes; the scale and zero point are ONNX Runtime's (``compute_scale_zp``: the range widened to
  include 0).

The state that quantisation-aware training adds (the observers) lives outside the model's ``state_dict``: a
QAT checkpoint's ``model`` and ``ema`` weights load into a plain float model, and its observers are stored
beside them (:meth:`FakeQuantization.state_dict`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..layers import InvertedResidual, SameConv2d, SqueezeExcite
from .quantize.options import Int8Options
from .quantize.passes import hardswish_qparams

AVERAGING_CONSTANT = 0.01  # moving-average min/max, as torch.ao.quantization.MovingAverageMinMaxObserver
ACT_QMIN, ACT_QMAX = 0, 255  # uint8 activations
WEIGHT_QMAX = 127  # int8 symmetric weights in [-127, 127], as ONNX Runtime's symmetric int8
# Activation modules whose int8 form the simulation mirrors (the int8 graph of others is not modelled).
_RELU = (nn.ReLU,)
_SUPPORTED_ACTS = "relu, hswish, identity (SE: relu inside, hard-sigmoid gate)"


class QATError(ValueError):
    """A model or an int8 set-up that quantisation-aware training cannot simulate; the message says what."""


# -- quantisation parameters --------------------------------------------------------------------------------
def ort_qparams(rmin: float, rmax: float, qmin: int = ACT_QMIN, qmax: int = ACT_QMAX) -> tuple[float, int]:
    """Scale (a float32 value) and zero point of an asymmetric range, as ONNX Runtime's ``compute_scale_zp``."""
    rmin32, rmax32 = np.float32(min(float(rmin), 0.0)), np.float32(max(float(rmax), 0.0))
    scale = (float(rmax32) - float(rmin32)) / (qmax - qmin)
    if np.float32(scale) < np.finfo(np.float32).tiny:
        return 1.0, 0
    return float(np.float32(scale)), int(np.round(qmin - float(rmin32) / scale))


def fake_quantize_weight(weight: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric int8 fake quantisation, scale ``abs-max / 127`` from ``weight`` itself
    (gradients pass straight through: every weight is inside its channel's range)."""
    absmax = weight.detach().reshape(weight.shape[0], -1).abs().amax(dim=1).double()
    scale = torch.where(absmax > 0, absmax / WEIGHT_QMAX, torch.ones_like(absmax)).float()
    zero = torch.zeros(weight.shape[0], dtype=torch.int32, device=weight.device)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -WEIGHT_QMAX, WEIGHT_QMAX)


class ActivationFakeQuant(nn.Module):
    """uint8 per-tensor fake quantisation of one activation tensor with a moving-average min/max observer.

    ``hardswish_input``: the tensor feeds an integer hard-swish, whose scale is snapped to ``3 / k``
    (:func:`~mobilenetv3.deploy.quantize.hardswish_qparams`). Observes only when the module it is attached to is
    training and ``observing`` is on; does nothing until ``enabled`` and until it has observed once.
    """

    def __init__(self, key: str, hardswish_input: bool = False,
                 averaging_constant: float = AVERAGING_CONSTANT) -> None:
        super().__init__()
        self.key = key
        self.hardswish_input = hardswish_input
        self.averaging_constant = averaging_constant
        self.enabled = True
        self.observing = True
        self.register_buffer("min_val", torch.zeros(()))
        self.register_buffer("max_val", torch.zeros(()))
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        lo, hi = torch.aminmax(x.detach().float())
        if int(self.updates) == 0:
            self.min_val.copy_(lo)
            self.max_val.copy_(hi)
        else:
            self.min_val.add_(self.averaging_constant * (lo - self.min_val))
            self.max_val.add_(self.averaging_constant * (hi - self.max_val))
        self.updates += 1

    def qparams(self) -> tuple[float, int]:
        """The scale (float32 value) and zero point the int8 graph uses for this tensor."""
        scale, zero_point = ort_qparams(float(self.min_val), float(self.max_val))
        if self.hardswish_input:
            _, scale, zero_point = hardswish_qparams(scale, zero_point, ACT_QMIN, ACT_QMAX)
            scale = float(np.float32(scale))
        return scale, zero_point

    def override(self) -> dict[str, Any]:
        """ONNX Runtime's ``TensorQuantOverrides`` entry: the *unsnapped* parameters (int8_hardswish snaps them
        in the graph as :meth:`qparams` does here)."""
        scale, zero_point = ort_qparams(float(self.min_val), float(self.max_val))
        return {"scale": np.array(scale, np.float32), "zero_point": np.array(zero_point, np.uint8)}

    def forward(self, x: torch.Tensor, observe: bool = False) -> torch.Tensor:
        if not self.enabled:
            return x
        if observe and self.observing:
            self.observe(x)
        if int(self.updates) == 0:
            return x
        scale, zero_point = self.qparams()
        y = torch.fake_quantize_per_tensor_affine(x.float(), scale, zero_point, ACT_QMIN, ACT_QMAX)
        return y.to(x.dtype)

    # hooks (bound methods, so a deep copy of a hooked model would keep them pointing at copies)
    def output_hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return self(output, module.training)

    def input_hook(self, module: nn.Module, args: tuple) -> tuple:
        return (self(args[0], module.training), *args[1:])

    def extra_repr(self) -> str:
        return f"{self.key!r}, hardswish_input={self.hardswish_input}"


# -- weight fake quantisation: the same modules with a fake-quantised weight --------------------------------
class _FakeQuantConvWeight:
    weight_fake_quant = False

    def _conv_forward(self, input, weight, bias):  # noqa: A002 (torch's signature)
        if self.weight_fake_quant:
            weight = fake_quantize_weight(weight)
        return super()._conv_forward(input, weight, bias)


class QATConv2d(_FakeQuantConvWeight, nn.Conv2d):
    """:class:`torch.nn.Conv2d` whose weight is fake-quantised while ``weight_fake_quant`` is on."""


class QATSameConv2d(_FakeQuantConvWeight, SameConv2d):
    """:class:`~mobilenetv3.layers.SameConv2d` whose weight is fake-quantised while ``weight_fake_quant`` is on."""


class QATLinear(nn.Linear):
    """:class:`torch.nn.Linear` whose weight is fake-quantised while ``weight_fake_quant`` is on."""

    weight_fake_quant = False

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002
        weight = fake_quantize_weight(self.weight) if self.weight_fake_quant else self.weight
        return F.linear(input, weight, self.bias)


_QAT_CLASSES: dict[type, type] = {nn.Conv2d: QATConv2d, SameConv2d: QATSameConv2d, nn.Linear: QATLinear}
_FLOAT_CLASSES = {v: k for k, v in _QAT_CLASSES.items()}


# -- the simulation attached to a model -----------------------------------------------------------------------
def _quantized_start(model: nn.Module, keep_float: Sequence[str]) -> int:
    """The index in ``model.features`` of the first quantised layer: ``keep_float`` must name the stem and the
    first blocks (``stem``, ``block1``, ...), a leading run of layers."""
    indices = set()
    for part in keep_float:
        m = re.fullmatch(r"block(\d+)", part)
        if part == "stem":
            indices.add(0)
        elif m:
            indices.add(int(m.group(1)))
        else:
            raise QATError(f"quantisation-aware training keeps only the stem and leading blocks in float "
                           f"(keep_float like ('stem', 'block1')), got {part!r}")
    start = len(indices)
    if indices != set(range(start)):
        raise QATError(f"keep_float must name the stem and the first blocks without gaps, got {tuple(keep_float)}")
    if start >= len(model.features):
        raise QATError("keep_float leaves nothing to quantise")
    return start


def _check_options(options: Int8Options) -> None:
    bad = {"activation_type": options.activation_type != "uint8", "per_channel": not options.per_channel,
           "reduce_range": options.reduce_range, "pad_stem": options.pad_stem}
    wrong = [name for name, is_bad in bad.items() if is_bad]
    if wrong:
        raise QATError(f"quantisation-aware training simulates uint8 activations with per-channel int8 weights "
                       f"(no reduce_range, no pad_stem); these options differ: {', '.join(wrong)}")


class FakeQuantization:
    """Fake quantisation attached to a spec-built model by :func:`prepare_qat` (forward hooks for activations,
    a weight-fake-quantising class for each quantised conv and linear). ``state_dict`` holds the observers."""

    def __init__(self, model: nn.Module, options: Int8Options) -> None:
        _check_options(options)
        self.options = options
        self.observers = nn.ModuleDict()
        self._handles: list[Any] = []
        self._weights: list[nn.Module] = []
        self.leaves = {name for name, m in model.named_modules() if next(m.children(), None) is None}
        self._plan(model)
        self.enabled = True

    # -- building
    def _fq(self, key: str, hardswish_input: bool = False) -> ActivationFakeQuant:
        name = key.replace(".", "-") or "root"
        if name in self.observers:
            raise RuntimeError(f"two fake-quantisers for {key!r}")
        fq = ActivationFakeQuant(key, hardswish_input)
        self.observers[name] = fq
        return fq

    def _after(self, module: nn.Module, fq: ActivationFakeQuant) -> None:
        self._handles.append(module.register_forward_hook(fq.output_hook))

    def _before(self, module: nn.Module, fq: ActivationFakeQuant) -> None:
        self._handles.append(module.register_forward_pre_hook(fq.input_hook))

    def _weight(self, module: nn.Module, path: str) -> None:
        cls = _QAT_CLASSES.get(type(module))
        if cls is None:
            raise QATError(f"{path}: cannot fake-quantise the weights of a {type(module).__name__}")
        module.__class__ = cls
        module.weight_fake_quant = True
        self._weights.append(module)

    def _conv_norm_act(self, cna: nn.Module, path: str) -> None:
        self._weight(cna.conv, f"{path}.conv")
        act = cna.act
        if isinstance(act, nn.Hardswish):
            self._before(act, self._fq(f"{path}.conv", hardswish_input=True))
            self._after(act, self._fq(f"{path}.act"))
        elif isinstance(act, _RELU):
            self._after(act, self._fq(f"{path}.act"))  # the ReLU is fused into the conv: one Q, after it
        elif isinstance(act, nn.Identity):
            self._after(act, self._fq(f"{path}.conv"))
        else:
            raise QATError(f"{path}.act: quantisation-aware training does not simulate the int8 form of "
                           f"{type(act).__name__} (supported: {_SUPPORTED_ACTS})")

    def _se(self, se: SqueezeExcite, path: str) -> None:
        if not isinstance(se.act, _RELU) or not isinstance(se.gate, nn.Hardsigmoid):
            raise QATError(f"{path}: quantisation-aware training simulates SE blocks with a ReLU inside and a "
                           f"hard-sigmoid gate, got {type(se.act).__name__} and {type(se.gate).__name__}")
        self._weight(se.reduce, f"{path}.reduce")
        self._weight(se.expand, f"{path}.expand")
        self._before(se.reduce, self._fq(f"{path}:GlobalAveragePool"))
        self._after(se.act, self._fq(f"{path}.act"))
        self._after(se.expand, self._fq(f"{path}.expand"))
        self._after(se.gate, self._fq(f"{path}.gate"))
        self._after(se, self._fq(f"{path}:Mul"))

    @staticmethod
    def _output_key(layer: nn.Module, path: str) -> str:
        """The key of the tensor a float layer hands to the first quantised one."""
        if isinstance(layer, InvertedResidual):
            return f"{path}:Add" if layer.use_residual else f"{path}.project.conv"
        if isinstance(layer, SqueezeExcite):
            return f"{path}:Mul"
        if hasattr(layer, "act") and hasattr(layer, "conv"):
            return f"{path}.conv" if isinstance(layer.act, nn.Identity) else f"{path}.act"
        raise QATError(f"{path}: cannot tell which tensor leaves this float layer")

    def _plan(self, model: nn.Module) -> None:
        features = getattr(model, "features", None)
        if features is None or not hasattr(model, "classifier"):
            raise QATError("quantisation-aware training needs a spec-built MobileNetV3 (features, pool, head)")
        start = _quantized_start(model, self.options.keep_float)
        first_key = "input" if start == 0 else self._output_key(features[start - 1], f"features.{start - 1}")
        self._before(features[start], self._fq(first_key))
        for i in range(start, len(features)):
            layer, path = features[i], f"features.{i}"
            if isinstance(layer, InvertedResidual):
                if layer.expand is not None:
                    self._conv_norm_act(layer.expand, f"{path}.expand")
                self._conv_norm_act(layer.dw, f"{path}.dw")
                if layer.se is not None:
                    self._se(layer.se, f"{path}.se")
                self._conv_norm_act(layer.project, f"{path}.project")
                if layer.use_residual:
                    self._after(layer, self._fq(f"{path}:Add"))
            elif isinstance(layer, SqueezeExcite):
                self._se(layer, path)
            elif hasattr(layer, "conv") and hasattr(layer, "act"):
                self._conv_norm_act(layer, path)
            else:
                raise QATError(f"{path}: quantisation-aware training does not know {type(layer).__name__}")
        self._after(model.pool, self._fq("pool"))
        if isinstance(model.conv_head, nn.Conv2d):
            if not isinstance(model.head_act, nn.Hardswish | nn.ReLU | nn.Identity):
                raise QATError(f"head_act: {type(model.head_act).__name__} is not simulated ({_SUPPORTED_ACTS})")
            self._weight(model.conv_head, "conv_head")
            self._after(model.conv_head, self._fq("conv_head"))
            self._after(model.head_act, self._fq(":Flatten"))  # ONNX quantises the Flatten after the head act
        self._weight(model.classifier, "classifier")
        self._after(model.classifier, self._fq("classifier"))

    # -- switches and state
    def set_enabled(self, on: bool) -> None:
        """Fake quantisation on (weights and activations) or off (the float model, observers untouched)."""
        self.enabled = bool(on)
        for fq in self.observers.values():
            fq.enabled = self.enabled
        for module in self._weights:
            module.weight_fake_quant = self.enabled

    def set_observing(self, on: bool) -> None:
        """Let the observers follow the activations in training mode (on) or freeze the ranges (off)."""
        for fq in self.observers.values():
            fq.observing = bool(on)

    def to(self, device: torch.device | str) -> FakeQuantization:
        self.observers.to(device)
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.observers.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        expected = set(self.observers.state_dict())
        if set(state) != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ValueError(f"quantisation-aware training state does not fit the model: "
                             f"missing {missing[:3]}, unexpected {extra[:3]}")
        self.observers.load_state_dict(state)

    def flat_ranges(self) -> torch.Tensor:
        """Every observer's (min, max) in one tensor (for averaging over processes)."""
        return torch.stack([t for fq in self.observers.values() for t in (fq.min_val, fq.max_val)])

    def load_flat_ranges(self, flat: torch.Tensor) -> None:
        for i, fq in enumerate(self.observers.values()):
            fq.min_val.copy_(flat[2 * i])
            fq.max_val.copy_(flat[2 * i + 1])

    @torch.no_grad()
    def ema_update(self, source: FakeQuantization, decay: float) -> None:
        """Move these ranges towards ``source``'s as the weight EMA moves its weights (a copy the first time)."""
        for name, fq in self.observers.items():
            src = source.observers[name]
            if int(src.updates) == 0:
                continue
            if int(fq.updates) == 0:
                fq.min_val.copy_(src.min_val)
                fq.max_val.copy_(src.max_val)
            else:
                fq.min_val.lerp_(src.min_val, 1.0 - decay)
                fq.max_val.lerp_(src.max_val, 1.0 - decay)
            fq.updates.copy_(src.updates)

    def ranges(self) -> dict[str, dict[str, Any]]:
        """Each quantised tensor's observed range and the scale / zero point used for it."""
        out = {}
        for fq in self.observers.values():
            scale, zero_point = fq.qparams()
            out[fq.key] = {"min": float(fq.min_val), "max": float(fq.max_val), "scale": scale,
                           "zero_point": zero_point, "updates": int(fq.updates)}
        return out

    def remove(self, model: nn.Module) -> None:
        """Detach from ``model`` (hooks removed, classes restored): the float model again."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for module in self._weights:
            module.__class__ = _FLOAT_CLASSES[type(module)]
            del module.weight_fake_quant
        self._weights.clear()


def prepare_qat(model: nn.Module, options: Int8Options | None = None) -> FakeQuantization:
    """Attach int8 fake quantisation to ``model`` (in place; its parameters and ``state_dict`` are unchanged) as
    :func:`~mobilenetv3.deploy.quantize.quantize_onnx` with ``options`` (default: the deployed set-up) will quantise it.

    The returned handle switches it on and off, freezes the ranges, holds the observers' state and detaches
    it again (:meth:`FakeQuantization.remove`). :class:`QATError` when the model has a part whose int8 form
    is not simulated (activations other than ReLU / hard-swish / identity, other ``keep_float`` choices).
    """
    device = next(model.parameters()).device
    return FakeQuantization(model, options or Int8Options()).to(device)
