"""timm's MobileNetV3 layout: model names, reading its state dicts into our spec and weights, and exporting back.

Layout: ``conv_stem``/``bn1``; ``blocks.{stage}.{index}`` being a DepthwiseSeparable block (``conv_dw, bn1,
[se], conv_pw, bn2``; the first stage, with no expansion) or an InvertedResidual (``conv_pw, bn1, conv_dw, bn2,
[se], conv_pwl, bn3``), SE as ``se.conv_reduce``/``se.conv_expand``; the last stage is a ConvBnAct (``conv``,
``bn1``); then ``conv_head`` (1x1 conv with bias) and ``classifier``.

Numerics, which the weights' shapes cannot tell apart and the model name therefore decides: ``mobilenetv3_*``
use PyTorch's BN eps 1e-5 and symmetric padding; ``tf_mobilenetv3_*`` (ports of TensorFlow checkpoints) use BN
eps 1e-3 and TensorFlow "SAME" padding (``padding="same"``), which pads asymmetrically at stride 2.

timm keeps the stem at 16 channels below width 0.75 (``fix_stem``), where the zoo scales it, so
``mobilenetv3_small_050`` converts to a spec built from its shapes rather than the zoo's 0.5 spec.
``mobilenetv3_rw`` (SE with hard-swish inside) and ``mobilenetv3_large_150d`` (more blocks) are not MobileNetV3
as the paper defines it and are refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..model import MobileNetV3
from ..spec import ArchSpec
from .infer import (
    ArchLike,
    PeerBlock,
    PeerConvention,
    PeerLayout,
    is_minimal,
    layout_family,
    resolve_arch,
    spec_from_layout,
    with_eps,
)
from .state_dict import (
    ConversionError,
    KeyPair,
    Source,
    check_representable,
    conv_bn_pairs,
    depthwise_kernel,
    export_planned,
    load_planned,
    pointwise_width,
    read_state_dict,
    require_layout,
    se_pairs,
    se_squeeze_width,
    weight_shape,
)

__all__ = [
    "NEED_TIMM_NAME", "TIMM", "TIMM_TF", "TimmName", "from_timm", "parse_timm_name", "read_timm",
    "timm_labels", "timm_plan", "timm_spec", "to_timm",
]

TIMM = PeerConvention("timm", 1e-5, "symmetric")
TIMM_TF = PeerConvention("timm", 1e-3, "same")

NEED_TIMM_NAME = ("a timm state dict needs its model name (e.g. 'tf_mobilenetv3_large_100'): the tf_* models use "
                  "TensorFlow 'SAME' padding and BN eps 1e-3, the others symmetric padding and eps 1e-5, which the "
                  "weights' shapes cannot tell apart")


# ---------------------------------------------------------------------------------------------------------
# model names


_TIMM_NAME = re.compile(r"^(?P<tf>tf_)?mobilenetv3_(?P<family>large|small)(?P<minimal>_minimal)?_(?P<width>\d{3})$")


@dataclass(frozen=True)
class TimmName:
    """What a timm MobileNetV3 model name says: TF port or not, family, minimal, width multiplier."""

    name: str
    tf: bool
    family: str
    minimal: bool
    width: float

    @property
    def convention(self) -> PeerConvention:
        return TIMM_TF if self.tf else TIMM


def parse_timm_name(name: str) -> TimmName:
    """Parse ``[timm/][tf_]mobilenetv3_{large,small}[_minimal]_NNN[.tag]`` (hub prefix and tag are dropped)."""
    if not isinstance(name, str):
        raise TypeError(f"a timm model name must be a string, got {type(name).__name__}")
    base = name.rsplit("/", 1)[-1].split(".", 1)[0]
    m = _TIMM_NAME.match(base)
    if not m:
        raise ConversionError(
            f"unsupported timm model {name!r}: convertible models are named [tf_]mobilenetv3_{{large,small}}"
            "[_minimal]_NNN, e.g. mobilenetv3_large_100 or tf_mobilenetv3_small_minimal_100 "
            "(mobilenetv3_rw and mobilenetv3_large_150d differ from the paper's structure)")
    return TimmName(base, bool(m["tf"]), m["family"], bool(m["minimal"]), int(m["width"]) / 100)


# ---------------------------------------------------------------------------------------------------------
# reading the structure


_TIMM_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(\d+)\.")


def _timm_blocks(sd: Mapping[str, torch.Tensor]) -> tuple[list[tuple[str, str]], str | None]:
    """The timm blocks as (prefix, kind) in order, kind "ir" or "ds"; and the last ConvBnAct's prefix."""
    labels = sorted({(int(m[1]), int(m[2])) for key in sd if (m := _TIMM_BLOCK_KEY.match(key))})
    blocks, last = [], None
    for n, (s, i) in enumerate(labels):
        p = f"blocks.{s}.{i}"
        if f"{p}.conv_pwl.weight" in sd:
            kind = "ir"
        elif f"{p}.conv_dw.weight" in sd:
            kind = "ds"
        elif f"{p}.conv.weight" in sd:
            if n != len(labels) - 1:
                raise ConversionError(f"{p} is a conv-bn-act block but is not the last block; this is not a "
                                      "MobileNetV3 layout")
            last = p
            continue
        else:
            raise ConversionError(f"{p} is not a timm block this converter knows: expected conv_pwl "
                                  "(inverted residual), conv_dw (depthwise-separable) or conv (conv-bn-act) weights")
        blocks.append((p, kind))
    return blocks, last


