"""What each side of the peer comparison prepares: the peers' paths (torchvision and timm, in the peer environment)
and ours (:data:`OUR_PATHS`, in this process or a capped worker), each a runner called once already.

Models have random weights and BatchNorm statistics estimated on noise: latency does not depend on the weights,
and realistic activation scales keep denormal numbers out.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ...inputs import example_input
from ...latency.targets import prepare_runtime
from ...runtime.cpu import onednn_isa_cap, pinned_threads
from ...runtime.onnxruntime import ort_session
from ...spec import ArchSpec

# ours: label -> path, in the order they are timed; a path is a runtime, or "RUNTIME:nhwc" for an OpenVINO
# runtime fed N x H x W x C images (``prepare_runtime(input_layout="nhwc")``, see :func:`path_runtime`)
OUR_PATHS = {"ours eager (channels-last)": "eager", "ours frozen (TorchScript)": "frozen",
             "ours ONNX -> ORT float": "onnxruntime", "ours ONNX -> ORT int8": "onnxruntime-int8",
             "ours ONNX -> OpenVINO f32": "openvino", "ours ONNX -> OpenVINO f32, NHWC input": "openvino:nhwc",
             "ours ONNX -> OpenVINO int8": "openvino-int8",
             "ours ONNX -> OpenVINO int8, NHWC input": "openvino-int8:nhwc",
             "ours ONNX -> OpenVINO bf16": "openvino-bf16"}


def path_runtime(path: str) -> tuple[str, str]:
    """The runtime and input layout of one of :data:`OUR_PATHS`' paths: ``"openvino:nhwc"`` ->
    ``("openvino", "nhwc")``, ``"eager"`` -> ``("eager", "nchw")``."""
    runtime, _, layout = path.partition(":")
    return runtime, layout or "nchw"


PEER_MODELS = {"mobilenet_v3_large": "mobilenetv3_large_100", "mobilenet_v3_small": "mobilenetv3_small_100"}


def noise_bn(model: nn.Module, resolution: int) -> nn.Module:
    """``model`` with BatchNorm statistics estimated on seeded noise (the peers' models: random weights)."""
    from ...deploy.fold import calibrate_bn

    g = torch.Generator().manual_seed(0)
    return calibrate_bn(model, [torch.randn(4, 3, resolution, resolution, generator=g) for _ in range(2)])


def peer_prepare(models: Sequence[str], resolution: int, threads: int, tmp: str, onnx: bool = True,
                 int8: bool = False) -> tuple[dict, dict]:
    """(Runs in the peer environment.) The peers' paths for each of ``models``, each called once: torchvision
    eager (NCHW as shipped, and channels-last), timm eager; with ``onnx`` (and ONNX Runtime installed) the
    torchvision and timm models exported by their own ``torch.onnx.export`` (its default exporter) in an ONNX
    Runtime session set up as ours; with ``int8`` the torchvision export quantised by a plain
    ``quantize_static`` call. Random weights, BatchNorm statistics estimated on noise."""
    import copy

    import timm
    import torchvision

    torch.set_num_threads(threads)
    x = torch.randn(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
    runners: dict = {}
    info: dict = {"torch": torch.__version__, "torchvision": torchvision.__version__, "timm": timm.__version__,
                  "details": {}}
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
    except ImportError as e:
        ort = None
        info["onnx_missing"] = str(e)

    def eager(m, inp):
        def run():
            with torch.inference_mode():
                return m(inp)
        return run

    def session_run(session):
        feed = {session.get_inputs()[0].name: x.numpy()}
        return lambda: session.run(None, feed)

    def exported(m, path):
        import warnings

        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            torch.onnx.export(m, (x,), path, input_names=["input"], output_names=["output"], verbose=False)
        return session_run(ort_session(path, threads))

    for name in models:
        tv = noise_bn(getattr(torchvision.models, name)(weights=None), resolution).eval()
        tv_cl = copy.deepcopy(tv).to(memory_format=torch.channels_last)
        tm = noise_bn(timm.create_model(PEER_MODELS[name], pretrained=False), resolution).eval()
        runs = {"torchvision eager (NCHW)": eager(tv, x),
                "torchvision eager channels-last": eager(tv_cl, x.contiguous(memory_format=torch.channels_last)),
                "timm eager (NCHW)": eager(tm, x)}
        if onnx and ort is not None:
            tv_path = os.path.join(tmp, f"{name}_tv.onnx")
            runs["torchvision ONNX -> ORT float"] = exported(tv, tv_path)
            runs["timm ONNX -> ORT float"] = exported(tm, os.path.join(tmp, f"{name}_timm.onnx"))
            if int8:
                from ...deploy.quantize import random_calibration_data

                qpath = os.path.join(tmp, f"{name}_tv_int8.onnx")
                plain_quantize_static(tv_path, qpath, random_calibration_data(tuple(x.shape), 8, seed=1))
                runs["torchvision ONNX -> ORT int8 (plain quantize_static)"] = session_run(ort_session(qpath, threads))
        for label, fn in runs.items():
            fn()  # first-call set-up outside the timing
            runners[(name, label)] = fn
        info["details"][name] = list(runs)
    return runners, info


def plain_quantize_static(path: str, out: str, calibration: Sequence[Any]) -> None:
    """A plain ``quantize_static`` call (QDQ, per-channel int8 weights, uint8 activations): the reference point
    the issue names for int8."""
    import logging

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    input_name = onnx.load(path, load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calibration)

        def get_next(self):
            b = next(self.it, None)
            return None if b is None else {input_name: b}

    logging.getLogger().setLevel(logging.ERROR)
    quantize_static(path, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def ours_prepare(models: Sequence[str], resolution: int, threads: int, paths: Sequence[str],
                 suffix: str = "", on_step: Callable[[str], None] | None = None) -> tuple[dict, dict]:
    """Our ``paths`` (of :data:`OUR_PATHS`) for each of ``models`` (random weights, BatchNorm statistics from noise) as
    :func:`compare_with_peers` times them, in its process or in a worker (under an instruction-set cap): runners
    keyed ``(model, label)``, each label its :data:`OUR_PATHS` label plus ``suffix``. ``on_step(label)`` after
    each one."""
    from ...zoo import get_spec

    labels = {path: label + suffix for label, path in OUR_PATHS.items()}
    runners: dict = {}
    info: dict = {"torch": torch.__version__, "onednn_max_cpu_isa": onednn_isa_cap(), "details": {}}
    with pinned_threads(threads):
        for name in models:
            model = bench_model(get_spec(name), resolution)
            x = example_input(model, resolution)
            info["details"][name] = {}
            for path in paths:
                runtime, layout = path_runtime(path)
                prepared = prepare_runtime(runtime, model, x, threads, input_layout=layout)
                runners[(name, labels[path])] = prepared.run
                info["details"][name][labels[path]] = prepared.detail
                if on_step is not None:
                    on_step(labels[path])
    torch.set_num_threads(threads)  # a worker's timings run outside the block
    return runners, info


def bench_model(spec: ArchSpec, resolution: int) -> nn.Module:
    """A model of ``spec`` with random weights and BatchNorm statistics estimated on noise: latency does not
    depend on the weights, and realistic activation scales keep denormal numbers out."""
    from ...deploy.fold import calibrate_bn_on_noise
    from ...model import build

    return calibrate_bn_on_noise(build(spec).eval(), resolution, batches=2, batch_size=2).eval()


__all__ = ["OUR_PATHS", "PEER_MODELS", "bench_model", "noise_bn", "ours_prepare", "path_runtime", "peer_prepare",
           "plain_quantize_static"]
