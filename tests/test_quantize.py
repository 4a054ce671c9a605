"""int8 post-training quantisation (ONNX Runtime QDQ; PT2E when torchao is installed): exact graph changes,
agreement with float on a model that separates its classes, save/load, calibration data and the CLI."""

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from markers import needs_onnx
from mobilenetv3 import build, get_spec
from mobilenetv3.cli import main
from mobilenetv3.deploy import calibrate_bn, calibrate_bn_on_noise, export_onnx, fold_bn
from mobilenetv3.deploy.quantize import (
    INT8_TARGETS,
    PLAIN,
    CalibrationError,
    Int8Options,
    calibration_data,
    compare_outputs,
    int8_ready,
    materialize_shared_initializers,
    onnx_logits,
    pad_depthwise_channels,
    quantize_onnx,
    reduce_mean_to_global_pool,
    replace_options,
    unquantize_conv_activations,
)
from mobilenetv3.latency import MissingExtraError

RES = 64
CLASSES = 4


def separable_task(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images whose class sets their colour (one fixed random colour per class) and the frequency of a
    stripe pattern: a task a random network's pooled features separate, so a least-squares classifier on them
    gives confident, checkable predictions."""
    colours = torch.randn(CLASSES, 3, 1, 1, generator=torch.Generator().manual_seed(123))
    ramp = torch.arange(RES, dtype=torch.float32)
    stripes = torch.stack([torch.sin(ramp * (c + 1) * 0.4)[None, :].expand(RES, RES) for c in range(CLASSES)])
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % CLASSES
    images = colours[labels] + stripes[labels, None] + 0.5 * torch.randn(n, 3, RES, RES, generator=g)
    return images, labels


@pytest.fixture(scope="module")
def trained():
    """MobileNetV3-Small (0.5) trained for 30 steps on the task (~2 s), BatchNorm statistics re-estimated after
    (its momentum is the paper's 0.01): ~100% held-out accuracy with clear margins."""
    torch.manual_seed(0)
    model = build(get_spec("mobilenet_v3_small", 0.5, num_classes=CLASSES))
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    model.train()
    for step in range(30):
        x, y = separable_task(32, seed=100 + step)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return calibrate_bn(model, separable_task(64, seed=99)[0].split(16))


# -- exact changes before quantisation -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mobilenet_v3_small", "mobilenet_v3_large"])
def test_padding_is_exact(name):
    m = build(name)
    calibrate_bn_on_noise(m, 48)
    folded = fold_bn(m)
    padded = fold_bn(m)
    count = pad_depthwise_channels(padded, 16)
    assert count > 0
    assert all(b.dw.conv.out_channels % 16 == 0 for b in padded.features[1:] if getattr(b, "expand", None))
    prepared = int8_ready(m, Int8Options(pad_stem=True))
    assert prepared.model.features[0].conv.in_channels == 4  # the stem takes a zero-padded 4th channel
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = folded(x)
        assert (padded(x) - ref).abs().max() < 1e-5 and (prepared(x) - ref).abs().max() < 1e-5
    with pytest.raises(ValueError, match="BatchNorm-folded"):
        pad_depthwise_channels(build(name), 16)


@needs_onnx
def test_graph_passes_keep_outputs(tmp_path):
    import onnx

    torch.manual_seed(0)  # the weights would otherwise depend on which tests ran before
    m = build("mobilenet_v3_small")  # untrained: SE biases are equal, so the exporter shares them
    calibrate_bn_on_noise(m, 32)
    export_onnx(m, tmp_path / "f.onnx", resolution=32, verify=False, ort_nchwc=False)
    proto = onnx.load(str(tmp_path / "f.onnx"))
    assert materialize_shared_initializers(proto) > 0
    assert reduce_mean_to_global_pool(proto) == 9  # one per SE
    ops = {n.op_type for n in proto.graph.node}
    assert "Identity" not in ops and "ReduceMean" not in ops
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp_path / "g.onnx"))
    x = [np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)]
    # GlobalAveragePool and ReduceMean sum in different orders: rounding differences, relative to the logits
    np.testing.assert_allclose(onnx_logits(tmp_path / "g.onnx", x), onnx_logits(tmp_path / "f.onnx", x), rtol=1e-5,
                               atol=1e-5)


