"""The search space: MnasNet's factorised hierarchical space as choices over an :class:`ArchSpec`.

What it is. Section 4.1 of the paper searches the global structure "with the same RNN-based controller and the
same factorized hierarchical search space" as MnasNet (Tan et al. 2019, section 4.1): the network is cut into
stages (MnasNet's "blocks"), and each stage makes one choice that all its layers share, so different stages may
differ while the search stays small. Here a seed network (V3-Small or V3-Large from the zoo) is cut into stages
the way MnasNet's blocks are: a new stage starts at a stride-2 bottleneck or where the output width changes. Per
stage, one choice of

- depth: the seed stage's number of layers + {-1, 0, +1} (never below 1); the first layer takes the stage's
  stride, the others stride 1 (MnasNet's "number of layers per block" relative to the base network);
- kernel {3, 5, 7} of the depthwise convolution;
- expansion ratio {1, 3, 4, 6}, applied to each layer's own input width, ``exp = make_divisible(ratio x input)``;
  ratio 1 leaves out the 1x1 expansion (the builder does when ``exp`` equals the input width), as MobileNetV2's
  first bottleneck;
- squeeze-and-excite or not (at the spec's ``se_ratio`` of the expansion, section 5.3);
- activation ReLU or h-swish (section 5.2);
- output width 0.75 / 1.0 / 1.25 x the seed stage's width, rounded as the zoo rounds (``make_divisible(.., 8)``);
  MnasNet's "filter size relative to the base".

Everything else (stem, last stage, classifier, resolution, BN and padding conventions) is the seed's, so every
sample builds with ``model.build`` and costs with ``cost.spec_cost`` like any spec. MnasNet also searches the
layer type (convolution, depthwise separable, inverted bottleneck) and the skip operation; the MobileNetV3 search
starts from inverted bottlenecks with identity skips, so those two choices are fixed here.

The seeds' own choice: V3's hand-tuned per-layer expansion widths are not one ratio per stage (Large's stage of
80 channels expands to 240, 200, 184, 184; Small's stage of 24 to 72 then 88), so neither seed is a point of its
space: :meth:`SearchSpace.seed_choice` returns None for both, and :meth:`SearchSpace.seed_stage_choice` gives each
stage that is expressible (Large's stages of 16, 40, 112 and 160 channels; Small's of 16, 48 and 96). A seed whose
stages are uniform, such as MnasNet-A1 (``space_from_seed``), is a point of its own space.

Size, as computed by :meth:`SearchSpace.num_choices`, :meth:`SearchSpace.size` and ``reachable_blocks(224)``:

==================  ======  =========================  =========================  ===================================
preset              stages  choices (432 ** stages)    distinct specs             distinct blocks at 224
==================  ======  =========================  =========================  ===================================
mobilenet_v3_small  5       15,045,919,506,432         4,448,877,281,280          1,872 (+ 3 last-stage inputs)
mobilenet_v3_large  6       6,499,837,226,778,624      1,925,877,696,823,296      2,592 (+ 3 last-stage inputs)
==================  ======  =========================  =========================  ===================================

Distinct specs are fewer than choices because some choices give the same blocks: a one-layer stage at depth -1
stays one layer; 0.75 x 16 and 0.75 x 24 round back up to 16 and 24 (``make_divisible`` never goes more than 10%
below); and where neighbouring stages can reach one width with a stride-1 start (Small's 40- and 48-channel
stages) a layer can move from one to the other. :meth:`SearchSpace.size` counts block tuples exactly by walking the
space as an automaton over blocks (``_count_distinct``). The blocks a latency table needs are few because a block
depends only on its own stage's choice and the previous stage's width, never on the rest of the network.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache, cached_property
from typing import NamedTuple

from ..spec import ACTIVATIONS, ArchSpec, BlockSpec, make_divisible
from ..zoo import get_spec


@dataclass(frozen=True)
class StageChoices:
    """The choices of one stage of the MnasNet factorised hierarchical space (the same for every stage)."""

    depth_deltas: tuple[int, ...] = (-1, 0, 1)  # layers relative to the seed's stage (never below 1)
    kernels: tuple[int, ...] = (3, 5, 7)
    expansions: tuple[float, ...] = (1, 3, 4, 6)  # ratio x the layer's input width, rounded to 8
    se: tuple[bool, ...] = (False, True)  # SE at the spec's se_ratio (0.25)
    acts: tuple[str, ...] = ("relu", "hswish")
    width_mults: tuple[float, ...] = (0.75, 1.0, 1.25)  # x the seed stage's output width, rounded to 8

    def __post_init__(self) -> None:
        for name in ("depth_deltas", "kernels", "expansions", "se", "acts", "width_mults"):
            values = tuple(getattr(self, name))
            if not values or len(set(values)) != len(values):
                raise ValueError(f"StageChoices.{name} must be a non-empty tuple without repeats, got {values!r}")
            object.__setattr__(self, name, values)
        if any(not isinstance(d, int) or isinstance(d, bool) for d in self.depth_deltas):
            raise ValueError(f"depth_deltas must be integers, got {self.depth_deltas!r}")
        if any(not isinstance(k, int) or k < 1 or k % 2 == 0 for k in self.kernels):
            raise ValueError(f"kernels must be odd positive integers, got {self.kernels!r}")
        if any(not e > 0 for e in self.expansions) or any(not w > 0 for w in self.width_mults):
            raise ValueError("expansions and width_mults must be positive")
        if any(not isinstance(s, bool) for s in self.se):
            raise ValueError(f"se must hold booleans, got {self.se!r}")
        bad = [a for a in self.acts if a not in ACTIVATIONS]
        if bad:
            raise ValueError(f"unknown activation(s) {bad} (choose from {', '.join(ACTIVATIONS)})")

    def per_stage(self) -> int:
        """Number of choices of one stage."""
        return math.prod(len(getattr(self, n)) for n in ("depth_deltas", "kernels", "expansions", "se", "acts",
                                                          "width_mults"))

    def all(self) -> list[StageChoice]:
        """Every choice of one stage, in a fixed order."""
        return [StageChoice(d, k, e, s, a, w) for d in self.depth_deltas for k in self.kernels
                for e in self.expansions for s in self.se for a in self.acts for w in self.width_mults]


class StageChoice(NamedTuple):
    """One stage's decision: (depth_delta, kernel, expansion, se, act, width_mult)."""

    depth_delta: int
    kernel: int
    expansion: float
    se: bool
    act: str
    width_mult: float


