"""Calibration images for int8 quantisation, prepared as the model sees them at evaluation, and ONNX Runtime's
reader over them.

:func:`calibration_data` draws images from ``load_dataset`` (Fashion-MNIST, an image folder in the ImageNet
layout, or any folder of image files) with the evaluation transform; :func:`calibration_for` picks the source
and preprocessing the way ``mnv3 export --int8`` does (a training run's own data and preprocessing by default,
passed in as the run's recorded data options); :func:`random_calibration_data` is for timing only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...extras import require
from .options import DEFAULT_CALIBRATION_SAMPLES

NOISE = "noise"  # the calibration source of seeded random inputs (timing only)
NOISE_SAMPLES = 16  # at most this many noise batches: their values do not matter for speed


class CalibrationError(ValueError):
    """Calibration data that cannot be used: no images, wrong shape; the message says what was found."""


def _flat_images(root: Path) -> list[Path]:
    from ...data import IMAGE_EXTENSIONS

    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in sorted(filenames)
                  if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
    return found


def calibration_data(data: str | os.PathLike, *, resolution: int, channels: int | None = None,
                     mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                     samples: int = DEFAULT_CALIBRATION_SAMPLES, split: str = "train", seed: int = 0,
                     data_dir: str | os.PathLike | None = None, crop_fraction: float | None = None,
                     batch: int = 1) -> list[np.ndarray]:
    """``samples`` images (seeded random choice) as float32 arrays ``batch x C x resolution x resolution``
    (consecutive images stacked; a last short batch is dropped when there are enough images for one), prepared
    with the evaluation transform, for calibration.

    ``data``: ``"fashion-mnist"``, an image folder in the ImageNet layout (``ROOT/train/<class>/...``; ``split``
    picks the split), or any folder holding image files (searched recursively; then ``channels`` defaults to 3
    and ``mean``/``std`` to ImageNet's). :class:`CalibrationError` when there are no images.
    """
    from ...data import DataError, load_dataset, load_image
    from ...data.transforms import IMAGENET_GRAY_MEAN, IMAGENET_GRAY_STD, IMAGENET_MEAN, IMAGENET_STD

    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise CalibrationError(f"the number of calibration samples must be a positive integer, got {samples!r}")
    options: dict[str, Any] = {"mean": tuple(mean) if mean else None, "std": tuple(std) if std else None,
                               "crop_fraction": crop_fraction}
    path = Path(data)
    flat = None
    try:
        dataset = load_dataset(data, split, resolution=resolution, train=False, data_dir=data_dir,
                               channels=channels, **options)
    except DataError as e:
        if not path.is_dir() or (path / split).is_dir():
            raise CalibrationError(f"no calibration images: {e}") from None
        flat = _flat_images(path)  # not the ImageNet layout: any folder of images will do
        if not flat:
            from ...data import IMAGE_EXTENSIONS

            raise CalibrationError(f"no calibration images in {path} (looked recursively for files ending in "
                                   f"{', '.join(IMAGE_EXTENSIONS)})") from None
    count = len(flat) if flat is not None else len(dataset)
    if count == 0:
        raise CalibrationError(f"no calibration images in {data} ({split} split)")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(count, generator=g)[: min(samples, count)].tolist()
    if flat is not None:
        channels = channels or 3
        if mean is None or std is None:
            mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else (IMAGENET_GRAY_MEAN, IMAGENET_GRAY_STD)
        images = [load_image(flat[i], resolution, channels, tuple(mean), tuple(std), crop_fraction) for i in order]
    else:
        images = []
        for i in order:
            item = dataset[i]
            if item is not None:
                images.append(item[0])
    if not images:
        raise CalibrationError(f"no readable calibration images in {data}")
    if len(images) < batch:
        raise CalibrationError(f"{len(images)} calibration image(s) in {data}, fewer than one batch of {batch}")
    return [torch.stack(images[i:i + batch]).float().numpy() for i in range(0, len(images) - batch + 1, batch)]


def random_calibration_data(shape: Sequence[int], samples: int = 8, seed: int = 0) -> list[np.ndarray]:
    """Seeded standard-normal inputs: enough for timing (kernels do not depend on values), not for accuracy."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g).numpy() for _ in range(samples)]

def check_calibration(batches: Sequence[np.ndarray], shape: Sequence[int], dynamic_batch: bool) -> None:
    if len(batches) == 0:
        raise CalibrationError("no calibration images were given")
    for i, b in enumerate(batches):
        b_shape = tuple(np.shape(b))
        ok = len(b_shape) == 4 and b_shape[1:] == tuple(shape[1:]) and (dynamic_batch or b_shape[0] == shape[0])
        if not ok:
            raise CalibrationError(f"calibration batch {i} has shape {list(b_shape)}; the model takes "
                                   f"{['N' if dynamic_batch else shape[0], *shape[1:]]}")


def calibration_reader(batches: Sequence[np.ndarray], input_name: str, layout: str = "nchw"):
    """ONNX Runtime's calibration reader over NCHW ``batches``, fed in the file's input ``layout``."""
    from ..onnx_export import to_layout

    ort_quant = require("onnxruntime.quantization", purpose="int8 quantisation")

    class Reader(ort_quant.CalibrationDataReader):
        """Feeds the calibration images one batch at a time."""

        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            b = next(self._it, None)
            return None if b is None else {input_name: to_layout(np.asarray(b, dtype=np.float32), layout)}

        def rewind(self) -> None:
            self._it = iter(batches)

    return Reader()


def calibration_for(source: str, shape: Sequence[int], *, samples: int = DEFAULT_CALIBRATION_SAMPLES,
                    run_data: dict[str, Any] | None = None, dynamic_batch: bool = False
                    ) -> tuple[list[np.ndarray], str]:
    """Calibration batches for a model taking ``shape`` (NCHW), and a label for where they came from.

    ``source``: ``"noise"`` (seeded random inputs, for timing only: at most :data:`NOISE_SAMPLES` of them), or
    what :func:`calibration_data` reads. ``run_data``: the data options a training run recorded (its
    ``config.json`` ``data`` section); its preprocessing (mean, std, crop) is used whatever the images, and its
    ``data_dir`` when ``source`` is the run's own data. Batches hold ``shape[0]`` images, one with
    ``dynamic_batch``.
    """
    if source == NOISE:
        return random_calibration_data(shape, min(samples, NOISE_SAMPLES)), "noise (seeded random inputs)"
    options: dict[str, Any] = {}
    if run_data is not None:
        options = {"mean": run_data["mean"], "std": run_data["std"], "crop_fraction": run_data.get("crop_fraction")}
        if source == run_data.get("name"):
            options["data_dir"] = run_data.get("data_dir")
    batches = calibration_data(source, resolution=shape[2], channels=shape[1], samples=samples,
                               batch=1 if dynamic_batch else shape[0], **options)
    return batches, source
