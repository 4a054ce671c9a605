"""Calibration images for int8 quantisation, prepared as the model sees them at evaluation, and ONNX Runtime's
reader over them.

:func:`calibration_data` draws images from ``load_dataset`` (Fashion-MNIST, an image folder in the ImageNet
layout, or any folder of image files) with the evaluation transform; :func:`run_calibration_data` draws them from
a segmentation (or other non-classification) run's training split through its task's evaluation data
(:meth:`~mobilenetv3.tasks.base.Task.eval_data`: whole images, as ``mnv3 eval`` feeds them), resized to the
model's input size where they differ and loaded only when read (:class:`RunImages`: a scene canvas or a
Cityscapes frame is large); :func:`calibration_for` picks the source and preprocessing the way
``mnv3 export --int8`` does (a training run's own data and preprocessing by default, passed in as the run's
recorded data options); :func:`random_calibration_data` is for timing only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

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


class RunImages(Sequence):
    """Batches of ``batch`` images (float32 ``batch x C x H x W`` arrays) of a dataset whose items start with an
    image: the items at ``indices``, in order, resized bilinearly to ``size`` (height, width) where they differ,
    read from the dataset each time a batch is asked for. A last short batch is dropped."""

    def __init__(self, dataset: Any, indices: Sequence[int], size: Sequence[int], batch: int = 1) -> None:
        self.dataset, self.indices, self.size, self.batch = dataset, list(indices), tuple(size), batch

    def __len__(self) -> int:
        return len(self.indices) // self.batch

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(f"batch {i} of {len(self)}")
        i %= len(self)
        return torch.stack([self.image(k) for k in self.indices[i * self.batch:(i + 1) * self.batch]]).float().numpy()

    def image(self, index: int) -> torch.Tensor:
        """Item ``index``'s image at ``size``."""
        image = self.dataset[index][0]
        if tuple(image.shape[-2:]) != self.size:
            image = F.interpolate(image[None], size=self.size, mode="bilinear", align_corners=False)[0]
        return image


def run_calibration_data(task: str, run_data: Mapping[str, Any], shape: Sequence[int], *, data: str | None = None,
                         samples: int = DEFAULT_CALIBRATION_SAMPLES, seed: int = 0,
                         batch: int = 1) -> tuple[RunImages, str]:
    """``samples`` images (a seeded random choice) of a ``task`` run's training split, prepared by the task's
    evaluation data (the run's recorded ``run_data``: statistics, channels, where the data lives; ``data``: other
    data of the task instead of the run's own) at the ``shape``'s height and width, in batches of ``batch``; and a
    label saying what they are. :class:`CalibrationError` when there are none."""
    from ...data import DataError
    from ...tasks import get_task

    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise CalibrationError(f"the number of calibration samples must be a positive integer, got {samples!r}")
    name = data or run_data["name"]
    try:
        dataset = get_task(task).eval_data(run_data, "train", data=data)
        count = len(dataset)
    except (DataError, OSError, ValueError) as e:
        raise CalibrationError(f"no calibration images in {name}: {str(e).splitlines()[0]}") from None
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(count, generator=g)[: min(samples, count)].tolist()
    if len(order) < batch:
        raise CalibrationError(f"{len(order)} calibration image(s) in {name}'s train split, fewer than one batch of "
                               f"{batch}")
    images = RunImages(dataset, order, shape[2:], batch)
    first = tuple(dataset[order[0]][0].shape[-2:])
    size = "x".join(map(str, images.size))
    return images, (f"{name} (train split, evaluation transform"
                    + (f", resized from {'x'.join(map(str, first))} to {size})" if first != images.size else ")"))


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
                    run_data: dict[str, Any] | None = None, dynamic_batch: bool = False,
                    task: str = "classification") -> tuple[Sequence[np.ndarray], str]:
    """Calibration batches for a model taking ``shape`` (NCHW), and a label for where they came from.

    ``source``: ``"noise"`` (seeded random inputs, for timing only: at most :data:`NOISE_SAMPLES` of them), or
    what :func:`calibration_data` reads (a classifier), or data of ``task`` (another task's run:
    :func:`run_calibration_data`, the run's own data when ``source`` names it). ``run_data``: the data options a
    training run recorded (its ``config.json`` ``data`` section); its preprocessing (mean, std, crop) is used
    whatever the images, and its ``data_dir`` when ``source`` is the run's own data. Batches hold ``shape[0]``
    images, one with ``dynamic_batch``.
    """
    if source == NOISE:
        return random_calibration_data(shape, min(samples, NOISE_SAMPLES)), "noise (seeded random inputs)"
    if task != "classification":
        if run_data is None:
            raise CalibrationError(f"a {task} model calibrates on a run's data: export a run directory (or "
                                   f"calibrate on noise, for timing only)")
        return run_calibration_data(task, run_data, shape, data=None if source == run_data.get("name") else source,
                                    samples=samples, batch=1 if dynamic_batch else shape[0])
    options: dict[str, Any] = {}
    if run_data is not None:
        options = {"mean": run_data["mean"], "std": run_data["std"], "crop_fraction": run_data.get("crop_fraction")}
        if source == run_data.get("name"):
            options["data_dir"] = run_data.get("data_dir")
    batches = calibration_data(source, resolution=shape[2], channels=shape[1], samples=samples,
                               batch=1 if dynamic_batch else shape[0], **options)
    return batches, source
