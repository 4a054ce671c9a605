"""The runtime layer: the timing harness and its statistics, thread pinning, machine facts, ONNX Runtime's profile
reader, and the backend registry with each backend's prepare / run / call.

Timing runs here are as short as the harness allows; no test asserts a time.
"""

import sys

import numpy as np
import pytest
import torch

from mobilenetv3 import build, get_spec
from mobilenetv3.runtime import BACKENDS, Prepared, available_backends, load_backend
from mobilenetv3.runtime.cpu import cpu_id, machine_info, pinned_threads
from mobilenetv3.runtime.onnxruntime import parse_ort_profile
from mobilenetv3.runtime.timing import (
    TimingStats,
    format_ms,
    percentile,
    time_callable,
    time_interleaved,
    time_relative,
)


@pytest.fixture(scope="module")
def small():
    return build(get_spec("mobilenet_v3_small", 0.35)).eval()


class FakeClock:
    """A clock that only moves when the timed function runs: each call takes the next duration."""

    def __init__(self, durations):
        self.now = 0.0
        self.durations = list(durations)
        self.calls = 0

    def __call__(self):
        return self.now

    def work(self):
        self.now += self.durations[self.calls % len(self.durations)]
        self.calls += 1


# -- statistics ----------------------------------------------------------------------------------------
def test_percentile_linear_interpolation():
    values = [float(v) for v in range(10, 0, -1)]  # unsorted on purpose
    assert percentile(values, 50) == pytest.approx(5.5)
    assert percentile(values, 10) == pytest.approx(1.9)
    assert percentile(values, 90) == pytest.approx(9.1)
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 10.0
    assert percentile([3.0], 90) == 3.0
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_timing_stats_from_samples_in_ms():
    stats = TimingStats.from_samples([0.001, 0.003, 0.002, 0.010])
    assert stats.runs == 4
    assert stats.median_ms == pytest.approx(2.5)
    assert stats.mean_ms == pytest.approx(4.0)
    assert stats.min_ms == pytest.approx(1.0) and stats.max_ms == pytest.approx(10.0)
    assert stats.p10_ms == pytest.approx(1.3)  # 1 + 0.3 * (2 - 1)
    assert stats.p90_ms == pytest.approx(7.9)  # 3 + 0.7 * (10 - 3)
    assert stats.total_s == pytest.approx(0.016)


def test_time_callable_runs_until_min_runs_and_min_seconds():
    # 0.125 s per run (exact in binary): 1 s needs 8 runs, more than min_runs=3
    clock = FakeClock([0.125])
    stats = time_callable(clock.work, warmup=4, min_runs=3, min_seconds=1.0, timer=clock)
    assert stats.runs == 8 and clock.calls == 4 + 8
    assert stats.median_ms == pytest.approx(125.0)
    # min_runs dominates when runs are long
    clock = FakeClock([0.5])
    assert time_callable(clock.work, warmup=0, min_runs=5, min_seconds=1.0, timer=clock).runs == 5


def test_time_callable_statistics_on_known_durations():
    clock = FakeClock([0.001 * k for k in range(1, 11)])  # 1..10 ms, repeated
    stats = time_callable(clock.work, warmup=0, min_runs=10, min_seconds=0.0, timer=clock)
    assert stats.runs == 10
    assert stats.median_ms == pytest.approx(5.5)
    assert stats.p10_ms == pytest.approx(1.9)
    assert stats.p90_ms == pytest.approx(9.1)
    assert stats.mean_ms == pytest.approx(5.5)
    # warm-up calls are not timed: with 10 warm-up calls the same durations come again
    clock = FakeClock([0.001 * k for k in range(1, 11)])
    stats = time_callable(clock.work, warmup=10, min_runs=10, min_seconds=0.0, timer=clock)
    assert stats.median_ms == pytest.approx(5.5) and clock.calls == 20


def test_time_callable_limits():
    clock = FakeClock([0.25])
    assert time_callable(clock.work, warmup=0, min_runs=100, min_seconds=0, max_runs=7, timer=clock).runs == 7
    clock = FakeClock([1.0])
    assert time_callable(clock.work, warmup=0, min_runs=100, min_seconds=0, max_seconds=3.0, timer=clock).runs == 3
    clock = FakeClock([10.0])  # a single run longer than max_seconds still gives one sample
    assert time_callable(clock.work, warmup=0, min_runs=5, max_seconds=1.0, timer=clock).runs == 1
    for bad in (dict(min_runs=0), dict(warmup=-1), dict(min_seconds=-1), dict(max_seconds=0)):
        with pytest.raises(ValueError):
            time_callable(lambda: None, timer=clock, **bad)


