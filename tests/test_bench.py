"""`mnv3 bench` and what it is built from: Table 5's h-swish variants, the naive h-swish, the interleaved timing, the
peer worker's protocol, the result's structure and the bad-input errors.

Timing runs here are as short as the harness allows (tiny inputs, one round, one run); no test asserts a time.
"""

import importlib.util
import json
import sys

import pytest
import torch
import torch.nn.functional as F

from markers import needs_onnx
from mobilenetv3 import build, count_madds, get_spec, spec_cost
from mobilenetv3.bench import run as bench_run
from mobilenetv3.bench import sections
from mobilenetv3.bench.paper import PAPER_FLOAT_MS, PAPER_INT8_MS, PHONES, TABLE5
from mobilenetv3.bench.peers import compare
from mobilenetv3.bench.peers.worker import PeerWorker
from mobilenetv3.bench.run import paper_comparisons
from mobilenetv3.bench.sections import BENCH_SECTIONS, QUICK_GRID
from mobilenetv3.bench.table5 import hswish_from, table5_spec, with_naive_hswish
from mobilenetv3.cli import main
from mobilenetv3.extras import MissingExtraError
from mobilenetv3.latency import measure_latency
from mobilenetv3.layers import NaiveHardswish, hard_swish_naive
from mobilenetv3.runtime.cpu import INT8_ISA_CAP, onednn_isa_cap
from mobilenetv3.runtime.peer_env import PeerUnavailableError, find_peer_python
from mobilenetv3.runtime.timing import CLOCKS, clock_timer, time_interleaved

TINY = dict(resolution=32, multipliers=[0.35], resolutions=[32], rounds=1, warmup=0, min_runs=1, min_seconds=0.0)
TINY_ARGS = ["--resolution", "32", "--multipliers", "0.35", "--resolutions", "32", "--rounds", "1", "--warmup", "0",
             "--min-runs", "1", "--min-seconds", "0", "--quiet"]


def acts(spec):
    """(stem, [blocks], last, head) activations."""
    return spec.stem_act, [b.act for b in spec.blocks], spec.last_act, spec.head_act


# -- Table 5's variants -----------------------------------------------------------------------------------------
def test_table1_widths_that_table5_names():
    large = get_spec("mobilenet_v3_large")
    outs = [b.out for b in large.blocks]
    # h-swish @N: N is the width of the first layer with h-swish; in Table 1 the first 80-wide bottleneck is the 7th
    # (V3-Large's first h-swish block) and the first 112-wide one the 11th
    assert large.stem_channels == 16 and outs[0] == 16
    assert outs.index(80) == 6 and outs.index(112) == 10
    assert [b.act for b in large.blocks] == ["relu"] * 6 + ["hswish"] * 9


def test_relu_everywhere():
    stem, blocks, last, head = acts(table5_spec("relu"))
    assert stem == last == head == "relu" and blocks == ["relu"] * 15


def test_hswish_from_16_is_hswish_everywhere():
    # the stem is the first layer with 16 channels, so everything from it on has h-swish
    stem, blocks, last, head = acts(table5_spec("hswish@16"))
    assert stem == last == head == "hswish" and blocks == ["hswish"] * 15


def test_v3_row_is_table1_model_and_hswish_from_80_with_its_stem():
    large = get_spec("mobilenet_v3_large")
    assert table5_spec("v3") == large
    from80 = hswish_from(large, 80, stem=True)
    assert acts(from80) == acts(large)
    # read literally (no stem override), @80 would have a ReLU stem: the model itself keeps its h-swish stem
    assert acts(hswish_from(large, 80))[0] == "relu"


def test_hswish_from_112():
    stem, blocks, last, head = acts(table5_spec("hswish@112"))
    assert blocks == ["relu"] * 10 + ["hswish"] * 5
    assert stem == "relu" and last == head == "hswish"


def test_variants_change_activations_only():
    large = get_spec("mobilenet_v3_large")
    keep = ("kernel", "exp", "out", "se", "stride", "dilation")
    for key in TABLE5:
        for naive in (False, True):
            spec = table5_spec(key, naive)
            assert [tuple(getattr(b, f) for f in keep) for b in spec.blocks] == \
                [tuple(getattr(b, f) for f in keep) for b in large.blocks]
            assert (spec.se_inner_act, spec.se_gate) == ("relu", "hard_sigmoid")  # SE untouched
            cost, ref = spec_cost(spec), spec_cost(large)
            assert (cost.params, cost.madds) == (ref.params, ref.madds)
    assert len({table5_spec(k, n).name for k in TABLE5 for n in (False, True)}) == 2 * len(TABLE5) - 1  # relu=naive


