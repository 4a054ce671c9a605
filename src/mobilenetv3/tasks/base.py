"""What a task is: the part of training and evaluation that differs between classification, segmentation and
detection.

The training loop (:mod:`mobilenetv3.train.loop`) owns what every task shares: epochs, steps, gradient
accumulation, AMP, the weight EMA, DDP, checkpoints and exact resume. A :class:`Task` supplies the rest: the
architecture's head for the data (:meth:`Task.adapt_spec`), the model, how samples are batched, the loss, the
per-step statistics the loop sums (and all-reduces) into training metrics, and the evaluation. This follows timm's
``TrainingTask`` idea, kept to the few methods the loop calls.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from ..cost import Cost, spec_cost
from ..spec import ArchSpec

Reduce = Callable[[torch.Tensor], Any]
"""Sums a tensor in place over the processes of a distributed run (the identity in one process)."""


def autocast_context(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``amp``, nothing otherwise."""
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """Images moved to ``device``, in channels-last memory format when the model is."""
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


class Task(ABC):
    """One kind of training target (a head, a loss, metrics) for the shared loop.

    ``name`` is the registry key (``TrainConfig.task``); ``primary_metric`` is the evaluation metric that picks the
    best checkpoint (higher is better) and names it in the logs (``best_<metric>``); ``eval_metrics`` are the
    evaluation results logged per epoch as ``val_<key>`` (and ``ema_val_<key>``); ``step_keys`` are the keys of
    :meth:`step_stats`.
    """

    name: ClassVar[str]
    primary_metric: ClassVar[str]
    eval_metrics: ClassVar[tuple[str, ...]]
    step_keys: ClassVar[tuple[str, ...]]

    # -- what a run is made of, asked before the task is built (the spec comes before the data is read)
    @classmethod
    def named_spec(cls, name: str, width_mult: float) -> Any:
        """The architecture registered as ``name`` (``--model``) at ``width_mult``: a zoo spec by default."""
        from ..zoo import get_spec

        return get_spec(name, width_mult)

    @classmethod
    def load_spec(cls, path: Any) -> Any:
        """The architecture in a spec file (``--spec``, a run's ``spec.json``): an ArchSpec by default."""
        return ArchSpec.load(path)

    @classmethod
    def run_model(cls, spec_path: Any, data_info: Mapping[str, Any], options: Mapping[str, Any]) -> nn.Module:
        """The model of a recorded run, before its weights are loaded: the run's task built on its spec file."""
        return cls.for_run(data_info, options).build_model(cls.load_spec(spec_path))

    @classmethod
    def spec_resolution(cls, spec: Any) -> int:
        """The input size a spec is meant for (a run's default ``resolution``)."""
        return spec.resolution

    @classmethod
    def spec_model(cls, spec: Any) -> nn.Module:
        """The network of a spec alone, random weights (what ``mnv3 profile / latency / export`` build for a
        name): a classifier by default."""
        from ..model import MobileNetV3

        return MobileNetV3(spec)

    @classmethod
    def spec_cost(cls, spec: Any, size: tuple[int, int]) -> Cost:
        """Exact per-layer parameters and multiply-adds of the spec's network at ``size`` (height, width)."""
        return spec_cost(spec, size)

    @classmethod
    def default_input_size(cls, spec: Any) -> tuple[int, int]:
        """The (height, width) a spec is profiled and timed at unless told: its own resolution, square."""
        r = cls.spec_resolution(spec)
        return r, r

    @classmethod
    def eval_input_size(cls, data_info: Mapping[str, Any]) -> tuple[int, int]:
        """The (height, width) a run's evaluation feeds its model, from the run's recorded data section: the
        recorded resolution, square, by default (what an export of the run is shaped for unless told)."""
        r = int(data_info["resolution"])
        return r, r

    @classmethod
    def with_run_options(cls, spec: Any, changes: Mapping[str, Any]) -> Any:
        """``spec`` with a run's resolution, dropout and BN momentum (``changes``, those given) applied."""
        return spec.replace(**changes)

    @classmethod
    @abstractmethod
    def load_data(cls, options: Mapping[str, Any], val_split: str) -> tuple[Dataset, Dataset]:
        """The training and validation sets named by a run's resolved options (``TrainConfig.to_dict()``)."""

    @classmethod
    @abstractmethod
    def eval_data(cls, data_info: Mapping[str, Any], split: str, *, data: str | None = None,
                  data_dir: str | None = None) -> Dataset:
        """A run's evaluation data from its recorded data section: ``split`` of the run's data (or ``data``),
        prepared as the run's validation data."""

    @classmethod
    @abstractmethod
    def for_run(cls, data_info: Mapping[str, Any], options: Mapping[str, Any]) -> Task:
        """The task of a run: ``data_info`` is the run's recorded data section (``config.json["data"]``),
        ``options`` its training options (``config.json["train"]``, loss settings among them)."""

    @abstractmethod
    def adapt_spec(self, spec: ArchSpec) -> ArchSpec:
        """``spec`` with the input and head fitted to this task's data."""

    @abstractmethod
    def check_spec(self, spec: ArchSpec) -> None:
        """Raise ``ValueError`` when a recorded spec does not fit this task's data (a resumed run)."""

    @abstractmethod
    def build_model(self, spec: ArchSpec) -> nn.Module:
        """The model trained (random weights, drawn from torch's global generator)."""

    @abstractmethod
    def collate(self, samples: list[Any]) -> Any:
        """One batch ``(inputs, targets)`` from dataset samples; ``None`` when every sample was skipped."""

    @abstractmethod
    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        """The mean training loss of a (micro-)batch."""

    @abstractmethod
    def step_stats(self, outputs: Any, targets: Any) -> dict[str, torch.Tensor]:
        """Summed statistics of a (micro-)batch under ``step_keys``; the loop sums them over steps and
        processes."""

    @abstractmethod
    def train_metrics(self, totals: Mapping[str, float], count: int) -> dict[str, float]:
        """The training metrics logged from the summed ``step_stats`` of ``count`` samples."""

    @abstractmethod
    def evaluate(self, model: nn.Module, loader: Any, *, device: torch.device | str = "cpu",
                 channels_last: bool = False, amp: bool = False, reduce: Reduce | None = None) -> dict[str, Any]:
        """Evaluate ``model`` on ``loader``; holds at least ``"count"``, ``"loss"`` and ``eval_metrics``."""

    @abstractmethod
    def describe(self, record: Mapping[str, Any]) -> str:
        """An epoch record's metrics in a few words, for the progress log."""

    def targets_to(self, targets: Any, device: torch.device) -> Any:
        """``targets`` on ``device`` (tensors by default; a task with structured targets overrides this)."""
        return targets.to(device, non_blocking=True)

    def split_targets(self, targets: Any, chunks: int) -> tuple[Any, ...]:
        """``targets`` cut into the micro-batches of gradient accumulation, as ``Tensor.chunk`` cuts inputs."""
        return targets.chunk(chunks)
