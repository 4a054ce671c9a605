import numpy as np
import pytest
import torch
from PIL import Image

# Two cores are shared by everything on the CI machine; one thread keeps tests predictable.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def make_colour_folder(tmp_path_factory):
    """A maker of ImageNet-layout folders (``train/<class>/*.png``, ``val/<class>/*.png``) of 20x20 RGB images:
    one base colour per class plus Gaussian noise of ``noise`` grey levels, seeded."""

    def make(colours: dict[str, tuple[int, int, int]], train: int, val: int, noise: float) -> str:
        root = tmp_path_factory.mktemp("folder")
        rng = np.random.default_rng(0)
        for split, count in (("train", train), ("val", val)):
            for name, colour in colours.items():
                (root / split / name).mkdir(parents=True)
                for i in range(count):
                    a = np.clip(np.array(colour) + rng.normal(0, noise, (20, 20, 3)), 0, 255).astype(np.uint8)
                    Image.fromarray(a).save(root / split / name / f"{i}.png")
        return str(root)

    return make


@pytest.fixture(scope="session")
def data_run(make_colour_folder, tmp_path_factory) -> str:
    """A finished one-epoch training run of a tiny network on three noisy colours, with 12 images held out and the
    Fashion-MNIST recipe's BatchNorm momentum: the data run of the search tests (read, never written)."""
    from mobilenetv3.spec import ArchSpec, BlockSpec
    from mobilenetv3.train.loop import train

    folder = make_colour_folder({"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}, 24, 2, 60)
    root = tmp_path_factory.mktemp("data-run")
    ArchSpec(name="tiny", blocks=(BlockSpec(3, 32, 16, stride=2),), stem_channels=16, last_channels=32,
             head_channels=32, resolution=16).save(root / "spec.json")
    train(out=str(root / "run"), spec=str(root / "spec.json"), data=folder, holdout=12, epochs=1, batch_size=16,
          resolution=16, lr=0.05, bn_momentum=0.1, quiet=True, workers=0, eval_batch_size=64, tensorboard=False)
    return str(root / "run")