def test_naive_variant_swaps_every_hswish_and_nothing_else():
    for key in TABLE5:
        fused, naive = acts(table5_spec(key)), acts(table5_spec(key, naive=True))
        flat = lambda a: [a[0], *a[1], a[2], a[3]]  # noqa: E731
        assert flat(naive) == ["hswish_naive" if x == "hswish" else x for x in flat(fused)]
    assert acts(table5_spec("relu", naive=True)) == acts(table5_spec("relu"))


def test_hswish_from_errors():
    large = get_spec("mobilenet_v3_large")
    with pytest.raises(ValueError, match="no layer with 100 output channels"):
        hswish_from(large, 100)
    with pytest.raises(ValueError, match="unknown Table 5 variant"):
        table5_spec("hswish@40")


def test_table5_paper_figures():
    assert TABLE5["relu"].paper_ms == TABLE5["relu"].paper_naive_ms == 50.5
    assert (TABLE5["v3"].paper_ms, TABLE5["v3"].paper_naive_ms) == (51.4, 57.5)
    assert (TABLE5["hswish@16"].paper_ms, TABLE5["hswish@16"].paper_naive_ms) == (53.5, 68.9)
    assert (TABLE5["hswish@112"].paper_ms, TABLE5["hswish@112"].paper_naive_ms) == (51.0, 54.4)


# -- the naive h-swish ------------------------------------------------------------------------------------------
def test_naive_hswish_equals_hardswish():
    x = torch.cat([torch.linspace(-8, 8, 4001), torch.randn(10000) * 4])
    assert torch.max(torch.abs(hard_swish_naive(x) - F.hardswish(x))).item() <= 1e-6
    assert torch.equal(NaiveHardswish()(x), hard_swish_naive(x))


def test_naive_model_matches_fused_model():
    spec = table5_spec("v3")
    fused = build(spec).eval()
    naive = build(with_naive_hswish(spec)).eval()
    naive.load_state_dict(fused.state_dict())  # activations hold no parameters: same keys
    assert sum(isinstance(m, NaiveHardswish) for m in naive.modules()) == \
        sum(isinstance(m, torch.nn.Hardswish) for m in fused.modules()) > 0
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = fused(x), naive(x)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)
    assert count_madds(naive, (1, 3, 64, 64)) == spec_cost(with_naive_hswish(spec), 64).madds


@needs_onnx
def test_naive_hswish_is_a_different_onnx_graph(tmp_path):
    from mobilenetv3.deploy import export_onnx

    spec = get_spec("mobilenet_v3_small", 0.35)
    fused = export_onnx(build(spec).eval(), tmp_path / "f.onnx", resolution=32).ops
    naive = export_onnx(build(with_naive_hswish(spec)).eval(), tmp_path / "n.onnx", resolution=32).ops
    n_hswish = fused["HardSwish"]
    assert n_hswish > 0 and "HardSwish" not in naive
    assert naive["Div"] == n_hswish and naive["Clip"] >= n_hswish  # add, clip, mul, div per h-swish
    assert naive["Add"] - fused.get("Add", 0) == n_hswish and naive["Mul"] - fused.get("Mul", 0) == n_hswish


# -- timing pieces ----------------------------------------------------------------------------------------------
def test_time_interleaved_goes_round_by_round():
    calls = []
    runners = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    steps = []
    medians = time_interleaved(runners, rounds=2, warmup=0, min_runs=1, min_seconds=0, on_step=steps.append)
    assert calls == list("abcabc") and steps == list("abcabc")
    assert {k: len(v) for k, v in medians.items()} == {"a": 2, "b": 2, "c": 2}
    with pytest.raises(ValueError):
        time_interleaved(runners, rounds=0)


def test_clocks():
    assert set(CLOCKS) == {"wall", "cpu"}
    assert clock_timer("cpu", 1) is CLOCKS["cpu"]
    with pytest.raises(ValueError, match="threads=1"):
        clock_timer("cpu", 2)
    with pytest.raises(ValueError, match="unknown clock"):
        clock_timer("sundial")
    r = measure_latency(build(get_spec("mobilenet_v3_small", 0.35)), resolution=32, warmup=0, min_runs=1,
                        min_seconds=0, clock="cpu")
    assert r.to_dict()["clock"] == "cpu"


