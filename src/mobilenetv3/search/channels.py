"""The channel widths of a spec that can change on their own, and which must change together.

NetAdapt (section 4.2) shrinks two kinds of width:

- an **expansion**: the 1x1 expansion of one bottleneck (``BlockSpec.exp`` where the block has one, i.e. ``exp``
  differs from its input width), and the 1x1 conv of the efficient last stage (``last_channels``), which the paper
  moved past the pooling-free part of the network as the last stage's expansion (its Figure 5);
- a **residual group**: the output width of every layer whose outputs are added together by identity shortcuts.
  A group starts at the stem or at a bottleneck without a shortcut (stride 2 or a change of width) and takes in
  every following bottleneck with a shortcut (stride 1, input width = output width). Its members' outputs must
  stay equal for the adds to remain valid; the layers reading the group follow.

A change must keep the network's structure: no shortcut may appear or disappear (a group may not become as wide as
a neighbouring group it touches through a stride-1 block), and no 1x1 expansion may appear or vanish (a block with
an expansion keeps ``exp`` different from its input width; a block without one, whose depthwise conv runs on its
input, follows its input's width). :func:`with_group_width` and :func:`with_expansion` refuse edits that would
change the structure, so every width they return keeps the weights of the untouched layers meaningful.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..spec import ArchSpec, SpecError

STEM = -1  # a group member index meaning the stem's conv
LAST = "last"  # the expansion site of the last stage (``last_channels``)


@dataclass(frozen=True)
class Group:
    """Layers whose outputs are summed by identity shortcuts: ``members`` are block indices (:data:`STEM` for the
    stem), the first one a layer without a shortcut; ``readers`` the blocks that take the group's output as input
    (the members after the first, and the block after the group, if any)."""

    members: tuple[int, ...]
    width: int

    @property
    def name(self) -> str:
        first, last = self.members[0], self.members[-1]
        head = "stem" if first == STEM else f"block{first + 1}"
        if len(self.members) == 1:
            return f"group:{head}"
        return f"group:{head}-block{last + 1}"


def has_expansion(spec: ArchSpec, index: int) -> bool:
    """Whether block ``index`` has a 1x1 expansion conv (its ``exp`` differs from its input width)."""
    return spec.blocks[index].exp != spec.block_inputs()[index]


def has_shortcut(spec: ArchSpec, index: int) -> bool:
    """Whether block ``index`` adds its input to its output (stride 1, input width = output width)."""
    block = spec.blocks[index]
    return block.stride == 1 and spec.block_inputs()[index] == block.out


def residual_groups(spec: ArchSpec) -> list[Group]:
    """Every group of ``spec``, in network order; each block and the stem belong to exactly one."""
    groups: list[list[int]] = [[STEM]]
    for i in range(len(spec.blocks)):
        if has_shortcut(spec, i):
            groups[-1].append(i)
        else:
            groups.append([i])
    widths = [spec.stem_channels if g[0] == STEM else spec.blocks[g[0]].out for g in groups]
    return [Group(tuple(g), w) for g, w in zip(groups, widths, strict=True)]


def expansion_sites(spec: ArchSpec) -> list[int | str]:
    """The expansions NetAdapt may shrink: each block with a 1x1 expansion (by index) and :data:`LAST` when the
    spec has a last-stage conv."""
    sites: list[int | str] = [i for i in range(len(spec.blocks)) if has_expansion(spec, i)]
    if spec.last_channels:
        sites.append(LAST)
    return sites


def expansion_width(spec: ArchSpec, site: int | str) -> int:
    return spec.last_channels if site == LAST else spec.blocks[site].exp  # type: ignore[index]


def site_name(site: int | str) -> str:
    return "expand:last" if site == LAST else f"expand:block{int(site) + 1}"


def _structure(spec: ArchSpec) -> tuple:
    return tuple((has_expansion(spec, i), has_shortcut(spec, i)) for i in range(len(spec.blocks)))


def with_expansion(spec: ArchSpec, site: int | str, width: int) -> ArchSpec:
    """``spec`` with the expansion ``site`` (a block index or :data:`LAST`) set to ``width`` channels; a
    :class:`SpecError` when the block has no expansion or ``width`` would remove it (equal to the input width)."""
    if width < 1:
        raise SpecError(f"{site_name(site)}: width must be positive, got {width}")
    if site == LAST:
        if not spec.last_channels:
            raise SpecError("the spec has no last-stage conv to resize")
        return spec.replace(last_channels=width)
    index = int(site)
    if not has_expansion(spec, index):
        raise SpecError(f"block {index + 1} has no 1x1 expansion (its exp equals its input width)")
    if width == spec.block_inputs()[index]:
        raise SpecError(f"block {index + 1}: an expansion of {width} equals the input width and would vanish")
    blocks = list(spec.blocks)
    blocks[index] = dataclasses.replace(blocks[index], exp=width)
    return spec.replace(blocks=tuple(blocks))


def with_group_width(spec: ArchSpec, group: Group, width: int) -> ArchSpec:
    """``spec`` with every member of ``group`` producing ``width`` channels and the blocks without an expansion
    that read it following; a :class:`SpecError` when that would add or remove a shortcut or an expansion."""
    if width < 1:
        raise SpecError(f"{group.name}: width must be positive, got {width}")
    blocks = list(spec.blocks)
    members = set(group.members)
    readers = list(group.members[1:]) + ([group.members[-1] + 1] if group.members[-1] + 1 < len(blocks) else [])
    for i in readers:
        if not has_expansion(spec, i):  # the depthwise conv runs on the input: it follows
            blocks[i] = dataclasses.replace(blocks[i], exp=width)
    for i in members - {STEM}:
        blocks[i] = dataclasses.replace(blocks[i], out=width)
    changes = {"blocks": tuple(blocks)}
    if STEM in members:
        changes["stem_channels"] = width
    new = spec.replace(**changes)
    if _structure(new) != _structure(spec):
        raise SpecError(f"{group.name}: a width of {width} would add or remove a shortcut or an expansion")
    return new


__all__ = ["LAST", "STEM", "Group", "expansion_sites", "expansion_width", "has_expansion", "has_shortcut",
           "residual_groups", "site_name", "with_expansion", "with_group_width"]