def read_timm(sd: Mapping[str, torch.Tensor]) -> PeerLayout:
    """The structure of a timm MobileNetV3 state dict, every shape checked against its neighbours."""
    lib = "timm"
    stem_out, stem_in, k, _ = weight_shape(sd, "conv_stem.weight", 4, lib)
    labels, last_label = _timm_blocks(sd)
    blocks, prev = [], stem_out
    for p, kind in labels:
        if kind == "ir":
            exp = pointwise_width(sd, f"{p}.conv_pw.weight", lib, prev)
            if exp == prev:
                raise ConversionError(f"{p} has an expansion conv of the same width as its input ({exp}); this "
                                      "library leaves such a conv out, so the block cannot be represented")
            kernel = depthwise_kernel(sd, f"{p}.conv_dw.weight", lib, exp)
            out = pointwise_width(sd, f"{p}.conv_pwl.weight", lib, exp)
        else:
            exp = prev
            kernel = depthwise_kernel(sd, f"{p}.conv_dw.weight", lib, exp)
            out = pointwise_width(sd, f"{p}.conv_pw.weight", lib, exp)
        squeeze = se_squeeze_width(sd, f"{p}.se", "conv_reduce", exp, lib)
        blocks.append(PeerBlock(p, prev, exp, out, kernel, squeeze, kind == "ir"))
        prev = out
    if last_label is None:
        raise ConversionError("the timm state dict has no final conv-bn-act block (blocks.N.0.conv.weight)")
    last = pointwise_width(sd, f"{last_label}.conv.weight", lib, prev)
    head = pointwise_width(sd, "conv_head.weight", lib, last)
    if "classifier.weight" not in sd:
        raise ConversionError("the timm state dict has no 'classifier.weight' (a model made with num_classes=0?); "
                              "this library's models always have a classifier")
    num_classes, cls_in = weight_shape(sd, "classifier.weight", 2, lib)
    if cls_in != head:
        raise ConversionError(f"'classifier.weight' has {cls_in} inputs but conv_head gives {head}")
    return PeerLayout(lib, (stem_out, stem_in, k), tuple(blocks), last_label, last, head, num_classes)


def timm_spec(layout: PeerLayout, name: TimmName, conv: PeerConvention | None = None) -> ArchSpec:
    """The spec of a timm layout whose model name is ``name``; the name must agree with the shapes.

    ``conv`` defaults to the name's numerics (:attr:`TimmName.convention`).
    """
    family = layout_family(layout, f"{layout.library} {name.name}")
    if name.family != family:
        raise ConversionError(f"the name {name.name!r} says {name.family}, but the state dict has "
                              f"{len(layout.blocks)} bottlenecks, as MobileNetV3-{family.capitalize()} has")
    minimal = is_minimal(layout)
    if name.minimal != minimal:
        has = "no SE and only 3x3 depthwise convs" if minimal else "SE or 5x5 depthwise convs"
        raise ConversionError(f"the name {name.name!r} says {'' if name.minimal else 'not '}minimal, but "
                              f"the state dict has {has}")
    return spec_from_layout(layout, conv or name.convention, name.name, name.width)


# ---------------------------------------------------------------------------------------------------------
# key plans


# timm's stage grouping of the MobileNetV3 bottlenecks (index of each stage's first block), from its arch_def
_TIMM_STAGES = {15: (0, 1, 3, 6, 10, 12), 11: (0, 1, 3, 6, 8)}


def timm_labels(spec: ArchSpec) -> tuple[list[str], str]:
    """timm's ``blocks.{stage}.{index}`` names for export, and the last ConvBnAct's.

    The stages are timm's for Large (15 blocks) and Small (11); for other block counts a stage starts at every
    stride-2 block and every change of width (which gives the same grouping at width 1.0).
    """
    starts = _TIMM_STAGES.get(len(spec.blocks))
    labels, stage, index, prev_out = [], -1, 0, None
    for i, b in enumerate(spec.blocks):
        new_stage = i in starts if starts else (prev_out is None or b.stride > 1 or b.out != prev_out)
        if new_stage:
            stage, index = stage + 1, 0
        labels.append(f"blocks.{stage}.{index}")
        index, prev_out = index + 1, b.out
    return labels, f"blocks.{stage + 1}.0"


