import copy
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from markers import needs_onnx
from mobilenetv3 import build, get_spec
from mobilenetv3.cli import main
from mobilenetv3.deploy import (
    ExportMismatchError,
    calibrate_bn,
    calibrate_bn_on_noise,
    count_batchnorms,
    export_onnx,
    fold_bn,
)
from mobilenetv3.deploy.onnx_export import input_layout_of
from mobilenetv3.latency import InputError, MissingExtraError
from mobilenetv3.layers import SameConv2d


def random_bn(model: nn.Module, resolution: int, seed: int = 0) -> nn.Module:
    """Random BN affine parameters, then running statistics estimated on random images: non-trivial BN everywhere,
    with eval-mode activations (and logits) of order one."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0.0, 0.2, generator=g)
    batches = [torch.randn(4, 3, resolution, resolution, generator=g) for _ in range(2)]
    return calibrate_bn(model, batches)


def model(name: str, resolution: int, **overrides) -> nn.Module:
    return random_bn(build(get_spec(name, **overrides)), resolution)


# -- BN folding ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mobilenet_v3_large", "mobilenet_v3_small", "mobilenet_v2"])
def test_fold_bn_matches_eval_model(name):
    m = model(name, 64)
    n_bn = count_batchnorms(m)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    folded = fold_bn(m)
    assert count_batchnorms(folded) == 0 and count_batchnorms(m) == n_bn > 0
    assert not folded.training
    # The algebra: in float64 folding is exact to rounding.
    m64 = copy.deepcopy(m).double()
    with torch.no_grad():
        ref = m64(x.double())
        assert (fold_bn(m64)(x.double()) - ref).abs().max() < 1e-10
        out32, folded32 = m(x), folded(x)
    assert ref.abs().max() > 0.1  # the outputs are of a size where the comparison means something
    # In float32 the folded model is as close to the float64 result as the unfolded one: folding adds no error
    # beyond float32 rounding (which itself is a few 1e-6 here).
    own_error = (out32.double() - ref).abs().max().item()
    assert (folded32.double() - ref).abs().max().item() <= 2 * own_error + 1e-6
    assert (folded32 - out32).abs().max().item() < 1e-4


def test_fold_bn_weights_and_bias_formula():
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=True)
    bn = nn.BatchNorm2d(4, eps=1e-3)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.5, -1.0, 0.0, 2.0]))
        bn.running_var.copy_(torch.tensor([4.0, 0.25, 1.0, 9.0]))
        bn.weight.copy_(torch.tensor([1.0, 2.0, -1.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.0, 1.0, 0.5, -2.0]))
    seq = nn.Sequential(conv, bn, nn.ReLU())
    folded = fold_bn(seq)
    scale = bn.weight / torch.sqrt(bn.running_var + 1e-3)
    assert isinstance(folded[1], nn.Identity)
    assert torch.allclose(folded[0].weight, conv.weight * scale.view(-1, 1, 1, 1))
    assert torch.allclose(folded[0].bias, (conv.bias - bn.running_mean) * scale + bn.bias)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(folded(x), seq.eval()(x), atol=1e-6)


def test_fold_bn_keeps_original_and_same_padding_class():
    m = model("mobilenet_v3_small", 33, width_mult=0.35, padding="same")
    m.train()
    folded = fold_bn(m)
    assert m.training and count_batchnorms(m) > 0  # the original is untouched
    assert isinstance(folded.features[0].conv, SameConv2d) and folded.features[0].conv.bias is not None
    assert list(dict(folded.named_modules())) == list(dict(m.named_modules()))  # same names, BN -> Identity
    x = torch.randn(1, 3, 33, 33)
    m.eval()
    with torch.no_grad():
        assert (folded(x) - m(x)).abs().max() < 1e-4


def test_fold_bn_without_running_stats_is_refused():
    seq = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(ValueError, match="running statistics"):
        fold_bn(seq)


def test_calibrate_bn_gives_unit_scale_activations_and_keeps_momentum():
    m = build(get_spec("mobilenet_v3_small", 0.35))
    calibrate_bn_on_noise(m, 64, batches=2, batch_size=4)
    assert not m.training
    assert all(b.momentum == m.spec.bn_momentum for b in m.modules() if isinstance(b, nn.BatchNorm2d))
    with torch.no_grad():
        feats = m.forward_features(torch.randn(2, 3, 64, 64))
    assert 0.1 < feats.std().item() < 10  # untrained with default statistics it would be ~1e-8
    with pytest.raises(ValueError, match="at least one batch"):
        calibrate_bn(m, [])


# -- ONNX export ---------------------------------------------------------------------------------------------
@needs_onnx
def test_export_large_dynamic_shapes_agrees_at_three_resolutions(tmp_path):
    m = model("mobilenet_v3_large", 128)
    report = export_onnx(m, tmp_path / "large.onnx", resolution=96, dynamic_batch=True, dynamic_resolution=True,
                         check_resolutions=[96, 128, 161])
    shapes = [c["input_shape"] for c in report.checks]
    assert shapes == [[1, 3, 96, 96], [2, 3, 96, 96], [1, 3, 128, 128], [1, 3, 161, 161]]
    assert report.max_abs_diff < 1e-4
    assert all(c["max_abs_output"] > 0.1 for c in report.checks)
    assert report.opset == 17 and report.folded and report.exporter == "torchscript"
    # the paper's activations stay single ONNX ops; BN is gone
    assert report.ops["HardSwish"] > 0 and report.ops["HardSigmoid"] > 0
    assert "BatchNormalization" not in report.ops
    assert json.loads(json.dumps(report.to_dict()))["max_abs_diff"] == report.max_abs_diff
    assert m.training is False


@needs_onnx
@pytest.mark.parametrize("res", [96, 128, 161])
def test_export_small_one_file_per_resolution(tmp_path, res):
    m = model("mobilenet_v3_small", res)
    report = export_onnx(m, tmp_path / f"small{res}.onnx", resolution=res)
    assert [c["input_shape"] for c in report.checks] == [[1, 3, res, res]]
    assert report.max_abs_diff < 1e-4


@needs_onnx
@pytest.mark.parametrize("exporter", ["torchscript", pytest.param("dynamo", marks=pytest.mark.slow)])
def test_export_with_nhwc_input_agrees_with_eager_on_the_transposed_image(tmp_path, exporter):
    import onnx
    import onnxruntime as ort

    if exporter == "dynamo":
        pytest.importorskip("onnxscript")
    m = model("mobilenet_v3_small", 96, width_mult=0.5)
    path = tmp_path / "nhwc.onnx"
    dynamic_batch = exporter == "torchscript"  # torch.export cannot (a clear error says so)
    report = export_onnx(m, path, resolution=96, dynamic_batch=dynamic_batch, dynamic_resolution=True,
                         check_resolutions=[96, 113], input_layout="nhwc", exporter=exporter)
    assert report.input_layout == "nhwc" and report.max_abs_diff < 1e-4 and len(report.checks) == 2 + dynamic_batch
    assert input_layout_of(path) == "nhwc" and report.ops["Transpose"] == 1
    inp = onnx.load(path).graph.input[0].type.tensor_type.shape.dim
    assert inp[3].dim_value == 3  # channels last
    # independent of verify_onnx: an image fed as H x W x C gives eager's output on the C x H x W tensor
    x = torch.rand(1 + dynamic_batch, 3, 113, 113)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.permute(0, 2, 3, 1).numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), m(x), atol=1e-4, rtol=1e-4)
    nchw = tmp_path / "nchw.onnx"
    export_onnx(m, nchw, resolution=96, exporter=exporter)
    assert input_layout_of(nchw) == "nchw"
    with pytest.raises(ValueError, match="unknown input layout"):
        export_onnx(m, nchw, resolution=96, input_layout="chw")
    if exporter == "dynamo":
        with pytest.raises(ValueError, match="cannot give an NHWC input a dynamic batch"):
            export_onnx(m, path, resolution=96, dynamic_batch=True, input_layout="nhwc", exporter=exporter)


@needs_onnx
def test_export_unfolded_and_same_padding(tmp_path):
    m = model("mobilenet_v3_small", 97, width_mult=0.35, padding="same")
    report = export_onnx(m, tmp_path / "same.onnx", resolution=97, fold=False)
    assert report.max_abs_diff < 1e-4 and not report.folded
    with pytest.raises(ValueError, match="same'-padded"):
        export_onnx(m, tmp_path / "same_dyn.onnx", resolution=97, dynamic_resolution=True)


@needs_onnx
def test_export_errors(tmp_path):
    m = model("mobilenet_v3_small", 64, width_mult=0.35)
    with pytest.raises(ValueError, match="opset"):
        export_onnx(m, tmp_path / "a.onnx", resolution=64, opset=13)
    with pytest.raises(InputError, match="too small"):
        export_onnx(m, tmp_path / "a.onnx", resolution=2)
    with pytest.raises(ValueError, match="exporter"):
        export_onnx(m, tmp_path / "a.onnx", resolution=64, exporter="tf")
    with pytest.raises(ValueError, match="dynamic_resolution"):
        export_onnx(m, tmp_path / "a.onnx", resolution=64, check_resolutions=[96])
    with pytest.raises(ExportMismatchError, match="disagree") as info:
        export_onnx(m, tmp_path / "a.onnx", resolution=64, atol=0.0)
    assert info.value.report.max_abs_diff > 0


def test_export_without_onnx_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    m = build(get_spec("mobilenet_v3_small", 0.35))
    with pytest.raises(MissingExtraError, match=r"mobilenetv3\[deploy\]"):
        export_onnx(m, tmp_path / "a.onnx", resolution=64)


@pytest.mark.slow
def test_export_with_the_dynamo_exporter(tmp_path):
    pytest.importorskip("onnxscript")
    m = model("mobilenet_v3_small", 96, width_mult=0.35)
    report = export_onnx(m, tmp_path / "dyn.onnx", resolution=96, dynamic_batch=True, exporter="dynamo")
    assert report.max_abs_diff < 1e-4 and report.ops["HardSwish"] > 0


def _ort_optimized_ops(path, tmp_path) -> list:
    """The nodes of ONNX Runtime's optimised graph (ORT_ENABLE_ALL, 1 thread) of the file at ``path``."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    options.optimized_model_filepath = str(tmp_path / f"{path.stem}.ort.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return list(onnx.load(options.optimized_model_filepath, load_external_data=False).graph.node)


