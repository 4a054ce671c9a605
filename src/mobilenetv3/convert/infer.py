"""From the structure read off a peer state dict to our :class:`ArchSpec`.

Each peer module reads its file into a :class:`PeerLayout` (stem, bottlenecks, last conv, head, classes);
:func:`spec_from_layout` turns that into a spec. The number of bottlenecks says Large (15) or Small (11); 3x3
kernels without SE everywhere say "minimalistic"; channel widths are taken as they are. Strides, activations and
dilations, which shapes cannot show, come from the paper's table for that family (the zoo's template), and the
kernel and SE pattern must agree with it. When a zoo spec at one of the zoo's widths gives exactly these shapes
that spec (and its name) is returned; otherwise the shapes' own spec, with a note naming how it differs.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import zoo
from ..spec import ArchSpec, BlockSpec, SpecError
from .state_dict import ConversionError

__all__ = [
    "ArchLike", "PeerBlock", "PeerConvention", "PeerLayout", "layout_family", "is_minimal", "resolve_arch",
    "spec_diff", "spec_from_layout", "with_eps",
]

ArchLike = ArchSpec | str


@dataclass(frozen=True)
class PeerConvention:
    """The numerics a peer library builds its models with (what the spec must say to reproduce them)."""

    library: str
    bn_eps: float
    padding: str


def with_eps(conv: PeerConvention, bn_eps: float | None) -> PeerConvention:
    """``conv`` with its BN eps replaced by ``bn_eps`` (unchanged when None)."""
    return conv if bn_eps is None else PeerConvention(conv.library, bn_eps, conv.padding)


@dataclass(frozen=True)
class PeerBlock:
    """One bottleneck as read from the file."""

    label: str  # the peer's prefix for this block
    in_ch: int
    exp: int
    out: int
    kernel: int
    squeeze: int  # SE squeeze width, 0 without SE
    has_expand: bool


@dataclass(frozen=True)
class PeerLayout:
    """The structure read from a peer state dict (before any architecture is chosen)."""

    library: str
    stem: tuple[int, int, int]  # out, in, kernel
    blocks: tuple[PeerBlock, ...]
    last_label: str | None
    last: int
    head: int
    num_classes: int


_FAMILIES = {15: "large", 11: "small"}


def _builder(family: str):
    return zoo.mobilenet_v3_large if family == "large" else zoo.mobilenet_v3_small


def layout_family(layout: PeerLayout, source: str) -> str:
    """``"large"`` or ``"small"`` from the number of bottlenecks; ``source`` names the file in the error."""
    n = len(layout.blocks)
    family = _FAMILIES.get(n)
    if family is None:
        raise ConversionError(f"cannot infer the architecture of this {source} state dict: it has {n} bottleneck "
                              "blocks (MobileNetV3-Large has 15, Small 11); pass arch= with a spec that matches it")
    return family


def is_minimal(layout: PeerLayout) -> bool:
    """Whether every bottleneck has a 3x3 depthwise conv and no SE (the paper's "minimalistic" models)."""
    return all(b.kernel == 3 and not b.squeeze for b in layout.blocks)


def spec_from_layout(layout: PeerLayout, conv: PeerConvention, peer_name: str | None = None,
                     width_hint: float = 1.0) -> ArchSpec:
    """The spec a layout converts to, with the peer's numerics (see the module docstring).

    ``peer_name`` (a timm model name) goes into messages and the name of a spec that is not the zoo's;
    ``width_hint`` picks the zoo spec that such a spec's note is compared against.
    """
    source = f"{layout.library} {peer_name}" if peer_name else layout.library
    family = layout_family(layout, source)
    minimal = is_minimal(layout)
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
            name=f"{layout.library}_{peer_name if peer_name else 'mobilenet_v3_' + family}",
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
    nearest = width_hint if 0 < width_hint <= 4 else 1.0
    ref = _builder(family)(nearest, minimal=minimal, **common)
    notes = (f"Inferred from the shapes of a {source} state dict; no zoo spec matches it exactly (against the zoo's "
             f"{ref.name}: {spec_diff(spec, ref)}).")
    return spec.replace(notes=notes)


def spec_diff(a: ArchSpec, b: ArchSpec, limit: int = 4) -> str:
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


def resolve_arch(arch: ArchLike, conv: PeerConvention, num_classes: int | None) -> ArchSpec:
    """An explicit architecture (a spec or zoo name), given the peer's numerics (and the file's class count)."""
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
