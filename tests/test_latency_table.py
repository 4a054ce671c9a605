"""Latency tables (issue 14): keys, table files, OFA's YAML layout, the resumable builder, the predictor, the check
metrics and the CLI. A tiny search space at 32 px keeps every measurement here to a fraction of a second."""

from __future__ import annotations

import itertools
import json
import math
import os
import random

import pytest

from mobilenetv3.cli import main
from mobilenetv3.search.latency_table import (
    LatencyTable,
    TableFileError,
    TableMismatchError,
    block_keys,
    check_compatible,
    format_key,
    load_table,
    parse_key,
    read_ofa_yaml,
    table_clock,
    write_ofa_yaml,
)
from mobilenetv3.search.predictor import MissingEntryError, fit_correction, interpolate, predict, table_sum
from mobilenetv3.search.table_builder import TimingSettings, build_table, space_keys, time_key
from mobilenetv3.search.table_check import check_table, kendall_tau, measure_interleaved, within
from mobilenetv3.spec import ArchSpec, BlockSpec
from mobilenetv3.zoo import get_spec

FAST = TimingSettings(warmup=2, min_runs=5, min_seconds=0.0)


class TinySpace:
    """A two-stage space with the contract's methods (search/space.py's SearchSpace): kernel, width and
    activation choices over a 3-block seed at 32 px."""

    name = "tiny"

    def __init__(self) -> None:
        self.seed = ArchSpec("tiny", (BlockSpec(3, 16, 16, True, "relu", 2), BlockSpec(3, 48, 24, False, "relu", 2),
                                      BlockSpec(3, 72, 24, False, "hswish", 1)),
                             last_channels=64, head_channels=128, num_classes=10, resolution=32)
        self.kernels, self.widths, self.acts = (3, 5), (16, 24), ("relu", "hswish")

    def decode(self, k0, k1, w, act) -> ArchSpec:
        blocks = (BlockSpec(k0, 16, 16, True, "relu", 2), BlockSpec(k1, 3 * 16, w, False, act, 2),
                  BlockSpec(k1, 3 * w, w, False, act, 1))
        return self.seed.replace(blocks=blocks)

    def sample(self, rng: random.Random) -> ArchSpec:
        return self.decode(rng.choice(self.kernels), rng.choice(self.kernels), rng.choice(self.widths),
                           rng.choice(self.acts))

    def all_specs(self) -> list[ArchSpec]:
        return [self.decode(*c) for c in itertools.product(self.kernels, self.kernels, self.widths, self.acts)]

    def reachable_blocks(self, resolution: int):
        out = set()
        for spec in self.all_specs():
            hw = math.ceil(resolution / spec.stem_stride)
            for b, c in zip(spec.blocks, spec.block_inputs(), strict=True):
                out.add((hw, c, b))
                hw = math.ceil(hw / b.stride)
        return sorted(out, key=repr)

    def reachable_last_inputs(self, resolution: int):
        return sorted({(math.ceil(resolution / 8), w) for w in self.widths})


def fake_measure(key: str) -> dict:
    """A deterministic stand-in for timing: a figure that grows with the key's size."""
    p = parse_key(key)
    size = math.prod(p["input"]) + math.prod(p["output"]) + 10 * p.get("expand", 0) * p.get("kernel", 1)
    return {"count": 5, "median": size / 1e4, "p10": size / 1.1e4, "p90": size / 0.9e4}


def test_keys_round_trip_and_follow_ofa_format():
    spec = get_spec("mobilenet_v3_small")
    keys = block_keys(spec, 224)
    assert keys[0] == "Conv-input:224x224x3-output:112x112x16"
    assert keys[1] == ("expanded_conv-input:112x112x16-output:56x56x16-expand:16-kernel:3-stride:2-idskip:0-se:1-hs:0")
    assert keys[-4:] == ["Conv_1-input:7x7x96-output:7x7x576", "AvgPool2D-input:7x7x576-output:1x1x576",
                         "Conv_2-input:1x1x576-output:1x1x1024", "Logits-input:1x1x1024-output:1000"]
    assert len(keys) == 1 + len(spec.blocks) + 4
    for key in keys:
        p = parse_key(key)
        fields = {k: v for k, v in p.items() if k not in ("kind", "input", "output")}
        assert format_key(p["kind"], p["input"], p["output"], **fields) == key
    assert any("idskip:1" in k for k in keys)  # residual blocks are told apart
    for bad in ("conv-input:1x1x3-output:1x1x3", "Conv-input:1x1x3", "expanded_conv-input:8x8x16-output:8x8x16",
                "Conv-input:1x1x3-output:1x1x3-kernel:3", "Conv-input:01x1x3-output:1x1x3"):
        with pytest.raises(ValueError):
            parse_key(bad)


