"""Exact changes to the float model before its int8 export: BatchNorm folded, depthwise channel counts padded to a
multiple of 16 (ONNX Runtime's fast int8 depthwise kernel needs it, :mod:`.options`), the input optionally
padded to 4 channels. Each keeps the model's outputs, up to float rounding."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..fold import fold_bn
from .options import Int8Options


def _grow_conv(conv: nn.Conv2d, out_channels: int | None = None, in_channels: int | None = None) -> nn.Conv2d:
    """A copy of ``conv`` with zero filters added for extra output channels and/or zero weights for extra input
    channels (a depthwise conv grows its groups with its channels)."""
    out_c = out_channels or conv.out_channels
    in_c = in_channels or conv.in_channels
    depthwise = conv.groups == conv.in_channels == conv.out_channels and conv.groups > 1
    groups = out_c if depthwise else conv.groups
    if not depthwise and groups != 1:
        raise ValueError("only plain and depthwise convolutions can be padded")
    w = conv.weight.detach()
    new_w = w.new_zeros(out_c, 1 if depthwise else in_c, *w.shape[2:])
    new_w[: w.shape[0], : w.shape[1]] = w
    grown = copy.deepcopy(conv)
    grown.in_channels, grown.out_channels, grown.groups = in_c, out_c, groups
    grown.weight = nn.Parameter(new_w)
    if conv.bias is not None:
        b = conv.bias.detach()
        grown.bias = nn.Parameter(torch.cat([b, b.new_zeros(out_c - b.shape[0])]))
    return grown


def pad_depthwise_channels(model: nn.Module, multiple: int = 16) -> int:
    """Pad, in place, each inverted-residual block's expansion to a multiple of ``multiple`` channels with zero
    filters (expansion conv outputs, depthwise conv, SE reduce inputs and expand outputs, projection inputs).

    Exact on a BN-folded model: the added channels are zero after the expansion (zero filter, zero bias, and
    every activation used maps 0 to 0), stay zero through the depthwise conv and the SE product, and the
    projection gives them zero weight. A convolution outside the block that reads its depthwise output (a
    segmentation model's skip from DeepLab's depthwise end point: the model's ``depthwise_readers()``) gives them
    zero weight too. Returns the number of blocks padded; blocks without an expansion conv are left alone (their
    depthwise input is the previous block's output).
    """
    from ...layers import InvertedResidual

    readers = model.depthwise_readers() if hasattr(model, "depthwise_readers") else []
    padded = 0
    for block in model.modules():
        if not isinstance(block, InvertedResidual) or block.expand is None:
            continue
        channels = block.dw.conv.out_channels
        target = math.ceil(channels / multiple) * multiple
        if target == channels:
            continue
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in block.modules()):
            raise ValueError("pad_depthwise_channels needs a BatchNorm-folded model (fold_bn)")
        block.expand.conv = _grow_conv(block.expand.conv, out_channels=target)
        block.dw.conv = _grow_conv(block.dw.conv, out_channels=target, in_channels=target)
        if block.se is not None:
            block.se.reduce = _grow_conv(block.se.reduce, in_channels=target)
            block.se.expand = _grow_conv(block.se.expand, out_channels=target)
        block.project.conv = _grow_conv(block.project.conv, in_channels=target)
        for tapped, parent, name in readers:
            if tapped is block:
                setattr(parent, name, _grow_conv(getattr(parent, name), in_channels=target))
        padded += 1
    return padded


class PaddedInput(nn.Module):
    """``model`` behind a zero-padding of the input's channels to ``channels`` (its first conv padded to match)."""

    def __init__(self, model: nn.Module, channels: int) -> None:
        super().__init__()
        self.model = model
        self.extra = channels - _first_conv(model).in_channels
        if self.extra < 0:
            raise ValueError(f"the model already takes more than {channels} channels")
        stem_parent, name, conv = _first_conv_slot(model)
        setattr(stem_parent, name, _grow_conv(conv, in_channels=channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(F.pad(x, (0, 0, 0, 0, 0, self.extra)))


def _first_conv_slot(model: nn.Module) -> tuple[nn.Module, str, nn.Conv2d]:
    """The first Conv2d in registration order (depth first: the stem's, not a later direct child's), its parent
    and its attribute name."""
    for path, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            parent_path, _, name = path.rpartition(".")
            return model.get_submodule(parent_path), name, module
    raise ValueError("the model has no Conv2d")


def _first_conv(model: nn.Module) -> nn.Conv2d:
    return _first_conv_slot(model)[2]


def int8_ready(model: nn.Module, options: Int8Options | None = None) -> nn.Module:
    """The float model that gets quantised: a BN-folded copy with the exact padding ``options`` (default: the
    defaults) ask for."""
    options = options or Int8Options()
    prepared = fold_bn(model)
    if options.pad_depthwise:
        pad_depthwise_channels(prepared, options.pad_depthwise)
    if options.pad_stem and _first_conv(prepared).in_channels % 4:
        in_c = _first_conv(prepared).in_channels
        prepared = PaddedInput(prepared, in_c + (-in_c) % 4).eval()
    return prepared

