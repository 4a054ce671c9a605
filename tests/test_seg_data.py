"""Segmentation data: the composed scenes (deterministic, exact labels, disjoint splits), the Cityscapes loader
(label mapping, clear errors) and the joint image/mask transforms. Fixtures only: no real data is read."""

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenetv3.data import DataError, SegEvalTransform, SegTrainTransform, load_segmentation_dataset
from mobilenetv3.data import cityscapes as cs
from mobilenetv3.data.fashion_mnist import read_fashion_mnist
from mobilenetv3.data.scenes import (
    SCENE_CLASSES,
    FashionScenes,
    SceneConfig,
    background,
    garment,
    parse_scene_options,
    source_indices,
)
from seg_helpers import make_cityscapes, make_fashion_mnist

PLAIN = dict(mean=(0.0,), std=(1.0,))  # no normalisation: values stay comparable


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory):
    return make_fashion_mnist(tmp_path_factory.mktemp("fmnist"))


def scenes(fmnist, split="train", **config):
    return FashionScenes(split, transform=SegEvalTransform(**PLAIN), length=8, data_dir=fmnist,
                         config=SceneConfig(**{"size": (40, 72), **config}))


# -- scenes -----------------------------------------------------------------------------------------------------
def test_a_scene_depends_on_its_index_only(fmnist):
    a, b = scenes(fmnist), scenes(fmnist)
    later = [b[i] for i in (5, 3)]  # another instance, another order of access
    for (x, y), i in zip(later, (5, 3), strict=True):
        assert torch.equal(x, a[i][0]) and torch.equal(y, a[i][1])
    assert not torch.equal(a[3][0], a[4][0])
    assert not torch.equal(scenes(fmnist, seed=1)[3][0], a[3][0])  # the seed chooses the stream
    assert not torch.equal(scenes(fmnist, "val")[3][0], a[3][0])  # and each split has its own
    x, y = a[0]
    assert x.shape == (3, 40, 72) and y.shape == (40, 72) and y.dtype == torch.int64


def test_every_pixel_shows_what_its_label_says(fmnist):
    ds = scenes(fmnist, items=(3, 6))
    seen = set()
    for i in range(len(ds)):
        image, mask, placements = ds.scene(i)
        expected_image = background(ds.rng(i), ds.config.size)  # the first draw of the scene's generator
        expected_mask = torch.zeros_like(mask)
        for p in placements:  # painted in order: a later garment covers an earlier one
            item = garment(ds.images, p)
            win = (slice(p.top, p.top + p.height), slice(p.left, p.left + p.width))
            visible = item > ds.config.threshold
            expected_mask[win][visible] = p.label
            expected_image[(slice(None), *win)][:, visible] = (torch.tensor(p.colour).view(3, 1) * item[visible])
            assert p.label == int(ds.labels[p.source]) + 1  # label k + 1 is Fashion-MNIST class k
        assert torch.equal(mask, expected_mask)
        assert torch.allclose(image, expected_image, atol=1e-6)
        seen |= set(mask.unique().tolist())
    assert 0 in seen and len(seen) >= 4 and max(seen) <= 10
    assert SCENE_CLASSES[0] == "background" and len(SCENE_CLASSES) == 11


def test_the_splits_use_disjoint_garment_images(fmnist):
    train, val = source_indices(60, "train"), source_indices(60, "val")
    assert len(val) == 10 and len(train) == 50
    assert sorted(train.tolist() + val.tolist()) == list(range(60))
    test_images, _ = read_fashion_mnist("test", fmnist)
    assert torch.equal(scenes(fmnist, "test").images, test_images)
    train_images, _ = read_fashion_mnist("train", fmnist)
    assert torch.equal(scenes(fmnist, "val").images, train_images[val])


def test_scene_options_from_the_data_name(fmnist):
    assert parse_scene_options("size=64x128, train=200,items=2-5,scale=0.1-0.3,seed=3") == {
        "size": (64, 128), "train": 200, "items": (2, 5), "scale": (0.1, 0.3), "seed": 3}
    ds = load_segmentation_dataset("scenes:size=32x48,train=5,val=2", "val", train=False, data_dir=fmnist)
    assert len(ds) == 2 and ds[1][0].shape == (3, 32, 48) and ds.classes == list(SCENE_CLASSES)
    with pytest.raises(DataError, match="scene option 'colour=red'"):
        parse_scene_options("colour=red")
    with pytest.raises(DataError, match="bad value"):
        parse_scene_options("size=big")
    with pytest.raises(ValueError, match="scene size"):
        SceneConfig(size=(4, 64))
    with pytest.raises(DataError, match="unknown segmentation data"):
        load_segmentation_dataset("pascal", "train", train=True)


# -- Cityscapes -------------------------------------------------------------------------------------------------
def test_the_official_label_mapping():
    ids = torch.arange(34, dtype=torch.uint8)
    train = cs.to_train_ids(ids).tolist()
    assert [i for i, t in enumerate(train) if t != 255] == [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27,
                                                          28, 31, 32, 33]
    assert [t for t in train if t != 255] == list(range(19))
    assert cs.CLASSES[train[26]] == "car" and cs.CLASSES[train[24]] == "person" and cs.CLASSES[train[7]] == "road"
    assert cs.to_train_ids(torch.tensor([255, 0, 1, 15], dtype=torch.uint8)).tolist() == [255] * 4
    with pytest.raises(DataError, match=r"m.png: label id\(s\) \[34, 200\] are not Cityscapes label ids"):
        cs.to_train_ids(torch.tensor([7, 34, 200], dtype=torch.uint8), "m.png")


