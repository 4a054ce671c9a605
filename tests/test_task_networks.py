"""`mnv3 profile`, `mnv3 latency` and `mnv3 export` for segmentation and detection networks by name or spec file
(issues 17 and 18): the lookup across the tasks' registries, Tables 7 and 6 through `mnv3 profile`, latency at any
input size (a detector up to its head outputs), a network without a run exported and checked, and the refusals."""

import json

import pytest
import torch

from markers import needs_onnx
from mobilenetv3.cli import main
from mobilenetv3.detection import RawOutputs, build_detection, det_cost, get_det_spec
from mobilenetv3.segmentation import get_seg_spec, seg_cost
from mobilenetv3.spec import SpecError
from mobilenetv3.tasks.lookup import UnknownNetworkError, named_network, resolve_network, spec_file_network
from mobilenetv3.train.evaluate import load_network
from mobilenetv3.zoo import get_spec

torch.set_num_threads(1)
QUICK = ("--warmup", "0", "--min-runs", "1", "--min-seconds", "0")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- lookup ------------------------------------------------------------------------------------------------------
def test_a_name_is_found_in_its_tasks_registry():
    assert named_network("mobilenet_v3_small") == ("classification", get_spec("mobilenet_v3_small"))
    assert named_network("mobilenet_v3_large_075")[1] == get_spec("mobilenet_v3_large", 0.75)
    assert named_network("lraspp_mobilenet_v3_large", 0.5) == ("segmentation",
                                                               get_seg_spec("lraspp_mobilenet_v3_large", 0.5))
    assert named_network("ssdlite_mobilenet_v3_small_y") == ("detection", get_det_spec("ssdlite_mobilenet_v3_small_y"))


def test_an_unknown_name_lists_every_tasks_names_and_the_close_ones():
    with pytest.raises(UnknownNetworkError) as e:
        named_network("lraspp_mobilenet_v3_smal")
    message = str(e.value)
    assert "Did you mean lraspp_mobilenet_v3_small" in message
    for known in ("mobilenet_v2", "raspp_mobilenet_v3_small", "ssdlite_mnasnet_a1"):
        assert known in message


def test_a_spec_file_is_read_as_the_kind_it_is(tmp_path):
    specs = {"classification": get_spec("mobilenet_v3_small", 0.5),
             "segmentation": get_seg_spec("raspp_mobilenet_v3_small"),
             "detection": get_det_spec("ssdlite_mobilenet_v3_small_y")}
    for task, spec in specs.items():
        spec.save(tmp_path / f"{task}.json")
        assert spec_file_network(tmp_path / f"{task}.json") == (task, spec)
    (tmp_path / "other.json").write_text('{"name": "x", "layers": 3}')
    with pytest.raises(SpecError, match="not a spec file of any task") as e:
        spec_file_network(tmp_path / "other.json")
    assert all(f"as a {task} spec" in str(e.value) for task in specs)
    with pytest.raises(FileNotFoundError, match="spec file not found"):
        spec_file_network(tmp_path / "missing.json")
    # a spec file given where a name goes is read as one
    assert resolve_network(str(tmp_path / "detection.json")) == ("detection", specs["detection"])
    with pytest.raises(ValueError, match="exactly one"):
        resolve_network("mobilenet_v3_small", str(tmp_path / "classification.json"))
    with pytest.raises(ValueError, match="--width-mult applies to zoo models"):
        resolve_network(None, str(tmp_path / "segmentation.json"), 0.5)


def test_a_network_without_a_run_loads_with_calibrated_batchnorm():
    model, task, trained = load_network("ssdlite_mobilenet_v3_small", width_mult=0.35, size=(64, 64))
    assert (task, trained) == ("detection", False)
    bn = model.backbone.features[0].bn
    assert not torch.equal(bn.running_var, torch.ones_like(bn.running_var))  # statistics from noise, not the init


