"""NetAdapt's weight transfer: a trained network's weights carried into a narrower (or wider) copy of itself.

NetAdapt (paper section 4.2) shrinks a trained network one width at a time and fine-tunes each proposal briefly,
so every proposal must start from the trained weights, not from scratch. :func:`transfer_weights` builds the
model of a spec that differs from the source's only in channel widths and fills it from the source.

Every channel dimension of the network belongs to one *channel space* whose channels must be chosen together:

- a residual group (``channels.residual_groups``): the stem or project convs whose outputs the shortcuts add,
  with their BNs, and the input of every layer reading the group;
- an expansion (a block's 1x1 expand conv and everything running on its output: depthwise conv, its BN, the SE's
  input and gate, the project conv's input; ``expand:last`` for the last-stage conv and its SE);
- an SE's squeeze width (it moves with the expansion through ``make_divisible``);
- the head (``conv_head``'s output, the classifier's input).

When a space narrows, the channels kept are those whose producing filters have the largest L2 norm (for a group,
the sum of the norms over all its producers), the usual filter-pruning criterion; they keep their original order.
When a space widens, every source channel is kept and the new ones start as a freshly initialised model would,
from a generator seeded with ``seed``, so a transfer is deterministic and leaves the global RNG alone.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from ..model import MobileNetV3
from ..spec import ArchSpec, BlockSpec, SpecError
from .channels import LAST, STEM, has_expansion, has_shortcut, residual_groups, site_name

# Spec fields that shape no weight: they may differ between the source and the target.
_FREE_FIELDS = ("name", "notes", "extra", "resolution", "dropout")
# Widths: what a transfer changes (their presence, zero or not, must still agree).
_WIDTH_FIELDS = ("stem_channels", "last_channels", "head_channels")
_BLOCK_WIDTHS = ("exp", "out")
_HEAD = "head"


@dataclass(frozen=True)
class _Layout:
    """Where the channel spaces sit in a model's state dict.

    ``axes``: state-dict key -> the space of each tensor dimension (None: a dimension no transfer changes);
    ``widths``: space -> its channels in this spec; ``producers``: space -> the weights whose output filters
    rank its channels."""

    axes: dict[str, tuple[str | None, ...]]
    widths: dict[str, int]
    producers: dict[str, tuple[str, ...]]


def _layout(spec: ArchSpec) -> _Layout:
    axes: dict[str, tuple[str | None, ...]] = {}
    widths: dict[str, int] = {}
    producers: dict[str, tuple[str, ...]] = {}

    def space(name: str, width: int, *ranked_by: str) -> str:
        widths[name], producers[name] = width, ranked_by
        return name

    def conv_bn(prefix: str, out: str, inp: str | None) -> None:
        axes[f"{prefix}.conv.weight"] = (out, inp, None, None)
        for n in ("weight", "bias", "running_mean", "running_var"):
            axes[f"{prefix}.bn.{n}"] = (out,)
        axes[f"{prefix}.bn.num_batches_tracked"] = ()

    def squeeze_excite(prefix: str, channels: str, squeeze: str) -> None:
        axes[f"{prefix}.reduce.weight"] = (squeeze, channels, None, None)
        axes[f"{prefix}.reduce.bias"] = (squeeze,)
        axes[f"{prefix}.expand.weight"] = (channels, squeeze, None, None)
        axes[f"{prefix}.expand.bias"] = (channels,)

    group_of: dict[int, str] = {}
    for g in residual_groups(spec):
        space(g.name, g.width, *("features.0.conv.weight" if m == STEM else f"features.{m + 1}.project.conv.weight"
                                 for m in g.members))
        group_of.update(dict.fromkeys(g.members, g.name))
    conv_bn("features.0", group_of[STEM], None)
    prev = group_of[STEM]
    for i, block in enumerate(spec.blocks):
        p = f"features.{i + 1}"
        inner = prev  # without an expansion the depthwise conv runs on the block's input channels
        if has_expansion(spec, i):
            inner = space(site_name(i), block.exp, f"{p}.expand.conv.weight")
            conv_bn(f"{p}.expand", inner, prev)
        conv_bn(f"{p}.dw", inner, None)  # depthwise: dim 0 only (groups = channels)
        if block.se:
            squeeze_excite(f"{p}.se", inner, space(f"se:block{i + 1}", spec.se_channels(i), f"{p}.se.reduce.weight"))
        conv_bn(f"{p}.project", group_of[i], inner)
        prev = group_of[i]
    index = len(spec.blocks) + 1
    if spec.last_channels:
        prev = space(site_name(LAST), spec.last_channels, f"features.{index}.conv.weight")
        conv_bn(f"features.{index}", prev, group_of[len(spec.blocks) - 1])
        if spec.last_se:
            squeeze = space("se:last", spec.last_se_channels(), f"features.{index + 1}.reduce.weight")
            squeeze_excite(f"features.{index + 1}", prev, squeeze)
    if spec.head_channels:
        axes["conv_head.weight"] = (space(_HEAD, spec.head_channels, "conv_head.weight"), prev, None, None)
        axes["conv_head.bias"] = (_HEAD,)
        prev = _HEAD
    axes["classifier.weight"] = (None, prev)
    axes["classifier.bias"] = (None,)
    return _Layout(axes, widths, producers)


def _first_difference(source: ArchSpec, target: ArchSpec) -> str | None:
    """What, besides channel widths, differs between two specs (None: nothing)."""
    if len(source.blocks) != len(target.blocks):
        return f"number of blocks: {len(source.blocks)} in the source, {len(target.blocks)} in the target"
    skip = set(_FREE_FIELDS) | set(_WIDTH_FIELDS) | {"blocks"}
    for f in fields(ArchSpec):
        a, b = getattr(source, f.name), getattr(target, f.name)
        if f.name not in skip and a != b:
            return f"{f.name}: {a!r} in the source, {b!r} in the target"
    for name in ("last_channels", "head_channels"):
        a, b = getattr(source, name), getattr(target, name)
        if bool(a) != bool(b):
            return f"{name}: {a} in the source, {b} in the target (a layer would appear or vanish)"
    fixed = [f.name for f in fields(BlockSpec) if f.name not in _BLOCK_WIDTHS]
    for i, (a, b) in enumerate(zip(source.blocks, target.blocks, strict=True)):
        for name in fixed:
            if getattr(a, name) != getattr(b, name):
                return f"block {i + 1}: {name} {getattr(a, name)!r} in the source, {getattr(b, name)!r} in the target"
        for what, test in (("a 1x1 expansion", has_expansion), ("a shortcut", has_shortcut)):
            had, has = test(source, i), test(target, i)
            if had != has:
                return (f"block {i + 1}: {what} {'in the source but not' if had else 'not in the source but'} "
                        "in the target")
    return None


def _check_source(source: MobileNetV3, layout: _Layout, state: dict[str, torch.Tensor]) -> None:
    """The source's weights must be those its spec builds (checked on every dimension a transfer changes)."""
    missing = sorted(set(layout.axes) - set(state))
    extra = sorted(set(state) - set(layout.axes))
    if missing or extra:
        raise ValueError(f"the source model's weights do not match its spec {source.spec.name!r}: "
                         f"missing {missing[:3]}, unexpected {extra[:3]}")
    for key, axes in layout.axes.items():
        shape = tuple(state[key].shape)
        if len(shape) != len(axes) or any(
                s is not None and n != layout.widths[s] for n, s in zip(shape, axes, strict=True)):
            expected = tuple("?" if s is None else layout.widths[s] for s in axes)
            raise ValueError(f"the source model's {key} has shape {shape}, its spec {source.spec.name!r} "
                             f"says {expected}")


