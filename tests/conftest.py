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
