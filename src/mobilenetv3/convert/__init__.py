"""Weight import from torchvision and timm MobileNetV3 state dicts, and export back to their key layouts.

The user brings the files (nothing is downloaded). A source is a path (``.pth``/``.pt`` read with
``torch.load(weights_only=True)``, ``.safetensors`` read with safetensors), an in-memory state dict, or a module.

How a conversion works:

1. The architecture comes from the file's tensor shapes (:func:`infer_spec`): the number of bottlenecks says
   Large (15) or Small (11); kernel sizes and SE presence say whether it is a "minimalistic" model; channel
   widths, the head and the class count are read off the weights. Strides and activations, which shapes cannot
   show, come from the paper's table for that family. When a zoo spec at one of the zoo's widths gives exactly
   these shapes, that spec is used (so a torchvision 1.0 file yields ``mobilenet_v3_large``); otherwise the
   spec built from the shapes is kept under its own name, with a note saying how it differs from the zoo.
   Pass ``arch=`` (a spec or zoo name) for anything shapes cannot tell, e.g. torchvision's dilated backbones.
2. The spec is given the peer's numerics, so that rebuilding from the spec alone reproduces the model:
   torchvision: BN eps 1e-3, symmetric padding; timm ``mobilenetv3_*``: BN eps 1e-5 (PyTorch's default),
   symmetric padding; timm ``tf_mobilenetv3_*``: BN eps 1e-3 and TensorFlow "SAME" padding (``padding="same"``).
3. Keys are mapped by walking the spec's blocks next to the peer's naming; every tensor of our model must come
   from the file and every tensor of the file must be used, with matching shapes. Anything else raises
   :class:`ConversionError` naming the keys. The one optional entry is BN's ``num_batches_tracked`` (some
   exports drop it; it does not affect outputs): when the file lacks it ours stays at 0.

Modules: :mod:`.state_dict` (reading files safely, shape readers, key plans, loading and exporting along a
plan), :mod:`.infer` (a peer's structure -> our spec), :mod:`.torchvision` and :mod:`.timm` (each peer's key
layout, described in its docstring).
"""

from __future__ import annotations

from ..model import MobileNetV3
from ..spec import ArchSpec
from .infer import ArchLike, PeerConvention, spec_from_layout
from .state_dict import ConversionError, Source, detect_layout, read_state_dict
from .timm import (
    NEED_TIMM_NAME,
    TIMM,
    TIMM_TF,
    TimmName,
    from_timm,
    parse_timm_name,
    read_timm,
    timm_spec,
    to_timm,
)
from .torchvision import TORCHVISION, from_torchvision, read_torchvision, to_torchvision

__all__ = [
    "ConversionError", "PeerConvention", "TORCHVISION", "TIMM", "TIMM_TF", "TimmName", "detect_layout",
    "from_timm", "from_torchvision", "infer_spec", "load_peer_weights", "parse_timm_name", "read_state_dict",
    "to_timm", "to_torchvision",
]


def infer_spec(source: Source, library: str | None = None, timm_name: str | None = None) -> ArchSpec:
    """The spec a peer state dict converts to (see the module docstring); ``timm_name`` is needed for timm."""
    sd = read_state_dict(source)
    library = library or detect_layout(sd)
    if library == "timm":
        if timm_name is None:
            raise ConversionError(NEED_TIMM_NAME)
        return timm_spec(read_timm(sd), parse_timm_name(timm_name))
    if library == "torchvision":
        return spec_from_layout(read_torchvision(sd), TORCHVISION)
    raise ConversionError(f"cannot infer a spec from a {library!r} state dict (torchvision or timm only)")


def load_peer_weights(source: Source, library: str | None = None, name: str | None = None,
                      arch: ArchLike | None = None, *, bn_eps: float | None = None) -> MobileNetV3:
    """Convert a torchvision or timm state dict, telling which from its keys unless ``library`` is given.

    timm files also need ``name`` (see :func:`from_timm`).
    """
    sd = read_state_dict(source)
    library = library or detect_layout(sd)
    if library == "torchvision":
        return from_torchvision(sd, arch, bn_eps=bn_eps)
    if library == "timm":
        if name is None:
            raise ConversionError(NEED_TIMM_NAME)
        return from_timm(sd, name, arch, bn_eps=bn_eps)
    if library == "mobilenetv3":
        raise ConversionError("this is this library's own state dict; build(spec).load_state_dict(...) loads it")
    raise ConversionError(f"unknown library {library!r} (torchvision or timm)")
