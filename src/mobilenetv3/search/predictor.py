"""Predicting a spec's latency from a latency table: the sum of its entries, plus a small learned correction.

The sum misses what isolation changes: each entry is a separate graph, so it pays a runtime call and, for ONNX
Runtime, the layout conversions at its borders (the whole network pays them once), while the network pays nothing
between its pieces. :func:`fit_correction` learns that from end-to-end measurements of sampled specs: a linear
model ``a * sum + b * entries + c * border_elements + d`` fitted by least squares on the relative error (what
RMSPE measures), numpy only. It is kept only when it lowers the error on held-out specs, and the table records by
how much.

A key the table lacks is interpolated over the width (channels) dimension: among the entries of the same
structure (kind, spatial sizes, kernel, stride, residual, SE, activation), linearly in the entry's multiply-adds
between the nearest smaller and larger ones (or extrapolated from the two nearest, at most :data:`MAX_EXTRAPOLATION`
times beyond them). With fewer than two such entries it is refused (:class:`MissingEntryError`), never costed zero.
"""

from __future__ import annotations

import datetime as _dt
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..spec import ArchSpec
from .latency_table import LatencyTable, block_keys, parse_key

MAX_EXTRAPOLATION = 2.0
FEATURES = ("sum_ms", "entries", "border_melements", "constant")


class MissingEntryError(ValueError):
    """A key the table lacks and cannot interpolate (fewer than two entries of its structure)."""


def key_madds(parts: dict[str, Any]) -> float:
    """A key's multiply-adds, from its shapes (the stem's kernel taken as 3x3; only ratios between entries of the
    same structure matter here)."""
    (hi, wi, ci), out = parts["input"], parts["output"]
    kind = parts["kind"]
    if kind == "expanded_conv":
        ho, wo, co = out
        e, k = parts["expand"], parts["kernel"]
        madds = (hi * wi * ci * e if e != ci else 0) + ho * wo * e * k * k + ho * wo * e * co
        return madds + (e * e / 2 if parts["se"] else 0)
    if kind == "Conv":
        return out[0] * out[1] * ci * out[2] * 9
    if kind == "AvgPool2D":
        return hi * wi * ci
    return hi * wi * ci * out[-1]


def structure(parts: dict[str, Any]) -> tuple:
    """What must be equal for two entries to be interpolated between: all but the channel counts."""
    fixed = tuple(v for k, v in sorted(parts.items()) if k not in ("input", "output", "expand"))
    return fixed + (parts["input"][:2], parts["output"][:-1] if len(parts["output"]) > 1 else parts["output"])


def border_elements(parts: dict[str, Any]) -> int:
    return int(np.prod(parts["input"])) + int(np.prod(parts["output"]))


def interpolate(table: LatencyTable, key: str) -> float:
    """``key``'s latency (ms) interpolated from entries of the same structure (module doc)."""
    parts = parse_key(key)
    wanted, target = structure(parts), key_madds(parts)
    points = sorted((key_madds(p), table.median(k)) for k, p in ((k, parse_key(k)) for k in table.entries)
                    if structure(p) == wanted)
    if len(points) < 2:
        raise MissingEntryError(f"the latency table has no entry {key!r} and {len(points)} entr"
                                f"{'y' if len(points) == 1 else 'ies'} of its structure to interpolate from "
                                "(two are needed): build the table for this space")
    below = [p for p in points if p[0] <= target]
    above = [p for p in points if p[0] >= target]
    if below and above:
        (x0, y0), (x1, y1) = below[-1], above[0]
    elif below:
        (x0, y0), (x1, y1) = below[-2], below[-1]
        if target > MAX_EXTRAPOLATION * x1:
            raise MissingEntryError(f"{key!r} is {target / x1:.1f}x the largest entry of its structure; too far "
                                    "to extrapolate")
    else:
        (x0, y0), (x1, y1) = above[0], above[1]
        if target * MAX_EXTRAPOLATION < x0:
            raise MissingEntryError(f"{key!r} is {x0 / max(target, 1):.1f}x below the smallest entry of its "
                                    "structure; too far to extrapolate")
    if x1 == x0:
        return (y0 + y1) / 2
    value = y0 + (y1 - y0) * (target - x0) / (x1 - x0)
    nearest = min(((x0, y0), (x1, y1)), key=lambda p: abs(p[0] - target))
    return value if value > 0 else nearest[1] * target / nearest[0]  # a line through noise can cross zero


