"""How a deployed file compares with its float model: logits of an ONNX file, agreement and error against the
model's (per image for a classifier, per pixel for segmentation logits), top-1 over a dataset of
``(image, label)`` items in ONNX Runtime, OpenVINO or PyTorch, and :class:`FileModel`: a file behind a module's
interface, so that a task's own evaluation scores it as it scores the PyTorch model (``mnv3 eval --file``)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..extras import require
from ..inputs import InputError
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


def file_input_shape(path: str | os.PathLike) -> tuple[int | None, ...]:
    """The NCHW input shape of an ONNX file, from its graph (``None`` for a symbolic axis), in the model's view
    whatever layout the file records; ``ValueError`` for a file that does not take one 4-D image batch."""
    onnx = require("onnx", purpose="reading an ONNX file")
    proto = onnx.load(str(path), load_external_data=False)
    constants = {init.name for init in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in constants]
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in inputs[0].type.tensor_type.shape.dim] if inputs else []
    if len(inputs) != 1 or len(dims) != 4:
        raise ValueError(f"{path} does not take one batch of images (inputs: "
                         f"{', '.join(f'{i.name} ({len(i.type.tensor_type.shape.dim)}-D)' for i in inputs)})")
    if input_layout_of(proto) == "nhwc":
        dims = [dims[0], dims[3], dims[1], dims[2]]
    return tuple(dims)


class FileModel(nn.Module):
    """An ONNX file run by ``runtime`` (:data:`EVAL_RUNTIMES`) behind a module's interface: an NCHW float batch
    in, the file's first output out as a tensor, so that a task's evaluation
    (:meth:`~mobilenetv3.tasks.base.Task.evaluate`) scores the file with the code that scores the PyTorch model.

    Batches are fed in the layout the file records; a file with a fixed batch size gets batches of that size (a
    batch-1 file one image at a time; a last short batch padded, its extra outputs dropped); a file with a fixed
    height and width or channel count refuses other images (:class:`~mobilenetv3.inputs.InputError` naming both).
    ``input_shape``: the file's NCHW input shape, ``None`` for a symbolic axis."""

    def __init__(self, path: str | os.PathLike, runtime: str = "onnxruntime", threads: int | None = None) -> None:
        super().__init__()
        if runtime not in EVAL_RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(EVAL_RUNTIMES)}, got {runtime!r}")
        if not Path(path).is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        self.path, self.runtime = str(path), runtime
        self.input_shape = file_input_shape(path)
        self.layout = input_layout_of(path)
        self.run_batch, _ = onnx_runner(path, runtime, threads or torch.get_num_threads())

    def check_images(self, shape: Sequence[int]) -> None:
        """:class:`~mobilenetv3.inputs.InputError` unless the file takes images of NCHW ``shape``."""
        _, c, h, w = self.input_shape
        if c is not None and shape[1] != c:
            raise InputError(f"{self.path} takes {c}-channel images; these have {shape[1]}")
        if (h is not None and shape[2] != h) or (w is not None and shape[3] != w):
            raise InputError(f"{self.path} takes {h or 'any'}x{w or 'any'} images; these are {shape[2]}x{shape[3]} "
                             f"(export a file at {shape[2]}x{shape[3]}, or one with a dynamic resolution)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_images(tuple(x.shape))
        images = x.detach().cpu().float().numpy()
        step = self.input_shape[0] or len(images)
        outputs = []
        for start in range(0, len(images), step):
            chunk = images[start:start + step]
            if len(chunk) < step:
                chunk = np.concatenate([chunk, np.zeros((step - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            outputs.append(np.asarray(self.run_batch(to_layout(chunk, self.layout)))[: len(images) - start])
        return torch.from_numpy(np.concatenate(outputs))
