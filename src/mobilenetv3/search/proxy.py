"""The proxy task a search scores candidates on: a short fine-tune on the training split, accuracy on a holdout.

NetAdapt (section 4.2) fine-tunes every proposal for T steps and compares accuracies on data the final evaluation
never sees; MnasNet's controller (section 4.1) trains each sample briefly on a proxy task. Both are this module:
:class:`ProxyTask` holds what a candidate is trained and scored on (taken from a seed training run, so the
preprocessing and optimizer are the run's), :func:`train_steps` runs T seeded steps and :func:`holdout_accuracy`
scores on the images held out of the training split (``--holdout`` of ``mnv3 train``), never on the test set.

A network trained from scratch for a hundred steps has BatchNorm running statistics far behind its weights (with the
paper's momentum 0.01, 37% of the initial mean 0 / variance 1 is still there after 100 steps), and scored in eval
mode it guesses at chance whatever it learnt. So the task carries the seed run's ``bn_momentum`` (a sampled spec is
trained with it, :func:`proxy_spec`) and :func:`recalibrate_bn` re-estimates the statistics before scoring
(``bn_batches`` training batches, an equal-weight average over them; Once-for-All resets them the same way after
sampling a subnetwork).

A constant learning rate suits NetAdapt's fine-tune of trained weights. A network trained from scratch for a few dozen
steps ends wherever the last steps at the peak rate threw it, so its score is noisy and ranks networks poorly; the
``cosine`` schedule (a linear warm-up over ``warmup`` of the steps, then a cosine decay to 0, the main recipe
compressed into the proxy's budget) lets every sample settle, the way the proxy training of MnasNet and
Once-for-All runs a whole schedule in a short budget. NAS trains its samples with it by default.

Everything is seeded: the same model, task, steps and seed give the same weights and accuracy in any process (with
the same number of threads), so a search evaluated in a process pool or on Ray chooses as it would in-process.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..data import HOLDOUT, load_dataset
from ..deploy.fold import calibrate_bn
from ..train.evaluate import read_run_config
from ..train.optim import param_groups
from ..train.sampler import EpochBatchSampler, SeededSamples, ShardedRange, mix_seed

DEFAULT_HOLDOUT = 5000
SCHEDULES = ("constant", "cosine")


def lr_factor(task: ProxyTask, step: int, steps: int) -> float:
    """The learning rate of step ``step`` (0-based) of ``steps`` as a fraction of ``task.lr``."""
    if task.schedule == "constant":
        return 1.0
    warm = math.ceil(task.warmup * steps)
    if step < warm:
        return (step + 1) / (warm + 1)
    return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


@dataclass(frozen=True)
class ProxyTask:
    """What a candidate is fine-tuned on and scored by. ``lr`` is the fine-tune's constant learning rate (SGD
    with Nesterov momentum, as the Fashion-MNIST recipe); ``eval_limit`` scores on the first N holdout images only
    (None: all); ``bn_momentum``: the BatchNorm momentum a spec trained from scratch takes (None: its own);
    ``bn_batches``: training batches that re-estimate BatchNorm's running statistics before scoring (0: none);
    ``channels_last``: run the model and its images in channels-last memory format (as the training loop does by
    default; 1.4x faster for a 7x7-kernel sample's training step on this CPU); ``schedule``: the learning rate
    over the steps, ``constant`` or ``cosine`` (linear warm-up over the first ``warmup`` fraction of the steps,
    then a cosine decay to 0)."""

    data: str
    resolution: int
    holdout: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    data_dir: str | None = None
    crop_scale: tuple[float, float] = (0.85, 1.0)
    hflip: float = 0.5
    random_erase: float = 0.0
    crop_fraction: float = 1.0
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    wd_exempt: str = "norm"
    label_smoothing: float = 0.1
    eval_batch_size: int = 256
    eval_limit: int | None = None
    bn_momentum: float | None = None
    bn_batches: int = 0
    channels_last: bool = False
    schedule: str = "constant"
    warmup: float = 0.0

    def __post_init__(self) -> None:
        if self.holdout < 1:
            raise ValueError("the proxy task scores on images held out of the training split: holdout must be >= 1 "
                             "(a seed run trained with --holdout N records it)")
        for name in ("mean", "std", "crop_scale"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"batch_size must be >= 1 and lr > 0, got {self.batch_size} and {self.lr}")
        if self.bn_batches < 0 or not (self.bn_momentum is None or 0 < self.bn_momentum < 1):
            raise ValueError(f"bn_batches must be >= 0 and bn_momentum in (0, 1), got {self.bn_batches} and "
                             f"{self.bn_momentum}")
        if self.schedule not in SCHEDULES or not 0 <= self.warmup < 1:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)} and warmup in [0, 1), got "
                             f"{self.schedule!r} and {self.warmup}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProxyTask:
        return cls(**data)

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, *, holdout: int | None = None, **changes: Any) -> ProxyTask:
        """The task of a training run: its data, preprocessing, batch size and optimizer settings; the run's
        holdout (a run trained without one: ``holdout``, default :data:`DEFAULT_HOLDOUT`, images of the training
        split are held out now, which the seed has seen: say so to the user)."""
        config = read_run_config(run_dir)
        d, t = config["data"], config["train"]
        transform = d.get("train_transform", {})
        values = dict(data=d["name"], data_dir=d.get("data_dir"), resolution=int(d["resolution"]),
                      holdout=int(d.get("holdout") or holdout or DEFAULT_HOLDOUT), channels=int(d["channels"]),
                      mean=tuple(d["mean"]), std=tuple(d["std"]),
                      crop_scale=tuple(transform.get("scale", t.get("crop_scale") or (0.85, 1.0))),
                      hflip=float(transform.get("hflip", t.get("hflip") or 0.0)),
                      random_erase=float(transform.get("random_erase", t.get("random_erase") or 0.0)),
                      crop_fraction=float(d.get("crop_fraction") or 1.0), batch_size=int(t["batch_size"]),
                      momentum=float(t.get("momentum") or 0.9), weight_decay=float(t.get("weight_decay") or 0.0),
                      wd_exempt=t.get("wd_exempt") or "norm", label_smoothing=float(t.get("label_smoothing") or 0.0),
                      eval_batch_size=int(t.get("eval_batch_size") or 256),
                      bn_momentum=float(t["bn_momentum"]) if t.get("bn_momentum") else None,
                      channels_last=bool(config.get("derived", {}).get("channels_last", False)))
        values.update(changes)
        return cls(**values)


@lru_cache(maxsize=4)
def datasets(task: ProxyTask) -> tuple[Any, Any]:
    """(training split minus the holdout, holdout) of ``task``; cached per process (workers load them once)."""
    common = dict(resolution=task.resolution, data_dir=task.data_dir, channels=task.channels, holdout=task.holdout,
                  mean=task.mean, std=task.std)
    train = load_dataset(task.data, "train", train=True, scale=task.crop_scale, hflip=task.hflip,
                         random_erase=task.random_erase, **common)
    held = load_dataset(task.data, HOLDOUT, train=False, crop_fraction=task.crop_fraction, **common)
    return train, held


def _collate(samples: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([s[0] for s in samples]), torch.tensor([s[1] for s in samples])


def _layout(task: ProxyTask, x: Any) -> Any:
    """A model or a batch of images in the task's memory format."""
    return x.to(memory_format=torch.channels_last) if task.channels_last else x


def _batches(task: ProxyTask, seed: int, epoch: int = 0) -> Any:
    train, _ = datasets(task)
    sampler = EpochBatchSampler(len(train), task.batch_size, seed=seed, epoch=epoch)
    for images, labels in DataLoader(SeededSamples(train), batch_sampler=sampler, collate_fn=_collate):
        yield _layout(task, images), labels


def train_steps(model: nn.Module, task: ProxyTask, steps: int, seed: int) -> nn.Module:
    """``steps`` seeded SGD steps of ``model`` on ``task``'s training split (in place; returned in eval mode)."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if steps == 0:
        return model.eval()
    _layout(task, model)
    optimizer = torch.optim.SGD(param_groups(model, task.weight_decay, task.wd_exempt), lr=task.lr,
                                momentum=task.momentum, nesterov=task.momentum > 0)
    torch.manual_seed(mix_seed(seed, 1))  # dropout
    model.train()
    done, epoch = 0, 0
    while done < steps:
        for images, labels in _batches(task, seed, epoch):
            for group in optimizer.param_groups:
                group["lr"] = task.lr * lr_factor(task, done, steps)
            loss = F.cross_entropy(model(images), labels, label_smoothing=task.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
            if done == steps:
                break
        epoch += 1
    return model.eval()


def recalibrate_bn(model: nn.Module, task: ProxyTask, batches: int, seed: int) -> nn.Module:
    """Reset every BatchNorm's running statistics and re-estimate them as the equal-weight average over ``batches``
    seeded training batches of ``task`` (:func:`~mobilenetv3.deploy.fold.calibrate_bn`: forward passes in train
    mode, weights unchanged). Returned in eval mode; ``batches`` 0 changes nothing."""
    if batches < 1:
        return model.eval()
    _layout(task, model)
    return calibrate_bn(model, islice((images for images, _ in _batches(task, mix_seed(seed, 2))), batches))


@torch.no_grad()
def holdout_accuracy(model: nn.Module, task: ProxyTask) -> float:
    """Top-1 accuracy (%) of ``model`` on ``task``'s holdout (its first ``eval_limit`` images when set)."""
    _, held = datasets(task)
    n = len(held) if task.eval_limit is None else min(task.eval_limit, len(held))
    keys = list(ShardedRange(n))
    _layout(task, model).eval()
    correct = 0
    for lo in range(0, n, task.eval_batch_size):
        images, labels = _collate(SeededSamples(held).__getitems__(keys[lo:lo + task.eval_batch_size]))
        correct += int((model(_layout(task, images)).argmax(1) == labels).sum())
    return 100.0 * correct / n


__all__ = ["DEFAULT_HOLDOUT", "SCHEDULES", "ProxyTask", "datasets", "holdout_accuracy", "lr_factor", "recalibrate_bn",
           "train_steps"]
