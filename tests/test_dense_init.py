"""--init for segmentation and detection: a classifier's trunk as the dense model's backbone, loaded module by
module while the shapes agree (RF2's halved stage and the Y variant's halved channels stay random), the stem
adapted from grey to colour so that a grey image gives the classifier's own stem output, and clear errors when the
classifier does not fit the backbone."""

import pytest
import torch
from safetensors.torch import save_file

from mobilenetv3.model import build
from mobilenetv3.tasks.detection import DetectionTask
from mobilenetv3.tasks.segmentation import SegmentationTask
from mobilenetv3.train import train
from mobilenetv3.train.checkpoint import CheckpointError
from mobilenetv3.train.init_weights import adapt_stem, load_backbone_init
from mobilenetv3.zoo import mobilenet_v3_small
from seg_helpers import make_fashion_mnist

torch.set_num_threads(1)


def classifier_file(tmp_path, width=1.0, channels=1, name="cls.safetensors"):
    torch.manual_seed(1)
    model = build(mobilenet_v3_small(width).replace(in_channels=channels, num_classes=10, resolution=32)).eval()
    for m in model.modules():  # statistics that differ from a fresh BatchNorm's, so loading them shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model, path


def seg_model(width=1.0):
    task = SegmentationTask(11, in_channels=3)
    return task.build_model(task.adapt_spec(task.named_spec("lraspp_mobilenet_v3_small", width))).eval()


def test_the_stem_split_over_colour_channels_keeps_a_grey_images_output():
    w = torch.randn(16, 1, 3, 3)
    assert torch.equal(adapt_stem(w, 1), w) and adapt_stem(w, 4) is None
    three = adapt_stem(w, 3)
    assert three.shape == (16, 3, 3, 3) and torch.allclose(three.sum(1, keepdim=True), w)
    assert torch.allclose(adapt_stem(three, 1), w)


def test_a_grey_classifier_becomes_the_colour_lraspp_backbone(tmp_path):
    cls, path = classifier_file(tmp_path)
    model = seg_model()
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    info = load_backbone_init(model.backbone, path)
    src, got = cls.state_dict(), model.backbone.state_dict()
    total = len(model.backbone.features)
    assert info["weights"] == "model" and info["stem_adapted"] and info["total"] == total
    # RF2 (DeepLab's form) halves the last stage: everything before it loads, it and the rest stay as built
    assert 0 < info["modules"] < total and info["skipped"].startswith(f"features.{info['modules']} ")
    for k, v in got.items():
        i = int(k.split(".")[1])
        if k == "features.0.conv.weight":
            assert torch.allclose(v, src[k].repeat(1, 3, 1, 1) / 3)
        elif i < info["modules"]:
            assert torch.equal(v, src[k]), k
        else:
            assert torch.equal(v, backbone_before[k]), k
    assert all(torch.equal(v, head_before[k]) for k, v in model.head.state_dict().items())
    grey = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(model.backbone.features[:3](grey.repeat(1, 3, 1, 1)), cls.features[:3](grey))


def test_the_detection_backbone_loads_to_c5_and_the_y_variant_stops_where_channels_halve(tmp_path):
    _, path = classifier_file(tmp_path, channels=3)
    full, y = (DetectionTask(11, in_channels=3).build_model(
        DetectionTask(11, in_channels=3).adapt_spec(DetectionTask.named_spec(name, 1.0)))
        for name in ("ssdlite_mobilenet_v3_small", "ssdlite_mobilenet_v3_small_y"))
    a, b = load_backbone_init(full.backbone, path), load_backbone_init(y.backbone, path)
    assert not a["stem_adapted"] and a["modules"] == a["total"] and a["skipped"] is None
    assert b["modules"] < a["modules"] and b["skipped"] is not None


def test_a_classifier_of_another_width_is_refused_by_name(tmp_path):
    _, path = classifier_file(tmp_path, width=0.5)
    with pytest.raises(CheckpointError, match="does not fit this backbone.*first difference at features.0"):
        load_backbone_init(seg_model().backbone, path)
    with pytest.raises(FileNotFoundError, match="--init"):
        load_backbone_init(seg_model().backbone, tmp_path / "missing.safetensors")


def test_a_segmentation_run_starts_from_the_classifier(tmp_path):
    fmnist = str(make_fashion_mnist(tmp_path / "fmnist"))
    cls, path = classifier_file(tmp_path, width=0.35)
    common = dict(task="segmentation", model="lraspp_mobilenet_v3_small", width_mult=0.35,
                  data="scenes:size=32x64,train=8,val=4,items=2-4", data_dir=fmnist, epochs=1, batch_size=4,
                  resolution=32, lr=1e-12, weight_decay=0.0, quiet=True, tensorboard=False, eval_batch_size=4,
                  ema_decay=0.0)
    train(out=str(tmp_path / "run"), init=str(path), **common)
    from mobilenetv3.train.evaluate import load_run

    model, config = load_run(tmp_path / "run", "last", "model", torch.device("cpu"))
    assert config["train"]["init"] == str(path) and config["data"]["name"].startswith("scenes")
    # lr 1e-12 for two steps: the trained weights are the loaded ones (BatchNorm statistics did move)
    torch.testing.assert_close(dict(model.backbone.features[1].named_parameters()),
                               dict(cls.features[1].named_parameters()))
    with pytest.raises(ValueError, match="backbone's weights only: give --model or --spec"):
        train(out=str(tmp_path / "run2"), init=str(path), **{**common, "model": None})
