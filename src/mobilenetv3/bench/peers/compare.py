"""Ours against torchvision's and timm's models of the same architectures, measured in the same run.

The peers need a newer torch than the core's, so they run in a worker of the peer environment's python
(:class:`~.worker.PeerWorker`); every path is prepared first, then all are timed in interleaved rounds, ours and
the peers' in turn (the two processes never compute at the same time), with the same harness and settings.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ...cost import spec_cost
from ...latency.targets import OPENVINO_RUNTIMES
from ...runtime.cpu import ONEDNN_ISA_VARIABLE, check_onednn_isa, onednn_isa_cap, pinned_threads
from ...runtime.peer_env import PEER_SETUP_HINT, PeerUnavailableError, find_peer_python
from ...runtime.timing import clock_timer, percentile, time_interleaved
from .prepare import OUR_PATHS, PEER_MODELS, ours_prepare, path_runtime
from .worker import PeerWorker


@dataclass(frozen=True)
class PeerPath:
    """One of the peer worker's prepared paths, timed there (see :func:`time_interleaved`)."""

    worker: PeerWorker
    model: str
    label: str

    def time_round(self, *, warmup: int, min_runs: int, min_seconds: float, clock: str) -> float:
        return self.worker.ask(cmd="time", model=self.model, label=self.label, warmup=warmup, min_runs=min_runs,
                               min_seconds=min_seconds, clock=clock)["median_ms"]


def available_paths() -> tuple[str, ...]:
    """Our paths that can run here: all of :data:`OUR_PATHS`, the OpenVINO ones only when OpenVINO is installed."""
    has_openvino = importlib.util.find_spec("openvino") is not None
    return tuple(p for p in OUR_PATHS.values() if has_openvino or path_runtime(p)[0] not in OPENVINO_RUNTIMES)


def compare_with_peers(models: Sequence[str] = tuple(PEER_MODELS), *, resolution: int = 224, threads: int = 1,
                       ours: Sequence[str] = ("eager", "frozen", "onnxruntime"), peer_onnx: bool = True,
                       peer_int8: bool = False, peer_python: str | None = None, rounds: int = 3, warmup: int = 5,
                       min_runs: int = 30, min_seconds: float = 1.0, clock: str = "wall",
                       isa_cap: str | None = None, capped: Sequence[str] = ("openvino-int8", "openvino-int8:nhwc"),
                       on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Our paths (``ours``: paths of :data:`OUR_PATHS`, runtime names or ``"RUNTIME:nhwc"``) against torchvision's
    and timm's models of the same architectures, measured in the same run.

    ``isa_cap`` (e.g. :data:`INT8_ISA_CAP`): the paths in ``capped`` are also timed under that oneDNN
    instruction-set cap, in a worker process of this python (the cap holds for a whole process), as extra rows
    labelled ``"..., oneDNN ISA <= CAP"`` interleaved with the rest.

    The peers need a newer torch than the core's, so they cannot share this process: they run in a worker of the
    peer environment's python (:func:`find_peer_python`; :class:`PeerUnavailableError` when there is none). Every
    path is prepared first, then timed in ``rounds`` interleaved rounds, ours and the peers' in turn (the two
    processes never compute at the same time), with the same harness and settings; each row has the median of its
    rounds' medians and its ratio to the peers' fastest float path for the model (above 1: faster). ``on_step``
    is called after each preparation and each timing.
    """
    from ...zoo import get_spec

    unknown = sorted(set(models) - set(PEER_MODELS))
    if unknown:
        raise ValueError(f"no peer model for {', '.join(unknown)} (peers exist for {', '.join(PEER_MODELS)})")
    bad = sorted(set(ours) - set(OUR_PATHS.values()))
    if bad:
        raise ValueError(f"unknown path(s) {', '.join(bad)} (choose from {', '.join(OUR_PATHS.values())})")
    clock_timer(clock, threads)
    python = find_peer_python(peer_python)
    if python is None:
        raise PeerUnavailableError(f"no peer environment found ($MNV3_PEER_PYTHON, .peer-venv); "
                                   f"{PEER_SETUP_HINT}")
    to_cap = [r for r in capped if r in ours] if isa_cap is not None else []
    if isa_cap is not None:
        isa_cap = check_onednn_isa(isa_cap)
        if not to_cap:
            raise ValueError(f"isa_cap={isa_cap!r} but none of capped={tuple(capped)!r} is among ours={tuple(ours)!r}")
    suffix = f", oneDNN ISA <= {isa_cap}"
    step = on_step or (lambda _label: None)
    capped_info: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        worker = stack.enter_context(PeerWorker(python))
        stack.enter_context(pinned_threads(threads))
        peer_info = worker.ask(cmd="prepare", models=list(models), resolution=resolution, threads=threads,
                               onnx=peer_onnx, int8=peer_int8)
        peer_info.pop("ok", None)
        step("peers prepared")
        if to_cap:
            capped_worker = stack.enter_context(PeerWorker(sys.executable, {ONEDNN_ISA_VARIABLE: isa_cap}))
            capped_info = capped_worker.ask(cmd="prepare_ours", models=list(models), resolution=resolution,
                                            threads=threads, paths=to_cap, suffix=suffix)
            step(f"capped paths prepared ({ONEDNN_ISA_VARIABLE}={isa_cap})")
        ours_runners, _ = ours_prepare(models, resolution, threads, ours, on_step=step)
        runners: dict[Any, Any] = {}
        for name in models:
            for label, path in OUR_PATHS.items():
                if path in ours:
                    runners[(name, label, "ours")] = ours_runners[(name, label)]
                if path in to_cap:
                    runners[(name, label + suffix, "ours")] = PeerPath(capped_worker, name, label + suffix)
            for label in peer_info["details"][name]:
                runners[(name, label, "peer")] = PeerPath(worker, name, label)
        medians = time_interleaved(runners, rounds=rounds, warmup=warmup, min_runs=min_runs,
                                   min_seconds=min_seconds, clock=clock, on_step=step)
    rows = []
    for name in models:
        cost = spec_cost(get_spec(name), resolution)
        peer_float = [percentile(v, 50) for (n, label, who), v in medians.items()
                      if n == name and who == "peer" and "int8" not in label]
        best = min(peer_float) if peer_float else None
        for (n, label, who), v in medians.items():
            if n == name:
                med = percentile(v, 50)
                rows.append({"model": name, "path": label, "who": who, "median_ms": med, "round_medians_ms": v,
                             "vs_best_peer": best / med if best else None, "params": cost.params,
                             "madds": cost.madds})
    return {"peer_python": python, "peer": peer_info, "resolution": resolution, "threads": threads,
            "rounds": rounds, "clock": clock, "isa_cap": isa_cap if to_cap else None,
            "capped_details": capped_info.get("details", {}),
            "onednn_max_cpu_isa": onednn_isa_cap(), "rows": rows}


__all__ = ["OUR_PATHS", "available_paths", "PEER_MODELS", "PeerPath", "compare_with_peers", "path_runtime"]