class ShiftingMachine:
    """A fake machine whose speed changes at every switch back to the reference (a new burst): the reference
    costs 1 ms and the runner 2.5 ms at speed 1, and every figure is scaled by the speed of the moment."""

    def __init__(self, speeds):
        self.now, self.speeds, self.burst, self.last = 0.0, list(speeds), -1, None

    def __call__(self) -> float:
        return self.now

    def run(self, name: str, cost_ms: float) -> None:
        if name == "ref" and self.last != "ref":
            self.burst += 1
        self.last = name
        self.now += cost_ms / 1e3 * self.speeds[self.burst % len(self.speeds)]

    def reference(self) -> None:
        self.run("ref", 1.0)

    def work(self) -> None:
        self.run("work", 2.5)


def test_relative_timing_cancels_a_machine_whose_speed_changes():
    machine = ShiftingMachine([1.0, 1.7, 1.2, 2.5])
    rel = time_relative(machine.work, machine.reference, bursts=4, warmup=1, min_runs=5, min_seconds=0.0,
                        timer=machine)
    assert rel.ratio == pytest.approx(2.5) and rel.p10 == pytest.approx(2.5) and rel.p90 == pytest.approx(2.5)
    assert rel.runs == 20 and machine.burst == 3  # 4 bursts of 5 timed runs each
    # the plain median of the same runner drifts with the machine
    machine = ShiftingMachine([1.0, 1.7, 1.2, 2.5])
    plain = []
    for _ in range(4):
        machine.reference()  # the next burst: the machine's speed changes
        plain.append(time_callable(machine.work, warmup=0, min_runs=5, min_seconds=0.0, timer=machine).median_ms)
    assert plain == pytest.approx([2.5, 4.25, 3.0, 6.25])


def test_interleaved_rounds_against_a_reference_give_ratios(monkeypatch):
    import mobilenetv3.runtime.timing as timing

    calls = []

    def fake_relative(fn, reference, **kw):
        calls.append((fn, reference, kw["min_seconds"]))
        return timing.RelativeStats(ratio=0.5 * len(calls), p10=0.0, p90=0.0, runs=1)

    monkeypatch.setattr(timing, "time_relative", fake_relative)
    a, b, ref = (lambda: None), (lambda: None), (lambda: None)
    ratios = time_interleaved({"a": a, "b": b}, rounds=2, min_seconds=0.2, reference=ref)
    assert ratios == {"a": [0.5, 1.5], "b": [1.0, 2.0]}  # round by round: a b, a b
    assert calls == [(a, ref, 0.2), (b, ref, 0.2)] * 2

    class Remote:
        def time_round(self, **_):
            return 1.0

    with pytest.raises(ValueError, match="another process"):  # a runner timed in another process cannot be
        time_interleaved({"peer": Remote()}, rounds=1, reference=ref)
    with pytest.raises(ValueError, match="bursts"):
        time_relative(a, ref, bursts=0)


def test_pinned_threads_restores_the_previous_count():
    before = torch.get_num_threads()
    other = 2 if before != 2 else 1
    with pinned_threads(other) as used:
        assert used == other == torch.get_num_threads()
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), pinned_threads(other):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            with pinned_threads(bad):
                pass


def test_machine_info_fields():
    info = machine_info()
    assert info["cpu"] and isinstance(info["cpu"], str)
    assert info["logical_cpus"] >= 1 and "T" in info["date"]


def test_cpu_id_tells_cpu_generations_apart_under_one_model_name(tmp_path):
    def cpuinfo(model: int, flags: str):
        block = (f"processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: {model}\n"
                 f"model name\t: AMD EPYC\nstepping\t: 1\nflags\t\t: fpu sse2 {flags}\n\n")
        path = tmp_path / f"cpuinfo-{model}"
        path.write_text(block + block.replace("processor\t: 0", "processor\t: 1"))
        return path

    zen3 = cpu_id(cpuinfo(1, "avx2 fma"))
    zen4 = cpu_id(cpuinfo(17, "avx2 fma avx512f avx512_vnni avx512_bf16 avx512vl"))
    assert zen3 == "AuthenticAMD 25/1/1 avx2,fma"
    assert zen4 == "AuthenticAMD 25/17/1 avx2,fma,avx512f,avx512_vnni,avx512_bf16"
    assert cpu_id(tmp_path / "missing") == "unknown"
    assert machine_info()["cpu_id"] == cpu_id()


