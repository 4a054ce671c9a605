"""Data package: IDX reading, Fashion-MNIST lookup, image folders, corrupt files and the torch-only transforms."""

from __future__ import annotations

import gzip
import math
import shutil
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mobilenetv3.data import (
    CorruptImageWarning,
    DataError,
    EvalTransform,
    TrainTransform,
    collate,
    decode_image,
    holdout_indices,
    load_dataset,
    load_image,
    read_idx,
)
from mobilenetv3.data import fashion_mnist as fm
from mobilenetv3.data.transforms import random_erase_box, random_resized_crop_box, resize

torch.set_num_threads(1)

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C,
             np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


# ---------------------------------------------------------------------------------------------------- fixtures


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding written independently of the reader: magic 00 00 type ndim, big-endian dims, big-endian data."""
    big = array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array
    header = bytes([0, 0, IDX_CODES[big.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + big.tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    data = idx_bytes(array)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def make_fmnist(folder: Path, n_train: int = 12, n_test: int = 6, gz: bool = False, seed: int = 0) -> Path:
    """A fake Fashion-MNIST: random 28x28 images, labels i % 10; sizes tell copies apart."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ext = ".gz" if gz else ""
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = fm.FILES[split]
        write_idx(folder / (images + ext), rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / (labels + ext), (np.arange(n) % 10).astype(np.uint8))
    return folder


@pytest.fixture
def no_default_data(monkeypatch, tmp_path):
    """Neither $MNV3_DATA nor the Debian folder: only what a test sets up is found."""
    monkeypatch.delenv(fm.ENV_VAR, raising=False)
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "no-debian")


def save_image(path: Path, size=(12, 10), mode="RGB", fmt=None, seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1}[mode]
    a = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(a[..., 0] if channels == 1 else a, mode).save(path, format=fmt)
    return path


def make_folder(root: Path) -> Path:
    """ROOT/train/{cat,dog}, ROOT/val/{cat,dog}: PNG and JPEG, RGB and grey, assorted sizes."""
    for split, n in (("train", 3), ("val", 2)):
        for c, cls in enumerate(("dog", "cat")):
            for i in range(n):
                ext = ".png" if i % 2 else ".JPG"
                save_image(root / split / cls / f"{i}{ext}", size=(12 + i, 9 + c), mode="L" if i == 2 else "RGB",
                           fmt="JPEG" if ext == ".JPG" else None, seed=i + 10 * c)
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    return root


# ---------------------------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, ">i2", ">i4", ">f4", ">f8"])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, dtype, gz):
    a = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype) if dtype != np.uint8 else \
        np.arange(30, dtype=np.uint8).reshape(2, 3, 5)
    out = read_idx(write_idx(tmp_path / ("x.idx" + (".gz" if gz else "")), a))
    assert out.shape == (2, 3, 5) and out.dtype.isnative
    np.testing.assert_array_equal(out, a)


def test_idx_magic_bytes_by_hand(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x03\x07\x00\x09")
    np.testing.assert_array_equal(read_idx(path), [7, 0, 9])


def test_idx_errors_name_the_file(tmp_path):
    good = idx_bytes(np.zeros((4, 28, 28), np.uint8))
    cases = {
        "truncated": (good[:-1], "truncated"),
        "short-header": (good[:10], "truncated"),
        "tiny": (b"\x00\x00", "truncated"),
        "bad-magic": (b"\x01\x02" + good[2:], "magic"),
        "bad-type": (good[:2] + b"\x07" + good[3:], "magic"),
        "extra": (good + b"\x00", "more than its header"),
    }
    for name, (data, words) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=words) as info:
            read_idx(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "missing")
    (tmp_path / "cut.gz").write_bytes(gzip.compress(good)[:-20])  # gzip stream cut short
    with pytest.raises(DataError, match="cut.gz"):
        read_idx(tmp_path / "cut.gz")
    (tmp_path / "plain.gz").write_bytes(good)  # named .gz but not compressed
    with pytest.raises(DataError, match="plain.gz"):
        read_idx(tmp_path / "plain.gz")


