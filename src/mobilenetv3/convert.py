"""Weight import from torchvision and timm MobileNetV3 state dicts, and export back to their key layouts.

The user brings the files (nothing is downloaded). A source is a path (``.pth``/``.pt`` read with
``torch.load(weights_only=True)``, ``.safetensors`` read with safetensors), an in-memory state dict, or a module.

How a conversion works:

1. The architecture comes from the file's tensor shapes (:func:`infer_spec`): the number of bottlenecks says
   Large (15) or Small (11); kernel sizes and SE presence say whether it is a "minimalistic" model; channel
   widths, the head and the class count are read off the weights. Strides and activations, which shapes cannot
   show, come from the paper's table for that family. When a zoo spec at one of the zoo's widths gives exactly
   these shapes, that spec is used (so a torchvision 1.0 file yields ``mobilenet_v3_large``); otherwise the
   spec built from the shapes is kept under its own name, with a note saying how it differs from the zoo.
   Pass ``arch=`` (a spec or zoo name) for anything shapes cannot tell, e.g. torchvision's dilated backbones.
2. The spec is given the peer's numerics, so that rebuilding from the spec alone reproduces the model:
   torchvision: BN eps 1e-3, symmetric padding; timm ``mobilenetv3_*``: BN eps 1e-5 (PyTorch's default),
   symmetric padding; timm ``tf_mobilenetv3_*``: BN eps 1e-3 and TensorFlow "SAME" padding (``padding="same"``).
3. Keys are mapped by walking the spec's blocks next to the peer's naming; every tensor of our model must come
   from the file and every tensor of the file must be used, with matching shapes. Anything else raises
   :class:`ConversionError` naming the keys. The one optional entry is BN's ``num_batches_tracked`` (some
   exports drop it; it does not affect outputs): when the file lacks it ours stays at 0.

Peer layouts:

- torchvision: ``features.0.{0,1}`` stem conv/BN; ``features.{i}.block.{j}`` with ``j`` running over
  [expand,] depthwise, [SE (``fc1``/``fc2``),] project, each conv ``.0`` and BN ``.1`` (the expansion is left
  out when its width equals the input's, as in ours); ``features.{n+1}`` the last 1x1 conv; the classifier is
  ``Linear(960, 1280) -> Hardswish -> Dropout -> Linear``, whose first Linear is our 1x1 ``conv_head``
  (weight reshaped to ``[out, in, 1, 1]``) and whose last is our ``classifier``.
- timm: ``conv_stem``/``bn1``; ``blocks.{stage}.{index}`` being a DepthwiseSeparable block
  (``conv_dw, bn1, [se], conv_pw, bn2``; the first stage, with no expansion) or an InvertedResidual
  (``conv_pw, bn1, conv_dw, bn2, [se], conv_pwl, bn3``), SE as ``se.conv_reduce``/``se.conv_expand``; the last
  stage is a ConvBnAct (``conv``, ``bn1``); then ``conv_head`` (1x1 conv with bias) and ``classifier``.
  timm keeps the stem at 16 channels below width 0.75 (``fix_stem``), where the zoo scales it, so
  ``mobilenetv3_small_050`` converts to a spec built from its shapes rather than the zoo's 0.5 spec.
  ``mobilenetv3_rw`` (SE with hard-swish inside) and ``mobilenetv3_large_150d`` (more blocks) are not
  MobileNetV3 as the paper defines it and are refused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import zoo
from .model import MobileNetV3
from .spec import ArchSpec, BlockSpec, SpecError

__all__ = [
    "ConversionError", "PeerConvention", "TORCHVISION", "TIMM", "TIMM_TF", "TimmName", "detect_layout",
    "from_timm", "from_torchvision", "infer_spec", "load_peer_weights", "parse_timm_name", "read_state_dict",
    "to_timm", "to_torchvision",
]

Source = str | os.PathLike | Mapping[str, torch.Tensor] | nn.Module
ArchLike = ArchSpec | str


class ConversionError(ValueError):
    """A state dict that cannot be converted; the message names the keys, shapes or file at fault."""


@dataclass(frozen=True)
class PeerConvention:
    """The numerics a peer library builds its models with (what the spec must say to reproduce them)."""

    library: str
    bn_eps: float
    padding: str


TORCHVISION = PeerConvention("torchvision", 1e-3, "symmetric")
TIMM = PeerConvention("timm", 1e-5, "symmetric")
TIMM_TF = PeerConvention("timm", 1e-3, "same")


# ---------------------------------------------------------------------------------------------------------
# reading files


_WRAPPER_KEYS = ("state_dict", "model")


def read_state_dict(source: Source) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` dict from a path, a mapping or a module.

    Training checkpoints that wrap the weights under ``"state_dict"`` or ``"model"`` are unwrapped (the plain
    weights, not an EMA copy), and a ``module.`` prefix on every key (DistributedDataParallel) is removed.
    """
    if isinstance(source, nn.Module):
        obj, where = source.state_dict(), f"the {type(source).__name__} module's state dict"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        obj, where = _read_file(path), str(path)
    elif isinstance(source, Mapping):
        obj, where = source, "the given state dict"
    else:
        raise TypeError(f"expected a path, a state dict or a module, got {type(source).__name__}")
    return _as_state_dict(obj, where)