def test_other_activations_have_no_key():
    with pytest.raises(ValueError, match="relu6"):
        block_keys(get_spec("mobilenet_v2"))


def test_ofa_yaml_import_and_export(tmp_path):
    path = tmp_path / "ofa.yaml"
    path.write_text("# an OFA-style table\n"
                    "Conv-input:224x224x3-output:112x112x16:\n  count: 100\n  mean: 1.5\n  std: 0.1\n"
                    "expanded_conv-input:112x112x16-output:56x56x24-expand:64-kernel:3-stride:2-idskip:0-se:0-hs:0:\n"
                    "  count: 100\n  mean: 2.25\n  std: 0.2\n"
                    "'Logits-input:1x1x1280-output:1000': {count: 50, mean: 0.125, std: 0.01}\n")
    table = load_table(path)
    assert table.median("Conv-input:224x224x3-output:112x112x16") == 1.5
    assert table.median("Logits-input:1x1x1280-output:1000") == 0.125
    assert table.entries["expanded_conv-input:112x112x16-output:56x56x24-expand:64-kernel:3-stride:2-idskip:0-se:0-"
                         "hs:0"] == {"count": 100, "median": 2.25}
    out = tmp_path / "back.yaml"
    write_ofa_yaml(table, out)
    assert read_ofa_yaml(out).entries == table.entries
    bad = tmp_path / "bad.yaml"
    bad.write_text("Conv-input:224x224x3-output:112x112x16:\n  count: 1\n")
    with pytest.raises(TableFileError, match="bad.yaml.*no mean"):
        load_table(bad)


def test_corrupt_table_file_is_named(tmp_path):
    path = tmp_path / "t.json"
    path.write_text('{"format": 1, "header": {}, "entries": {"Conv-input:8x8x3-output:4x4x16": ')
    with pytest.raises(TableFileError, match="t.json: corrupt"):
        load_table(path)
    path.write_text(json.dumps({"format": 1, "header": {}, "entries": {"Conv-input:8x8x3-output:4x4x16":
                                                                       {"median": 0}}}))
    with pytest.raises(TableFileError, match="positive"):
        load_table(path)
    with pytest.raises(TableFileError, match="not found"):
        load_table(tmp_path / "missing.json")


def test_interrupted_build_resumes_without_measuring_twice(tmp_path):
    space, out = TinySpace(), tmp_path / "t.json"
    keys = space_keys(space, 32)
    measured: list[str] = []

    def dying(key):
        if len(measured) == 7:
            raise KeyboardInterrupt  # a kill mid-build
        measured.append(key)
        return fake_measure(key)

    with pytest.raises(KeyboardInterrupt):
        build_table(space, 32, "eager", out, measure=dying, progress=False)
    assert len(load_table(out).entries) == 7
    table = build_table(space, 32, "eager", out, measure=lambda k: (measured.append(k), fake_measure(k))[1],
                        progress=False)
    assert sorted(measured) == sorted(keys) and len(measured) == len(set(measured))
    assert set(load_table(out).entries) == set(keys) and table.header["entries"] == len(keys)
    assert table.header["space"] == "tiny" and table.header["resolution"] == 32
    again: list[str] = []
    build_table(space, 32, "eager", out, measure=lambda k: again.append(k), progress=False)
    assert again == []
    # a spec of the space is costed from the table's own keys
    for spec in space.all_specs():
        assert set(block_keys(spec, 32)) <= set(keys)