# ---------------------------------------------------------------------------------------------------- Fashion-MNIST


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_from_data_dir(tmp_path, no_default_data, gz):
    make_fmnist(tmp_path / "d", gz=gz)
    ds = load_dataset("fashion-mnist", "train", resolution=32, train=False, data_dir=tmp_path / "d")
    assert len(ds) == 12 and ds.classes == list(fm.CLASSES) and len(ds.classes) == 10
    assert ds.channels == 1 and ds.mean == fm.MEAN and ds.std == fm.STD
    x, y = ds[3]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and y == 3
    test = load_dataset("Fashion-MNIST", "val", resolution=32, train=False, data_dir=tmp_path / "d", channels=3)
    x, _ = test[0]
    assert len(test) == 6 and x.shape == (3, 32, 32) and test.mean == fm.MEAN * 3
    torch.testing.assert_close(x[0], x[2])  # the grey image repeated


def test_fashion_mnist_lookup_order(tmp_path, monkeypatch):
    explicit, env, debian = make_fmnist(tmp_path / "a", 11), tmp_path / "env", make_fmnist(tmp_path / "deb", 13)
    make_fmnist(env / "fashion-mnist", 12)
    monkeypatch.setattr(fm, "DEBIAN_DIR", debian)
    monkeypatch.setenv(fm.ENV_VAR, str(env))
    size = lambda **kw: len(load_dataset("fashion-mnist", "train", resolution=8, train=False, **kw))  # noqa: E731
    assert size(data_dir=explicit) == 11
    assert size() == 12  # $MNV3_DATA/fashion-mnist before Debian
    make_fmnist(env, 14)
    assert size() == 14  # $MNV3_DATA itself before its fashion-mnist/ subfolder
    monkeypatch.setenv(fm.ENV_VAR, str(tmp_path / "nothing-here"))
    assert size() == 13  # an $MNV3_DATA without the files falls through to Debian
    monkeypatch.delenv(fm.ENV_VAR)
    assert size() == 13
    with pytest.raises(DataError) as info:  # an explicit folder is never silently replaced by another copy
        size(data_dir=tmp_path / "empty")
    assert str(tmp_path / "empty") in str(info.value)


def test_fashion_mnist_torchvision_layout(tmp_path, no_default_data):
    make_fmnist(tmp_path / "FashionMNIST" / "raw", 7)
    assert len(load_dataset("fashion-mnist", "train", resolution=8, train=False, data_dir=tmp_path)) == 7


def test_fashion_mnist_not_found_says_where_and_how(tmp_path, no_default_data):
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", "train", resolution=8, train=False)
    msg = str(info.value)
    assert str(tmp_path / "no-debian") in msg and "MNV3_DATA is not set" in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "train-images-idx3-ubyte.gz" in msg
    assert "--data-dir" in msg
    with pytest.raises(DataError, match="data_dir"):
        load_dataset("fashion-mnist", "train", resolution=8, train=False, data_dir=tmp_path / "nope")


def test_fashion_mnist_missing_and_inconsistent_files(tmp_path, no_default_data):
    d = make_fmnist(tmp_path / "d")
    (d / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="lacks t10k-labels-idx1-ubyte"):
        load_dataset("fashion-mnist", "test", resolution=8, train=False, data_dir=d)
    assert len(load_dataset("fashion-mnist", "train", resolution=8, train=False, data_dir=d)) == 12
    write_idx(d / "train-labels-idx1-ubyte", np.zeros(11, np.uint8))
    with pytest.raises(DataError, match="11 labels but .*12 images") as info:
        load_dataset("fashion-mnist", "train", resolution=8, train=False, data_dir=d)
    assert "train-labels-idx1-ubyte" in str(info.value)
    write_idx(d / "train-labels-idx1-ubyte", np.full(12, 10, np.uint8))
    with pytest.raises(DataError, match="out of range"):
        load_dataset("fashion-mnist", "train", resolution=8, train=False, data_dir=d)
    write_idx(d / "train-images-idx3-ubyte", np.zeros((12, 28, 28), ">i4"))
    with pytest.raises(DataError, match="unsigned bytes"):
        load_dataset("fashion-mnist", "train", resolution=8, train=False, data_dir=d)
    with pytest.raises(ValueError, match="split"):
        load_dataset("fashion-mnist", "validation", resolution=8, train=False, data_dir=d)


