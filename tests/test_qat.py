"""Quantisation-aware training: the fake-quantised model, a QAT run that converts to an int8 ONNX file reproducing
it, --init from a trained run, exact resume mid-QAT, export of a QAT run, and clear errors for bad input."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import Dataset

from markers import needs_onnx
from mobilenetv3 import ArchSpec, BlockSpec, build
from mobilenetv3.cli import main
from mobilenetv3.deploy import calibrate_bn_on_noise
from mobilenetv3.deploy.fake_quant import QATError, fake_quantize_weight, prepare_qat
from mobilenetv3.deploy.qat_convert import levels_per_channel
from mobilenetv3.latency import MissingExtraError
from mobilenetv3.runtime.cpu import u8s8_saturates
from mobilenetv3.train import CheckpointError, read_metrics, train
from mobilenetv3.train.loop import TIMING_KEYS


def tiny_spec(in_channels: int = 3, **changes) -> ArchSpec:
    """Every part the int8 graph has: ReLU and hard-swish blocks, SE, a residual, the last conv and the head."""
    spec = ArchSpec(name="tiny", blocks=(BlockSpec(3, 16, 16, se=True, stride=2),
                                         BlockSpec(3, 40, 24, act="hswish", stride=2),
                                         BlockSpec(3, 48, 24, se=True, act="hswish")),
                    stem_channels=8, last_channels=48, head_channels=64, in_channels=in_channels, resolution=16)
    return spec.replace(**changes) if changes else spec


@pytest.fixture(scope="module")
def image_folder(make_colour_folder) -> str:
    """3 classes x 60 train / 20 val: colour and stripes overlap enough that the tiny model's logits are not all
    saturated."""
    return make_colour_folder({"red": (170, 80, 80), "green": (80, 170, 80), "blue": (80, 80, 170)}, 60, 20, 60)


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


COMMON = ["--epochs", "2", "--batch-size", "20", "--resolution", "16", "--bn-momentum", "0.3", "--quiet",
          "--no-tensorboard", "--threads", "1"]


@pytest.fixture(scope="module")
def float_run(tmp_path_factory, image_folder) -> Path:
    """A float run on the image folder, to fine-tune from."""
    root = tmp_path_factory.mktemp("float")
    tiny_spec().save(root / "tiny.json")
    out = root / "run"
    train(out=str(out), spec=str(root / "tiny.json"), data=image_folder, epochs=3, batch_size=20, resolution=16,
          lr=0.02, warmup_epochs=0, bn_momentum=0.3, quiet=True, tensorboard=False, threads=1)
    return out


@pytest.fixture(scope="module")
def qat_run(tmp_path_factory, float_run, image_folder) -> tuple[Path, dict]:
    """`mnv3 train --init FLOAT_RUN --qat` with nothing else about the model or the data."""
    out = tmp_path_factory.mktemp("qat") / "run"
    code = main(["train", "--init", str(float_run), "--qat", "--epochs", "2", "--lr", "0.005", "--batch-size", "20",
                 "--warmup-epochs", "0", "--quiet", "--no-tensorboard", "--threads", "1", "--json", "--out",
                 str(out)])
    assert code == 0
    return out, read_metrics(out, "int8")[-1]


# -- the fake-quantised model -------------------------------------------------------------------------------------
def test_fake_quant_is_close_to_float_and_weights_have_at_most_255_levels():
    torch.manual_seed(0)
    model = build(tiny_spec(num_classes=10))
    calibrate_bn_on_noise(model, 16)
    keys = set(model.state_dict())
    x = torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model.eval()(x)
        qat = prepare_qat(model)
        assert set(model.state_dict()) == keys  # checkpoints of QAT runs load into float models
        model.train()
        for m in model.modules():  # BN and dropout as at evaluation (a random network's batch statistics are
            if isinstance(m, torch.nn.BatchNorm2d | torch.nn.Dropout):  # far from its running ones)
                m.eval()
        for _ in range(3):
            model(x)  # observers follow the activations in training mode
        got = model.eval()(x)
    spread = float(want.max() - want.min())
    assert 0 < float((got - want).abs().max()) < 0.05 * spread
    ranges = qat.ranges()
    assert ranges["classifier"]["updates"] == 3 and "features.2.expand.conv" in ranges  # hard-swish input
    # the stem and block 1 stay float: only block 1's output is quantised, as the next block's input
    assert [k for k in ranges if k.startswith(("features.0.", "features.1."))] == ["features.1.project.conv"]
    hswish_scale = ranges["features.2.expand.conv"]["scale"]
    assert abs(3 / hswish_scale - round(3 / hswish_scale)) < 1e-4  # snapped to 3/k, as int8_hardswish does
    quantized = [m for m in model.modules() if getattr(m, "weight_fake_quant", False)]
    assert len(quantized) == 11  # every conv after block 1, the head conv and the classifier
    assert not getattr(model.features[1].dw.conv, "weight_fake_quant", False)
    for m in quantized:
        q = fake_quantize_weight(m.weight)
        assert levels_per_channel(q) <= 255
        step = m.weight.detach().abs().reshape(len(q), -1).amax(1) / 127
        assert ((q - m.weight).abs().reshape(len(q), -1) <= step[:, None] / 2 + 1e-7).all()
    qat.set_enabled(False)
    with torch.no_grad():
        assert torch.equal(model(x), want)
    qat.set_enabled(True)
    qat.remove(model)
    with torch.no_grad():
        assert torch.equal(model(x), want)
    assert type(model.classifier) is torch.nn.Linear


def test_unsupported_parts_are_named():
    swish = build(tiny_spec(blocks=(BlockSpec(3, 16, 16, stride=2), BlockSpec(3, 40, 24, act="swish"))))
    with pytest.raises(QATError, match=r"features\.2\.expand\.act: .*SiLU"):
        prepare_qat(swish)
    from mobilenetv3.deploy.quantize import Int8Options

    with pytest.raises(QATError, match="stem and leading blocks"):
        prepare_qat(build(tiny_spec()), Int8Options(keep_float=("head",)))
    with pytest.raises(QATError, match="activation_type"):
        prepare_qat(build(tiny_spec()), Int8Options(activation_type="int8"))


# -- a QAT run ----------------------------------------------------------------------------------------------------
@needs_onnx
def test_qat_run_writes_an_int8_model_that_reproduces_the_fake_quantised_one(qat_run, float_run, image_folder,
                                                                             capsys, tmp_path):
    from mobilenetv3.deploy.quantize import calibration_data, compare_outputs, onnx_logits
    from mobilenetv3.train.qat_phase import prepared_from_run

    out, record = qat_run
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["qat"] and config["train"]["qat_epochs"] == 2  # --init: every epoch is QAT
    assert config["data"]["name"] == str(Path(image_folder).resolve()) and config["data"]["resolution"] == 16
    assert ArchSpec.load(out / "spec.json") == ArchSpec.load(float_run / "spec.json")
    epochs = read_metrics(out)
    assert [r["qat"] for r in epochs] == [True, True]
    assert (out / "model-int8.onnx").is_file()
    assert record["reload_identical"] and record["int8_top1_reloaded"] == record["int8_top1"]
    assert record["int8_top1"] == pytest.approx(epochs[-1]["ema_val_top1"], abs=100 / 60 + 1e-6)
    assert record["agreement_with_qat"] >= 0.95 and record["checks"]["qat"]["argmax_agreement"] >= 0.95

    # The independent truth: the file against the fake-quantised model rebuilt from the saved checkpoint.
    model, qat = prepared_from_run(out)
    images = calibration_data(Path(image_folder), resolution=16, split="val", samples=60, mean=config["data"]["mean"],
                              std=config["data"]["std"], crop_fraction=config["data"]["crop_fraction"])
    with torch.no_grad():
        want = torch.cat([model(torch.from_numpy(b)) for b in images]).numpy()
    got = onnx_logits(out / "model-int8.onnx", images)
    check = compare_outputs(got, want)
    assert check["argmax_agreement"] >= 0.95, check
    if not u8s8_saturates():  # AVX2 without VNNI: ONNX Runtime's u8 x s8 sums saturate, the logits drift here
        assert check["relative_max_diff"] < 0.05, check

    # `mnv3 export RUN_DIR --int8` of the QAT run converts its checkpoint to the same int8 model.
    code, text, err = run_cli(capsys, "export", out, "--int8", "--out", tmp_path / "again.onnx")
    assert code == 0, err
    assert "quantisation-aware training" in text
    np.testing.assert_array_equal(onnx_logits(tmp_path / "again.onnx", images), got)


@needs_onnx
def test_qat_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path):
    """A run that dies mid-QAT (here an exception in the data, as a kill would) and is resumed ends with the same
    weights, observers, metrics and int8 model as a run never interrupted."""

    class Colours(Dataset):
        classes = ["dark", "mid", "light"]
        channels, mean, std = 3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)

        def __init__(self, n: int, crash_after: int | None = None) -> None:
            g = torch.Generator().manual_seed(1)
            self.labels = torch.arange(n) % 3
            self.images = (self.labels[:, None, None, None].float() - 1) + 0.8 * torch.randn(n, 3, 16, 16, generator=g)
            self.crash_after, self.calls = crash_after, 0

        def __len__(self) -> int:
            return len(self.labels)

        def __getitem__(self, i: int):
            self.calls += 1
            if self.crash_after is not None and self.calls > self.crash_after:
                raise RuntimeError("simulated crash")
            return self.images[i] + 0.1 * torch.randn(3, 16, 16), int(self.labels[i])

    tiny_spec().save(tmp_path / "tiny.json")
    settings = dict(spec=str(tmp_path / "tiny.json"), epochs=3, batch_size=16, resolution=16, lr=0.01, quiet=True,
                    tensorboard=False, qat=True, qat_epochs=2, checkpoint_every_steps=2, log_every_steps=2,
                    bn_momentum=0.3, threads=1)
    ref = train(out=str(tmp_path / "ref"), train_set=Colours(96), val_set=Colours(30), **settings)
    with pytest.raises(RuntimeError, match="simulated crash"):  # in epoch 2 (the first QAT one), batch 3 of 6
        train(out=str(tmp_path / "kill"), train_set=Colours(96, crash_after=96 + 2 * 16 + 5),
              val_set=Colours(30), **settings)
    pointer = json.loads((tmp_path / "kill" / "checkpoint.json").read_text())
    assert pointer["epoch"] == 1 and pointer["batch"] == 2
    resumed = train(out=str(tmp_path / "kill"), train_set=Colours(96), val_set=Colours(30), resume=True,
                    **settings)
    strip = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in read_metrics(tmp_path / "ref", None)]
    again = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in read_metrics(tmp_path / "kill", None)]
    assert again == strip and resumed["int8"] == ref["int8"]
    a, b = (load_file(Path(r["run_dir"]) / json.loads((Path(r["run_dir"]) / "checkpoint.json").read_text())[
        "weights"]) for r in (ref, resumed))
    assert any(k.startswith("ema_qat.") for k in a) and a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["qat"] for r in read_metrics(tmp_path / "ref")] == [False, True, True]


def test_init_takes_the_runs_data_options_including_its_holdout(tmp_path):
    from mobilenetv3.train import TrainConfig
    from mobilenetv3.train.init_weights import with_init_defaults

    (tmp_path / "config.json").write_text(json.dumps({"train": {
        "data": "/data/garments", "data_dir": None, "val_split": "val", "holdout": 5000, "channels": 1,
        "resolution": 80, "epochs": 40}}))
    inherited = with_init_defaults(TrainConfig(out="x", init=str(tmp_path)))
    assert (inherited.data, inherited.holdout, inherited.channels, inherited.resolution) == (
        "/data/garments", 5000, 1, 80)
    assert inherited.epochs is None  # the recipe is the new run's, not the old one's
    assert with_init_defaults(TrainConfig(out="x", init=str(tmp_path), holdout=0)).holdout == 0  # given: kept


# -- bad input ----------------------------------------------------------------------------------------------------
def test_init_with_another_architecture_is_a_clear_error(float_run, image_folder, tmp_path, capsys):
    wider = tmp_path / "wider.json"
    tiny_spec(last_channels=56).save(wider)
    with pytest.raises(CheckpointError, match=r"--init .*differs from this run's.*last_channels: 48 vs 56"):
        train(out=str(tmp_path / "r"), spec=str(wider), init=str(float_run), epochs=1, batch_size=20, quiet=True,
              tensorboard=False)
    code, _, err = run_cli(capsys, "train", "--init", tmp_path / "nowhere", "--out", tmp_path / "r2", *COMMON)
    assert code == 2 and "--init: no run directory or weights file" in err
    code, _, err = run_cli(capsys, "train", "--model", "mobilenet_v3_small", "--qat-epochs", "1", "--out",
                           tmp_path / "r3")
    assert code == 2 and "--qat-epochs applies to quantisation-aware training" in err
    code, _, err = run_cli(capsys, "train", "--init", float_run, "--qat", "--qat-epochs", "3", "--out",
                           tmp_path / "r4", *COMMON)
    assert code == 2 and "qat-epochs must be between 1 and the number of epochs (2)" in err


def test_qat_with_a_model_it_cannot_simulate_fails_before_training(image_folder, tmp_path, capsys):
    swish = tmp_path / "swish.json"
    tiny_spec(blocks=(BlockSpec(3, 16, 16, stride=2), BlockSpec(3, 40, 24, act="swish"))).save(swish)
    code, _, err = run_cli(capsys, "train", "--spec", swish, "--data", image_folder, "--qat", "--out",
                           tmp_path / "r", *COMMON)
    assert code == 2 and "does not simulate the int8 form of SiLU" in err
    assert not read_metrics(tmp_path / "r")


def test_qat_without_onnxruntime_names_the_extra(image_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime.quantization", None)
    spec = tmp_path / "tiny.json"
    tiny_spec().save(spec)
    with pytest.raises(MissingExtraError):
        train(out=str(tmp_path / "a"), spec=str(spec), data=image_folder, qat=True, epochs=1, batch_size=20,
              quiet=True, tensorboard=False)
    code, _, err = run_cli(capsys, "train", "--spec", spec, "--data", image_folder, "--qat", "--out", tmp_path / "b",
                           *COMMON)
    assert code == 2 and "mobilenetv3[deploy]" in err
