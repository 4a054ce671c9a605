import dataclasses
import json
import os
import sys

import pytest
import torch

from mobilenetv3 import build, get_spec, spec_cost
from mobilenetv3.cli import main
from mobilenetv3.latency import (
    InputError,
    MissingExtraError,
    check_input,
    check_input_shape,
    layer_names,
    measure_latency,
    min_resolution,
    profile_layers,
    profile_onnxruntime,
    require,
)
from mobilenetv3.runtime.cpu import u8s8_saturates

FAST = dict(warmup=1, min_runs=3, min_seconds=0.0)


@pytest.fixture(scope="module")
def small():
    return build(get_spec("mobilenet_v3_small", 0.35)).eval()


# -- runtimes ----------------------------------------------------------------------------------------------
def test_measure_eager_reports_everything_and_restores_threads(small):
    torch.set_num_threads(2)
    try:
        r = measure_latency(small, runtime="eager", resolution=64, threads=1, **FAST)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    d = r.to_dict()
    assert d["threads"] == 1 and d["runtime"] == "eager" and d["input_shape"] == [1, 3, 64, 64]
    assert d["runs"] >= 3 and d["p10_ms"] <= d["median_ms"] <= d["p90_ms"]
    for key in ("mean_ms", "cpu", "date", "load_avg_1m", "runtime_version", "detail", "model"):
        assert key in d
    assert "channels_last" in d["detail"]
    json.dumps(d)


def test_measure_restores_training_mode():
    m = build(get_spec("mobilenet_v3_small", 0.35)).train()
    measure_latency(m, resolution=32, **FAST)
    assert m.training
    profile_layers(m, resolution=32, warmup=0, runs=1)
    assert m.training


def test_measure_frozen_and_batch(small):
    r = measure_latency(small, runtime="frozen", resolution=64, batch=2, **FAST)
    assert r.input_shape == (2, 3, 64, 64) and r.extra["frozen_method"] == "torchscript"
    r = measure_latency(small, runtime="frozen", resolution=64, channels_last=False,
                        frozen_method="torchscript_ofi", **FAST)
    assert "optimize_for_inference" in r.detail and "channels_last" not in r.detail
    with pytest.raises(ValueError, match="frozen method"):
        measure_latency(small, runtime="frozen", resolution=64, frozen_method="tensorrt", **FAST)


def test_measure_onnxruntime(small):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    r = measure_latency(small, runtime="onnxruntime", resolution=64, threads=1, **FAST)
    assert "intra_op_num_threads=1" in r.detail and r.runtime_version
    assert r.stats.runs >= 3


def test_measure_accepts_names_and_specs():
    spec = get_spec("mobilenet_v3_small", 0.35)
    assert measure_latency(spec, resolution=32, **FAST).model == spec.name
    assert measure_latency("mobilenet_v3_small", resolution=32, **FAST).input_shape == (1, 3, 32, 32)


