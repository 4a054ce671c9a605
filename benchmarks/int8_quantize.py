"""int8 post-training quantisation: what each graph change buys, which toolchain is faster, what accuracy costs.

    python benchmarks/int8_quantize.py ablation             # ORT float vs int8 set-ups, Large and Small, 224, b1, 1T
    python benchmarks/int8_quantize.py ablation --runtime openvino   # the same for OpenVINO's int8 set-ups
    python benchmarks/int8_quantize.py toolchains           # ORT int8 vs PT2E (X86InductorQuantizer + Inductor)
    python benchmarks/int8_quantize.py accuracy RUN_DIR     # Fashion-MNIST top-1: float, int8, int8 after reload

``ablation`` starts from a plain ``quantize_static`` call and adds the graph changes of
:mod:`mobilenetv3.deploy.quantize` one at a time (each also left out of the default, to see it the other way),
times every set-up in interleaved rounds against ONNX Runtime float on the same BN-folded model, and prints
ONNX Runtime's per-node profile summed by kind of layer for float, the plain call and the default. Latency does
not depend on the weights, so these models have random weights, BatchNorm calibrated on noise, and are calibrated
on seeded noise. ``accuracy`` quantises a trained run calibrated on its own training images.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mobilenetv3 import build
from mobilenetv3.deploy import calibrate_bn_on_noise, export_onnx
from mobilenetv3.deploy.quantize import (
    INT8_TARGETS,
    PLAIN,
    Int8Options,
    calibration_data,
    compile_pt2e,
    evaluate_onnx,
    evaluate_torch,
    load_pt2e,
    profile_onnx,
    quantize_onnx,
    quantize_pt2e,
    random_calibration_data,
    replace_options,
    save_pt2e,
)
from mobilenetv3.latency import (
    CLOCKS,
    isa_cap_note,
    machine_info,
    openvino_compile,
    ort_session,
    percentile,
    pinned_threads,
    profile_openvino,
    time_interleaved,
)

MODELS = ["mobilenet_v3_large", "mobilenet_v3_small"]
DEFAULT = Int8Options()
# label: options (None: ONNX Runtime float). The "+" rows add one change to the plain call, cumulatively; the
# "default -" rows take one out of the default.
SETUPS: dict[str, Int8Options | None] = {
    "float (ORT, BN folded)": None,
    "int8 plain quantize_static": PLAIN,
    "+ pad depthwise to 16": replace_options(PLAIN, pad_depthwise=16),
    "+ int8 hard-swish": replace_options(PLAIN, pad_depthwise=16, int8_hardswish=True),
    "+ SE GlobalAveragePool": replace_options(PLAIN, pad_depthwise=16, int8_hardswish=True,
                                              se_pool="global_average_pool"),
    "+ stem float (= default - block1)": replace_options(DEFAULT, keep_float=("stem",)),
    "+ block1 float (= default)": DEFAULT,
    "default - pad depthwise": replace_options(DEFAULT, pad_depthwise=0),
    "default - int8 hard-swish": replace_options(DEFAULT, int8_hardswish=False),
    "default - SE GlobalAveragePool": replace_options(DEFAULT, se_pool="reduce_mean"),
    "default, stem int8 padded to 4 ch": replace_options(DEFAULT, keep_float=("block1",), pad_stem=True),
    "default, SE float": replace_options(DEFAULT, keep_float=("stem", "block1", "se")),
    "default, int8 activations (S8S8)": replace_options(DEFAULT, activation_type="int8"),
}
BRIEF = ("float (ORT, BN folded)", "int8 plain quantize_static", "+ block1 float (= default)")
# ``ablation --runtime openvino``: the same files compiled by OpenVINO (f32 inference precision for what stays
# float), from ONNX Runtime's set-up to OpenVINO's (``INT8_TARGETS["openvino"]``) and variations of it.
OV = INT8_TARGETS["openvino"]
OV_FLOAT, OV_BF16 = "float (OpenVINO f32, BN folded)", "bf16 (OpenVINO, reduced precision)"
SETUPS_OPENVINO: dict[str, Int8Options | None] = {
    OV_FLOAT: None,
    "int8 plain quantize_static": PLAIN,
    "int8 ONNX Runtime's set-up": DEFAULT,
    "ORT's - int8 hard-swish": replace_options(DEFAULT, int8_hardswish=False),
    "+ conv/activation Q/DQ removed (= target)": OV,
    "target - pad depthwise": replace_options(OV, pad_depthwise=0),
    "target, stem and block 1 int8 too": replace_options(OV, keep_float=()),
    "target - SE GlobalAveragePool": replace_options(OV, se_pool="reduce_mean"),
    "target, depthwise in float": replace_options(OV, keep_float=(*OV.keep_float, "/dw/")),
    OV_BF16: None,
}
BRIEF_OPENVINO = (OV_FLOAT, "int8 ONNX Runtime's set-up", "+ conv/activation Q/DQ removed (= target)", OV_BF16)


def layer_kind(node: str, op: str) -> str:
    """Which part of the network an ONNX Runtime profile node belongs to."""
    if op.startswith("Reorder") or op == "Transpose":
        return "layout (reorder/transpose)"
    if "/se/" in node:
        return "SE"
    if "HardSwish" in node or op == "Clip":
        return "hard-swish"
    if op in ("QuantizeLinear", "DequantizeLinear"):
        return "Q/DQ"
    for k, label in (("dw", "depthwise conv"), ("expand", "expand 1x1 conv"), ("project", "project 1x1 conv")):
        if f"/{k}/" in node:
            return label
    if re.search(r"features\.0/", node):
        return "stem"
    if "conv_head" in node or "classifier" in node or "pool" in node.lower() or re.search(r"features\.\d+/conv", node):
        return "last conv, pool, head"
    if "Add" in op:
        return "residual add"
    return "other"


def kinds(path: str) -> dict[str, float]:
    prof = profile_onnx(path, runs=40)
    out: dict[str, float] = {}
    for n in prof["nodes"]:
        k = layer_kind(n["node"], n["op"])
        out[k] = out.get(k, 0.0) + n["ms"]
    out["total (kernels)"] = prof["total_ms"]
    return out


def openvino_kinds(path: str, bf16: bool = False) -> dict[str, float]:
    prof = profile_openvino(path, runs=40, precision="bf16" if bf16 else "f32")
    return {**prof["by_kind"], "total (counters)": prof["total_ms"]}


def interleaved(runners: dict[str, object], rounds: int, min_seconds: float, clock: str = "wall"
                ) -> dict[str, list[float]]:
    """Each runner timed ``rounds`` times, round after round (see ``mobilenetv3.latency.time_interleaved``)."""
    return time_interleaved(runners, rounds=rounds, warmup=5, min_runs=30, min_seconds=min_seconds, clock=clock)


def _runners(paths: dict[str, str], feed: np.ndarray, runtime: str, threads: int) -> dict[str, object]:
    if runtime == "onnxruntime":
        sessions = {label: ort_session(p, threads) for label, p in paths.items()}
        return {label: (lambda s=s: s.run(None, {"input": feed})) for label, s in sessions.items()}
    runners = {}
    for label, p in paths.items():
        request = openvino_compile(p, threads, "bf16" if label == OV_BF16 else "f32").create_infer_request()
        runners[label] = lambda r=request: r.infer({0: feed})
    return runners


def ablation(args) -> dict:
    info = machine_info()
    rows, breakdown = [], {}
    ov = args.runtime == "openvino"
    table, brief = (SETUPS_OPENVINO, BRIEF_OPENVINO) if ov else (SETUPS, BRIEF)
    setups = {k: v for k, v in table.items() if not args.brief or k in brief}
    for name in args.models:
        model = build(name).eval()
        calibrate_bn_on_noise(model, args.resolution, batches=2, batch_size=4)
        shape = (1, 3, args.resolution, args.resolution)
        calib = random_calibration_data(shape, args.calib_samples)
        with tempfile.TemporaryDirectory() as tmp:
            paths: dict[str, str] = {}
            float_path = None  # one float export serves f32 and bf16
            for i, (label, options) in enumerate(setups.items()):
                print(f"  {name}: {label} ...", file=sys.stderr, flush=True)
                if options is None:
                    if float_path is None:  # OpenVINO reads the export without ONNX Runtime's layout rewrites
                        float_path = os.path.join(tmp, "float.onnx")
                        export_onnx(model, float_path, input_shape=shape, verify=False, ort_nchwc=not ov)
                    paths[label] = float_path
                else:
                    paths[label] = os.path.join(tmp, f"{i}.onnx")
                    quantize_onnx(model, paths[label], calib, input_shape=shape, options=options, verify=False)
            runners = _runners(paths, calib[0], args.runtime, args.threads)
            medians = interleaved(runners, args.rounds, args.min_seconds, args.clock)
            base = percentile(medians[next(iter(setups))], 50)
            for label in setups:
                med = percentile(medians[label], 50)
                rows.append({"model": name, "setup": label, "median_ms": med, "round_medians_ms": medians[label],
                             "vs_float": base / med})
            if not args.no_profile:
                breakdown[name] = {label: (openvino_kinds(paths[label], label == OV_BF16) if ov
                                           else kinds(paths[label])) for label in brief if label in paths}
    info["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    return {"machine": info, "resolution": args.resolution, "threads": args.threads, "rounds": args.rounds,
            "clock": args.clock, "rows": rows, "breakdown": breakdown, "runtime": args.runtime,
            "onnxruntime": __import__("onnxruntime").__version__,
            "openvino": __import__("openvino").__version__ if ov else None}


def print_ablation(res: dict) -> None:
    m = res["machine"]
    print(f"CPU: {m['cpu']}, {res['threads']} thread(s), batch 1, {res['resolution']}x{res['resolution']}, "
          f"{res['rounds']} interleaved rounds, {res['clock']} clock, onnxruntime {res['onnxruntime']}"
          + (f", OpenVINO {res['openvino']}" if res.get("openvino") else "") + f", {m['date']}, "
          f"load average "
          f"{m['load_avg_1m']} -> {m['load_avg_1m_end']}{isa_cap_note(m.get('onednn_max_cpu_isa'))}")
    ov = res.get("runtime") == "openvino"
    print(f"{'model':<20} {'set-up':<42} {'median ms':>10} {'round range':>14} {'vs float':>9}")
    for r in res["rows"]:
        lo, hi = min(r["round_medians_ms"]), max(r["round_medians_ms"])
        print(f"{r['model']:<20} {r['setup']:<42} {r['median_ms']:>10.3f} {f'{lo:.2f}-{hi:.2f}':>14} "
              f"{r['vs_float']:>8.2f}x")
    for name, table in res["breakdown"].items():
        labels = list(table)
        keys = sorted({k for d in table.values() for k in d}, key=lambda k: -max(d.get(k, 0) for d in table.values()))
        print(f"\n{name}: " + ("OpenVINO's per-layer counters (PERF_COUNT), each node's median ms, summed by layer "
                              "type and kernel" if ov else "ONNX Runtime profile, each node's median kernel ms, "
                              "summed by kind"))
        width = 56 if ov else 28
        print(f"{'kind':<{width}}" + "".join(f"{lb[:26]:>28}" for lb in labels))
        for k in keys:
            print(f"{k[:width - 1]:<{width}}" + "".join(f"{table[lb].get(k, 0.0):>28.3f}" for lb in labels))


# -- toolchains ---------------------------------------------------------------------------------------------
def toolchains(args) -> dict:
    from mobilenetv3.deploy.fold import fold_bn

    info = machine_info()
    rows = []
    for name in args.models:
        model = build(name).eval()
        calibrate_bn_on_noise(model, args.resolution, batches=2, batch_size=4)
        shape = (1, 3, args.resolution, args.resolution)
        calib = random_calibration_data(shape, args.calib_samples)
        x = torch.from_numpy(calib[0])
        with pinned_threads(args.threads), tempfile.TemporaryDirectory() as tmp:
            export_onnx(model, f"{tmp}/f.onnx", input_shape=shape, verify=False)
            quantize_onnx(model, f"{tmp}/q.onnx", calib, input_shape=shape, verify=False)
            sf, sq = ort_session(f"{tmp}/f.onnx", args.threads), ort_session(f"{tmp}/q.onnx", args.threads)
            feed = {"input": calib[0]}
            build_s = {}
            t0 = time.perf_counter()
            pt2e = quantize_pt2e(model, [torch.from_numpy(c) for c in calib])
            build_s["pt2e int8 quantise"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            compiled_q = compile_pt2e(pt2e, x, cpp_wrapper=args.cpp_wrapper)
            build_s["pt2e int8 compile"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            compiled_f = compile_pt2e(fold_bn(model), x, cpp_wrapper=args.cpp_wrapper)  # same Inductor set-up
            build_s["inductor float compile"] = time.perf_counter() - t0

            def no_grad(fn, x=x):
                def run():
                    with torch.no_grad():
                        return fn(x)
                return run

            runners = {"ORT float": lambda s=sf, f=feed: s.run(None, f),
                       "ORT int8 (default set-up)": lambda s=sq, f=feed: s.run(None, f),
                       "Inductor float (freezing)": no_grad(compiled_f),
                       "PT2E int8 + Inductor (freezing)": no_grad(compiled_q)}
            medians = interleaved(runners, args.rounds, args.min_seconds, args.clock)
        base = percentile(medians["ORT float"], 50)
        for label, ms in medians.items():
            med = percentile(ms, 50)
            rows.append({"model": name, "setup": label, "median_ms": med, "round_medians_ms": ms,
                         "vs_ort_float": base / med})
        rows[-1]["build_s"] = build_s
    info["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    return {"machine": info, "rows": rows, "resolution": args.resolution, "threads": args.threads,
            "rounds": args.rounds, "clock": args.clock, "cpp_wrapper": args.cpp_wrapper, "torch": torch.__version__}


def print_toolchains(res: dict) -> None:
    m = res["machine"]
    print(f"CPU: {m['cpu']}, {res['threads']} thread(s), batch 1, {res['resolution']}x{res['resolution']}, torch "
          f"{res['torch']}, Inductor cpp_wrapper={res['cpp_wrapper']}, {res['rounds']} interleaved rounds, "
          f"{res['clock']} clock, "
          f"{m['date']}, load average {m['load_avg_1m']} -> {m['load_avg_1m_end']}"
          f"{isa_cap_note(m.get('onednn_max_cpu_isa'))}")
    print(f"{'model':<20} {'set-up':<34} {'median ms':>10} {'round range':>14} {'vs ORT float':>13}")
    for r in res["rows"]:
        lo, hi = min(r["round_medians_ms"]), max(r["round_medians_ms"])
        print(f"{r['model']:<20} {r['setup']:<34} {r['median_ms']:>10.3f} {f'{lo:.2f}-{hi:.2f}':>14} "
              f"{r['vs_ort_float']:>12.2f}x")
        if "build_s" in r:
            print("  build: " + ", ".join(f"{k} {v:.1f} s" for k, v in r["build_s"].items()))


# -- accuracy -----------------------------------------------------------------------------------------------
RELOAD_SNIPPET = """
import json, sys
from mobilenetv3.deploy.quantize import evaluate_onnx
from mobilenetv3.train.evaluate import run_eval_dataset
d = json.loads(sys.argv[2])
ds = run_eval_dataset(d)
r = evaluate_onnx(sys.argv[1], ds, limit=d.get("limit"), runtime=sys.argv[3])
print(json.dumps({"top1": r["top1"], "count": r["count"], "predictions": r["predictions"].tolist()}))
"""


def accuracy(args) -> dict:
    from mobilenetv3.train import load_run
    from mobilenetv3.train.evaluate import run_eval_dataset

    torch.set_num_threads(args.threads)  # more threads than idle cores makes PyTorch crawl on a shared machine
    model, config = load_run(args.run_dir, checkpoint=args.checkpoint, weights=args.weights)
    d = config["data"]
    res, channels = d["resolution"], d["channels"]
    # the run's validation data, as `mnv3 eval RUN_DIR` sees it (its held-out training images for a --holdout run)
    test = run_eval_dataset(d)
    calib = calibration_data(d["name"], resolution=res, channels=channels, mean=d["mean"], std=d["std"],
                             samples=args.calib_samples, split="train", data_dir=d.get("data_dir"),
                             crop_fraction=d.get("crop_fraction"))
    out: dict = {"run_dir": str(args.run_dir), "checkpoint": args.checkpoint, "weights": args.weights,
                 "data": d["name"], "resolution": res, "channels": channels, "calibration_samples": len(calib),
                 "machine": machine_info(), "results": {}}
    results = out["results"]
    f = evaluate_torch(model, test, limit=args.limit)
    results["float (PyTorch eager)"] = f["top1"]
    outdir = Path(args.out or tempfile.mkdtemp(prefix="int8_acc_"))
    outdir.mkdir(parents=True, exist_ok=True)
    shape = (1, channels, res, res)
    export_onnx(model, outdir / "float.onnx", input_shape=shape)
    results["float (ORT, BN folded)"] = evaluate_onnx(outdir / "float.onnx", test, limit=args.limit)["top1"]
    # label: (options, the runtime that runs the file)
    variants = {"int8 ORT default": (INT8_TARGETS["onnxruntime"], "onnxruntime"),
                "int8 ORT plain quantize_static": (PLAIN, "onnxruntime")}
    if importlib.util.find_spec("openvino") is not None:
        variants["int8 OpenVINO target, run by OpenVINO"] = (INT8_TARGETS["openvino"], "openvino")
    for label, (options, runtime) in variants.items():
        path = outdir / (re.sub(r"\W+", "_", label) + ".onnx")
        t0 = time.perf_counter()
        report = quantize_onnx(model, path, calib, input_shape=shape, options=options)
        r = evaluate_onnx(path, test, limit=args.limit, runtime=runtime)
        results[label] = r["top1"]
        results[label + ": argmax agreement with float"] = 100.0 * float((r["predictions"] == f["predictions"]).mean())
        out.setdefault("quantize_s", {})[label] = round(time.perf_counter() - t0, 1)
        out.setdefault("graph_changes", {})[label] = report.graph_changes
        # Round trip: a fresh process loads the saved file and evaluates it again.
        spec = {**d, "limit": args.limit}
        proc = subprocess.run([sys.executable, "-c", RELOAD_SNIPPET, str(path), json.dumps(spec), runtime],
                              capture_output=True, text=True, check=True)
        reloaded = json.loads(proc.stdout.strip().splitlines()[-1])
        results[label + ", reloaded in a new process"] = reloaded["top1"]
        results[label + ": reloaded predictions identical"] = bool(np.array_equal(reloaded["predictions"],
                                                                                  r["predictions"]))
    if args.pt2e:
        example_calib = [torch.from_numpy(c) for c in calib]
        q = quantize_pt2e(model, example_calib)
        r = _eval_fixed(q, test, args.limit)  # the exported program has the calibration batch shape
        results["int8 PT2E (X86InductorQuantizer)"] = r["top1"]
        save_pt2e(q, outdir / "int8_pt2e.pt2", example_calib[0])
        loaded = load_pt2e(outdir / "int8_pt2e.pt2")
        r2 = _eval_fixed(loaded, test, args.limit)
        results["int8 PT2E, saved and loaded (.pt2)"] = r2["top1"]
        results["int8 PT2E: reloaded predictions identical"] = bool(np.array_equal(r["predictions"], r2["predictions"]))
    out["files"] = str(outdir)
    return out


def _eval_fixed(module, dataset, limit) -> dict:
    """Evaluate an exported-shape (batch 1) module one image at a time."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    preds, labels = [], []
    with torch.no_grad():
        for i in range(n):
            x, y = dataset[i]
            preds.append(int(module(x[None]).argmax(1)))
            labels.append(y)
    p, lab = np.array(preds), np.array(labels)
    return {"top1": 100.0 * float((p == lab).mean()), "predictions": p}


