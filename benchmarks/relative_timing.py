"""Plain against relative timing on this machine: the noise floor of each, measured in one run on the same specs.

N specs sampled from a search space are prepared once on a runtime; in every round each spec is timed plainly
(its median over ``--seconds``) and against the space's seed network (``runtime.timing.time_relative``: reference
and spec alternating in short bursts, the median of the pairs' ratios), round after round. The noise floor of a
method is the RMSPE of its figure from the even rounds against its figure from the odd rounds (the median of each
half), as ``mnv3 latency-table check`` computes it. On a quiet, dedicated core both are low; on a shared or virtual
machine whose speed changes within seconds the plain floor is what no latency table can get under.

    python benchmarks/relative_timing.py                          # 40 V3-Small specs, ONNX Runtime, 64 px, 6 rounds
    python benchmarks/relative_timing.py --runtime openvino --resolution 224 --specs 20 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from mobilenetv3.inputs import example_input
from mobilenetv3.latency.targets import prepare_runtime
from mobilenetv3.model import build
from mobilenetv3.runtime.cpu import machine_info, pinned_threads
from mobilenetv3.runtime.timing import time_callable, time_relative
from mobilenetv3.search.space import get_space
from mobilenetv3.search.table_check import sample_specs


def floor(figures: np.ndarray) -> float:
    """RMSPE of the odd rounds' medians against the even rounds' (rows: specs, columns: rounds)."""
    even, odd = np.median(figures[:, 0::2], axis=1), np.median(figures[:, 1::2], axis=1)
    return float(np.sqrt(np.mean(((odd - even) / even) ** 2)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="mobilenet_v3_small")
    p.add_argument("--runtime", default="onnxruntime", choices=("eager", "onnxruntime", "openvino"))
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--specs", type=int, default=40)
    p.add_argument("--rounds", type=int, default=6, help="rounds (even and odd halves give the floor)")
    p.add_argument("--seconds", type=float, default=0.1, help="timing per spec, method and round (default 0.1)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()
    if args.rounds < 2:
        p.error("--rounds must be at least 2")

    space = get_space(args.space)
    specs = sample_specs(space, args.specs, args.seed)
    with pinned_threads(1) as threads:
        def runner(spec):
            model = build(spec.replace(resolution=args.resolution)).eval()
            return prepare_runtime(args.runtime, model, example_input(model, args.resolution), threads).run

        reference = runner(space.seed)
        runs = [runner(s) for s in specs]
        plain = np.zeros((len(runs), args.rounds))
        relative = np.zeros_like(plain)
        started = time.perf_counter()
        for r in range(args.rounds):
            for i, run in enumerate(runs):
                plain[i, r] = time_callable(run, warmup=3, min_runs=10, min_seconds=args.seconds).median_ms
                relative[i, r] = time_relative(run, reference, min_seconds=args.seconds).ratio
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        seconds = time.perf_counter() - started
    info = machine_info()
    result = {"space": args.space, "runtime": args.runtime, "resolution": args.resolution, "specs": len(runs),
              "rounds": args.rounds, "seconds_per_figure": args.seconds, "timing_s": round(seconds, 1),
              "plain_noise_floor": floor(plain), "relative_noise_floor": floor(relative),
              "cpu": info["cpu"], "load_avg_1m": info["load_avg_1m"], "date": info["date"]}
    print(f"{args.space}, {len(runs)} specs, {args.runtime} {args.resolution} px, 1 thread, {args.rounds} rounds; "
          f"{info['cpu']}, load {info['load_avg_1m']}, {info['date']}")
    print(f"noise floor, plain median:          {100 * result['plain_noise_floor']:.1f}%")
    print(f"noise floor, relative to the seed: {100 * result['relative_noise_floor']:.1f}%")
    print(f"ratio: {result['relative_noise_floor'] / result['plain_noise_floor']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