def _read_file(path: Path) -> object:
    if not path.exists():
        raise FileNotFoundError(f"weights file not found: {path}")
    if not path.is_file():
        raise ConversionError(f"{path} is not a file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch and safetensors raise many types for damaged files; name the file instead
        detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
        kind = "safetensors" if path.suffix == ".safetensors" else "PyTorch (torch.save)"
        raise ConversionError(
            f"could not read {path} as a {kind} file ({type(e).__name__}: {detail[:200]}). The file may be "
            "truncated or of another format; only state dicts are read (torch.load with weights_only=True), "
            "not whole pickled models") from e


def _as_state_dict(obj: object, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{where} holds a {type(obj).__name__}, not a state dict "
                              "(a mapping of parameter names to tensors)")
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj, where = inner, f"{where} [{key!r}]"
                break
        else:
            bad = [f"{k!r} ({type(v).__name__})" for k, v in obj.items() if not isinstance(v, torch.Tensor)]
            are = "entry is" if len(bad) == 1 else "entries are"
            raise ConversionError(f"{where} is not a state dict: {len(bad)} {are} not tensors: {', '.join(bad[:5])}")
    if not obj:
        raise ConversionError(f"{where} is empty")
    bad_keys = [k for k in obj if not isinstance(k, str)]
    if bad_keys:
        raise ConversionError(f"{where} is not a state dict: key {bad_keys[0]!r} is not a string")
    sd = dict(obj)
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def detect_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``"torchvision"``, ``"timm"`` or ``"mobilenetv3"`` (this library), from the stem's key."""
    if "conv_stem.weight" in state_dict:
        return "timm"
    if "features.0.0.weight" in state_dict:
        return "torchvision"
    if "features.0.conv.weight" in state_dict:
        return "mobilenetv3"
    first = ", ".join(repr(k) for k in list(state_dict)[:5])
    raise ConversionError("cannot tell which library this state dict comes from: expected torchvision's "
                          "'features.0.0.weight' or timm's 'conv_stem.weight' (and the keys that go with them); "
                          f"its first keys are {first}")


# ---------------------------------------------------------------------------------------------------------
# timm model names


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
# reading the architecture off the shapes


@dataclass(frozen=True)
class _Block:
    label: str  # the peer's prefix for this block
    in_ch: int
    exp: int
    out: int
    kernel: int
    squeeze: int  # SE squeeze width, 0 without SE
    has_expand: bool


@dataclass(frozen=True)
class _Layout:
    """The structure read from a peer state dict (before any architecture is chosen)."""

    library: str
    stem: tuple[int, int, int]  # out, in, kernel
    blocks: tuple[_Block, ...]
    last_label: str | None
    last: int
    head: int
    num_classes: int


def _shape(sd: Mapping[str, torch.Tensor], key: str, ndim: int, library: str) -> tuple[int, ...]:
    if key not in sd:
        raise ConversionError(f"the {library} state dict has no {key!r}; it is not a MobileNetV3 of the expected "
                              "layout (or the file is incomplete)")
    shape = tuple(sd[key].shape)
    if len(shape) != ndim:
        raise ConversionError(f"{key!r} has shape {list(shape)} in the {library} state dict; a "
                              f"{ndim}-dimensional weight was expected")
    return shape


def _pointwise(sd, key: str, library: str, in_ch: int | None = None) -> int:
    out, cin, kh, kw = _shape(sd, key, 4, library)
    if (kh, kw) != (1, 1) or (in_ch is not None and cin != in_ch):
        want = f"[*, {in_ch}, 1, 1]" if in_ch is not None else "[*, *, 1, 1]"
        raise ConversionError(f"{key!r} has shape {[out, cin, kh, kw]}; a 1x1 convolution {want} was expected")
    return out


def _depthwise(sd, key: str, library: str, channels: int) -> int:
    shape = _shape(sd, key, 4, library)
    c, one, kh, kw = shape
    if c != channels or one != 1 or kh != kw or kh % 2 == 0:
        raise ConversionError(f"{key!r} has shape {list(shape)}; a depthwise convolution [{channels}, 1, k, k] "
                              "with odd k was expected")
    return kh


def _squeeze(sd, prefix: str, fc1: str, channels: int, library: str) -> int:
    key = f"{prefix}.{fc1}.weight"
    return _pointwise(sd, key, library, channels) if key in sd else 0


def _read_torchvision(sd: Mapping[str, torch.Tensor]) -> _Layout:
    lib = "torchvision"
    stem_out, stem_in, k, _ = _shape(sd, "features.0.0.weight", 4, lib)
    blocks, prev, i = [], stem_out, 1
    while f"features.{i}.block.0.0.weight" in sd:
        p = f"features.{i}.block"
        subs = sorted({int(m[1]) for key in sd if (m := re.match(rf"^{re.escape(p)}\.(\d+)\.", key))})
        convs = [j for j in subs if f"{p}.{j}.0.weight" in sd]
        ses = [j for j in subs if f"{p}.{j}.fc1.weight" in sd]
        if len(convs) not in (2, 3) or len(ses) > 1:
            raise ConversionError(f"{p} has {len(convs)} conv layers and {len(ses)} SE layers; a MobileNetV3 "
                                  "bottleneck has [expand,] depthwise, [SE,] project")
        has_expand = len(convs) == 3
        exp = _pointwise(sd, f"{p}.{convs[0]}.0.weight", lib, prev) if has_expand else prev
        kernel = _depthwise(sd, f"{p}.{convs[-2]}.0.weight", lib, exp)
        squeeze = _squeeze(sd, f"{p}.{ses[0]}", "fc1", exp, lib) if ses else 0
        if ses and not convs[-2] < ses[0] < convs[-1]:
            raise ConversionError(f"{p}.{ses[0]} (SE) is not between the depthwise and the project convs")
        out = _pointwise(sd, f"{p}.{convs[-1]}.0.weight", lib, exp)
        blocks.append(_Block(f"features.{i}", prev, exp, out, kernel, squeeze, has_expand))
        prev, i = out, i + 1
    last = _pointwise(sd, f"features.{i}.0.weight", lib, prev)
    head, head_in = _shape(sd, "classifier.0.weight", 2, lib)
    num_classes, cls_in = _shape(sd, "classifier.3.weight", 2, lib)
    if head_in != last or cls_in != head:
        raise ConversionError(f"the torchvision classifier's shapes ({[head, head_in]}, {[num_classes, cls_in]}) do "
                              f"not follow the last conv's {last} channels")
    return _Layout(lib, (stem_out, stem_in, k), tuple(blocks), f"features.{i}", last, head, num_classes)


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


def _read_timm(sd: Mapping[str, torch.Tensor]) -> _Layout:
    lib = "timm"
    stem_out, stem_in, k, _ = _shape(sd, "conv_stem.weight", 4, lib)
    labels, last_label = _timm_blocks(sd)
    blocks, prev = [], stem_out
    for p, kind in labels:
        if kind == "ir":
            exp = _pointwise(sd, f"{p}.conv_pw.weight", lib, prev)
            if exp == prev:
                raise ConversionError(f"{p} has an expansion conv of the same width as its input ({exp}); this "
                                      "library leaves such a conv out, so the block cannot be represented")
            kernel = _depthwise(sd, f"{p}.conv_dw.weight", lib, exp)
            out = _pointwise(sd, f"{p}.conv_pwl.weight", lib, exp)
        else:
            exp = prev
            kernel = _depthwise(sd, f"{p}.conv_dw.weight", lib, exp)
            out = _pointwise(sd, f"{p}.conv_pw.weight", lib, exp)
        squeeze = _squeeze(sd, f"{p}.se", "conv_reduce", exp, lib)
        blocks.append(_Block(p, prev, exp, out, kernel, squeeze, kind == "ir"))
        prev = out
    if last_label is None:
        raise ConversionError("the timm state dict has no final conv-bn-act block (blocks.N.0.conv.weight)")
    last = _pointwise(sd, f"{last_label}.conv.weight", lib, prev)
    head = _pointwise(sd, "conv_head.weight", lib, last)
    if "classifier.weight" not in sd:
        raise ConversionError("the timm state dict has no 'classifier.weight' (a model made with num_classes=0?); "
                              "this library's models always have a classifier")
    num_classes, cls_in = _shape(sd, "classifier.weight", 2, lib)
    if cls_in != head:
        raise ConversionError(f"'classifier.weight' has {cls_in} inputs but conv_head gives {head}")
    return _Layout(lib, (stem_out, stem_in, k), tuple(blocks), last_label, last, head, num_classes)


def _read_layout(sd: Mapping[str, torch.Tensor], library: str) -> _Layout:
    return _read_torchvision(sd) if library == "torchvision" else _read_timm(sd)


_FAMILIES = {15: "large", 11: "small"}


def _builder(family: str):
    return zoo.mobilenet_v3_large if family == "large" else zoo.mobilenet_v3_small


def _spec_from_layout(layout: _Layout, conv: PeerConvention, timm_name: TimmName | None = None) -> ArchSpec:
    n = len(layout.blocks)
    family = _FAMILIES.get(n)
    source = f"{layout.library} {timm_name.name}" if timm_name else layout.library
    if family is None:
        raise ConversionError(f"cannot infer the architecture of this {source} state dict: it has {n} bottleneck "
                              "blocks (MobileNetV3-Large has 15, Small 11); pass arch= with a spec that matches it")
    if timm_name and timm_name.family != family:
        raise ConversionError(f"the name {timm_name.name!r} says {timm_name.family}, but the state dict has {n} "
                              f"bottlenecks, as MobileNetV3-{family.capitalize()} has")
    minimal = all(b.kernel == 3 and not b.squeeze for b in layout.blocks)
    if timm_name and timm_name.minimal != minimal:
        has = "no SE and only 3x3 depthwise convs" if minimal else "SE or 5x5 depthwise convs"
        raise ConversionError(f"the name {timm_name.name!r} says {'' if timm_name.minimal else 'not '}minimal, but "
                              f"the state dict has {has}")
    template = _builder(family)(1.0, minimal=minimal)
    title = f"MobileNetV3-{family.capitalize()}{' (minimal)' if minimal else ''}"
    blocks = []
    for i, (b, t) in enumerate(zip(layout.blocks, template.blocks, strict=True)):
        if b.kernel != t.kernel or bool(b.squeeze) != t.se:
            has, want = ("with" if b.squeeze else "without"), ("with" if t.se else "without")
            raise ConversionError(
                f"block {i + 1} ({b.label}) has a {b.kernel}x{b.kernel} depthwise conv {has} SE, but {title}'s "
                f"block {i + 1} has {t.kernel}x{t.kernel} {want} SE; pass arch= with a spec that matches the file")
        blocks.append(BlockSpec(kernel=t.kernel, exp=b.exp, out=b.out, se=t.se, act=t.act, stride=t.stride,
                                dilation=t.dilation))
    stem_out, stem_in, stem_k = layout.stem
    if stem_k != template.stem_kernel:
        raise ConversionError(f"the stem conv is {stem_k}x{stem_k}; {title} has {template.stem_kernel}x"
                              f"{template.stem_kernel}")
    common = dict(num_classes=layout.num_classes, bn_eps=conv.bn_eps, padding=conv.padding)
    try:
        spec = template.replace(
            name=f"{layout.library}_{timm_name.name if timm_name else 'mobilenet_v3_' + family}",
            blocks=tuple(blocks), stem_channels=stem_out, in_channels=stem_in, last_channels=layout.last,
            head_channels=layout.head, **common)
    except SpecError as e:
        raise ConversionError(f"the {source} state dict's shapes do not make a valid spec: {e}") from None
    for i, b in enumerate(layout.blocks):
        if b.squeeze and spec.se_channels(i) != b.squeeze:
            raise ConversionError(f"block {i + 1} ({b.label}): the SE squeezes {b.exp} channels to {b.squeeze}, "
                                  f"but this library computes {spec.se_channels(i)} (1/4, rounded to a multiple of "
                                  f"{spec.se_divisor}); the block cannot be represented")

    # Prefer the zoo's own spec (and name) when one gives exactly these shapes.
    width_options = zoo.REGISTRY[f"mobilenet_v3_{family}"].widths
    head_options = (False, True) if family == "small" else (False,)
    for w in width_options:
        for paper_head in head_options:
            extra = {"paper_head": True} if paper_head else {}
            candidate = _builder(family)(w, minimal=minimal, **extra, **common)
            if candidate.replace(name=spec.name, notes=spec.notes) == spec:
                return candidate
    nearest = timm_name.width if timm_name and 0 < timm_name.width <= 4 else 1.0
    ref = _builder(family)(nearest, minimal=minimal, **common)
    notes = (f"Inferred from the shapes of a {source} state dict; no zoo spec matches it exactly (against the zoo's "
             f"{ref.name}: {_spec_diff(spec, ref)}).")
    return spec.replace(notes=notes)


def _spec_diff(a: ArchSpec, b: ArchSpec, limit: int = 4) -> str:
    """The first few channel differences between two specs of the same family, for notes and messages."""
    out = []
    for field in ("stem_channels", "last_channels", "head_channels"):
        if getattr(a, field) != getattr(b, field):
            out.append(f"{field} {getattr(a, field)} vs {getattr(b, field)}")
    for i, (x, y) in enumerate(zip(a.blocks, b.blocks, strict=False)):
        for field in ("exp", "out"):
            if getattr(x, field) != getattr(y, field):
                out.append(f"block {i + 1} {field} {getattr(x, field)} vs {getattr(y, field)}")
    if len(a.blocks) != len(b.blocks):
        out.append(f"{len(a.blocks)} vs {len(b.blocks)} blocks")
    more = f", and {len(out) - limit} more" if len(out) > limit else ""
    return ", ".join(out[:limit]) + more if out else "no channel differences"


def infer_spec(source: Source, library: str | None = None, timm_name: str | None = None) -> ArchSpec:
    """The spec a peer state dict converts to (see the module docstring); ``timm_name`` is needed for timm."""
    sd = read_state_dict(source)
    library = library or detect_layout(sd)
    if library == "timm":
        if timm_name is None:
            raise ConversionError(_NEED_TIMM_NAME)
        name = parse_timm_name(timm_name)
        return _spec_from_layout(_read_timm(sd), name.convention, name)
    if library == "torchvision":
        return _spec_from_layout(_read_torchvision(sd), TORCHVISION)
    raise ConversionError(f"cannot infer a spec from a {library!r} state dict (torchvision or timm only)")


_NEED_TIMM_NAME = ("a timm state dict needs its model name (e.g. 'tf_mobilenetv3_large_100'): the tf_* models use "
                   "TensorFlow 'SAME' padding and BN eps 1e-3, the others symmetric padding and eps 1e-5, which the "
                   "weights' shapes cannot tell apart")


# ---------------------------------------------------------------------------------------------------------
# key plans: which peer tensor fills which of ours


@dataclass(frozen=True)
class _Pair:
    ours: str
    peer: str
    kind: str  # a key of _PARAMS


# (parameter name, optional)
_PARAMS: dict[str, tuple[tuple[str, bool], ...]] = {
    "conv": (("weight", False),),
    "conv_bias": (("weight", False), ("bias", False)),
    "bn": (("weight", False), ("bias", False), ("running_mean", False), ("running_var", False),
           ("num_batches_tracked", True)),
    "linear": (("weight", False), ("bias", False)),
    "linear_as_conv": (("weight", False), ("bias", False)),  # peer Linear <-> our 1x1 conv
}


def _conv_bn(ours: str, peer_conv: str, peer_bn: str) -> list[_Pair]:
    return [_Pair(f"{ours}.conv", peer_conv, "conv"), _Pair(f"{ours}.bn", peer_bn, "bn")]


def _se(ours: str, reduce: str, expand: str) -> list[_Pair]:
    return [_Pair(f"{ours}.se.reduce", reduce, "conv_bias"), _Pair(f"{ours}.se.expand", expand, "conv_bias")]


def _check_representable(spec: ArchSpec, library: str) -> None:
    problems = []
    if not spec.last_channels:
        problems.append("it has no last 1x1 conv (last_channels=0)")
    if spec.last_se:
        problems.append("it has an SE on the last conv (last_se)")
    if not spec.head_channels:
        problems.append("it has no head conv (head_channels=0)")
    if problems:
        raise ConversionError(f"{spec.name} has no {library} MobileNetV3 layout: {'; '.join(problems)}")


def _torchvision_plan(spec: ArchSpec) -> list[_Pair]:
    _check_representable(spec, "torchvision")
    plan = _conv_bn("features.0", "features.0.0", "features.0.1")
    for i, (b, in_ch) in enumerate(zip(spec.blocks, spec.block_inputs(), strict=True)):
        ours, peer, j = f"features.{i + 1}", f"features.{i + 1}.block", 0
        if b.exp != in_ch:
            plan += _conv_bn(f"{ours}.expand", f"{peer}.{j}.0", f"{peer}.{j}.1")
            j += 1
        plan += _conv_bn(f"{ours}.dw", f"{peer}.{j}.0", f"{peer}.{j}.1")
        j += 1
        if spec.se_channels(i):
            plan += _se(ours, f"{peer}.{j}.fc1", f"{peer}.{j}.fc2")
            j += 1
        plan += _conv_bn(f"{ours}.project", f"{peer}.{j}.0", f"{peer}.{j}.1")
    last = f"features.{len(spec.blocks) + 1}"
    plan += _conv_bn(last, f"{last}.0", f"{last}.1")
    plan += [_Pair("conv_head", "classifier.0", "linear_as_conv"), _Pair("classifier", "classifier.3", "linear")]
    return plan


# timm's stage grouping of the MobileNetV3 bottlenecks (index of each stage's first block), from its arch_def
_TIMM_STAGES = {15: (0, 1, 3, 6, 10, 12), 11: (0, 1, 3, 6, 8)}


def _timm_labels(spec: ArchSpec) -> tuple[list[str], str]:
    """timm's ``blocks.{stage}.{index}`` names for export.

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


def _timm_plan(spec: ArchSpec, labels: list[str], last_label: str) -> list[_Pair]:
    _check_representable(spec, "timm")
    plan = _conv_bn("features.0", "conv_stem", "bn1")
    for i, (b, in_ch, p) in enumerate(zip(spec.blocks, spec.block_inputs(), labels, strict=True)):
        ours = f"features.{i + 1}"
        if b.exp != in_ch:  # InvertedResidual
            plan += _conv_bn(f"{ours}.expand", f"{p}.conv_pw", f"{p}.bn1")
            plan += _conv_bn(f"{ours}.dw", f"{p}.conv_dw", f"{p}.bn2")
            project = (f"{p}.conv_pwl", f"{p}.bn3")
        else:  # DepthwiseSeparable
            plan += _conv_bn(f"{ours}.dw", f"{p}.conv_dw", f"{p}.bn1")
            project = (f"{p}.conv_pw", f"{p}.bn2")
        if spec.se_channels(i):
            plan += _se(ours, f"{p}.se.conv_reduce", f"{p}.se.conv_expand")
        plan += _conv_bn(f"{ours}.project", *project)
    plan += _conv_bn(f"features.{len(spec.blocks) + 1}", f"{last_label}.conv", f"{last_label}.bn1")
    plan += [_Pair("conv_head", "conv_head", "conv_bias"), _Pair("classifier", "classifier", "linear")]
    return plan


def _timm_plan_for_file(spec: ArchSpec, sd: Mapping[str, torch.Tensor]) -> list[_Pair]:
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
    return _timm_plan(spec, [p for p, _ in blocks], last)


# ---------------------------------------------------------------------------------------------------------
# loading and exporting


def _list(items: list[str], limit: int = 8) -> str:
    more = f"; ... and {len(items) - limit} more" if len(items) > limit else ""
    return "; ".join(items[:limit]) + more


def _load(model: MobileNetV3, sd: Mapping[str, torch.Tensor], plan: list[_Pair], library: str) -> None:
    ours = model.state_dict()
    planned = {f"{p.ours}.{name}" for p in plan for name, _ in _PARAMS[p.kind]}
    if planned != set(ours):  # the plan must cover the module exactly; anything else is a bug here
        raise RuntimeError(f"convert: key plan and module disagree: {sorted(planned ^ set(ours))[:5]}")
    new: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing, mismatched = [], []
    for pair in plan:
        for name, optional in _PARAMS[pair.kind]:
            ok, pk = f"{pair.ours}.{name}", f"{pair.peer}.{name}"
            target = ours[ok]
            if pk not in sd:
                if optional:
                    new[ok] = target
                else:
                    missing.append(f"{pk!r} (for {ok})")
                continue
            used.add(pk)
            t = sd[pk]
            if pair.kind == "linear_as_conv" and name == "weight" and t.dim() == 2:
                t = t[:, :, None, None]
            if tuple(t.shape) != tuple(target.shape):
                mismatched.append(f"{pk!r} is {list(sd[pk].shape)} in the file, {list(target.shape)} expected "
                                  f"(for {ok})")
            elif t.is_floating_point() != target.is_floating_point():
                mismatched.append(f"{pk!r} has dtype {t.dtype}, {target.dtype} expected (for {ok})")
            else:
                new[ok] = t
    unexpected = sorted(set(sd) - used)
    if missing or mismatched or unexpected:
        lines = [f"the {library} state dict does not fit {model.spec.name}:"]
        for label, items in (("missing key", missing), ("shape mismatch", mismatched),
                             ("unexpected key", [repr(k) for k in unexpected])):
            if items:
                plural = ("es" if label.endswith("h") else "s") if len(items) > 1 else ""
                lines.append(f"  {len(items)} {label}{plural}: {_list(items)}")
        raise ConversionError("\n".join(lines))
    model.load_state_dict(new, strict=True)


def _resolve_arch(arch: ArchLike, conv: PeerConvention, num_classes: int | None) -> ArchSpec:
    """An explicit architecture, given the peer's numerics (and the file's class count)."""
    if isinstance(arch, str):
        try:
            spec = zoo.get_spec(arch)
        except KeyError as e:
            raise ConversionError(str(e.args[0])) from None
    elif isinstance(arch, ArchSpec):
        spec = arch
    else:
        raise TypeError(f"arch must be an ArchSpec or a zoo model name, got {type(arch).__name__}")
    changes: dict = {"bn_eps": conv.bn_eps, "padding": conv.padding}
    if num_classes is not None:
        changes["num_classes"] = num_classes
    return spec.replace(**changes)


def _with_eps(conv: PeerConvention, bn_eps: float | None) -> PeerConvention:
    return conv if bn_eps is None else PeerConvention(conv.library, bn_eps, conv.padding)


def _require_layout(sd: Mapping[str, torch.Tensor], library: str) -> None:
    found = detect_layout(sd)
    if found != library:
        hint = {"torchvision": "use from_torchvision", "timm": "use from_timm",
                "mobilenetv3": "it is this library's own layout: build(spec).load_state_dict(...)"}[found]
        raise ConversionError(f"this is a {found} state dict, not a {library} one; {hint}")


def from_torchvision(source: Source, arch: ArchLike | None = None, *, bn_eps: float | None = None) -> MobileNetV3:
    """A :class:`MobileNetV3` (in eval mode) holding torchvision ``mobilenet_v3_large/small`` weights.

    ``arch`` (a spec or zoo name) overrides the architecture read from the shapes; its ``bn_eps`` and
    ``padding`` are set to torchvision's (``bn_eps`` here overrides the 1e-3), its class count to the file's.
    """
    sd = read_state_dict(source)
    _require_layout(sd, "torchvision")
    conv = _with_eps(TORCHVISION, bn_eps)
    if arch is None:
        spec = _spec_from_layout(_read_torchvision(sd), conv)
    else:
        cls = sd.get("classifier.3.weight")
        spec = _resolve_arch(arch, conv, cls.shape[0] if cls is not None and cls.dim() == 2 else None)
        n = 1
        while f"features.{n}.block.0.0.weight" in sd:
            n += 1
        if n - 1 != len(spec.blocks):
            raise ConversionError(f"the torchvision state dict has {n - 1} bottleneck blocks (features.1 to "
                                  f"features.{n - 1}), {spec.name} has {len(spec.blocks)}")
    model = MobileNetV3(spec)
    _load(model, sd, _torchvision_plan(spec), "torchvision")
    return model.eval()


def from_timm(source: Source, name: str, arch: ArchLike | None = None, *,
              bn_eps: float | None = None) -> MobileNetV3:
    """A :class:`MobileNetV3` (in eval mode) holding timm ``[tf_]mobilenetv3_*`` weights.

    ``name`` is the timm model name (``tf_mobilenetv3_large_100``, ``mobilenetv3_small_050.lamb_in1k``, ...):
    it decides the padding and BN eps, which shapes cannot. ``arch`` overrides the architecture as in
    :func:`from_torchvision`.
    """
    timm_name = parse_timm_name(name)
    sd = read_state_dict(source)
    _require_layout(sd, "timm")
    conv = _with_eps(timm_name.convention, bn_eps)
    if arch is None:
        spec = _spec_from_layout(_read_timm(sd), conv, timm_name)
    else:
        cls = sd.get("classifier.weight")
        spec = _resolve_arch(arch, conv, cls.shape[0] if cls is not None and cls.dim() == 2 else None)
    model = MobileNetV3(spec)
    _load(model, sd, _timm_plan_for_file(spec, sd), "timm")
    return model.eval()


def load_peer_weights(source: Source, library: str | None = None, name: str | None = None,
                      arch: ArchLike | None = None, *, bn_eps: float | None = None) -> MobileNetV3:
    """Convert a torchvision or timm state dict, telling which from its keys unless ``library`` is given.

    timm files also need ``name`` (see :func:`from_timm`).
    """
    sd = read_state_dict(source)
    library = library or detect_layout(sd)
    if library == "torchvision":
        return from_torchvision(sd, arch, bn_eps=bn_eps)
    if library == "timm":
        if name is None:
            raise ConversionError(_NEED_TIMM_NAME)
        return from_timm(sd, name, arch, bn_eps=bn_eps)
    if library == "mobilenetv3":
        raise ConversionError("this is this library's own state dict; build(spec).load_state_dict(...) loads it")
    raise ConversionError(f"unknown library {library!r} (torchvision or timm)")


def _export(model: MobileNetV3, plan: list[_Pair]) -> dict[str, torch.Tensor]:
    ours = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for pair in plan:
        for name, _ in _PARAMS[pair.kind]:
            t = ours[f"{pair.ours}.{name}"].detach().clone()
            if pair.kind == "linear_as_conv" and name == "weight":
                t = t.flatten(1)
            out[f"{pair.peer}.{name}"] = t
    return out


def to_torchvision(model: MobileNetV3) -> dict[str, torch.Tensor]:
    """The model's weights under torchvision's MobileNetV3 keys (the inverse of :func:`from_torchvision`).

    torchvision has no TensorFlow "SAME" padding, so ``padding="same"`` models are refused. torchvision builds
    its BN with eps 1e-3; a model with another ``bn_eps`` needs ``norm_layer=partial(nn.BatchNorm2d, eps=...)``
    on the torchvision side to give the same outputs.
    """
    if model.spec.padding != "symmetric":
        raise ConversionError(f"{model.spec.name} uses padding={model.spec.padding!r}; torchvision's MobileNetV3 "
                              "only pads symmetrically, so its outputs would differ")
    return _export(model, _torchvision_plan(model.spec))


def to_timm(model: MobileNetV3) -> dict[str, torch.Tensor]:
    """The model's weights under timm's MobileNetV3 keys (the inverse of :func:`from_timm`).

    The matching timm model has ``pad_type='same'`` (the tf_* models) when ``spec.padding == "same"``, and
    ``bn_eps=spec.bn_eps``.
    """
    labels, last = _timm_labels(model.spec)
    return _export(model, _timm_plan(model.spec, labels, last))
