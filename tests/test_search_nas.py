"""The NAS loop with a stand-in for training (accuracy a fixed function of the spec) and for latency (multiply-adds):
MnasNet's reward by hand, the journal's records, the accuracy cache, resume after kills at any record, refusals,
random search, the controller beating random search on a toy problem, the report, and the CLI end to end."""

import json
import random
import shutil
import statistics

import pytest
import torch

from mobilenetv3.cost import spec_cost
from mobilenetv3.search.candidate import spec_hash
from mobilenetv3.search.controller import tokens_to_choice
from mobilenetv3.search.evaluator import SerialEvaluator
from mobilenetv3.search.journal import JournalError
from mobilenetv3.search.nas import JOURNAL, NAS, NASError, NASOptions, proxy_spec
from mobilenetv3.search.nas_report import pareto_front, write_report
from mobilenetv3.search.proxy import ProxyTask
from mobilenetv3.search.reward import W_PRESETS, default_w, reward
from mobilenetv3.search.space import StageChoices, get_space, space_from_seed
from mobilenetv3.spec import ArchSpec, BlockSpec
from search_helpers import Interrupting

torch.set_num_threads(1)

TASK = ProxyTask(data="fake", resolution=32, holdout=10, channels=1, mean=(0.5,), std=(0.25,))
TRAINED: list[str] = []  # spec hashes of the jobs the fake evaluator ran, in order


def fake_evaluate(job):
    """Accuracy (%) grows with the share of 7x7 kernels and of SE blocks."""
    spec = ArchSpec.from_dict(job["spec"])
    TRAINED.append(spec_hash(spec))
    k7 = sum(b.kernel == 7 for b in spec.blocks) / len(spec.blocks)
    se = sum(b.se for b in spec.blocks) / len(spec.blocks)
    return {"accuracy": 40 + 30 * k7 + 20 * se}


class FakeTable:
    """Latency = multiply-adds / 1e7 ms (Small's seed: 5.7 ms)."""

    runtime, threads, resolution = "fake", 1, 224

    def predict(self, spec):
        return spec_cost(spec).madds / 1e7


def fake_measure(specs):
    return [1.1 * FakeTable().predict(s) for s in specs]


def search(out, space=None, *, evaluator=None, resume=False, logs=None, **changes):
    values = dict(target_ms=6.0, samples=14, batch=4, seed=0)
    values.update(changes)
    run = NAS(space or get_space("mobilenet_v3_small"), FakeTable(), TASK, out, NASOptions(**values),
              num_classes=10, evaluator=evaluator or SerialEvaluator(), resume=resume, progress=False,
              log=(logs.append if logs is not None else lambda m: None), measure=fake_measure,
              evaluate=fake_evaluate)
    return run, run.run()


def lines(path):
    return path.read_text().splitlines()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("nas") / "ref"
    run, summary = search(out)
    return out, run, summary


# -- the reward ---------------------------------------------------------------------------------------------------
def test_reward_by_hand():
    assert reward(0.75, 80, 100, -0.07) == pytest.approx(0.75 * 0.8 ** -0.07)
    assert reward(0.75, 80, 100, -0.07) == pytest.approx(0.76180, abs=1e-5)  # 0.8 ** -0.07 = 1.015743
    assert reward(0.75, 120, 100, -0.15) == pytest.approx(0.75 * 1.2 ** -0.15)
    assert reward(0.75, 120, 100, hard=True) == pytest.approx(0.75 * 100 / 120)
    assert reward(0.75, 80, 100, hard=True) == 0.75
    assert reward(0.75, 100, 100) == reward(0.75, 100, 100, hard=True) == 0.75
    assert W_PRESETS == {"mobilenet_v3_large": -0.07, "mobilenet_v3_small": -0.15}
    assert default_w("mobilenet_v3_small") == -0.15
    for bad in (0, -3, float("inf")):
        with pytest.raises(ValueError, match="latency_ms must be a positive"):
            reward(0.7, bad, 100)
        with pytest.raises(ValueError, match="target_ms must be a positive"):
            reward(0.7, 10, bad)
    with pytest.raises(ValueError, match="w must be <= 0"):
        reward(0.7, 10, 100, 0.07)
    with pytest.raises(ValueError, match="no default latency weight"):
        default_w("mnasnet")


