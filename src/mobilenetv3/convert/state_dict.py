"""Reading peer state dicts safely, the shape readers shared by both layouts, and key plans.

A file is read without unpickling arbitrary objects: ``.safetensors`` with safetensors, anything else with
``torch.load(weights_only=True)``. A key plan lists which peer tensor fills which of ours; loading checks it both
ways (every tensor of our model comes from the file, every tensor of the file is used, shapes match), and
exporting walks the same plan backwards, so import and export cannot drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..model import MobileNetV3
from ..spec import ArchSpec

__all__ = [
    "ConversionError", "KeyPair", "PARAM_KINDS", "Source", "check_representable", "conv_bn_pairs",
    "depthwise_kernel", "detect_layout", "export_planned", "load_planned", "pointwise_width", "read_state_dict",
    "require_layout", "se_pairs", "se_squeeze_width", "weight_shape",
]

Source = str | os.PathLike | Mapping[str, torch.Tensor] | nn.Module


class ConversionError(ValueError):
    """A state dict that cannot be converted; the message names the keys, shapes or file at fault."""


# ---------------------------------------------------------------------------------------------------------
# reading files


_WRAPPER_KEYS = ("state_dict", "model")


def read_state_dict(source: Source) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` dict from a path, a mapping or a module.

    Training checkpoints that wrap the weights under ``"state_dict"`` or ``"model"`` are unwrapped (the plain
    weights, not an EMA copy), and a ``module.`` prefix on every key (DistributedDataParallel) is removed.
    """
    if isinstance(source, nn.Module):
        obj, where = source.state_dict(), f"the {type(source).__name__} module's state dict"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        obj, where = _read_file(path), str(path)
    elif isinstance(source, Mapping):
        obj, where = source, "the given state dict"
    else:
        raise TypeError(f"expected a path, a state dict or a module, got {type(source).__name__}")
    return _as_state_dict(obj, where)