def _kept(layout: _Layout, target: _Layout, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    kept = {}
    for name, width in layout.widths.items():
        new = target.widths[name]
        if new >= width:
            kept[name] = torch.arange(width)
            continue
        importance = sum(state[k].detach().double().flatten(1).norm(dim=1).cpu() for k in layout.producers[name])
        order = torch.argsort(importance, descending=True, stable=True)  # ties: the lower index first
        kept[name] = order[:new].sort().values
    return kept


def _seeded_init(model: nn.Module, generator: torch.Generator) -> None:
    """``model.init_weights``' distributions, drawn from ``generator`` instead of the global RNG."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
            m.reset_running_stats()
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01, generator=generator)
            nn.init.zeros_(m.bias)


def _plan(source: MobileNetV3, spec: ArchSpec) -> tuple[_Layout, dict[str, torch.Tensor]]:
    if not isinstance(source, MobileNetV3):
        raise TypeError(f"source must be a MobileNetV3, got {type(source).__name__}")
    if not isinstance(spec, ArchSpec):
        raise TypeError(f"spec must be an ArchSpec, got {type(spec).__name__}")
    difference = _first_difference(source.spec, spec)
    if difference:
        raise SpecError(f"cannot transfer weights from {source.spec.name!r} to {spec.name!r}: the structure "
                        f"differs ({difference})")
    layout, state = _layout(source.spec), source.state_dict()
    _check_source(source, layout, state)
    return layout, state


def kept_channels(source: MobileNetV3, spec: ArchSpec) -> dict[str, tuple[int, ...]]:
    """Per channel space (``group:...``, ``expand:blockN``, ``expand:last``, ``se:blockN``, ``se:last``,
    ``head``), the source channels :func:`transfer_weights` keeps, ascending; all of them where ``spec`` is as
    wide or wider."""
    layout, state = _plan(source, spec)
    return {name: tuple(int(c) for c in idx) for name, idx in _kept(layout, _layout(spec), state).items()}


def transfer_weights(source: MobileNetV3, spec: ArchSpec, *, seed: int = 0) -> MobileNetV3:
    """A new model built from ``spec`` carrying ``source``'s weights (see the module docstring for the rule).

    ``spec`` must differ from ``source.spec`` only in channel widths (and in name, notes, extra, resolution or
    dropout, which shape no weight); anything else is a :class:`SpecError` naming the first difference. The
    result is on ``source``'s device and dtype, in its train/eval mode, module by module.
    """
    layout, state = _plan(source, spec)
    target = _layout(spec)
    with torch.random.fork_rng(devices=[]):  # building draws from the global RNG; the caller's stays as it was
        model = MobileNetV3(spec)
    generator = torch.Generator().manual_seed(seed)
    _seeded_init(model, generator)
    fresh = model.state_dict()
    kept = _kept(layout, target, state)
    new_state = {}
    for key, axes in target.axes.items():
        src, dst = state[key].detach().cpu(), fresh[key].clone()
        region = []
        for dim, name in enumerate(axes):
            if name is None:
                region.append(slice(None))
            else:
                src = src.index_select(dim, kept[name])
                region.append(slice(0, len(kept[name])))
        if src.shape != dst[tuple(region)].shape:  # a dimension no width touches (kernel, classes, ...)
            raise ValueError(f"the source model's {key} has shape {tuple(state[key].shape)}, which does not "
                             f"match its spec {source.spec.name!r}")
        dst[tuple(region)] = src.to(dst.dtype)
        new_state[key] = dst
    model.load_state_dict(new_state)
    first = next(source.parameters())
    model.to(device=first.device, dtype=first.dtype)
    modes = dict(source.named_modules())
    for name, module in model.named_modules():
        module.training = modes[name].training if name in modes else source.training
    return model


__all__ = ["kept_channels", "transfer_weights"]
