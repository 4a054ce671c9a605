"""How a deployed file compares with its float model: logits of an ONNX file, agreement and error against the
model's, and top-1 over a dataset of ``(image, label)`` items in ONNX Runtime, OpenVINO or PyTorch."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .onnx_export import input_layout_of, to_layout

EVAL_RUNTIMES = ("onnxruntime", "openvino")


def onnx_logits(path_or_session: Any, batches: Iterable[np.ndarray], threads: int | None = None) -> np.ndarray:
    """The model file's outputs for each NCHW batch (fed in the layout the file records; a session: as they are),
    concatenated."""
    from ..runtime.onnxruntime import ort_session

    is_session = hasattr(path_or_session, "run")
    layout = "nchw" if is_session else input_layout_of(path_or_session)
    session = path_or_session if is_session else ort_session(path_or_session, threads or torch.get_num_threads())
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: to_layout(np.asarray(b, np.float32), layout)})[0]
                           for b in batches])


def compare_onnx_with_model(path: str | os.PathLike, model: nn.Module, batches: Sequence[np.ndarray]
                            ) -> dict[str, Any]:
    """Argmax agreement and logit error of an (int8) ONNX file against the float ``model`` on ``batches``."""
    got = onnx_logits(path, batches)
    with torch.no_grad():
        want = torch.cat([model.eval()(torch.from_numpy(b)) for b in batches]).numpy()
    return compare_outputs(got, want)


def compare_outputs(got: np.ndarray, want: np.ndarray) -> dict[str, Any]:
    """Argmax agreement (fraction) and absolute logit error of ``got`` against ``want`` (rows are images); the
    relative error is taken against the range of ``want``."""
    spread = float(want.max() - want.min()) or 1.0
    diff = np.abs(got - want)
    return {"images": int(want.shape[0]), "argmax_agreement": float((got.argmax(1) == want.argmax(1)).mean()),
            "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "relative_max_diff": float(diff.max()) / spread}


def top1(dataset: Any, predict: Callable[[torch.Tensor], Any], *, limit: int | None = None, batch_size: int = 64,
         progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Top-1 (%) of ``predict`` (a stacked batch of images -> its logits, a tensor or an array) over ``dataset``'s
    first ``limit`` items, ``batch_size`` at a time (``None`` items are skipped); also the predictions and labels.
    ``progress`` is called with the number of items done after each batch."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    preds, labels = [], []
    for start in range(0, n, batch_size):
        items = [it for it in (dataset[i] for i in range(start, min(n, start + batch_size))) if it is not None]
        if items:
            logits = predict(torch.stack([it[0] for it in items]))
            preds.append(np.asarray(logits.numpy() if isinstance(logits, torch.Tensor) else logits).argmax(1))
            labels.append(np.array([it[1] for it in items]))
        if progress is not None:
            progress(min(n, start + batch_size))
    pred, label = np.concatenate(preds), np.concatenate(labels)
    return {"count": int(label.size), "top1": 100.0 * float((pred == label).mean()), "predictions": pred,
            "labels": label}


def onnx_runner(path: str | os.PathLike, runtime: str, threads: int) -> tuple[Callable[[np.ndarray], np.ndarray],
                                                                               int | None]:
    """A function running the file on one batch in ``runtime``, and the file's fixed batch size (or None)."""
    if runtime == "onnxruntime":
        from ..runtime.onnxruntime import ort_session

        session = ort_session(path, threads)
        inp = session.get_inputs()[0]
        return (lambda x: session.run(None, {inp.name: x})[0]), (inp.shape[0] if isinstance(inp.shape[0], int)
                                                                  else None)
    if runtime == "openvino":
        from ..runtime.openvino import openvino_compile, openvino_forward

        compiled = openvino_compile(path, threads)
        dim = compiled.input(0).get_partial_shape()[0]
        return openvino_forward(compiled), (None if dim.is_dynamic else dim.get_length())
    raise ValueError(f"runtime must be one of {', '.join(EVAL_RUNTIMES)}, got {runtime!r}")


def evaluate_onnx(path: str | os.PathLike, dataset: Any, *, limit: int | None = None, batch_size: int = 64,
                  threads: int | None = None, progress: Callable[[int], None] | None = None,
                  runtime: str = "onnxruntime") -> dict[str, Any]:
    """Top-1 (%) of an ONNX classifier on a dataset of ``(image, label)`` items, run by ``runtime``
    (``onnxruntime`` or ``openvino``, f32 inference precision); a fixed batch-1 file is fed one image at a time,
    a dynamic-batch file ``batch_size`` at a time, in the input layout the file records (NCHW or NHWC). Also
    returns the predictions."""
    forward, fixed = onnx_runner(path, runtime, threads or torch.get_num_threads())
    layout = input_layout_of(path)

    def predict(images: torch.Tensor) -> np.ndarray:
        x = images.numpy()
        if fixed and x.shape[0] < fixed:  # pad a last short batch for a fixed-batch file
            x = np.concatenate([x, np.zeros((fixed - x.shape[0], *x.shape[1:]), x.dtype)])
        return forward(to_layout(x, layout))[: images.shape[0]]

    return top1(dataset, predict, limit=limit, batch_size=fixed or batch_size, progress=progress)


def evaluate_torch(model: nn.Module, dataset: Any, *, limit: int | None = None, batch_size: int = 256
                   ) -> dict[str, Any]:
    """Top-1 (%) and predictions of a float (or PT2E) model on a dataset, as :func:`evaluate_onnx` gives them."""
    if hasattr(model, "eval"):
        model.eval()
    with torch.no_grad():
        return top1(dataset, model, limit=limit, batch_size=batch_size)
