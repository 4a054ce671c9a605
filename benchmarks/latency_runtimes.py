"""Latency of MobileNetV3-Large and -Small 1.0 on our runtimes, with speed-ups over eager measured in the same run.

    python benchmarks/latency_runtimes.py                 # eager / frozen / onnxruntime (/ litert when installed),
                                                          # 224, batch 1, 1 thread
    python benchmarks/latency_runtimes.py --variants      # also the set-ups the defaults were chosen from
    python benchmarks/latency_runtimes.py --variants --runtimes openvino "openvino NHWC input"   # the input layout
    python benchmarks/latency_runtimes.py --json out.json

Every runtime is prepared once, then timed in ``--rounds`` interleaved rounds (A B C, A B C, ...) so that a change
in machine load affects all of them alike; the figure given is the median of the rounds' medians, with the range
of round medians beside it. What else was running (load average, busiest processes) is printed with the table:
on a shared machine the ratios are more trustworthy than the absolute figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from mobilenetv3 import build
from mobilenetv3.extras import require
from mobilenetv3.inputs import example_input
from mobilenetv3.latency import available_runtimes, prepare_runtime
from mobilenetv3.runtime.cpu import machine_info, pinned_threads
from mobilenetv3.runtime.timing import percentile, time_callable

# name: (runtime, options); eager is the baseline
DEFAULT = {runtime: (runtime, {}) for runtime in available_runtimes()}
VARIANTS = {
    "eager NCHW": ("eager", {"channels_last": False}),
    "torchscript NCHW": ("frozen", {"channels_last": False}),
    "torchscript + optimize_for_inference": ("frozen", {"frozen_method": "torchscript_ofi", "channels_last": False}),
    "torch.compile": ("frozen", {"frozen_method": "compile"}),
    "torch.compile NCHW": ("frozen", {"frozen_method": "compile", "channels_last": False}),
}
if "openvino" in DEFAULT:
    VARIANTS["openvino NHWC input"] = ("openvino", {"input_layout": "nhwc"})


def busiest_processes(n: int = 6) -> list[str]:
    if not shutil.which("ps"):
        return []
    out = subprocess.run(["ps", "-eo", "pcpu,pid,etime,args", "--sort=-pcpu"], capture_output=True, text=True)
    return [line[:150] for line in out.stdout.splitlines()[: n + 1]]


def run(models: list[str], resolution: int, threads: int, rounds: int, min_seconds: float, variants: bool,
        runtimes: list[str] | None) -> dict:
    setups = dict(DEFAULT)
    if variants:
        setups.update(VARIANTS)
    if runtimes:
        setups = {k: v for k, v in setups.items() if k in runtimes or k == "eager"}
    if any(rt == "onnxruntime" for rt, _ in setups.values()):
        require("onnxruntime", purpose="the ONNX Runtime column")
    info = machine_info()
    info["busy_before"] = busiest_processes()
    rows = []
    for name in models:
        model = build(name).eval()
        x = example_input(model, resolution, 1)
        with pinned_threads(threads) as used:
            prepared = {}
            for label, (runtime, options) in setups.items():
                print(f"  preparing {name} / {label} ...", file=sys.stderr, flush=True)
                prepared[label] = prepare_runtime(runtime, model, x, used, **options)
            medians: dict[str, list[float]] = {label: [] for label in setups}
            p90s: dict[str, list[float]] = {label: [] for label in setups}
            for _ in range(rounds):
                for label, p in prepared.items():
                    stats = time_callable(p.run, warmup=5, min_runs=30, min_seconds=min_seconds)
                    medians[label].append(stats.median_ms)
                    p90s[label].append(stats.p90_ms)
        base = percentile(medians["eager"], 50)
        for label, p in prepared.items():
            med = percentile(medians[label], 50)
            rows.append({"model": name, "setup": label, "runtime": p.runtime, "detail": p.detail,
                         "version": p.version, "threads": p.threads, "input_shape": list(x.shape),
                         "median_ms": med, "round_medians_ms": medians[label],
                         "p90_ms": percentile(p90s[label], 50), "speedup_vs_eager": base / med})
    info["busy_after"] = busiest_processes()
    return {"machine": info, "torch": torch.__version__, "resolution": resolution, "threads": threads,
            "rounds": rounds, "rows": rows}


def print_table(result: dict) -> None:
    m = result["machine"]
    print(f"CPU: {m['cpu']} ({m['logical_cpus']} logical CPUs), date {m['date']}, torch {result['torch']}, "
          f"{result['threads']} thread(s), batch 1, {result['resolution']}x{result['resolution']}, "
          f"{result['rounds']} interleaved rounds")
    print(f"load average (1 min) at start: {m['load_avg_1m']}")
    header = f"{'model':<20} {'set-up':<38} {'median ms':>10} {'round range':>15} {'p90 ms':>8} {'vs eager':>9}"
    print(header)
    print("-" * len(header))
    for r in result["rows"]:
        lo, hi = min(r["round_medians_ms"]), max(r["round_medians_ms"])
        print(f"{r['model']:<20} {r['setup']:<38} {r['median_ms']:>10.2f} {f'{lo:.2f}-{hi:.2f}':>15} "
              f"{r['p90_ms']:>8.2f} {r['speedup_vs_eager']:>8.2f}x")
    print("\nset-ups:")
    seen = set()
    for r in result["rows"]:
        if r["setup"] not in seen:
            seen.add(r["setup"])
            print(f"  {r['setup']}: {r['detail']} ({r['runtime']} {r['version']})")
    for key, title in (("busy_before", "busiest processes before (ps: %CPU over each process's lifetime)"),
                       ("busy_after", "busiest processes after")):
        if m.get(key):
            print(f"\n{title}:")
            print("\n".join("  " + line for line in m[key]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobilenet_v3_large", "mobilenet_v3_small"])
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=2.0, help="per runtime per round")
    parser.add_argument("--variants", action="store_true",
                        help="also NCHW eager, NCHW TorchScript, optimize_for_inference and torch.compile")
    parser.add_argument("--runtimes", nargs="+", help="only these set-ups (eager is always kept)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()
    result = run(args.models, args.resolution, args.threads, args.rounds, args.min_seconds, args.variants,
                 args.runtimes)
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
