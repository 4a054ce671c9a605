"""NetAdapt end to end on a tiny seed: it reaches the target, resumes after an interruption with the same choices,
chooses the same in every evaluator backend, and refuses bad input. Latency here is a stand-in (multiply-adds),
so the tests are fast and exact; the real timing path is covered by the CLI test at the end."""

import json
import shutil

import pytest
import torch

from mobilenetv3.cli import main as cli_main
from mobilenetv3.cost import spec_cost
from mobilenetv3.search.candidate import load_model
from mobilenetv3.search.channels import STEM, residual_groups
from mobilenetv3.search.evaluator import ProcessEvaluator, SerialEvaluator
from mobilenetv3.search.growing_table import GrowingTable
from mobilenetv3.search.journal import JournalError
from mobilenetv3.search.latency_table import parse_key
from mobilenetv3.search.netadapt import NetAdapt, NetAdaptError, NetAdaptOptions, choose, score
from mobilenetv3.search.predictor import key_madds
from mobilenetv3.spec import ArchSpec, BlockSpec
from mobilenetv3.train.loop import train
from search_helpers import Interrupting


def seed_spec() -> ArchSpec:
    return ArchSpec(name="tiny-seed", blocks=(BlockSpec(3, 32, 16, se=True, stride=2),
                                              BlockSpec(3, 48, 24, act="hswish", stride=2),
                                              BlockSpec(3, 64, 24, se=True, act="hswish")),
                    stem_channels=16, last_channels=64, head_channels=32, in_channels=3, resolution=16)