@needs_onnx
@pytest.mark.parametrize("dynamic_batch", [False, True], ids=["static", "dynamic_batch"])
def test_export_keeps_se_blocks_in_onnxruntime_blocked_layout(tmp_path, dynamic_batch):
    """SE pooling is GlobalAveragePool, the SE gate's broadcast is an explicit nearest Resize (so the Mul has
    two equal shapes) and the classifier a 1x1 Conv; ONNX Runtime then runs the SE Muls in its blocked (NCHWc)
    layout instead of reordering each block's expanded activation out and back in around them."""
    m = model("mobilenet_v3_small", 64)
    n_se = sum(1 for b in m.features if getattr(b, "se", None) is not None)
    report = export_onnx(m, tmp_path / "ort.onnx", resolution=64, dynamic_batch=dynamic_batch)
    scale = max(1.0, max(c["max_abs_output"] for c in report.checks))  # float rounding grows with the logits
    assert report.max_abs_diff < 1e-5 * scale
    assert [c["input_shape"][0] for c in report.checks] == [1, 2][:1 + dynamic_batch]
    assert report.graph_changes == {"se_global_pool": n_se, "se_explicit_broadcast": n_se, "classifier_conv": 1}
    ops = report.ops
    assert "ReduceMean" not in ops and "Gemm" not in ops and "Div" not in ops and "Clip" not in ops
    assert ops["GlobalAveragePool"] == n_se + 1 and ops["Resize"] == n_se and ops["Mul"] == n_se
    assert ops["HardSigmoid"] == n_se and ops["HardSwish"] > 0  # the gates stay single ops

    plain = export_onnx(m, tmp_path / "plain.onnx", resolution=64, dynamic_batch=dynamic_batch, ort_nchwc=False)
    assert plain.graph_changes == {} and plain.ops["ReduceMean"] == n_se and plain.ops["Gemm"] == 1
    new_nodes = _ort_optimized_ops(tmp_path / "ort.onnx", tmp_path)
    old_nodes = _ort_optimized_ops(tmp_path / "plain.onnx", tmp_path)

    def reorders(nodes):
        return sum(n.op_type in ("ReorderInput", "ReorderOutput") for n in nodes)

    if not any(n.domain == "com.microsoft.nchwc" for n in old_nodes):
        pytest.skip("ONNX Runtime uses no blocked layout on this CPU")
    produced_by = {o: n for n in new_nodes for o in n.output}
    muls = [n for n in new_nodes if n.op_type == "Mul"]
    assert len(muls) == n_se
    for mul in muls:  # both inputs come straight from blocked-layout nodes, none from a ReorderOutput
        assert all(produced_by[i].domain == "com.microsoft.nchwc" and produced_by[i].op_type != "ReorderOutput"
                   for i in mul.input), mul.name
    assert not any(n.op_type in ("Add", "Sum", "Reshape") for n in new_nodes)  # residual Adds fused into convs
    assert reorders(new_nodes) <= reorders(old_nodes) - n_se


