"""Architecture specs: the one description that the builder, the cost counter and every tool read.

An :class:`ArchSpec` holds absolute channel counts (width multipliers are applied by the zoo when a spec is
made), so a spec file is a complete, self-contained description that anyone can rebuild.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

# hswish_naive: h-swish as separate ops (the unfused implementation of Table 5), for latency comparisons
ACTIVATIONS = ("relu", "relu6", "hswish", "hswish_naive", "swish", "identity")
GATES = ("hard_sigmoid", "sigmoid")
SE_BASES = ("expansion", "input")
PADDINGS = ("symmetric", "same")
SPEC_FORMAT_VERSION = 1


class SpecError(ValueError):
    """An architecture spec that cannot be built; the message names the offending field or block."""


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` as the reference code does.

    The result is never below ``min_value`` (default ``divisor``) and never more than 10% below ``value``.
    """
    if divisor < 1:
        raise ValueError(f"divisor must be >= 1, got {divisor}")
    if min_value is None:
        min_value = divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


@dataclass(frozen=True)
class BlockSpec:
    """One inverted-residual bottleneck (the paper's ``bneck``).

    ``exp`` is the expansion width in channels; when it equals the block's input width, the 1x1 expansion
    convolution is left out (as in every reference implementation).
    """

    kernel: int
    exp: int
    out: int
    se: bool = False
    act: str = "relu"
    stride: int = 1
    dilation: int = 1