def test_mismatched_tables_are_refused(tmp_path):
    space, out = TinySpace(), tmp_path / "t.json"
    build_table(space, 32, "eager", out, measure=fake_measure, progress=False)
    table = load_table(out)
    with pytest.raises(TableMismatchError, match="runtime: the table has 'eager'"):
        check_compatible(table, runtime="onnxruntime", threads=1)
    with pytest.raises(TableMismatchError, match="cpu"):
        check_compatible(table, cpu="Some Other CPU")
    with pytest.raises(TableMismatchError, match="threads.*resolution"):
        check_compatible(table, threads=4, resolution=224)
    # the same model name from another CPU generation (a hypervisor shows "AMD EPYC" for Zen 3 and Zen 4 alike)
    with pytest.raises(TableMismatchError, match="cpu_id: the table has"):
        check_compatible(table, cpu=table.header["cpu"], cpu_id="AuthenticAMD 25/17/1 avx2,fma,avx512f")
    assert check_compatible(table, force=True, threads=4) == ["threads: the table has 1, this measurement 4"]
    with pytest.raises(TableMismatchError, match="stem_act"):
        check_compatible(table, spec=space.seed.replace(stem_act="relu"))
    with pytest.raises(TableMismatchError, match="resolution"):  # resuming at another resolution
        build_table(space, 64, "eager", out, measure=fake_measure, progress=False)


def test_cli_refuses_a_table_from_another_machine(tmp_path, capsys):
    space, out = TinySpace(), tmp_path / "t.json"
    build_table(space, 32, "eager", out, measure=fake_measure, progress=False)
    data = json.loads(out.read_text())
    data["header"]["cpu"] = "Another CPU"
    out.write_text(json.dumps(data))
    spec = tmp_path / "spec.json"
    space.seed.save(spec)
    argv = ["latency", "--spec", str(spec), "--min-runs", "2", "--min-seconds", "0", "--warmup", "1",
            "--predict", str(out)]
    assert main(argv) == 2
    assert "cpu: the table has 'Another CPU'" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0
    printed = capsys.readouterr().out
    assert "predicted" in printed and "vs measured" in printed and "warning (forced): cpu" in printed


def test_missing_keys_are_interpolated_never_zero():
    a = "expanded_conv-input:8x8x16-output:8x8x16-expand:48-kernel:3-stride:1-idskip:1-se:0-hs:0"
    b = "expanded_conv-input:8x8x32-output:8x8x32-expand:96-kernel:3-stride:1-idskip:1-se:0-hs:0"
    mid = "expanded_conv-input:8x8x24-output:8x8x24-expand:72-kernel:3-stride:1-idskip:1-se:0-hs:0"
    table = LatencyTable({}, {a: {"median": 1.0}, b: {"median": 3.0}})
    assert 1.0 < interpolate(table, mid) < 3.0
    with pytest.raises(MissingEntryError, match="hs:1.*0 entries of its structure"):
        interpolate(table, mid.replace("hs:0", "hs:1"))
    with pytest.raises(MissingEntryError, match="too far"):
        interpolate(table, mid.replace("x24", "x96").replace("expand:72", "expand:288"))
    space = TinySpace()
    spec = space.seed
    with pytest.raises(MissingEntryError):
        table_sum(table, spec)


def test_sum_of_entries_is_close_to_measured_latency(tmp_path):
    """Real timings (eager, 32 px): the sum of a spec's entries within a loose bound of its end-to-end latency."""
    from mobilenetv3.latency.measure import measure_latency

    space, out = TinySpace(), tmp_path / "t.json"
    table = build_table(space, 32, "eager", out, settings=TimingSettings(warmup=5, min_runs=20, min_seconds=0.02),
                        progress=False)
    for spec in space.all_specs()[::5]:
        measured = measure_latency(spec, runtime="eager", resolution=32, warmup=5, min_runs=20,
                                   min_seconds=0.05).median_ms
        predicted = predict(table, spec).ms
        assert 0.33 < predicted / measured < 3.0, (spec.blocks, predicted, measured)


def test_onnxruntime_entry_is_timed_through_the_export():
    pytest.importorskip("onnxruntime")
    key = "expanded_conv-input:8x8x16-output:4x4x24-expand:48-kernel:5-stride:2-idskip:0-se:1-hs:1"
    entry = time_key(key, TinySpace().seed, "onnxruntime", 1, FAST)
    assert entry["count"] >= 5 and 0 < entry["p10"] <= entry["median"] <= entry["p90"]


