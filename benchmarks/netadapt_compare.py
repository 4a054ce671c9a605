"""NetAdapt against a uniform width multiplier (issue 15): trained runs side by side, latency measured in one
interleaved session, accuracy on the test set once.

    python benchmarks/netadapt_compare.py --seed runs/seed --run netadapt=runs/netadapt/retrain \\
        --run width-0.8=runs/small-w080 [--spec adapted=final/spec.json] [--table T.json] [--rounds 30] \\
        [--statistic min] [--sessions 3] [--json out.json]

Every run's EMA weights are scored on the test split of its data (the runs were selected on their holdout, never on
the test set); every run's spec is timed end to end on ``--runtime`` at 1 thread (default ONNX Runtime), all of
them in the same interleaved rounds with the seed, so machine drift cancels in the ratios; by default each spec is
prepared in 3 sessions and timed by its fastest round (the repeatable figure on a shared VM, as NetAdapt's own
stop measures it), the median over sessions reported. With ``--table`` the
latency table's prediction is printed beside the measurement. ``--spec NAME=FILE.json`` adds a spec that has no
trained run (latency only). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import sys

from mobilenetv3.cost import spec_cost
from mobilenetv3.runtime.cpu import machine_info
from mobilenetv3.search.latency_table import LatencyTable, load_table
from mobilenetv3.search.predictor import predict
from mobilenetv3.search.table_check import STATISTICS, measure_interleaved
from mobilenetv3.spec import ArchSpec
from mobilenetv3.train.evaluate import evaluate_run, load_run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", required=True, help="the seed's training run")
    p.add_argument("--run", action="append", default=[], metavar="NAME=RUN_DIR", help="a run to compare (repeat)")
    p.add_argument("--spec", action="append", default=[], metavar="NAME=SPEC.json",
                   help="a spec timed without a run (no accuracy; repeat)")
    p.add_argument("--table", default=None, help="latency table for the predicted column")
    p.add_argument("--runtime", default="onnxruntime")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=30, help="interleaved rounds (default 30)")
    p.add_argument("--statistic", choices=sorted(STATISTICS), default="min",
                   help="of the rounds: min (default: the least disturbed) or median")
    p.add_argument("--sessions", type=int, default=3, help="sessions per spec, the median taken (default 3)")
    p.add_argument("--min-seconds", type=float, default=0.5, help="per spec and round (default 0.5 s)")
    p.add_argument("--split", default="test", help="the split scored (default test)")
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)
    runs = [("seed", args.seed)] + [tuple(r.split("=", 1)) for r in args.run]
    extra = [tuple(r.split("=", 1)) for r in args.spec]
    if any(len(r) != 2 for r in runs + extra):
        p.error("--run and --spec take NAME=PATH")
    specs = [load_run(d)[0].spec for _, d in runs] + [ArchSpec.load(f) for _, f in extra]
    runs += [(name, None) for name, _ in extra]
    resolution = specs[0].resolution
    if any(s.resolution != resolution for s in specs):
        p.error("the runs train at different resolutions")
    header = {"runtime": args.runtime, "threads": args.threads, "resolution": resolution}
    print(f"timing {len(specs)} specs x {args.sessions} sessions in {args.rounds} interleaved rounds "
          f"({args.runtime}, {args.threads} thread, {resolution} px)...", file=sys.stderr)
    medians, even, odd = measure_interleaved(LatencyTable(header), specs, rounds=args.rounds,
                                             min_seconds=args.min_seconds, progress=False,
                                             statistic=args.statistic, sessions=args.sessions)
    table = load_table(args.table) if args.table else None
    rows = []
    for (name, run_dir), spec, ms, e, o in zip(runs, specs, medians, even, odd, strict=True):
        top1 = None
        if run_dir is not None:
            print(f"scoring {name} on the {args.split} split...", file=sys.stderr)
            top1 = evaluate_run(run_dir, split=args.split, device="cpu")["top1"]
        cost = spec_cost(spec, resolution=resolution)
        rows.append({"name": name, "run": run_dir, "params": cost.params, "madds": cost.madds, "measured_ms": ms,
                     "even_ms": e, "odd_ms": o, "ratio": ms / medians[0],
                     "predicted_ms": predict(table, spec, resolution).ms if table else None,
                     "top1": top1})
    machine = machine_info()
    print(f"\n{machine['cpu']} ({machine['cpu_id']}); {args.runtime}, {args.threads} thread, {resolution} px, batch 1; "
          f"{args.statistic} of {args.rounds} interleaved rounds, median of {args.sessions} sessions (even / odd "
          f"rounds in brackets); {args.split} top-1")
    print(f"{'model':<14} {'params':>9} {'MAdds':>7} {'predicted':>9} {'measured ms':>23} {'x seed':>7} {'top-1':>7}")
    for r in rows:
        pred = f"{r['predicted_ms']:.4f}" if r["predicted_ms"] is not None else "-"
        print(f"{r['name']:<14} {r['params']:>9,} {r['madds'] / 1e6:>6.1f}M {pred:>9} "
              f"{r['measured_ms']:>8.4f} ({r['even_ms']:.4f}/{r['odd_ms']:.4f}) {r['ratio']:>7.3f} "
              + (f"{r['top1']:>6.2f}%" if r["top1"] is not None else f"{'-':>7}"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "runtime": args.runtime, "threads": args.threads,
                       "rounds": args.rounds, "statistic": args.statistic, "sessions": args.sessions,
                       "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