@pytest.fixture(scope="module")
def seed_run(make_colour_folder, tmp_path_factory) -> str:
    folder = make_colour_folder({"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}, 40, 4, 60)
    root = tmp_path_factory.mktemp("seed")
    seed_spec().save(root / "spec.json")
    train(out=str(root / "run"), spec=str(root / "spec.json"), data=folder, holdout=30, epochs=1, batch_size=16,
          resolution=16, lr=0.05, quiet=True, workers=0, eval_batch_size=64, tensorboard=False)
    return str(root / "run")


def fake_entry(key: str) -> dict:
    ms = key_madds(parse_key(key)) / 1e6 + 0.002
    return {"count": 1, "median": ms, "p10": ms, "p90": ms}


def fake_measure(specs):
    return [spec_cost(s).madds / 1e6 + 0.01 for s in specs]


def options(**changes) -> NetAdaptOptions:
    values = dict(target_ratio=0.7, delta_ratio=0.04, steps_per_proposal=2, finetune_lr=0.01, max_steps=8)
    values.update(changes)
    return NetAdaptOptions(**values)


def adapt(seed_run, out, *, evaluator=None, resume=False, table=None, **changes):
    spec = load_model_spec(seed_run)
    lut = GrowingTable(table or out.parent / f"{out.name}-table.json", spec, runtime="onnxruntime", threads=1,
                       measure=fake_entry)
    run = NetAdapt(seed_run, lut, out, options(**changes), evaluator=evaluator or SerialEvaluator(), resume=resume,
                   progress=False, log=lambda m: None, measure=fake_measure)
    return run, run.run()


def load_model_spec(seed_run) -> ArchSpec:
    return ArchSpec.load(f"{seed_run}/spec.json")


def decisions(records, upto=None):
    """What must not depend on interruptions or backends: every step's proposals, scores and choice (the first
    ``upto`` steps: the end of a shortened run aside)."""
    if upto is not None:
        records = [r for r in records if r.get("step", 0) <= upto and r["type"] != "done"]
    out = []
    for r in records:
        if r["type"] in ("proposals", "step", "done", "seed"):
            out.append({k: v for k, v in r.items() if k not in ("seconds", "weights")})
    evaluated = sorted((r["step"], r["index"], r["accuracy"], r["sha256"]) for r in records
                       if r["type"] == "evaluated")
    return out, evaluated


@pytest.fixture(scope="module")
def reference(seed_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("na") / "ref"
    run, summary = adapt(seed_run, out)
    return out, run, summary


def test_reaches_the_target_with_valid_specs_and_writes_the_report(reference):
    from mobilenetv3.search.netadapt_report import write_report

    out, run, summary = reference
    assert summary["reason"] == "target" and summary["measured_ratio"] <= 0.7
    steps = [r for r in run.journal.records if r["type"] == "step"]
    assert len(steps) == summary["steps"] >= 2
    seed_ms = fake_measure([load_model_spec(run.journal.header["seed_run"])])[0]
    previous = seed_ms
    for r in steps:  # each step's measured latency falls, and each choice cut the prediction by delta
        assert r["measured_ms"] < previous
        previous = r["measured_ms"]
        spec = ArchSpec.from_dict(r["spec"])
        for g in residual_groups(spec):
            assert len({spec.stem_channels if m == STEM else spec.blocks[m].out for m in g.members}) == 1
    for r in run.journal.records:  # every proposal's cut was measured end to end: at least delta x the seed's
        if r["type"] == "proposals":
            need = {b["batch"]: b["need_ms"] for b in r["batches"]}
            assert need and all(v == pytest.approx(0.04 * seed_ms) for v in need.values())
            for p in r["proposals"]:
                assert p["base_ms"] - p["measured_ms"] >= 0.04 * seed_ms - 1e-12
    model = load_model(summary["weights"], summary["sha256"])
    assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 3)
    paths = write_report(out, run.journal.header, run.journal.records)
    assert ArchSpec.load(paths["spec"]) == ArchSpec.from_dict(summary["spec"])
    text = paths["report"].read_text()
    assert "reached the target" in text and text.count("\n| ") == 1 + summary["steps"] + 1
    # only the chosen proposals' weights are kept
    kept = sorted(p.name for p in (out / "steps").rglob("*.safetensors"))
    assert len(kept) == summary["steps"]


def test_resume_after_interruptions_gives_the_same_run(reference, seed_run, tmp_path):
    ref_out, ref_run, ref_summary = reference
    out = tmp_path / "cut"
    shutil.copyfile(ref_out.parent / "ref-table.json", tmp_path / "cut-table.json")
    for after in (0, 3, 4):  # a kill before the first proposal, mid-step 1, and in step 2
        with pytest.raises(KeyboardInterrupt):
            adapt(seed_run, out, evaluator=Interrupting(after), resume=out.exists())
    run, summary = adapt(seed_run, out, resume=True)
    assert decisions(run.journal.records) == decisions(ref_run.journal.records)
    keys = [(r["step"], r["index"]) for r in run.journal.records if r["type"] == "evaluated"]
    assert len(keys) == len(set(keys))  # nothing evaluated twice
    assert summary["sha256"] == ref_summary["sha256"]


def test_process_pool_chooses_as_in_process(reference, seed_run, tmp_path):
    _, ref_run, _ = reference
    with ProcessEvaluator(workers=2) as pool:
        run, _ = adapt(seed_run, tmp_path / "pool", evaluator=pool, max_steps=2)
    assert decisions(run.journal.records, 2) == decisions(ref_run.journal.records, 2)


def test_ray_chooses_as_in_process(reference, seed_run, tmp_path):
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e .[search])")
    from mobilenetv3.search.evaluator import RayEvaluator

    _, ref_run, _ = reference
    with RayEvaluator(workers=2) as cluster:
        run, _ = adapt(seed_run, tmp_path / "ray", evaluator=cluster, max_steps=1)
    assert decisions(run.journal.records, 1) == decisions(ref_run.journal.records, 1)


def test_bad_input_is_refused(reference, seed_run, tmp_path):
    ref_out, _, _ = reference
    with pytest.raises(NetAdaptError, match="resume"):  # an existing journal needs --resume
        adapt(seed_run, ref_out, table=ref_out.parent / "ref-table.json")
    copy = tmp_path / "copy"
    shutil.copytree(ref_out, copy)
    with pytest.raises(JournalError, match="options"):  # other options: another run
        adapt(seed_run, copy, resume=True, delta_ratio=0.05)
    other = load_model_spec(seed_run).replace(resolution=32)
    with pytest.raises(NetAdaptError, match="resolution|px"):
        lut = GrowingTable(tmp_path / "t32.json", other, runtime="onnxruntime", threads=1, measure=fake_entry)
        NetAdapt(seed_run, lut, tmp_path / "r32", options(), progress=False, measure=fake_measure)
    with pytest.raises(NetAdaptError, match="not below"):
        adapt(seed_run, tmp_path / "high", target_ratio=None, target_ms=1e3)
    with pytest.raises(NetAdaptError, match="between 0 and 1"):
        options(target_ratio=1.2)
    _, summary = adapt(seed_run, tmp_path / "far", delta_ratio=0.9)  # no width cuts 90%: stop, say so
    assert summary["reason"] == "no_proposal" and summary["steps"] == 0


def test_selection_metrics():
    # dAcc / |dLat|: -1 point for 2 ms beats -1 point for 1 ms; the drop metric takes the higher accuracy
    proposals = [{"accuracy": 89.0, "predicted_ms": 9.0}, {"accuracy": 89.0, "predicted_ms": 8.0},
                 {"accuracy": 89.5, "predicted_ms": 9.5}]
    assert score("ratio", 89.0, 8.0, 90.0, 10.0) == pytest.approx(-0.5)
    assert choose("ratio", proposals, 90.0, 10.0) == 1
    assert choose("drop", proposals, 90.0, 10.0) == 2
    # measured proposals are scored on their measured cut beside the current network, not on the prediction
    measured = [{"accuracy": 89.0, "predicted_ms": 8.0, "measured_ms": 9.5, "base_ms": 10.0},
                {"accuracy": 89.0, "predicted_ms": 9.0, "measured_ms": 8.5, "base_ms": 10.5}]
    assert choose("ratio", measured, 90.0, 10.0) == 1


def test_cli_runs_a_step_on_measured_latency(seed_run, tmp_path, capsys):
    out = tmp_path / "cli"
    code = cli_main(["search", "netadapt", "--init", seed_run, "--table", str(tmp_path / "t.json"), "--out", str(out),
                     "--target-ratio", "0.5", "--delta", "0.01", "--steps-per-proposal", "1", "--max-steps", "1",
                     "--backend", "serial", "--retrain", "none", "--quiet", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    # real timing of a tiny network: a step when some width cuts the predicted latency by 1%, else a clean stop
    summary = result["summary"]
    assert (summary["steps"], summary["reason"]) in ((1, "max_steps"), (1, "target"), (0, "no_proposal"))
    table = json.loads((tmp_path / "t.json").read_text())
    assert table["header"]["runtime"] == "onnxruntime" and len(table["entries"]) >= 7
    assert (out / "report.md").is_file() and (out / "final" / "spec.json").is_file()


def test_weights_files_are_verified(reference, tmp_path):
    from mobilenetv3.search.candidate import save_model
    from mobilenetv3.train.checkpoint import CheckpointError

    _, _, summary = reference
    model = load_model(summary["weights"], summary["sha256"])
    path = tmp_path / "w.safetensors"
    digest = save_model(model, path)
    assert load_model(path, digest).spec == model.spec
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_model(path, digest)
    path.write_bytes(b"not a weights file at all")
    with pytest.raises(CheckpointError, match="not a weights file"):
        load_model(path)


def test_retrain_uses_the_seed_recipe(seed_run, tmp_path):
    from mobilenetv3.search.retrain import retrain_config
    from mobilenetv3.train.evaluate import read_run_config

    spec_file = tmp_path / "adapted.json"
    seed_spec().save(spec_file)
    saved = read_run_config(seed_run)["train"]
    config = retrain_config(seed_run, spec_file, tmp_path / "re", "scratch")
    assert config.spec == str(spec_file) and config.out == str(tmp_path / "re") and config.init is None
    for name in ("data", "holdout", "epochs", "batch_size", "lr", "resolution", "weight_decay", "seed"):
        assert getattr(config, name) == saved[name], name
    tuned = retrain_config(seed_run, spec_file, tmp_path / "re", "finetune", weights="w.safetensors", epochs=3)
    assert tuned.init == "w.safetensors" and tuned.epochs == 3
    with pytest.raises(ValueError, match="needs the adapted weights"):
        retrain_config(seed_run, spec_file, tmp_path / "re", "finetune")
