"""Exponential moving average of a model's weights (the paper evaluates the EMA, decay 0.9999)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay_at(step: int, decay: float, warmup: bool = True) -> float:
    """The decay used for the update after optimizer step ``step`` (0-based).

    With ``warmup``: ``min(decay, (1 + step) / (10 + step))``, TensorFlow's ``ExponentialMovingAverage`` with
    ``num_updates``. At decay 0.9999 the plain average would need ~10,000 steps to forget the random
    initialisation, longer than a short run; the correction makes the average cover roughly the last 10% of the
    steps taken so far until the nominal decay takes over (after ~90,000 steps at 0.9999).
    """
    if not warmup:
        return decay
    return min(decay, (1.0 + step) / (10.0 + step))


class ModelEMA:
    """A frozen copy of a model whose floating-point parameters *and* buffers track the model's average.

    Buffers (BatchNorm running mean/variance) are averaged too, as in the TF reference, which puts the moving
    statistics in the EMA's variable list; integer buffers (``num_batches_tracked``) are copied.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def _float_pairs(self, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor], list[tuple]]:
        ema_state = self.module.state_dict()
        floats_e, floats_m, others = [], [], []
        for name, value in model.state_dict().items():
            target = ema_state[name]
            if value.is_floating_point():
                floats_e.append(target)
                floats_m.append(value)
            else:
                others.append((target, value))
        return floats_e, floats_m, others

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> float:
        """Move the average towards ``model`` after optimizer step ``step``; returns the decay used."""
        decay = ema_decay_at(step, self.decay, self.warmup)
        ema_f, model_f, others = self._float_pairs(model)
        torch._foreach_lerp_(ema_f, model_f, 1.0 - decay)
        for target, value in others:
            target.copy_(value)
        return decay

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
