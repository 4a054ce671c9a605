"""ONNX Runtime: an exported ONNX file in a CPU session, and the reader of ONNX Runtime's own profiler.

The session is set up for batch-1 latency: the CPU provider, every graph optimisation (ORT_ENABLE_ALL, which
fuses a convolution with its activation and picks the blocked NCHWc kernels), sequential execution with one
inter-op thread and ``intra_op_num_threads`` = the thread count, so the thread count means what PyTorch's does.
Needs the ``deploy`` extra.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..extras import require
from .backend import Prepared, check_layout
from .timing import percentile


def ort_session(onnx_path: str | os.PathLike | bytes, threads: int = 1, profile_prefix: str | None = None):
    """An ONNX Runtime CPU session set up for latency: ``threads`` intra-op threads, one inter-op thread,
    sequential execution, every graph optimisation; optionally with its profiler on."""
    ort = require("onnxruntime", purpose="the ONNX Runtime runtime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    source = onnx_path if isinstance(onnx_path, bytes) else str(onnx_path)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def file_input(shape: Any, seed: int = 0) -> np.ndarray:
    """A seeded standard-normal float32 input of a file's input ``shape`` (symbolic dimensions taken as 1)."""
    shape = tuple(d if isinstance(d, int) else 1 for d in shape)
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


class OnnxRuntime(Prepared):
    """An ONNX file (a path or its bytes) in an :func:`ort_session` on the fixed input ``x`` (default: a seeded
    random input of the file's shape)."""

    package = "onnxruntime"

    def __init__(self, session: Any, feed: dict[str, np.ndarray], threads: int, version: str) -> None:
        detail = f"CPUExecutionProvider, ORT_ENABLE_ALL, sequential, intra_op_num_threads={threads}"
        super().__init__("onnxruntime", detail, version, threads)
        self.session, self.feed = session, feed
        self.input_name = next(iter(feed))

    @classmethod
    def prepare(cls, source: str | os.PathLike | bytes, x: Any = None, *, threads: int = 1, layout: str = "nchw",
                seed: int = 0) -> OnnxRuntime:
        """``layout`` is the file's input layout; ``x`` is given in it (ONNX Runtime feeds the array as it is)."""
        check_layout(layout, runtime="onnxruntime")
        ort = require("onnxruntime", purpose="the ONNX Runtime runtime")
        session = ort_session(source, threads)
        inp = session.get_inputs()[0]
        x = file_input(inp.shape, seed) if x is None else as_float32(x)
        return cls(session, {inp.name: x}, threads, ort.__version__)

    @property
    def input(self) -> np.ndarray:
        return self.feed[self.input_name]

    def run(self) -> Any:
        return self.session.run(None, self.feed)

    def __call__(self, x: Any) -> Any:
        return self.session.run(None, {self.input_name: as_float32(x)})


def as_float32(x: Any) -> np.ndarray:
    """``x`` (a tensor or an array) as a float32 numpy array on the CPU."""
    if hasattr(x, "detach"):
        return x.detach().cpu().float().numpy()
    return np.asarray(x, dtype=np.float32)


FEATURE_NODE = re.compile(r"(?:^|/)features(?:/features)?\.(\d+)(?:/|$)")


def _node_stage(node: str, op: str, names: list[str]) -> str:
    m = FEATURE_NODE.search(node)
    if m:
        i = int(m.group(1))
        return names[i] if i < len(names) else f"features.{i}"
    if op.startswith("Reorder"):
        return "reorders"  # layout conversions ONNX Runtime inserts for its blocked (NCHWc) convolutions
    return "head"


def parse_ort_profile(events: list[dict[str, Any]], names: list[str] | None = None) -> dict[str, Any]:
    """Kernel times from an ONNX Runtime profile: each node's median over the runs it appears in (robust to a
    run disturbed by other work), in ms, summed per op type and per stage.

    ``names`` maps ``features.<i>`` in node names to stage names (default: ``features.<i>`` as is); the layout
    conversions ONNX Runtime inserts (``ReorderInput``/``ReorderOutput``) have no module and go to ``reorders``,
    other nodes outside ``features`` to ``head``.
    """
    durations: dict[str, list[float]] = {}
    ops: dict[str, str] = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        node = e["name"][: -len("_kernel_time")]
        durations.setdefault(node, []).append(float(e.get("dur", 0)) / 1e3)
        ops[node] = (e.get("args") or {}).get("op_name", "?")
    by_op: dict[str, float] = {}
    by_stage: dict[str, float] = {}
    for node, values in durations.items():
        ms = percentile(values, 50)
        by_op[ops[node]] = by_op.get(ops[node], 0.0) + ms
        stage = _node_stage(node, ops[node], names or [])
        by_stage[stage] = by_stage.get(stage, 0.0) + ms
    return {"runs": max((len(v) for v in durations.values()), default=0), "nodes": len(durations),
            "total_ms": sum(by_op.values()), "by_op": dict(sorted(by_op.items(), key=lambda kv: -kv[1])),
            "by_stage": by_stage}


def profile_onnx(path: str | os.PathLike, *, threads: int = 1, warmup: int = 5, runs: int = 30,
                 names: list[str] | None = None, x: np.ndarray | None = None) -> dict[str, Any]:
    """ONNX Runtime's own profile of a model file: each node's median kernel ms over ``runs`` (after ``warmup``
    untimed runs) by op type and by stage (:func:`parse_ort_profile`), plus the ``nodes`` list, slowest first.
    ``x``: the input (default: seeded standard-normal of the file's input shape, dynamic sizes as 1). The total is
    below the session's latency, which adds the executor's overhead."""
    with tempfile.TemporaryDirectory() as tmp:
        session = ort_session(path, threads, profile_prefix=os.path.join(tmp, "ort_profile"))
        inp = session.get_inputs()[0]
        if x is None:
            shape = [d if isinstance(d, int) else 1 for d in inp.shape]
            x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        for _ in range(warmup + runs):
            session.run(None, {inp.name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    # Each run's node events come in order; drop the warm-up runs' share.
    node_events = [e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")]
    per_run = len(node_events) // (warmup + runs)
    kept = node_events[per_run * warmup:]
    result = parse_ort_profile(kept, names)
    per_node: dict[str, list[float]] = {}
    op_of: dict[str, str] = {}
    for e in kept:
        node = e["name"][: -len("_kernel_time")]
        per_node.setdefault(node, []).append(float(e.get("dur", 0)) / 1e3)
        op_of[node] = (e.get("args") or {}).get("op_name", "?")
    result["nodes"] = sorted(({"node": k, "op": op_of[k], "ms": percentile(v, 50)} for k, v in per_node.items()),
                             key=lambda r: -r["ms"])
    return result
