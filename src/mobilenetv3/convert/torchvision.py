"""torchvision's MobileNetV3 layout: reading its state dicts into our spec and weights, and exporting back.

Layout: ``features.0.{0,1}`` stem conv/BN; ``features.{i}.block.{j}`` with ``j`` running over [expand,]
depthwise, [SE (``fc1``/``fc2``),] project, each conv ``.0`` and BN ``.1`` (the expansion is left out when its
width equals the input's, as in ours); ``features.{n+1}`` the last 1x1 conv; the classifier is
``Linear(960, 1280) -> Hardswish -> Dropout -> Linear``, whose first Linear is our 1x1 ``conv_head`` (weight
reshaped to ``[out, in, 1, 1]``) and whose last is our ``classifier``.

Numerics: BN eps 1e-3 and symmetric padding.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from ..model import MobileNetV3
from ..spec import ArchSpec
from .infer import ArchLike, PeerBlock, PeerConvention, PeerLayout, resolve_arch, spec_from_layout, with_eps
from .state_dict import (
    ConversionError,
    KeyPair,
    Source,
    check_representable,
    conv_bn_pairs,
    depthwise_kernel,
    export_planned,
    load_planned,
    pointwise_width,
    read_state_dict,
    require_layout,
    se_pairs,
    se_squeeze_width,
    weight_shape,
)

__all__ = ["TORCHVISION", "from_torchvision", "read_torchvision", "to_torchvision", "torchvision_plan"]

TORCHVISION = PeerConvention("torchvision", 1e-3, "symmetric")


def read_torchvision(sd: Mapping[str, torch.Tensor]) -> PeerLayout:
    """The structure of a torchvision MobileNetV3 state dict, every shape checked against its neighbours."""
    lib = "torchvision"
    stem_out, stem_in, k, _ = weight_shape(sd, "features.0.0.weight", 4, lib)
    blocks, prev, i = [], stem_out, 1
    while f"features.{i}.block.0.0.weight" in sd:
        p = f"features.{i}.block"
        subs = sorted({int(m[1]) for key in sd if (m := re.match(rf"^{re.escape(p)}\.(\d+)\.", key))})
        convs = [j for j in subs if f"{p}.{j}.0.weight" in sd]
        ses = [j for j in subs if f"{p}.{j}.fc1.weight" in sd]
        if len(convs) not in (2, 3) or len(ses) > 1:
            raise ConversionError(f"{p} has {len(convs)} conv layers and {len(ses)} SE layers; a MobileNetV3 "
                                  "bottleneck has [expand,] depthwise, [SE,] project")
        has_expand = len(convs) == 3
        exp = pointwise_width(sd, f"{p}.{convs[0]}.0.weight", lib, prev) if has_expand else prev
        kernel = depthwise_kernel(sd, f"{p}.{convs[-2]}.0.weight", lib, exp)
        squeeze = se_squeeze_width(sd, f"{p}.{ses[0]}", "fc1", exp, lib) if ses else 0
        if ses and not convs[-2] < ses[0] < convs[-1]:
            raise ConversionError(f"{p}.{ses[0]} (SE) is not between the depthwise and the project convs")
        out = pointwise_width(sd, f"{p}.{convs[-1]}.0.weight", lib, exp)
        blocks.append(PeerBlock(f"features.{i}", prev, exp, out, kernel, squeeze, has_expand))
        prev, i = out, i + 1
    last = pointwise_width(sd, f"features.{i}.0.weight", lib, prev)
    head, head_in = weight_shape(sd, "classifier.0.weight", 2, lib)
    num_classes, cls_in = weight_shape(sd, "classifier.3.weight", 2, lib)
    if head_in != last or cls_in != head:
        raise ConversionError(f"the torchvision classifier's shapes ({[head, head_in]}, {[num_classes, cls_in]}) do "
                              f"not follow the last conv's {last} channels")
    return PeerLayout(lib, (stem_out, stem_in, k), tuple(blocks), f"features.{i}", last, head, num_classes)


def torchvision_plan(spec: ArchSpec) -> list[KeyPair]:
    """Which torchvision key fills each of our modules, for a model built from ``spec``."""
    check_representable(spec, "torchvision")
    plan = conv_bn_pairs("features.0", "features.0.0", "features.0.1")
    for i, (b, in_ch) in enumerate(zip(spec.blocks, spec.block_inputs(), strict=True)):
        ours, peer, j = f"features.{i + 1}", f"features.{i + 1}.block", 0
        if b.exp != in_ch:
            plan += conv_bn_pairs(f"{ours}.expand", f"{peer}.{j}.0", f"{peer}.{j}.1")
            j += 1
        plan += conv_bn_pairs(f"{ours}.dw", f"{peer}.{j}.0", f"{peer}.{j}.1")
        j += 1
        if spec.se_channels(i):
            plan += se_pairs(ours, f"{peer}.{j}.fc1", f"{peer}.{j}.fc2")
            j += 1
        plan += conv_bn_pairs(f"{ours}.project", f"{peer}.{j}.0", f"{peer}.{j}.1")
    last = f"features.{len(spec.blocks) + 1}"
    plan += conv_bn_pairs(last, f"{last}.0", f"{last}.1")
    plan += [KeyPair("conv_head", "classifier.0", "linear_as_conv"), KeyPair("classifier", "classifier.3", "linear")]
    return plan


def from_torchvision(source: Source, arch: ArchLike | None = None, *, bn_eps: float | None = None) -> MobileNetV3:
    """A :class:`MobileNetV3` (in eval mode) holding torchvision ``mobilenet_v3_large/small`` weights.

    ``arch`` (a spec or zoo name) overrides the architecture read from the shapes; its ``bn_eps`` and
    ``padding`` are set to torchvision's (``bn_eps`` here overrides the 1e-3), its class count to the file's.
    """
    sd = read_state_dict(source)
    require_layout(sd, "torchvision")
    conv = with_eps(TORCHVISION, bn_eps)
    if arch is None:
        spec = spec_from_layout(read_torchvision(sd), conv)
    else:
        cls = sd.get("classifier.3.weight")
        spec = resolve_arch(arch, conv, cls.shape[0] if cls is not None and cls.dim() == 2 else None)
        n = 1
        while f"features.{n}.block.0.0.weight" in sd:
            n += 1
        if n - 1 != len(spec.blocks):
            raise ConversionError(f"the torchvision state dict has {n - 1} bottleneck blocks (features.1 to "
                                  f"features.{n - 1}), {spec.name} has {len(spec.blocks)}")
    model = MobileNetV3(spec)
    load_planned(model, sd, torchvision_plan(spec), "torchvision")
    return model.eval()


def to_torchvision(model: MobileNetV3) -> dict[str, torch.Tensor]:
    """The model's weights under torchvision's MobileNetV3 keys (the inverse of :func:`from_torchvision`).

    torchvision has no TensorFlow "SAME" padding, so ``padding="same"`` models are refused. torchvision builds
    its BN with eps 1e-3; a model with another ``bn_eps`` needs ``norm_layer=partial(nn.BatchNorm2d, eps=...)``
    on the torchvision side to give the same outputs.
    """
    if model.spec.padding != "symmetric":
        raise ConversionError(f"{model.spec.name} uses padding={model.spec.padding!r}; torchvision's MobileNetV3 "
                              "only pads symmetrically, so its outputs would differ")
    return export_planned(model, torchvision_plan(model.spec))
