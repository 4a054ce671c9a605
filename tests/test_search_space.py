"""The search space (issue 14): samples are valid specs that build and cost as any spec, the enumeration of
reachable blocks is exact, the distinct-spec count matches brute force, the sampler is deterministic."""

import math
import random
import time

import pytest
import torch

from mobilenetv3 import build, count_madds, count_params, spec_cost
from mobilenetv3.search.space import (
    SPACES,
    SearchSpace,
    StageChoice,
    StageChoices,
    get_space,
    seed_stages,
    space_from_seed,
)
from mobilenetv3.spec import ArchSpec, BlockSpec
from mobilenetv3.zoo import get_spec

PRESETS = ("mobilenet_v3_small", "mobilenet_v3_large")


def blocks_with_inputs(spec: ArchSpec, resolution: int) -> list[tuple[int, int, BlockSpec]]:
    """(input side, input channels, block) of every block, computed from the spec alone."""
    side = math.ceil(resolution / spec.stem_stride)
    out = []
    for block, c_in in zip(spec.blocks, spec.block_inputs(), strict=True):
        out.append((side, c_in, block))
        side = math.ceil(side / block.stride)
    return out


def test_presets_listed_and_stages_follow_mnasnet():
    assert set(SPACES) == set(PRESETS)
    # a new stage at every stride-2 block and at every width change (Tables 1 and 2)
    assert get_space("mobilenet_v3_small").stages == ((0,), (1, 2), (3, 4, 5), (6, 7), (8, 9, 10))
    assert get_space("mobilenet_v3_large").stages == ((0,), (1, 2), (3, 4, 5), (6, 7, 8, 9), (10, 11), (12, 13, 14))
    # MnasNet-A1's seven blocks of its Figure 7
    assert len(seed_stages(get_spec("mnasnet_a1"))) == 7


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown search space 'mobilenet_v3_tiny'.*mobilenet_v3_small.*large"):
        get_space("mobilenet_v3_tiny")


@pytest.mark.parametrize("name", PRESETS)
def test_samples_keep_the_seed_outside_the_blocks(name):
    space = get_space(name)
    rng = random.Random(3)
    for _ in range(50):
        choice = space.sample_choice(rng)
        spec = space.decode(choice)
        assert spec.replace(blocks=space.seed.blocks, name=space.seed.name, notes=space.seed.notes) == space.seed
        # the stage layout: depth relative to the seed, the stage's stride on its first layer only
        i = 0
        for s, c in enumerate(choice):
            depth = max(1, len(space.stages[s]) + c.depth_delta)
            stage = spec.blocks[i:i + depth]
            assert [b.stride for b in stage[1:]] == [1] * (depth - 1)
            assert stage[0].stride == space.seed.blocks[space.stages[s][0]].stride
            assert {(b.kernel, b.se, b.act) for b in stage} == {(c.kernel, c.se, c.act)}
            i += depth
        assert i == len(spec.blocks)


@pytest.mark.parametrize("name, seed", [("mobilenet_v3_small", 0), ("mobilenet_v3_small", 1),
                                        ("mobilenet_v3_large", 2)])
def test_samples_build_and_cost_as_counted_by_hooks(name, seed):
    spec = get_space(name).sample(random.Random(seed))
    model = build(spec)
    cost = spec_cost(spec, 128)
    assert count_params(model) == cost.params
    assert count_madds(model, (1, 3, 128, 128)) == cost.madds
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 128, 128)).shape == (1, spec.num_classes)


def test_expansion_applies_to_each_layers_own_input_width():
    space = get_space("mobilenet_v3_large")
    choice = [StageChoice(0, 3, 1, False, "relu", 1.0)] * len(space.stages)
    choice[3] = StageChoice(1, 7, 6, True, "hswish", 1.25)  # the 80-channel stage, widened to 104, 5 layers
    spec = space.decode(choice)
    stage = spec.blocks[6:11]
    assert [b.out for b in stage] == [104] * 5
    assert stage[0].exp == 6 * 40 and [b.exp for b in stage[1:]] == [6 * 104] * 4
    assert spec.blocks[11].exp == 104  # ratio 1 after it: no expansion conv (exp == input width)


@pytest.mark.parametrize("name", PRESETS)
def test_seed_stages_that_are_expressible_decode_to_the_seed(name):
    space = get_space(name)
    # V3's per-layer expansions are no single ratio in some stages (Large: 240, 200, 184, 184 on 80 channels;
    # Small: 72 then 88 on 24), so the seed as a whole is not a point of its space
    assert space.seed_choice() is None
    expressible = {s: space.seed_stage_choice(s) for s in range(len(space.stages))}
    expressible = {s: c for s, c in expressible.items() if c is not None}
    assert sorted(expressible) == ([0, 3, 4] if name.endswith("small") else [0, 2, 4, 5])
    default = StageChoice(0, 3, 4, False, "relu", 1.0)
    spec = space.decode([expressible.get(s, default) for s in range(len(space.stages))])
    for s in expressible:
        assert [spec.blocks[i] for i in space.stages[s]] == [space.seed.blocks[i] for i in space.stages[s]]


