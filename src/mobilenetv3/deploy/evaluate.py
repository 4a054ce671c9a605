"""How a deployed file compares with its float model: logits of an ONNX file, agreement and error against the
model's (per image for a classifier, per pixel for segmentation logits), and top-1 over a dataset of
``(image, label)`` items in ONNX Runtime, OpenVINO or PyTorch."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
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


def compare_onnx_with_model(path: str | os.PathLike, model: nn.Module, batches: Iterable[np.ndarray]
                            ) -> dict[str, Any]:
    """Argmax agreement and logit error of an (int8) ONNX file against the float ``model`` on ``batches``
    (NCHW; fed in the layout the file records), batch by batch (:class:`OutputComparison`), so that dense
    outputs (segmentation logits at the input's size) are never all held at once."""
    from ..runtime.onnxruntime import ort_session

    layout = input_layout_of(path)
    session = ort_session(path, torch.get_num_threads())
    name = session.get_inputs()[0].name
    comparison = OutputComparison()
    model.eval()
    for b in batches:
        b = np.asarray(b, np.float32)
        got = session.run(None, {name: to_layout(b, layout)})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(b)).numpy()
        comparison.add(got, want)
    return comparison.result()


class OutputComparison:
    """Outputs compared with reference outputs, accumulated batch by batch: the argmax agreement over axis 1 (the
    classes: per image for ``N x K`` logits, per pixel for ``N x K x H x W``) and the absolute error, the relative
    one taken against the range of the reference."""

    def __init__(self) -> None:
        self.images = self.positions = self.agreeing = self.elements = 0
        self.abs_sum, self.abs_max = 0.0, 0.0
        self.low, self.high = math.inf, -math.inf

    def add(self, got: np.ndarray, want: np.ndarray) -> None:
        got, want = np.asarray(got), np.asarray(want)
        if got.shape != want.shape:
            raise ValueError(f"outputs of shape {list(got.shape)} compared with reference outputs of shape "
                             f"{list(want.shape)}")
        agree = got.argmax(1) == want.argmax(1)
        diff = np.abs(got.astype(np.float64) - want)
        self.images += int(want.shape[0])
        self.positions += agree.size
        self.agreeing += int(agree.sum())
        self.elements += diff.size
        self.abs_sum += float(diff.sum())
        self.abs_max = max(self.abs_max, float(diff.max()))
        self.low, self.high = min(self.low, float(want.min())), max(self.high, float(want.max()))

    def result(self) -> dict[str, Any]:
        """``images``, ``argmax_positions`` (images, or pixels for dense outputs), ``argmax_agreement`` (a
        fraction of them), ``max_abs_diff``, ``mean_abs_diff``, ``relative_max_diff``."""
        if not self.positions:
            raise ValueError("no outputs were compared")
        spread = (self.high - self.low) or 1.0
        return {"images": self.images, "argmax_positions": self.positions,
                "argmax_agreement": self.agreeing / self.positions, "max_abs_diff": self.abs_max,
                "mean_abs_diff": self.abs_sum / self.elements, "relative_max_diff": self.abs_max / spread}


def compare_outputs(got: np.ndarray, want: np.ndarray) -> dict[str, Any]:
    """Argmax agreement (fraction) and absolute logit error of ``got`` against ``want`` (rows are images; dense
    outputs agree pixel by pixel), as :class:`OutputComparison` gives them for one batch."""
    comparison = OutputComparison()
    comparison.add(got, want)
    return comparison.result()


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