# -- profile -----------------------------------------------------------------------------------------------------
def test_profile_gives_table_7_and_table_6_figures(capsys):
    """Table 7 row 8 (V3, RF2, LR-ASPP F=128, 19 classes at the 1025x2049 crop: 1.51M, 9.74B) and Table 6's
    SSDLite V3-Small (2.49M, 0.21B at 320x320), each within 3%, and equal to the cost functions' own counts."""
    code, out, _ = run(capsys, "profile", "lraspp_mobilenet_v3_large", "--input-size", 1025, 2049, "--json")
    seg = json.loads(out)
    assert code == 0 and seg["task"] == "segmentation" and seg["resolution"] == [1025, 2049]
    assert abs(seg["params"] / 1.51e6 - 1) < 0.03 and abs(seg["madds"] / 9.74e9 - 1) < 0.03
    cost = seg_cost(get_seg_spec("lraspp_mobilenet_v3_large"), (1025, 2049))
    assert (seg["params"], seg["madds"]) == (cost.params, cost.madds)
    code, out, _ = run(capsys, "profile", "ssdlite_mobilenet_v3_small", "--json")
    det = json.loads(out)
    assert code == 0 and det["task"] == "detection" and det["resolution"] == [320, 320]
    assert abs(det["params"] / 2.49e6 - 1) < 0.03 and abs(det["madds"] / 0.21e9 - 1) < 0.03
    assert det["params"] == det_cost(get_det_spec("ssdlite_mobilenet_v3_small")).params


def test_profile_defaults_and_spec_files(tmp_path, capsys):
    code, out, _ = run(capsys, "profile", "raspp_mobilenet_v3_small")
    assert code == 0 and out.startswith("raspp_mobilenet_v3_small (segmentation) at 1024x2048")
    spec = get_seg_spec("lraspp_mobilenet_v3_small").replace(num_classes=11)
    spec.save(tmp_path / "seg.json")
    code, out, _ = run(capsys, "profile", tmp_path / "seg.json", "--resolution", 128, "--json")
    assert code == 0 and json.loads(out)["madds"] == seg_cost(spec, 128).madds
    code, out, _ = run(capsys, "profile", "mobilenet_v3_small", "--json")
    assert json.loads(out)["task"] == "classification" and json.loads(out)["resolution"] == [224, 224]


@pytest.mark.parametrize("argv, words", [
    (("lraspp_v3",), "unknown model 'lraspp_v3'"),
    (("ssdlite_mobilenet_v3_small", "--input-size", 64, 64, "--resolution", 64), "give the input size once"),
    (("ssdlite_mobilenet_v3_small", "--input-size", 0, 64), "--input-size must be positive"),
])
def test_profile_refuses_clearly(capsys, argv, words):
    code, _, err = run(capsys, "profile", *argv)
    assert code == 2 and words in err


# -- latency -----------------------------------------------------------------------------------------------------
def test_latency_of_a_detector_times_its_head_outputs(capsys):
    code, out, _ = run(capsys, "latency", "ssdlite_mobilenet_v3_small", "--width-mult", 0.35, "--input-size", 64, 96,
                       *QUICK, "--json")
    result = json.loads(out)["results"][0]
    assert code == 0 and result["input_shape"] == [1, 3, 64, 96] and result["median_ms"] > 0
    assert (result["task"], result["timed"], result["trained_weights"]) == ("detection", "head outputs", False)
    assert result["model"].startswith("ssdlite_mobilenet_v3_small")
    code, out, _ = run(capsys, "latency", "ssdlite_mobilenet_v3_small", "--width-mult", 0.35, "--resolution", 64,
                       *QUICK)
    assert code == 0 and "decoding and NMS are not timed" in out


def test_raw_outputs_are_the_detectors_head_outputs():
    det = build_detection(get_det_spec("ssdlite_mobilenet_v3_small", 0.35)).eval()
    x = torch.randn(1, 3, 64, 64)
    wrapped = RawOutputs(det)
    assert wrapped.spec is det.spec and wrapped.backbone_spec == det.backbone_spec
    for a, b in zip(wrapped(x), det(x, raw=True), strict=True):
        torch.testing.assert_close(a, b)


