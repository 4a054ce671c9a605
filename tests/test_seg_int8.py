"""int8 export of segmentation runs and `mnv3 eval --file` (issue 17: "int8 keeps mIoU within 1 point"): a tiny
LR-ASPP run trained until its predictions vary over the scene, quantised with the classifier's quantiser and
checked pixel by pixel; exported files scored by the task's own evaluation, the float file giving the run's
figures; the refusals."""

import json

import numpy as np
import pytest
import torch

from markers import needs_onnx
from mobilenetv3.cli import main
from mobilenetv3.deploy.evaluate import FileModel, compare_outputs, file_input_shape
from mobilenetv3.deploy.quantize import CalibrationError, calibration_for
from mobilenetv3.deploy.quantize.calibration import RunImages
from mobilenetv3.deploy.quantize.passes import float_nodes, float_ops
from mobilenetv3.inputs import InputError, input_shape_for
from mobilenetv3.runtime.cpu import u8s8_saturates
from mobilenetv3.segmentation import get_seg_spec
from mobilenetv3.train import load_run, train
from seg_helpers import make_fashion_mnist

torch.set_num_threads(1)
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

# Few, large garments: 20 steps at lr 0.1 (BN statistics following quickly) give a model whose predictions vary
# over the scene (background ~80% of the pixels, several garment classes predicted, mIoU ~9%), so per-pixel
# agreement is not that of two all-background maps. (Longer or faster runs on 16 scenes overfit: their activations
# on other scenes leave the calibrated ranges far behind, and int8 and float then part on unseen images.)
SEG_DATA = "scenes:size=64x128,train=16,val=8,test=8,items=2-3,scale=0.5-0.9"
COMMON = dict(quiet=True, tensorboard=False, threads=1)


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory):
    return str(make_fashion_mnist(tmp_path_factory.mktemp("fmnist")))


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory, fmnist):
    out = tmp_path_factory.mktemp("seg") / "run"
    train(out=str(out), task="segmentation", model="lraspp_mobilenet_v3_small", width_mult=0.35, data=SEG_DATA,
          data_dir=fmnist, epochs=10, batch_size=8, resolution=64, lr=0.1, ema_decay=0, bn_momentum=0.3,
          eval_batch_size=8, **COMMON)
    return out


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory, fmnist):
    out = tmp_path_factory.mktemp("cls") / "run"
    train(out=str(out), model="mobilenet_v3_small", width_mult=0.35, data="fashion-mnist", data_dir=fmnist,
          resolution=32, epochs=1, batch_size=20, eval_batch_size=8, **COMMON)
    return out


@pytest.fixture(scope="module")
def det_run(tmp_path_factory, fmnist):
    out = tmp_path_factory.mktemp("det") / "run"
    train(out=str(out), task="detection", model="ssdlite_mobilenet_v3_small", width_mult=0.35,
          data="scenes:size=64x64,train=4,val=2,items=1-2", data_dir=fmnist, resolution=64, epochs=1, batch_size=4,
          eval_batch_size=2, **COMMON)
    return out


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv):
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


