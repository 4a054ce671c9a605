"""RMSProp (TF form), weight EMA, learning-rate schedules and the resumable sampler."""

import copy
import dataclasses
import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from mobilenetv3.train import LRSchedule, ModelEMA, RMSpropTF, ema_decay_at, scaled_lr
from mobilenetv3.train.loop import param_groups
from mobilenetv3.train.sampler import EpochBatchSampler, SeededSamples, epoch_permutation, mix_seed


# -- RMSProp ------------------------------------------------------------------------------------------------
def _tf_rmsprop_by_hand(p0, grads, lrs, alpha=0.9, eps=1e-3, momentum=0.9, wd=0.0, ms0=1.0):
    """TF1's ApplyRMSProp written out with Python floats, one scalar parameter at a time."""
    out = []
    for p in p0:
        ms, mom = ms0, 0.0
        for g_fn, lr in zip(grads, lrs, strict=True):
            g = g_fn(p) + wd * p
            ms = alpha * ms + (1 - alpha) * g * g
            mom = momentum * mom + lr * g / math.sqrt(ms + eps)
            p = p - mom
        out.append(p)
    return out


def test_rmsprop_tf_matches_hand_computed_steps():
    p0 = [1.0, -2.0, 0.5]
    # loss = sum(c * p^2 / 2) -> grad c * p, so later gradients depend on the updated parameter.
    coef = [0.5, 3.0, -0.2]
    lrs = [0.1, 0.05, 0.2]  # a changing lr: TF applies it inside the momentum
    p = torch.tensor(p0, dtype=torch.float64, requires_grad=True)
    opt = RMSpropTF([p], lr=0.1, weight_decay=0.01)
    c = torch.tensor(coef, dtype=torch.float64)
    for lr in lrs:
        opt.param_groups[0]["lr"] = lr
        opt.zero_grad()
        (c * p * p / 2).sum().backward()
        opt.step()
    for i in range(3):
        expected = _tf_rmsprop_by_hand([p0[i]], [lambda q, k=coef[i]: k * q] * 3, lrs, wd=0.01)[0]
        assert p[i].item() == pytest.approx(expected, rel=1e-12, abs=1e-14)


def test_rmsprop_tf_first_step_numbers():
    # One step from ms = 1: ms = 0.9 + 0.1 g^2; mom = lr g / sqrt(ms + eps); p -= mom.
    p = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    opt = RMSpropTF([p], lr=0.1)
    p.grad = torch.tensor([0.5], dtype=torch.float64)
    opt.step()
    ms = 0.9 + 0.1 * 0.25
    assert opt.state[p]["square_avg"].item() == pytest.approx(ms)
    assert p.item() == pytest.approx(2.0 - 0.1 * 0.5 / math.sqrt(ms + 1e-3))


def test_rmsprop_tf_equals_torch_rmsprop_where_they_coincide():
    # Zero initial mean square, eps 0 and a constant lr: the TF and torch forms are the same algorithm.
    torch.manual_seed(0)
    a = torch.randn(5, 4, requires_grad=True)
    b = a.detach().clone().requires_grad_(True)
    ours = RMSpropTF([a], lr=0.01, alpha=0.9, eps=0.0, momentum=0.9, init_square_avg=0.0)
    ref = torch.optim.RMSprop([b], lr=0.01, alpha=0.9, eps=0.0, momentum=0.9)
    target = torch.randn(5, 4)
    for _ in range(5):
        for opt, w in ((ours, a), (ref, b)):
            opt.zero_grad()
            ((w - target) ** 3).sum().backward()
            opt.step()
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_rmsprop_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(3, 3))
    opt = RMSpropTF([w], lr=0.01)
    for _ in range(2):
        opt.zero_grad()
        (w ** 2).sum().backward()
        opt.step()
    w2 = nn.Parameter(w.detach().clone())
    opt2 = RMSpropTF([w2], lr=0.01)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # as from a file: no shared tensors
    for o, p in ((opt, w), (opt2, w2)):
        o.zero_grad()
        (p ** 2).sum().backward()
        o.step()
    assert torch.equal(w, w2)


