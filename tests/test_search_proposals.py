"""NetAdapt's widths and proposals: residual groups and expansions of the zoo's specs listed by hand from Tables 1
and 2, edits that keep the structure, and proposals that are valid specs cutting the predicted latency by delta."""

import pytest

from mobilenetv3.cost import spec_cost
from mobilenetv3.model import build
from mobilenetv3.search.channels import (
    LAST,
    STEM,
    expansion_sites,
    has_expansion,
    has_shortcut,
    residual_groups,
    with_expansion,
    with_group_width,
)
from mobilenetv3.search.proposals import (
    Proposal,
    confirm_by_measurement,
    make_proposals,
    site_edit,
    sites,
    walk_on,
    widths_below,
)
from mobilenetv3.spec import SpecError
from mobilenetv3.zoo import get_spec


def madds_ms(spec):
    """A stand-in latency: 1 ms per 10 M multiply-adds plus 0.05 ms of overhead."""
    return spec_cost(spec).madds / 1e7 + 0.05


def test_groups_of_v3_small_follow_table_2():
    # Table 2: bneck outputs 16 (s2), 24 (s2), 24, 40 (s2), 40, 40, 48, 48, 96 (s2), 96, 96; the stem is 16 (s2),
    # so the first bneck (16 -> 16, stride 2) has no shortcut and starts its own group.
    spec = get_spec("mobilenet_v3_small")
    groups = residual_groups(spec)
    assert [g.members for g in groups] == [(STEM,), (0,), (1, 2), (3, 4, 5), (6, 7), (8, 9, 10)]
    assert [g.width for g in groups] == [16, 16, 24, 40, 48, 96]
    # bneck 1 (exp 16 = its input) has no 1x1 expansion; every other one has
    assert expansion_sites(spec) == list(range(1, 11)) + [LAST]


def test_groups_of_v3_large_follow_table_1():
    # Table 1: stem 16, then bneck 16 -> 16 stride 1: a shortcut onto the stem's output
    spec = get_spec("mobilenet_v3_large")
    groups = residual_groups(spec)
    assert [g.members for g in groups] == [(STEM, 0), (1, 2), (3, 4, 5), (6, 7, 8, 9), (10, 11), (12, 13, 14)]
    assert [g.width for g in groups] == [16, 24, 40, 80, 112, 160]


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "mobilenet_v3_large"])
def test_every_group_edit_keeps_members_equal_and_structure(name):
    spec = get_spec(name)
    structure = [(has_expansion(spec, i), has_shortcut(spec, i)) for i in range(len(spec.blocks))]
    for group in residual_groups(spec):
        for width in widths_below(group.width, 8, 8):
            try:
                new = with_group_width(spec, group, width)
            except SpecError:
                continue
            outs = {new.stem_channels if m == STEM else new.blocks[m].out for m in group.members}
            assert outs == {width}
            assert [(has_expansion(new, i), has_shortcut(new, i)) for i in range(len(new.blocks))] == structure
            build(new)  # the adds still line up


def test_edits_that_would_change_the_structure_are_refused():
    small = get_spec("mobilenet_v3_small")
    g48 = residual_groups(small)[4]  # bnecks 7-8 (48), entered from 40 at stride 1: 40 would add a shortcut
    with pytest.raises(SpecError, match="shortcut"):
        with_group_width(small, g48, 40)
    with pytest.raises(SpecError, match="vanish"):  # bneck 2: input 16, expansion 72 -> 16 removes the 1x1 conv
        with_expansion(small, 1, 16)
    with pytest.raises(SpecError, match="no 1x1 expansion"):
        with_expansion(small, 0, 8)


def test_a_group_edit_carries_blocks_without_expansion():
    large = get_spec("mobilenet_v3_large")
    new = with_group_width(large, residual_groups(large)[0], 8)  # the stem and bneck 1 (exp = its input)
    assert new.stem_channels == 8 and new.blocks[0].exp == 8 and new.blocks[0].out == 8
    assert new.blocks[1].exp == large.blocks[1].exp  # bneck 2 has an expansion: it only reads 8 channels now


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "mobilenet_v3_large"])
def test_proposals_are_valid_and_cut_at_least_delta(name):
    spec = get_spec(name).replace(resolution=96)
    base = madds_ms(spec)
    delta = 0.01 * base
    proposals = make_proposals(spec, madds_ms, delta)
    assert {p.site for p in proposals} <= {s.name for s in sites(spec)}
    assert len(proposals) >= len(sites(spec)) - 2  # the stem groups of width 16 may have no 8-channel step left
    for p in proposals:
        assert p.width % 8 == 0 and p.width < p.old_width
        assert base - p.predicted_ms >= delta
        assert p.predicted_ms == pytest.approx(madds_ms(p.spec))
        assert site_edit(spec, p.site, p.width) == p.spec  # the journal replays it
        if p.width + 8 < p.old_width:  # the largest width meeting delta: one step less does not
            try:
                wider = site_edit(spec, p.site, p.width + 8)
            except SpecError:
                continue
            assert base - madds_ms(wider) < delta
        for group in residual_groups(p.spec):
            assert len({p.spec.stem_channels if m == STEM else p.spec.blocks[m].out for m in group.members}) == 1