# -- int8 export of a segmentation run -----------------------------------------------------------------------------
@needs_onnx
def test_segmentation_run_exports_int8_that_agrees_with_float_pixel_by_pixel(seg_run, tmp_path, capsys):
    path = tmp_path / "int8.onnx"
    data = run_json(capsys, "export", seg_run, "--int8", "--calib-samples", 8, "--out", path)
    assert data["ok"] and data["task"] == "segmentation" and data["input_shape"] == [1, 3, 64, 128]
    assert data["calibration_samples"] == 8
    assert data["calibration_data"] == f"{SEG_DATA} (train split, evaluation transform)"
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Resize", "Sigmoid"} <= ops
    assert data["ops"]["DequantizeLinear"] > data["ops"]["Conv"]  # every convolution's weights at least
    # the head runs in int8: what computes in float is the stem and block 1 (the options' keep_float), no more
    assert data["options"]["keep_float"] == ["stem", "block1"]
    assert set(data["float_ops"]) <= {"Conv", "HardSwish", "Relu", "GlobalAveragePool", "HardSigmoid", "Mul"}
    assert data["float_ops"]["Conv"] == 5  # stem; block 1's depthwise, SE reduce and expand, projection
    checks = data["checks"]
    assert checks["images"] == 8 and checks["argmax_positions"] == 8 * 64 * 128
    assert checks["argmax_agreement"] > 0.9 and checks["relative_max_diff"] < 0.5
    # independently: the file against the eager model on the same scenes, where the model predicts garments on 8%
    # of the pixels, of several classes (an all-background int8 map would agree on 92% of the pixels: so the
    # garment pixels are checked apart)
    model, config = load_run(seg_run)
    batches, _ = calibration_for(SEG_DATA, (1, 3, 64, 128), samples=8, run_data=config["data"], task="segmentation")
    x = torch.from_numpy(np.concatenate(batches[:8]))
    with torch.no_grad():
        want = model(x).numpy()
    predicted = want.argmax(1)
    assert (np.bincount(predicted.ravel(), minlength=want.shape[1]) > 0.01 * predicted.size).sum() >= 3
    garments = predicted != 0
    got = FileModel(path)(x).numpy()
    assert compare_outputs(got, want)["argmax_agreement"] == pytest.approx(checks["argmax_agreement"])
    # A CPU with AVX2 but no VNNI (u8s8_saturates) saturates some uint8 x int8 sums in ONNX Runtime: there the
    # default file agrees on 60% of the garment pixels (and 95.6% of all), its 7-bit-weight twin on 91% (99.1%).
    assert (got.argmax(1) == predicted)[garments].mean() > (0.5 if u8s8_saturates() else 0.85)
    data = run_json(capsys, "export", seg_run, "--int8", "--int8-reduce-range", "--calib-samples", 8, "--out",
                    tmp_path / "rr.onnx")
    assert data["options"]["reduce_range"] and "note" not in data["checks"]
    got = FileModel(tmp_path / "rr.onnx")(x).numpy()
    assert (got.argmax(1) == predicted)[garments].mean() > 0.85 and (got.argmax(1) == predicted).mean() > 0.98
    # the human-readable lines
    code, out, err = run(capsys, "export", seg_run, "--int8", "--calib-samples", 2, "--input-size", 48, 96, "--out",
                         tmp_path / "small.onnx")
    assert code == 0, err
    assert "input 1x3x48x96" in out and "resized from 64x128 to 48x96" in out
    assert "per-pixel argmax agrees with float on" in out and "of 9,216 pixels" in out
    assert "computed in float: Conv 5" in out and "kept float: stem, block1" in out


@needs_onnx
def test_the_head_can_stay_float_and_agrees_more_closely(seg_run, tmp_path, capsys):
    """--int8-keep-float stem,block1,head: the LR-ASPP head's convolutions compute in float as well (its branch,
    gate and both class convolutions), and the file's logits come closer to float's than the default file's."""
    common = ("export", seg_run, "--int8", "--int8-reduce-range", "--calib-samples", 8)
    default = run_json(capsys, *common, "--out", tmp_path / "d.onnx")
    kept = run_json(capsys, *common, "--int8-keep-float", "stem,block1,head", "--out", tmp_path / "h.onnx")
    assert kept["options"]["keep_float"] == ["stem", "block1", "head"]
    assert kept["float_ops"]["Conv"] == default["float_ops"]["Conv"] + 4 and "Sigmoid" in kept["float_ops"]
    assert kept["checks"]["max_abs_diff"] < default["checks"]["max_abs_diff"]
    nothing = run_json(capsys, *common, "--int8-keep-float", "", "--out", tmp_path / "n.onnx")
    assert nothing["options"]["keep_float"] == [] and "Conv" not in nothing["float_ops"]
    code, _, err = run(capsys, "export", seg_run, "--int8-keep-float", "head", "--out", tmp_path / "x.onnx")
    assert code == 2 and "apply to --int8 exports" in err


