"""The proxy task's BatchNorm handling: statistics re-estimated by hand-checkable averages, the seed run's momentum
carried to the specs NAS trains from scratch, and a candidate's job re-estimating them before it is scored.
How much it matters on Fashion-MNIST (a NAS sample at chance without it) is measured in docs/search.md."""

import math

import pytest
import torch
from torch import nn

from mobilenetv3.model import build
from mobilenetv3.search.candidate import evaluate_candidate
from mobilenetv3.search.nas import proxy_spec, task_from_run
from mobilenetv3.search.proxy import ProxyTask, lr_factor, recalibrate_bn, train_steps
from mobilenetv3.search.space import get_space
from mobilenetv3.spec import ArchSpec

torch.set_num_threads(1)


def test_the_task_carries_the_runs_momentum_and_nas_specs_take_it(data_run):
    task, classes = task_from_run(data_run, bn_batches=2)
    assert task.bn_momentum == 0.1 and task.bn_batches == 2 and classes == 3
    assert task.channels_last  # the training loop's default, which the run recorded
    seed = get_space("mobilenet_v3_small").seed
    assert seed.bn_momentum == 0.01  # the paper's, which a hundred steps from scratch leave far behind
    trained = proxy_spec(seed, task, classes)
    assert trained.bn_momentum == 0.1 and build(trained).features[0].bn.momentum == 0.1
    assert ProxyTask.from_dict(task.to_dict()) == task
    assert (task.schedule, task.warmup) == ("cosine", 0.1)  # NAS trains from scratch: warm-up, then decay
    assert task_from_run(data_run, schedule="constant")[0].warmup == 0.0
    assert ProxyTask.from_run(data_run).schedule == "constant"  # NetAdapt's fine-tune of trained weights
    with pytest.raises(ValueError, match="bn_batches"):
        ProxyTask(data="x", resolution=16, holdout=1, channels=3, mean=(0.5,), std=(0.5,), bn_batches=-1)


def test_recalibration_is_the_average_over_the_batches(data_run):
    task, _ = task_from_run(data_run, batch_size=8)
    torch.manual_seed(0)
    model = build(proxy_spec(ArchSpec.load(f"{data_run}/spec.json"), task, 3))
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    first = model.features[0]  # conv -> BN -> act: the BN's statistics are those of the conv's outputs
    seen = []
    hook = first.conv.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    recalibrate_bn(model, task, 3, seed=5)
    hook.remove()
    assert not model.training and len(seen) == 3
    # one batch's mean per channel, averaged over the batches with equal weights; the same for the unbiased variance
    means = torch.stack([o.mean((0, 2, 3)) for o in seen])
    variances = torch.stack([o.transpose(0, 1).flatten(1).var(1, unbiased=True) for o in seen])
    torch.testing.assert_close(first.bn.running_mean, means.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(first.bn.running_var, variances.mean(0), rtol=1e-5, atol=1e-6)
    assert first.bn.momentum == 0.1  # restored
    for k, v in model.state_dict().items():
        if k in weights:
            assert torch.equal(v, weights[k]), k
    before = first.bn.running_mean.clone()
    recalibrate_bn(model, task, 0, seed=5)
    assert torch.equal(first.bn.running_mean, before)  # 0 batches: nothing changes


def test_a_candidate_is_scored_after_recalibration(data_run, tmp_path):
    """evaluate_candidate trains, re-estimates the statistics as recalibrate_bn does, then scores: the saved
    weights hold the re-estimated statistics, and without bn_batches those of training."""
    from mobilenetv3.search.candidate import load_model
    from mobilenetv3.search.proxy import holdout_accuracy, train_steps

    task, _ = task_from_run(data_run, lr=0.05, bn_batches=3)
    spec = ArchSpec.load(f"{data_run}/spec.json").replace(bn_momentum=0.001)
    job = {"spec": spec.to_dict(), "task": task.to_dict(), "steps": 5, "seed": 3}
    result = evaluate_candidate({**job, "out": str(tmp_path / "a.safetensors")})
    torch.manual_seed(3)
    by_hand = train_steps(build(spec), task, 5, seed=3)
    stale = by_hand.features[0].bn.running_var.clone()
    recalibrate_bn(by_hand, task, 3, seed=3)
    saved = load_model(result["weights"])
    for (k, v), w in zip(by_hand.state_dict().items(), saved.state_dict().values(), strict=True):
        torch.testing.assert_close(v, w, msg=k)
    assert result["accuracy"] == holdout_accuracy(by_hand, task)
    assert not torch.allclose(saved.features[0].bn.running_var, stale)
    plain = evaluate_candidate({**job, "task": {**task.to_dict(), "bn_batches": 0}, "out": str(tmp_path / "b")})
    torch.testing.assert_close(load_model(plain["weights"]).features[0].bn.running_var, stale)


def test_recalibration_needs_batch_norms_only_where_there_are_some(data_run):
    task, _ = task_from_run(data_run)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 3))
    assert recalibrate_bn(model, task, 2, seed=0) is model and not model.training


def test_the_cosine_schedule_warms_up_then_decays_as_computed_by_hand():
    task = ProxyTask(data="x", resolution=16, holdout=1, channels=1, mean=(0.5,), std=(0.5,), schedule="cosine",
                     warmup=0.2)
    # 10 steps, ceil(0.2 x 10) = 2 warm-up steps at 1/3 and 2/3, then 0.5 (1 + cos(pi k / 8)) for k = 0..7
    assert [round(lr_factor(task, s, 10), 6) for s in (0, 1, 2, 6, 9)] == [
        round(1 / 3, 6), round(2 / 3, 6), 1.0, 0.5, round(0.5 * (1 + math.cos(math.pi * 7 / 8)), 6)]
    assert lr_factor(ProxyTask(data="x", resolution=16, holdout=1, channels=1, mean=(0.5,), std=(0.5,)), 9, 10) == 1
    for bad in ({"schedule": "step"}, {"warmup": 1.0}, {"warmup": -0.1}):
        with pytest.raises(ValueError, match="schedule must be one of constant, cosine"):
            ProxyTask(data="x", resolution=16, holdout=1, channels=1, mean=(0.5,), std=(0.5,), **bad)


def test_training_steps_follow_the_schedule(data_run, monkeypatch):
    task, classes = task_from_run(data_run, batch_size=8, schedule="cosine", warmup=0.25, lr=0.4)
    seen = []
    step = torch.optim.SGD.step

    def recording_step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", recording_step)
    model = build(proxy_spec(ArchSpec.load(f"{data_run}/spec.json"), task, classes))
    train_steps(model, task, 4, seed=0)
    # one warm-up step at 0.4 / 2, then 0.4 x 0.5 (1 + cos(pi k / 3)) for k = 0, 1, 2
    assert seen == pytest.approx([0.2, 0.4, 0.3, 0.1])
