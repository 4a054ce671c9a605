"""Quantisation-aware training as the last phase of a run (the training side; the fake-quantised modules and the
int8 conversion are :mod:`mobilenetv3.deploy.fake_quant` and :mod:`mobilenetv3.deploy.qat_convert`'s).

The usual flow: train float, then fine-tune with fake quantisation and convert::

    mnv3 train --model mobilenet_v3_small --data fashion-mnist --out runs/float
    mnv3 train --init runs/float --qat --epochs 2 --lr 1e-4 --warmup-epochs 0 --out runs/qat

``qat`` attaches :func:`~mobilenetv3.deploy.fake_quant.prepare_qat` to the model and to its EMA for the last
``qat_epochs`` epochs (once on, it stays on, also when a resumed run is given more epochs); the epochs' metrics
are then the fake-quantised model's. After the last epoch the EMA weights (the model's when there is no EMA) are
converted to ``RUN_DIR/model-int8.onnx`` with the learned activation ranges, evaluated with ONNX Runtime on the
validation set, reloaded and evaluated again; the figures go to ``metrics.jsonl`` (``"kind": "int8"``) and the
run's summary. ``mnv3 export RUN_DIR --int8`` of a QAT run converts its last checkpoint the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoint import CheckpointError, checkpoint_paths, read_weights
from .config import TrainConfig
from .distributed import DistInfo, all_reduce_tensor

INT8_FILE = "model-int8.onnx"
QAT_GROUP, EMA_QAT_GROUP = "qat", "ema_qat"
CHECK_IMAGES = 64  # images for the conversion's own checks (all ranges come from QAT, none from calibration)


def qat_start_epoch(config: TrainConfig) -> int | None:
    """The first (0-based) epoch trained with fake quantisation, None without QAT."""
    if not config.qat:
        return None
    return config.epochs - config.qat_epochs


def check_deploy_extra() -> None:
    """Fail before training when the int8 conversion at the end could not run."""
    from ..extras import require

    require("onnx", purpose="quantisation-aware training's int8 conversion")
    require("onnxruntime.quantization", purpose="quantisation-aware training's int8 conversion")


def run_calibration(data_info: dict[str, Any] | None, fallback: Any, samples: int = CHECK_IMAGES
                    ) -> list[np.ndarray]:
    """Images for the conversion's checks, prepared as the model sees them at evaluation: the run's training
    images (as ``mnv3 export RUN_DIR --int8`` draws them), or ``fallback`` items (data given in memory, None
    ``data_info``)."""
    from ..deploy.quantize import CalibrationError, calibration_data

    name = None if data_info is None else data_info.get("name")
    if name is not None:
        try:
            return calibration_data(name, resolution=data_info["resolution"], channels=data_info["channels"],
                                    mean=data_info["mean"], std=data_info["std"], samples=samples,
                                    crop_fraction=data_info.get("crop_fraction"), data_dir=data_info.get("data_dir"))
        except CalibrationError:
            pass  # data given in memory: the name is only a label
    n = min(samples, len(fallback))
    return [fallback[i][0][None].float().numpy() for i in range(n) if fallback[i] is not None]


def qat_state_of(run_dir: str | os.PathLike, checkpoint: str = "last", weights: str = "ema"
                 ) -> dict[str, torch.Tensor] | None:
    """The observers saved with a run's checkpoint for its ``weights`` (None for a run without QAT)."""
    groups, _ = read_weights(checkpoint_paths(run_dir, checkpoint))
    if weights == "ema" and EMA_QAT_GROUP in groups:
        return groups[EMA_QAT_GROUP]
    return groups.get(QAT_GROUP)


def prepared_from_run(run_dir: str | os.PathLike, checkpoint: str = "last", weights: str = "ema"):
    """A QAT run's model (float weights) with its fake quantisation attached and loaded: ``(model, qat)``."""
    from ..deploy.fake_quant import prepare_qat
    from .evaluate import load_run

    state = qat_state_of(run_dir, checkpoint, weights)
    if state is None:
        raise CheckpointError(f"{run_dir} ({checkpoint} checkpoint) holds no quantisation-aware training state")
    model, _ = load_run(run_dir, checkpoint=checkpoint, weights=weights, device="cpu")
    qat = prepare_qat(model)
    qat.load_state_dict(state)
    return model, qat


