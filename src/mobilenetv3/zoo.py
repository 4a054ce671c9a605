"""Named architectures: MobileNetV3 (Tables 1 and 2 of the paper) and the baselines it is compared with.

Every builder here returns an :class:`ArchSpec` with absolute channel counts. Width multipliers follow the
TensorFlow reference code (see ``docs/paper-notes.md``): each output width is ``make_divisible(c * w)``, a
block's expansion is its ratio times the already rounded input width, and the final 1280/1024 conv is not scaled
below 1.0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .spec import ArchSpec, BlockSpec, make_divisible

# (kernel, expansion ratio, out, se, activation, stride): expansion ratios as in the reference code, so that
# the rounded expansion equals Table 1/2's "exp size" at width 1.0.
# Each stride-2 row is marked with the block it builds and the output stride it starts. The taps of
# MobileNetV3.tap_info() come from these rows: ``strideN`` is the layer just before the row that starts stride 2N
# (the last block for stride 32), and ``C4`` is the expansion output of the last stride-2 row (SSDLite's C4).
_LARGE = (
    (3, 16 / 16, 16, False, "relu", 1),
    (3, 64 / 16, 24, False, "relu", 2),  # block2, stride 4
    (3, 72 / 24, 24, False, "relu", 1),
    (5, 72 / 24, 40, True, "relu", 2),  # block4, stride 8
    (5, 120 / 40, 40, True, "relu", 1),
    (5, 120 / 40, 40, True, "relu", 1),
    (3, 240 / 40, 80, False, "hswish", 2),  # block7, stride 16
    (3, 200 / 80, 80, False, "hswish", 1),
    (3, 184 / 80, 80, False, "hswish", 1),
    (3, 184 / 80, 80, False, "hswish", 1),
    (3, 480 / 80, 112, True, "hswish", 1),
    (3, 672 / 112, 112, True, "hswish", 1),
    (5, 672 / 112, 160, True, "hswish", 2),  # block13, stride 32; its expansion is C4
    (5, 960 / 160, 160, True, "hswish", 1),
    (5, 960 / 160, 160, True, "hswish", 1),
)

_SMALL = (
    (3, 16 / 16, 16, True, "relu", 2),  # block1, stride 4
    (3, 72 / 16, 24, False, "relu", 2),  # block2, stride 8
    (3, 88 / 24, 24, False, "relu", 1),
    (5, 96 / 24, 40, True, "hswish", 2),  # block4, stride 16
    (5, 240 / 40, 40, True, "hswish", 1),
    (5, 240 / 40, 40, True, "hswish", 1),
    (5, 120 / 40, 48, True, "hswish", 1),
    (5, 144 / 48, 48, True, "hswish", 1),
    (5, 288 / 48, 96, True, "hswish", 2),  # block9, stride 32; its expansion is C4
    (5, 576 / 96, 96, True, "hswish", 1),
    (5, 576 / 96, 96, True, "hswish", 1),
)

# Stages of the baselines: expansion, kernel, channels, repeats, first stride, SE.
# MobileNetV2 (Sandler et al., Table 2).
_V2_STAGES = ((1, 3, 16, 1, 1, False), (6, 3, 24, 2, 2, False), (6, 3, 32, 3, 2, False), (6, 3, 64, 4, 2, False),
              (6, 3, 96, 3, 1, False), (6, 3, 160, 3, 2, False), (6, 3, 320, 1, 1, False))

# MnasNet-A1 (Tan et al., Figure 7).
_MNAS_A1_STAGES = ((1, 3, 16, 1, 1, False), (6, 3, 24, 2, 2, False), (3, 5, 40, 3, 2, True),
                   (6, 3, 80, 4, 2, False), (6, 3, 112, 2, 1, True), (6, 5, 160, 3, 2, True),
                   (6, 3, 320, 1, 1, False))


def _scaled(channels: int, width_mult: float) -> int:
    return make_divisible(channels * width_mult)


def _head(channels: int, width_mult: float) -> int:
    """The final wide layer is kept at its full width below 1.0 (the reference's fine-grained mode)."""
    return _scaled(channels, width_mult) if width_mult > 1.0 else channels


def _check_width(width_mult: float) -> None:
    if not (isinstance(width_mult, (int, float)) and 0.0 < width_mult <= 4.0):
        raise ValueError(f"width_mult must be a number in (0, 4], got {width_mult!r}")


def _v3_blocks(rows, width_mult: float, stem: int, minimal: bool) -> tuple[BlockSpec, ...]:
    blocks, prev = [], stem
    for kernel, ratio, out, se, act, stride in rows:
        out_c = _scaled(out, width_mult)
        exp_c = make_divisible(prev * ratio)
        if minimal:
            kernel, se, act = 3, False, "relu"
        blocks.append(BlockSpec(kernel=kernel, exp=exp_c, out=out_c, se=se, act=act, stride=stride))
        prev = out_c
    return tuple(blocks)


def _staged_blocks(stages, width_mult: float, stem: int, act: str) -> tuple[BlockSpec, ...]:
    blocks, prev = [], stem
    for t, k, c, n, s, se in stages:
        out_c = _scaled(c, width_mult)
        for i in range(n):
            blocks.append(BlockSpec(kernel=k, exp=make_divisible(prev * t), out=out_c, se=se, act=act,
                                    stride=s if i == 0 else 1))
            prev = out_c
    return tuple(blocks)


def _name(base: str, width_mult: float) -> str:
    return base if width_mult == 1.0 else f"{base}_{round(width_mult * 100):03d}"


def mobilenet_v3_large(width_mult: float = 1.0, minimal: bool = False, **overrides) -> ArchSpec:
    """MobileNetV3-Large, Table 1. ``minimal``: no SE, ReLU only, 3x3 depthwise (the 'minimalistic' models)."""
    _check_width(width_mult)
    stem = _scaled(16, width_mult)
    blocks = _v3_blocks(_LARGE, width_mult, stem, minimal)
    act = "relu" if minimal else "hswish"
    fields = dict(
        name=_name("mobilenet_v3_large" + ("_minimal" if minimal else ""), width_mult),
        blocks=blocks, stem_channels=stem, stem_act=act, last_channels=_scaled(960, width_mult), last_act=act,
        head_channels=_head(1280, width_mult), head_act=act,
        notes="MobileNetV3-Large (Howard et al. 2019, Table 1)" + (", minimalistic" if minimal else ""),
    )
    fields.update(overrides)
    return ArchSpec(**fields)


def mobilenet_v3_small(width_mult: float = 1.0, minimal: bool = False, paper_head: bool = False,
                       last_se: bool = False, **overrides) -> ArchSpec:
    """MobileNetV3-Small, Table 2.

    ``paper_head`` uses Table 2's 1280-channel penultimate layer instead of the released models' 1024;
    ``last_se`` adds the squeeze-and-excite that Table 2 marks on the final 576 conv (no released model has it).
    """
    _check_width(width_mult)
    stem = _scaled(16, width_mult)
    blocks = _v3_blocks(_SMALL, width_mult, stem, minimal)
    act = "relu" if minimal else "hswish"
    name = "mobilenet_v3_small" + ("_minimal" if minimal else "") + ("_paper_head" if paper_head else "")
    fields = dict(
        name=_name(name, width_mult), blocks=blocks, stem_channels=stem, stem_act=act,
        last_channels=_scaled(576, width_mult), last_act=act, last_se=last_se and not minimal,
        head_channels=_head(1280 if paper_head else 1024, width_mult), head_act=act,
        notes="MobileNetV3-Small (Howard et al. 2019, Table 2)" + (", minimalistic" if minimal else "")
        + (", 1280 head as printed" if paper_head else ", 1024 head as released"),
    )
    fields.update(overrides)
    return ArchSpec(**fields)


def mobilenet_v2(width_mult: float = 1.0, **overrides) -> ArchSpec:
    """MobileNetV2 (Sandler et al. 2018) as a spec for the same builder: ReLU6, no SE, no head conv."""
    _check_width(width_mult)
    stem = _scaled(32, width_mult)
    fields = dict(
        name=_name("mobilenet_v2", width_mult), blocks=_staged_blocks(_V2_STAGES, width_mult, stem, "relu6"),
        stem_channels=stem, stem_act="relu6",
        last_channels=_head(1280, width_mult), last_act="relu6", head_channels=0, dropout=0.2,
        notes="MobileNetV2 (Sandler et al. 2018)",
    )
    fields.update(overrides)
    return ArchSpec(**fields)


def mnasnet_a1(width_mult: float = 1.0, **overrides) -> ArchSpec:
    """MnasNet-A1 (Tan et al. 2019): ReLU, SE with a sigmoid gate squeezing the block input to 1/4."""
    _check_width(width_mult)
    stem = _scaled(32, width_mult)
    fields = dict(
        name=_name("mnasnet_a1", width_mult), blocks=_staged_blocks(_MNAS_A1_STAGES, width_mult, stem, "relu"),
        stem_channels=stem, stem_act="relu",
        last_channels=_head(1280, width_mult), last_act="relu", head_channels=0, se_base="input",
        se_gate="sigmoid", se_divisor=1, notes="MnasNet-A1 (Tan et al. 2019)",
    )
    fields.update(overrides)
    return ArchSpec(**fields)


@dataclass(frozen=True)
class ZooEntry:
    """A registered model family: its builder, the widths it is listed at, and the paper's Table 3 figures."""

    family: str
    builder: Callable[..., ArchSpec]
    widths: tuple[float, ...]
    options: tuple[tuple[str, object], ...] = ()
    paper: dict | None = None  # {width: (params in millions, MAdds in millions)} from the paper's Table 3

    def spec(self, width_mult: float = 1.0, **overrides) -> ArchSpec:
        return self.builder(width_mult=width_mult, **dict(self.options), **overrides)


REGISTRY: dict[str, ZooEntry] = {
    e.family: e
    for e in (
        ZooEntry("mobilenet_v3_large", mobilenet_v3_large, (0.35, 0.5, 0.75, 1.0, 1.25),
                 paper={1.0: (5.4, 219.0), 0.75: (4.0, 155.0)}),
        ZooEntry("mobilenet_v3_small", mobilenet_v3_small, (0.35, 0.5, 0.75, 1.0, 1.25),
                 paper={1.0: (2.9, 66.0), 0.75: (2.4, 44.0)}),
        ZooEntry("mobilenet_v3_small_paper_head", mobilenet_v3_small, (1.0,), (("paper_head", True),),
                 paper={1.0: (2.9, 66.0)}),
        ZooEntry("mobilenet_v3_large_minimal", mobilenet_v3_large, (1.0,), (("minimal", True),)),
        ZooEntry("mobilenet_v3_small_minimal", mobilenet_v3_small, (1.0,), (("minimal", True),)),
        ZooEntry("mobilenet_v2", mobilenet_v2, (0.35, 0.5, 0.75, 1.0, 1.4),
                 paper={1.0: (3.4, 300.0), 0.35: (1.6, 59.2)}),
        ZooEntry("mnasnet_a1", mnasnet_a1, (1.0,), paper={1.0: (3.9, 315.0)}),
    )
}


def list_models() -> list[tuple[str, float]]:
    """Every (family, width) the zoo lists, in registry order."""
    return [(family, w) for family, entry in REGISTRY.items() for w in entry.widths]


def get_spec(name: str, width_mult: float = 1.0, **overrides) -> ArchSpec:
    """The spec of a registered family at a width multiplier; unknown names get the list of known ones.

    The names ``mnv3 models`` lists with a width suffix (``mobilenet_v3_large_075``) are accepted too.
    """
    if name not in REGISTRY:
        family, _, suffix = name.rpartition("_")
        if family in REGISTRY and suffix.isdigit() and len(suffix) == 3 and width_mult == 1.0:
            return REGISTRY[family].spec(int(suffix) / 100, **overrides)  # listed names such as *_075
        import difflib

        close = difflib.get_close_matches(name, REGISTRY, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown model {name!r}.{hint} Known models: {', '.join(REGISTRY)}")
    return REGISTRY[name].spec(width_mult, **overrides)


def resolve_spec(name: str | None = None, spec_file: str | None = None, width_mult: float = 1.0) -> ArchSpec:
    """A spec from a zoo name (with its width multiplier) or a JSON spec file: exactly one of the two."""
    if (name is None) == (spec_file is None):
        raise ValueError("give a model NAME or --spec FILE.json (exactly one)")
    if spec_file is not None:
        if width_mult != 1.0:
            raise ValueError("--width-mult applies to zoo models; a spec file already holds its widths")
        return ArchSpec.load(spec_file)
    return get_spec(name, width_mult)
