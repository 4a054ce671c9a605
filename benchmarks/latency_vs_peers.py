"""Our MobileNetV3 runtimes against torchvision's and timm's, measured in the same run: 1 thread, batch 1, 224x224.

    python benchmarks/latency_vs_peers.py                       # Large and Small
    python benchmarks/latency_vs_peers.py --peer-python PATH    # the peer environment's python
    python benchmarks/latency_vs_peers.py --json out.json

Ours (in this process, torch of the core environment): eager (channels-last), frozen (TorchScript trace +
freeze), ONNX Runtime float (BN-folded export) and ONNX Runtime int8 (``mobilenetv3.deploy.quantize`` defaults);
with OpenVINO installed, OpenVINO f32, int8 (its target) and bf16, f32 and int8 also with an NHWC input
(``mnv3 export --input-layout nhwc``: images as decoders hand them over).
The peers (torchvision and timm need a newer torch, so they run in a subprocess with the peer environment's
python: ``--peer-python``, else ``$MNV3_PEER_PYTHON``, else ``.peer-venv/bin/python`` (``make peer-setup``)):
torchvision eager (NCHW as shipped, and channels-last), torchvision exported
by its own ``torch.onnx.export`` (the default, dynamo-based exporter) in ONNX Runtime, the same export quantised
by a plain ``quantize_static`` call (the issue's reference point), timm eager and timm's export in ONNX Runtime.
Every path is prepared first, then timed in ``--rounds`` interleaved rounds (ours, then the peers', round after
round; the two processes never run at the same time), with the same harness
(``mobilenetv3.runtime.timing.time_callable``); the figure is the median of the rounds' medians. On a CPU with
AMX, OpenVINO int8 is also timed under
``ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI`` (a worker process of this python, since the cap holds for a whole
process; ``--isa-cap``), which measured faster at batch 1 than OpenVINO's default AMX kernels. The machinery is
the library's (:func:`mobilenetv3.bench.peers.compare.compare_with_peers`, also behind ``mnv3 bench --peers``);
this script adds the int8 paths and the CPU's peak.

Every model has random weights with BatchNorm statistics estimated on noise (latency does not depend on the
weights; realistic activation scales keep denormals out), and the int8 models are calibrated on seeded noise.
The table gives each path's ratio against the peers' fastest float path for the same model, and its achieved
multiply-adds per second next to this CPU's single-core peak (see :func:`mobilenetv3.runtime.cpu.cpu_peak`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from mobilenetv3.bench.peers.compare import PEER_MODELS, available_paths, compare_with_peers
from mobilenetv3.runtime.cpu import INT8_ISA_CAP, cpu_peak, machine_info
from mobilenetv3.runtime.peer_env import PeerUnavailableError
from mobilenetv3.runtime.timing import CLOCKS


def run(args) -> dict:
    info = machine_info()
    peak = cpu_peak(args.fma_units)
    ours = available_paths()
    cap = args.isa_cap if args.isa_cap != "auto" else (INT8_ISA_CAP if peak.get("amx_int8") else "none")
    cap = None if cap.lower() == "none" or "openvino-int8" not in ours else cap
    res = compare_with_peers(args.models, resolution=args.resolution, threads=args.threads,
                             ours=ours, peer_int8=True, peer_python=args.peer_python,
                             rounds=args.rounds, warmup=5, min_runs=30, min_seconds=args.min_seconds, clock=args.clock,
                             isa_cap=cap, on_step=lambda label: print(f"  {label}", file=sys.stderr, flush=True))
    for r in res["rows"]:
        gmadds = r["madds"] / (r["median_ms"] / 1e3) / 1e9
        peak_of = peak["int8_gmacs"] if "int8" in r["path"] else peak["fp32_gmadds"]
        # bf16 runs on AMX tiles and AVX-512 at once: no one peak to hold it against
        known = peak["ghz"] and "bf16" not in r["path"]
        r.update(gmadds_per_s=gmadds, peak_share=gmadds / peak_of if known else None)
    info["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    return {"machine": info, "peak": peak, "peer": res["peer"], "peer_python": res["peer_python"],
            "torch": torch.__version__, "resolution": args.resolution, "threads": args.threads,
            "rounds": args.rounds, "clock": args.clock, "isa_cap": res["isa_cap"], "rows": res["rows"]}


def print_table(res: dict) -> None:
    m, p = res["machine"], res["peak"]
    print(f"CPU: {m['cpu']} ({m['logical_cpus']} logical CPUs), {res['threads']} thread(s), batch 1, "
          f"{res['resolution']}x{res['resolution']}, {res['rounds']} interleaved rounds, {res['clock']} clock, "
          f"{m['date']}")
    print(f"load average (1 min): {m['load_avg_1m']} at start, {m['load_avg_1m_end']} at the end")
    if m.get("onednn_max_cpu_isa"):
        print(f"this process ran under ONEDNN_MAX_CPU_ISA={m['onednn_max_cpu_isa']}: every oneDNN path is capped")
    if res.get("isa_cap"):
        print(f"rows ending 'oneDNN ISA <= {res['isa_cap']}' ran in a worker process under that cap")
    peer = res["peer"]
    print(f"ours: torch {res['torch']}" + (f"; peers: torch {peer['torch']}, torchvision {peer['torchvision']}, "
                                           f"timm {peer['timm']}, onnxruntime {peer.get('onnxruntime', '-')}"
                                           if peer else "; no peers"))
    print(f"single-core peak at {p['ghz']:.2f} GHz: fp32 {p['fp32_gmadds']:.1f} GMAdd/s ({p['isa']}: "
          f"{p['fp32_lanes']} lanes x {p['fma_units']} FMA units), int8 {p['int8_gmacs']:.1f} GMAC/s ({p['int8_isa']}: "
          f"{p['int8_per_instruction']} MACs per instruction x {p['fma_units']})")
    header = (f"{'model':<20} {'path':<76} {'median ms':>10} {'rounds':>13} {'vs best peer':>13} "
              f"{'GMAdd/s':>8} {'of peak':>8}")
    print(header)
    print("-" * len(header))
    for r in res["rows"]:
        lo, hi = min(r["round_medians_ms"]), max(r["round_medians_ms"])
        vs = f"{r['vs_best_peer']:.2f}x" if r["vs_best_peer"] else "-"
        share = f"{100 * r['peak_share']:.1f}%" if r["peak_share"] is not None else "-"
        print(f"{r['model']:<20} {r['path']:<76} {r['median_ms']:>10.3f} {f'{lo:.2f}-{hi:.2f}':>13} {vs:>13} "
              f"{r['gmadds_per_s']:>8.1f} {share:>8}")
    print("\nvs best peer: the peers' fastest float path for the model / this path (above 1: faster than it).")
    print("GMAdd/s: the model's analytic multiply-adds (ours, for every path: the architectures are the same) per "
          "second; of peak: against the fp32 peak, or the AVX-512 VNNI int8 peak for int8 paths (OpenVINO also "
          "uses AMX, whose peak is higher); none for bf16 (AMX and AVX-512 mixed).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(PEER_MODELS), choices=list(PEER_MODELS))
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=1.5, help="per path per round")
    parser.add_argument("--peer-python", help="python of the peer environment (torchvision, timm)")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                        help="wall (default) or cpu: this thread's CPU time, for a machine busy with other work")
    parser.add_argument("--fma-units", type=int, default=2, help="FMA units per core for the peak (default 2)")
    parser.add_argument("--isa-cap", default="auto", metavar="ISA|none|auto",
                        help=f"also time OpenVINO int8 under this oneDNN instruction-set cap, in a worker process "
                             f"(auto, the default: {INT8_ISA_CAP} on a CPU with AMX, else none)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()
    try:
        res = run(args)
    except PeerUnavailableError as e:
        sys.exit(f"latency_vs_peers: {e}")
    print_table(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