# -- bad inputs --------------------------------------------------------------------------------------------
def test_input_checks(small):
    spec = small.spec
    with pytest.raises(InputError, match="4-D input.*unsqueeze"):
        check_input_shape(spec, (3, 64, 64))
    with pytest.raises(InputError, match="3-channel inputs; got 1"):
        check_input_shape(spec, (1, 1, 64, 64))
    with pytest.raises(InputError, match="batch size"):
        check_input_shape(spec, (0, 3, 64, 64))
    assert min_resolution(spec) == spec.stem_kernel == 3
    with pytest.raises(InputError, match="too small.*at least 3"):
        check_input_shape(spec, (1, 3, 2, 64))
    check_input_shape(spec, (1, 3, 3, 3))  # the smallest it takes
    with pytest.raises(InputError, match="floating-point"):
        check_input(spec, torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(InputError, match="float64 does not match"):
        check_input(spec, torch.zeros(1, 3, 64, 64, dtype=torch.float64))
    with pytest.raises(InputError, match="torch.Tensor"):
        check_input(spec, [[0.0]])


def test_small_inputs_below_the_output_stride_still_run(small):
    # 20 < 32: every stride-2 layer rounds up, the last feature map is 1x1
    with torch.no_grad():
        assert small.forward_features(torch.randn(1, 3, 20, 20)).shape[-2:] == (1, 1)
    assert measure_latency(small, resolution=20, **FAST).input_shape == (1, 3, 20, 20)


def test_measure_rejects_bad_requests(small):
    with pytest.raises(InputError):
        measure_latency(small, resolution=2, **FAST)
    with pytest.raises(InputError):
        measure_latency(small, x=torch.randn(3, 64, 64), **FAST)
    with pytest.raises(InputError):
        measure_latency(small, x=torch.randn(1, 4, 64, 64), **FAST)
    with pytest.raises(InputError):
        measure_latency(small, runtime="frozen", x=torch.randn(1, 3, 64, 64).double(), **FAST)
    with pytest.raises(ValueError, match="unknown runtime"):
        measure_latency(small, runtime="tflite", **FAST)
    with pytest.raises(ValueError, match="threads"):
        measure_latency(small, resolution=32, threads=0, **FAST)


def test_missing_runtime_names_the_extra(small, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(MissingExtraError, match=r"mobilenetv3\[deploy\]"):
        measure_latency(small, runtime="onnxruntime", resolution=32, **FAST)
    with pytest.raises(MissingExtraError, match="pip install onnxscript"):
        require("onnxscript_not_installed_here", extra=None)


# -- per-layer profiles -------------------------------------------------------------------------------------
def test_profile_layers_names_shares_and_madds(small):
    rows = profile_layers(small, resolution=64, warmup=1, runs=3, channels_last=False)  # hooks on `small` itself
    names = [r.name for r in rows]
    n = len(small.spec.blocks)
    assert names == ["stem", *[f"block{i}" for i in range(1, n + 1)], "last_conv", "head"]
    assert [n for n, _ in layer_names(small)] == names
    assert sum(r.share for r in rows) == pytest.approx(1.0)
    assert all(r.median_ms > 0 and r.p90_ms >= r.median_ms for r in rows)
    assert sum(r.madds for r in rows) == spec_cost(small.spec, 64).madds
    # hooks are removed afterwards
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in small.modules())


def test_profile_onnxruntime(small):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    p = profile_onnxruntime(small, resolution=64, warmup=1, runs=2)
    assert p["runs"] == 2 and p["total_ms"] > 0
    assert "Conv" in p["by_op"]
    assert {"stem", "block1", f"block{len(small.spec.blocks)}", "head"} <= set(p["by_stage"])
    assert p["total_ms"] == pytest.approx(sum(p["by_stage"].values()))


# -- CLI -----------------------------------------------------------------------------------------------------
def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_latency_json(capsys):
    code, out, _ = run(capsys, "latency", "mobilenet_v3_small", "--width-mult", "0.35", "--resolution", "64",
                       "--warmup", "1", "--min-runs", "3", "--min-seconds", "0", "--per-layer", "--json")
    assert code == 0
    data = json.loads(out)
    (r,) = data["results"]
    assert r["runtime"] == "eager" and r["threads"] == 1 and r["input_shape"] == [1, 3, 64, 64]
    assert r["vs_eager"] == 1.0 and r["trained_weights"] is False
    assert data["per_layer_eager"][0]["name"] == "stem" and data["per_layer_onnxruntime"] is None


def test_cli_latency_all_runtimes_table(capsys):
    pytest.importorskip("onnxruntime")
    code, out, _ = run(capsys, "latency", "mobilenet_v3_small", "--width-mult", "0.35", "--resolution", "48",
                       "--runtime", "all", "--warmup", "1", "--min-runs", "2", "--min-seconds", "0", "--per-layer")
    assert code == 0
    for word in ("eager", "frozen", "onnxruntime", "median ms", "per stage", "per op type", "random weights"):
        assert word in out


def test_cli_latency_spec_file(capsys, tmp_path):
    path = tmp_path / "tiny.json"
    get_spec("mobilenet_v3_small", 0.35).save(path)
    for argv in (["--spec", str(path)], [str(path)]):
        code, out, err = run(capsys, "latency", *argv, "--resolution", "32", "--warmup", "0", "--min-runs", "1",
                             "--min-seconds", "0", "--json")
        assert code == 0, err
        assert json.loads(out)["results"][0]["model"] == "mobilenet_v3_small_035"


def test_cli_latency_errors(capsys, tmp_path, monkeypatch):
    code, _, err = run(capsys, "latency", "mobilenet_v3_small", "--resolution", "2")
    assert code == 2 and "too small" in err
    code, _, err = run(capsys, "latency", str(tmp_path / "missing_run"))
    assert code == 2 and "run directory not found" in err
    code, _, err = run(capsys, "latency", "mobilenet_v3_smal")
    assert code == 2 and "Did you mean" in err
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    code, _, err = run(capsys, "latency", "mobilenet_v3_small", "--width-mult", "0.35", "--resolution", "32",
                       "--runtime", "onnxruntime")
    assert code == 2 and "mobilenetv3[deploy]" in err


def test_litert_runtime_or_its_missing_extra(small, monkeypatch):
    import importlib.util

    from mobilenetv3.latency import available_runtimes

    if importlib.util.find_spec("litert_torch") is not None:
        assert "litert" in available_runtimes()
        r = measure_latency(small, runtime="litert", resolution=64, **FAST)
        assert r.runtime == "litert" and "num_threads=1" in r.detail
    monkeypatch.setitem(sys.modules, "litert_torch", None)
    assert "litert" not in available_runtimes()
    with pytest.raises(MissingExtraError, match=r"mobilenetv3\[litert\]"):
        measure_latency(small, runtime="litert", resolution=64, **FAST)


# -- OpenVINO (the openvino extra) ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_noise_bn():
    from mobilenetv3.deploy import calibrate_bn_on_noise

    torch.manual_seed(0)
    model = build(get_spec("mobilenet_v3_small", 0.35)).eval()
    model.reset_classifier(10)  # fewer near-ties between random logits for the top-1 comparisons
    return calibrate_bn_on_noise(model, 64, batches=2, batch_size=4).eval()  # realistic activation scales


@pytest.mark.parametrize("resolution", [64, 96])
def test_openvino_float_matches_eager(small_noise_bn, resolution):
    pytest.importorskip("openvino")
    pytest.importorskip("onnx")
    from mobilenetv3.latency import prepare_runtime

    x = torch.randn(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(resolution))
    with torch.no_grad():
        want = small_noise_bn(x).numpy()
    prepared = prepare_runtime("openvino", small_noise_bn, x, 1)
    got = prepared.run()
    assert got.shape == want.shape
    assert abs(got - want).max() < 1e-4  # f32 inference: the float path must not drop to bf16
    assert prepared.extra["inference_precision"] == "f32" and "INFERENCE_NUM_THREADS=1" in prepared.detail


@pytest.mark.parametrize("target", ["onnxruntime", "openvino"])
def test_openvino_int8_agrees_with_onnxruntime_int8_on_the_same_file(small_noise_bn, tmp_path, target):
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    import numpy as np

    from mobilenetv3.deploy.quantize import INT8_TARGETS, quantize_onnx, random_calibration_data
    from mobilenetv3.latency import openvino_compile, openvino_forward, ort_session

    path = tmp_path / "int8.onnx"
    # On an AVX2 CPU without VNNI ONNX Runtime's u8 x s8 kernels saturate (OpenVINO's do not): 7-bit weights, the
    # documented remedy there, keep the two runtimes comparable on every machine.
    options = dataclasses.replace(INT8_TARGETS[target], reduce_range=u8s8_saturates())
    quantize_onnx(small_noise_bn, path, random_calibration_data((1, 3, 64, 64), 8, seed=1), input_shape=(1, 3, 64, 64),
                  verify=False, options=options)
    ov_forward = openvino_forward(openvino_compile(path, threads=1))
    session = ort_session(path, 1)
    g = torch.Generator().manual_seed(5)
    xs = [torch.randn(1, 3, 64, 64, generator=g).numpy() for _ in range(32)]
    ov_out = np.concatenate([ov_forward(x) for x in xs])
    ort_out = np.concatenate([session.run(None, {session.get_inputs()[0].name: x})[0] for x in xs])
    with torch.no_grad():
        float_out = np.concatenate([small_noise_bn(torch.from_numpy(x)).numpy() for x in xs])
    # Both run the same quantised graph: they differ by rounding, well below the quantisation error itself, and
    # mostly pick the same class (random weights and inputs: many near-ties, so not always).
    assert (ov_out.argmax(1) == ort_out.argmax(1)).mean() >= 0.7
    assert np.abs(ov_out - ort_out).mean() < 0.5 * np.abs(ort_out - float_out).mean()


def test_openvino_profile_and_evaluation(small_noise_bn, tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    import numpy as np

    from mobilenetv3.deploy import export_onnx
    from mobilenetv3.deploy.quantize import evaluate_onnx
    from mobilenetv3.latency import profile_openvino

    path = tmp_path / "f.onnx"
    export_onnx(small_noise_bn, path, resolution=64, verify=False, ort_nchwc=False)
    prof = profile_openvino(path, runs=3, warmup=1)
    assert prof["precision"] == "f32" and prof["total_ms"] > 0
    assert prof["total_ms"] == pytest.approx(sum(prof["by_kind"].values()))
    assert any(k.startswith("Convolution (") for k in prof["by_kind"])
    assert any(k.startswith("GroupConvolution (") for k in prof["by_kind"])  # the depthwise convolutions
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(3, 64, 64, generator=g), i % 10) for i in range(6)]
    with torch.no_grad():
        want = np.array([int(small_noise_bn(x[None]).argmax()) for x, _ in data])
    for runtime in ("onnxruntime", "openvino"):
        r = evaluate_onnx(path, data, runtime=runtime, threads=1)
        assert r["count"] == 6 and np.array_equal(r["predictions"], want)
    with pytest.raises(ValueError, match="runtime must be one of"):
        evaluate_onnx(path, data, runtime="tensorrt")