@dataclass(frozen=True)
class ArchSpec:
    """A whole classification network: stem, bottlenecks, last stage and classifier.

    Last stage: ``last_channels`` is the 1x1 conv (with norm and ``last_act``) on the final feature map
    (0 leaves it out); global pooling follows; ``head_channels`` is the 1x1 conv after pooling (no norm, with
    bias, ``head_act``; 0 leaves it out); then dropout and the linear classifier.
    """

    name: str
    blocks: tuple[BlockSpec, ...]
    stem_channels: int = 16
    stem_kernel: int = 3
    stem_stride: int = 2
    stem_act: str = "hswish"
    in_channels: int = 3
    last_channels: int = 960
    last_act: str = "hswish"
    last_se: bool = False
    head_channels: int = 1280
    head_act: str = "hswish"
    num_classes: int = 1000
    dropout: float = 0.2
    se_ratio: float = 0.25
    se_divisor: int = 8
    se_base: str = "expansion"
    se_gate: str = "hard_sigmoid"
    se_inner_act: str = "relu"
    bn_eps: float = 1e-3
    bn_momentum: float = 0.01
    padding: str = "symmetric"
    resolution: int = 224
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(self.blocks))
        validate(self)

    # -- derived facts -------------------------------------------------------------------------
    def block_inputs(self) -> list[int]:
        """Input channels of each block."""
        widths, prev = [], self.stem_channels
        for b in self.blocks:
            widths.append(prev)
            prev = b.out
        return widths

    def se_channels(self, index: int) -> int:
        """Squeeze width of block ``index``'s squeeze-and-excite (0 when it has none)."""
        block = self.blocks[index]
        if not block.se:
            return 0
        base = block.exp if self.se_base == "expansion" else self.block_inputs()[index]
        return _squeeze(base, self.se_ratio, self.se_divisor)

    def last_se_channels(self) -> int:
        return _squeeze(self.last_channels, self.se_ratio, self.se_divisor) if self.last_se else 0

    @property
    def features_channels(self) -> int:
        """Channels of the final feature map (``forward_features``' output)."""
        if self.last_channels:
            return self.last_channels
        return self.blocks[-1].out if self.blocks else self.stem_channels

    @property
    def classifier_in(self) -> int:
        return self.head_channels or self.features_channels

    def replace(self, **changes: Any) -> ArchSpec:
        """A copy with fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = {"format": SPEC_FORMAT_VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "blocks":
                value = [dataclasses.asdict(b) for b in value]
            elif f.name == "extra":
                value = dict(value)
            data[f.name] = value
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchSpec:
        if not isinstance(data, dict):
            raise SpecError(f"a spec must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        version = data.pop("format", SPEC_FORMAT_VERSION)
        if version != SPEC_FORMAT_VERSION:
            raise SpecError(f"spec format {version} is not supported (this version reads {SPEC_FORMAT_VERSION})")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"unknown spec field(s): {', '.join(unknown)}")
        for required in ("name", "blocks"):
            if required not in data:
                raise SpecError(f"spec is missing the required field {required!r}")
        if not isinstance(data["blocks"], list):
            raise SpecError("'blocks' must be a list of block objects")
        block_fields = {f.name for f in fields(BlockSpec)}
        blocks = []
        for i, b in enumerate(data["blocks"], start=1):  # numbered from 1, as validate() and `mnv3 profile` do
            if not isinstance(b, dict):
                raise SpecError(f"block {i}: must be an object, got {type(b).__name__}")
            bad = sorted(set(b) - block_fields)
            if bad:
                raise SpecError(f"block {i}: unknown field(s): {', '.join(bad)}")
            missing = sorted({"kernel", "exp", "out"} - set(b))
            if missing:
                raise SpecError(f"block {i}: missing field(s): {', '.join(missing)}")
            blocks.append(BlockSpec(**b))
        data["blocks"] = tuple(blocks)
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError(f"spec is not valid JSON: {e}") from None
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ArchSpec:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"spec file not found: {p}")
        return cls.from_json(p.read_text())


def _squeeze(channels: int, ratio: float, divisor: int) -> int:
    if divisor > 1:
        return make_divisible(channels * ratio, divisor)
    return max(1, int(channels * ratio))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_positive_int(where: str, name: str, value: Any, allow_zero: bool = False) -> None:
    if not _is_int(value) or value < (0 if allow_zero else 1):
        need = "a non-negative" if allow_zero else "a positive"
        raise SpecError(f"{where}: {name} must be {need} integer, got {value!r}")


def _check_choice(where: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SpecError(f"{where}: unknown {name} {value!r} (choose from {', '.join(choices)})")


def validate_block(block: BlockSpec, where: str) -> None:
    _check_positive_int(where, "kernel", block.kernel)
    if block.kernel % 2 == 0:
        raise SpecError(f"{where}: kernel must be odd, got {block.kernel}")
    _check_positive_int(where, "exp", block.exp)
    _check_positive_int(where, "out", block.out)
    if block.stride not in (1, 2) or isinstance(block.stride, bool):
        raise SpecError(f"{where}: stride must be 1 or 2, got {block.stride!r}")
    _check_positive_int(where, "dilation", block.dilation)
    if block.dilation > 1 and block.stride != 1:
        raise SpecError(f"{where}: a dilated block (dilation {block.dilation}) must have stride 1")
    if not isinstance(block.se, bool):
        raise SpecError(f"{where}: se must be true or false, got {block.se!r}")
    _check_choice(where, "activation", block.act, ACTIVATIONS)


def validate(spec: ArchSpec) -> None:
    """Raise :class:`SpecError` naming the first problem found."""
    top = f"spec {spec.name!r}"
    if not isinstance(spec.name, str) or not spec.name:
        raise SpecError("spec name must be a non-empty string")
    for name in ("stem_channels", "stem_kernel", "in_channels", "num_classes", "resolution", "se_divisor"):
        _check_positive_int(top, name, getattr(spec, name))
    for name in ("last_channels", "head_channels"):
        _check_positive_int(top, name, getattr(spec, name), allow_zero=True)
    if spec.stem_stride not in (1, 2):
        raise SpecError(f"{top}: stem_stride must be 1 or 2, got {spec.stem_stride!r}")
    if spec.stem_kernel % 2 == 0:
        raise SpecError(f"{top}: stem_kernel must be odd, got {spec.stem_kernel}")
    for name in ("stem_act", "last_act", "head_act", "se_inner_act"):
        _check_choice(top, name, getattr(spec, name), ACTIVATIONS)
    _check_choice(top, "se_gate", spec.se_gate, GATES)
    _check_choice(top, "se_base", spec.se_base, SE_BASES)
    _check_choice(top, "padding", spec.padding, PADDINGS)
    if not (0.0 <= spec.dropout < 1.0):
        raise SpecError(f"{top}: dropout must be in [0, 1), got {spec.dropout!r}")
    if not (0.0 < spec.se_ratio <= 1.0):
        raise SpecError(f"{top}: se_ratio must be in (0, 1], got {spec.se_ratio!r}")
    if not (spec.bn_eps > 0 and 0.0 < spec.bn_momentum < 1.0):
        raise SpecError(f"{top}: bn_eps must be > 0 and bn_momentum in (0, 1)")
    if spec.last_se and not spec.last_channels:
        raise SpecError(f"{top}: last_se needs a last conv (last_channels > 0)")
    if not isinstance(spec.extra, dict):
        raise SpecError(f"{top}: extra must be an object")
    if not spec.blocks:
        raise SpecError(f"{top}: needs at least one block")
    for i, block in enumerate(spec.blocks):
        if not isinstance(block, BlockSpec):
            raise SpecError(f"{top}: block {i + 1} is not a BlockSpec")
        validate_block(block, f"{top}, block {i + 1}")


def output_stride(spec: ArchSpec) -> int:
    """Total downsampling factor of the feature map."""
    stride = spec.stem_stride
    for b in spec.blocks:
        stride *= b.stride
    return stride


def with_output_stride(spec: ArchSpec, target: int) -> ArchSpec:
    """Limit the output stride by turning later stride-2 blocks into dilated stride-1 blocks.

    Follows the TensorFlow reference: the block whose stride is removed keeps the current rate, and every block
    after it has its dilation multiplied by the removed stride.
    """
    if target < spec.stem_stride or target & (target - 1):
        raise SpecError(f"output stride must be a power of two >= {spec.stem_stride}, got {target}")
    current, rate, blocks = spec.stem_stride, 1, []
    for b in spec.blocks:
        base_rate = b.dilation
        if current == target and b.stride > 1:
            blocks.append(dataclasses.replace(b, stride=1, dilation=base_rate * rate))
            rate *= b.stride
        else:
            blocks.append(dataclasses.replace(b, dilation=base_rate * rate))
            current *= b.stride
    if current < target:
        raise SpecError(f"output stride {target} is larger than the network's own ({current})")
    return spec.replace(blocks=tuple(blocks))


def spatial_out(size: int, kernel: int, stride: int, dilation: int = 1) -> int:
    """Output size of a convolution with 'same'-style padding (odd kernels: both padding modes agree)."""
    del kernel, dilation  # with symmetric padding of d*(k-1)/2 and odd k the result is ceil(size / stride)
    return math.ceil(size / stride)


class BackboneSpecIO:
    """The JSON form of a task's spec built on an :class:`ArchSpec` ``backbone`` (segmentation's SegSpec,
    detection's DetSpec), for frozen dataclasses that set ``KIND`` (the word messages use), ``FORMAT_VERSION``
    and ``ERROR`` (their :class:`SpecError`); ``NESTED`` fields are written with their ``to_dict()``. A file
    names its format version; unknown fields, a missing ``name`` or ``backbone``, another version and invalid
    JSON are ``ERROR``s that say so."""

    KIND: ClassVar[str]
    FORMAT_VERSION: ClassVar[int]
    ERROR: ClassVar[type[SpecError]]
    NESTED: ClassVar[tuple[str, ...]] = ("backbone",)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"format": self.FORMAT_VERSION}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.name in self.NESTED:
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            data[f.name] = value
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        kind, error = cls.KIND, cls.ERROR
        if not isinstance(data, dict):
            raise error(f"a {kind} spec must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        version = data.pop("format", cls.FORMAT_VERSION)
        if version != cls.FORMAT_VERSION:
            raise error(f"{kind} spec format {version!r} is not supported (this version reads {cls.FORMAT_VERSION})")
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise error(f"unknown {kind} spec field(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        for required in ("name", "backbone"):
            if required not in data:
                raise error(f"{kind} spec is missing the required field {required!r}")
        try:
            data["backbone"] = ArchSpec.from_dict(data["backbone"])
        except SpecError as e:
            raise error(f"backbone: {e}") from None
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> Any:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise cls.ERROR(f"{cls.KIND} spec is not valid JSON: {e}") from None
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Any:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"{cls.KIND} spec file not found: {p}")
        return cls.from_json(p.read_text())
