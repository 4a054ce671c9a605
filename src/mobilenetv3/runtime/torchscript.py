"""The ``frozen`` runtime: a frozen graph of the module, TorchScript ``trace`` + ``freeze`` by default.

Freezing folds BatchNorm into the convolutions and propagates constants, which made it the fastest PyTorch path
here for Large and Small at batch 1 on one thread, ahead of channels-last eager and of ``torch.compile`` (Inductor,
whose first compile also takes tens of seconds). ``torch.jit.optimize_for_inference`` measured *slower* than eager:
it moves the convolutions to MKL-DNN tensors and wraps the SE means and products in layout conversions. Both stay
selectable (:data:`FROZEN_METHODS`; measured: docs/benchmarks.md).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import torch
from torch import nn

from .backend import Prepared, check_layout
from .torch_eager import to_channels_last

FROZEN_METHODS = ("torchscript", "torchscript_ofi", "compile")
DEFAULT_FROZEN = "torchscript"


def freeze_torchscript(model: nn.Module, x: torch.Tensor, optimize_for_inference: bool = False
                       ) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` + ``torch.jit.freeze`` of an eval model (+ ``optimize_for_inference`` if asked)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice; the traced graph is what we time
        frozen = torch.jit.freeze(torch.jit.trace(model.eval(), x).eval())
        return torch.jit.optimize_for_inference(frozen) if optimize_for_inference else frozen


class FrozenGraph(Prepared):
    """A frozen graph of ``model`` on the fixed input ``x``, made by ``method`` (:data:`FROZEN_METHODS`)."""

    def __init__(self, graph: Any, x: torch.Tensor, threads: int, detail: str, extra: dict[str, Any]) -> None:
        super().__init__("frozen", detail, torch.__version__, threads, extra)
        self.graph, self.input = graph, x

    @classmethod
    def prepare(cls, source: nn.Module, x: torch.Tensor, *, threads: int = 1, layout: str = "nchw",
                method: str = DEFAULT_FROZEN, channels_last: bool = True) -> FrozenGraph:
        check_layout(layout, ("nchw",), "frozen")
        if method not in FROZEN_METHODS:
            raise ValueError(f"unknown frozen method {method!r} (choose from {', '.join(FROZEN_METHODS)})")
        model = source.eval()
        if channels_last:
            model, x = to_channels_last(model, x)
        if method.startswith("torchscript"):
            graph = freeze_torchscript(model, x, optimize_for_inference=method == "torchscript_ofi")
            detail = "torchscript: trace + freeze" + (" + optimize_for_inference" if method == "torchscript_ofi"
                                                      else "")
        else:
            graph = torch.compile(model)
            detail = "torch.compile (inductor, default mode)"
        if channels_last:
            detail += ", channels_last"
        started = time.perf_counter()
        with torch.inference_mode():
            graph(x)  # compiles now, so the build time is not mixed into the warm-up
        build_s = time.perf_counter() - started
        return cls(graph, x, threads, detail, {"frozen_method": method, "first_run_s": round(build_s, 3)})

    def run(self) -> torch.Tensor:
        with torch.inference_mode():
            return self.graph(self.input)

    def __call__(self, x: Any) -> torch.Tensor:
        with torch.inference_mode():
            return self.graph(torch.as_tensor(x))