def test_a_miniature_cityscapes_loads(tmp_path):
    root = make_cityscapes(tmp_path / "cs")
    ds = load_segmentation_dataset(f"cityscapes:{root}", "val", train=False)
    assert len(ds) == 4 and ds.classes == list(cs.CLASSES)
    assert [p[0].parent.name for p in ds.pairs] == ["aachen", "aachen", "bremen", "bremen"]
    image, mask = ds[1]
    ids = np.array(Image.open(ds.pairs[1][1]))
    assert image.shape == (3, 8, 16) and mask.shape == (8, 16) and mask.dtype == torch.int64
    assert torch.equal(mask, cs.to_train_ids(torch.from_numpy(ids)).long())
    crop = load_segmentation_dataset(f"cityscapes:{root}", "train", train=True, crop=(6, 6), scale=(1.0, 1.0))
    assert crop[0][0].shape == (3, 6, 6) and crop[0][1].shape == (6, 6)


def test_cityscapes_errors_name_what_is_wrong(tmp_path):
    root = make_cityscapes(tmp_path / "cs")
    with pytest.raises(DataError, match="Cityscapes root not found"):
        load_segmentation_dataset(f"cityscapes:{tmp_path / 'nowhere'}", "val", train=False)
    with pytest.raises(DataError, match=r"folder not found: .*gtFine/test"):
        (root / "leftImg8bit" / "test").mkdir()
        load_segmentation_dataset(f"cityscapes:{root}", "test", train=False)
    with pytest.raises(DataError, match="needs its folder"):
        load_segmentation_dataset("cityscapes", "val", train=False)

    mask = root / "gtFine" / "val" / "bremen" / "bremen_000001_000019_gtFine_labelIds.png"
    mask.rename(mask.with_suffix(".bak"))
    with pytest.raises(DataError, match=r"1 Cityscapes image\(s\) without a mask, e.g. .*bremen_000001_000019_"
                                        r"leftImg8bit.png: expected .*bremen_000001_000019_gtFine_labelIds.png"):
        load_segmentation_dataset(f"cityscapes:{root}", "val", train=False)
    mask.with_suffix(".bak").rename(mask)

    ds = load_segmentation_dataset(f"cityscapes:{root}", "val", train=False)
    Image.fromarray(np.zeros((8, 15), np.uint8)).save(mask)
    with pytest.raises(DataError, match=r"labelIds.png is 15x8 \(WxH\) but its image .*leftImg8bit.png is 16x8"):
        ds[3]
    Image.fromarray(np.full((8, 16), 40, np.uint8)).save(mask)
    with pytest.raises(DataError, match=r"labelIds.png: label id\(s\) \[40\] are not Cityscapes label ids"):
        ds[3]


# -- joint transforms -------------------------------------------------------------------------------------------
def test_the_image_and_mask_move_together():
    mask = torch.arange(12 * 16).view(12, 16) % 7
    image = (mask.float() / 255).expand(3, -1, -1)  # each pixel's value is its class id / 255
    flip = SegTrainTransform(crop=(12, 16), scale=(1.0, 1.0), hflip=1.0, **PLAIN)
    x, y = flip(image, mask)
    assert torch.equal(y, mask.flip(-1)) and torch.equal((x[0] * 255).round().long(), y)
    crop = SegTrainTransform(crop=(5, 7), scale=(1.0, 1.0), hflip=0.0, **PLAIN)
    x, y = crop(image, mask, torch.Generator().manual_seed(0))
    assert y.shape == (5, 7) and torch.equal((x[0] * 255).round().long(), y)
    # scaled up: nearest interpolation only copies ids, never blends them into new ones
    x, y = SegTrainTransform(crop=(12, 16), scale=(1.7, 1.7), **PLAIN)(image, mask)
    assert set(y.unique().tolist()) <= set(range(7))


def test_padding_is_ignored_and_filled_with_the_mean():
    mask = torch.ones(8, 8, dtype=torch.uint8)
    image = torch.full((3, 8, 8), 0.5)
    t = SegTrainTransform(crop=(8, 8), scale=(0.5, 0.5), hflip=0.0, mean=(0.2,), std=(0.5,))
    x, y = t(image, mask)
    assert (y == 255).sum() == 64 - 16 and (y[y != 255] == 1).all()
    assert torch.allclose(x[:, y == 255], torch.zeros(1)) and torch.allclose(x[:, y == 1], torch.tensor(0.6))
    with pytest.raises(ValueError, match="differ in size"):
        t(image, mask[:4])
    with pytest.raises(ValueError, match="differ in size"):
        SegEvalTransform(**PLAIN)(image, mask[:4])


def test_grey_stats_average_the_colour_statistics():
    from mobilenetv3.data.transforms import grey_stats

    (mean,), (std,) = grey_stats((0.2, 0.4, 0.6), (0.1, 0.2, 0.3), 1)
    assert (mean, std) == pytest.approx((0.4, 0.2))
    assert grey_stats((0.2, 0.4, 0.6), (0.1, 0.2, 0.3), 3) == ((0.2, 0.4, 0.6), (0.1, 0.2, 0.3))
