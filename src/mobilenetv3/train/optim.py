"""The optimizer of a run: RMSProp in TensorFlow's form (the paper's) or SGD with Nesterov momentum, with L2 weight
decay on the parameters not exempted."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .config import TrainConfig
from .rmsprop import RMSpropTF


def param_groups(model: nn.Module, weight_decay: float, exempt: str) -> list[dict[str, Any]]:
    """Parameter groups for L2 weight decay; ``exempt``: "none", "norm" (BatchNorm weights and biases) or
    "norm_bias" (those and every bias)."""
    norm_params = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)
                   for p in m.parameters(recurse=False)}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = (exempt in ("norm", "norm_bias") and id(p) in norm_params) or (
            exempt == "norm_bias" and name.endswith(".bias"))
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def make_optimizer(model: nn.Module, c: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, c.weight_decay, c.wd_exempt)
    if c.optimizer == "rmsprop":
        return RMSpropTF(groups, lr=c.lr, alpha=c.rmsprop_decay, eps=c.rmsprop_eps, momentum=c.momentum)
    # SGD's weight_decay is the same L2 term added to the gradient.
    return torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum, nesterov=c.momentum > 0)