@needs_onnx
def test_export_graph_passes_with_dynamic_resolution(tmp_path):
    """With a symbolic height and width the SE broadcast stays implicit (a Resize needs constant scales); the
    pooling and classifier rewrites still apply and the export agrees with eager at other sizes."""
    m = model("mobilenet_v3_small", 64, width_mult=0.5)
    report = export_onnx(m, tmp_path / "dyn.onnx", resolution=64, dynamic_resolution=True,
                         check_resolutions=[64, 80, 97])
    assert report.max_abs_diff < 1e-4 and len(report.checks) == 3
    assert report.graph_changes["se_explicit_broadcast"] == 0 and "Resize" not in report.ops
    assert report.graph_changes["se_global_pool"] > 0 and report.graph_changes["classifier_conv"] == 1


# -- CLI -----------------------------------------------------------------------------------------------------
def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@needs_onnx
def test_cli_export_json(capsys, tmp_path):
    out_file = tmp_path / "small.onnx"
    code, out, _ = run(capsys, "export", "mobilenet_v3_small", "--format", "onnx", "--out", str(out_file),
                       "--dynamic-batch", "--resolution", "96", "--json")
    assert code == 0 and out_file.is_file()
    data = json.loads(out)
    assert data["ok"] and data["opset"] == 17 and data["dynamic_batch"] and not data["dynamic_resolution"]
    assert data["input_shape"] == [1, 3, 96, 96] and data["max_abs_diff"] < 1e-4
    assert [c["input_shape"][0] for c in data["checks"]] == [1, 2]
    assert data["trained_weights"] is False and data["checks"][0]["max_abs_output"] > 1e-3  # BN calibrated