def test_no_proposal_when_delta_is_out_of_reach():
    spec = get_spec("mobilenet_v3_small").replace(resolution=64)
    assert make_proposals(spec, madds_ms, delta_ms=10 * madds_ms(spec)) == []
    with pytest.raises(ValueError, match="positive"):
        make_proposals(spec, madds_ms, delta_ms=0)
    with pytest.raises(ValueError, match="no width"):
        site_edit(spec, "expand:block99", 8)


def width_at(spec, name):
    return next(s.width for s in sites(spec) if s.name == name)


def test_measurement_confirms_walks_on_and_drops():
    """The table says every proposal cuts delta; the 'machine' disagrees: expansions of block 3 cost half of what
    the table says (so that proposal must walk further down), the last stage's expansion costs nothing (dropped
    after the batches), the rest as predicted (kept at once)."""
    seed = get_spec("mobilenet_v3_small")
    spec = seed
    base = madds_ms(spec)

    def undone(s, name):  # s with site ``name`` back at the seed's width
        return site_edit(s, name, width_at(spec, name))

    def real_ms(s):
        ms = madds_ms(s)
        if width_at(s, "expand:block3") != width_at(spec, "expand:block3"):
            ms += (madds_ms(undone(s, "expand:block3")) - ms) * 0.5
        if width_at(s, "expand:last") != width_at(spec, "expand:last"):
            ms = madds_ms(undone(s, "expand:last"))
        return ms

    batches_seen = []

    def measure(specs):
        batches_seen.append(len(specs))
        return [real_ms(s) for s in specs]

    delta = 0.02
    proposals = make_proposals(spec, madds_ms, delta * base)
    names = [p.site for p in proposals]
    assert "expand:block3" in names and "expand:last" in names
    kept, batches = confirm_by_measurement(spec, proposals, seed, measure, madds_ms, delta, rounds=3)
    kept_names = [p.site for p in kept]
    assert "expand:last" not in kept_names  # never measured a cut: dropped
    assert kept_names == [n for n in names if n != "expand:last"]  # site order kept
    first = {p.site: p for p in proposals}
    for p in kept:
        assert p.base_ms - p.measured_ms >= delta * real_ms(seed) - 1e-12  # every kept cut is measured >= delta
        assert p.spec == site_edit(spec, p.site, p.width)
        if p.site == "expand:block3":  # walked below the table's choice
            assert p.width < first[p.site].width
        else:
            assert p.width == first[p.site].width
    # the first batch times seed + current + all proposals; later ones only those walking on
    assert batches_seen[0] == len(proposals) + 2 and len(batches) == len(batches_seen) <= 3
    assert all(n < batches_seen[0] for n in batches_seen[1:])
    assert batches[0]["need_ms"] == pytest.approx(delta * real_ms(seed))
    # the measured figures survive the journal's dict round trip
    again = [type(p).from_dict(p.to_dict(), spec) for p in kept]
    assert again == kept


def test_measurement_with_one_batch_keeps_only_confirmed():
    spec = get_spec("mobilenet_v3_small")
    proposals = make_proposals(spec, madds_ms, 0.02 * madds_ms(spec))
    kept, batches = confirm_by_measurement(spec, proposals, spec, lambda specs: [1.0 for _ in specs], madds_ms,
                                           0.02, rounds=1)
    assert kept == [] and len(batches) == 1  # a machine where nothing gets faster confirms nothing
    with pytest.raises(ValueError, match="rounds"):
        confirm_by_measurement(spec, proposals, spec, lambda specs: [], madds_ms, 0.02, rounds=0)


def test_walk_on_scales_the_channels_removed_by_the_shortfall():
    spec = get_spec("mobilenet_v3_small")
    site = next(s for s in sites(spec) if s.name == "expand:block2")  # Table 2's second bneck: exp 72
    assert site.width == 72
    first = Proposal(site.name, 72, 64, site.edit(64), 0.0)
    # half the cut needed: 2.4 x the 8 channels removed (20% margin) -> 72 - 19.2 -> the next multiple of 8: 48
    assert walk_on(site, first, 0.5, 1.0)[0] == 48
    # no cut at all (or a slower network): 3 x -> 48; nearly enough: at least one more step -> 56
    assert walk_on(site, first, 0.0, 1.0)[0] == walk_on(site, first, -0.2, 1.0)[0] == 48
    assert walk_on(site, first, 0.95, 1.0)[0] == 56
    assert walk_on(site, first, 0.5, 1.0)[1] == site_edit(spec, site.name, 48)
    # nothing below the smallest width
    last = Proposal(site.name, 72, 8, site.edit(8), 0.0)
    assert walk_on(site, last, 0.1, 1.0) is None