def print_accuracy(res: dict) -> None:
    m = res["machine"]
    print(f"{res['run_dir']} ({res['checkpoint']} checkpoint, {res['weights']} weights), {res['data']} test set at "
          f"{res['resolution']}x{res['resolution']}x{res['channels']}, calibrated on {res['calibration_samples']} "
          f"training images; {m['cpu']}, {m['date']}{isa_cap_note(m.get('onednn_max_cpu_isa'))}")
    for k, v in res["results"].items():
        print(f"  {k:<58} {v if isinstance(v, bool) else f'{v:.2f}%'}")
    print(f"files in {res['files']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    for what in ("ablation", "toolchains"):
        p = sub.add_parser(what)
        p.add_argument("--models", nargs="+", default=MODELS)
        p.add_argument("--resolution", type=int, default=224)
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--rounds", type=int, default=3)
        p.add_argument("--min-seconds", type=float, default=1.5)
        p.add_argument("--calib-samples", type=int, default=8)
        p.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                       help="wall (default) or cpu: this thread's CPU time, for a machine busy with other work")
        p.add_argument("--json", metavar="FILE")
        if what == "ablation":
            p.add_argument("--runtime", choices=("onnxruntime", "openvino"), default="onnxruntime",
                           help="the runtime that runs every set-up (openvino: its own list of set-ups)")
            p.add_argument("--brief", action="store_true", help="only float, the plain call and the default")
            p.add_argument("--no-profile", action="store_true")
        else:
            p.add_argument("--cpp-wrapper", action="store_true", help="Inductor's C++ wrapper (less Python overhead)")
    p = sub.add_parser("accuracy")
    p.add_argument("run_dir")
    p.add_argument("--checkpoint", default="best")
    p.add_argument("--weights", default="ema")
    p.add_argument("--calib-samples", type=int, default=256)
    p.add_argument("--limit", type=int)
    p.add_argument("--pt2e", action="store_true", help="also PT2E int8, and its save/load round trip")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="folder for the model files (default: a new temporary folder)")
    p.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    if args.what == "ablation":
        res = ablation(args)
        print_ablation(res)
    elif args.what == "toolchains":
        res = toolchains(args)
        print_toolchains(res)
    else:
        res = accuracy(args)
        print_accuracy(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
