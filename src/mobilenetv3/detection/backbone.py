"""What SSDLite needs from a classification backbone: the C4 and C5 taps and the "Y" channel reduction.

Section 6.3: the first SSDLite layer attaches to C4, "the last feature extractor layer that has an output stride
of 16", for MobileNetV3 the *expansion* layer of Large's 13th / Small's 9th bottleneck; the second to C5, "the
layer immediately before pooling" (the last 1x1 conv). In general C4 is the expansion output of the last stride-2
block (the block that goes from stride 16 to 32): the expansion still runs at stride 16. The same rule gives the
TF object-detection API's and torchvision's C4 for MobileNetV2 (``layer_15/expansion_output``: block 14, 576
channels) and MnasNet-A1 (block 13, 672). :class:`~mobilenetv3.model.MobileNetV3` already offers both as taps
(``forward_taps(x, ["C4", "C5"])``); :func:`find_taps` reads them off a spec.

The "Y" rows of Table 6 "reduce the channel counts of all feature layers between C4 and C5 by 2". As in TF's
``V3_LARGE_DETECTION`` / ``V3_SMALL_DETECTION`` (``_reduce_consecutive_layers``) and torchvision's
``reduced_tail``: from the C4 block on, every block output and the last 1x1 conv are halved, and each expansion
keeps its ratio to the block's (new) input, so the C4 block keeps its full expansion (Large block 13: exp 672, out
80; blocks 14, 15: exp 480, out 80; last conv 480). This is the ``"ssdlite"`` RF2 form of the segmentation room,
and :func:`reduce_tail` calls it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..segmentation.backbone import reduce_last_block
from ..spec import ArchSpec, SpecError


@dataclass(frozen=True)
class DetTaps:
    """C4 and C5 of a backbone spec: the block whose expansion is C4 (1-based, as in the paper's tables), the
    channels of both and their output strides."""

    c4_block: int
    c4_channels: int
    c4_stride: int
    c5_channels: int
    c5_stride: int


def c4_block_index(spec: ArchSpec) -> int:
    """0-based index of the block whose expansion is C4: the last stride-2 block."""
    strided = [i for i, b in enumerate(spec.blocks) if b.stride == 2]
    if not strided:
        raise SpecError(f"backbone {spec.name!r} has no stride-2 block, so it has no C4 (SSDLite needs one)")
    block = spec.blocks[strided[-1]]
    if block.exp == spec.block_inputs()[strided[-1]]:
        raise SpecError(f"backbone {spec.name!r}: block {strided[-1] + 1} (C4) has no expansion layer to tap")
    if block.dilation != 1 or any(b.dilation != 1 for b in spec.blocks):
        raise SpecError(f"backbone {spec.name!r} is atrous (dilated blocks); SSDLite needs the strided backbone")
    return strided[-1]


def find_taps(spec: ArchSpec) -> DetTaps:
    """C4 and C5 of ``spec`` (see the module docstring)."""
    i = c4_block_index(spec)
    stride = spec.stem_stride
    for b in spec.blocks[:i]:
        stride *= b.stride
    c5_stride = stride * spec.blocks[i].stride
    for b in spec.blocks[i + 1:]:
        c5_stride *= b.stride
    return DetTaps(c4_block=i + 1, c4_channels=spec.blocks[i].exp, c4_stride=stride,
                   c5_channels=spec.features_channels, c5_stride=c5_stride)


def reduce_tail(spec: ArchSpec) -> ArchSpec:
    """``spec`` with the channels between C4 and C5 halved: the paper's "Y" form (module docstring), which is
    segmentation's RF2 in SSDLite's form (:func:`~mobilenetv3.segmentation.backbone.reduce_last_block`): both
    start at the last stride-2 block."""
    c4_block_index(spec)  # the checks SSDLite needs (a tappable C4, no dilation)
    return reduce_last_block(spec, "ssdlite").replace(name=f"{spec.name}_y")