@needs_onnx
def test_the_openvino_target_and_kernel_pooling_quantise_too(seg_run, tmp_path, capsys):
    data = run_json(capsys, "export", seg_run, "--int8", "--int8-target", "openvino", "--calib-samples", 2,
                    "--out", tmp_path / "ov.onnx")
    assert data["target"] == "openvino" and data["graph_changes"]["conv_act_qdq_removed"] > 0
    assert data["checks"]["argmax_agreement"] > 0.9
    # Figure 10's kernel pooling: AveragePool and the gate's upsampling quantised like the rest
    from mobilenetv3.deploy.quantize import quantize_onnx
    from mobilenetv3.segmentation import SegmentationModel

    spec = get_seg_spec("lraspp_mobilenet_v3_small", 0.35).replace(pooling="kernel", pool_kernel=(2, 2),
                                                                    pool_stride=(1, 1), num_classes=3)
    model = SegmentationModel(spec).eval()
    shape = input_shape_for(model, resolution=(48, 80))
    assert shape == (1, 3, 48, 80)
    g = torch.Generator().manual_seed(0)
    report = quantize_onnx(model, tmp_path / "k.onnx", [torch.randn(shape, generator=g).numpy() for _ in range(2)],
                           input_shape=shape)
    assert report.ops["AveragePool"] == 1 and report.ops["Resize"] == 3
    assert "AveragePool" not in report.float_ops and "Resize" not in report.float_ops


# -- mnv3 eval --file ---------------------------------------------------------------------------------------------
@needs_onnx
def test_eval_file_scores_segmentation_files_as_the_run(seg_run, tmp_path, capsys):
    run_json(capsys, "export", seg_run, "--out", tmp_path / "float.onnx")
    run_json(capsys, "export", seg_run, "--int8", "--calib-samples", 8, "--out", tmp_path / "int8.onnx")
    torch_eval = run_json(capsys, "eval", seg_run)
    float_eval = run_json(capsys, "eval", seg_run, "--file", tmp_path / "float.onnx")
    assert float_eval["file"] == str(tmp_path / "float.onnx") and float_eval["runtime"] == "onnxruntime"
    assert float_eval["file_input_shape"] == [1, 3, 64, 128] and "checkpoint" not in float_eval
    assert float_eval["count"] == torch_eval["count"] == 8 and float_eval["pixels"] == torch_eval["pixels"]
    assert abs(float_eval["miou"] - torch_eval["miou"]) < 1e-6 and torch_eval["miou"] > 5
    assert float_eval["confusion"] == torch_eval["confusion"]
    int8_eval = run_json(capsys, "eval", seg_run, "--file", tmp_path / "int8.onnx")
    # (within 0.2 points here; this toy run's pixel accuracy is less steady: 70% in float, 77% in int8, its
    # activations on the validation scenes leaving the ranges calibrated on 8 training scenes)
    assert abs(int8_eval["miou"] - float_eval["miou"]) < 3
    openvino = pytest.importorskip("openvino")
    assert openvino
    ov_eval = run_json(capsys, "eval", seg_run, "--file", tmp_path / "int8.onnx", "--runtime", "openvino")
    assert ov_eval["runtime"] == "openvino" and abs(ov_eval["miou"] - float_eval["miou"]) < 3
    code, out, err = run(capsys, "eval", seg_run, "--file", tmp_path / "int8.onnx")
    assert code == 0 and f"{tmp_path / 'int8.onnx'} (onnxruntime; run {seg_run})" in out and "mIoU" in out


