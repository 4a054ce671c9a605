"""Building a latency table on this machine: every key a search space can produce, timed in isolation as the
runtime runs it.

Each key becomes the module it names (:func:`key_module`: an :class:`~mobilenetv3.layers.InvertedResidual`, the
stem's conv, the last stage's pieces), built with the space seed's conventions, and is prepared by the same
:func:`~mobilenetv3.latency.targets.prepare_runtime` that ``mnv3 latency`` uses: for ``onnxruntime`` exported
through :func:`~mobilenetv3.deploy.onnx_export.export_onnx` with BN folded and ONNX Runtime's NCHWc passes, for
``openvino`` without them, for ``eager`` the module itself. So a block is timed with the fusions the runtime
applies to the whole network. The harness is :func:`~mobilenetv3.runtime.timing.time_callable`.

With ``relative`` timing (:class:`TimingSettings`) each entry is timed alternately with a reference network (the
space's seed at the table's resolution) in short bursts, and recorded as its ratio to the reference times the
reference's latency measured once when the table was started: a slowdown of the machine that touches both alike
cancels, and a table resumed on a slower afternoon stays in the same units.

With ``sessions`` > 1 every key is timed in that many passes, each in a new runtime session, and the median kept;
the ONNX runtimes export each key once per build (a temporary folder of exports, gone when the build ends).

The build is resumable: measured entries are written to the table file atomically every few seconds and when the
build stops (Ctrl-C, an error), and a rerun skips the keys already there, so no entry is measured twice.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..latency.targets import EXPORT_CACHED, prepare_runtime, target
from ..layers import ConvNormAct, InvertedResidual, SqueezeExcite, make_activation
from ..runtime.cpu import onednn_isa_cap, pinned_threads, this_cpu
from ..runtime.timing import clock_timer, percentile, time_callable, time_relative
from ..spec import ArchSpec, BlockSpec
from .latency_table import (
    LatencyTable,
    TableFileError,
    block_keys,
    check_compatible,
    conventions_of,
    entry_sessions,
    expanded_conv_key,
    last_stage_keys,
    load_table,
    parse_key,
    stem_key,
    table_clock,
    table_relative,
)

TABLE_RUNTIMES = ("eager", "onnxruntime", "openvino")
# the zoo's widths of each space's family: their keys go into the space's table too, so the predictor can rank them
ZOO_WIDTHS = {"mobilenet_v3_small": (0.75, 1.0, 1.25), "mobilenet_v3_large": (0.75, 1.0)}
SAVE_EVERY_S = 5.0


@dataclass(frozen=True)
class TimingSettings:
    """How long each entry is timed. Sized so that a V3-Small space at 224 (a few thousand entries) builds within
    15 minutes on one core: a block runs in well under a millisecond, so 50 ms of timing still gives a median
    over hundreds of runs, and each entry's export and session set-up cost about as much again."""

    warmup: int = 10
    min_runs: int = 20
    min_seconds: float = 0.05
    max_seconds: float = 5.0
    clock: str = "wall"  # or "cpu": the timing thread's CPU time (one thread), what other tenants do not add to
    relative: bool = False  # each entry timed against the space's seed network, alternately in short bursts
    sessions: int = 1  # each entry prepared and timed this many times, in as many passes over the keys; the median

    def __post_init__(self) -> None:
        clock_timer(self.clock)  # a ValueError naming the clocks
        if not isinstance(self.sessions, int) or self.sessions < 1:
            raise ValueError(f"sessions must be a positive integer, got {self.sessions!r}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"warmup": self.warmup, "min_runs": self.min_runs, "min_seconds": self.min_seconds,
                               "max_seconds": self.max_seconds, "clock": self.clock}
        if self.relative:
            out["relative"] = True
        if self.sessions > 1:
            out["sessions"] = self.sessions
        return out