@pytest.mark.skipif(not (fm.DEBIAN_DIR / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist():
    train_x, train_y = fm.read_fashion_mnist("train", fm.DEBIAN_DIR)
    test_x, test_y = fm.read_fashion_mnist("test", fm.DEBIAN_DIR)
    assert train_x.shape == (60000, 28, 28) and test_x.shape == (10000, 28, 28)
    assert train_x.dtype == torch.uint8 and train_y.shape == (60000,) and test_y.shape == (10000,)
    assert set(train_y.tolist()) == set(range(10)) and set(test_y.tolist()) == set(range(10))
    assert torch.bincount(train_y).tolist() == [6000] * 10  # the published class balance
    pixels = train_x.double() / 255
    assert pixels.mean().item() == pytest.approx(fm.MEAN[0], abs=1e-4)
    assert pixels.std().item() == pytest.approx(fm.STD[0], abs=1e-4)


# ---------------------------------------------------------------------------------------------------- image folders


def test_image_folder(tmp_path):
    root = make_folder(tmp_path / "imgs")
    ds = load_dataset(root, "train", resolution=16, train=True)
    assert ds.classes == ["cat", "dog"] and len(ds) == 6 and ds.channels == 3  # notes.txt is not an image
    assert ds.mean == (0.485, 0.456, 0.406)
    assert sorted(int(ds.targets[i]) for i in range(6)) == [0, 0, 0, 1, 1, 1]
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (3, 16, 16) and ds.classes[y] == ds.path(i).parent.name
    val = load_dataset(root, "test", resolution=16, train=False, channels=1)  # "test" falls back to val/
    assert len(val) == 4 and val[0][0].shape == (1, 16, 16) and val.root == root / "val"
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate)))
    assert batch[0].shape == (4, 3, 16, 16) and batch[1].dtype == torch.int64


def test_image_folder_relative_name_under_data_dir(tmp_path, monkeypatch):
    make_folder(tmp_path / "mini")
    monkeypatch.chdir(tmp_path / "mini")  # so "mini" is not a folder in the working directory
    assert len(load_dataset("mini", "val", resolution=8, train=False, data_dir=tmp_path)) == 4
    with pytest.raises(DataError, match="no dataset named 'nothing'"):
        load_dataset("nothing", "val", resolution=8, train=False, data_dir=tmp_path)
    with pytest.raises(DataError, match="no 'val' split"):
        load_dataset(tmp_path / "mini" / "train", "val", resolution=8, train=False)


def test_image_folder_class_errors(tmp_path):
    root = make_folder(tmp_path / "imgs")
    (root / "val" / "cat").rename(root / "val" / "zebra")
    with pytest.raises(DataError, match="zebra"):
        load_dataset(root, "val", resolution=8, train=False)
    shutil.rmtree(root / "val" / "zebra")
    val = load_dataset(root, "val", resolution=8, train=False)  # a class missing from val keeps train's labels
    assert val.classes == ["cat", "dog"] and set(val.targets.tolist()) == {1}
    (root / "train" / "emu").mkdir()
    (root / "train" / "emu" / "readme.txt").write_text("no images")
    with pytest.raises(DataError, match="holds no images") as info:
        load_dataset(root, "train", resolution=8, train=False)
    assert str(root / "train" / "emu") in str(info.value)
    (tmp_path / "flat" / "train").mkdir(parents=True)
    save_image(tmp_path / "flat" / "train" / "a.png")
    with pytest.raises(DataError, match="no class folders"):
        load_dataset(tmp_path / "flat", "train", resolution=8, train=False)


@pytest.fixture
def corrupt_folder(tmp_path):
    root = make_folder(tmp_path / "imgs")
    bad = root / "train" / "cat" / "broken.jpg"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    good = root / "train" / "dog" / "0.JPG"
    (root / "train" / "dog" / "cut.jpg").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    return root


def test_corrupt_image_fails_with_path(corrupt_folder):
    ds = load_dataset(corrupt_folder, "train", resolution=8, train=False)
    bad = [i for i in range(len(ds)) if ds.path(i).name in ("broken.jpg", "cut.jpg")]
    assert len(ds) == 8 and len(bad) == 2
    for i in bad:
        with pytest.raises(DataError, match="cannot read image") as info:
            ds[i]
        assert str(ds.path(i)) in str(info.value)
    assert sorted(p.name for p, _ in ds.verify()) == ["broken.jpg", "cut.jpg"]
    # Inside a worker process the error reaches the main process with its type and the path.
    loader = DataLoader(ds, batch_size=8, num_workers=1, collate_fn=collate)
    with pytest.raises(DataError, match="broken.jpg"):
        next(iter(loader))