def test_parse_ort_profile_aggregates_node_medians_per_op_and_stage():
    names = ["stem", "block1", "last_conv"]

    def node(name, op, dur):
        return {"cat": "Node", "name": f"{name}_kernel_time", "dur": dur, "args": {"op_name": op}}

    events = [{"cat": "Session", "name": "model_run", "dur": 999}]
    for run, slow in enumerate((1, 1, 50)):  # the third run was disturbed: medians ignore it
        events += [
            node("/features/features.0/conv/Conv", "Conv", 100 * slow),
            {"cat": "Node", "name": "/features/features.0/conv/Conv_fence_before", "dur": 5, "args": {}},
            node("/features/features.1/dw/conv/Conv", "Conv", 300 + run),
            node("/features/features.1/se/Mul", "Mul", 40),
            node("ReorderOutput_token_3", "ReorderOutput", 60),
            node("/classifier/Gemm", "Gemm", 100),
        ]
    p = parse_ort_profile(events, names=names)
    assert p["runs"] == 3 and p["nodes"] == 5
    assert p["by_op"] == pytest.approx({"Conv": 0.401, "Gemm": 0.1, "ReorderOutput": 0.06, "Mul": 0.04})
    assert list(p["by_op"])[0] == "Conv"  # sorted by time
    assert p["by_stage"] == pytest.approx({"stem": 0.1, "block1": 0.341, "reorders": 0.06, "head": 0.1})
    assert p["total_ms"] == pytest.approx(0.601)


# -- the backend registry ----------------------------------------------------------------------------------------
def test_registry_names_a_class_per_backend_and_imports_only_the_chosen_one(monkeypatch):
    assert set(BACKENDS) == {"eager", "frozen", "onnxruntime", "openvino", "litert"}
    for name in BACKENDS:
        cls = load_backend(name)
        assert issubclass(cls, Prepared) and callable(cls.prepare)
    assert sys.modules.get("ai_edge_litert") is None  # loading the LiteRT backend did not import the interpreter
    with pytest.raises(ValueError, match="unknown runtime backend 'tensorrt'"):
        load_backend("tensorrt")
    assert {"eager", "frozen"} <= set(available_backends())
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if it were not installed
    assert "openvino" not in available_backends()


def test_torch_backends_run_the_fixed_input_and_another(small):
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x2 = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, want2 = small(x), small(x2)
    eager = load_backend("eager").prepare(small, x, threads=1)
    assert eager.runtime == "eager" and "channels_last" in eager.detail and eager.version == torch.__version__
    torch.testing.assert_close(eager.run(), want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(eager(x2), want2, atol=1e-5, rtol=1e-4)
    frozen = load_backend("frozen").prepare(small, x, threads=1, channels_last=False)
    assert frozen.runtime == "frozen" and frozen.extra["frozen_method"] == "torchscript"
    assert "channels_last" not in frozen.detail
    torch.testing.assert_close(frozen(x2), want2, atol=1e-4, rtol=1e-3)
    with pytest.raises(ValueError, match="unknown frozen method"):
        load_backend("frozen").prepare(small, x, method="tvm")
    with pytest.raises(ValueError, match="layout='nhwc' does not apply to eager"):
        load_backend("eager").prepare(small, x, layout="nhwc")


def test_onnxruntime_backend_on_a_file(small, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from mobilenetv3.deploy import export_onnx

    path = tmp_path / "small.onnx"
    export_onnx(small, path, resolution=32, verify=False)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = small(x).numpy()
    ort = load_backend("onnxruntime").prepare(path, x, threads=1)
    assert "intra_op_num_threads=1" in ort.detail and ort.threads == 1
    np.testing.assert_allclose(ort.run()[0], want, atol=1e-4)
    np.testing.assert_allclose(ort(x.numpy())[0], want, atol=1e-4)
    seeded = load_backend("onnxruntime").prepare(path, threads=1, seed=3)  # no input: a seeded one of its shape
    assert seeded.input.shape == (1, 3, 32, 32) and seeded.input.dtype == np.float32
    described = seeded.described("onnxruntime-int8", "int8 QDQ, ", {"k": 1})
    assert described.runtime == "onnxruntime-int8" and described.detail.startswith("int8 QDQ, CPUExecutionProvider")
    assert described.extra == {"k": 1}


def test_format_ms():
    assert format_ms(1.23456) == "1.235" and format_ms(12.3456) == "12.35"
