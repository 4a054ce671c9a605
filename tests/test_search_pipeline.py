"""The search pipeline end to end on a tiny data run (three colours at 16 px): every stage runs for real (proxy
training, the trainings, NetAdapt's fine-tunes), with latency from a stand-in (multiply-adds) so the choices do not
depend on the machine's load. Checks: the stages' order and outputs, the NetAdapt skip when the trained seed already
meets the target, resume after an interruption with no stage run twice, and the refusals."""

import json
import shutil

import pytest
import torch

from mobilenetv3.cost import spec_cost
from mobilenetv3.search import growing_table
from mobilenetv3.search.latency_table import parse_key
from mobilenetv3.search.pipeline import JOURNAL, STAGES, Pipeline, PipelineError, PipelineOptions
from mobilenetv3.search.predictor import key_madds
from mobilenetv3.spec import ArchSpec
from search_helpers import Interrupting

torch.set_num_threads(1)


def fake_ms(spec: ArchSpec) -> float:
    return spec_cost(spec, resolution=spec.resolution).madds / 1e6


def fake_measure(specs):
    return [fake_ms(s) for s in specs]


@pytest.fixture(autouse=True)
def fake_entries(monkeypatch):
    """Table entries from a stand-in (the block's multiply-adds): no timing in tests."""
    def entry(key, *args):
        ms = key_madds(parse_key(key)) / 1e6 + 0.002
        return {"count": 1, "median": ms, "p10": ms, "p90": ms}

    monkeypatch.setattr(growing_table, "time_key", entry)


def options(data_run: str, target_ms: float, **changes) -> PipelineOptions:
    values = dict(space="mobilenet_v3_small", target_ms=target_ms, data_run=data_run, calibrate=8,
                  nas={"samples": 4, "batch": 2, "steps_per_sample": 1, "top_k": 2},
                  netadapt={"steps_per_proposal": 1, "max_steps": 1, "eval_limit": 12}, train={"epochs": 1})
    values.update(changes)
    return PipelineOptions(**values)


def run(out, opts, **kwargs):
    return Pipeline(out, opts, progress=False, log=lambda m: None, measure=fake_measure, **kwargs).run()


def stages(out) -> list[str]:
    lines = (out / JOURNAL).read_text().splitlines()[1:]
    return [json.loads(line)["stage"] for line in lines]


def test_the_stages_run_in_order_and_netadapt_shrinks_the_trained_seed(data_run, tmp_path):
    out = tmp_path / "p"
    summary = run(out, options(data_run, target_ms=0.001))  # below any network: NetAdapt runs its one step
    assert stages(out) == list(STAGES)
    nas_best = ArchSpec.load(summary["nas"]["spec"])
    assert (nas_best.in_channels, nas_best.resolution, nas_best.num_classes) == (3, 16, 3)  # deployed at the data
    assert summary["netadapt"]["skipped"] is False and summary["netadapt"]["steps"] == 1
    seed_spec = ArchSpec.load(out / "seed" / "spec.json")
    final_spec = ArchSpec.load(out / "final" / "spec.json")
    assert final_spec == ArchSpec.load(summary["netadapt"]["spec"]).replace(name=final_spec.name)
    assert fake_ms(final_spec) < fake_ms(seed_spec)  # one NetAdapt step cut the (stand-in) latency
    rows = {r["name"]: r for r in summary["report"]["rows"]}
    assert set(rows) == {"space seed", "data run", "nas seed", "final"}
    assert rows["space seed"]["ratio"] == 1.0 and rows["final"]["measured_ms"] == pytest.approx(fake_ms(final_spec))
    assert rows["space seed"]["test_top1"] is None and 0 <= rows["final"]["test_top1"] <= 100
    assert 0 <= rows["data run"]["test_top1"] <= 100  # the trained baseline, scored beside the searched networks
    correction = summary["calibrate"]["correction"]
    assert correction is not None and "kept" in correction
    text = (out / "report.md").read_text()
    assert "| final |" in text and "nas/report.md" in text and "netadapt/report.md" in text
    assert (out / "nas" / "report.md").is_file() and (out / "netadapt" / "report.md").is_file()


def test_a_seed_that_already_meets_the_target_skips_netadapt(data_run, tmp_path):
    out = tmp_path / "p"
    summary = run(out, options(data_run, target_ms=1e6, calibrate=0))
    assert summary["netadapt"]["skipped"] is True and summary["final"]["same_as_seed"] is True
    assert summary["final"]["run"] == summary["seed"]["run"] and not (out / "final").exists()
    assert "skipped" in (out / "report.md").read_text()


