"""What a model takes as input: checks with specific errors, a seeded example input, and a module from whatever
names one (a module, a spec, a zoo name, a spec file)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .model import build
from .spec import ArchSpec


class InputError(ValueError):
    """An input a model cannot take: the message says what was given and what is expected."""



def min_resolution(spec: ArchSpec) -> int:
    """The smallest input side a spec's model takes: its stem kernel.

    Every size from there up runs (feature maps are ``ceil(size / stride)``, so a 33x33 input gives a 2x2 map
    at stride 32 and a 20x20 input a 1x1 map); below the stem kernel the first convolution's window is larger
    than the image and sees more padding than pixels, so such inputs are refused as almost surely a mistake.
    """
    return spec.stem_kernel


def check_input_shape(spec: ArchSpec, shape: Sequence[int]) -> None:
    """Raise :class:`InputError` unless ``shape`` is (N, C, H, W) with the spec's channels and a usable size."""
    shape = tuple(shape)
    if len(shape) != 4:
        raise InputError(f"{spec.name} takes a 4-D input (batch, channels, height, width); got {len(shape)}-D "
                         f"shape {list(shape)}" + (" (add a batch dimension: x.unsqueeze(0))" if len(shape) == 3
                                                  else ""))
    n, c, h, w = shape
    if n < 1:
        raise InputError(f"batch size must be at least 1, got {n}")
    if c != spec.in_channels:
        raise InputError(f"{spec.name} takes {spec.in_channels}-channel inputs; got {c} channels "
                         f"(shape {list(shape)})")
    low = min_resolution(spec)
    if h < low or w < low:
        raise InputError(f"input {h}x{w} is too small for {spec.name}: height and width must be at least {low} "
                         f"(its stem kernel)")


def check_input(spec: ArchSpec, x: torch.Tensor, dtype: torch.dtype | None = torch.float32) -> None:
    """Check a tensor's shape (:func:`check_input_shape`) and dtype (``None``: any floating type)."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"expected a torch.Tensor, got {type(x).__name__}")
    check_input_shape(spec, x.shape)
    if not x.dtype.is_floating_point:
        raise InputError(f"{spec.name} takes floating-point (normalised) images; got dtype {x.dtype} "
                         "(convert with x.float() after normalising)")
    if dtype is not None and x.dtype != dtype:
        raise InputError(f"input dtype {x.dtype} does not match the model's {dtype} (use x.to({dtype}))")


def model_spec(model: nn.Module) -> ArchSpec | None:
    spec = getattr(model, "spec", None)
    return spec if isinstance(spec, ArchSpec) else None


def model_dtype(model: nn.Module) -> torch.dtype:
    p = next(model.parameters(), None)
    return p.dtype if p is not None else torch.float32


def as_model(model: nn.Module | ArchSpec | str) -> nn.Module:
    """A module from a module, a spec, a zoo name or a spec file path (random weights for the last three)."""
    if isinstance(model, nn.Module):
        return model
    return build(model)


def example_input(model: nn.Module, resolution: int | Sequence[int] | None = None, batch: int = 1,
                  seed: int = 0) -> torch.Tensor:
    """A seeded standard-normal input batch for ``model`` at ``resolution`` (a side or (height, width); default:
    its spec's), with the channels of the spec that says what it takes (:func:`input_spec`: a task model's
    backbone's)."""
    spec = input_spec(model)
    if resolution is None:
        if spec is None:
            raise ValueError("give a resolution for a module without a spec")
        resolution = spec.resolution
    h, w = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
    channels = spec.in_channels if spec is not None else 3
    if spec is not None:
        check_input_shape(spec, (batch, channels, h, w))
    elif batch < 1 or h < 1 or w < 1:
        raise InputError(f"batch and resolution must be positive, got batch {batch}, {h}x{w}")
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, h, w, generator=g, dtype=model_dtype(model))




def input_spec(model: nn.Module) -> ArchSpec | None:
    """The spec that says what ``model`` takes as input: its own (a classifier) or its backbone's
    (``backbone_spec``: a segmentation or detection model); None for other modules."""
    spec = model_spec(model)
    if spec is None:
        backbone = getattr(model, "backbone_spec", None)
        spec = backbone if isinstance(backbone, ArchSpec) else None
    return spec


def input_shape_for(model: nn.Module, input_shape: Sequence[int] | None = None,
                    resolution: int | Sequence[int] | None = None, batch: int = 1) -> tuple[int, ...]:
    """The (N, C, H, W) shape to feed ``model``: ``input_shape`` checked against its spec (a task model's: its
    backbone's, :func:`input_spec`), else built from ``resolution`` (a side or (height, width); default: the
    spec's) and the spec's channels (3 for a module without a spec)."""
    spec = input_spec(model)
    if input_shape is None:
        if spec is None and resolution is None:
            raise ValueError("give input_shape or resolution for a module without a spec")
        res = resolution or spec.resolution
        h, w = (res, res) if isinstance(res, int) else (int(res[0]), int(res[1]))
        input_shape = (batch, spec.in_channels if spec is not None else 3, h, w)
    input_shape = tuple(int(v) for v in input_shape)
    if spec is not None:
        check_input_shape(spec, input_shape)
    return input_shape


def resolve_input(model: nn.Module, x: torch.Tensor | None = None, resolution: int | None = None, batch: int = 1,
                  require_float32: bool = True) -> torch.Tensor:
    """``x`` checked against ``model``'s spec (float32, or the model's dtype), or :func:`example_input` when
    ``x`` is None."""
    spec = input_spec(model)
    if x is None:
        return example_input(model, resolution, batch)
    if spec is not None:
        check_input(spec, x, torch.float32 if require_float32 else model_dtype(model))
    return x