@pytest.mark.parametrize("num_workers", [0, 1])
def test_corrupt_image_skipped_and_counted(corrupt_folder, num_workers):
    ds = load_dataset(corrupt_folder, "train", resolution=8, train=True, on_corrupt="skip")
    loader = DataLoader(ds, batch_size=3, num_workers=num_workers, collate_fn=collate)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(loader)
    labels = torch.cat([y for _, y in batches])
    assert len(labels) == 6 and sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]
    assert all(x.shape[1:] == (3, 8, 8) for x, _ in batches)
    assert ds.num_skipped == 2
    if num_workers == 0:  # a worker's warnings go to its own stderr
        messages = [str(w.message) for w in caught if issubclass(w.category, CorruptImageWarning)]
        assert len(messages) == 2 and any("broken.jpg" in m for m in messages)
    assert collate([None, None]) is None


def test_empty_image_file_is_named_empty(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"cannot read image .*empty\.png: empty file \(0 bytes\)") as info:
        decode_image(empty)
    assert "cannot identify" not in str(info.value)


def test_skip_warning_is_one_line_without_source(corrupt_folder, tmp_path):
    """What a user sees on stderr for a skipped image: the warning line only, no line of the code that loaded it
    (a script file, whose lines Python could show)."""
    script = tmp_path / "load.py"
    script.write_text(
        "from mobilenetv3.data import load_dataset\n"
        f"ds = load_dataset({str(corrupt_folder)!r}, 'train', resolution=8, train=False, on_corrupt='skip')\n"
        "items = [ds[i] for i in range(len(ds))]\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and all("CorruptImageWarning: skipping unreadable image: cannot read image" in line
                                   for line in lines), result.stderr
    assert any("broken.jpg" in line for line in lines) and any("cut.jpg" in line for line in lines)


def test_decode_modes(tmp_path):
    rgba = Image.fromarray(np.full((5, 7, 4), 200, np.uint8), "RGBA")
    rgba.save(tmp_path / "rgba.png")
    rgba.convert("P").save(tmp_path / "p.gif")
    Image.fromarray(np.full((5, 7), 255, np.uint8)).convert("1").save(tmp_path / "bw.png")
    Image.fromarray(np.full((5, 7), 65535, np.uint16)).save(tmp_path / "deep.png")
    for name in ("rgba.png", "p.gif", "bw.png", "deep.png"):
        for channels in (1, 3):
            t = decode_image(tmp_path / name, channels)
            assert t.shape == (channels, 5, 7) and t.dtype == torch.uint8, name
    assert decode_image(tmp_path / "deep.png", 1).min() == 255  # 16-bit white scaled, not clipped or wrapped
    assert decode_image(tmp_path / "rgba.png", 3).eq(200).all()