def test_rmsprop_rejects_bad_arguments():
    w = nn.Parameter(torch.zeros(1))
    for kwargs in ({"lr": -1}, {"alpha": 1.0}, {"momentum": 1.0}, {"eps": -1}, {"weight_decay": -1}):
        with pytest.raises(ValueError):
            RMSpropTF([w], **kwargs)


def test_weight_decay_exemptions():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    names = {id(p): n for n, p in model.named_parameters()}

    def decayed(exempt):
        groups = param_groups(model, 1e-5, exempt)
        return sorted(names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"])

    assert decayed("none") == sorted(names.values())
    assert decayed("norm") == ["0.bias", "0.weight", "3.bias", "3.weight"]
    assert decayed("norm_bias") == ["0.weight", "3.weight"]


# -- EMA -------------------------------------------------------------------------------------------------------
def test_ema_decay_correction():
    assert ema_decay_at(0, 0.9999) == pytest.approx(0.1)
    assert ema_decay_at(90, 0.9999) == pytest.approx(91 / 100)
    assert ema_decay_at(10**6, 0.9999) == 0.9999
    assert ema_decay_at(0, 0.9999, warmup=False) == 0.9999


def test_ema_averages_parameters_and_buffers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    ema = ModelEMA(model, decay=0.5, warmup=False)
    start = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()
    model(torch.randn(8, 3))  # moves the BN running stats and counts a batch
    decay = ema.update(model, step=0)
    assert decay == 0.5
    now = ema.state_dict()
    for name, value in model.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(now[name], 0.5 * start[name] + 0.5 * value)
        else:
            assert torch.equal(now[name], value)  # num_batches_tracked is copied
    assert all(not p.requires_grad for p in ema.module.parameters())


# -- schedules --------------------------------------------------------------------------------------------
def test_linear_scaling_rule():
    assert scaled_lr(4096) == pytest.approx(0.1)
    assert scaled_lr(128) == pytest.approx(0.1 * 128 / 4096)


def test_warmup_then_step_decay():
    s = LRSchedule(peak=1.0, steps_per_epoch=10, total_steps=100, kind="step", warmup_epochs=1, decay_rate=0.5,
                   decay_epochs=2)
    assert [s(i) for i in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert s(9) == pytest.approx(1.0)
    assert s(19) == pytest.approx(1.0) and s(20) == pytest.approx(0.5) and s(40) == pytest.approx(0.25)


def test_fractional_decay_period_and_cosine():
    s = LRSchedule(peak=0.1, steps_per_epoch=10, total_steps=100, kind="step", decay_rate=0.97, decay_epochs=2.4)
    assert s(23) == pytest.approx(0.1) and s(24) == pytest.approx(0.097) and s(48) == pytest.approx(0.1 * 0.97**2)
    c = LRSchedule(peak=1.0, steps_per_epoch=10, total_steps=100, kind="cosine", warmup_epochs=2, min_lr=0.1)
    assert c(20) == pytest.approx(1.0)
    assert c(60) == pytest.approx(0.55)
    assert c(100) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        LRSchedule(peak=1.0, steps_per_epoch=10, total_steps=10, kind="linear")


# -- sampler ------------------------------------------------------------------------------------------------
def test_epoch_permutation_is_fixed_by_seed_and_epoch():
    a = epoch_permutation(50, seed=1, epoch=0)
    assert torch.equal(a, epoch_permutation(50, seed=1, epoch=0))
    assert not torch.equal(a, epoch_permutation(50, seed=1, epoch=1))
    assert not torch.equal(a, epoch_permutation(50, seed=2, epoch=0))
    assert sorted(a.tolist()) == list(range(50))
    assert mix_seed(1, 2) != mix_seed(2, 1) and 0 <= mix_seed(1, 2) < 2**63


def test_sampler_skips_seen_batches_and_shards_by_rank():
    full = list(EpochBatchSampler(103, 10, seed=3, epoch=2))
    assert len(full) == 10 and all(len(b) == 10 for b in full)  # the incomplete last batch is dropped
    assert list(EpochBatchSampler(103, 10, seed=3, epoch=2, start=4)) == full[4:]
    shards = [list(EpochBatchSampler(103, 10, seed=3, epoch=2, rank=r, world_size=2)) for r in range(2)]
    for b, batch in enumerate(full):
        assert shards[0][b] + shards[1][b] == batch
    with pytest.raises(ValueError):
        EpochBatchSampler(100, 10, seed=0, epoch=0, world_size=3)


class _Noisy(torch.utils.data.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return torch.rand(2), random.random(), float(np.random.rand())


def test_seeded_samples_repeat_and_leave_the_global_rng_alone():
    ds = SeededSamples(_Noisy())
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a = ds.__getitems__([(1, 11), (2, 12)])
    assert torch.equal(torch.get_rng_state(), before)
    b = ds.__getitems__([(2, 12), (1, 11)])
    assert torch.equal(a[0][0], b[1][0]) and a[0][1:] == b[1][1:]
    assert not torch.equal(a[0][0], a[1][0])


# -- recipes ------------------------------------------------------------------------------------------------
def test_recipes_fill_what_is_left_unset():
    from mobilenetv3.train import TrainConfig, resolve
    from mobilenetv3.train.config import RECIPES

    fm = resolve(TrainConfig(out="runs/x", model="mobilenet_v3_small"))
    assert fm.recipe == "fashion-mnist" and fm.data == "fashion-mnist"
    assert fm.resolution == RECIPES["fashion-mnist"]["resolution"] == 80 and fm.bn_momentum == 0.1
    assert fm.random_erase == 0.0 and resolve(TrainConfig(out="x", model="m", random_erase=0.5)).random_erase == 0.5
    with pytest.raises(ValueError, match="random erase is a probability"):
        resolve(TrainConfig(out="x", model="m", random_erase=1.2))
    # the longer recipe is the short one for more epochs with random erasing, nothing else
    long = resolve(TrainConfig(out="runs/x", model="mobilenet_v3_small", recipe="fashion-mnist-long"))
    assert (long.epochs, long.random_erase) == (40, 0.5)
    assert dataclasses.replace(long, epochs=fm.epochs, random_erase=0.0, recipe=fm.recipe) == fm
    paper = resolve(TrainConfig(out="runs/x", model="mobilenet_v3_small", data="/data/imagenet", batch_size=256))
    assert paper.recipe == "paper" and paper.lr == pytest.approx(0.1 * 256 / 4096)
    assert (paper.optimizer, paper.momentum, paper.rmsprop_decay, paper.weight_decay, paper.ema_decay) == (
        "rmsprop", 0.9, 0.9, 1e-5, 0.9999)
    assert paper.resolution is None  # the spec's (224) is used
    assert resolve(TrainConfig(out="x", model="m", lr=0.5, recipe="paper")).lr == 0.5
    with pytest.raises(ValueError, match="exactly one"):
        resolve(TrainConfig(out="x"))
    with pytest.raises(ValueError, match="unknown recipe"):
        resolve(TrainConfig(out="x", model="m", recipe="imagenet"))


def test_run_options_reach_the_trained_spec():
    from mobilenetv3 import zoo
    from mobilenetv3.model import MobileNetV3
    from mobilenetv3.train import TrainConfig, resolve
    from mobilenetv3.train.loop import model_spec

    c = resolve(TrainConfig(out="x", model="mobilenet_v3_small", bn_momentum=0.1, dropout=0.05, resolution=48))
    spec = model_spec(zoo.get_spec("mobilenet_v3_small"), c, in_channels=1, num_classes=10)
    assert (spec.bn_momentum, spec.dropout, spec.resolution, spec.in_channels, spec.num_classes) == (
        0.1, 0.05, 48, 1, 10)
    norms = [m for m in MobileNetV3(spec).modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.momentum == 0.1 for m in norms)
    # left unset by the option and the recipe (the paper's), the spec's value (the paper's 0.01) is kept
    paper = resolve(TrainConfig(out="x", model="m", recipe="paper"))
    assert model_spec(zoo.get_spec("mobilenet_v3_small"), paper, 1, 10).bn_momentum == 0.01
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="BN momentum"):
            resolve(TrainConfig(out="x", model="m", bn_momentum=bad))
