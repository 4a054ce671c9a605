"""What a segmentation head needs from a classification backbone: the reduced last block (the paper's "RF2")
and where the low-level (output stride 8) skip is tapped.

RF2, "reduce the filters in the last block by a factor of 2" (Table 7, sections 6.3/6.4), exists in two forms
that differ in one layer, the expansion of the first reduced block:

- ``"deeplab"``: what DeepLab's ``mobilenet_v3_large_seg`` / ``mobilenet_v3_small_seg`` do (TensorFlow models,
  research/deeplab/core/feature_extractor.py). Every block from the last stride-2 block on has its output *and*
  its expansion halved, and so has the last 1x1 conv: Large blocks 13-15 become exp 336/480/480, out 80, last
  conv 480; Small blocks 9-11 exp 144/288/288, out 48, last conv 288.
- ``"ssdlite"``: the detection form (section 6.3, "reduce the channel counts of all feature layers between C4
  and C5 by 2"; TF's ``V3_LARGE_DETECTION``, torchvision's ``reduced_tail``). Outputs and the last conv are
  halved; each expansion keeps its ratio to the block's (new) input, so the first reduced block keeps its full
  expansion, which is SSDLite's C4 tap: Large block 13 stays at exp 672.

Table 7's V3 rows match the DeepLab form (parameters within 0.2%; the SSDLite form is 14% over) and its V2 rows
the SSDLite form (within 1%; the DeepLab form is 4% under): see :mod:`.paper`. The "last block" is every block
from the last stride-2 block on (the stage at the network's final stride) plus the last 1x1 conv when present.

Low-level taps (LR-ASPP's skip at output stride 8):

- ``"stride8_depthwise"``: the depthwise output (after its BN and activation, before SE) of the last block at
  output stride 8, as DeepLab's ``layer_7/depthwise_output`` (Large block 6, 120 channels; Small block 3, 88;
  MobileNetV2 block 6, 192).
- ``"stride8_output"``: the output of that same block (the backbone's ``stride8`` tap; Large 40 channels).
- ``"stride8_first_output"``: the output of the *first* block at stride 8, the strided one; torchvision's
  ``lraspp_mobilenet_v3_large`` takes this (``stage_indices[-4]``: Large block 4, Small block 2).
- ``"none"``: no skip.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..spec import ArchSpec, SpecError, make_divisible

RF2_FORMS = ("none", "deeplab", "ssdlite")
LOW_TAPS = ("stride8_depthwise", "stride8_output", "stride8_first_output", "none")
LOW_TAP_STRIDE = 8
CHANNEL_DIVISOR = 8  # halved widths are rounded as the zoo rounds every width


@dataclass(frozen=True)
class LowTap:
    """Where the skip is taken: ``block`` (1-based, as in the paper's tables, = position in ``features``),
    ``kind`` ("depthwise" or "output"), its channels and output stride."""

    name: str
    block: int
    kind: str
    channels: int
    stride: int


def last_stage_start(spec: ArchSpec) -> int:
    """0-based index of the last stride-2 block: where the "last block" that RF2 halves begins."""
    strided = [i for i, b in enumerate(spec.blocks) if b.stride == 2]
    if not strided:
        raise SpecError(f"backbone {spec.name!r} has no stride-2 block, so it has no last stage to reduce (rf2)")
    return strided[-1]


def reduce_last_block(spec: ArchSpec, form: str) -> ArchSpec:
    """``spec`` with its last block's filters halved in the given RF2 ``form`` (module docstring); ``"none"``
    returns it unchanged. Apply before :func:`~mobilenetv3.spec.with_output_stride`, which removes the stride
    that marks the last stage."""
    if form not in RF2_FORMS:
        raise SpecError(f"unknown rf2 form {form!r} (choose from {', '.join(RF2_FORMS)})")
    if form == "none":
        return spec
    start = last_stage_start(spec)
    inputs = spec.block_inputs()
    blocks = list(spec.blocks)
    new_in = inputs[start]
    for i in range(start, len(blocks)):
        b = blocks[i]
        out = make_divisible(b.out / 2, CHANNEL_DIVISOR)
        if form == "deeplab":
            exp = make_divisible(b.exp / 2, CHANNEL_DIVISOR)
        else:
            exp = make_divisible(new_in * b.exp / inputs[i], CHANNEL_DIVISOR)
        blocks[i] = dataclasses.replace(b, exp=exp, out=out)
        new_in = out
    last = make_divisible(spec.last_channels / 2, CHANNEL_DIVISOR) if spec.last_channels else 0
    return spec.replace(blocks=tuple(blocks), last_channels=last, name=f"{spec.name}_rf2_{form}")


def find_low_tap(spec: ArchSpec, tap: str) -> LowTap | None:
    """The block and channels of a low-level tap in ``spec`` as it strides before any atrous change (block
    numbering and channels are the same after :func:`~mobilenetv3.spec.with_output_stride`)."""
    if tap not in LOW_TAPS:
        raise SpecError(f"unknown low_tap {tap!r} (choose from {', '.join(LOW_TAPS)})")
    if tap == "none":
        return None
    stride, at_stride = spec.stem_stride, []
    for i, b in enumerate(spec.blocks, start=1):
        stride *= b.stride
        if stride == LOW_TAP_STRIDE:
            at_stride.append(i)
    if not at_stride:
        raise SpecError(f"low_tap {tap!r}: backbone {spec.name!r} has no block at output stride {LOW_TAP_STRIDE}")
    block = at_stride[0] if tap == "stride8_first_output" else at_stride[-1]
    b = spec.blocks[block - 1]
    if tap == "stride8_depthwise":
        return LowTap(tap, block, "depthwise", b.exp, LOW_TAP_STRIDE)
    return LowTap(tap, block, "output", b.out, LOW_TAP_STRIDE)