def _read_file(path: Path) -> object:
    if not path.exists():
        raise FileNotFoundError(f"weights file not found: {path}")
    if not path.is_file():
        raise ConversionError(f"{path} is not a file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch and safetensors raise many types for damaged files; name the file instead
        detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
        kind = "safetensors" if path.suffix == ".safetensors" else "PyTorch (torch.save)"
        raise ConversionError(
            f"could not read {path} as a {kind} file ({type(e).__name__}: {detail[:200]}). The file may be "
            "truncated or of another format; only state dicts are read (torch.load with weights_only=True), "
            "not whole pickled models") from e


def _as_state_dict(obj: object, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{where} holds a {type(obj).__name__}, not a state dict "
                              "(a mapping of parameter names to tensors)")
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj, where = inner, f"{where} [{key!r}]"
                break
        else:
            bad = [f"{k!r} ({type(v).__name__})" for k, v in obj.items() if not isinstance(v, torch.Tensor)]
            are = "entry is" if len(bad) == 1 else "entries are"
            raise ConversionError(f"{where} is not a state dict: {len(bad)} {are} not tensors: {', '.join(bad[:5])}")
    if not obj:
        raise ConversionError(f"{where} is empty")
    bad_keys = [k for k in obj if not isinstance(k, str)]
    if bad_keys:
        raise ConversionError(f"{where} is not a state dict: key {bad_keys[0]!r} is not a string")
    sd = dict(obj)
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def detect_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``"torchvision"``, ``"timm"`` or ``"mobilenetv3"`` (this library), from the stem's key."""
    if "conv_stem.weight" in state_dict:
        return "timm"
    if "features.0.0.weight" in state_dict:
        return "torchvision"
    if "features.0.conv.weight" in state_dict:
        return "mobilenetv3"
    first = ", ".join(repr(k) for k in list(state_dict)[:5])
    raise ConversionError("cannot tell which library this state dict comes from: expected torchvision's "
                          "'features.0.0.weight' or timm's 'conv_stem.weight' (and the keys that go with them); "
                          f"its first keys are {first}")


def require_layout(sd: Mapping[str, torch.Tensor], library: str) -> None:
    """Refuse a state dict of another layout than ``library``, saying which converter it needs."""
    found = detect_layout(sd)
    if found != library:
        hint = {"torchvision": "use from_torchvision", "timm": "use from_timm",
                "mobilenetv3": "it is this library's own layout: build(spec).load_state_dict(...)"}[found]
        raise ConversionError(f"this is a {found} state dict, not a {library} one; {hint}")


# ---------------------------------------------------------------------------------------------------------
# reading shapes (each checks what it reads, so a foreign file fails with the key at fault)


def weight_shape(sd: Mapping[str, torch.Tensor], key: str, ndim: int, library: str) -> tuple[int, ...]:
    """The shape of ``sd[key]``, which must exist and have ``ndim`` dimensions."""
    if key not in sd:
        raise ConversionError(f"the {library} state dict has no {key!r}; it is not a MobileNetV3 of the expected "
                              "layout (or the file is incomplete)")
    shape = tuple(sd[key].shape)
    if len(shape) != ndim:
        raise ConversionError(f"{key!r} has shape {list(shape)} in the {library} state dict; a "
                              f"{ndim}-dimensional weight was expected")
    return shape


def pointwise_width(sd: Mapping[str, torch.Tensor], key: str, library: str, in_ch: int | None = None) -> int:
    """The output width of a 1x1 conv weight (taking ``in_ch`` inputs when given)."""
    out, cin, kh, kw = weight_shape(sd, key, 4, library)
    if (kh, kw) != (1, 1) or (in_ch is not None and cin != in_ch):
        want = f"[*, {in_ch}, 1, 1]" if in_ch is not None else "[*, *, 1, 1]"
        raise ConversionError(f"{key!r} has shape {[out, cin, kh, kw]}; a 1x1 convolution {want} was expected")
    return out


def depthwise_kernel(sd: Mapping[str, torch.Tensor], key: str, library: str, channels: int) -> int:
    """The kernel size of a depthwise conv weight ``[channels, 1, k, k]`` with odd ``k``."""
    shape = weight_shape(sd, key, 4, library)
    c, one, kh, kw = shape
    if c != channels or one != 1 or kh != kw or kh % 2 == 0:
        raise ConversionError(f"{key!r} has shape {list(shape)}; a depthwise convolution [{channels}, 1, k, k] "
                              "with odd k was expected")
    return kh


def se_squeeze_width(sd: Mapping[str, torch.Tensor], prefix: str, fc1: str, channels: int, library: str) -> int:
    """The SE squeeze width under ``prefix`` (its reducing 1x1 conv is ``fc1``), 0 when there is no SE."""
    key = f"{prefix}.{fc1}.weight"
    return pointwise_width(sd, key, library, channels) if key in sd else 0


# ---------------------------------------------------------------------------------------------------------
# key plans: which peer tensor fills which of ours


@dataclass(frozen=True)
class KeyPair:
    """One of our modules (``ours``) and the peer's module (``peer``) that holds its tensors."""

    ours: str
    peer: str
    kind: str  # a key of PARAM_KINDS


# each kind's tensors as (parameter name, optional)
PARAM_KINDS: dict[str, tuple[tuple[str, bool], ...]] = {
    "conv": (("weight", False),),
    "conv_bias": (("weight", False), ("bias", False)),
    "bn": (("weight", False), ("bias", False), ("running_mean", False), ("running_var", False),
           ("num_batches_tracked", True)),
    "linear": (("weight", False), ("bias", False)),
    "linear_as_conv": (("weight", False), ("bias", False)),  # peer Linear <-> our 1x1 conv
}


def conv_bn_pairs(ours: str, peer_conv: str, peer_bn: str) -> list[KeyPair]:
    """Our ``{ours}.conv``/``{ours}.bn`` filled from the peer's conv and BN modules."""
    return [KeyPair(f"{ours}.conv", peer_conv, "conv"), KeyPair(f"{ours}.bn", peer_bn, "bn")]


def se_pairs(ours: str, reduce: str, expand: str) -> list[KeyPair]:
    """Our block's SE (``{ours}.se``) filled from the peer's reducing and expanding 1x1 convs."""
    return [KeyPair(f"{ours}.se.reduce", reduce, "conv_bias"), KeyPair(f"{ours}.se.expand", expand, "conv_bias")]


def check_representable(spec: ArchSpec, library: str) -> None:
    """Refuse a spec whose head the peer's MobileNetV3 cannot hold (no last conv, SE on it, or no head conv)."""
    problems = []
    if not spec.last_channels:
        problems.append("it has no last 1x1 conv (last_channels=0)")
    if spec.last_se:
        problems.append("it has an SE on the last conv (last_se)")
    if not spec.head_channels:
        problems.append("it has no head conv (head_channels=0)")
    if problems:
        raise ConversionError(f"{spec.name} has no {library} MobileNetV3 layout: {'; '.join(problems)}")


def _list(items: list[str], limit: int = 8) -> str:
    more = f"; ... and {len(items) - limit} more" if len(items) > limit else ""
    return "; ".join(items[:limit]) + more


def load_planned(model: MobileNetV3, sd: Mapping[str, torch.Tensor], plan: list[KeyPair], library: str) -> None:
    """Fill ``model`` from ``sd`` along ``plan``; every missing, mismatched or unused key raises, by name."""
    ours = model.state_dict()
    planned = {f"{p.ours}.{name}" for p in plan for name, _ in PARAM_KINDS[p.kind]}
    if planned != set(ours):  # the plan must cover the module exactly; anything else is a bug here
        raise RuntimeError(f"convert: key plan and module disagree: {sorted(planned ^ set(ours))[:5]}")
    new: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing, mismatched = [], []
    for pair in plan:
        for name, optional in PARAM_KINDS[pair.kind]:
            ok, pk = f"{pair.ours}.{name}", f"{pair.peer}.{name}"
            target = ours[ok]
            if pk not in sd:
                if optional:
                    new[ok] = target
                else:
                    missing.append(f"{pk!r} (for {ok})")
                continue
            used.add(pk)
            t = sd[pk]
            if pair.kind == "linear_as_conv" and name == "weight" and t.dim() == 2:
                t = t[:, :, None, None]
            if tuple(t.shape) != tuple(target.shape):
                mismatched.append(f"{pk!r} is {list(sd[pk].shape)} in the file, {list(target.shape)} expected "
                                  f"(for {ok})")
            elif t.is_floating_point() != target.is_floating_point():
                mismatched.append(f"{pk!r} has dtype {t.dtype}, {target.dtype} expected (for {ok})")
            else:
                new[ok] = t
    unexpected = sorted(set(sd) - used)
    if missing or mismatched or unexpected:
        lines = [f"the {library} state dict does not fit {model.spec.name}:"]
        for label, items in (("missing key", missing), ("shape mismatch", mismatched),
                             ("unexpected key", [repr(k) for k in unexpected])):
            if items:
                plural = ("es" if label.endswith("h") else "s") if len(items) > 1 else ""
                lines.append(f"  {len(items)} {label}{plural}: {_list(items)}")
        raise ConversionError("\n".join(lines))
    model.load_state_dict(new, strict=True)


def export_planned(model: MobileNetV3, plan: list[KeyPair]) -> dict[str, torch.Tensor]:
    """The model's tensors under the peer's keys of ``plan`` (copies; 1x1 conv weights flattened for Linear)."""
    ours = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for pair in plan:
        for name, _ in PARAM_KINDS[pair.kind]:
            t = ours[f"{pair.ours}.{name}"].detach().clone()
            if pair.kind == "linear_as_conv" and name == "weight":
                t = t.flatten(1)
            out[f"{pair.peer}.{name}"] = t
    return out