@needs_onnx
def test_eval_file_of_a_classifier_equals_the_runs_eval(cls_run, tmp_path, capsys):
    run_json(capsys, "export", cls_run, "--out", tmp_path / "b1.onnx")  # a fixed batch-1 file: image by image
    run_json(capsys, "export", cls_run, "--out", tmp_path / "dyn.onnx", "--dynamic-batch", "--input-layout", "nhwc")
    torch_eval = run_json(capsys, "eval", cls_run)
    assert torch_eval["count"] == 20
    for name in ("b1.onnx", "dyn.onnx"):
        file_eval = run_json(capsys, "eval", cls_run, "--file", tmp_path / name)
        assert file_eval["top1"] == torch_eval["top1"] and file_eval["top5"] == torch_eval["top5"]
        assert file_eval["confusion"] == torch_eval["confusion"]
        assert abs(file_eval["loss"] - torch_eval["loss"]) < 1e-4
    assert file_input_shape(tmp_path / "dyn.onnx") == (None, 1, 32, 32)  # an NHWC file, seen as NCHW
    # a file of another resolution gets the run's data prepared at its size
    run_json(capsys, "export", cls_run, "--out", tmp_path / "r40.onnx", "--resolution", 40)
    data = run_json(capsys, "eval", cls_run, "--file", tmp_path / "r40.onnx", "--limit", 4)
    assert data["file_input_shape"] == [1, 1, 40, 40] and data["count"] == 4
    code, out, err = run(capsys, "eval", cls_run, "--file", tmp_path / "b1.onnx")
    assert code == 0 and f"{tmp_path / 'b1.onnx'} (onnxruntime; run {cls_run})" in out and "top-1" in out


@needs_onnx
def test_what_eval_file_and_int8_refuse_is_said_clearly(seg_run, det_run, tmp_path, capsys):
    small = tmp_path / "small.onnx"
    run_json(capsys, "export", seg_run, "--out", small, "--input-size", 48, 96)
    cases = [
        (("eval", seg_run, "--file", small), "takes 48x96 images; these are 64x128"),
        (("eval", seg_run, "--file", tmp_path / "missing.onnx"), "model file not found"),
        (("eval", seg_run, "--runtime", "openvino"), "--runtime runs an exported file"),
        (("eval", seg_run, "--file", small, "--checkpoint", "best"), "--file evaluates the file"),
        (("eval", det_run, "--file", small), "is a detection run"),
        (("export", det_run, "--int8", "--out", tmp_path / "d.onnx"),
         "--int8 export of detection runs is not supported yet"),
        (("export", seg_run, "--int8", "--int8-toolchain", "pt2e", "--out", tmp_path / "s.pt2"),
         "not checked on segmentation models"),
        (("export", seg_run, "--int8", "--check-size", 40, 80, "--out", tmp_path / "s.onnx"),
         "an int8 file takes one size"),
        (("export", seg_run, "--int8", "--calib-data", str(tmp_path), "--out", tmp_path / "s.onnx"),
         "no calibration images in"),
        (("export", seg_run, "--int8-reduce-range", "--out", tmp_path / "s.onnx"), "apply to --int8 exports"),
        (("export", seg_run, "--int8", "--int8-toolchain", "pt2e", "--int8-reduce-range", "--out", tmp_path / "s.pt2"),
         "--int8-reduce-range shapes the QDQ ONNX graph; it does not apply to --int8-toolchain pt2e"),
    ]
    for argv, words in cases:
        code, out, err = run(capsys, *argv)
        assert code == 2 and words in err, (argv, err)
    assert not (tmp_path / "d.onnx").exists() and not (tmp_path / "s.onnx").exists()
    with pytest.raises(InputError, match="takes 3-channel images; these have 1"):
        FileModel(small)(torch.zeros(1, 1, 48, 96))


# -- the pieces ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lraspp_mobilenet_v3_small", "lraspp_mobilenet_v3_large"])
def test_padding_widens_the_skip_that_reads_a_padded_depthwise_output(name):
    """LR-ASPP's skip reads DeepLab's depthwise end point: at width 1.0 that block has 88 (Small) or 120 (Large)
    channels, padded to 96 or 128 for int8, and the skip's classifier must take the extra (zero) channels."""
    from mobilenetv3.deploy import calibrate_bn_on_noise, fold_bn
    from mobilenetv3.deploy.quantize import int8_ready
    from mobilenetv3.segmentation import SegmentationModel

    model = SegmentationModel(get_seg_spec(name, 1.0).replace(num_classes=3))
    calibrate_bn_on_noise(model, 64)
    tap = model.low_tap
    assert tap.kind == "depthwise" and tap.channels % 16
    prepared = int8_ready(model.eval())
    assert prepared.head.classify_low.in_channels == tap.channels + (-tap.channels) % 16
    assert prepared.backbone.features[tap.block].dw.conv.out_channels == prepared.head.classify_low.in_channels
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (prepared(x) - fold_bn(model)(x)).abs().max() < 1e-4