@torch.no_grad()
def _predictions(model: nn.Module, dataset: Any, batch_size: int = 256) -> np.ndarray:
    """``model``'s predicted classes for ``dataset`` (in order), on the model's device, in eval mode."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    preds = []
    try:
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(len(dataset), start + batch_size))]
            x = torch.stack([it[0] for it in items if it is not None]).to(device)
            preds.append(model(x).argmax(1).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(preds)


def convert_run(model: nn.Module, qat: Any, out: str | os.PathLike, data_info: dict[str, Any], val_set: Any,
                calibration: Sequence[np.ndarray], *, threads: int | None = None,
                log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write ``out/model-int8.onnx`` from a QAT-trained model, evaluate it on ``val_set`` with ONNX Runtime, load
    the file again and re-evaluate; returns the figures (int8 top-1 before and after the reload, agreement with
    the fake-quantised model's predictions, the conversion's checks)."""
    import onnx

    from ..deploy.qat_convert import convert_qat
    from ..deploy.quantize import evaluate_onnx

    out = Path(out)
    path = out / INT8_FILE
    tmp = out / f".{INT8_FILE}.tmp"
    shape = (1, data_info["channels"], data_info["resolution"], data_info["resolution"])
    report = convert_qat(model, qat, tmp, calibration, input_shape=shape)
    os.replace(tmp, path)
    first = evaluate_onnx(path, val_set, threads=threads)
    simulated = _predictions(model, val_set)
    reloaded_file = out / f".{INT8_FILE}.reloaded.tmp"
    try:
        onnx.save(onnx.load(str(path)), str(reloaded_file))  # load the written file and save it again
        again = evaluate_onnx(reloaded_file, val_set, threads=threads)
    finally:
        reloaded_file.unlink(missing_ok=True)
    identical = bool(np.array_equal(first["predictions"], again["predictions"]))
    record = {
        "path": INT8_FILE, "int8_top1": first["top1"], "int8_top1_reloaded": again["top1"],
        "reload_identical": identical, "qat_top1": 100.0 * float((simulated == first["labels"]).mean()),
        "images": first["count"],
        "agreement_with_qat": float((first["predictions"] == simulated).mean()),
        "checks": report.checks, "graph_changes": report.graph_changes,
    }
    if log is not None:
        log(f"int8: wrote {path} (ONNX Runtime QDQ, ranges from QAT): top-1 {first['top1']:.2f}% on "
            f"{first['count']:,} images, {again['top1']:.2f}% after reloading the file; fake-quantised model "
            f"{record['qat_top1']:.2f}%, predictions agree on {100 * record['agreement_with_qat']:.2f}%")
    return record


# -- the phase in a run's loop ---------------------------------------------------------------------------------
def qat_groups(qat: Any | None, ema_qat: Any | None) -> dict[str, dict[str, torch.Tensor]] | None:
    """The observers' tensors a checkpoint carries (``qat.*``, ``ema_qat.*``); None without QAT."""
    if qat is None:
        return None
    groups = {QAT_GROUP: qat.state_dict()}
    if ema_qat is not None:
        groups[EMA_QAT_GROUP] = ema_qat.state_dict()
    return groups


def switch_qat(qat: Any | None, ema_qat: Any | None, epoch: int, config: TrainConfig) -> None:
    """Fake quantisation on from the QAT start epoch; once the observers have seen data it stays on (a
    resumed run given more epochs does not go back to float)."""
    if qat is None:
        return
    started = any(int(fq.updates) > 0 for fq in qat.observers.values())
    on = started or epoch >= qat_start_epoch(config)
    for q in (qat, ema_qat):
        if q is not None:
            q.set_enabled(on)


def after_qat_step(qat: Any | None, ema_qat: Any | None, ema_decay: float | None, dist: DistInfo) -> None:
    """After an optimizer step: one set of ranges over the processes (their average), and the EMA model's ranges
    following the model's as its weights do."""
    if qat is None or not qat.enabled:
        return
    if dist.enabled:
        flat = qat.flat_ranges()
        all_reduce_tensor(flat, dist)
        qat.load_flat_ranges(flat / dist.world_size)
    if ema_qat is not None and ema_decay is not None:
        ema_qat.ema_update(qat, ema_decay)