def add_session(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """An entry with one more session: ``new`` (one session's figures) joined to ``old`` (None: the first). The
    median is the sessions' median, p10 / p90 the widest of theirs, the count their sum."""
    if old is None:
        return dict(new)
    sessions = [*old.get("sessions", [old["median"]]), new["median"]]
    return {"count": old.get("count", 0) + new["count"], "median": percentile(sessions, 50),
            "p10": min(old.get("p10", new["p10"]), new["p10"]), "p90": max(old.get("p90", new["p90"]), new["p90"]),
            "sessions": sessions}


def space_keys(space: Any, resolution: int) -> list[str]:
    """Every key a spec of ``space`` can have at ``resolution``: the stem, every reachable block, the last stage
    for every reachable input (the space's ``reachable_blocks`` and ``reachable_last_inputs``)."""
    seed: ArchSpec = space.seed
    keys = [stem_key(seed, resolution)]
    for hw, in_ch, b in space.reachable_blocks(resolution):
        keys.append(expanded_conv_key(hw, in_ch, b.kernel, b.exp, b.out, b.stride, b.se, b.act))
    for hw, ch in space.reachable_last_inputs(resolution):
        keys += last_stage_keys(seed, hw, ch)
    return list(dict.fromkeys(keys))


def zoo_specs(space_name: str, resolution: int) -> list[ArchSpec]:
    """The zoo models of ``space_name``'s family at ``resolution`` (:data:`ZOO_WIDTHS`; none for other spaces)."""
    from ..zoo import get_spec

    return [get_spec(space_name, w).replace(resolution=resolution) for w in ZOO_WIDTHS.get(space_name, ())]


def key_module(key: str, seed: ArchSpec) -> tuple[nn.Module, tuple[int, ...]]:
    """The module a key names, with ``seed``'s conventions (activations, SE sizing, BN, padding), and its NCHW
    input shape (batch 1)."""
    p = parse_key(key)
    (h, w, c), out = p["input"], p["output"]
    norm = dict(bn_eps=seed.bn_eps, bn_momentum=seed.bn_momentum, padding=seed.padding)
    kind = p["kind"]
    if kind == "Conv":
        module: nn.Module = ConvNormAct(c, out[2], seed.stem_kernel, seed.stem_stride, act=seed.stem_act, **norm)
    elif kind == "expanded_conv":
        act = "hswish" if p["hs"] else "relu"
        block = BlockSpec(p["kernel"], p["expand"], out[2], bool(p["se"]), act, p["stride"])
        one = seed.replace(blocks=(block,), stem_channels=c)  # sizes the SE as the spec would
        module = InvertedResidual(c, block.exp, block.out, block.kernel, block.stride, 1, act, one.se_channels(0),
                                  seed.se_inner_act, seed.se_gate, **norm)
    elif kind == "Conv_1":
        layers: list[nn.Module] = [ConvNormAct(c, out[2], 1, act=seed.last_act, **norm)]
        if seed.last_se:
            layers.append(SqueezeExcite(out[2], seed.replace(last_channels=out[2]).last_se_channels(),
                                        seed.se_inner_act, seed.se_gate))
        module = nn.Sequential(*layers)
    elif kind == "AvgPool2D":
        module = nn.AdaptiveAvgPool2d(1)
    elif kind == "Conv_2":
        module = nn.Sequential(nn.Conv2d(c, out[2], 1, bias=True), make_activation(seed.head_act))
    else:  # Logits: the flatten and the classifier (dropout does nothing in eval)
        module = nn.Sequential(nn.Flatten(1), nn.Linear(c, out[0]))
    return module.eval(), (1, c, h, w)


def time_key(key: str, seed: ArchSpec, runtime: str, threads: int, settings: TimingSettings,
             reference: tuple[Callable[[], Any], float] | None = None,
             export_cache: str | os.PathLike | None = None) -> dict[str, float]:
    """One entry: ``key``'s module prepared on ``runtime`` and timed; ``{count, median, p10, p90}`` in ms.
    ``reference``: ``(run, ms)``, a reference runner and its latency: the entry is timed against it
    (:func:`~mobilenetv3.runtime.timing.time_relative`) and its ratios are scaled by ``ms``. ``export_cache``: a
    folder where the ONNX runtimes keep each key's export, so that a key timed in several sessions is exported
    once (a new runtime session each time all the same)."""
    module, shape = key_module(key, seed)
    torch.manual_seed(0)
    x = torch.randn(shape)
    onnx_file = None
    if export_cache is not None and runtime in EXPORT_CACHED:
        onnx_file = os.path.join(export_cache, hashlib.sha1(key.encode()).hexdigest() + ".onnx")
    with pinned_threads(threads) as used:
        timer = clock_timer(settings.clock, used)
        prepared = prepare_runtime(runtime, module, x, used, onnx_file=onnx_file)
        if reference is not None:
            run, ms = reference
            rel = time_relative(prepared.run, run, warmup=settings.warmup, min_runs=settings.min_runs,
                                min_seconds=settings.min_seconds, max_seconds=settings.max_seconds, timer=timer)
            return {"count": rel.runs, "median": rel.ratio * ms, "p10": rel.p10 * ms, "p90": rel.p90 * ms}
        stats = time_callable(prepared.run, warmup=settings.warmup, min_runs=settings.min_runs,
                              min_seconds=settings.min_seconds, max_seconds=settings.max_seconds, timer=timer)
    return {"count": stats.runs, "median": stats.median_ms, "p10": stats.p10_ms, "p90": stats.p90_ms}


REFERENCE_SECONDS = 2.0  # how long a relative table's reference is timed when the table is started


def reference_runner(table: LatencyTable, seed: ArchSpec | None = None) -> tuple[Callable[[], Any], float]:
    """A relative table's reference, prepared on the table's runtime and threads, and the latency (ms) the
    table's figures are scaled by. A new table takes ``seed`` at its resolution and records it in its header
    (``timing.reference``, ``reference_spec``) with its latency (``timing.reference_ms``, the median of
    :data:`REFERENCE_SECONDS` of runs); a table that has them (resumed, fitted, checked) rebuilds that spec."""
    from ..inputs import example_input
    from ..model import build

    h = table.header
    timing = h["timing"]
    if "reference_spec" in timing:
        spec = ArchSpec.from_dict(timing["reference_spec"])
    elif seed is None:
        raise TableFileError("the table was timed against a reference network but records none")
    else:
        spec = seed.replace(resolution=h["resolution"])
    model = build(spec).eval()
    with pinned_threads(h["threads"]) as used:
        run = prepare_runtime(h["runtime"], model, example_input(model, h["resolution"]), used).run
        if "reference_ms" not in timing:
            timer = clock_timer(timing.get("clock", "wall"), used)
            timing.update(reference=spec.name, reference_spec=spec.to_dict(),
                          reference_ms=time_callable(run, warmup=10, min_runs=50, min_seconds=REFERENCE_SECONDS,
                                                     timer=timer).median_ms)
    return run, float(timing["reference_ms"])


def runtime_version(runtime: str) -> str:
    import importlib

    module = {"eager": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino"}[runtime]
    return importlib.import_module(module).__version__


def table_header(space: Any, resolution: int, runtime: str, threads: int, settings: TimingSettings
                 ) -> dict[str, Any]:
    """What makes a table's figures valid: machine, runtime, threads, resolution, space, conventions, timing."""
    return header_for(space.name, space.seed, resolution, runtime, threads, settings)


def header_for(space_name: str, seed: ArchSpec, resolution: int, runtime: str, threads: int,
               settings: TimingSettings) -> dict[str, Any]:
    """:func:`table_header` for a table named ``space_name`` whose blocks follow ``seed``'s conventions (a table
    that NetAdapt fills as it goes has no space object)."""
    return {**this_cpu(), "runtime": runtime, "runtime_version": runtime_version(runtime),
            "torch_version": torch.__version__, "threads": threads, "resolution": resolution,
            "space": space_name, "onednn_max_cpu_isa": onednn_isa_cap(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "timing": settings.to_dict(), "units": "ms", "conventions": conventions_of(seed)}


def build_table(space: Any, resolution: int, runtime: str, out: str | Path, *, threads: int = 1,
                settings: TimingSettings | None = None, force: bool = False, progress: bool = True,
                measure: Callable[[str], dict[str, float]] | None = None,
                keys: Iterable[str] | None = None, extra_specs: Iterable[ArchSpec] = ()) -> LatencyTable:
    """Measure every key of ``space`` at ``resolution`` on ``runtime`` into the table file ``out`` and return the
    table. An existing ``out`` is resumed: its entries are kept and not measured again (its header must match:
    same CPU, runtime, threads, resolution and space, unless ``force``). ``measure(key)`` replaces the timing
    (tests); ``keys`` replaces the space's keys; ``extra_specs`` adds the keys of these specs (say
    :func:`zoo_specs`)."""
    if runtime not in TABLE_RUNTIMES:
        raise ValueError(f"latency tables are built for {', '.join(TABLE_RUNTIMES)}, not {runtime!r}")
    target(runtime).require()
    settings = settings or TimingSettings()
    clock_timer(settings.clock, threads)  # the cpu clock times one thread
    out = Path(out)
    header = table_header(space, resolution, runtime, threads, settings)
    if out.exists():
        table = load_table(out)
        check_compatible(table, force=force, **{k: header[k] for k in ("cpu", "runtime", "threads", "resolution")})
        if table.header.get("space") != space.name and not force:
            raise TableFileError(f"{out} is a table of space {table.header.get('space')!r}, not {space.name!r}")
        if table_clock(table) != settings.clock:
            raise TableFileError(f"{out} was timed with the {table_clock(table)} clock, not {settings.clock}: one "
                                 f"table holds one clock's figures (give --clock {table_clock(table)} to resume it)")
        if table_relative(table) != settings.relative:
            kind = "against a reference (--relative)" if table_relative(table) else "on its own (no --relative)"
            raise TableFileError(f"{out} timed each entry {kind}: resume it the same way")
    else:
        table = LatencyTable(header)
    wanted = list(keys) if keys is not None else space_keys(space, resolution)
    wanted = list(dict.fromkeys(wanted + [k for s in extra_specs for k in block_keys(s, resolution)]))
    passes = settings.sessions

    def done(key: str) -> int:
        return entry_sessions(table.entries[key]) if key in table.entries else 0

    # pass p measures the keys with p sessions so far: a key's sessions are a whole pass apart
    todo = [(p, k) for p in range(passes) for k in wanted if done(k) <= p]
    timing = table.header.setdefault("timing", {})
    if passes > int(timing.get("sessions", 1)):
        timing["sessions"] = passes
    cache = None
    if measure is None:
        reference = reference_runner(table, space.seed) if settings.relative and todo else None
        if passes > 1 and runtime in EXPORT_CACHED:  # each key exported once, whatever its sessions
            cache = tempfile.TemporaryDirectory(prefix="mnv3-table-exports-")
        folder = cache.name if cache is not None else None
        measure = lambda key: time_key(key, space.seed, runtime, threads, settings, reference,  # noqa: E731
                                       export_cache=folder)
    started = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(wanted) * passes, initial=len(wanted) * passes - len(todo), unit="entry",
                   desc=f"{runtime} {resolution}px")
    last_save = time.monotonic()
    try:
        for _, key in todo:
            table.entries[key] = add_session(table.entries.get(key), measure(key))
            if bar is not None:
                bar.update(1)
            if time.monotonic() - last_save >= SAVE_EVERY_S:
                table.save(out)
                last_save = time.monotonic()
    finally:
        if bar is not None:
            bar.close()
        if cache is not None:
            cache.cleanup()
        table.header["build_seconds"] = round(table.header.get("build_seconds", 0.0)
                                              + time.perf_counter() - started, 1)
        table.header["entries"] = len(table.entries)
        table.save(out)  # also on Ctrl-C or an error: what was measured is kept for the rerun
    return table


__all__ = ["REFERENCE_SECONDS", "SAVE_EVERY_S", "TABLE_RUNTIMES", "ZOO_WIDTHS", "TimingSettings", "add_session",
           "build_table", "header_for", "key_module", "reference_runner", "space_keys", "table_header", "time_key",
           "zoo_specs"]
