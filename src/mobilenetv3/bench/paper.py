"""The paper's printed figures that ``mnv3 bench`` sets its measurements beside (Howard et al. 2019).

All are milliseconds on a single large core of a Pixel phone, TFLite, batch 1, 224 x 224. They are the paper's,
not ours: the bench compares ratios, since the hardware differs.
"""

from __future__ import annotations

from dataclasses import dataclass

PHONES = ("Pixel 1", "Pixel 2", "Pixel 3")

# Table 3: float latency on each phone, by (family, width multiplier).
PAPER_FLOAT_MS: dict[tuple[str, float], tuple[float, float, float]] = {
    ("mobilenet_v3_large", 1.0): (51, 61, 44), ("mobilenet_v3_large", 0.75): (39, 46, 40),
    ("mobilenet_v2", 1.0): (64, 76, 56), ("mobilenet_v3_small", 1.0): (15.8, 19.4, 14.4),
    ("mobilenet_v3_small", 0.75): (12.8, 15.6, 11.7), ("mobilenet_v2", 0.35): (16.6, 19.6, 13.9),
}

# Table 4: the same models, quantised.
PAPER_INT8_MS: dict[tuple[str, float], tuple[float, float, float]] = {
    ("mobilenet_v3_large", 1.0): (44, 42.5, 31.7), ("mobilenet_v2", 1.0): (52, 48.3, 37.0),
    ("mobilenet_v3_small", 1.0): (15.5, 14.9, 10.7), ("mobilenet_v2", 0.35): (16.7, 15.6, 11.9),
}


@dataclass(frozen=True)
class Table5Variant:
    """A row of Table 5 (MobileNetV3-Large 1.0, Pixel 1): where h-swish starts, and the paper's latency with the
    optimised (fused) and the naive h-swish."""

    label: str
    channels: int | None  # h-swish from the first layer with this many output channels; None: ReLU everywhere
    stem_hswish: bool
    paper_ms: float
    paper_naive_ms: float


# Table 5: the h-swish ablation. "h-swish @N: N is the number of channels in the first layer that has h-swish
# enabled"; layers in order: stem, bottlenecks (a bottleneck's width is its #out in Table 1), last conv, head conv.
# @16 is then h-swish everywhere (the stem is the first 16-channel layer). The row "V3-Large 1.0" is Table 1's
# model: h-swish from the first 80-channel bottleneck *and* in the stem (Figure 8 calls it "h-swish at all layers
# with 80 channels or more (V3)"). For @112 the stem is ReLU, as read literally: the paper's naive-minus-fused times
# fit it (h-swish's naive cost scales with the activations it touches: 6.1 ms for V3 predicts 15.4 ms for @16, the
# paper's 15.4, and 3.4 ms for @112 with a ReLU stem, the paper's 3.4, against 4.2 ms with an h-swish stem).
# The ReLU row's two times are equal: the naive implementation changes h-swish only, not SE's hard sigmoid.
TABLE5: dict[str, Table5Variant] = {
    "relu": Table5Variant("ReLU", None, False, 50.5, 50.5),
    "hswish@16": Table5Variant("h-swish @16", 16, True, 53.5, 68.9),
    "v3": Table5Variant("V3-Large 1.0 (h-swish @80 + stem)", 80, True, 51.4, 57.5),
    "hswish@112": Table5Variant("h-swish @112", 112, False, 51.0, 54.4),
}

__all__ = ["PAPER_FLOAT_MS", "PAPER_INT8_MS", "PHONES", "TABLE5", "Table5Variant"]
