"""Image folders in the ImageNet layout: ``ROOT/<split>/<class>/<image>``, decoded with Pillow.

Class names are the sorted names of the class folders; an empty class folder is an error, since it means the
data is not what the user thinks it is.

Unreadable images are found lazily, when an item is loaded (checking a million files up front would take longer
than many runs). With ``on_corrupt="fail"`` the :class:`DataError` naming the file propagates; a DataLoader worker
hands it to the main process, which re-raises it with its type. With ``on_corrupt="skip"`` the item is ``None``
instead, a :class:`CorruptImageWarning` names the file, the skip is counted (:attr:`ImageFolder.num_skipped`, summed
over DataLoader workers), and :func:`~mobilenetv3.data.collate` drops the ``None`` from the batch. Substituting
another image was rejected: it would silently change which samples an epoch sees.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset, get_worker_info

from .errors import CorruptImageWarning, DataError
from .transforms import EvalTransform, TrainTransform

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")
ON_CORRUPT = ("fail", "skip")
_EXIF_ORIENTATION = 0x0112
_SKIP_SLOTS = 64  # one counter per DataLoader worker (slot 0: the main process), so no two processes share one
_SKIP_WARNINGS: dict = {}  # warnings' registry for the skip warnings ("default" action: each message once)


def _to_mode(im: Image.Image, channels: int) -> Image.Image:
    mode = "L" if channels == 1 else "RGB"
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        # 16-bit and float images: "L"/"RGB" conversion would clip them to 255, so scale them down instead.
        a = np.asarray(im, dtype=np.float64)
        if a.size and a.max() > 255:
            a = a / 257.0
        im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    elif im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # Pillow asks for this route for palette images with transparency
    return im if im.mode == mode else im.convert(mode)


def decode_image(path: str | os.PathLike, channels: int = 3) -> torch.Tensor:
    """Decode an image file to a ``uint8`` tensor ``channels x H x W`` (grey for 1 channel, RGB for 3).

    EXIF orientation is applied, so a phone photo comes out the way it is shown; an alpha channel is dropped.
    Raises :class:`DataError` naming the path if the file cannot be read or decoded.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    try:
        with Image.open(path) as im:
            if im.getexif().get(_EXIF_ORIENTATION, 1) != 1:
                im = ImageOps.exif_transpose(im)
            array = np.array(_to_mode(im, channels), dtype=np.uint8)  # forces the full decode inside the try
    except FileNotFoundError:
        raise DataError(f"image not found: {path}") from None
    except Exception as e:  # Pillow reports damaged files as OSError, SyntaxError, struct.error, ...
        if _is_empty(path):  # Pillow only says "cannot identify image file"
            raise DataError(f"cannot read image {path}: empty file (0 bytes)") from None
        raise DataError(f"cannot read image {path}: {type(e).__name__}: {e}") from e
    tensor = torch.from_numpy(array)
    return tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


def _is_empty(path: str | os.PathLike) -> bool:
    try:
        return os.path.getsize(path) == 0
    except OSError:
        return False


def _warn_skipped(error: DataError) -> None:
    """A :class:`CorruptImageWarning` for a skipped image, shown as one line: attributed to the image file (line
    0), not to a line of code, so the warning machinery prints no source line of torch's DataLoader under it. One
    registry for all of them keeps Python's default "once per message" display."""
    warnings.warn_explicit(f"skipping unreadable image: {error}", CorruptImageWarning, filename="mnv3 data",
                           lineno=0, module=__name__, registry=_SKIP_WARNINGS)


