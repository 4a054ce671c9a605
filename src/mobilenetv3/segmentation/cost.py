"""Exact parameters and multiply-adds of a segmentation network, analytically from its SegSpec.

Same rule as :mod:`mobilenetv3.cost` (``MADDS_RULE``): convolution multiply-accumulates only; biases, BN,
activations, pooling, the gate's product, the sums and the bilinear upsamplings are left out. The backbone rows
are :func:`~mobilenetv3.cost.spec_cost`'s (its classifier row dropped: the network has no classifier), the head
rows are added here. The tests check both totals against the hook counters (``count_params``,
``count_madds``) on the built model, which count every ``Conv2d`` that runs.
"""

from __future__ import annotations

from ..cost import MADDS_RULE, Cost, LayerCost, spec_cost
from .spec import SegSpec

__all__ = ["MADDS_RULE", "seg_cost"]


def _conv1x1(name: str, c_in: int, c_out: int, size: tuple[int, int], bias: bool = False,
             bn: bool = False) -> LayerCost:
    h, w = size
    params = c_in * c_out + (c_out if bias else 0) + (2 * c_out if bn else 0)
    return LayerCost(name, "conv1x1", (c_in, h, w), (c_out, h, w), params, c_in * c_out * h * w)


def head_costs(spec: SegSpec, height: int, width: int) -> list[LayerCost]:
    """The head's layers for an input of ``height`` x ``width``."""
    c = spec.backbone_spec().features_channels
    f, k = spec.filters, spec.num_classes
    feat = spec.feature_size(height, width)
    pooled = spec.pooled_size(height, width)
    if spec.head == "raspp":
        return [_conv1x1("head.branch", c, f, feat, bn=True),
                _conv1x1("head.pool_conv", c, f, pooled, bn=True),
                _conv1x1("head.project", 2 * f, f, feat, bn=True),
                _conv1x1("head.classify", f, k, feat, bias=True)]
    rows = [_conv1x1("head.conv", c, f, feat, bn=True),
            _conv1x1("head.gate_conv", c, f, pooled, bias=True)]
    tap = spec.low_tap_info()
    if tap is None:
        return rows + [_conv1x1("head.classify_high", f, k, feat, bias=True)]
    low = (-(-height // tap.stride), -(-width // tap.stride))
    return rows + [_conv1x1("head.classify_high", f, k, low, bias=True),
                   _conv1x1("head.classify_low", tap.channels, k, low, bias=True)]


def seg_cost(spec: SegSpec, resolution: int | tuple[int, int] = (1024, 2048)) -> Cost:
    """Per-layer parameters and multiply-adds of ``spec``'s network at ``resolution`` ((height, width) or a
    side). A pooling kernel larger than the feature map is a :class:`~.spec.SegSpecError`."""
    h, w = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
    if h < 1 or w < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    backbone = [row for row in spec_cost(spec.backbone_spec(), (h, w)).layers if row.name != "classifier"]
    return Cost(tuple(backbone + head_costs(spec, h, w)), (h, w))