def test_a_uniform_seed_is_a_point_of_its_space():
    seed = get_spec("mnasnet_a1")
    space = space_from_seed("mnasnet_a1", seed)
    assert space.decode(space.seed_choice()).blocks == seed.blocks


@pytest.mark.parametrize("name", PRESETS)
def test_reachable_blocks_are_exactly_what_decodable_choices_contain(name):
    space = get_space(name)
    started = time.perf_counter()
    reachable = space.reachable_blocks(224)
    last_inputs = space.reachable_last_inputs(224)
    assert time.perf_counter() - started < 1.0
    assert len(reachable) == len(set(reachable))
    # every block of every decodable choice that puts each stage choice after each width of the stage before
    contained, last = set(), set()
    plain = StageChoice(0, 3, 1, False, "relu", 1.0)
    for s in range(len(space.stages)):
        for c in space.choices.all():
            if c.depth_delta != max(space.choices.depth_deltas):
                continue
            for prev in space.choices.width_mults if s else (1.0,):
                choice = [plain] * len(space.stages)
                if s:
                    choice[s - 1] = plain._replace(width_mult=prev)
                choice[s] = c
                spec = space.decode(choice)
                contained.update(blocks_with_inputs(spec, 224))
                last.add((math.ceil(224 / 32), spec.blocks[-1].out))
    assert contained == set(reachable)
    assert last == set(last_inputs)
    # and random samples never contain anything else
    rng = random.Random(11)
    for _ in range(2000):
        spec = space.sample(rng)
        assert set(blocks_with_inputs(spec, 224)) <= contained
        assert (7, spec.blocks[-1].out) in last


def test_reachable_blocks_at_the_proxy_resolution_differ_only_in_side():
    space = get_space("mobilenet_v3_small")
    at_224 = space.reachable_blocks(224)
    at_80 = space.reachable_blocks(80)
    assert [(c, b) for _, c, b in at_224] == [(c, b) for _, c, b in at_80]
    assert {hw for hw, _, _ in at_80} == {40, 20, 10, 5, 3}
    assert space.reachable_last_inputs(80) == [(3, 72), (3, 96), (3, 120)]


def test_sampler_is_deterministic_and_uniform_enough():
    space = get_space("mobilenet_v3_small")
    first = [space.sample(random.Random(42)) for _ in range(2)]
    assert first[0] == first[1]
    assert space.sample(random.Random(43)) != first[0]
    rng = random.Random(0)
    kernels = [c.kernel for _ in range(600) for c in space.sample_choice(rng)]
    for k in (3, 5, 7):
        assert abs(kernels.count(k) / len(kernels) - 1 / 3) < 0.05


def test_distinct_spec_count_matches_brute_force():
    # three stages whose widths overlap (24 | 24, 32, 40 | 32, 40, 48) with stride-1 starts: layers can move
    # between stages, and 0.75 x 24 rounds back to 24, so many choices give one spec
    seed = get_spec("mobilenet_v3_small").replace(blocks=(
        BlockSpec(3, 48, 24, stride=2), BlockSpec(3, 96, 32), BlockSpec(3, 96, 32), BlockSpec(3, 128, 40)))
    choices = StageChoices(kernels=(3,), expansions=(1, 3), se=(False,), acts=("relu",))
    space = space_from_seed("tiny", seed, choices)
    assert space.stages == ((0,), (1, 2), (3,))
    every = [space.decode(c).blocks for c in _all_choices(space)]
    assert space.num_choices() == len(every) == 18 ** 3
    assert space.size() == len(set(every)) < len(every)
    presets = [get_space(n) for n in PRESETS]
    assert all(0 < p.size() < p.num_choices() for p in presets)


def _all_choices(space: SearchSpace):
    options = space.choices.all()
    for a in options:
        for b in options:
            for c in options:
                yield (a, b, c)


def test_bad_choices_and_spaces_are_clear_errors():
    space = get_space("mobilenet_v3_small")
    plain = StageChoice(0, 3, 4, False, "relu", 1.0)
    with pytest.raises(ValueError, match="has 5 stages, the choice gives 4"):
        space.decode([plain] * 4)
    with pytest.raises(ValueError, match="stage 2: kernel 9 is not a choice"):
        space.decode([plain, plain._replace(kernel=9)] + [plain] * 3)
    with pytest.raises(ValueError, match="kernels must be odd"):
        StageChoices(kernels=(3, 4))
    with pytest.raises(ValueError, match="unknown activation"):
        StageChoices(acts=("gelu",))
    with pytest.raises(ValueError, match="stages must split"):
        SearchSpace("bad", space.seed, ((0, 1),), StageChoices())