def test_keep_float_names_the_backbone_however_it_is_called():
    from onnx import helper

    names = ["/features/features.1/dw/Conv", "/features.1/dw/Conv", "/features.10/dw/Conv", "/features.0/conv/Conv",
             "/head/conv/conv/Conv", "/Pad", "/features/features.2/dw/conv/Pad", "/features/features.0/conv/Pad"]
    nodes = [helper.make_node("Relu", [f"x{i}"], [f"y{i}"], name=n) for i, n in enumerate(names)]
    proto = helper.make_model(helper.make_graph(nodes, "g", [], []))
    assert float_nodes(proto, ["block1"]) == names[:2]
    # SAME padding's Pad inside a strided block is that block's, not the stem's; a top-level Pad is the stem's
    assert float_nodes(proto, ["stem"]) == [names[3], names[5], names[7]]
    assert float_nodes(proto, ["head"]) == [names[4]] and float_nodes(proto, ["block2"]) == [names[6]]


def test_float_ops_counts_what_is_not_between_dequantise_and_quantise():
    from onnx import TensorProto, helper, numpy_helper

    consts = [numpy_helper.from_array(np.array(v, dtype), n) for v, dtype, n in
              [(0.1, np.float32, "s"), (0, np.uint8, "z"), (1, np.uint8, "lo"), (9, np.uint8, "hi"),
               ([2, 2], np.int64, "shape")]]
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),  # float: reads the float input
        helper.make_node("QuantizeLinear", ["r", "s", "z"], ["q"]),
        helper.make_node("Clip", ["q", "lo", "hi"], ["c"]),  # integer: reads a quantised tensor
        helper.make_node("DequantizeLinear", ["c", "s", "z"], ["d"]),
        helper.make_node("Sigmoid", ["d"], ["g"]),  # int8: DQ -> Sigmoid -> Q
        helper.make_node("QuantizeLinear", ["g", "s", "z"], ["q2"]),
        helper.make_node("DequantizeLinear", ["q2", "s", "z"], ["d2"]),
        helper.make_node("Shape", ["d2"], ["sh"]),  # a size computation: not counted
        helper.make_node("Resize", ["d2", "", "", "shape"], ["y"]),  # float: its output is not quantised
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], consts)
    assert float_ops(helper.make_model(graph)) == {"Relu": 1, "Resize": 1}


def test_segmentation_calibration_reads_the_run_data_lazily_at_the_model_size(fmnist):
    data_info = {"name": SEG_DATA, "channels": 3, "mean": [0.405], "std": [0.175], "data_dir": fmnist}
    batches, label = calibration_for(SEG_DATA, (2, 3, 32, 64), samples=5, run_data=data_info, task="segmentation")
    assert isinstance(batches, RunImages) and len(batches) == 2  # 5 images in batches of 2: the last one dropped
    assert batches[0].shape == (2, 3, 32, 64) and batches[-1].shape == (2, 3, 32, 64)
    assert [b.shape for b in batches[:5]] == [(2, 3, 32, 64)] * 2
    assert label == f"{SEG_DATA} (train split, evaluation transform, resized from 64x128 to 32x64)"
    again, _ = calibration_for(SEG_DATA, (1, 3, 64, 128), samples=5, run_data=data_info, task="segmentation",
                               dynamic_batch=True)
    assert len(again) == 5 and again.indices == batches.indices  # the same seeded choice
    with pytest.raises(CalibrationError, match="calibrates on a run's data"):
        calibration_for(SEG_DATA, (1, 3, 64, 128), task="segmentation")
    with pytest.raises(IndexError):
        batches[2]
