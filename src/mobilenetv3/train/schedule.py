"""Learning-rate schedules as pure functions of the optimizer step, so a resumed run needs only the step count."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

SCHEDULES = ("step", "cosine", "constant")
PAPER_BASE_LR = 0.1
PAPER_BASE_BATCH = 4096


def scaled_lr(batch_size: int, base_lr: float = PAPER_BASE_LR, base_batch: int = PAPER_BASE_BATCH) -> float:
    """The linear scaling rule: ``base_lr`` at ``base_batch`` images per step (the paper's 0.1 at 4096), scaled
    in proportion to ``batch_size`` (Goyal et al. 2017)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return base_lr * batch_size / base_batch


@dataclass(frozen=True)
class LRSchedule:
    """Linear warm-up then step decay, cosine decay or a constant rate; ``lr(step)`` for 0-based steps.

    ``step``: ``peak * decay_rate ** floor(step / (decay_epochs * steps_per_epoch))``, counted from step 0 as the
    TF reference's staircase ``exponential_decay`` is (warm-up only replaces the first values).
    ``cosine``: from ``peak`` after warm-up to ``min_lr`` at ``total_steps``.
    Warm-up: ``peak * (step + 1) / warmup_steps`` for the first ``warmup_steps`` steps.
    """

    peak: float
    steps_per_epoch: int
    total_steps: int
    kind: str = "step"
    warmup_epochs: float = 0.0
    decay_rate: float = 0.97
    decay_epochs: float = 2.4
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown lr schedule {self.kind!r} (choose from {', '.join(SCHEDULES)})")
        if self.peak < 0 or self.min_lr < 0:
            raise ValueError("learning rates must be >= 0")
        if self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.kind == "step" and (self.decay_epochs <= 0 or not 0 < self.decay_rate <= 1):
            raise ValueError("step decay needs decay_epochs > 0 and decay_rate in (0, 1]")

    @property
    def warmup_steps(self) -> int:
        return int(round(self.warmup_epochs * self.steps_per_epoch))

    def __call__(self, step: int) -> float:
        warmup = self.warmup_steps
        if step < warmup:
            return self.peak * (step + 1) / warmup
        if self.kind == "constant":
            return self.peak
        if self.kind == "step":
            period = self.decay_epochs * self.steps_per_epoch
            return self.peak * self.decay_rate ** math.floor(step / period)
        span = max(1, self.total_steps - warmup)
        progress = min(1.0, (step - warmup) / span)
        return self.min_lr + (self.peak - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def to_dict(self) -> dict:
        return asdict(self)