def test_peer_worker_protocol_and_errors():
    # the worker machinery with this environment's python: it imports the package through its own link, answers
    # line by line, and reports errors (here: no timm in the core environment) without dying
    worker = PeerWorker(sys.executable)
    try:
        assert worker.ask(cmd="ping") == {"ok": True}
        with pytest.raises(RuntimeError, match="KeyError"):
            worker.ask(cmd="time", model="mobilenet_v3_small", label="nothing", warmup=0, min_runs=1,
                       min_seconds=0)
        if importlib.util.find_spec("timm") is None:
            with pytest.raises(RuntimeError, match="timm|torchvision"):
                worker.ask(cmd="prepare", models=["mobilenet_v3_small"], resolution=32, threads=1)
        assert worker.ask(cmd="ping") == {"ok": True}
    finally:
        worker.close()
    assert worker.proc.returncode == 0


def test_our_paths_name_a_runtime_and_an_input_layout():
    from mobilenetv3.bench.peers.compare import OUR_PATHS, path_runtime
    from mobilenetv3.latency import RUNTIMES

    assert path_runtime("openvino:nhwc") == ("openvino", "nhwc") and path_runtime("eager") == ("eager", "nchw")
    for label, path in OUR_PATHS.items():
        runtime, layout = path_runtime(path)
        assert runtime in RUNTIMES and layout in ("nchw", "nhwc")
        assert ("NHWC input" in label) == (layout == "nhwc")


# -- the sections' comparisons (no timing: the plans with made-up medians) -------------------------------------
def _fake_rows(entries, ms):
    rows = []
    for e in entries:
        cost = spec_cost(e["spec"], e["resolution"])
        rows.append({**e, "median_ms": ms(e), "round_medians_ms": [ms(e)], "params": cost.params,
                     "madds": cost.madds})
    return rows


def _settings(**kw):
    return {"runtime": "eager", "resolution": 224, "multipliers": [0.75, 1.0], "resolutions": [160, 224], **kw}


def test_v3_vs_v2_ratios_against_table3():
    entries, summarise = sections.v3_against_v2(_settings())
    assert [e["label"] for e in entries] == ["V3-Large 1.0", "V2 1.0", "V3-Small 1.0", "V2 0.35"]
    # a machine as fast as a Pixel 1 would give the paper's Pixel 1 ratio
    sec = summarise(_fake_rows(entries, lambda e: e["paper_ms"]["Pixel 1"]))
    large, small = sec["comparisons"]
    assert large["latency_ratio"] == pytest.approx(51 / 64) == pytest.approx(large["paper_latency_ratio"]["Pixel 1"])
    assert small["paper_latency_ratio"] == pytest.approx({"Pixel 1": 15.8 / 16.6, "Pixel 2": 19.4 / 19.6,
                                                         "Pixel 3": 14.4 / 13.9})
    assert large["paper_madds_ratio"] == pytest.approx(219 / 300)
    assert sec["paper"].startswith("Table 3")
    # away from 224 the paper has no figure
    entries, summarise = sections.v3_against_v2(_settings(resolution=160))
    assert all(e["paper_ms"] is None for e in entries)
    assert summarise(_fake_rows(entries, lambda e: 1.0))["comparisons"][0]["paper_latency_ratio"] is None


def test_hswish_relative_to_relu_against_table5():
    entries, summarise = sections.hswish_ablation(_settings())
    assert [(e["variant"], e["hswish"]) for e in entries] == [
        ("relu", "none"), ("hswish@16", "fused"), ("hswish@16", "naive"), ("v3", "fused"), ("v3", "naive"),
        ("hswish@112", "fused"), ("hswish@112", "naive")]
    assert entries[2]["spec"] == table5_spec("hswish@16", naive=True)
    rows = _fake_rows(entries, lambda e: e["paper_ms"]["Pixel 1"])
    sec = summarise(rows)
    by = {(r["variant"], r["hswish"]): r for r in rows}
    assert by[("relu", "none")]["vs_relu"] == 1.0
    assert by[("hswish@16", "naive")]["vs_relu"] == pytest.approx(68.9 / 50.5)
    assert by[("hswish@112", "fused")]["paper_vs_relu"] == pytest.approx(51.0 / 50.5)
    naive = {c["variant"]: c for c in sec["comparisons"]}
    assert naive["h-swish @16"]["naive_vs_fused"] == pytest.approx(68.9 / 53.5)
    assert naive[TABLE5["v3"].label]["paper_naive_vs_fused"] == pytest.approx(57.5 / 51.4)
    assert sec["paper"].startswith("Table 5")