def test_nhwc_input_is_evaluated_alike_and_openvino_drops_the_input_reorder(small_noise_bn, tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    import numpy as np

    from mobilenetv3.deploy import export_onnx
    from mobilenetv3.deploy.quantize import evaluate_onnx
    from mobilenetv3.latency import profile_openvino

    paths = {layout: tmp_path / f"{layout}.onnx" for layout in ("nchw", "nhwc")}
    for layout, path in paths.items():
        export_onnx(small_noise_bn, path, resolution=64, ort_nchwc=False, input_layout=layout)
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(3, 64, 64, generator=g), 0) for _ in range(6)]
    with torch.no_grad():
        want = np.array([int(small_noise_bn(x[None]).argmax()) for x, _ in data])
    for runtime in ("onnxruntime", "openvino"):
        for path in paths.values():  # the dataset's C x H x W images, fed in the layout each file records
            assert np.array_equal(evaluate_onnx(path, data, runtime=runtime, threads=1)["predictions"], want)
    # the latency runtime with an NHWC input computes what the NCHW one does
    from mobilenetv3.latency import example_input, prepare_runtime

    x = example_input(small_noise_bn, 64, 1)
    runs = {layout: prepare_runtime("openvino", small_noise_bn, x, 1, input_layout=layout).run()
            for layout in ("nchw", "nhwc")}
    np.testing.assert_allclose(runs["nhwc"], runs["nchw"], atol=1e-5)
    int8 = {layout: prepare_runtime("openvino-int8", small_noise_bn, x, 1, input_layout=layout)
            for layout in ("nchw", "nhwc")}  # the same calibration, so the same quantisation
    assert "NHWC input" in int8["nhwc"].detail
    np.testing.assert_allclose(int8["nhwc"].run(), int8["nchw"].run(), atol=1e-4)
    with pytest.raises(ValueError, match="applies to the OpenVINO runtimes"):
        prepare_runtime("eager", small_noise_bn, x, 1, input_layout="nhwc")
    # OpenVINO reorders an NCHW input for the stem convolution; an NHWC input reaches the stem as it is
    reorders = {layout: [n["node"] for n in profile_openvino(path, runs=3, warmup=1)["nodes"]
                         if n["kind"].startswith("Reorder") and n["node"].startswith("input")]
                for layout, path in paths.items()}
    assert reorders["nchw"] and not reorders["nhwc"]


_LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sigaltstack as Linux lays it out")


@_LINUX
def test_keeping_signal_stack_gives_the_thread_its_own_stack_back():
    import ctypes

    from mobilenetv3.runtime.signal_stack import StackT, keeping_signal_stack, signal_stack

    before = signal_stack()
    memory = ctypes.create_string_buffer(64 * 1024)
    with keeping_signal_stack():  # what OpenVINO's compile does: a stack of its own on this thread
        assert ctypes.CDLL(None).sigaltstack(ctypes.byref(StackT(ctypes.addressof(memory), 0, len(memory))),
                                             None) == 0
        assert signal_stack() == (ctypes.addressof(memory), 0, len(memory))
    assert signal_stack() == before


_SIGNAL_STACK_SCRIPT = """
import gc, signal, subprocess, sys
from mobilenetv3 import build, get_spec
from mobilenetv3.deploy import export_onnx
from mobilenetv3.latency import openvino_compile, openvino_forward, signal_stack
import numpy as np
path = sys.argv[1]
export_onnx(build(get_spec("mobilenet_v3_small", 0.35)).eval(), path, resolution=32, ort_nchwc=False)
before = signal_stack()
signal.signal(signal.SIGCHLD, lambda *args: None)  # as PyTorch's DataLoader does once it has used workers
first, second = openvino_compile(path), openvino_compile(path)
del first  # released in the order made: OpenVINO's alternate stack for the second model is freed here
openvino_forward(second)(np.zeros((1, 3, 32, 32), np.float32))
del second
gc.collect()
print(signal_stack() == before, flush=True)
subprocess.run([sys.executable, "-c", "pass"], check=True)  # its SIGCHLD runs the Python handler
print("survived", flush=True)
"""


