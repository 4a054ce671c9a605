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

:func:`confirm_by_measurement` then holds the model to the machine: the proposals are timed end to end beside the
current network, and one whose measured cut falls short walks further down its site, so every proposal NetAdapt
fine-tunes cuts delta as measured, not only as predicted.
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
    """One site's new width; ``measured_ms`` and ``base_ms`` (the current network, timed in the same interleaved
    batch) when :func:`confirm_by_measurement` checked the cut end to end."""

    site: str
    old_width: int
    width: int
    spec: ArchSpec
    predicted_ms: float
    measured_ms: float | None = None
    base_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"site": self.site, "old_width": self.old_width, "width": self.width,
               "predicted_ms": self.predicted_ms}
        if self.measured_ms is not None:
            out.update(measured_ms=self.measured_ms, base_ms=self.base_ms)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], spec: ArchSpec) -> Proposal:
        return cls(d["site"], d["old_width"], d["width"], site_edit(spec, d["site"], d["width"]),
                   d["predicted_ms"], d.get("measured_ms"), d.get("base_ms"))


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


def walk_on(site: Site, proposal: Proposal, cut_ms: float, need_ms: float, *, divisor: int = 8,
            min_width: int = 8) -> tuple[int, ArchSpec] | None:
    """The next width to try for a proposal whose measured cut ``cut_ms`` fell short of ``need_ms``: the channels
    removed so far scaled by the shortfall (latency taken as linear in the channels removed, 20% margin for the
    noise; at least one ``divisor`` step more, at most 3x the channels removed so far), down to the first valid
    width; None when no valid width is left."""
    removed = proposal.old_width - proposal.width
    factor = 3.0 if cut_ms <= 0 else min(max(1.2 * need_ms / cut_ms, 1.0), 3.0)
    target = proposal.old_width - factor * removed
    for width in widths_below(proposal.width, divisor, min_width):
        if width > target:
            continue
        try:
            return width, site.edit(width)
        except SpecError:
            continue
    return None


def confirm_by_measurement(spec: ArchSpec, proposals: list[Proposal], seed: ArchSpec,
                           measure: Callable[[list[ArchSpec]], list[float]], latency: Callable[[ArchSpec], float],
                           delta_ratio: float, *, rounds: int = 3, divisor: int = 8, min_width: int = 8,
                           log: Callable[[str], None] | None = None) -> tuple[list[Proposal], list[dict[str, Any]]]:
    """Keep the proposals whose cut, measured end to end, is at least ``delta_ratio`` x the seed's latency.

    The latency model only picks the first width to try: each batch times the seed, the current network and the
    pending proposals interleaved (``measure``, so machine drift cancels in the differences). A proposal that falls
    short walks further down its site by the measured slope (:func:`walk_on`) and is timed again in the next
    batch; after ``rounds`` batches a site still short proposes nothing this step. (Isolated block timings make
    a poor slope: on a 2-core VM at 80 px the table's cuts were 2-11x the measured ones.) ``latency`` gives each
    proposal's predicted figure for the journal. Returns the kept proposals in site order (with ``measured_ms``
    and ``base_ms`` of their batch) and one record per batch."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    by_name = {s.name: s for s in sites(spec)}
    order = list(by_name)
    pending, kept, batches = list(proposals), [], []
    for r in range(rounds):
        if not pending:
            break
        if log is not None:
            log(f"  timing {len(pending)} proposal(s) end to end beside the seed and the current network "
                f"(batch {r + 1} of at most {rounds})")
        times = measure([seed, spec] + [p.spec for p in pending])
        if len(times) != len(pending) + 2:
            raise ValueError(f"the measurement returned {len(times)} latencies for {len(pending) + 2} networks")
        seed_ms, base_ms, need = times[0], times[1], delta_ratio * times[0]
        batches.append({"batch": r + 1, "seed_ms": seed_ms, "base_ms": base_ms, "need_ms": need,
                        "proposals": [{"site": p.site, "width": p.width, "predicted_ms": p.predicted_ms,
                                       "measured_ms": m} for p, m in zip(pending, times[2:], strict=True)]})
        retry = []
        for p, m in zip(pending, times[2:], strict=True):
            cut = base_ms - m
            if cut >= need:
                kept.append(Proposal(p.site, p.old_width, p.width, p.spec, p.predicted_ms, m, base_ms))
            elif r + 1 < rounds:
                step = walk_on(by_name[p.site], p, cut, need, divisor=divisor, min_width=min_width)
                if step is not None:
                    retry.append(Proposal(p.site, p.old_width, step[0], step[1], latency(step[1])))
        pending = retry
    kept.sort(key=lambda p: order.index(p.site))
    return kept, batches


__all__ = ["Proposal", "Site", "confirm_by_measurement", "make_proposals", "site_edit", "sites", "walk_on",
           "widths_below"]
