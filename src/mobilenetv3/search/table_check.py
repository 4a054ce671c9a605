"""How good a latency table is on this machine: its predictions against end-to-end measurements of sampled specs.

:func:`check_table` samples specs from the table's space, measures each end to end on the table's runtime,
threads and resolution (random weights: latency does not depend on them) and reports RMSPE, the share within 5%
and 10%, Kendall's tau, and the noise floor: the RMSPE of two independent measurements of the same specs against
each other, which no predictor can beat. :func:`fit_table` fits the predictor's correction on another sample (a
different seed, so a check never scores specs the correction was fitted on).

End to end, every spec is prepared once and all are then timed in interleaved rounds
(:func:`measure_interleaved`): a machine whose speed drifts (a shared or virtual machine) slows every spec of a
round alike instead of the specs that happened to be measured in a slow minute. A spec's latency is the median of
its round medians; the two independent measurements of the noise floor are the medians of its even and of its
odd rounds. A table built with relative timing is checked the same way: every spec's round figure is its ratio to
the table's reference network, timed alternately in short bursts, times the table's reference latency.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..inputs import example_input
from ..latency.targets import prepare_runtime
from ..model import build
from ..runtime.cpu import pinned_threads, this_cpu
from ..runtime.timing import time_interleaved
from ..spec import ArchSpec
from .latency_table import LatencyTable, check_compatible, load_table, table_clock, table_relative
from .predictor import fit_correction, predict, rmspe, table_sum
from .table_builder import reference_runner

CHECK_SEED, FIT_SEED = 1, 2


def within(predicted: Sequence[float], measured: Sequence[float], tolerance: float) -> float:
    """The share (0..1) of predictions within ``tolerance`` (0.05 = 5%) of the measurement."""
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    return float(np.mean(np.abs(p - m) <= tolerance * m))


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b between two rankings: (concordant - discordant) pairs over the pairs not tied, with the
    ties of each side taken out as tau-b does, so tied values neither help nor hurt. O(n^2), numpy only."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    if len(x) != len(y) or len(x) < 2:
        raise ValueError("Kendall's tau needs two sequences of the same length, at least 2")
    i, j = np.triu_indices(len(x), k=1)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    n0 = len(i)
    n1 = int(np.sum(dx == 0))  # pairs tied in a
    n2 = int(np.sum(dy == 0))  # pairs tied in b
    denominator = np.sqrt(float(n0 - n1) * float(n0 - n2))
    if denominator == 0:
        raise ValueError("Kendall's tau is undefined when one side is all ties")
    return float(np.sum(dx * dy) / denominator)


def sample_specs(space: Any, n: int, seed: int) -> list[ArchSpec]:
    rng = random.Random(seed)
    return [space.sample(rng) for _ in range(n)]


MeasureFn = Callable[[ArchSpec], float]
ROUNDS = 6  # interleaved rounds of end-to-end timing; even and odd rounds give the noise floor's two measurements


STATISTICS = {"median": np.median, "min": np.min}


def measure_interleaved(table: LatencyTable, specs: Sequence[ArchSpec], *, rounds: int = ROUNDS, warmup: int = 3,
                        min_runs: int = 10, min_seconds: float = 0.1, progress: bool = True,
                        statistic: str = "median", sessions: int = 1) -> tuple[list[float], list[float], list[float]]:
    """End-to-end latency (ms) of ``specs`` on the table's runtime, threads and resolution, each prepared
    ``sessions`` times and every session timed in ``rounds`` interleaved rounds with the table's clock: per spec,
    the median over its sessions of (``statistic`` of all rounds' medians, of the even rounds', of the odd
    rounds').

    ``statistic`` ``min`` takes the least disturbed round: on a shared machine other tenants only ever add time,
    and the fastest round of many is far more repeatable than their median. ``sessions`` > 1 guards against a
    session that runs slow for its whole life (its memory placement, say): on a 2-vCPU VM one session of two
    specs measured a ratio of 0.69 where three sessions each measured 0.81."""
    if rounds < 2:
        raise ValueError(f"rounds must be at least 2 (even and odd rounds give the noise floor), got {rounds}")
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {', '.join(STATISTICS)}, got {statistic!r}")
    if sessions < 1:
        raise ValueError(f"sessions must be >= 1, got {sessions}")
    reduce = STATISTICS[statistic]
    h = table.header
    runners = {}
    reference, scale = None, 1.0
    if table_relative(table):  # timed as the entries were: against the table's reference, in its units
        reference, scale = reference_runner(table)
    with pinned_threads(h["threads"]) as threads:
        for i, spec in enumerate(_progress(list(specs), progress, "prepare")):
            model = build(spec).eval()
            for k in range(sessions):
                key = i if sessions == 1 else (i, k)
                runners[key] = prepare_runtime(h["runtime"], model, example_input(model, h["resolution"]),
                                               threads).run
        bar = _progress(range(rounds * len(runners)), progress, "time") if progress else None
        medians = time_interleaved(runners, rounds=rounds, warmup=warmup, min_runs=min_runs,
                                   min_seconds=min_seconds, clock=table_clock(table),
                                   on_step=(lambda _: bar.update()) if bar else None, reference=reference)
        medians = {k: [m * scale for m in v] for k, v in medians.items()}
    if bar is not None:
        bar.close()
    out: tuple[list[float], list[float], list[float]] = ([], [], [])
    for i in range(len(specs)):
        per_session = [medians[i if sessions == 1 else (i, k)] for k in range(sessions)]
        out[0].append(float(np.median([reduce(m) for m in per_session])))
        out[1].append(float(np.median([reduce(m[0::2]) for m in per_session])))
        out[2].append(float(np.median([reduce(m[1::2]) for m in per_session])))
    return out


def open_checked(path: str | Path, force: bool) -> tuple[LatencyTable, list[str]]:
    """The table at ``path``, refused when it was measured on another CPU (unless ``force``)."""
    table = load_table(path)
    for name in ("runtime", "threads", "resolution"):
        if name not in table.header:
            raise ValueError(f"{path}: the header records no {name} (an imported table): it cannot be checked "
                             "end to end here")
    return table, check_compatible(table, force=force, **this_cpu())


def fit_table(path: str | Path, space: Any, samples: int, *, force: bool = False, measure: MeasureFn | None = None,
              seed: int = FIT_SEED, progress: bool = True, **timing: Any) -> dict[str, Any]:
    """Measure ``samples`` specs of ``space`` (seed ``seed``), fit the correction on them and save it in the
    table file; returns the correction record."""
    table, _ = open_checked(path, force)
    specs = sample_specs(space, samples, seed)
    if measure is None:
        measured = measure_interleaved(table, specs, progress=progress, **timing)[0]
    else:
        measured = [measure(s) for s in _progress(specs, progress, "fit")]
    record = fit_correction(table, specs, measured)
    table.save(path)
    return record


def check_table(path: str | Path, space: Any, samples: int, *, force: bool = False, measure: MeasureFn | None = None,
                seed: int = CHECK_SEED, progress: bool = True, **timing: Any) -> dict[str, Any]:
    """Predicted against measured for ``samples`` specs of ``space`` (seed ``seed``) measured in interleaved rounds
    (``measure``, when given, measures one spec and is called twice per spec instead); the
    report's ``rmspe``, ``within_5``, ``within_10`` and ``kendall_tau`` score the predictor the table holds (the
    sum corrected when a correction was kept), ``sum_*`` the plain sum, ``noise_rmspe`` the second measurement
    against the first. Fractions in 0..1."""
    table, diffs = open_checked(path, force)
    specs = sample_specs(space, samples, seed)
    predicted, summed, interpolated = [], [], 0
    for spec in specs:
        p = predict(table, spec)
        predicted.append(p.ms)
        summed.append(table_sum(table, spec).ms)
        interpolated += len(p.interpolated)
    if measure is None:
        measured, first, second = measure_interleaved(table, specs, progress=progress, **timing)
    else:
        first, second = [], []
        for spec in _progress(specs, progress, "check"):
            first.append(measure(spec))
            second.append(measure(spec))
        measured = first
    corr = table.correction or {}
    return {"rmspe": rmspe(predicted, measured), "within_5": within(predicted, measured, 0.05),
            "within_10": within(predicted, measured, 0.10), "kendall_tau": kendall_tau(predicted, measured),
            "noise_rmspe": rmspe(second, first), "samples": samples,
            "sum_rmspe": rmspe(summed, measured), "sum_within_10": within(summed, measured, 0.10),
            "sum_kendall_tau": kendall_tau(summed, measured), "correction_kept": bool(corr.get("kept")),
            "interpolated_keys": interpolated, "entries": len(table.entries), "header": table.header,
            "mismatches_forced": diffs,
            "specs": [{"name": s.name, "predicted_ms": p, "sum_ms": q, "measured_ms": m, "first_ms": a, "second_ms": b}
                      for s, p, q, m, a, b in zip(specs, predicted, summed, measured, first, second, strict=True)]}


def rank_check(table: LatencyTable, specs: Sequence[ArchSpec], measure: MeasureFn | None = None) -> dict[str, Any]:
    """Whether the predictor orders ``specs`` (e.g. the zoo's V3-Small widths) as measured (interleaved rounds
    unless ``measure`` is given)."""
    predicted = [predict(table, s).ms for s in specs]
    if measure is None:
        measured = measure_interleaved(table, specs, progress=False)[0]
    else:
        measured = [measure(s) for s in specs]
    order = lambda v: [specs[i].name for i in np.argsort(v, kind="stable")]  # noqa: E731
    return {"predicted_order": order(predicted), "measured_order": order(measured),
            "same_order": order(predicted) == order(measured), "predicted_ms": predicted, "measured_ms": measured}


def _progress(items: list, on: bool, desc: str):
    if not on:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="spec")


__all__ = ["CHECK_SEED", "FIT_SEED", "ROUNDS", "STATISTICS", "check_table", "fit_table", "kendall_tau",
           "measure_interleaved", "open_checked", "rank_check", "sample_specs", "within"]
