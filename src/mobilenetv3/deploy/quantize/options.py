"""What int8 quantisation does to the graph: :class:`Int8Options`, the per-runtime set-ups (:data:`INT8_TARGETS`)
and the names the options take.

The defaults shape the QDQ file for ONNX Runtime, which fuses every ``DQ -> op -> Q`` group into an integer kernel
(``QLinearConv``, ``QLinearAdd``, ``QLinearMul``, ``QLinearGlobalAveragePool``, ``QGemm``) and runs them
channels-last: uint8 activations (asymmetric), int8 weights (symmetric, per output channel), ``reduce_range``
off (CPUs with VNNI do not saturate u8 x s8 dot products; turn it on for AVX2-only CPUs). A plain
``quantize_static`` call makes MobileNetV3 slower than float; each change below is exact in float and removes a
cause that ONNX Runtime's per-node profile shows (measured: docs/benchmarks.md):

``pad_depthwise`` (default 16)
    MLAS runs an int8 depthwise convolution with its fast symmetric-weight kernel only when the channel count is
    a multiple of 16, otherwise a generic kernel slower than float. Those blocks' expansions are padded with zero
    filters to the next multiple of 16: the padded channels stay zero through activation, depthwise conv, SE and
    product, and the projection gives them zero weight (:mod:`.surgery`).
``int8_hardswish`` (default on)
    ONNX Runtime has no integer hard-swish: each one runs as ``DQ -> HardSigmoid -> Mul -> Q``, four float passes
    over the activation. It is rewritten in the integer domain: ``hswish(x) = x * clip(x / 6 + 1/2, 0, 1)``, and
    when the scale ``s`` of ``x`` is ``3 / k`` for an integer ``k`` the gate is the *same* uint8 tensor clipped to
    ``[z - k, z + k]`` read with scale ``s / 6`` and zero point ``z - k``. So the convolution's output scale is
    snapped to ``3 / k`` and hard-swish becomes a uint8 ``Clip`` and a ``QLinearMul`` (:mod:`.passes`).
``se_pool`` (default ``global_average_pool``)
    The SE's ``ReduceMean`` over height and width becomes ``GlobalAveragePool``, which ONNX Runtime runs as
    ``QLinearGlobalAveragePool`` on the uint8 tensor instead of dequantising the whole activation for it.
``keep_float`` (default the stem and block 1)
    The stem's 1- or 3-channel convolution runs im2col in int8, and block 1's 16-channel depthwise conv at full
    resolution is slower in int8 too: both stay float, with hard-swish fused, and the model is quantised after.

What remains slower than float is structural: x86 has no int8 dot product for depthwise convolutions (VNNI
needs a reduction over 4 channels), and ONNX Runtime fuses no activation into an integer convolution.

The OpenVINO target (``INT8_TARGETS["openvino"]``) quantises the same way but shapes the graph for OpenVINO's CPU
plugin, which fuses a convolution, its activation and the quantisation of its output into one int8 kernel only
when no ``Q -> DQ`` pair sits between the convolution and the activation: ``fuse_conv_act`` removes those pairs
(one rounding fewer, so at least as accurate) and hard-swish stays an op (the integer rewrite would hide it from
the fusion). ONNX Runtime runs the OpenVINO file correctly but leaves those convolutions in float.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

TOOLCHAINS = ("onnxruntime", "pt2e")
DEFAULT_TOOLCHAIN = "onnxruntime"
ACTIVATION_TYPES = ("uint8", "int8")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
SE_POOLS = ("global_average_pool", "reduce_mean")
DEFAULT_CALIBRATION_SAMPLES = 256

@dataclass(frozen=True)
class Int8Options:
    """How a model is quantised for ONNX Runtime; the defaults are the measured-fastest set-up (module doc)."""

    activation_type: str = "uint8"        # uint8 (U8S8) or int8 (S8S8) activations; weights are always int8
    per_channel: bool = True              # per-output-channel weight scales
    reduce_range: bool = False            # 7-bit weights: only for CPUs without VNNI (u8 x s8 saturation)
    calibrate_method: str = "minmax"      # minmax, percentile, entropy
    pad_depthwise: int = 16               # pad depthwise channel counts to a multiple of this (0: off)
    pad_stem: bool = False                # pad the input to 4 channels for an int8 stem (off: no gain)
    int8_hardswish: bool = True           # hard-swish as uint8 Clip + QLinearMul instead of float
    se_pool: str = "global_average_pool"  # SE squeeze as GlobalAveragePool (quantised) or ReduceMean (float)
    keep_float: tuple[str, ...] = ("stem", "block1")  # parts left in float (FLOAT_PARTS) or node-name substrings
    fuse_conv_act: bool = False           # no Q/DQ between a conv and its activation (OpenVINO fuses them)

    def __post_init__(self) -> None:
        if self.activation_type not in ACTIVATION_TYPES:
            raise ValueError(f"activation_type must be one of {ACTIVATION_TYPES}, got {self.activation_type!r}")
        if self.calibrate_method not in CALIBRATION_METHODS:
            raise ValueError(f"calibrate_method must be one of {CALIBRATION_METHODS}, got {self.calibrate_method!r}")
        if self.se_pool not in SE_POOLS:
            raise ValueError(f"se_pool must be one of {SE_POOLS}, got {self.se_pool!r}")
        if self.pad_depthwise < 0:
            raise ValueError(f"pad_depthwise must be >= 0, got {self.pad_depthwise}")
        if self.fuse_conv_act and self.int8_hardswish:
            raise ValueError("fuse_conv_act and int8_hardswish exclude each other: the integer hard-swish needs "
                             "its input quantised, fuse_conv_act leaves it float inside the convolution")
        object.__setattr__(self, "keep_float", tuple(self.keep_float))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["keep_float"] = list(self.keep_float)
        return d


# The set-up a plain ``quantize_static`` call gives (for comparisons): no graph changes, everything quantised.
PLAIN = Int8Options(pad_depthwise=0, pad_stem=False, int8_hardswish=False, se_pool="reduce_mean", keep_float=())
# The measured-fastest set-up for each runtime that runs the QDQ file (module doc): ONNX Runtime fuses
# ``DQ -> Conv -> Q`` into QLinearConv and needs the integer hard-swish; OpenVINO fuses a convolution, its
# activation and the quantisation of the result into one int8 kernel when no Q/DQ pair sits between them.
INT8_TARGETS: dict[str, Int8Options] = {
    "onnxruntime": Int8Options(),
    "openvino": Int8Options(int8_hardswish=False, fuse_conv_act=True),
}
# Names for ``keep_float``: the stem, ``block<i>`` (1-based, as in the paper's tables), every SE, the head.
FLOAT_PARTS = ("stem", "block<i>", "se", "head")



def replace_options(options: Int8Options | None = None, **changes: Any) -> Int8Options:
    """``options`` (default: the defaults) with ``changes``."""
    return replace(options or Int8Options(), **changes)