# -- int8 against float --------------------------------------------------------------------------------------
@needs_onnx
@pytest.mark.parametrize("options", [Int8Options(), PLAIN], ids=["default", "plain"])
def test_int8_agrees_with_float(trained, tmp_path, options):
    import onnx

    calib = [b.numpy() for b in separable_task(32, seed=1)[0].split(1)]
    report = quantize_onnx(trained, tmp_path / "q.onnx", calib, resolution=RES, options=options)
    x, y = separable_task(64, seed=2)
    batches = [b.numpy() for b in x.split(1)]
    got = onnx_logits(tmp_path / "q.onnx", batches)
    with torch.no_grad():
        want = trained(x).numpy()
    assert (want.argmax(1) == y.numpy()).mean() > 0.95  # the float model solves the task
    check = compare_outputs(got, want)
    assert check["argmax_agreement"] >= 0.95
    assert check["relative_max_diff"] < 0.1  # logits within 10% of their range
    assert report.checks["argmax_agreement"] >= 0.95
    ops = {n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    if options.int8_hardswish:
        assert report.graph_changes["int8_hardswish"] > 0 and "Clip" in ops
        assert report.graph_changes["se_global_pool"] > 0
    else:
        assert "HardSwish" in ops


@needs_onnx
def test_openvino_target_quantises_after_the_activation(trained, tmp_path):
    """The OpenVINO target's graph reads DQ -> Conv -> activation -> Q wherever ONNX Runtime's reads
    Conv -> Q -> DQ -> activation, and it computes the same function at least as accurately."""
    import onnx

    calib = [b.numpy() for b in separable_task(32, seed=1)[0].split(1)]
    ort_report = quantize_onnx(trained, tmp_path / "ort.onnx", calib, resolution=RES,
                               options=replace_options(INT8_TARGETS["onnxruntime"], int8_hardswish=False))
    report = quantize_onnx(trained, tmp_path / "ov.onnx", calib, resolution=RES, options=INT8_TARGETS["openvino"])
    removed = report.graph_changes["conv_act_qdq_removed"]

    def conv_act_pairs(path):
        """(activations reading a Conv directly, activations reading a Conv through Q -> DQ)"""
        graph = onnx.load(str(path)).graph
        producer = {o: n for n in graph.node for o in n.output}
        direct = via_qdq = 0
        for n in graph.node:
            if n.op_type not in ("HardSwish", "HardSigmoid", "Relu"):
                continue
            p = producer.get(n.input[0])
            if p is not None and p.op_type == "Conv":
                direct += 1
            elif (p is not None and p.op_type == "DequantizeLinear" and producer[p.input[0]].op_type == "QuantizeLinear"
                  and producer[producer[p.input[0]].input[0]].op_type == "Conv"):
                via_qdq += 1
        return direct, via_qdq

    ort_direct, ort_via = conv_act_pairs(tmp_path / "ort.onnx")
    ov_direct, ov_via = conv_act_pairs(tmp_path / "ov.onnx")
    assert ort_via >= removed > 0 and ov_via == 0 and ov_direct == ort_direct + ort_via
    ops = ort_report.ops
    assert report.ops["QuantizeLinear"] == ops["QuantizeLinear"] - removed
    # the same function, run here by ONNX Runtime: close to float, no further from it than the ORT graph
    x, _ = separable_task(64, seed=2)
    batches = [b.numpy() for b in x.split(1)]
    with torch.no_grad():
        want = trained(x).numpy()
    ov_check = compare_outputs(onnx_logits(tmp_path / "ov.onnx", batches), want)
    ort_check = compare_outputs(onnx_logits(tmp_path / "ort.onnx", batches), want)
    assert ov_check["argmax_agreement"] >= 0.95 and ov_check["relative_max_diff"] < 0.1
    assert ov_check["mean_abs_diff"] <= 1.1 * ort_check["mean_abs_diff"]
    # the pass is idempotent, and the removed pairs leave no scale or zero point behind
    proto = onnx.load(str(tmp_path / "ov.onnx"))
    assert unquantize_conv_activations(proto) == 0
    read = {i for n in proto.graph.node for i in n.input}
    assert [i.name for i in proto.graph.initializer if i.name not in read] == []


@needs_onnx
def test_int8_hardswish_snaps_scales(trained, tmp_path):
    """Each rewritten hard-swish reads its input with a scale 3/k and its gate with scale 3/(6k)."""
    import onnx
    from onnx import numpy_helper

    calib = [b.numpy() for b in separable_task(8, seed=1)[0].split(1)]
    quantize_onnx(trained, tmp_path / "q.onnx", calib, resolution=RES, verify=False)
    proto = onnx.load(str(tmp_path / "q.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    snapped = [k for k in inits if k.endswith("_hs_scale")]
    assert snapped
    for name in snapped:
        k = 3.0 / float(inits[name])
        assert abs(k - round(k)) < 1e-3
        gate = float(inits[name.replace("_hs_scale", "_hs_gate_scale")])
        assert gate == pytest.approx(float(inits[name]) / 6, rel=1e-6)


@needs_onnx
@pytest.mark.parametrize("target", ["onnxruntime", "openvino"])
def test_nhwc_int8_file_matches_the_nchw_one(trained, tmp_path, target):
    import onnx

    from mobilenetv3.deploy.onnx_export import input_layout_of

    calib = [b.numpy() for b in separable_task(16, seed=1)[0].split(1)]
    paths = {layout: tmp_path / f"{layout}.onnx" for layout in ("nchw", "nhwc")}
    reports = {layout: quantize_onnx(trained, path, calib, resolution=RES, options=INT8_TARGETS[target],
                                     input_layout=layout) for layout, path in paths.items()}
    assert reports["nhwc"].input_layout == "nhwc" and input_layout_of(paths["nhwc"]) == "nhwc"
    assert reports["nhwc"].checks["argmax_agreement"] >= 0.95  # checked against the model on NCHW images
    # the same quantisation: the same scales and logits; only the input transpose (kept float) is new
    graph = onnx.load(str(paths["nhwc"])).graph
    assert graph.input[0].type.tensor_type.shape.dim[3].dim_value == 3
    first = graph.node[0]
    assert first.op_type == "Transpose" and first.input[0] == "input"
    x = [b.numpy() for b in separable_task(16, seed=2)[0].split(1)]
    np.testing.assert_allclose(onnx_logits(paths["nhwc"], x), onnx_logits(paths["nchw"], x), atol=1e-4)
    with pytest.raises(ValueError, match="unknown input layout"):
        quantize_onnx(trained, tmp_path / "x.onnx", calib, resolution=RES, input_layout="hwc")


def test_save_load_round_trip(trained, tmp_path):
    import onnx

    from mobilenetv3.latency import ort_session

    calib = [b.numpy() for b in separable_task(8, seed=1)[0].split(1)]
    quantize_onnx(trained, tmp_path / "q.onnx", calib, resolution=RES, dynamic_batch=True, verify=False)
    x = separable_task(16, seed=3)[0].numpy()
    first = ort_session(tmp_path / "q.onnx").run(None, {"input": x})[0]
    onnx.save(onnx.load(str(tmp_path / "q.onnx")), str(tmp_path / "copy.onnx"))  # load and save again
    again = ort_session(tmp_path / "copy.onnx").run(None, {"input": x})[0]
    assert first.shape == (16, CLASSES)
    np.testing.assert_array_equal(first, again)
    per_image = np.concatenate([ort_session(tmp_path / "q.onnx").run(None, {"input": x[i:i + 1]})[0]
                                for i in range(4)])
    np.testing.assert_allclose(per_image, first[:4], atol=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="PT2E int8 needs torchao")
def test_pt2e_quantise_save_load(trained, tmp_path):
    from mobilenetv3.deploy.quantize import load_pt2e, quantize_pt2e, save_pt2e

    small = build(get_spec("mobilenet_v3_small", 0.35, num_classes=CLASSES))
    calibrate_bn_on_noise(small, 32)
    calib = [torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    q = quantize_pt2e(small, calib)
    save_pt2e(q, tmp_path / "q.pt2", calib[0])
    loaded = load_pt2e(tmp_path / "q.pt2")
    with torch.no_grad():
        assert torch.equal(q(calib[1]), loaded(calib[1]))
        assert (loaded(calib[1]) - small(calib[1])).abs().max() < 0.5 * small(calib[1]).abs().max() + 1e-3


# -- calibration data -------------------------------------------------------------------------------------------
def _images(folder, n, size=(40, 30)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_calibration_data_from_folders(tmp_path):
    _images(tmp_path / "flat" / "sub", 5)
    batches = calibration_data(tmp_path / "flat", resolution=32, samples=3)
    assert len(batches) == 3 and batches[0].shape == (1, 3, 32, 32) and batches[0].dtype == np.float32
    _images(tmp_path / "imagenet" / "train" / "a", 2)
    _images(tmp_path / "imagenet" / "train" / "b", 2)
    batches = calibration_data(tmp_path / "imagenet", resolution=16, channels=1, samples=10, batch=2)
    assert len(batches) == 2 and batches[0].shape == (2, 1, 16, 16)
    # seeded: the same images again
    again = calibration_data(tmp_path / "imagenet", resolution=16, channels=1, samples=10, batch=2)
    np.testing.assert_array_equal(np.concatenate(batches), np.concatenate(again))


def test_calibration_data_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationError, match="no calibration images"):
        calibration_data(tmp_path / "empty", resolution=32)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no images here")
    with pytest.raises(CalibrationError, match="no calibration images"):
        calibration_data(tmp_path / "notes", resolution=32)
    (tmp_path / "classes" / "train" / "a").mkdir(parents=True)  # ImageNet layout, class folder without images
    with pytest.raises(CalibrationError, match="holds no images"):
        calibration_data(tmp_path / "classes", resolution=32)
    with pytest.raises(CalibrationError, match="no calibration images"):
        calibration_data(tmp_path / "does-not-exist", resolution=32)
    _images(tmp_path / "two", 2)
    with pytest.raises(CalibrationError, match="positive integer"):
        calibration_data(tmp_path / "two", resolution=32, samples=0)
    with pytest.raises(CalibrationError, match="fewer than one batch"):
        calibration_data(tmp_path / "two", resolution=32, batch=4)


@needs_onnx
def test_quantize_checks_calibration_shapes(trained, tmp_path):
    with pytest.raises(CalibrationError, match="no calibration images"):
        quantize_onnx(trained, tmp_path / "q.onnx", [], resolution=RES)
    with pytest.raises(CalibrationError, match=r"shape \[1, 3, 32, 32\]"):
        quantize_onnx(trained, tmp_path / "q.onnx", [np.zeros((1, 3, 32, 32), np.float32)], resolution=RES)


def test_options_are_checked():
    with pytest.raises(ValueError, match="activation_type"):
        Int8Options(activation_type="int4")
    with pytest.raises(ValueError, match="se_pool"):
        replace_options(se_pool="max")
    with pytest.raises(ValueError, match="exclude each other"):
        Int8Options(fuse_conv_act=True)  # the integer hard-swish is on by default
    assert not INT8_TARGETS["openvino"].int8_hardswish and INT8_TARGETS["openvino"].fuse_conv_act


# -- CLI --------------------------------------------------------------------------------------------------------
def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@needs_onnx
def test_cli_int8_export_and_latency(capsys, tmp_path):
    out_file = tmp_path / "q.onnx"
    code, out, err = run(capsys, "export", "mobilenet_v3_small", "--width-mult", "0.35", "--resolution", "32",
                         "--int8", "--calib-data", "noise", "--out", str(out_file), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["ok"] and data["toolchain"] == "onnxruntime" and data["input_shape"] == [1, 3, 32, 32]
    assert out_file.is_file() and data["graph_changes"]["int8_hardswish"] > 0 and data["target"] == "onnxruntime"
    code, out, err = run(capsys, "export", "mobilenet_v3_small", "--width-mult", "0.35", "--resolution", "32",
                         "--int8", "--int8-target", "openvino", "--calib-data", "noise", "--out",
                         str(tmp_path / "ov.onnx"))
    assert code == 0, err
    assert "shaped for openvino" in out and "conv_act_qdq_removed" in out and "HardSwish" in out
    code, out, err = run(capsys, "latency", str(out_file), "--warmup", "1", "--min-runs", "2", "--min-seconds", "0",
                         "--json")
    assert code == 0, err
    assert json.loads(out)["results"][0]["runtime"] == "onnxruntime-int8"
    code, out, err = run(capsys, "latency", "mobilenet_v3_small", "--width-mult", "0.35", "--resolution", "32",
                         "--runtime", "onnxruntime-int8", "--warmup", "1", "--min-runs", "2", "--min-seconds", "0")
    assert code == 0, err
    assert "onnxruntime-int8" in out and "int8 QDQ" in out
    code, _, err = run(capsys, "latency", str(out_file), "--runtime", "frozen")
    assert code == 2 and "ONNX Runtime" in err


@needs_onnx
def test_cli_int8_errors(capsys, tmp_path, monkeypatch):
    base = ["export", "mobilenet_v3_small", "--width-mult", "0.35", "--resolution", "32", "--out",
            str(tmp_path / "q.onnx")]
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, *base, "--int8", "--calib-data", str(tmp_path / "empty"))
    assert code == 2 and "no calibration images" in err
    code, _, err = run(capsys, *base, "--int8")
    assert code == 2 and "--calib-data" in err  # a zoo model has no data of its own
    code, _, err = run(capsys, *base, "--int8", "--format", "litert")
    assert code == 2 and "--int8" in err
    code, _, err = run(capsys, *base, "--calib-data", "noise")
    assert code == 2 and "apply to --int8" in err
    code, _, err = run(capsys, *base, "--int8-target", "openvino")
    assert code == 2 and "apply to --int8" in err
    code, _, err = run(capsys, *base, "--int8", "--int8-toolchain", "pt2e", "--int8-target", "openvino",
                       "--calib-data", "noise")
    assert code == 2 and "does not apply to --int8-toolchain pt2e" in err
    monkeypatch.setitem(sys.modules, "onnxruntime.quantization", None)
    code, _, err = run(capsys, *base, "--int8", "--calib-data", "noise")
    assert code == 2 and "mobilenetv3[deploy]" in err
    with pytest.raises(MissingExtraError):
        quantize_onnx(build("mobilenet_v3_small"), tmp_path / "x.onnx", [np.zeros((1, 3, 32, 32), np.float32)],
                      resolution=32)


@needs_onnx
def test_cli_int8_export_of_a_run_calibrates_on_its_data(capsys, tmp_path):
    checkpoint = pytest.importorskip("mobilenetv3.train.checkpoint")
    for cls in ("a", "b"):
        _images(tmp_path / "data" / "train" / cls, 3)
    spec = get_spec("mobilenet_v3_small", 0.35, num_classes=2, resolution=32)
    model = build(spec)
    calibrate_bn_on_noise(model, 32)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    data = {"name": str(tmp_path / "data"), "data_dir": None, "resolution": 32, "channels": 3,
            "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "crop_fraction": 1.0}
    (run_dir / "config.json").write_text(json.dumps({"train": {}, "data": data}))
    spec.save(run_dir / "spec.json")
    weights = checkpoint.weights_bytes(model.state_dict(), None, spec)
    checkpoint.save_checkpoint(run_dir, weights, {"format": checkpoint.STATE_FORMAT}, {"global_step": 1})
    code, out, err = run(capsys, "export", str(run_dir), "--int8", "--calib-samples", "4", "--out",
                         str(tmp_path / "run_int8.onnx"))
    assert code == 0, err
    assert f"calibrated on 4 batch(es) from {tmp_path / 'data'}" in out and "argmax agrees" in out


def test_pt2e_without_torchao_names_its_extra(monkeypatch, tmp_path):
    from mobilenetv3.deploy.quantize import quantize_pt2e

    for name in ("torchao", "torchao.quantization", "torchao.quantization.pt2e",
                 "torchao.quantization.pt2e.quantize_pt2e", "torch.ao.quantization.quantize_pt2e"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingExtraError, match=r"mobilenetv3\[pt2e\]"):
        quantize_pt2e(build(get_spec("mobilenet_v3_small", 0.35)), [torch.zeros(1, 3, 32, 32)])
    code = main(["export", "mobilenet_v3_small", "--width-mult", "0.35", "--resolution", "32", "--int8",
                 "--int8-toolchain", "pt2e", "--calib-data", "noise", "--out", str(tmp_path / "q.pt2")])
    assert code == 2


@needs_onnx
def test_int8_export_to_a_path_that_cannot_be_written_names_it(tmp_path):
    from mobilenetv3.deploy.output import OutputPathError

    (tmp_path / "file").write_text("not a directory")
    out = tmp_path / "file" / "q.onnx"
    with pytest.raises(OutputPathError, match=f"cannot write {out}"):
        quantize_onnx(build(get_spec("mobilenet_v3_small", 0.35)), out, [np.zeros((1, 3, 32, 32), np.float32)],
                      resolution=32)
    assert not (tmp_path / "file").is_dir()


def test_calibration_for_noise_and_a_runs_preprocessing(tmp_path):
    from mobilenetv3.deploy.quantize import calibration_for

    batches, label = calibration_for("noise", (2, 3, 16, 16), samples=100)
    assert label.startswith("noise") and len(batches) == 16 and batches[0].shape == (2, 3, 16, 16)
    _images(tmp_path / "imgs" / "train" / "a", 3)
    run_data = {"name": str(tmp_path / "imgs"), "data_dir": None, "mean": [0.5, 0.5, 0.5],
                "std": [0.25, 0.25, 0.25], "crop_fraction": 1.0}
    batches, label = calibration_for(str(tmp_path / "imgs"), (1, 3, 16, 16), samples=2, run_data=run_data,
                                     dynamic_batch=True)
    want = calibration_data(tmp_path / "imgs", resolution=16, channels=3, samples=2, mean=[0.5] * 3,
                            std=[0.25] * 3, crop_fraction=1.0)
    assert label == str(tmp_path / "imgs") and len(batches) == 2
    np.testing.assert_array_equal(np.concatenate(batches), np.concatenate(want))
    other = calibration_data(tmp_path / "imgs", resolution=16, channels=3, samples=2)  # ImageNet statistics
    assert not np.array_equal(np.concatenate(batches), np.concatenate(other))


def test_top1_batches_skips_missing_items_and_counts():
    from mobilenetv3.deploy.evaluate import evaluate_torch, top1

    images = torch.eye(4).reshape(4, 4, 1, 1).repeat(2, 1, 1, 1)  # image i's largest channel is i % 4
    labels = [0, 1, 2, 3, 0, 1, 3, 3]
    dataset = [(images[i], labels[i]) for i in range(8)]
    dataset[2] = None  # an unreadable item
    seen = []
    result = top1(dataset, lambda x: x.flatten(1), batch_size=3, progress=seen.append)
    assert result["count"] == 7 and result["top1"] == pytest.approx(100 * 6 / 7)
    assert result["predictions"].tolist() == [0, 1, 3, 0, 1, 2, 3] and seen == [3, 6, 8]
    assert top1(dataset, lambda x: x.flatten(1).numpy(), limit=2)["count"] == 2
    model = nn.Flatten()
    torch_result = evaluate_torch(model, dataset, batch_size=5)
    assert torch_result["top1"] == result["top1"] and torch_result["labels"].tolist() == result["labels"].tolist()


@needs_onnx
def test_percentile_calibration_clips_ranges_minmax_keeps(trained, tmp_path):
    """The same model and calibration images by min-max and by percentile (plain hard-swish, so no scale is
    snapped afterwards): every activation scale of the percentile file is at most min-max's (a percentile of
    the values lies inside their range) and some are smaller (rare outliers clipped)."""
    import onnx
    from onnx import numpy_helper

    def activation_scales(path):
        graph = onnx.load(str(path)).graph
        inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        return {n.input[0]: float(inits[n.input[1]]) for n in graph.node
                if n.op_type == "QuantizeLinear" and n.input[1] in inits and inits[n.input[1]].size == 1}

    calib = [b.numpy() for b in separable_task(64, seed=1)[0].split(1)]
    scales = {}
    for method in ("minmax", "percentile"):
        report = quantize_onnx(trained, tmp_path / f"{method}.onnx", calib, resolution=RES,
                               options=Int8Options(calibrate_method=method, int8_hardswish=False))
        assert report.options["calibrate_method"] == method
        scales[method] = activation_scales(tmp_path / f"{method}.onnx")
    assert scales["minmax"].keys() == scales["percentile"].keys() and len(scales["minmax"]) > 50
    ratios = [scales["percentile"][k] / scales["minmax"][k] for k in scales["minmax"]]
    assert max(ratios) <= 1.001 and sum(r < 0.99 for r in ratios) >= 0.1 * len(ratios)


@needs_onnx
def test_cli_calibration_method_is_recorded_and_refused_where_it_does_not_apply(capsys, tmp_path):
    common = ["export", "mobilenet_v3_small", "--width-mult", "0.35", "--resolution", "32", "--calib-data", "noise",
              "--calib-samples", "4"]
    code, out, err = run(capsys, *common, "--int8", "--int8-calibration", "percentile", "--json", "--out",
                         str(tmp_path / "p.onnx"))
    assert code == 0, err
    assert json.loads(out)["options"]["calibrate_method"] == "percentile"  # stdout is JSON: the calibrator's prints
    code, _, err = run(capsys, "export", "mobilenet_v3_small", "--int8-calibration", "percentile", "--out",
                       str(tmp_path / "f.onnx"))
    assert code == 2 and "apply to --int8 exports" in err
    code, _, err = run(capsys, *common, "--int8", "--int8-toolchain", "pt2e", "--int8-calibration", "percentile",
                       "--out", str(tmp_path / "p.pt2"))
    assert code == 2 and "--int8-calibration" in err