# -- the loop -----------------------------------------------------------------------------------------------------
def test_journal_records_are_consistent(reference):
    out, run, summary = reference
    space = get_space("mobilenet_v3_small")
    samples = [r for r in run.journal.records if r["type"] == "sample"]
    updates = [r for r in run.journal.records if r["type"] == "update"]
    assert sorted(r["index"] for r in samples) == list(range(14))
    assert [u["indices"] for u in updates] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13]]
    by_index = {r["index"]: r for r in samples}
    for r in samples:
        spec = space.decode(tokens_to_choice(space, r["tokens"]))
        assert ArchSpec.from_dict(r["spec"]) == spec and r["spec_hash"] == spec_hash(spec)
        assert r["predicted_ms"] == FakeTable().predict(spec)
        assert r["accuracy"] == fake_evaluate({"spec": spec.to_dict()})["accuracy"]
        assert r["reward"] == pytest.approx((r["accuracy"] / 100) * (r["predicted_ms"] / 6.0) ** -0.15)
        assert r["batch"] == r["index"] // 4 and r["log_prob"] < 0
    for u in updates:
        assert u["rewards"] == [by_index[i]["reward"] for i in u["indices"]] and "loss" in u
    last = [by_index[i]["reward"] for i in range(11, 14)]  # the last quarter of 14 samples: 3
    assert summary["last_quarter"] == {"count": 3, "mean_reward": pytest.approx(statistics.fmean(last)),
                                       "std_reward": pytest.approx(statistics.pstdev(last))}
    top = json.loads((out / "top_k.json").read_text())
    assert top == summary["top"] and len(top) == 5 and summary["best"] == top[0]
    rewards = [t["reward"] for t in top]
    assert rewards == sorted(rewards, reverse=True) == sorted((r["reward"] for r in samples), reverse=True)[:5]
    for t in top:
        assert t["measured_ms"] == pytest.approx(1.1 * t["predicted_ms"])
        assert t["measured_reward"] == pytest.approx(t["accuracy"] / 100 * (t["measured_ms"] / 6.0) ** -0.15)
    assert summary["target_met"] and summary["within_target"] == sum(r["predicted_ms"] <= 6.0 for r in samples)
    # the proxy trains the sample with the task's input and classes; latency is for the space's spec
    trained = proxy_spec(space.decode(tokens_to_choice(space, samples[0]["tokens"])), TASK, 10)
    assert (trained.in_channels, trained.num_classes, trained.resolution) == (1, 10, 32)


def test_a_finished_run_reopens_without_work(reference, tmp_path):
    out, run, summary = reference
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    TRAINED.clear()
    again, second = search(copy, resume=True)
    assert second == run.journal.records[-1] and not TRAINED
    assert again.journal.records == run.journal.records


def test_a_spec_is_trained_once(tmp_path):
    """A two-stage seed with one free choice per stage: four specs, so twelve samples repeat some."""
    seed = ArchSpec(name="tiny", blocks=(BlockSpec(3, 32, 16, stride=2), BlockSpec(3, 48, 24, stride=2)),
                    stem_channels=16, last_channels=64, head_channels=32, resolution=32)
    choices = StageChoices(depth_deltas=(0,), kernels=(3, 5), expansions=(4,), se=(False,), acts=("relu",),
                           width_mults=(1.0,))
    space = space_from_seed("tiny", seed, choices)
    TRAINED.clear()

    class Table(FakeTable):
        resolution = 32

    run = NAS(space, Table(), TASK, tmp_path / "c", NASOptions(target_ms=0.1, samples=12, batch=4, w=-0.07,
              strategy="random"), evaluator=SerialEvaluator(), progress=False, log=lambda m: None,
              measure=fake_measure, evaluate=fake_evaluate)
    summary = run.run()
    samples = [r for r in run.journal.records if r["type"] == "sample"]
    hashes = [r["spec_hash"] for r in samples]
    assert len(set(hashes)) < len(hashes) and len(TRAINED) == len(set(TRAINED)) == len(set(hashes))  # once each
    for h in set(hashes):
        same = [r for r in samples if r["spec_hash"] == h]
        assert [r["cached"] for r in same] == [False] + [True] * (len(same) - 1)
        assert len({r["accuracy"] for r in same}) == 1
    assert summary["trained"] == len(set(hashes)) and len(summary["top"]) == len(set(hashes)) <= 4


