"""The timing harness: statistics over timed runs, clocks, and timing several runners in interleaved rounds.

Latency is measured the paper's way: batch 1, one thread by default, warm-up runs, then the median of many runs.
:func:`time_callable` runs a callable until it has at least ``min_runs`` timed runs *and* at least
``min_seconds`` of timing, then reports the median, p10, p90 and mean. :func:`time_interleaved` times several
runners round after round, so that a change in the machine's load touches them alike.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


# -- statistics -------------------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass(frozen=True)
class TimingStats:
    """Summary of timed runs, in milliseconds."""

    runs: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    total_s: float

    @classmethod
    def from_samples(cls, samples_s: Sequence[float]) -> TimingStats:
        if not samples_s:
            raise ValueError("no timed runs")
        ms = [s * 1e3 for s in samples_s]
        return cls(runs=len(ms), median_ms=percentile(ms, 50), p10_ms=percentile(ms, 10),
                   p90_ms=percentile(ms, 90), mean_ms=sum(ms) / len(ms), min_ms=min(ms), max_ms=max(ms),
                   total_s=sum(samples_s))


# wall: elapsed time. cpu: the calling thread's CPU time, which leaves out the time the scheduler gives other
# processes on a busy machine; with one thread PyTorch and ONNX Runtime compute on the calling thread, so it is the
# forward pass's own time there (with more threads it would miss the other threads' work: refused).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.thread_time}


def clock_timer(clock: str, threads: int = 1) -> Callable[[], float]:
    """The timer of ``clock`` (:data:`CLOCKS`); ``cpu`` only with one thread."""
    if clock not in CLOCKS:
        raise ValueError(f"unknown clock {clock!r} (choose from {', '.join(CLOCKS)})")
    if clock == "cpu" and threads != 1:
        raise ValueError(f"the cpu clock times the calling thread only, so it needs threads=1 (got {threads}); "
                         "use the wall clock with several threads")
    return CLOCKS[clock]


def time_callable(fn: Callable[[], Any], *, warmup: int = 10, min_runs: int = 50, min_seconds: float = 2.0,
                  max_runs: int = 100_000, max_seconds: float = 120.0,
                  timer: Callable[[], float] = time.perf_counter) -> TimingStats:
    """Call ``fn`` ``warmup`` times untimed, then time single calls until there are at least ``min_runs`` of
    them and at least ``min_seconds`` have passed.

    Two limits stop a slow callable early: ``max_runs`` calls, or ``max_seconds`` of timing (after at least one
    run). ``timer`` is injectable so the bookkeeping can be tested with a fake clock.
    """
    if warmup < 0 or min_runs < 1 or max_runs < 1 or min_seconds < 0 or max_seconds <= 0:
        raise ValueError("warmup >= 0, min_runs >= 1, max_runs >= 1, min_seconds >= 0 and max_seconds > 0 needed")
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    start = timer()
    while True:
        t0 = timer()
        fn()
        t1 = timer()
        samples.append(t1 - t0)
        elapsed = t1 - start
        if len(samples) >= max_runs or elapsed >= max_seconds:
            break
        if len(samples) >= min_runs and elapsed >= min_seconds:
            break
    return TimingStats.from_samples(samples)


# -- timing against a reference ------------------------------------------------------------------------------
BURSTS = 4  # alternating bursts per relative timing


@dataclass(frozen=True)
class RelativeStats:
    """A runner's latency as a multiple of a reference's, timed alternately in bursts: the median, p10 and p90
    of the bursts' ratios (each the runner's median over the reference's median in adjacent bursts), and the
    runner's timed runs."""

    ratio: float
    p10: float
    p90: float
    runs: int


def time_relative(fn: Callable[[], Any], reference: Callable[[], Any], *, bursts: int = BURSTS, warmup: int = 1,
                  min_runs: int = 5, min_seconds: float = 0.1, max_seconds: float = 120.0,
                  timer: Callable[[], float] = time.perf_counter) -> RelativeStats:
    """Time ``reference`` and ``fn`` alternately, ``bursts`` times each, every burst at least ``min_runs`` runs
    and ``min_seconds / bursts`` long (after ``warmup`` untimed runs), and take the ratio of each adjacent pair.

    On a shared machine whose speed changes within seconds (other tenants, the hypervisor) two measurements of
    the same network minutes apart can differ by 15-20%; a change that slows both runners of a pair alike leaves
    their ratio, and on a 2-vCPU VM the ratio's noise floor was 3% where the plain median's was 20%
    (docs/search.md). Multiply by a reference latency measured once to read it in milliseconds.
    """
    if bursts < 1:
        raise ValueError(f"bursts must be >= 1, got {bursts}")
    ratios: list[float] = []
    runs = 0
    burst = dict(warmup=warmup, min_runs=min_runs, min_seconds=min_seconds / bursts,
                 max_seconds=max(max_seconds / bursts, 1e-3), timer=timer)
    for _ in range(bursts):
        ref = time_callable(reference, **burst)
        own = time_callable(fn, **burst)
        runs += own.runs
        ratios.append(own.median_ms / ref.median_ms)
    return RelativeStats(percentile(ratios, 50), percentile(ratios, 10), percentile(ratios, 90), runs)


# -- interleaved timing -------------------------------------------------------------------------------------
def time_interleaved(runners: dict[str, Any], *, rounds: int = 3, warmup: int = 5, min_runs: int = 30,
                     min_seconds: float = 1.0, clock: str = "wall", on_step: Callable[[str], None] | None = None,
                     reference: Callable[[], Any] | None = None) -> dict[str, list[float]]:
    """Time every runner once per round, round after round (A B C, A B C, ...), so that a change in the machine's
    load touches all of them alike; returns each runner's per-round median in ms (take the median of those).

    A runner is a callable timed here with :func:`time_callable`, or an object with a ``time_round(warmup=,
    min_runs=, min_seconds=, clock=)`` method returning one median in ms (a path timed in another process, such as
    :class:`~mobilenetv3.bench.peers.PeerPath`), called with the same settings. ``on_step(label)`` is called
    after each timing (progress bars). With a ``reference`` callable each round's figure is instead the runner's
    latency as a multiple of the reference's (:func:`time_relative`; callables only).
    """
    if not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}")
    timer = CLOCKS[clock]
    medians: dict[str, list[float]] = {label: [] for label in runners}
    for _ in range(rounds):
        for label, run in runners.items():
            if reference is not None:
                if hasattr(run, "time_round"):
                    raise ValueError(f"{label}: a runner timed in another process cannot be timed against a "
                                     "reference")
                medians[label].append(time_relative(run, reference, warmup=warmup, min_runs=min_runs,
                                                    min_seconds=min_seconds, timer=timer).ratio)
            elif hasattr(run, "time_round"):
                medians[label].append(run.time_round(warmup=warmup, min_runs=min_runs, min_seconds=min_seconds,
                                                     clock=clock))
            else:
                medians[label].append(time_callable(run, warmup=warmup, min_runs=min_runs,
                                                    min_seconds=min_seconds, timer=timer).median_ms)
            if on_step is not None:
                on_step(label)
    return medians



def format_ms(ms: float) -> str:
    """Milliseconds as tables print them: three decimals below 10 ms, two from there."""
    return f"{ms:.3f}" if ms < 10 else f"{ms:.2f}"
