"""NetAdapt's proposals: for every width that can shrink, the largest smaller width that cuts latency enough.

Section 4.2 of the paper: each step of NetAdapt generates proposals, "each proposal representing a modification of
an architecture that generates at least delta reduction in latency compared to the previous step", of two kinds:
(a) reduce the size of an expansion layer, (b) reduce the bottleneck in all blocks that share the same bottleneck
size, to keep the residual connections. :mod:`.channels` says which widths those are and how an edit keeps the
structure; here each one is walked down in multiples of ``divisor`` (8, as every width of the zoo) until the
latency model predicts a cut of at least ``delta_ms``: the first such width is the site's proposal (the original
NetAdapt's choice: the smallest change that meets the budget). A site that cannot reach the cut, or would have to
go below ``min_width``, proposes nothing. Widths that would add or remove a shortcut or an expansion are stepped
over (:class:`~mobilenetv3.spec.SpecError` from the edit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..spec import ArchSpec, SpecError
from .channels import (
    expansion_sites,
    expansion_width,
    residual_groups,
    site_name,
    with_expansion,
    with_group_width,
)


@dataclass(frozen=True)
class Site:
    """One width NetAdapt may shrink: its name (``expand:block3``, ``expand:last``, ``group:block4-block6``), its
    current width and the edit that sets it."""

    name: str
    width: int
    edit: Callable[[int], ArchSpec]


def sites(spec: ArchSpec) -> list[Site]:
    """Every site of ``spec``, in network order: the expansions (kind a), then the residual groups (kind b)."""
    out = [Site(site_name(s), expansion_width(spec, s), lambda w, s=s: with_expansion(spec, s, w))
           for s in expansion_sites(spec)]
    out += [Site(g.name, g.width, lambda w, g=g: with_group_width(spec, g, w)) for g in residual_groups(spec)]
    return out


def site_edit(spec: ArchSpec, name: str, width: int) -> ArchSpec:
    """``spec`` with site ``name`` set to ``width`` (replays a journalled proposal); a ValueError for an unknown
    site."""
    for site in sites(spec):
        if site.name == name:
            return site.edit(width)
    raise ValueError(f"{spec.name} has no width {name!r} (its sites: {', '.join(s.name for s in sites(spec))})")


@dataclass(frozen=True)
class Proposal:
    site: str
    old_width: int
    width: int
    spec: ArchSpec
    predicted_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {"site": self.site, "old_width": self.old_width, "width": self.width,
                "predicted_ms": self.predicted_ms}


def widths_below(width: int, divisor: int, min_width: int) -> list[int]:
    """The multiples of ``divisor`` below ``width`` down to ``min_width``, largest first."""
    top = (width - 1) // divisor * divisor
    return list(range(top, min_width - 1, -divisor))


def make_proposals(spec: ArchSpec, latency: Callable[[ArchSpec], float], delta_ms: float, *,
                   current_ms: float | None = None, divisor: int = 8, min_width: int = 8,
                   on_site: Callable[[str], None] | None = None) -> list[Proposal]:
    """One proposal per site of ``spec`` that can cut the predicted latency by ``delta_ms`` (``latency(spec)``
    predicts in ms; ``current_ms`` defaults to ``latency(spec)``), in site order."""
    if delta_ms <= 0:
        raise ValueError(f"delta must be a positive number of ms, got {delta_ms}")
    current = latency(spec) if current_ms is None else current_ms
    proposals = []
    for site in sites(spec):
        if on_site is not None:
            on_site(site.name)
        for width in widths_below(site.width, divisor, min_width):
            try:
                candidate = site.edit(width)
            except SpecError:
                continue
            predicted = latency(candidate)
            if current - predicted >= delta_ms:
                proposals.append(Proposal(site.name, site.width, width, candidate, predicted))
                break
    return proposals


__all__ = ["Proposal", "Site", "make_proposals", "site_edit", "sites", "widths_below"]
