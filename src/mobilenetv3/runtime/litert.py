"""LiteRT (TFLite): a ``.tflite`` model in the LiteRT interpreter, the runtime the paper measured on phones.

The interpreter runs on CPU with XNNPACK and ``num_threads`` = the thread count. The model comes from
:func:`mobilenetv3.deploy.litert_export.convert_litert` (BatchNorm folded); it takes the same NCHW input as PyTorch.
Needs the ``litert`` extra (``ai-edge-litert``).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from ..extras import require
from .backend import Prepared, check_layout


class LiteRTRunner:
    """A LiteRT interpreter on one model (``threads`` CPU threads, XNNPACK): ``runner(x_numpy) -> output``."""

    def __init__(self, content: bytes, threads: int = 1) -> None:
        interpreter_mod = require("ai_edge_litert.interpreter", extra="litert", purpose="the LiteRT interpreter")
        self.interpreter = interpreter_mod.Interpreter(model_content=content, num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.input["shape"])

    def ops(self) -> dict[str, int]:
        return dict(sorted(Counter(op["op_name"] for op in self.interpreter._get_ops_details()).items()))

    def __call__(self, x: Any) -> Any:
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"])


class LiteRT(Prepared):
    """A ``.tflite`` model (its bytes or a path) in a :class:`LiteRTRunner` on the fixed input ``x``."""

    package = "ai_edge_litert"

    def __init__(self, runner: LiteRTRunner, x: Any, threads: int, version: str) -> None:
        super().__init__("litert", f"interpreter num_threads={threads}", version, threads)
        self.runner, self.input = runner, x

    @classmethod
    def prepare(cls, source: bytes | str | os.PathLike, x: Any, *, threads: int = 1, layout: str = "nchw"
                ) -> LiteRT:
        check_layout(layout, ("nchw",), "litert")
        content = source if isinstance(source, bytes) else Path(source).read_bytes()
        runner = LiteRTRunner(content, threads)
        litert = require("ai_edge_litert", extra="litert", purpose="the LiteRT interpreter")
        feed = x.detach().cpu().float().numpy() if hasattr(x, "detach") else x
        return cls(runner, feed, threads, getattr(litert, "__version__", "?"))

    def run(self) -> Any:
        return self.runner(self.input)

    def __call__(self, x: Any) -> Any:
        return self.runner(x)
