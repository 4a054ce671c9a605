"""The platform-aware NAS reward: accuracy traded against latency around a target (MnasNet, paper section 4.1).

MnasNet (Tan et al. 2019, section 3) scores a sampled model m by

    ACC(m) x [LAT(m) / T] ** w,   w = alpha if LAT(m) <= T else beta

- soft constraint (MnasNet's and MobileNetV3's choice): alpha = beta = w, so every millisecond counts on both
  sides of the target and the search approximates Pareto-optimal models around it;
- hard constraint: alpha = 0, beta = -1: a model at or below the target scores its accuracy, one above it is
  penalised in proportion to how far above it is.

The weight w sets how much accuracy one latency ratio is worth: MnasNet used w = -0.07 ("2x latency is worth about
5% relative accuracy"); section 4.1 of MobileNetV3 found small models' accuracy changes much faster with latency
and used w = -0.15 for the Small search (:data:`W_PRESETS`).
"""

from __future__ import annotations

import math

W_PRESETS: dict[str, float] = {"mobilenet_v3_large": -0.07, "mobilenet_v3_small": -0.15}


def exponent(latency_ms: float, target_ms: float, w: float, hard: bool) -> float:
    """The exponent applied to ``LAT / T``: ``w`` (soft), or 0 at/below and -1 above the target (hard)."""
    if hard:
        return 0.0 if latency_ms <= target_ms else -1.0
    return w


def reward(accuracy: float, latency_ms: float, target_ms: float, w: float = -0.07, *, hard: bool = False) -> float:
    """MnasNet's multi-objective reward ``accuracy x (latency_ms / target_ms) ** exponent`` (see the module doc).

    ``accuracy`` is used as given (the NAS loop passes a fraction in 0..1); ``w`` is ignored when ``hard``.
    Latency and target must be positive finite milliseconds, and ``w`` must not be positive (a positive weight
    would reward slower models)."""
    for name, value in (("latency_ms", latency_ms), ("target_ms", target_ms)):
        if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"reward: {name} must be a positive number of milliseconds, got {value!r}")
    if not isinstance(accuracy, int | float) or not math.isfinite(accuracy) or accuracy < 0:
        raise ValueError(f"reward: accuracy must be a finite number >= 0, got {accuracy!r}")
    if not hard and (not math.isfinite(w) or w > 0):
        raise ValueError(f"reward: the latency weight w must be <= 0 (MnasNet -0.07, V3-Small -0.15), got {w!r}")
    return float(accuracy) * (latency_ms / target_ms) ** exponent(latency_ms, target_ms, w, hard)


def default_w(space_name: str) -> float:
    """The paper's w for a preset space; other spaces must give w explicitly."""
    if space_name not in W_PRESETS:
        raise ValueError(f"no default latency weight w for space {space_name!r} (presets: "
                         f"{', '.join(f'{k} {v}' for k, v in W_PRESETS.items())}); give w explicitly")
    return W_PRESETS[space_name]


__all__ = ["W_PRESETS", "default_w", "exponent", "reward"]