def test_only_a_finished_data_run_is_scored(data_run, tmp_path):
    assert Pipeline.finished(data_run)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(data_run, unfinished)
    config = json.loads((unfinished / "config.json").read_text())
    config["derived"]["total_steps"] += 1  # its last checkpoint one step short of the end
    (unfinished / "config.json").write_text(json.dumps(config))
    assert not Pipeline.finished(unfinished)


def test_resume_after_an_interruption_runs_no_stage_twice(data_run, tmp_path):
    out = tmp_path / "p"
    opts = options(data_run, target_ms=0.001, calibrate=0)
    with pytest.raises(KeyboardInterrupt):  # stopped after NAS's third sample
        run(out, opts, evaluator=Interrupting(after=3))
    assert stages(out) == ["calibrate"]
    with pytest.raises(PipelineError, match="--resume"):
        run(out, opts)
    with pytest.raises(ValueError, match="does not match|options"):  # other options on resume
        run(out, options(data_run, target_ms=0.002, calibrate=0), resume=True)
    summary = run(out, opts, resume=True)
    assert stages(out) == list(STAGES)
    nas_samples = [json.loads(line) for line in (out / "nas" / "journal.jsonl").read_text().splitlines()[1:]]
    indices = [r["index"] for r in nas_samples if r.get("type") == "sample"]
    assert sorted(indices) == [0, 1, 2, 3]  # none lost, none twice
    again = run(out, opts, resume=True)  # a finished pipeline: its summary, nothing rerun
    assert again["report"] == summary["report"] and stages(out) == list(STAGES)


def test_bad_input_is_refused(data_run, tmp_path, make_colour_folder):
    from mobilenetv3.train.loop import train

    with pytest.raises(PipelineError, match="positive"):
        options(data_run, target_ms=0)
    with pytest.raises(PipelineError, match="target"):
        options(data_run, target_ms=1, nas={"target_ms": 3})
    with pytest.raises(PipelineError, match="not options"):
        options(data_run, target_ms=1, netadapt={"no_such_option": 3})
    with pytest.raises(PipelineError, match="at least 8"):
        options(data_run, target_ms=1, calibrate=3)
    with pytest.raises(PipelineError, match="unknown search space"):
        Pipeline(tmp_path / "x", options(data_run, target_ms=1, space="resnet"), progress=False)
    folder = make_colour_folder({"red": (200, 40, 40), "blue": (40, 40, 200)}, 24, 2, 10)
    no_holdout = tmp_path / "no-holdout"
    train(out=str(no_holdout), model="mobilenet_v3_small", data=folder, epochs=1, batch_size=8, resolution=16,
          quiet=True, workers=0, tensorboard=False, limit_train=8, limit_val=8)
    with pytest.raises(PipelineError, match="--holdout"):
        Pipeline(tmp_path / "y", options(str(no_holdout), target_ms=1), progress=False)


def test_cli_runs_the_pipeline_and_prints_the_comparison(data_run, tmp_path, monkeypatch, capsys):
    from mobilenetv3.cli import main as cli_main
    from mobilenetv3.search import table_check

    def interleaved(table, specs, **kwargs):
        ms = fake_measure(specs)
        return ms, ms, ms

    monkeypatch.setattr(table_check, "measure_interleaved", interleaved)
    out = tmp_path / "cli"
    argv = ["search", "pipeline", "--space", "mobilenet_v3_small", "--target-ms", "1000", "--data-run", data_run,
            "--out", str(out), "--calibrate", "0", "--samples", "2", "--batch", "2", "--steps-per-sample", "1",
            "--epochs", "1", "--backend", "serial", "--quiet", "--hard"]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "x space seed" in printed and "nas seed" in printed and f"report {out}/report.md" in printed
    assert cli_main(argv) == 2  # the directory holds a pipeline
    assert "--resume" in capsys.readouterr().err
    assert cli_main([*argv, "--resume", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["netadapt"]["skipped"] is True and len(summary["report"]["rows"]) == 4
    nas_header = json.loads((out / "nas" / "journal.jsonl").read_text().splitlines()[0])
    assert nas_header["options"]["hard"] is True and nas_header["task"]["schedule"] == "cosine"
