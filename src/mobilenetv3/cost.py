"""Exact parameter and multiply-add counts, analytically from a spec and by hooks on any module.

Counting rule (see ``docs/paper-notes.md``): multiply-adds are the multiply-accumulates of convolutions and
fully connected layers only: a convolution's output elements x input channels per group x kernel area, a linear
layer's inputs x outputs. Biases, batch norm, activations, pooling, SE's elementwise product and residual adds
are left out. Parameters are every trainable tensor (BN running statistics are buffers, not parameters).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .spec import ArchSpec

MADDS_RULE = "conv and linear multiply-accumulates only; biases, BN, activations, pooling, SE scaling and adds excluded"


@dataclass(frozen=True)
class LayerCost:
    name: str
    kind: str
    in_shape: tuple[int, int, int]  # C, H, W
    out_shape: tuple[int, int, int]
    params: int
    madds: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Cost:
    layers: tuple[LayerCost, ...]
    resolution: tuple[int, int]

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def madds(self) -> int:
        return sum(layer.madds for layer in self.layers)

    def to_dict(self, name: str | None = None) -> dict:
        """Totals, the counting rule and every layer (what ``mnv3 profile --json`` prints)."""
        return {"name": name, "resolution": list(self.resolution), "params": self.params, "madds": self.madds,
                "madds_rule": MADDS_RULE, "layers": [layer.to_dict() for layer in self.layers]}


def _conv(name: str, kind: str, c_in: int, c_out: int, kernel: int, stride: int, h: int, w: int,
          groups: int = 1, bias: bool = False, bn: bool = True) -> LayerCost:
    ho, wo = math.ceil(h / stride), math.ceil(w / stride)
    weights = c_out * (c_in // groups) * kernel * kernel
    params = weights + (c_out if bias else 0) + (2 * c_out if bn else 0)
    return LayerCost(name, kind, (c_in, h, w), (c_out, ho, wo), params, weights * ho * wo)


def _se(name: str, channels: int, squeeze: int, h: int, w: int) -> LayerCost:
    params = 2 * channels * squeeze + squeeze + channels
    return LayerCost(name, "se", (channels, h, w), (channels, h, w), params, 2 * channels * squeeze)


def spec_cost(spec: ArchSpec, resolution: int | tuple[int, int] | None = None) -> Cost:
    """Per-layer parameters and multiply-adds of ``spec`` at ``resolution`` (default: the spec's own)."""
    res = resolution or spec.resolution
    h, w = (res, res) if isinstance(res, int) else res
    if h < 1 or w < 1:
        raise ValueError(f"resolution must be positive, got {res}")
    rows = [_conv("stem", "conv", spec.in_channels, spec.stem_channels, spec.stem_kernel, spec.stem_stride, h, w)]
    h, w = rows[-1].out_shape[1:]
    for i, (b, c_in) in enumerate(zip(spec.blocks, spec.block_inputs(), strict=True), start=1):
        if b.exp != c_in:
            rows.append(_conv(f"block{i}.expand", "conv1x1", c_in, b.exp, 1, 1, h, w))
        rows.append(_conv(f"block{i}.dw", f"dw{b.kernel}x{b.kernel}", b.exp, b.exp, b.kernel, b.stride, h, w,
                          groups=b.exp))
        h, w = rows[-1].out_shape[1:]
        if b.se:
            rows.append(_se(f"block{i}.se", b.exp, spec.se_channels(i - 1), h, w))
        rows.append(_conv(f"block{i}.project", "conv1x1", b.exp, b.out, 1, 1, h, w))
    c = spec.blocks[-1].out
    if spec.last_channels:
        rows.append(_conv("last_conv", "conv1x1", c, spec.last_channels, 1, 1, h, w))
        c = spec.last_channels
        if spec.last_se:
            rows.append(_se("last_se", c, spec.last_se_channels(), h, w))
    if spec.head_channels:
        rows.append(_conv("conv_head", "conv1x1", c, spec.head_channels, 1, 1, 1, 1, bias=True, bn=False))
        c = spec.head_channels
    rows.append(LayerCost("classifier", "linear", (c, 1, 1), (spec.num_classes, 1, 1),
                          c * spec.num_classes + spec.num_classes, c * spec.num_classes))
    return Cost(tuple(rows), (res, res) if isinstance(res, int) else tuple(res))


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def count_madds(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass of ``module`` on a zero input of ``input_shape`` (batch included;
    the count is per sample), counted by hooks on every ``Conv2d`` and ``Linear``."""
    total = 0

    def conv_hook(m: nn.Conv2d, inputs, output) -> None:
        nonlocal total
        per_out = (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        total += output[0].numel() * per_out

    def linear_hook(m: nn.Linear, inputs, output) -> None:
        nonlocal total
        total += output[0].numel() * m.in_features

    handles = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros(*input_shape))
    finally:
        module.train(was_training)
        for h in handles:
            h.remove()
    return total


def zoo_costs() -> list[dict]:
    """Every zoo model at its listed widths with parameters and multiply-adds at its default resolution, beside
    the paper's Table 3 figures (millions) where the paper gives them (``mnv3 models``)."""
    from .zoo import REGISTRY, get_spec, list_models

    rows = []
    for family, width in list_models():
        spec = get_spec(family, width)
        cost = spec_cost(spec)
        paper = (REGISTRY[family].paper or {}).get(width)
        rows.append({
            "name": spec.name, "family": family, "width_mult": width, "resolution": spec.resolution,
            "params": cost.params, "madds": cost.madds,
            "paper_params_m": paper[0] if paper else None, "paper_madds_m": paper[1] if paper else None,
        })
    return rows