def test_exif_orientation_applied(tmp_path):
    im = Image.fromarray(np.zeros((4, 10, 3), np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    im.save(tmp_path / "rot.jpg", exif=exif)
    assert decode_image(tmp_path / "rot.jpg").shape == (3, 10, 4)


def test_load_image(tmp_path):
    path = save_image(tmp_path / "a.png", size=(40, 30))
    x = load_image(path, 24, 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert x.shape == (3, 24, 24)
    assert load_image(path, 28, 1, fm.MEAN, fm.STD).shape == (1, 28, 28)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(50))
    with pytest.raises(DataError, match="bad.png"):
        load_image(tmp_path / "bad.png", 24, 3, (0.5,), (0.5,))
    with pytest.raises(DataError, match="not found"):
        load_image(tmp_path / "gone.png", 24, 3, (0.5,), (0.5,))


# ---------------------------------------------------------------------------------------------------- transforms


def gray(h=28, w=28, seed=0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (1, h, w), dtype=np.uint8))


@pytest.mark.parametrize("resolution", [32, 64, 96, 224, 65])
def test_transform_shapes(resolution):
    for img in (gray(), gray(37, 50), torch.randint(0, 256, (3, 50, 37), dtype=torch.uint8)):
        for channels in (1, 3):
            for t in (TrainTransform(resolution, (0.5,), (0.25,), channels, color_jitter=0.4),
                      EvalTransform(resolution, (0.5,), (0.25,), channels)):
                out = t(img)
                assert out.shape == (channels, resolution, resolution) and out.dtype == torch.float32
                assert torch.isfinite(out).all()


def test_eval_transform_is_deterministic_and_ignores_rng():
    t = EvalTransform(64, fm.MEAN, fm.STD, 1)
    torch.manual_seed(0)
    a = t(gray())
    torch.manual_seed(1)
    assert torch.equal(a, t(gray()))


def test_train_transform_reproducible_under_seed():
    t = TrainTransform(40, fm.MEAN, fm.STD, 3, scale=(0.25, 1.0), color_jitter=(0.4, 0.4, 0.4))
    img = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(123)
    first = [t(img) for _ in range(5)]
    torch.manual_seed(123)
    assert all(torch.equal(a, t(img)) for a in first)
    assert not all(torch.equal(first[0], b) for b in first[1:])  # it is random
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(t(img, g1), t(img, g2))


def test_loader_reproducible_with_workers(tmp_path, no_default_data):
    ds = load_dataset("fashion-mnist", "train", resolution=16, train=True, data_dir=make_fmnist(tmp_path / "d"))

    def run(workers: int) -> list[torch.Tensor]:
        torch.manual_seed(42)  # the sampler's shuffle and the workers' base seed both come from here
        loader = DataLoader(ds, batch_size=4, shuffle=True, num_workers=workers, collate_fn=collate)
        return [x for x, _ in loader]

    for workers in (0, 1):
        a, b = run(workers), run(workers)
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_normalisation_on_known_input():
    for v in (0, 77, 255):
        img = torch.full((3, 20, 30), v, dtype=torch.uint8)
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        want = torch.tensor([(v / 255 - m) / s for m, s in zip(mean, std, strict=True)]).view(3, 1, 1).expand(3, 8, 8)
        torch.testing.assert_close(EvalTransform(8, mean, std, 3)(img), want)
        torch.testing.assert_close(TrainTransform(8, mean, std, 3)(img), want)
    # Fashion-MNIST's own statistics give zero mean and unit deviation on a matching input.
    img = torch.tensor([[[0.2860 - 0.3530, 0.2860 + 0.3530]]]).expand(1, 2, 2)
    out = EvalTransform(2, fm.MEAN, fm.STD, 1, crop_fraction=1.0)(img)
    torch.testing.assert_close(out, torch.tensor([[[-1.0, 1.0], [-1.0, 1.0]]]))


def test_eval_crop_matches_hand_computed_window():
    img = torch.arange(10 * 20, dtype=torch.uint8).view(1, 10, 20)
    # Shorter side 10 = floor(8 / 0.8): no resize; the central 8x8 window starts at row 1, column 6.
    out = EvalTransform(8, (0.0,), (1.0,), 1, crop_fraction=0.8)(img)
    torch.testing.assert_close(out, img[:, 1:9, 6:14].float() / 255)
    # Odd margins: 7x7 from 10x10 rounds the offset (1.5) to 2 like torchvision.
    sq = torch.arange(100, dtype=torch.uint8).view(1, 10, 10)
    out = EvalTransform(7, (0.0,), (1.0,), 1, crop_fraction=0.7)(sq)
    torch.testing.assert_close(out, sq[:, 2:9, 2:9].float() / 255)


@pytest.mark.parametrize("size", [(64, 64), (11, 9), (40, 17)])
def test_resize_matches_pillow_bilinear(size):
    a = np.random.default_rng(1).integers(0, 256, (28, 28), dtype=np.uint8)
    ours = resize(torch.from_numpy(a)[None].float() / 255, size)[0] * 255
    pil = np.asarray(Image.fromarray(a).resize(size[::-1], Image.Resampling.BILINEAR), dtype=np.float32)
    assert (ours - torch.from_numpy(pil)).abs().max() <= 1.5  # Pillow rounds to 8 bits at each pass


def test_train_transform_without_randomness_is_eval():
    img = gray(30, 30)
    plain = TrainTransform(17, fm.MEAN, fm.STD, 1, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0)
    ref = EvalTransform(17, fm.MEAN, fm.STD, 1, crop_fraction=1.0)
    torch.testing.assert_close(plain(img), ref(img))
    flipped = TrainTransform(17, fm.MEAN, fm.STD, 1, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=1.0)
    torch.testing.assert_close(flipped(img), ref(img).flip(-1))


def test_random_resized_crop_box_ranges():
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        top, left, h, w = random_resized_crop_box(28, 28, (0.25, 1.0), (3 / 4, 4 / 3), g)
        assert 0 <= top and top + h <= 28 and 0 <= left and left + w <= 28
        assert 0.25 * 784 * 0.85 <= h * w <= 784
        assert 3 / 4 * 0.85 <= w / h <= 4 / 3 / 0.85
    # No try can fit a 1:3 crop of most of a square; the fallback keeps the ratio within range.
    top, left, h, w = random_resized_crop_box(10, 100, (0.9, 1.0), (1.0, 1.0), g)
    assert (h, w) == (10, 10) and left == 45


def test_random_erase_box_ranges():
    g = torch.Generator().manual_seed(0)
    areas, ratios = [], []
    for _ in range(500):
        top, left, h, w = random_erase_box(80, 80, (0.02, 0.4), (0.3, 1 / 0.3), g)
        assert 0 <= top and top + h <= 80 and 0 <= left and left + w <= 80
        areas.append(h * w / 6400)
        ratios.append(h / w)
    # Rounding to whole pixels moves the area and ratio a little past the drawn values.
    assert 0.02 * 0.9 <= min(areas) and max(areas) <= 0.4 * 1.1 and 0.3 * 0.9 <= min(ratios) <= max(ratios) <= 3.7
    assert 0.18 <= np.mean(areas) <= 0.24  # uniform on [0.02, 0.4]: mean 0.21
    assert np.mean(np.array(ratios) > 1) == pytest.approx(0.5, abs=0.08)  # log-uniform: tall as often as wide
    # Nothing of 90-100% of the area with ratio 10 fits in a square: no box, not an error.
    assert random_erase_box(20, 20, (0.9, 1.0), (10.0, 10.0), g) is None


def test_random_erase_replaces_one_rectangle_with_noise():
    img = torch.full((1, 40, 40), 128, dtype=torch.uint8)
    plain = TrainTransform(40, (0.0,), (1.0,), 3, scale=(1, 1), ratio=(1, 1), hflip=0)
    erase = TrainTransform(40, (0.0,), (1.0,), 3, scale=(1, 1), ratio=(1, 1), hflip=0, random_erase=1.0)
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        out = erase(img, g)
        changed = (out != plain(img)).any(0)  # grey noise: the same in the three repeated channels
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        box = changed[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.all() and changed.sum() == box.numel()  # one solid rectangle
        assert 0.02 * 0.9 <= box.numel() / 1600 <= 0.4 * 1.1
        noise = out[0][changed]
        assert 0 <= noise.min() and noise.max() <= 1 and noise.std() > 0.2  # uniform in [0, 1], not a constant
        torch.testing.assert_close(out[0], out[2])
    never = TrainTransform(40, (0.0,), (1.0,), 3, scale=(1, 1), ratio=(1, 1), hflip=0, random_erase=0.0)
    torch.testing.assert_close(never(img, g), plain(img))
    with pytest.raises(ValueError, match="random_erase is a probability"):
        TrainTransform(40, (0.0,), (1.0,), 1, random_erase=1.5)


def test_colour_jitter():
    img = torch.full((3, 8, 8), 100, dtype=torch.uint8)
    img[0] = 200
    plain = TrainTransform(8, (0.0,), (1.0,), 3, scale=(1, 1), ratio=(1, 1), hflip=0)
    jit = TrainTransform(8, (0.0,), (1.0,), 3, scale=(1, 1), ratio=(1, 1), hflip=0, color_jitter=(0.5, 0, 0))
    torch.manual_seed(0)
    a = jit(img)
    ratio = a / plain(img)
    assert torch.allclose(ratio, ratio.flatten()[0]) and not math.isclose(ratio.flatten()[0].item(), 1.0)
    sat = TrainTransform(8, (0.0,), (1.0,), 1, scale=(1, 1), ratio=(1, 1), hflip=0, color_jitter=(0, 0, 0.9))
    torch.testing.assert_close(sat(gray(8, 8)), EvalTransform(8, (0.0,), (1.0,), 1, crop_fraction=1)(gray(8, 8)))


def test_holdout_indices_split_the_training_set_the_same_way_every_time():
    kept, held = holdout_indices(100, 30)
    assert len(held) == 30 and len(kept) == 70 and sorted(kept + held) == list(range(100))
    assert held == sorted(held) and kept == sorted(kept)
    assert holdout_indices(100, 30) == (kept, held)  # a fixed choice, whatever the run's seed
    assert held != list(range(30)) and held != list(range(70, 100))  # random, not a slice
    for bad in (0, 100, 150):
        with pytest.raises(ValueError, match="holdout must be between 1 and 99"):
            holdout_indices(100, bad)


def test_holdout_splits_fashion_mnist_train(tmp_path, no_default_data):
    d = make_fmnist(tmp_path / "d", n_train=40, n_test=6)
    options = dict(resolution=28, data_dir=d, crop_fraction=1.0)
    full = load_dataset("fashion-mnist", "train", train=False, **options)
    train = load_dataset("fashion-mnist", "train", train=False, holdout=10, **options)
    held = load_dataset("fashion-mnist", "holdout", train=False, holdout=10, **options)
    assert (len(full), len(train), len(held)) == (40, 30, 10)
    kept_idx, held_idx = holdout_indices(40, 10)
    for part, indices in ((train, kept_idx), (held, held_idx)):
        for i, j in enumerate(indices):
            torch.testing.assert_close(part[i][0], full[j][0])
            assert part[i][1] == full[j][1] == j % 10
        assert part.classes == full.classes and part.mean == full.mean and part.channels == 1
        assert part.transform.config() == full.transform.config() and part.num_skipped == 0
    # The training part keeps its augmentation; the test split is untouched by the holdout.
    augmented = load_dataset("fashion-mnist", "train", train=True, holdout=10, hflip=1.0, **options)
    assert augmented.transform.hflip == 1.0 and len(augmented) == 30
    assert len(load_dataset("fashion-mnist", "test", train=False, holdout=10, **options)) == 6
    with pytest.raises(ValueError, match="needs the number of held-out training images"):
        load_dataset("fashion-mnist", "holdout", train=False, **options)
    with pytest.raises(ValueError, match="the training split has 40 images"):
        load_dataset("fashion-mnist", "holdout", train=False, holdout=40, **options)
    with pytest.raises(ValueError, match="holdout must be >= 0"):
        load_dataset("fashion-mnist", "train", train=False, holdout=-1, **options)


def test_transform_options(tmp_path, no_default_data):
    d = make_fmnist(tmp_path / "d")
    ds = load_dataset("fashion-mnist", "train", resolution=8, train=True, data_dir=d)
    assert ds.transform.scale == fm.TRAIN_SCALE
    ds = load_dataset("fashion-mnist", "train", resolution=8, train=True, data_dir=d, scale=(0.08, 1), hflip=0,
                      random_erase=0.25, crop_fraction=0.5, mean=0.5, std=(0.5,))
    assert ds.transform.scale == (0.08, 1.0) and ds.transform.hflip == 0 and ds.mean == (0.5,)
    assert ds.transform.random_erase == 0.25
    ev = load_dataset("fashion-mnist", "test", resolution=8, train=False, data_dir=d, scale=(0.5, 1), crop_fraction=1)
    assert ev.transform.config() == {"resolution": 8, "mean": [0.286], "std": [0.353], "channels": 1,
                                     "crop_fraction": 1}
    with pytest.raises(TypeError, match="brightness"):
        load_dataset("fashion-mnist", "train", resolution=8, train=True, data_dir=d, brightness=0.2)
    with pytest.raises(ValueError, match="on_corrupt"):
        load_dataset("fashion-mnist", "train", resolution=8, train=True, data_dir=d, on_corrupt="ignore")
    with pytest.raises(ValueError, match="scale"):
        TrainTransform(8, (0.5,), (0.5,), 1, scale=(0.5, 2.0))
    with pytest.raises(ValueError, match="3 channels"):
        EvalTransform(8, (0.1, 0.2), (0.5,), 3)