def timm_plan(spec: ArchSpec, labels: list[str], last_label: str) -> list[KeyPair]:
    """Which timm key fills each of our modules, given timm's block prefixes (see :func:`timm_labels`)."""
    check_representable(spec, "timm")
    plan = conv_bn_pairs("features.0", "conv_stem", "bn1")
    for i, (b, in_ch, p) in enumerate(zip(spec.blocks, spec.block_inputs(), labels, strict=True)):
        ours = f"features.{i + 1}"
        if b.exp != in_ch:  # InvertedResidual
            plan += conv_bn_pairs(f"{ours}.expand", f"{p}.conv_pw", f"{p}.bn1")
            plan += conv_bn_pairs(f"{ours}.dw", f"{p}.conv_dw", f"{p}.bn2")
            project = (f"{p}.conv_pwl", f"{p}.bn3")
        else:  # DepthwiseSeparable
            plan += conv_bn_pairs(f"{ours}.dw", f"{p}.conv_dw", f"{p}.bn1")
            project = (f"{p}.conv_pw", f"{p}.bn2")
        if spec.se_channels(i):
            plan += se_pairs(ours, f"{p}.se.conv_reduce", f"{p}.se.conv_expand")
        plan += conv_bn_pairs(f"{ours}.project", *project)
    plan += conv_bn_pairs(f"features.{len(spec.blocks) + 1}", f"{last_label}.conv", f"{last_label}.bn1")
    plan += [KeyPair("conv_head", "conv_head", "conv_bias"), KeyPair("classifier", "classifier", "linear")]
    return plan


def _plan_for_file(spec: ArchSpec, sd: Mapping[str, torch.Tensor]) -> list[KeyPair]:
    """The plan with the file's own block prefixes, after checking its block kinds against ``spec``."""
    blocks, last = _timm_blocks(sd)
    if len(blocks) != len(spec.blocks):
        raise ConversionError(f"the timm state dict has {len(blocks)} bottleneck blocks, {spec.name} has "
                              f"{len(spec.blocks)}")
    if last is None:
        raise ConversionError("the timm state dict has no final conv-bn-act block (blocks.N.0.conv.weight)")
    for i, ((p, kind), b, in_ch) in enumerate(zip(blocks, spec.blocks, spec.block_inputs(), strict=True)):
        if (kind == "ir") != (b.exp != in_ch):
            what = "an inverted residual with an expansion conv" if kind == "ir" else "a depthwise-separable block"
            raise ConversionError(f"{p} is {what}, but {spec.name}'s block {i + 1} has exp={b.exp} for "
                                  f"{in_ch} input channels ({'no ' if b.exp == in_ch else ''}expansion conv)")
    return timm_plan(spec, [p for p, _ in blocks], last)


# ---------------------------------------------------------------------------------------------------------
# loading and exporting


def from_timm(source: Source, name: str, arch: ArchLike | None = None, *,
              bn_eps: float | None = None) -> MobileNetV3:
    """A :class:`MobileNetV3` (in eval mode) holding timm ``[tf_]mobilenetv3_*`` weights.

    ``name`` is the timm model name (``tf_mobilenetv3_large_100``, ``mobilenetv3_small_050.lamb_in1k``, ...):
    it decides the padding and BN eps, which shapes cannot. ``arch`` overrides the architecture as in
    :func:`~mobilenetv3.convert.torchvision.from_torchvision`.
    """
    timm_name = parse_timm_name(name)
    sd = read_state_dict(source)
    require_layout(sd, "timm")
    conv = with_eps(timm_name.convention, bn_eps)
    if arch is None:
        spec = timm_spec(read_timm(sd), timm_name, conv)
    else:
        cls = sd.get("classifier.weight")
        spec = resolve_arch(arch, conv, cls.shape[0] if cls is not None and cls.dim() == 2 else None)
    model = MobileNetV3(spec)
    load_planned(model, sd, _plan_for_file(spec, sd), "timm")
    return model.eval()


def to_timm(model: MobileNetV3) -> dict[str, torch.Tensor]:
    """The model's weights under timm's MobileNetV3 keys (the inverse of :func:`from_timm`).

    The matching timm model has ``pad_type='same'`` (the tf_* models) when ``spec.padding == "same"``, and
    ``bn_eps=spec.bn_eps``.
    """
    labels, last = timm_labels(model.spec)
    return export_planned(model, timm_plan(model.spec, labels, last))