Choice = tuple[StageChoice, ...]  # one StageChoice per stage, in order


def seed_stages(seed: ArchSpec) -> tuple[tuple[int, ...], ...]:
    """Seed block indices grouped into MnasNet-style stages: a new stage starts at a stride-2 block or where the
    output width changes."""
    stages: list[list[int]] = []
    for i, b in enumerate(seed.blocks):
        if not stages or b.stride == 2 or b.out != seed.blocks[i - 1].out:
            stages.append([i])
        else:
            stages[-1].append(i)
    return tuple(tuple(s) for s in stages)


@dataclass(frozen=True)
class SearchSpace:
    """A seed network, its stages, and the per-stage choices; every point is an :class:`ArchSpec`."""

    name: str
    seed: ArchSpec
    stages: tuple[tuple[int, ...], ...]  # seed block indices per stage
    choices: StageChoices

    def __post_init__(self) -> None:
        flat = [i for stage in self.stages for i in stage]
        if not self.stages or any(not s for s in self.stages) or flat != list(range(len(self.seed.blocks))):
            raise ValueError(f"space {self.name!r}: stages must split the seed's blocks 0..{len(self.seed.blocks) - 1}"
                             f" in order, got {self.stages!r}")
        for stage in self.stages:
            if any(self.seed.blocks[i].stride != 1 for i in stage[1:]):
                raise ValueError(f"space {self.name!r}: only the first layer of a stage may have stride 2 ({stage})")
            if len({self.seed.blocks[i].out for i in stage}) != 1:
                raise ValueError(f"space {self.name!r}: the layers of a stage must share one output width ({stage})")
        if any(b.dilation != 1 for b in self.seed.blocks):
            raise ValueError(f"space {self.name!r}: the seed must have no dilated blocks")

    def deployed(self, in_channels: int, resolution: int, num_classes: int) -> SearchSpace:
        """The same space for networks that take ``in_channels`` x ``resolution`` images and predict
        ``num_classes`` (e.g. Fashion-MNIST's 1 x 80 x 80, 10 classes): the seed's input, resolution and head
        changed, the stages and choices kept. Its latency is the latency of what is deployed after training on
        that data."""
        seed = self.seed.replace(in_channels=in_channels, resolution=resolution, num_classes=num_classes)
        return SearchSpace(name=self.name, seed=seed, stages=self.stages, choices=self.choices)

    # -- the stages' fixed facts -----------------------------------------------------------------
    def _stride(self, s: int) -> int:
        return self.seed.blocks[self.stages[s][0]].stride

    def _depth(self, s: int, delta: int) -> int:
        return max(1, len(self.stages[s]) + delta)

    def _width(self, s: int, mult: float) -> int:
        return make_divisible(mult * self.seed.blocks[self.stages[s][0]].out, 8)

    def stage_widths(self, s: int) -> list[int]:
        """The distinct output widths stage ``s`` can have."""
        return sorted({self._width(s, w) for w in self.choices.width_mults})

    def _stage_blocks(self, s: int, c: StageChoice, in_width: int) -> tuple[int, BlockSpec, BlockSpec]:
        """(depth, first layer, every later layer) of stage ``s`` under choice ``c`` after ``in_width`` channels."""
        out = self._width(s, c.width_mult)
        first = BlockSpec(kernel=c.kernel, exp=make_divisible(c.expansion * in_width), out=out, se=c.se, act=c.act,
                          stride=self._stride(s))
        rest = BlockSpec(kernel=c.kernel, exp=make_divisible(c.expansion * out), out=out, se=c.se, act=c.act)
        return self._depth(s, c.depth_delta), first, rest

    def _input_sizes(self, resolution: int) -> list[tuple[int, int]]:
        """Per stage: (feature map side entering its first layer, side entering its later layers)."""
        hw = math.ceil(resolution / self.seed.stem_stride)
        sizes = []
        for s in range(len(self.stages)):
            after = math.ceil(hw / self._stride(s))
            sizes.append((hw, after))
            hw = after
        return sizes

    # -- points of the space ---------------------------------------------------------------------
    def num_choices(self) -> int:
        """Number of choices (the product over stages); several may give the same spec, see :meth:`size`."""
        return self.choices.per_stage() ** len(self.stages)

    def sample_choice(self, rng: random.Random) -> Choice:
        """Uniform over every stage's choices (each dimension drawn independently)."""
        c = self.choices
        return tuple(StageChoice(rng.choice(c.depth_deltas), rng.choice(c.kernels), rng.choice(c.expansions),
                                 rng.choice(c.se), rng.choice(c.acts), rng.choice(c.width_mults))
                     for _ in self.stages)

    def sample(self, rng: random.Random) -> ArchSpec:
        return self.decode(self.sample_choice(rng))

    def decode(self, choice: Iterable) -> ArchSpec:
        """The spec of a choice: one ``(depth_delta, kernel, expansion, se, act, width_mult)`` per stage."""
        choice = tuple(StageChoice(*c) for c in choice)
        if len(choice) != len(self.stages):
            raise ValueError(f"space {self.name!r} has {len(self.stages)} stages, the choice gives {len(choice)}")
        blocks, width = [], self.seed.stem_channels
        for s, c in enumerate(choice):
            self._check(s, c)
            depth, first, rest = self._stage_blocks(s, c, width)
            blocks += [first] + [rest] * (depth - 1)
            width = first.out
        return self.seed.replace(name=f"{self.name}_sample", blocks=tuple(blocks),
                                 notes=f"sampled from the {self.name} search space (seed {self.seed.name})")

    def _check(self, s: int, c: StageChoice) -> None:
        for field, value in zip(StageChoice._fields, c, strict=True):
            allowed = getattr(self.choices, {"depth_delta": "depth_deltas", "kernel": "kernels",
                                             "expansion": "expansions", "act": "acts",
                                             "width_mult": "width_mults"}.get(field, field))
            if value not in allowed:
                raise ValueError(f"stage {s + 1}: {field} {value!r} is not a choice of space {self.name!r} "
                                 f"(choose from {allowed})")

    def seed_stage_choice(self, s: int) -> StageChoice | None:
        """The choice that rebuilds seed stage ``s`` exactly (with the seed's input width), or None when the seed's
        stage is not a point of the space (per-layer expansions that are no single ratio, mixed kernels, ...)."""
        width_in = self.seed.block_inputs()[self.stages[s][0]]
        seed_blocks = tuple(self.seed.blocks[i] for i in self.stages[s])
        # the plainest choice first where several rebuild it: no depth change, width 1.0 (ties from rounding)
        for c in sorted(self.choices.all(), key=lambda c: (abs(c.depth_delta), abs(c.width_mult - 1.0))):
            depth, first, rest = self._stage_blocks(s, c, width_in)
            if depth == len(seed_blocks) and (first, *[rest] * (depth - 1)) == seed_blocks:
                return c
        return None

    def seed_choice(self) -> Choice | None:
        """The choice that decodes to the seed's blocks, or None when some stage is not expressible."""
        stages = tuple(self.seed_stage_choice(s) for s in range(len(self.stages)))
        return None if any(c is None for c in stages) else stages

    # -- what the space can contain --------------------------------------------------------------
    def reachable_blocks(self, resolution: int) -> list[tuple[int, int, BlockSpec]]:
        """Every distinct (input side, input channels, block) that some spec of the space contains at
        ``resolution``, sorted; a latency table holding these can cost every spec of the space."""
        found = set()
        sizes = self._input_sizes(resolution)
        inputs = [self.seed.stem_channels]
        for s in range(len(self.stages)):
            max_depth = max(self._depth(s, d) for d in self.choices.depth_deltas)
            for c in self.choices.all():
                if c.depth_delta != self.choices.depth_deltas[0]:
                    continue  # the depth changes only how often `rest` repeats
                for width in inputs:
                    _, first, rest = self._stage_blocks(s, c, width)
                    found.add((sizes[s][0], width, first))
                    if max_depth > 1:
                        found.add((sizes[s][1], rest.out, rest))
            inputs = self.stage_widths(s)
        return sorted(found, key=_block_order)

    def reachable_last_inputs(self, resolution: int) -> list[tuple[int, int]]:
        """Every distinct (side, channels) entering the last stage (last conv, pooling, head, classifier)."""
        side = self._input_sizes(resolution)[-1][1]
        return [(side, w) for w in self.stage_widths(len(self.stages) - 1)]

    def size(self) -> int:
        """Number of distinct specs (distinct block tuples; at most :meth:`num_choices`)."""
        return self._distinct

    @cached_property
    def _distinct(self) -> int:
        return _count_distinct(self)


