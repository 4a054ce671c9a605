"""Running a model or an exported file on one runtime, and timing it: the harness (:mod:`.timing`), machine facts
(:mod:`.cpu`) and one module per backend. Nothing here exports a model: turning a module into a file is
:mod:`mobilenetv3.deploy`'s job, and measuring a module end to end is :mod:`mobilenetv3.latency`'s.

Backends are registered by name as ``"module:Class"`` strings and imported only when chosen
(:func:`load_backend`), so an optional runtime (OpenVINO, LiteRT) is never imported by accident. Adding a runtime
is one module with a :class:`~.backend.Prepared` subclass and one line in :data:`BACKENDS`.
"""

from __future__ import annotations

import importlib
import importlib.util

from .backend import Prepared

# name -> "module:Class"; the module is imported by load_backend, when the backend is chosen
BACKENDS: dict[str, str] = {
    "eager": "mobilenetv3.runtime.torch_eager:TorchEager",
    "frozen": "mobilenetv3.runtime.torchscript:FrozenGraph",
    "onnxruntime": "mobilenetv3.runtime.onnxruntime:OnnxRuntime",
    "openvino": "mobilenetv3.runtime.openvino:OpenVINO",
    "litert": "mobilenetv3.runtime.litert:LiteRT",
}


def load_backend(name: str) -> type[Prepared]:
    """The backend class registered as ``name`` (its module imported now; its optional package only when it
    prepares something)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown runtime backend {name!r} (choose from {', '.join(BACKENDS)})")
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def available_backends() -> list[str]:
    """The registered backends whose optional package is installed (PyTorch's own always are)."""
    out = []
    for name in BACKENDS:
        package = load_backend(name).package
        if package is None or importlib.util.find_spec(package) is not None:
            out.append(name)
    return out


__all__ = ["BACKENDS", "Prepared", "available_backends", "load_backend"]