def test_int8_speedups_against_tables_3_and_4():
    entries, summarise = sections.float_against_int8(_settings())
    assert [e["runtime"] for e in entries] == ["onnxruntime", "onnxruntime-int8"] * 2
    sec = summarise(_fake_rows(entries, lambda e: e["paper_ms"]["Pixel 3"]))
    large, small = sec["comparisons"]
    assert large["model"] == "V3-Large 1.0"
    assert large["int8_speedup"] == pytest.approx(44 / 31.7)
    assert large["paper_int8_speedup"] == pytest.approx({"Pixel 1": 51 / 44, "Pixel 2": 61 / 42.5,
                                                        "Pixel 3": 44 / 31.7})
    assert small["paper_int8_speedup"]["Pixel 1"] == pytest.approx(15.8 / 15.5)


def test_grid_plan_and_reference():
    entries, summarise = sections.multiplier_resolution_grid(_settings())
    assert len(entries) == 2 * 2 * 2
    rows = _fake_rows(entries, lambda e: e["width_mult"] * e["resolution"])
    summarise(rows)
    ref = {(r["family"], r["width_mult"], r["resolution"]): r for r in rows}
    r = ref[("mobilenet_v3_large", 0.75, 224)]
    assert r["vs_ref"] == pytest.approx(0.75)
    assert r["paper_vs_ref"]["Pixel 1"] == pytest.approx(39 / 51)
    assert ref[("mobilenet_v3_small", 1.0, 160)]["paper_ms"] is None
    assert r["gmadds_per_s"] == pytest.approx(r["madds"] / r["median_ms"] / 1e6)
    quick = sections.multiplier_resolution_grid(_settings(multipliers=QUICK_GRID[0], resolutions=QUICK_GRID[1]))[0]
    assert len(quick) == 2 * len(QUICK_GRID[0]) * len(QUICK_GRID[1])


def test_paper_float_and_int8_tables():
    assert set(PHONES) == {"Pixel 1", "Pixel 2", "Pixel 3"}
    assert PAPER_FLOAT_MS[("mobilenet_v3_large", 1.0)] == (51, 61, 44)
    assert PAPER_INT8_MS[("mobilenet_v2", 0.35)] == (16.7, 15.6, 11.9)


# -- whole runs (tiny) ------------------------------------------------------------------------------------------
def check_measured(sec, runtime):
    m = sec["measured"]
    assert m["cpu"] and m["threads"] == 1 and m["clock"] in CLOCKS and "T" in m["date"] and runtime in m["runtime"]


def test_paper_comparisons_structure():
    res = paper_comparisons("v3-vs-v2,hswish,grid", **TINY)
    assert list(res["sections"]) == ["v3-vs-v2", "hswish", "grid"]
    assert {"cpu", "logical_cpus", "date", "load_avg_1m", "load_avg_1m_end"} <= set(res["machine"])
    assert res["settings"]["runtime"] == "eager" and res["versions"]["torch"] == torch.__version__
    for sec in res["sections"].values():
        check_measured(sec, "eager")
        assert sec["title"] and sec["rows"]
        for r in sec["rows"]:
            assert r["median_ms"] > 0 and len(r["round_medians_ms"]) == 1
            assert r["params"] > 0 and r["madds"] > 0 and r["resolution"] == 32 and r["runtime"] == "eager"
    assert len(res["sections"]["hswish"]["rows"]) == 7 and len(res["sections"]["grid"]["rows"]) == 2
    assert [r["vs_relu"] for r in res["sections"]["hswish"]["rows"]][0] == 1.0
    json.dumps(res)  # plain JSON


@needs_onnx
def test_cli_bench_json_with_int8(capsys):
    assert main(["bench", "--sections", "int8", "--json", *TINY_ARGS]) == 0
    res = json.loads(capsys.readouterr().out)
    assert list(res["sections"]) == ["int8"]
    int8 = res["sections"]["int8"]
    check_measured(int8, "onnxruntime-int8")
    assert [r["runtime"] for r in int8["rows"]] == ["onnxruntime", "onnxruntime-int8"] * 2
    assert [c["model"] for c in int8["comparisons"]] == ["V3-Large 1.0", "V3-Small 1.0"]
    assert all(c["int8_speedup"] > 0 for c in int8["comparisons"])


