"""Table 5's h-swish variants of MobileNetV3-Large: h-swish from the first layer of a given width on
(:func:`hswish_from`), and every h-swish computed op by op instead of fused (:func:`with_naive_hswish`)."""

from __future__ import annotations

import dataclasses

from ..spec import ArchSpec
from ..zoo import get_spec
from .paper import TABLE5, Table5Variant


def hswish_from(spec: ArchSpec, channels: int | None, *, stem: bool | None = None, act: str = "hswish",
                before: str = "relu") -> ArchSpec:
    """``spec`` with ``act`` from the first layer that has ``channels`` output channels to the end (Table 5's
    "h-swish @N") and ``before`` in every layer before it.

    The layers, in order: the stem, the bottlenecks (a bottleneck's width is its output width, Table 1's #out),
    the last conv and the head conv. ``channels=None``: ``before`` everywhere. ``stem`` overrides the stem's
    activation (``True``: ``act``, ``False``: ``before``); by default it has ``act`` only when it is itself that
    first layer. SE's inner activation and gate are left as they are.
    """
    if channels is None:
        first, stem_on = len(spec.blocks), False
        tail = before
    elif spec.stem_channels == channels:
        first, stem_on, tail = 0, True, act
    else:
        first = next((i for i, b in enumerate(spec.blocks) if b.out == channels), None)
        if first is None:
            widths = sorted({spec.stem_channels, *(b.out for b in spec.blocks)})
            raise ValueError(f"{spec.name} has no layer with {channels} output channels "
                             f"(its widths: {', '.join(map(str, widths))})")
        stem_on, tail = False, act
    if stem is not None:
        stem_on = stem
    blocks = tuple(dataclasses.replace(b, act=act if i >= first else before) for i, b in enumerate(spec.blocks))
    suffix = "relu" if channels is None else f"hswish{channels}"
    return spec.replace(name=f"{spec.name}_{suffix}", blocks=blocks, stem_act=act if stem_on else before,
                        last_act=tail, head_act=tail)


def with_naive_hswish(spec: ArchSpec) -> ArchSpec:
    """``spec`` with every h-swish computed op by op (``hswish_naive``: add, clamp, multiply, divide) instead of
    the fused operator: Table 5's "no-opt" column. SE's hard-sigmoid gate stays fused."""
    def swap(a: str) -> str:
        return "hswish_naive" if a == "hswish" else a

    if "hswish" not in (spec.stem_act, spec.last_act, spec.head_act, *(b.act for b in spec.blocks)):
        return spec  # nothing to swap (the ReLU variant)
    return spec.replace(name=f"{spec.name}_naive", blocks=tuple(dataclasses.replace(b, act=swap(b.act))
                                                                for b in spec.blocks),
                        stem_act=swap(spec.stem_act), last_act=swap(spec.last_act), head_act=swap(spec.head_act))


def table5_spec(variant: str, naive: bool = False) -> ArchSpec:
    """The spec of a Table 5 row (:data:`TABLE5`) on MobileNetV3-Large 1.0, with the naive h-swish if asked."""

    if variant not in TABLE5:
        raise ValueError(f"unknown Table 5 variant {variant!r} (choose from {', '.join(TABLE5)})")
    v = TABLE5[variant]
    large = get_spec("mobilenet_v3_large")
    spec = large if variant == "v3" else hswish_from(large, v.channels, stem=v.stem_hswish)
    return with_naive_hswish(spec) if naive else spec


__all__ = ["TABLE5", "Table5Variant", "hswish_from", "table5_spec", "with_naive_hswish"]