@dataclass(frozen=True)
class Prediction:
    """A spec's predicted latency: the entries' sum, the corrected figure, and which keys were interpolated."""

    ms: float
    sum_ms: float
    keys: tuple[str, ...]
    interpolated: tuple[str, ...] = ()
    features: tuple[float, ...] = field(default=(), repr=False)


def table_sum(table: LatencyTable, spec: ArchSpec, resolution: int | None = None) -> Prediction:
    """The sum of ``spec``'s entries at ``resolution`` (default: the table's, else the spec's), interpolating
    missing keys; no correction."""
    res = resolution or table.header.get("resolution") or spec.resolution
    keys = block_keys(spec, res)
    total, border, interpolated = 0.0, 0, []
    for key in keys:
        if key in table.entries:
            total += table.median(key)
        else:
            total += interpolate(table, key)
            interpolated.append(key)
        border += border_elements(parse_key(key))
    features = (total, float(len(keys)), border / 1e6, 1.0)
    return Prediction(total, total, tuple(keys), tuple(interpolated), features)


def predict(table: LatencyTable, spec: ArchSpec, resolution: int | None = None) -> Prediction:
    """``spec``'s predicted latency (ms): the table's sum, corrected by the table's fitted correction when it was
    kept (:func:`fit_correction`)."""
    base = table_sum(table, spec, resolution)
    corr = table.correction
    if not corr or not corr.get("kept"):
        return base
    ms = float(np.dot(corr["coef"], base.features))
    return Prediction(ms if ms > 0 else base.sum_ms, base.sum_ms, base.keys, base.interpolated, base.features)


def rmspe(predicted: Sequence[float], measured: Sequence[float]) -> float:
    """Root mean square percentage error, as a fraction (0.05 = 5%)."""
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    return float(np.sqrt(np.mean(((p - m) / m) ** 2)))


def _lstsq_relative(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    w = 1.0 / y  # rows scaled by 1/y: least squares on the relative error
    coef, *_ = np.linalg.lstsq(x * w[:, None], np.ones_like(y), rcond=None)
    return coef


def fit_correction(table: LatencyTable, specs: Sequence[ArchSpec], measured_ms: Sequence[float], *,
                   holdout: float = 1 / 3, seed: int = 0) -> dict[str, Any]:
    """Fit the correction on ``specs`` measured end to end (``measured_ms``), store it in ``table.correction``
    and return it. A share ``holdout`` of the specs (chosen with ``seed``) is held out: the correction is fitted
    on the rest and kept only if it lowers the held-out RMSPE below the plain sum's; when kept it is refitted on
    all the specs. The record states both held-out errors."""
    if len(specs) != len(measured_ms):
        raise ValueError("one measurement per spec is needed")
    if len(specs) < 2 * len(FEATURES):
        raise ValueError(f"fitting the correction needs at least {2 * len(FEATURES)} measured specs, "
                         f"got {len(specs)}")
    x = np.array([table_sum(table, s).features for s in specs])
    y = np.asarray(measured_ms, float)
    order = list(range(len(y)))
    random.Random(seed).shuffle(order)
    n_held = max(1, round(holdout * len(y)))
    held, fit = np.array(order[:n_held]), np.array(order[n_held:])
    coef = _lstsq_relative(x[fit], y[fit])
    err_sum, err_corr = rmspe(x[held, 0], y[held]), rmspe(x[held] @ coef, y[held])
    kept = err_corr < err_sum
    if kept:
        coef = _lstsq_relative(x, y)
    table.correction = {"features": list(FEATURES), "coef": [float(c) for c in coef], "kept": bool(kept),
                        "samples": len(y), "holdout": int(n_held), "holdout_rmspe_sum": err_sum,
                        "holdout_rmspe_corrected": err_corr,
                        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    return table.correction


__all__ = ["FEATURES", "MAX_EXTRAPOLATION", "MissingEntryError", "Prediction", "fit_correction", "interpolate",
           "key_madds", "predict", "rmspe", "structure", "table_sum"]
