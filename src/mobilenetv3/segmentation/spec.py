"""SegSpec: a segmentation network as data (backbone ArchSpec + head), serialisable to JSON and back.

The stored backbone is the classification spec as given (any zoo backbone or a spec file); the network actually
built is :meth:`SegSpec.backbone_spec`: that spec with its last block reduced (``rf2``), turned atrous down to
``output_stride`` (TF-style, :func:`~mobilenetv3.spec.with_output_stride`) and without its classifier head.

Heads (``head``): ``"lraspp"``, the paper's Lite R-ASPP (Figure 10), and ``"raspp"``, MobileNetV2's reduced ASPP
(a 1x1 branch and an image-pooling branch). Their wiring is in :mod:`.model`.

Pooling (``pooling``): ``"global"`` averages the whole feature map (torchvision's choice; any input size, exports
anywhere); ``"kernel"`` is Figure 10's large average pooling with ``pool_kernel`` (h, w) and ``pool_stride``
(h, w) in feature-map pixels, no padding, whose result is upsampled bilinearly back to the feature map.
:data:`FIGURE10_POOLING` is the paper's 49x49, stride (16, 20) for 1024x2048 inputs at output stride 16.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from ..spec import ArchSpec, BackboneSpecIO, SpecError, output_stride, with_output_stride
from .backbone import LOW_TAPS, RF2_FORMS, LowTap, find_low_tap, reduce_last_block

HEADS = ("lraspp", "raspp")
POOLINGS = ("global", "kernel")
GATES = ("sigmoid", "hard_sigmoid", "none")  # "none": R-ASPP, whose pooling branch is conv + BN + ReLU
OUTPUT_STRIDES = (8, 16, 32)
SEG_SPEC_FORMAT_VERSION = 1
FIGURE10_POOLING = {"pooling": "kernel", "pool_kernel": (49, 49), "pool_stride": (16, 20)}


class SegSpecError(SpecError):
    """A segmentation spec that cannot be built; the message names the offending field and value."""


@dataclass(frozen=True)
class SegSpec(BackboneSpecIO):
    """A backbone, a head and their options (module docstring).

    ``rf2`` is a form name (``"none"``, ``"deeplab"``, ``"ssdlite"``; see :mod:`.backbone`); ``True`` is read as
    ``"deeplab"`` (the paper's MobileNetV3 rows) and ``False`` as ``"none"``. ``low_tap`` and ``gate`` default by
    head: LR-ASPP takes DeepLab's ``"stride8_depthwise"`` skip and the sigmoid gate of Figure 10 (DeepLab's
    released Cityscapes models use ``"hard_sigmoid"``); R-ASPP has neither (``"none"``).
    """

    KIND: ClassVar[str] = "segmentation"
    FORMAT_VERSION: ClassVar[int] = SEG_SPEC_FORMAT_VERSION
    ERROR: ClassVar[type[SpecError]] = SegSpecError

    name: str
    backbone: ArchSpec
    head: str = "lraspp"
    num_classes: int = 19
    filters: int = 128
    output_stride: int = 16
    rf2: str = "none"
    low_tap: str | None = None
    pooling: str = "global"
    pool_kernel: tuple[int, int] | None = None
    pool_stride: tuple[int, int] | None = None
    gate: str | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.rf2, bool):
            object.__setattr__(self, "rf2", "deeplab" if self.rf2 else "none")
        if self.low_tap is None:
            object.__setattr__(self, "low_tap", "stride8_depthwise" if self.head == "lraspp" else "none")
        if self.gate is None:
            object.__setattr__(self, "gate", "sigmoid" if self.head == "lraspp" else "none")
        for name in ("pool_kernel", "pool_stride"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        validate_seg(self)

    # -- derived ---------------------------------------------------------------------------------------
    def backbone_spec(self) -> ArchSpec:
        """The backbone as built: reduced (``rf2``), atrous to ``output_stride``, no classifier head conv."""
        reduced = reduce_last_block(self.backbone, self.rf2)
        return with_output_stride(reduced, self.output_stride).replace(head_channels=0)

    def low_tap_info(self) -> LowTap | None:
        return find_low_tap(reduce_last_block(self.backbone, self.rf2), self.low_tap)

    def feature_size(self, height: int, width: int) -> tuple[int, int]:
        """The backbone's final feature map for an input of ``height`` x ``width`` (every stride rounds up)."""
        s = self.output_stride
        return -(-height // s), -(-width // s)

    def pooled_size(self, height: int, width: int) -> tuple[int, int]:
        """The pooling branch's map for an input of ``height`` x ``width``: (1, 1) for global pooling, else
        the kernel's valid positions. A kernel larger than the feature map is a :class:`SegSpecError`."""
        if self.pooling == "global":
            return 1, 1
        fh, fw = self.feature_size(height, width)
        (kh, kw), (sh, sw) = self.pool_kernel, self.pool_stride
        if kh > fh or kw > fw:
            mh, mw = self.min_input()
            raise SegSpecError(
                f"{self.name}: input {height}x{width} gives a {fh}x{fw} feature map at output stride "
                f"{self.output_stride}, smaller than the pooling kernel {kh}x{kw} (pool_kernel); the input must be "
                f"at least {mh}x{mw}, or use pooling='global'")
        return (fh - kh) // sh + 1, (fw - kw) // sw + 1

    def min_input(self) -> tuple[int, int]:
        """The smallest input whose feature map holds the pooling kernel ((1, 1) for global pooling)."""
        if self.pooling == "global":
            return 1, 1
        s = self.output_stride
        return tuple((k - 1) * s + 1 for k in self.pool_kernel)

    def replace(self, **changes: Any) -> SegSpec:
        return dataclasses.replace(self, **changes)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_choice(where: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SegSpecError(f"{where}: unknown {name} {value!r} (choose from {', '.join(choices)})")


def _check_pair(where: str, name: str, value: Any) -> None:
    if not (isinstance(value, tuple) and len(value) == 2 and all(_positive_int(v) for v in value)):
        raise SegSpecError(f"{where}: {name} must be two positive integers (height, width), got {value!r}")


def validate_seg(spec: SegSpec) -> None:
    """Raise :class:`SegSpecError` naming the first bad field."""
    if not isinstance(spec.name, str) or not spec.name:
        raise SegSpecError(f"segmentation spec name must be a non-empty string, got {spec.name!r}")
    where = f"segmentation spec {spec.name!r}"
    if not isinstance(spec.backbone, ArchSpec):
        raise SegSpecError(f"{where}: backbone must be an ArchSpec, got {type(spec.backbone).__name__}")
    _check_choice(where, "head", spec.head, HEADS)
    for name in ("num_classes", "filters"):
        if not _positive_int(getattr(spec, name)):
            raise SegSpecError(f"{where}: {name} must be a positive integer, got {getattr(spec, name)!r}")
    if spec.output_stride not in OUTPUT_STRIDES or isinstance(spec.output_stride, bool):
        raise SegSpecError(f"{where}: output_stride must be one of {', '.join(map(str, OUTPUT_STRIDES))}, "
                           f"got {spec.output_stride!r}")
    own = output_stride(spec.backbone)
    if spec.output_stride > own:
        raise SegSpecError(f"{where}: output_stride {spec.output_stride} is larger than the backbone "
                           f"{spec.backbone.name!r}'s own ({own})")
    _check_choice(where, "rf2", spec.rf2, RF2_FORMS)
    _check_choice(where, "low_tap", spec.low_tap, LOW_TAPS)
    _check_choice(where, "gate", spec.gate, GATES)
    _check_choice(where, "pooling", spec.pooling, POOLINGS)
    if spec.head == "raspp":
        if spec.low_tap != "none":
            raise SegSpecError(f"{where}: R-ASPP (MobileNetV2's reduced ASPP) has no low-level skip; low_tap must "
                               f"be 'none', got {spec.low_tap!r}")
        if spec.gate != "none":
            raise SegSpecError(f"{where}: R-ASPP has no gate (its pooling branch is conv + BN + ReLU); gate must be "
                               f"'none', got {spec.gate!r}")
    elif spec.gate == "none":
        raise SegSpecError(f"{where}: LR-ASPP needs a gate: 'sigmoid' (Figure 10) or 'hard_sigmoid'")
    if spec.pooling == "kernel":
        _check_pair(where, "pool_kernel", spec.pool_kernel)
        _check_pair(where, "pool_stride", spec.pool_stride)
    elif spec.pool_kernel is not None or spec.pool_stride is not None:
        raise SegSpecError(f"{where}: pool_kernel and pool_stride apply to pooling='kernel' only (pooling is "
                           f"{spec.pooling!r})")
    if not isinstance(spec.notes, str):
        raise SegSpecError(f"{where}: notes must be a string, got {type(spec.notes).__name__}")
    try:  # the derived backbone must exist: a stage to reduce, a block at stride 8 for the skip
        spec.backbone_spec()
        spec.low_tap_info()
    except SegSpecError:
        raise
    except SpecError as e:
        raise SegSpecError(f"{where}: {e}") from None