def load_image(path: str | os.PathLike, resolution: int, channels: int, mean: tuple[float, ...],
               std: tuple[float, ...], crop_fraction: float | None = None) -> torch.Tensor:
    """One image file prepared as for evaluation: a normalised float tensor ``channels x resolution x resolution``.

    For prediction; pass the run's resolution, channels, mean and std (``ds.mean``/``ds.std`` at training time).
    """
    transform = EvalTransform(resolution=resolution, mean=mean, std=std, channels=channels,
                              **({} if crop_fraction is None else {"crop_fraction": crop_fraction}))
    return transform(decode_image(path, channels))


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def find_classes(directory: str | os.PathLike) -> list[str]:
    """Sorted names of the subfolders (hidden ones left out); :class:`DataError` if there are none."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"image folder not found: {directory}")
    classes = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DataError(f"{directory} has no class folders; expected {directory}/<class name>/<images>")
    return classes


def list_images(directory: str | os.PathLike, classes: list[str]) -> tuple[list[str], list[int]]:
    """Image paths (relative to ``directory``, sorted, searched recursively) and their class indices.

    Folders not in ``classes`` are an error (their images would get no label, or the wrong one); so is a class
    folder with no images. A class in ``classes`` without a folder is allowed (a validation subset may lack it).
    """
    directory = Path(directory)
    index = {name: i for i, name in enumerate(classes)}
    present = find_classes(directory)
    unknown = [name for name in present if name not in index]
    if unknown:
        raise DataError(f"{directory} has class folder(s) {unknown[:5]} not among the {len(classes)} training "
                        f"classes; the splits must share their class folders")
    paths: list[str] = []
    labels: list[int] = []
    for name in present:
        start = len(paths)
        for dirpath, dirnames, filenames in os.walk(directory / name, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel = os.path.relpath(dirpath, directory)
            paths.extend(os.path.join(rel, f) for f in sorted(filenames) if _is_image(f))
        if len(paths) == start:
            raise DataError(f"class folder {directory / name} holds no images (looked for files ending in "
                            f"{', '.join(IMAGE_EXTENSIONS)})")
        labels.extend([index[name]] * (len(paths) - start))
    return paths, labels


class ImageFolder(Dataset):
    """The images of one split folder; items are ``(transform(image), label)``, or ``None`` for a skipped file.

    ``classes`` fixes the label order (default: this folder's own sorted class folders); pass the training split's
    so that a validation folder missing a class still labels the rest the same way.
    """

    def __init__(self, directory: str | os.PathLike, *, transform: TrainTransform | EvalTransform,
                 classes: list[str] | None = None, on_corrupt: str = "fail") -> None:
        if on_corrupt not in ON_CORRUPT:
            raise ValueError(f"on_corrupt must be one of {ON_CORRUPT}, got {on_corrupt!r}")
        self.root = Path(directory)
        self.classes = list(classes) if classes is not None else find_classes(self.root)
        paths, labels = list_images(self.root, self.classes)
        # One byte buffer plus offsets rather than a list of a million str objects: DataLoader workers forked from
        # this process would otherwise copy the list page by page as reference counts are touched.
        encoded = [os.fsencode(p) for p in paths]
        self._offsets = np.cumsum([0] + [len(e) for e in encoded], dtype=np.int64)
        self._names = np.frombuffer(b"".join(encoded), dtype=np.uint8) if encoded else np.zeros(0, np.uint8)
        self.targets = np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.channels = transform.channels
        self.mean = transform.mean
        self.std = transform.std
        self.on_corrupt = on_corrupt
        # In shared memory so that skips counted inside DataLoader workers are seen by the main process.
        self._skips = torch.zeros(_SKIP_SLOTS, dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.targets)

    def path(self, index: int) -> Path:
        return self.root / os.fsdecode(self._names[self._offsets[index]:self._offsets[index + 1]].tobytes())

    @property
    def num_skipped(self) -> int:
        """How many times an unreadable image was skipped (a file skipped in two epochs counts twice)."""
        return int(self._skips.sum())

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        path = self.path(index)
        try:
            image = decode_image(path, self.channels)
        except DataError as e:
            if self.on_corrupt == "fail":
                raise
            worker = get_worker_info()
            self._skips[0 if worker is None else 1 + worker.id % (_SKIP_SLOTS - 1)] += 1
            _warn_skipped(e)
            return None
        return self.transform(image), int(self.targets[index])

    def verify(self) -> list[tuple[Path, str]]:
        """Decode every image now; the unreadable ones with their errors (for a data check before a long run)."""
        bad = []
        for i in range(len(self)):
            try:
                decode_image(self.path(i), self.channels)
            except DataError as e:
                bad.append((self.path(i), str(e)))
        return bad