@_LINUX
def test_openvino_models_released_in_order_leave_signal_handlers_working(tmp_path):
    """Two compiled models released first-made-first: without ``keeping_signal_stack`` the child's SIGCHLD
    killed the process with a segmentation fault (OpenVINO 2026.4 left a freed alternate stack on the
    thread). In a fresh process, since the failure takes the process down."""
    pytest.importorskip("openvino")
    import subprocess

    run = subprocess.run([sys.executable, "-c", _SIGNAL_STACK_SCRIPT, str(tmp_path / "m.onnx")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])
    assert run.stdout.split() == ["True", "survived"]


def test_measure_openvino_runtimes(small_noise_bn):
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    r = measure_latency(small_noise_bn, runtime="openvino", resolution=64, clock="cpu", **FAST)
    assert r.runtime == "openvino" and r.runtime_version and r.extra["inference_precision"] == "f32"
    r = measure_latency(small_noise_bn, runtime="openvino-int8", resolution=64, **FAST)
    assert r.runtime == "openvino-int8" and "int8 QDQ" in r.detail and r.extra["int8_graph_changes"]
    r = measure_latency(small_noise_bn, runtime="openvino-bf16", resolution=64, **FAST)
    assert r.extra["inference_precision"] in ("bf16", "f32")  # f32 on CPUs without bf16 support
    json.dumps(r.to_dict())


def test_cli_latency_openvino(capsys):
    pytest.importorskip("openvino")
    pytest.importorskip("onnx")
    code, out, _ = run(capsys, "latency", "mobilenet_v3_small", "--width-mult", "0.35", "--resolution", "64",
                       "--runtime", "openvino", "--warmup", "1", "--min-runs", "3", "--min-seconds", "0", "--json")
    assert code == 0
    result = json.loads(out)["results"][0]
    assert result["runtime"] == "openvino" and result["inference_precision"] == "f32"


