"""What every runtime backend is once prepared: one forward pass on a fixed input, and a description of its set-up."""

from __future__ import annotations

from typing import Any, ClassVar

LAYOUTS = ("nchw", "nhwc")


class Prepared:
    """A runtime set up on one model or file and a fixed input.

    ``run()`` runs one forward pass on the fixed input (what the harness times); calling it runs another input of
    the same shape. ``runtime``, ``detail``, ``version``, ``threads`` and ``extra`` describe the set-up, as a
    latency result records it. Each backend (see :data:`mobilenetv3.runtime.BACKENDS`) is a subclass with a
    ``prepare(source, x, *, threads, layout, ...)`` class method; ``package`` names the optional package it runs
    on (``None``: PyTorch alone).
    """

    package: ClassVar[str | None] = None

    def __init__(self, runtime: str, detail: str, version: str, threads: int,
                 extra: dict[str, Any] | None = None) -> None:
        self.runtime = runtime
        self.detail = detail
        self.version = version
        self.threads = threads
        self.extra: dict[str, Any] = dict(extra or {})

    def run(self) -> Any:
        raise NotImplementedError

    def __call__(self, x: Any) -> Any:
        raise NotImplementedError

    def described(self, runtime: str | None = None, before: str = "", extra: dict[str, Any] | None = None
                  ) -> Prepared:
        """Itself, renamed to ``runtime`` (a latency target composed on this backend, say ``onnxruntime-int8``),
        ``before`` put in front of its detail (what was done to the model first) and ``extra`` added."""
        if runtime is not None:
            self.runtime = runtime
        self.detail = before + self.detail
        self.extra.update(extra or {})
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.runtime!r}, {self.detail!r}, threads={self.threads})"


def check_layout(layout: str, allowed: tuple[str, ...] = LAYOUTS, runtime: str = "") -> str:
    if layout not in allowed:
        raise ValueError(f"layout={layout!r} does not apply to {runtime or 'this runtime'} "
                         f"(choose from {', '.join(allowed)})")
    return layout