def test_resume_after_interruptions_gives_the_same_run(reference, tmp_path):
    _, ref_run, _ = reference
    out = tmp_path / "cut"
    for after in (0, 3, 2, 5):  # before any result, mid-batch 0, mid-batch 1, mid-batch 2
        with pytest.raises(KeyboardInterrupt):
            search(out, evaluator=Interrupting(after), resume=out.exists())
    run, _ = search(out, resume=True)
    assert run.journal.records == ref_run.journal.records


@pytest.mark.parametrize("changes", [{}, {"algorithm": "ppo"}, {"strategy": "random"}])
def test_resume_from_a_kill_at_any_record(tmp_path, changes):
    """The journal cut after every one of its lines (a kill between two records), resumed: the same run."""
    ref_run, _ = search(tmp_path / "ref", samples=7, batch=3, **changes)
    reference = lines(tmp_path / "ref" / JOURNAL)
    for n in range(1, len(reference)):
        out = tmp_path / f"cut{n}"
        out.mkdir()
        (out / JOURNAL).write_text("\n".join(reference[:n]) + "\n")
        run, _ = search(out, resume=True, samples=7, batch=3, **changes)
        assert run.journal.records == ref_run.journal.records, n


def test_other_searches_are_refused(reference, tmp_path):
    out, _, _ = reference
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with pytest.raises(NASError, match="--resume"):
        search(copy)
    with pytest.raises(JournalError, match="options"):
        search(copy, resume=True, seed=1)
    with pytest.raises(JournalError, match="space"):
        search(copy, get_space("mobilenet_v3_large"), resume=True, w=-0.15)
    with pytest.raises(NASError, match="96 px"):
        class Table96(FakeTable):
            resolution = 96

        NAS(get_space("mobilenet_v3_small"), Table96(), TASK, tmp_path / "r", NASOptions(target_ms=5))
    with pytest.raises(NASError, match="no default latency weight"):
        NAS(space_from_seed("other", get_space("mobilenet_v3_small").seed), FakeTable(), TASK, tmp_path / "w",
            NASOptions(target_ms=5), measure=fake_measure)
    with pytest.raises(NASError, match="strategy"):
        NASOptions(target_ms=5, strategy="evolution")
    with pytest.raises(NASError, match="positive"):
        NASOptions(target_ms=0)


def test_random_search_draws_uniformly_with_the_same_budget(reference, tmp_path):
    _, ref_run, ref_summary = reference
    space = get_space("mobilenet_v3_small")
    run, summary = search(tmp_path / "random", strategy="random", seed=5)
    rng = random.Random(5)
    expected = [space.sample_choice(rng) for _ in range(14)]
    samples = sorted((r for r in run.journal.records if r["type"] == "sample"), key=lambda r: r["index"])
    assert [tokens_to_choice(space, r["tokens"]) for r in samples] == expected
    assert all(r["log_prob"] is None for r in samples)
    updates = [r for r in run.journal.records if r["type"] == "update"]
    assert len(updates) == 4 and all("loss" not in u for u in updates)
    assert summary["samples"] == ref_summary["samples"] == 14 and summary["algorithm"] is None