def test_cli_latency_of_an_int8_file_in_openvino(capsys, tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    path = str(tmp_path / "q.onnx")
    code, _, err = run(capsys, "export", "mobilenet_v3_small", "--width-mult", "0.35", "--resolution", "32", "--int8",
                       "--int8-target", "openvino", "--calib-data", "noise", "--calib-samples", "4", "--out", path)
    assert code == 0, err
    fast = ("--warmup", "1", "--min-runs", "3", "--min-seconds", "0")
    code, out, err = run(capsys, "latency", path, "--runtime", "openvino", "--per-layer", *fast, "--json")
    assert code == 0, err
    data = json.loads(out)
    result = data["results"][0]
    assert result["runtime"] == "openvino-int8" and result["inference_precision"] == "f32"
    assert result["input_shape"] == [1, 3, 32, 32] and result["runs"] >= 3
    kinds = data["per_layer_openvino"]["by_op"]
    assert any("_I8)" in k for k in kinds)  # int8 kernels ran
    code, out, err = run(capsys, "latency", path, *fast)  # ONNX Runtime, the default for a file
    assert code == 0 and "onnxruntime-int8" in out, err
    code, _, err = run(capsys, "latency", path, "--runtime", "eager")
    assert code == 2 and "ONNX Runtime or OpenVINO" in err


_CAP_SCRIPT = """
import sys
from mobilenetv3.latency import machine_info, onednn_isa_cap, set_onednn_isa_cap
def attempt(isa):
    try:
        return set_onednn_isa_cap(isa)
    except (ValueError, RuntimeError) as e:
        return f"{type(e).__name__}: {e}"
if sys.argv[1] == "openvino-first":
    import openvino  # noqa: F401  (oneDNN may read the variable from here on)
    print(attempt("AVX2")); print(onednn_isa_cap())
else:
    print(onednn_isa_cap()); print(attempt("avx513")); print(attempt(" avx512_core_vnni"))
    print(onednn_isa_cap(), machine_info()["onednn_max_cpu_isa"]); print(attempt("AVX512_CORE_VNNI"))
    print(attempt("AVX2"))
"""


def test_onednn_isa_cap_checks_its_value_and_when_it_is_set():
    """In fresh processes: oneDNN reads the variable once per process, and the checks look at what this process
    has loaded (the test process has OpenVINO loaded by other tests)."""
    import subprocess

    from mobilenetv3.latency import ONEDNN_ISA_VARIABLE

    env = {k: v for k, v in os.environ.items() if k != ONEDNN_ISA_VARIABLE}

    def lines(mode):
        return subprocess.run([sys.executable, "-c", _CAP_SCRIPT, mode], env=env, check=True, capture_output=True,
                              text=True).stdout.splitlines()

    out = lines("plain")
    assert out[0] == "None"
    assert out[1].startswith("ValueError: unknown oneDNN instruction set 'avx513'") and "AVX512_CORE_VNNI" in out[1]
    assert out[2] == "AVX512_CORE_VNNI" and out[3] == "AVX512_CORE_VNNI AVX512_CORE_VNNI"
    assert out[4] == "AVX512_CORE_VNNI"  # the same value again: fine
    assert out[5].startswith("ValueError: $ONEDNN_MAX_CPU_ISA is already 'AVX512_CORE_VNNI'")
    assert "keeps the first value" in out[5]
    pytest.importorskip("openvino")
    out = lines("openvino-first")
    assert out[0].startswith("RuntimeError: OpenVINO is already loaded") and "before importing openvino" in out[0]
    assert out[1] == "None"


def test_onednn_isa_cap_moves_openvino_int8_off_amx(tmp_path):
    """On a CPU with AMX, OpenVINO runs the int8 1x1 convolutions on AMX tiles; under ``--onednn-max-isa
    AVX512_CORE_VNNI`` the same file runs on AVX-512 VNNI kernels (OpenVINO's counters name the kernel)."""
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    import subprocess

    from mobilenetv3.latency import ONEDNN_ISA_VARIABLE, cpu_peak

    if not cpu_peak()["amx_int8"]:
        pytest.skip("this CPU has no AMX: nothing to move off")
    env = {k: v for k, v in os.environ.items() if k != ONEDNN_ISA_VARIABLE}
    cli = [sys.executable, "-m", "mobilenetv3"]
    path = str(tmp_path / "q.onnx")
    subprocess.run([*cli, "export", "mobilenet_v3_small", "--width-mult", "0.35", "--resolution", "64", "--int8",
                    "--int8-target", "openvino", "--calib-data", "noise", "--calib-samples", "4", "--out", path],
                   env=env, check=True, capture_output=True)
    fast = ["--runtime", "openvino", "--per-layer", "--warmup", "1", "--min-runs", "3", "--min-seconds", "0", "--json"]
    kernels, results = {}, {}
    for cap in (None, "avx512_core_vnni"):  # each in a process of its own: oneDNN reads the cap once
        out = subprocess.run([*cli, "latency", path, *fast, *(["--onednn-max-isa", cap] if cap else [])], env=env,
                             check=True, capture_output=True, text=True).stdout
        data = json.loads(out)
        kernels[cap], results[cap] = " ".join(data["per_layer_openvino"]["by_op"]), data["results"][0]
    assert "amx" in kernels[None] and "_I8" in kernels[None]
    assert "amx" not in kernels["avx512_core_vnni"] and "_I8" in kernels["avx512_core_vnni"]
    assert results[None]["onednn_max_cpu_isa"] is None
    assert results["avx512_core_vnni"]["onednn_max_cpu_isa"] == "AVX512_CORE_VNNI"
    assert "ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI" in results["avx512_core_vnni"]["detail"]
    table = subprocess.run([*cli, "latency", path, *fast[:-1]], env=env, check=True, capture_output=True,
                           text=True).stdout  # the human table points an uncapped AMX run at the cap
    assert "try --onednn-max-isa AVX512_CORE_VNNI" in table


def test_missing_openvino_names_the_extra(small, monkeypatch):
    from mobilenetv3.latency import available_runtimes

    monkeypatch.setitem(sys.modules, "openvino", None)
    assert "openvino" not in available_runtimes()
    for runtime in ("openvino", "openvino-int8", "openvino-bf16"):
        with pytest.raises(MissingExtraError, match=r"mobilenetv3\[openvino\]"):
            measure_latency(small, runtime=runtime, resolution=32, **FAST)
