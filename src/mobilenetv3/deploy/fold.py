"""BatchNorm folding: every BatchNorm2d that directly follows a Conv2d is merged into the convolution.

In eval mode BN is the per-channel affine map ``y = (x - mean) * g + beta`` with ``g = gamma / sqrt(var + eps)``,
so ``BN(conv(x))`` equals a convolution with weights ``W * g`` (per output channel) and bias
``(b - mean) * g + beta``. Folding removes one memory pass per convolution and is what every inference
runtime does; the folded model is what we export.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn


def _fold_pair(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm2d without running statistics (track_running_stats=False)")
    if bn.num_features != conv.out_channels:
        raise ValueError(f"BatchNorm2d has {bn.num_features} features but the conv before it has "
                         f"{conv.out_channels} output channels")
    # float64 for the arithmetic, so folding adds no rounding beyond the final cast
    dtype = conv.weight.dtype
    var = bn.running_var.double()
    mean = bn.running_mean.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(var)
    folded = copy.deepcopy(conv)  # keeps the class (e.g. SameConv2d and its padding rule)
    with torch.no_grad():
        folded.weight = nn.Parameter((conv.weight.double() * scale.reshape(-1, 1, 1, 1)).to(dtype))
        folded.bias = nn.Parameter(((bias - mean) * scale + beta).to(dtype))
    return folded


def _fold_sequential(seq: nn.Sequential) -> int:
    names = list(seq._modules)
    folded = 0
    for a, b in zip(names, names[1:], strict=False):
        conv, bn = seq._modules[a], seq._modules[b]
        if type(bn) is nn.BatchNorm2d and isinstance(conv, nn.Conv2d):
            seq._modules[a] = _fold_pair(conv, bn)
            seq._modules[b] = nn.Identity()
            folded += 1
    return folded


def fold_bn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with each ``Conv2d -> BatchNorm2d`` pair (consecutive children of an
    ``nn.Sequential``, as in :class:`~mobilenetv3.layers.ConvNormAct`) merged into one biased convolution.

    The BN is replaced by ``nn.Identity`` so module names (``conv``, ``bn``, ``act``) stay as they were. The
    original model is left untouched. Its outputs equal the unfolded model's in eval mode up to float rounding.
    """
    folded = copy.deepcopy(model).eval()
    for module in list(folded.modules()):
        if isinstance(module, nn.Sequential):
            _fold_sequential(module)
    return folded


def count_batchnorms(model: nn.Module) -> int:
    """How many BatchNorm layers a model still has (0 after :func:`fold_bn` on any spec-built model)."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def calibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics as the plain average over ``batches`` (train-mode
    forward passes without gradients) and return the model in eval mode; weights are not changed.

    Fed random inputs, this gives an *untrained* model activations of a realistic scale in eval mode (BN outputs of
    unit variance instead of ones that shrink layer after layer to ~1e-9 logits), so that numerical checks of
    folding and export compare numbers that mean something.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    model.train()
    try:
        with torch.no_grad():
            seen = 0
            for x in batches:
                model(x)
                seen += 1
        if seen == 0:
            raise ValueError("calibrate_bn needs at least one batch")
    finally:
        for m, momentum in zip(bns, momenta, strict=True):
            m.momentum = momentum
        model.eval()
    return model


def calibrate_bn_on_noise(model: nn.Module, resolution: int | tuple[int, int], batches: int = 2, batch_size: int = 8,
                          seed: int = 0) -> nn.Module:
    """:func:`calibrate_bn` on seeded standard-normal images of ``resolution`` (a side, or (height, width)) for
    models without weights."""
    channels = getattr(getattr(model, "spec", None), "in_channels", 3)
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    g = torch.Generator().manual_seed(seed)
    return calibrate_bn(model, (torch.randn(batch_size, channels, h, w, generator=g) for _ in range(batches)))
