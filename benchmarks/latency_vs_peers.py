"""Our MobileNetV3 runtimes against torchvision's and timm's, measured in the same run: 1 thread, batch 1, 224x224.

    python benchmarks/latency_vs_peers.py                       # Large and Small
    python benchmarks/latency_vs_peers.py --peer-python PATH    # the peer environment's python
    python benchmarks/latency_vs_peers.py --json out.json

Ours (in this process, torch of the core environment): eager (channels-last), frozen (TorchScript trace +
freeze), ONNX Runtime float (BN-folded export) and ONNX Runtime int8 (``mobilenetv3.deploy.quantize`` defaults).
The peers (torchvision and timm need a newer torch, so they run in a subprocess with the peer environment's
python: ``--peer-python``, else ``$MNV3_PEER_PYTHON``, else ``.peer-venv/bin/python`` (``make peer-setup``),
else ``/work/peer-venv/bin/python``): torchvision eager (NCHW as shipped, and channels-last), torchvision exported
by its own ``torch.onnx.export`` (the default, dynamo-based exporter) in ONNX Runtime, the same export quantised
by a plain ``quantize_static`` call (the issue's reference point), and timm eager. Every path is prepared first,
then timed in ``--rounds`` interleaved rounds (ours, then the peers', round after round; the two processes never
run at the same time), with the same harness (``mobilenetv3.latency.time_callable``); the figure is the median of
the rounds' medians.

Every model has random weights with BatchNorm statistics estimated on noise (latency does not depend on the
weights; realistic activation scales keep denormals out), and the int8 models are calibrated on seeded noise.
The table gives each path's ratio against the peers' fastest float path for the same model, and its achieved
multiply-adds per second next to this CPU's single-core peak (see :func:`cpu_peak`).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # the peer environment runs this file without the package installed

from mobilenetv3.deploy.fold import calibrate_bn  # noqa: E402  (pure PyTorch: fine in either environment)
from mobilenetv3.latency import machine_info, percentile, time_callable  # noqa: E402

MODELS = {"mobilenet_v3_large": "mobilenetv3_large_100", "mobilenet_v3_small": "mobilenetv3_small_100"}
# wall: perf_counter; cpu: the calling thread's CPU time, which leaves out the time the scheduler gives other
# processes on a busy machine (with one thread, PyTorch and ONNX Runtime compute on the calling thread)
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


# -- the CPU's peak ----------------------------------------------------------------------------------------
def cpu_peak(fma_units: int = 2) -> dict:
    """Single-core peak multiply-adds per second from /proc/cpuinfo: clock x SIMD lanes x FMA units.

    fp32: one FMA instruction does ``lanes`` multiply-adds (16 with AVX-512, 8 with AVX2), and a core issues
    ``fma_units`` of them per cycle (2 on Xeon Scalable "Gold/Platinum" and later cores; /proc/cpuinfo cannot
    tell, so it is an argument). int8: one VNNI ``vpdpbusd`` does 4 u8 x s8 products into each 32-bit lane,
    64 per 512-bit instruction (32 for 256-bit AVX-VNNI); without VNNI, ``vpmaddubsw`` + ``vpmaddwd`` give half
    that. The clock is /proc/cpuinfo's "cpu MHz" (under a hypervisor the nominal clock, not the turbo one).
    AMX (``amx_int8``) has a far higher int8 peak (1024 MACs per cycle per core) but ONNX Runtime's int8
    convolutions do not use it.
    """
    flags, mhz, model = set(), None, "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "flags" and not flags:
                flags = set(value.split())
            elif key == "cpu MHz" and mhz is None:
                mhz = float(value)
            elif key == "model name" and model == "unknown":
                model = value.strip()
    except OSError:
        pass
    ghz = (mhz or 0.0) / 1000
    if "avx512f" in flags:
        lanes, isa = 16, "AVX-512"
    elif "avx2" in flags and "fma" in flags:
        lanes, isa = 8, "AVX2+FMA"
    else:
        lanes, isa = 4, "SSE"
    if "avx512_vnni" in flags:
        int8_per_instr, int8_isa = 64, "AVX-512 VNNI"
    elif "avx_vnni" in flags:
        int8_per_instr, int8_isa = 32, "AVX-VNNI"
    else:
        int8_per_instr, int8_isa = lanes * 2, f"{isa} (vpmaddubsw)"
    return {"cpu": model, "ghz": ghz, "fma_units": fma_units, "isa": isa, "fp32_lanes": lanes,
            "fp32_gmadds": ghz * fma_units * lanes, "int8_isa": int8_isa, "int8_per_instruction": int8_per_instr,
            "int8_gmacs": ghz * fma_units * int8_per_instr, "amx_int8": "amx_int8" in flags,
            "flags": sorted(f for f in flags if f.startswith(("avx", "fma", "amx")))}


# -- peer worker (runs under the peer environment's python) ------------------------------------------------
def _noise_bn(model: torch.nn.Module, resolution: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    return calibrate_bn(model, [torch.randn(4, 3, resolution, resolution, generator=g) for _ in range(2)])


def peer_prepare(models: list[str], resolution: int, threads: int, tmp: str) -> tuple[dict, dict]:
    import timm
    import torchvision

    torch.set_num_threads(threads)
    x = torch.randn(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
    runners: dict = {}
    info: dict = {"torch": torch.__version__, "torchvision": torchvision.__version__, "timm": timm.__version__,
                  "details": {}}
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

        info["onnxruntime"] = ort.__version__
    except ImportError as e:
        ort = None
        info["onnx_missing"] = str(e)
    for name in models:
        tv = _noise_bn(getattr(torchvision.models, name)(weights=None), resolution).eval()
        tv_cl = copy.deepcopy(tv).to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        tm = _noise_bn(timm.create_model(MODELS[name], pretrained=False), resolution).eval()

        def eager(m, inp):
            def run():
                with torch.inference_mode():
                    return m(inp)
            return run

        runs = {"torchvision eager (NCHW)": eager(tv, x), "torchvision eager channels-last": eager(tv_cl, x_cl),
                "timm eager (NCHW)": eager(tm, x)}
        if ort is not None:
            path = os.path.join(tmp, f"{name}_tv.onnx")
            with torch.no_grad():
                torch.onnx.export(tv, (x,), path, input_names=["input"], output_names=["output"], verbose=False)
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.log_severity_level = 3
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            feed = {session.get_inputs()[0].name: x.numpy()}
            runs["torchvision ONNX -> ORT float"] = lambda s=session, f=feed: s.run(None, f)
            g = torch.Generator().manual_seed(1)
            calib = [torch.randn(1, 3, resolution, resolution, generator=g).numpy() for _ in range(8)]
            input_name = session.get_inputs()[0].name

            class Reader(CalibrationDataReader):
                def __init__(self, batches, input_name):
                    self.it, self.input_name = iter(batches), input_name

                def get_next(self):
                    b = next(self.it, None)
                    return None if b is None else {self.input_name: b}

            qpath = os.path.join(tmp, f"{name}_tv_int8.onnx")
            import logging

            logging.getLogger().setLevel(logging.ERROR)
            quantize_static(path, qpath, Reader(calib, input_name), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
            qsession = ort.InferenceSession(qpath, options, providers=["CPUExecutionProvider"])
            runs["torchvision ONNX -> ORT int8 (plain quantize_static)"] = lambda s=qsession, f=feed: s.run(None, f)
        for label, fn in runs.items():
            fn()  # warm: first-call set-up outside the timing
            runners[(name, label)] = fn
        info["details"][name] = list(runs)
    return runners, info


def peer_worker() -> None:
    """Answer JSON commands on stdin, one per line, with one JSON line each on the real stdout."""
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything else printed goes to stderr
    runners: dict = {}
    tmp = tempfile.TemporaryDirectory()
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            if cmd["cmd"] == "prepare":
                runners, info = peer_prepare(cmd["models"], cmd["resolution"], cmd["threads"], tmp.name)
                reply = {"ok": True, **info}
            elif cmd["cmd"] == "time":
                stats = time_callable(runners[(cmd["model"], cmd["label"])], warmup=cmd["warmup"],
                                      min_runs=cmd["min_runs"], min_seconds=cmd["min_seconds"],
                                      timer=CLOCKS[cmd.get("clock", "wall")])
                reply = {"ok": True, "median_ms": stats.median_ms, "p90_ms": stats.p90_ms}
            else:
                reply = {"ok": True}
        except Exception as e:  # report, keep serving
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
        if cmd["cmd"] == "quit":
            break
    tmp.cleanup()


class Peer:
    """The peer worker subprocess."""

    def __init__(self, python: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
        self.proc = subprocess.Popen([python, str(Path(__file__).resolve()), "--peer-worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the peer worker exited (code {self.proc.wait()})")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"peer worker: {reply.get('error')}")
        return reply

    def close(self) -> None:
        try:
            self.ask(cmd="quit")
        except (RuntimeError, BrokenPipeError):
            pass
        self.proc.wait(timeout=30)


def find_peer_python(given: str | None) -> str | None:
    candidates = [given, os.environ.get("MNV3_PEER_PYTHON"), str(REPO / ".peer-venv/bin/python"),
                  "/work/peer-venv/bin/python"]
    for c in candidates:
        if c and Path(c).is_file():
            return c
    return None


# -- ours ---------------------------------------------------------------------------------------------------
def our_runners(name: str, resolution: int, threads: int) -> dict:
    from mobilenetv3 import build
    from mobilenetv3.deploy import calibrate_bn_on_noise
    from mobilenetv3.deploy.quantize import random_calibration_data
    from mobilenetv3.latency import prepare_runtime

    model = build(name).eval()
    calibrate_bn_on_noise(model, resolution, batches=2, batch_size=4)
    x = torch.randn(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
    setups = {"ours eager (channels-last)": ("eager", {}), "ours frozen (TorchScript)": ("frozen", {}),
              "ours ONNX -> ORT float": ("onnxruntime", {}),
              "ours ONNX -> ORT int8": ("onnxruntime-int8",
                                        {"calibration": random_calibration_data(tuple(x.shape), 8, seed=1)})}
    out = {}
    for label, (runtime, options) in setups.items():
        print(f"  preparing {name} / {label} ...", file=sys.stderr, flush=True)
        prepared = prepare_runtime(runtime, model, x, threads, **options)
        prepared.run()
        out[label] = prepared
    return out


def run(args) -> dict:
    from mobilenetv3.cost import spec_cost
    from mobilenetv3.latency import pinned_threads
    from mobilenetv3.zoo import get_spec

    info = machine_info()
    peak = cpu_peak(args.fma_units)
    python = find_peer_python(args.peer_python)
    peer, peer_info = None, {}
    if python is None:
        print("no peer environment found (--peer-python, $MNV3_PEER_PYTHON, .peer-venv, /work/peer-venv): "
              "timing ours only", file=sys.stderr)
    else:
        print(f"  starting the peer worker ({python}) ...", file=sys.stderr, flush=True)
        peer = Peer(python)
        peer_info = peer.ask(cmd="prepare", models=args.models, resolution=args.resolution, threads=args.threads)
        peer_info.pop("ok", None)
    rows = []
    try:
        with pinned_threads(args.threads):
            ours = {name: our_runners(name, args.resolution, args.threads) for name in args.models}
            medians: dict = {}
            for r in range(args.rounds):
                print(f"  round {r + 1}/{args.rounds} ...", file=sys.stderr, flush=True)
                for name in args.models:
                    for label, prepared in ours[name].items():
                        s = time_callable(prepared.run, warmup=5, min_runs=30, min_seconds=args.min_seconds,
                                          timer=CLOCKS[args.clock])
                        medians.setdefault((name, label, "ours"), []).append(s.median_ms)
                    for label in (peer_info.get("details", {}).get(name, []) if peer else []):
                        reply = peer.ask(cmd="time", model=name, label=label, warmup=5, min_runs=30,
                                         min_seconds=args.min_seconds, clock=args.clock)
                        medians.setdefault((name, label, "peer"), []).append(reply["median_ms"])
    finally:
        if peer is not None:
            peer.close()
    for name in args.models:
        madds = spec_cost(get_spec(name), args.resolution).madds
        peer_float = [percentile(v, 50) for (n, lb, who), v in medians.items()
                      if n == name and who == "peer" and "int8" not in lb]
        best = min(peer_float) if peer_float else None
        for (n, label, who), v in medians.items():
            if n != name:
                continue
            med = percentile(v, 50)
            int8 = "int8" in label
            gmadds = madds / (med / 1e3) / 1e9
            rows.append({"model": name, "path": label, "who": who, "median_ms": med, "round_medians_ms": v,
                         "vs_best_peer": best / med if best else None, "gmadds_per_s": gmadds,
                         "peak_share": gmadds / (peak["int8_gmacs"] if int8 else peak["fp32_gmadds"])
                         if peak["ghz"] else None, "madds": madds})
    info["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    return {"machine": info, "peak": peak, "peer": peer_info, "peer_python": python, "torch": torch.__version__,
            "resolution": args.resolution, "threads": args.threads, "rounds": args.rounds, "clock": args.clock,
            "rows": rows}


def print_table(res: dict) -> None:
    m, p = res["machine"], res["peak"]
    print(f"CPU: {m['cpu']} ({m['logical_cpus']} logical CPUs), {res['threads']} thread(s), batch 1, "
          f"{res['resolution']}x{res['resolution']}, {res['rounds']} interleaved rounds, {res['clock']} clock, "
          f"{m['date']}")
    print(f"load average (1 min): {m['load_avg_1m']} at start, {m['load_avg_1m_end']} at the end")
    peer = res["peer"]
    print(f"ours: torch {res['torch']}" + (f"; peers: torch {peer['torch']}, torchvision {peer['torchvision']}, "
                                           f"timm {peer['timm']}, onnxruntime {peer.get('onnxruntime', '-')}"
                                           if peer else "; no peers"))
    print(f"single-core peak at {p['ghz']:.2f} GHz: fp32 {p['fp32_gmadds']:.1f} GMAdd/s ({p['isa']}: "
          f"{p['fp32_lanes']} lanes x {p['fma_units']} FMA units), int8 {p['int8_gmacs']:.1f} GMAC/s ({p['int8_isa']}: "
          f"{p['int8_per_instruction']} MACs per instruction x {p['fma_units']})")
    header = (f"{'model':<20} {'path':<52} {'median ms':>10} {'rounds':>13} {'vs best peer':>13} "
              f"{'GMAdd/s':>8} {'of peak':>8}")
    print(header)
    print("-" * len(header))
    for r in res["rows"]:
        lo, hi = min(r["round_medians_ms"]), max(r["round_medians_ms"])
        vs = f"{r['vs_best_peer']:.2f}x" if r["vs_best_peer"] else "-"
        share = f"{100 * r['peak_share']:.1f}%" if r["peak_share"] is not None else "-"
        print(f"{r['model']:<20} {r['path']:<52} {r['median_ms']:>10.3f} {f'{lo:.2f}-{hi:.2f}':>13} {vs:>13} "
              f"{r['gmadds_per_s']:>8.1f} {share:>8}")
    print("\nvs best peer: the peers' fastest float path for the model / this path (above 1: faster than it).")
    print("GMAdd/s: the model's analytic multiply-adds (ours, for every path: the architectures are the same) per "
          "second; of peak: against the fp32 peak, or the int8 peak for int8 paths.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=1.5, help="per path per round")
    parser.add_argument("--peer-python", help="python of the peer environment (torchvision, timm)")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                        help="wall (default) or cpu: this thread's CPU time, for a machine busy with other work")
    parser.add_argument("--fma-units", type=int, default=2, help="FMA units per core for the peak (default 2)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--peer-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer_worker:
        peer_worker()
        return
    res = run(args)
    print_table(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