def test_controller_beats_random_search_on_a_toy_problem(tmp_path):
    """Reward rises with 7x7 kernels and SE (minus a little latency): the controller's last quarter of 48 samples
    scores higher than random search's, for each of three seeds."""
    for seed in (0, 1, 2):
        _, learned = search(tmp_path / f"c{seed}", samples=48, seed=seed)
        _, drawn = search(tmp_path / f"r{seed}", samples=48, seed=seed, strategy="random")
        assert learned["last_quarter"]["mean_reward"] > drawn["last_quarter"]["mean_reward"] + 0.05, seed


def test_hard_constraint_out_of_reach_says_so(tmp_path):
    logs = []
    run, summary = search(tmp_path / "hard", hard=True, target_ms=0.5, samples=4, logs=logs)
    assert summary["target_met"] is False and summary["within_target"] == 0
    assert any("no sample met the target" in m for m in logs)
    for r in (r for r in run.journal.records if r["type"] == "sample"):
        assert r["reward"] == pytest.approx(r["accuracy"] / 100 * 0.5 / r["predicted_ms"])


# -- the report ---------------------------------------------------------------------------------------------------
def test_pareto_front_by_hand():
    points = [(3.0, 70.0), (1.0, 60.0), (2.0, 60.0), (2.0, 65.0), (4.0, 69.0), (1.0, 60.0)]
    assert pareto_front(points) == [1, 3, 0]


def test_report(reference):
    out, run, summary = reference
    paths = write_report(out, run.journal.header, run.journal.records)
    assert ArchSpec.load(paths["spec"]) == ArchSpec.from_dict(summary["best"]["spec"])
    text = paths["report"].read_text()
    assert text.count("\n| ") == 1 + 5  # header row and the top 5
    assert f"{summary['last_quarter']['mean_reward']:.4f}" in text and "random search" not in text
    pytest.importorskip("matplotlib")
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the command line ---------------------------------------------------------------------------------------------
def test_cli_trains_samples_on_the_data_run(data_run, tmp_path, monkeypatch, capsys):
    from mobilenetv3.cli import main as cli_main
    from mobilenetv3.search import growing_table, nas

    monkeypatch.setattr(growing_table, "time_key", lambda key, *a: {"count": 1, "median": 0.01, "p10": 0.01,
                                                                     "p90": 0.01})
    monkeypatch.setattr(nas, "default_measure", lambda table, rounds: fake_measure)
    out = tmp_path / "cli"
    argv = ["search", "nas", "--space", "mobilenet_v3_small", "--table", str(tmp_path / "t.json"), "--target-ms",
            "0.2", "--samples", "3", "--batch", "2", "--steps-per-sample", "1", "--top-k", "2", "--out", str(out),
            "--data-run", data_run, "--backend", "serial", "--quiet", "--json", "--proxy-warmup", "0.2"]
    assert cli_main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    summary = result["summary"]
    assert summary["samples"] == 3 and len(summary["top"]) == 2 and summary["w"] == -0.15
    for r in summary["top"]:
        assert 0 <= r["accuracy"] <= 100
    header = json.loads(lines(out / JOURNAL)[0])
    assert header["num_classes"] == 3 and header["task"]["holdout"] == 12 and header["task"]["lr"] == 0.05
    assert (header["task"]["schedule"], header["task"]["warmup"]) == ("cosine", 0.2)
    assert header["latency"]["runtime"] == "onnxruntime"
    best = ArchSpec.load(out / "best" / "spec.json")  # deployed at the data's shape (--latency-shape data)
    assert (out / "report.md").is_file() and (best.num_classes, best.resolution, best.in_channels) == (3, 16, 3)
    assert header["latency"]["resolution"] == 16
    # a finished run: the summary again, as a table
    assert cli_main([a for a in argv if a != "--json"] + ["--resume"]) == 0
    text = capsys.readouterr().out
    assert "reward (measured)" in text and "3 samples" in text