@needs_onnx
def test_cli_export_nhwc(capsys, tmp_path):
    out_file = tmp_path / "nhwc.onnx"
    common = ["export", "mobilenet_v3_small", "--width-mult", "0.35", "--resolution", "64", "--out", str(out_file),
              "--input-layout", "nhwc"]
    code, out, _ = run(capsys, *common, "--json")
    data = json.loads(out)
    assert code == 0 and data["input_layout"] == "nhwc" and data["input_shape"] == [1, 3, 64, 64]
    assert input_layout_of(out_file) == "nhwc" and data["max_abs_diff"] < 1e-4
    code, out, _ = run(capsys, *common)
    assert code == 0 and "input 1x64x64x3 (NHWC)" in out
    code, out, err = run(capsys, *common, "--int8", "--calib-data", "noise", "--calib-samples", "4")
    assert code == 0 and "input 1x64x64x3 (NHWC)" in out, err
    assert input_layout_of(out_file) == "nhwc"
    code, _, err = run(capsys, *common, "--format", "litert")
    assert code == 2 and "--input-layout nhwc applies to ONNX exports" in err


@needs_onnx
def test_cli_export_table_and_errors(capsys, tmp_path, monkeypatch):
    code, out, _ = run(capsys, "export", "mobilenet_v3_small", "--width-mult", "0.35", "--out",
                       str(tmp_path / "s.onnx"), "--resolution", "64")
    assert code == 0 and "HardSwish" in out and "ok: within 0.0001" in out
    code, _, err = run(capsys, "export", "mobilenet_v3_small", "--out", str(tmp_path / "s.onnx"), "--opset", "11")
    assert code == 2 and "opset" in err
    code, _, err = run(capsys, "export", "mobilenet_v3_small", "--width-mult", "0.35", "--out",
                       str(tmp_path / "s.onnx"), "--resolution", "64", "--atol", "0")
    assert code == 1 and "disagree" in err
    code, _, err = run(capsys, "export", str(tmp_path / "no_such_run"), "--out", str(tmp_path / "s.onnx"))
    assert code == 2 and "run directory not found" in err
    monkeypatch.setitem(sys.modules, "onnx", None)
    code, _, err = run(capsys, "export", "mobilenet_v3_small", "--out", str(tmp_path / "s.onnx"))
    assert code == 2 and "mobilenetv3[deploy]" in err


