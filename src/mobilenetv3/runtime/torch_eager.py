"""PyTorch eager: the module itself, in eval mode under ``torch.inference_mode()``.

Channels-last memory format is the default because it measured faster than contiguous NCHW for Large and Small at
batch 1 on one thread (``benchmarks/latency_runtimes.py --variants`` measures it again; measured:
docs/benchmarks.md); ``channels_last=False`` turns it off. The model is copied before the format changes, so the
caller's module is left as it was.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from .backend import Prepared, check_layout


def to_channels_last(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    """A channels-last copy of ``model`` and ``x`` in channels-last memory format."""
    return copy.deepcopy(model).to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)


class TorchEager(Prepared):
    """``model`` in eval mode on the fixed input ``x`` (see the module docstring)."""

    def __init__(self, model: nn.Module, x: torch.Tensor, threads: int, detail: str) -> None:
        super().__init__("eager", detail, torch.__version__, threads)
        self.model, self.input = model, x

    @classmethod
    def prepare(cls, source: nn.Module, x: torch.Tensor, *, threads: int = 1, layout: str = "nchw",
                channels_last: bool = True) -> TorchEager:
        check_layout(layout, ("nchw",), "eager")
        model = source.eval()
        detail = "eval, inference_mode"
        if channels_last:
            model, x = to_channels_last(model, x)
            detail += ", channels_last"
        return cls(model, x, threads, detail)

    def run(self) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(self.input)

    def __call__(self, x: Any) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(torch.as_tensor(x))