def test_cli_bench_table(capsys):
    assert main(["bench", "--sections", "grid", *TINY_ARGS]) == 0
    out = capsys.readouterr().out
    assert "== grid" in out and "V3-Small 0.35 @32" in out and "CPU:" in out and "MAdds:" in out


# -- bad input --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,message", [
    (["--sections", "v3-vs-v4"], "unknown section(s) 'v3-vs-v4'"),
    (["--threads", "0"], "threads must be a positive integer"),
    (["--clock", "cpu", "--threads", "2"], "threads=1"),
    (["--rounds", "0"], "rounds and min_runs must be positive"),
    (["--resolutions", "1"], "at least 3"),
    (["--multipliers", "0"], "multipliers must be numbers in (0, 4]"),
    (["--peer-python", "/nonexistent/python"], "--peer-python applies to --peers"),
    (["--peers", "--peer-python", "/nonexistent/python"], "peer python not found"),
])
def test_cli_bench_errors(capsys, argv, message):
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mnv3 bench: error:") and message in err


def test_bench_unknown_section_lists_the_known_ones():
    with pytest.raises(ValueError) as e:
        paper_comparisons(["grid", "nope"])
    assert all(s in str(e.value) for s in BENCH_SECTIONS)
    with pytest.raises(ValueError, match="unknown runtime"):
        paper_comparisons(["grid"], runtime="litert")


@pytest.mark.parametrize("argv", [["--sections", "int8"], ["--sections", "hswish", "--runtime", "onnxruntime"]])
def test_cli_bench_missing_onnxruntime(capsys, monkeypatch, argv):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if it were not installed
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert "onnxruntime is not installed" in err and "mobilenetv3[deploy]" in err
    with pytest.raises(MissingExtraError):
        paper_comparisons(["int8"])


def test_bench_without_peer_environment_says_how_to_make_it(capsys, monkeypatch):
    for module in (bench_run, compare):  # where the bench and the comparison look for it
        monkeypatch.setattr(module, "find_peer_python", lambda given=None: None)
    assert main(["bench", "--sections", "peers", "--json", "--quiet"]) == 0
    captured = capsys.readouterr()
    sec = json.loads(captured.out)["sections"]["peers"]
    assert "make peer-setup" in sec["skipped"] and sec["rows"] == []
    assert "make peer-setup" in captured.err
    with pytest.raises(PeerUnavailableError, match="make peer-setup"):
        compare.compare_with_peers(resolution=32)


@pytest.mark.slow
def test_compare_with_peers_end_to_end():
    if find_peer_python() is None:
        pytest.skip("no peer environment (make peer-setup)")
    res = compare.compare_with_peers(["mobilenet_v3_small"], resolution=64, ours=("eager",), rounds=1, warmup=0,
                                 min_runs=1, min_seconds=0)
    who = {r["who"] for r in res["rows"]}
    assert who == {"ours", "peer"} and any(r["vs_best_peer"] for r in res["rows"])
    assert res["isa_cap"] is None


@pytest.mark.slow
def test_compare_with_peers_times_capped_paths_in_a_worker():
    pytest.importorskip("openvino")
    if find_peer_python() is None:
        pytest.skip("no peer environment (make peer-setup)")
    with pytest.raises(ValueError, match="unknown oneDNN instruction set"):
        compare.compare_with_peers(["mobilenet_v3_small"], isa_cap="AVX9")
    with pytest.raises(ValueError, match="none of capped"):
        compare.compare_with_peers(["mobilenet_v3_small"], ours=("eager",), isa_cap=INT8_ISA_CAP)
    res = compare.compare_with_peers(["mobilenet_v3_small"], resolution=64, ours=("eager", "openvino-int8:nhwc"),
                                 rounds=1, warmup=0, min_runs=1, min_seconds=0, isa_cap="avx512_core_vnni",
                                 peer_onnx=False)
    paths = [r["path"] for r in res["rows"] if r["who"] == "ours"]
    assert paths == ["ours eager (channels-last)", "ours ONNX -> OpenVINO int8, NHWC input",
                     "ours ONNX -> OpenVINO int8, NHWC input, oneDNN ISA <= AVX512_CORE_VNNI"]
    assert all("NHWC input" in d for d in res["capped_details"]["mobilenet_v3_small"].values())
    assert res["isa_cap"] == "AVX512_CORE_VNNI" and onednn_isa_cap() is None  # this process stays uncapped
