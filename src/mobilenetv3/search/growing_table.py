"""A latency table that measures the entries it lacks, on this machine, when a prediction needs them.

NetAdapt's proposals change one width by a multiple of 8, so most of the blocks it costs are not in any search
space's table (the space's widths are ratios of the seed's). The original NetAdapt builds its layer-wise lookup
table on demand in the same way. :class:`GrowingTable` wraps a :class:`~.latency_table.LatencyTable` file: a
prediction first times every missing key in isolation (:func:`~.table_builder.time_key`, the builder's harness, on
the table's runtime and threads), saves the file, then predicts with :func:`~.predictor.predict`, so no width is
ever interpolated or costed zero and every entry is measured once, whatever the number of runs that use the file.

Timing needs a quiet machine: callers measure between phases that train, never during them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from ..runtime.cpu import this_cpu
from ..spec import ArchSpec
from .latency_table import LatencyTable, block_keys, check_compatible, load_table
from .predictor import predict, table_sum
from .table_builder import TABLE_RUNTIMES, TimingSettings, header_for, time_key


class GrowingTable:
    """The table at ``path`` for specs with ``seed``'s conventions at the table's resolution.

    An existing file must match this machine (CPU), ``runtime``/``threads`` when given, ``seed``'s resolution and
    conventions (a :class:`~.latency_table.TableMismatchError` naming the difference, unless ``force``); a missing
    file is created for ``runtime`` (default onnxruntime) and ``threads`` (default 1). ``measure(key)`` replaces
    the timing (tests)."""

    def __init__(self, path: str | os.PathLike, seed: ArchSpec, *, runtime: str | None = None,
                 threads: int | None = None, force: bool = False, settings: TimingSettings | None = None,
                 measure: Callable[[str], dict[str, float]] | None = None) -> None:
        self.path = Path(path)
        self.seed = seed
        self.settings = settings or TimingSettings()
        if self.path.exists():
            self.table = load_table(self.path)
            self.mismatches = check_compatible(self.table, force=force, spec=seed, **this_cpu(), runtime=runtime,
                                               threads=threads, resolution=seed.resolution)
            recorded = self.table.header.get("timing")
            if isinstance(recorded, dict) and set(recorded) <= set(TimingSettings.__dataclass_fields__):
                self.settings = TimingSettings(**recorded)  # new entries are timed as the old ones were
        else:
            runtime = runtime or "onnxruntime"
            if runtime not in TABLE_RUNTIMES:
                raise ValueError(f"latency tables are built for {', '.join(TABLE_RUNTIMES)}, not {runtime!r}")
            self.table = LatencyTable(header_for(seed.name, seed, seed.resolution, runtime, threads or 1,
                                                 self.settings))
            self.mismatches = []
        header = self.table.header
        self.runtime: str = header.get("runtime") or runtime or "onnxruntime"
        self.threads: int = int(header.get("threads") or threads or 1)
        self.resolution: int = int(header.get("resolution") or seed.resolution)
        self._measure = measure or (lambda key: time_key(key, seed, self.runtime, self.threads, self.settings))
        self.measured = 0  # entries timed by this object

    def missing(self, specs: Iterable[ArchSpec]) -> list[str]:
        keys = (k for s in specs for k in block_keys(s, self.resolution))
        return [k for k in dict.fromkeys(keys) if k not in self.table.entries]

    def ensure(self, specs: Iterable[ArchSpec]) -> int:
        """Time the keys of ``specs`` the table lacks and save the file; the number timed."""
        todo = self.missing(specs)
        try:
            for key in todo:
                self.table.entries[key] = self._measure(key)
                self.measured += 1
        finally:
            if todo:
                self.table.header["entries"] = len(self.table.entries)
                self.save()
        return len(todo)

    def predict(self, spec: ArchSpec) -> float:
        """``spec``'s predicted latency (ms), timing its missing entries first."""
        self.ensure([spec])
        return predict(self.table, spec, self.resolution).ms

    def sum_ms(self, spec: ArchSpec) -> float:
        self.ensure([spec])
        return table_sum(self.table, spec, self.resolution).sum_ms

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.table.save(self.path)


__all__ = ["GrowingTable"]