def test_an_export_kept_between_sessions_is_read_not_redone(tmp_path):
    """``prepare_runtime(onnx_file=)``: the first call writes the export there, a later call runs that file even
    for a module whose weights differ (so it did not export again); eager has no export to keep."""
    pytest.importorskip("onnxruntime")
    import torch

    from mobilenetv3.latency.targets import prepare_runtime

    x = torch.randn(1, 3, 8, 8)
    first, other = torch.nn.Conv2d(3, 4, 3).eval(), torch.nn.Conv2d(3, 4, 3).eval()
    path = tmp_path / "conv.onnx"
    with torch.no_grad():
        a = prepare_runtime("onnxruntime", first, x, onnx_file=path)
        assert path.exists()
        b = prepare_runtime("onnxruntime", other, x, onnx_file=path)
        torch.testing.assert_close(torch.as_tensor(b.run()).reshape(1, 4, 6, 6), first(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(torch.as_tensor(a.run()), torch.as_tensor(b.run()))
    with pytest.raises(ValueError, match="onnx_file applies to onnxruntime"):
        prepare_runtime("eager", first, x, onnx_file=path)


def test_a_build_in_several_sessions_exports_each_key_once(tmp_path, monkeypatch):
    """Three sessions on ONNX Runtime: three runtime sessions per key but one export, into a folder that is gone
    when the build ends."""
    pytest.importorskip("onnxruntime")
    import mobilenetv3.latency.targets as targets

    exports, folders = [], set()
    real = targets.onnx_export

    def counting(model, x, tmp, **options):
        exports.append(tuple(x.shape))
        return real(model, x, tmp, **options)

    real_move = targets.shutil.move

    def moving(src, dst):
        folders.add(os.path.dirname(dst))
        return real_move(src, dst)

    monkeypatch.setattr(targets, "onnx_export", counting)
    monkeypatch.setattr(targets.shutil, "move", moving)
    space = TinySpace()
    keys = space_keys(space, 32)[:3]
    table = build_table(space, 32, "onnxruntime", tmp_path / "t.json", settings=TimingSettings(
        warmup=1, min_runs=2, min_seconds=0.0, sessions=3), keys=keys, progress=False)
    assert len(exports) == len(keys) and all(len(table.entries[k]["sessions"]) == 3 for k in keys)
    assert len(folders) == 1 and not os.path.exists(folders.pop())


def test_kendall_tau_against_hand_computed_values():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)  # 2 concordant, 1 discordant pair
    # tau-b with a tie in the first ranking: 5 concordant pairs of 6, one tied: 5 / sqrt(5 * 6)
    assert kendall_tau([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / math.sqrt(30))
    with pytest.raises(ValueError):
        kendall_tau([1, 1], [1, 2])
    assert within([1.0, 1.06, 1.2], [1.0, 1.0, 1.0], 0.05) == pytest.approx(1 / 3)
    assert within([1.0, 1.06, 1.2], [1.0, 1.0, 1.0], 0.10) == pytest.approx(2 / 3)


def test_correction_is_kept_only_when_it_helps(tmp_path):
    space = TinySpace()
    table = build_table(space, 32, "eager", tmp_path / "t.json", measure=fake_measure, progress=False)
    specs = [space.sample(random.Random(i)) for i in range(24)]
    sums = [table_sum(table, s) for s in specs]
    # a per-entry overhead the sum misses: the correction learns it
    measured = [0.8 * p.sum_ms + 0.05 * len(p.keys) for p in sums]
    record = fit_correction(table, specs, measured)
    assert record["kept"] and record["holdout_rmspe_corrected"] < record["holdout_rmspe_sum"]
    assert predict(table, specs[0]).ms == pytest.approx(measured[0], rel=1e-6)
    # measurements the sum already matches: nothing to learn, so no correction is kept
    record = fit_correction(table, specs, [p.sum_ms for p in sums])
    assert not record["kept"] and predict(table, specs[0]).ms == sums[0].sum_ms


@pytest.mark.parametrize("relative", [[], ["--relative"]], ids=["plain", "relative"])
def test_cli_build_fit_and_check(tmp_path, monkeypatch, capsys, relative):
    import mobilenetv3.cli.latency_table as cli_search

    monkeypatch.setattr(cli_search, "get_space", lambda name: TinySpace())
    out = str(tmp_path / "t.json")
    assert main(["latency-table", "build", "--space", "tiny", "--resolution", "32", "--runtime", "eager",
                 "--out", out, "--quiet", "--warmup", "2", "--min-runs", "5", "--min-seconds", "0", *relative]) == 0
    printed = capsys.readouterr().out
    assert "entries" in printed and ("relative to tiny" in printed) == bool(relative)
    fast = ["--quiet", "--warmup", "2", "--min-runs", "10", "--min-seconds", "0"]
    assert main(["latency-table", "fit", out, "--samples", "8", *fast]) == 0
    assert "held out" in capsys.readouterr().out
    assert main(["latency-table", "check", out, "--samples", "4", "--json", *fast]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"rmspe", "within_5", "within_10", "kendall_tau", "noise_rmspe", "samples"} <= set(report)
    assert report["samples"] == 4 and 0 <= report["within_10"] <= 1 and report["rmspe"] >= 0
    assert main(["latency-table", "convert", out, str(tmp_path / "t.yaml")]) == 0
    assert len(load_table(tmp_path / "t.yaml").entries) == len(load_table(out).entries)


def test_check_scores_predictions_against_measurements(tmp_path):
    space = TinySpace()
    out = tmp_path / "t.json"
    table = build_table(space, 32, "eager", out, measure=fake_measure, progress=False)
    calls = iter(range(1000))
    report = check_table(out, space, 6, progress=False,
                         measure=lambda s: table_sum(table, s).ms * (1.0 + 0.01 * (next(calls) % 2)))
    assert report["rmspe"] == pytest.approx(0.0, abs=1e-9)  # the first measurement is the sum exactly
    assert report["noise_rmspe"] == pytest.approx(0.01 / 1.0, rel=0.02)
    assert report["within_5"] == 1.0


def test_build_adds_the_keys_of_extra_specs(tmp_path):
    space = TinySpace()
    other = space.seed.replace(stem_channels=24, last_channels=96)
    table = build_table(space, 32, "eager", tmp_path / "t.json", measure=fake_measure, progress=False,
                        extra_specs=[other])
    assert set(block_keys(other, 32)) <= set(table.entries)
    assert not set(block_keys(other, 32)) <= set(space_keys(space, 32))


def test_interleaved_measurement_gives_the_median_of_all_rounds_and_of_each_half(tmp_path, monkeypatch):
    """Every spec is prepared once and timed once per round, round after round; the halves are the even and the
    odd rounds (the noise floor's two measurements)."""
    import mobilenetv3.search.table_check as check

    space = TinySpace()
    table = build_table(space, 32, "eager", tmp_path / "t.json", measure=fake_measure, progress=False)
    specs = [space.sample(random.Random(i)) for i in range(3)]
    calls = []

    def fake_interleaved(runners, *, rounds, **_):
        calls.append((sorted(runners), rounds))
        return {i: [10.0 * (i + 1) + r for r in range(rounds)] for i in runners}  # round r adds r ms

    monkeypatch.setattr(check, "time_interleaved", fake_interleaved)
    everything, even, odd = measure_interleaved(table, specs, rounds=4, progress=False)
    assert calls == [([0, 1, 2], 4)]
    assert everything == [11.5, 21.5, 31.5] and even == [11.0, 21.0, 31.0] and odd == [12.0, 22.0, 32.0]
    # the least disturbed round: rounds 0 and 1 are the fastest of the even and the odd ones
    fastest = measure_interleaved(table, specs, rounds=4, progress=False, statistic="min")
    assert fastest == ([10.0, 20.0, 30.0], [10.0, 20.0, 30.0], [11.0, 21.0, 31.0])
    with pytest.raises(ValueError, match="at least 2"):
        measure_interleaved(table, specs, rounds=1, progress=False)
    with pytest.raises(ValueError, match="statistic"):
        measure_interleaved(table, specs, rounds=4, progress=False, statistic="mean")
    # three sessions of each spec: the median of the sessions' figures
    calls.clear()

    def sessions_interleaved(runners, *, rounds, **_):
        calls.append(sorted(runners))
        slow = {(i, k): 5.0 if k == 2 else (0.5 if k == 1 else 0.0) for i, k in runners}  # one slow session
        return {key: [10.0 * (key[0] + 1) + slow[key] + r for r in range(rounds)] for key in runners}

    monkeypatch.setattr(check, "time_interleaved", sessions_interleaved)
    three = measure_interleaved(table, specs, rounds=4, progress=False, statistic="min", sessions=3)
    assert calls == [[(i, k) for i in range(3) for k in range(3)]]
    assert three == ([10.5, 20.5, 30.5], [10.5, 20.5, 30.5], [11.5, 21.5, 31.5])


def test_a_cpu_clock_table_is_timed_and_checked_with_the_threads_cpu_time(tmp_path, monkeypatch):
    """``clock="cpu"``: entries timed with the thread's CPU time (time.thread_time), recorded in the header, the
    end-to-end check timed with the same clock; one table holds one clock, and the cpu clock needs one thread."""
    import time

    import mobilenetv3.search.table_builder as builder
    import mobilenetv3.search.table_check as check

    timers = []
    real = builder.time_callable
    monkeypatch.setattr(builder, "time_callable", lambda fn, **kw: (timers.append(kw["timer"]), real(fn, **kw))[1])
    cpu = TimingSettings(warmup=1, min_runs=2, min_seconds=0.0, clock="cpu")
    key = "expanded_conv-input:8x8x16-output:8x8x16-expand:48-kernel:3-stride:1-idskip:1-se:0-hs:0"
    entry = time_key(key, TinySpace().seed, "eager", 1, cpu)
    assert timers == [time.thread_time] and entry["median"] > 0
    space, out = TinySpace(), tmp_path / "t.json"
    table = build_table(space, 32, "eager", out, settings=cpu, measure=fake_measure, progress=False)
    assert table_clock(table) == "cpu" and table_clock(load_table(out)) == "cpu"
    with pytest.raises(TableFileError, match="timed with the cpu clock, not wall"):
        build_table(space, 32, "eager", out, measure=fake_measure, progress=False)
    clocks = []
    monkeypatch.setattr(check, "time_interleaved",
                        lambda runners, *, rounds, clock, **_: (clocks.append(clock),
                                                                {i: [1.0] * rounds for i in runners})[1])
    measure_interleaved(table, [space.sample(random.Random(0))], rounds=2, progress=False)
    assert clocks == ["cpu"]
    assert table_clock(build_table(space, 32, "eager", tmp_path / "w.json", measure=fake_measure,
                                   progress=False)) == "wall"
    with pytest.raises(ValueError, match="unknown clock"):
        TimingSettings(clock="gpu")
    with pytest.raises(ValueError, match="needs threads=1"):
        build_table(space, 32, "eager", tmp_path / "two.json", threads=2, settings=cpu, measure=fake_measure,
                    progress=False)


def test_a_relative_table_is_timed_against_its_reference_and_checked_in_its_units(tmp_path, monkeypatch):
    """``relative=True``: entries timed against the seed network (really, eager at 32 px), the reference and its
    latency recorded once and kept on resume; the end-to-end check times specs against the same reference and
    scales their ratios by the same latency; a table is resumed only the way it was timed."""
    import mobilenetv3.search.table_check as check

    space, out = TinySpace(), tmp_path / "rel.json"
    rel = TimingSettings(warmup=1, min_runs=3, min_seconds=0.0, relative=True)
    keys = space_keys(space, 32)
    table = build_table(space, 32, "eager", out, settings=rel, keys=keys[:2], progress=False)
    timing = load_table(out).header["timing"]
    assert timing["relative"] is True and timing["reference"] == "tiny" and timing["reference_ms"] > 0
    assert timing["reference_spec"] == space.seed.replace(resolution=32).to_dict()
    assert all(0 < e["p10"] <= e["median"] <= e["p90"] for e in table.entries.values()) and len(table.entries) == 2
    resumed = build_table(space, 32, "eager", out, settings=rel, keys=keys[:3], progress=False)
    assert len(resumed.entries) == 3 and resumed.header["timing"]["reference_ms"] == timing["reference_ms"]
    with pytest.raises(TableFileError, match=r"against a reference \(--relative\): resume it the same way"):
        build_table(space, 32, "eager", out, settings=FAST, keys=keys[:4], progress=False)
    plain = build_table(space, 32, "eager", tmp_path / "plain.json", measure=fake_measure, progress=False)
    with pytest.raises(TableFileError, match="on its own"):
        build_table(space, 32, "eager", tmp_path / "plain.json", settings=rel, progress=False)
    seen = []

    def fake_interleaved(runners, *, rounds, reference=None, **_):
        seen.append(reference)
        return {i: [1.0 + r for r in range(rounds)] for i in runners}  # ratios 1, 2, 3, 4

    monkeypatch.setattr(check, "time_interleaved", fake_interleaved)
    spec = space.sample(random.Random(0))
    everything, even, odd = measure_interleaved(resumed, [spec], rounds=4, progress=False)
    ms = timing["reference_ms"]
    assert (everything, even, odd) == ([pytest.approx(2.5 * ms)], [pytest.approx(2 * ms)], [pytest.approx(3 * ms)])
    assert callable(seen[0])
    measure_interleaved(plain, [spec], rounds=2, progress=False)
    assert seen[1] is None  # a plain table's check times on its own
    del resumed.header["timing"]["reference_spec"]
    with pytest.raises(TableFileError, match="records none"):
        measure_interleaved(resumed, [spec], rounds=2, progress=False)


def test_entries_timed_in_several_sessions_take_their_median(tmp_path):
    """``sessions=3``: every key measured in three passes (a key's sessions a whole pass apart), its median the
    sessions' median, the sessions listed in the file; an interrupted pass resumes where it stopped; a rerun with
    more sessions adds passes; a malformed sessions list is a corrupt table."""
    space, out = TinySpace(), tmp_path / "t.json"
    figures = iter([1.0, 5.0, 2.0] * 1000)
    calls: list[str] = []

    def measure(key):
        calls.append(key)
        v = next(figures)
        return {"count": 5, "median": v, "p10": v - 0.5, "p90": v + 0.5}

    keys = space_keys(space, 32)[:3]
    table = build_table(space, 32, "eager", out, settings=TimingSettings(sessions=3), keys=keys, measure=measure,
                        progress=False)
    assert calls == keys * 3  # pass by pass
    saved = load_table(out)
    assert saved.header["timing"]["sessions"] == 3
    first = saved.entries[keys[0]]  # its sessions: calls 0, 3 and 6 -> 1.0, 1.0, 1.0
    assert first["sessions"] == [1.0, 1.0, 1.0] and first["median"] == 1.0 and first["count"] == 15
    second = table.entries[keys[1]]  # calls 1, 4, 7 -> 5.0, 5.0, 5.0
    assert second["median"] == 5.0
    # an interruption in the second pass: the rerun measures only what is missing
    calls.clear()
    out2 = tmp_path / "t2.json"

    def failing(key):
        if len(calls) == 4:
            raise KeyboardInterrupt
        calls.append(key)
        return {"count": 1, "median": float(len(calls)), "p10": 0.5, "p90": 9.0}

    with pytest.raises(KeyboardInterrupt):
        build_table(space, 32, "eager", out2, settings=TimingSettings(sessions=2), keys=keys, measure=failing,
                    progress=False)
    assert [len(e.get("sessions", [0])) for e in load_table(out2).entries.values()] == [2, 1, 1]
    calls.clear()
    resumed = build_table(space, 32, "eager", out2, settings=TimingSettings(sessions=2), keys=keys,
                          measure=lambda k: (calls.append(k), {"count": 1, "median": 7.0, "p10": 6.0, "p90": 8.0})[1],
                          progress=False)
    assert calls == keys[1:] and resumed.entries[keys[1]]["sessions"] == [2.0, 7.0]
    assert resumed.entries[keys[1]]["median"] == 4.5 and resumed.entries[keys[1]]["p90"] == 9.0
    # more sessions on a finished table: one more pass
    calls.clear()
    more = build_table(space, 32, "eager", out2, settings=TimingSettings(sessions=3), keys=keys,
                       measure=lambda k: (calls.append(k), {"count": 1, "median": 3.0, "p10": 2.0, "p90": 4.0})[1],
                       progress=False)
    assert calls == keys and more.entries[keys[1]]["median"] == 3.0 and more.header["timing"]["sessions"] == 3
    data = json.loads(out2.read_text())
    data["entries"][keys[0]]["sessions"] = [1.0, -2.0]
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(TableFileError, match="sessions"):
        load_table(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="sessions must be a positive integer"):
        TimingSettings(sessions=0)