def test_latency_of_a_segmentation_network_at_any_size(capsys):
    code, out, _ = run(capsys, "latency", "lraspp_mobilenet_v3_small", "--width-mult", 0.35, "--input-size", 48, 80,
                       *QUICK, "--json")
    result = json.loads(out)["results"][0]
    assert code == 0 and result["input_shape"] == [1, 3, 48, 80] and result["task"] == "segmentation"


def test_latency_refuses_what_does_not_apply(tmp_path, capsys):
    spec = get_seg_spec("lraspp_mobilenet_v3_small", 0.35).replace(pooling="kernel", pool_kernel=(4, 4),
                                                                    pool_stride=(1, 1))
    spec.save(tmp_path / "k.json")
    cases = [
        (("lraspp_mobilenet_v3_small", "--per-layer"), "--per-layer profiles classifiers"),
        (("ssdlite_mobilenet_v3_small", "--predict", tmp_path / "t.json"), "--predict: latency tables cover"),
        (("--spec", tmp_path / "k.json", "--input-size", 32, 32), "pool"),
        (("mobilenet_v3_small", "--input-size", 64, 96, "--predict", tmp_path / "t.json"), "square input"),
    ]
    for argv, words in cases:
        code, _, err = run(capsys, "latency", *argv, *QUICK)
        assert code == 2 and words in err, (argv, err)


# -- export ------------------------------------------------------------------------------------------------------
@needs_onnx
def test_networks_without_a_run_export_and_check(tmp_path, capsys):
    code, out, _ = run(capsys, "export", "lraspp_mobilenet_v3_small", "--width-mult", 0.35, "--input-size", 64, 96,
                       "--out", tmp_path / "seg.onnx", "--json")
    seg = json.loads(out)
    assert code == 0 and seg["ok"] and seg["task"] == "segmentation" and seg["trained_weights"] is False
    assert seg["input_shape"] == [1, 3, 64, 96] and seg["checks"][0]["max_abs_diff"] <= 1e-4
    code, out, _ = run(capsys, "export", "ssdlite_mobilenet_v3_small", "--width-mult", 0.35, "--resolution", 96,
                       "--out", tmp_path / "det.onnx")
    assert code == 0 and "seeded random inputs (random weights, no run)" in out and "NonMaxSuppression" in out


@needs_onnx
@pytest.mark.parametrize("argv, words", [
    (("lraspp_mobilenet_v3_small", "--int8"), "calibrates on a trained run's data"),
    (("ssdlite_mobilenet_v3_small", "--check-images", 2), "--check-images N (N >= 0) applies to detection runs"),
])
def test_export_of_a_network_without_a_run_refuses_clearly(tmp_path, capsys, argv, words):
    code, _, err = run(capsys, "export", *argv, "--out", tmp_path / "x.onnx")
    assert code == 2 and words in err
    assert not (tmp_path / "x.onnx").exists()


def test_models_lists_every_tasks_networks(capsys):
    code, out, _ = run(capsys, "models", "--json")
    data = json.loads(out)
    assert code == 0 and data["models"][0]["name"] == "mobilenet_v3_large_035"
    seg = {r["name"]: r for r in data["segmentation"]}
    det = {r["name"]: r for r in data["detection"]}
    assert set(det) == {"ssdlite_mobilenet_v3_large", "ssdlite_mobilenet_v3_large_y", "ssdlite_mobilenet_v3_small",
                        "ssdlite_mobilenet_v3_small_y", "ssdlite_mobilenet_v2", "ssdlite_mnasnet_a1"}
    row = seg["lraspp_mobilenet_v3_large"]
    assert row["resolution"] == [1024, 2048] and row["num_classes"] == 19
    assert row["params"] == seg_cost(get_seg_spec("lraspp_mobilenet_v3_large"), (1024, 2048)).params
    assert det["ssdlite_mobilenet_v3_small_y"]["madds"] == det_cost(get_det_spec("ssdlite_mobilenet_v3_small_y")).madds