def _block_order(item: tuple[int, int, BlockSpec]):
    hw, c_in, b = item
    return (-hw, c_in, b.out, b.stride, b.kernel, b.exp, b.se, b.act)


def _count_distinct(space: SearchSpace) -> int:
    """Count distinct block tuples by walking the space as an automaton over blocks, determinised on the fly.

    A position after some block is (stage, its width, the block its later layers repeat, layers still to come);
    the set of positions a block prefix can be at is a state of the determinised automaton, and the number of
    distinct tuples is the number of its accepted paths, memoised per state. Two choices that give one tuple
    follow one path, so nothing is counted twice.
    """
    last = len(space.stages) - 1
    stage_choices = space.choices.all()

    @cache
    def entries(s: int, in_width: int) -> dict[BlockSpec, frozenset]:
        """Stage ``s``'s first layers after ``in_width`` channels, each with the positions it leads to."""
        table: dict[BlockSpec, set] = {}
        for c in stage_choices:
            depth, first, rest = space._stage_blocks(s, c, in_width)
            table.setdefault(first, set()).add(_position(s, first.out, rest, depth - 1))
        return {b: frozenset(p) for b, p in table.items()}

    @cache
    def count(state: frozenset) -> int:
        moves: dict[BlockSpec, set] = {}
        total = 0
        for s, width, rest, left in state:
            if left:
                moves.setdefault(rest, set()).add(_position(s, width, rest, left - 1))
            elif s == last:
                total = 1  # the tuple may end here
            else:
                for block, positions in entries(s + 1, width).items():
                    moves.setdefault(block, set()).update(positions)
        return total + sum(count(frozenset(p)) for p in moves.values())

    return count(frozenset({(-1, space.seed.stem_channels, None, 0)}))


def _position(s: int, width: int, rest: BlockSpec, left: int) -> tuple:
    return (s, width, rest if left else None, left)  # at a stage's end only its width matters


def space_from_seed(name: str, seed: ArchSpec, choices: StageChoices | None = None) -> SearchSpace:
    """The space around any seed spec, cut into stages by :func:`seed_stages`."""
    return SearchSpace(name=name, seed=seed, stages=seed_stages(seed), choices=choices or StageChoices())


SPACES: dict[str, Callable[[], SearchSpace]] = {
    "mobilenet_v3_small": lambda: space_from_seed("mobilenet_v3_small", get_spec("mobilenet_v3_small")),
    "mobilenet_v3_large": lambda: space_from_seed("mobilenet_v3_large", get_spec("mobilenet_v3_large")),
}


def get_space(name: str) -> SearchSpace:
    """A named preset; an unknown name is a ValueError listing the known ones."""
    if name not in SPACES:
        raise ValueError(f"unknown search space {name!r}; known spaces: {', '.join(SPACES)}")
    return SPACES[name]()
