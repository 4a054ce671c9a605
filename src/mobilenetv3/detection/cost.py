"""Exact parameters and multiply-adds of an SSDLite network, analytically from its DetSpec.

Same rule as :mod:`mobilenetv3.cost` (``MADDS_RULE``): convolution multiply-accumulates only; biases, BN,
activations and the post-processing (box decoding, scores, NMS: no convolutions, a few million simple operations
at 320x320) are left out. The backbone rows are :func:`~mobilenetv3.cost.spec_cost`'s up to the last 1x1 conv
(the classifier row dropped: a detector has none), the extra layers' and both heads' rows are added here. The
tests check both totals against the hook counters (``count_params``, ``count_madds``) on the built model.
"""

from __future__ import annotations

from ..cost import MADDS_RULE, Cost, LayerCost, spec_cost
from .spec import DetSpec

__all__ = ["MADDS_RULE", "det_cost", "head_costs"]


def conv_row(name: str, kind: str, c_in: int, c_out: int, kernel: int, size: tuple[int, int], stride: int = 1,
             groups: int = 1, bias: bool = False, bn: bool = True) -> LayerCost:
    h, w = size
    ho, wo = -(-h // stride), -(-w // stride)
    weights = c_out * (c_in // groups) * kernel * kernel
    params = weights + (c_out if bias else 0) + (2 * c_out if bn else 0)
    return LayerCost(name, kind, (c_in, h, w), (c_out, ho, wo), params, weights * ho * wo)


def head_costs(spec: DetSpec, height: int, width: int) -> list[LayerCost]:
    """The extra layers and the class and box heads for an input of ``height`` x ``width``."""
    channels = spec.level_channels()
    sizes = spec.feature_sizes(height, width)
    rows = []
    for i, (c_in, d) in enumerate(zip(channels[1:-1], spec.extra_widths, strict=True), start=1):
        mid, size = d // 2, sizes[i]
        rows += [conv_row(f"extra{i}.reduce", "conv1x1", c_in, mid, 1, size),
                 conv_row(f"extra{i}.dw", "dw3x3", mid, mid, 3, size, stride=2, groups=mid),
                 conv_row(f"extra{i}.expand", "conv1x1", mid, d, 1, sizes[i + 1])]
    k = spec.head_kernel
    per_level = spec.anchors.anchors_per_level(spec.num_levels)
    for head, per_anchor in (("cls_head", spec.class_slots), ("box_head", 4)):
        for level, (c, a, size) in enumerate(zip(channels, per_level, sizes, strict=True)):
            rows += [conv_row(f"{head}.{level}.dw", f"dw{k}x{k}", c, c, k, size, groups=c),
                     conv_row(f"{head}.{level}.predict", "conv1x1", c, a * per_anchor, 1, size, bias=True, bn=False)]
    return rows


def det_cost(spec: DetSpec, resolution: int | tuple[int, int] | None = None) -> Cost:
    """Per-layer parameters and multiply-adds of ``spec``'s network at ``resolution`` ((height, width) or a side;
    default the spec's own, 320)."""
    res = resolution or spec.resolution
    h, w = (res, res) if isinstance(res, int) else tuple(res)
    if h < 1 or w < 1:
        raise ValueError(f"resolution must be positive, got {res}")
    backbone = [row for row in spec_cost(spec.backbone_spec(), (h, w)).layers if row.name != "classifier"]
    return Cost(tuple(backbone + head_costs(spec, h, w)), (h, w))