@needs_onnx
def test_cli_export_and_latency_of_a_run_dir(capsys, tmp_path):
    checkpoint = pytest.importorskip("mobilenetv3.train.checkpoint")
    spec = get_spec("mobilenet_v3_small", 0.35, num_classes=10, resolution=64)
    trained = random_bn(build(spec), 64, seed=3)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"train": {}, "data": {}}))
    spec.save(run_dir / "spec.json")
    weights = checkpoint.weights_bytes(trained.state_dict(), None, spec)
    checkpoint.save_checkpoint(run_dir, weights, {"format": checkpoint.STATE_FORMAT}, {"global_step": 1})
    out_file = tmp_path / "run.onnx"
    code, out, err = run(capsys, "export", str(run_dir), "--out", str(out_file), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["trained_weights"] and data["input_shape"] == [1, 3, 64, 64] and data["max_abs_diff"] < 1e-4
    # the file holds the run's weights
    import onnxruntime as ort

    x = torch.randn(1, 3, 64, 64)
    got = ort.InferenceSession(str(out_file), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        assert (torch.from_numpy(got) - trained(x)).abs().max() < 1e-4
    code, out, err = run(capsys, "latency", str(run_dir), "--warmup", "1", "--min-runs", "2", "--min-seconds", "0",
                         "--json")
    assert code == 0, err
    assert json.loads(out)["results"][0]["trained_weights"] is True


# -- LiteRT (the litert extra; skipped without it) --------------------------------------------------------------
needs_litert = pytest.mark.skipif(importlib.util.find_spec("litert_torch") is None,
                                  reason="needs the litert extra (litert-torch)")


@needs_litert
def test_export_litert_agrees_with_eager(tmp_path):
    from mobilenetv3.deploy import export_litert

    m = model("mobilenet_v3_small", 96, width_mult=0.35)
    report = export_litert(m, tmp_path / "small.tflite", resolution=96)
    assert (tmp_path / "small.tflite").stat().st_size > 0
    assert report.opset is None and report.exporter.startswith("litert-torch")
    assert report.max_abs_diff < 1e-4 and report.checks[0]["max_abs_output"] > 0.1
    assert report.ops.get("HARD_SWISH", 0) > 0


def test_litert_missing_names_its_extra(tmp_path, monkeypatch):
    from mobilenetv3.deploy import export_litert

    monkeypatch.setitem(sys.modules, "litert_torch", None)
    m = build(get_spec("mobilenet_v3_small", 0.35))
    with pytest.raises(MissingExtraError, match=r"mobilenetv3\[litert\]"):
        export_litert(m, tmp_path / "a.tflite", resolution=64)
    code = main(["export", "mobilenet_v3_small", "--width-mult", "0.35", "--format", "litert", "--out",
                 str(tmp_path / "a.tflite"), "--resolution", "64"])
    assert code == 2
    assert main(["export", "mobilenet_v3_small", "--format", "litert", "--dynamic-batch", "--out",
                 str(tmp_path / "a.tflite")]) == 2


def test_importing_deploy_for_fold_bn_loads_no_export_or_onnx_module():
    code = ("import sys\n"
            "from mobilenetv3 import build, get_spec\n"
            "from mobilenetv3.deploy import fold_bn, count_batchnorms\n"
            "import mobilenetv3.deploy as deploy\n"
            "folded = fold_bn(build(get_spec('mobilenet_v3_small', 0.35)))\n"
            "assert count_batchnorms(folded) == 0\n"
            "assert 'fold_bn' in deploy.__all__ and 'export_onnx' in dir(deploy)\n"
            "loaded = [m for m in ('onnx', 'onnxruntime', 'mobilenetv3.deploy.onnx_export',\n"
            "                      'mobilenetv3.deploy.quantize', 'mobilenetv3.latency') if m in sys.modules]\n"
            "print(','.join(loaded) or 'none')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none"


def test_deploy_names_load_on_first_use_and_unknown_names_fail():
    import mobilenetv3.deploy as deploy

    for name in deploy.__all__:
        assert getattr(deploy, name) is not None
    from mobilenetv3.deploy.onnx_export import export_onnx as home

    assert deploy.export_onnx is home
    with pytest.raises(AttributeError, match="no_such_name"):
        deploy.no_such_name  # noqa: B018


def test_writable_output_creates_missing_directories_and_names_a_bad_path(tmp_path):
    from mobilenetv3.deploy.output import OutputPathError, writable_output

    assert writable_output(tmp_path / "a" / "b" / "m.onnx") == tmp_path / "a" / "b" / "m.onnx"
    assert (tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("not a directory")
    bad = tmp_path / "file" / "sub" / "m.onnx"
    with pytest.raises(OutputPathError, match=f"cannot write {bad}: {tmp_path / 'file'} is a file"):
        writable_output(bad)
    with pytest.raises(OutputPathError, match="is a directory"):
        writable_output(tmp_path / "a")
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            with pytest.raises(OutputPathError, match="not writable"):
                writable_output(locked / "m.onnx")
        finally:
            locked.chmod(0o700)


@needs_onnx
def test_export_to_a_path_that_cannot_be_written_names_it(tmp_path, capsys):
    from mobilenetv3.deploy.output import OutputPathError

    (tmp_path / "file").write_text("not a directory")
    out = tmp_path / "file" / "m.onnx"
    m = build(get_spec("mobilenet_v3_small", 0.35))
    with pytest.raises(OutputPathError, match=f"cannot write {out}"):
        export_onnx(m, out, resolution=32)
    for extra in ((), ("--format", "litert"), ("--int8", "--calib-data", "noise")):
        code, _, err = run(capsys, "export", "mobilenet_v3_small", "--width-mult", "0.35", "--resolution", "32",
                           "--out", str(out), *extra)
        assert code == 2 and f"cannot write {out}" in err and "is a file, not a directory" in err, (extra, err)
        assert "Errno" not in err
