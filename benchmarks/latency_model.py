"""The latency model's error on this machine (issue 14): per runtime and resolution, build (or reuse) the table of a
search space, fit the predictor's correction on one sample of specs, check it on another, and print RMSPE, the
share within 5% / 10%, Kendall's tau and the noise floor beside the entry count and the build time.

    python benchmarks/latency_model.py                                   # onnxruntime and openvino, 224 and 64 px
    python benchmarks/latency_model.py --runtimes onnxruntime --resolutions 64 --samples 100
    python benchmarks/latency_model.py --space mobilenet_v3_large --resolutions 224   # then Large's widths rank too
    python benchmarks/latency_model.py --json out.json
    python benchmarks/latency_model.py --relative --sessions 3 --min-seconds 0.03 --rounds 8   # a shared machine

Tables go to ``--tables`` (default ``latency_tables/``) as ``SPACE-RUNTIME-RES.json`` and are reused (a partial one
is resumed, a fitted correction kept); ``--relative`` builds and checks them timed against the space's seed network
(``SPACE-RUNTIME-RES-rel.json``), which cancels most of a shared machine's changes of speed. Run it on a quiet
machine, one core free: every figure is a measurement.
The zoo's widths of the space's family (V3-Small 0.75/1.0/1.25, V3-Large 0.75/1.0) are ranked by the predictor
and by measurement; a width whose blocks the table cannot interpolate is reported as such.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mobilenetv3.runtime.cpu import machine_info
from mobilenetv3.search.latency_table import load_table
from mobilenetv3.search.predictor import MissingEntryError
from mobilenetv3.search.table_builder import TimingSettings, build_table, zoo_specs
from mobilenetv3.search.table_check import check_table, fit_table, rank_check


def one(space_name: str, runtime: str, resolution: int, args: argparse.Namespace) -> dict:
    from mobilenetv3.search.space import get_space  # issue 14's space module

    space = get_space(space_name)
    specs = zoo_specs(space_name, resolution)
    path = Path(args.tables) / f"{space_name}-{runtime}-{resolution}{'-rel' if args.relative else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    table = build_table(space, resolution, runtime, path, threads=args.threads, progress=not args.quiet,
                        extra_specs=specs,
                        settings=TimingSettings(relative=args.relative, sessions=args.sessions, warmup=args.warmup,
                                                min_runs=args.min_runs, min_seconds=args.min_seconds))
    timing = {"rounds": args.rounds, "statistic": args.statistic}
    if table.correction is None or args.refit:
        fit_table(path, space, args.fit_samples, progress=not args.quiet, **timing)
    report = check_table(path, space, args.samples, progress=not args.quiet, **timing)
    table = load_table(path)
    row = {k: report[k] for k in ("rmspe", "within_5", "within_10", "kendall_tau", "noise_rmspe", "samples",
                                  "sum_rmspe", "correction_kept")}
    row.update(space=space_name, relative=args.relative, sessions=args.sessions, runtime=runtime, resolution=resolution,
               entries=len(table.entries),
               build_seconds=table.header.get("build_seconds"), correction=table.correction, table=str(path))
    try:
        row["zoo_ranking"] = rank_check(table, specs) if specs else None  # median of 6 rounds
    except MissingEntryError as e:
        row["zoo_ranking"] = {"error": str(e)}
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="mobilenet_v3_small")
    p.add_argument("--runtimes", nargs="+", default=["onnxruntime", "openvino"])
    p.add_argument("--resolutions", nargs="+", type=int, default=[224, 64])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--samples", type=int, default=100, help="specs checked (each measured twice)")
    p.add_argument("--fit-samples", type=int, default=60, help="other specs the correction is fitted on")
    p.add_argument("--rounds", type=int, default=6, help="interleaved end-to-end rounds (default 6)")
    p.add_argument("--statistic", choices=("median", "min"), default="median",
                   help="a spec's end-to-end latency: median (default) or min of its rounds")
    p.add_argument("--relative", action="store_true", help="time against the space's seed network (shared machines)")
    p.add_argument("--sessions", type=int, default=1, help="build: sessions per entry (their median)")
    d = TimingSettings()
    p.add_argument("--warmup", type=int, default=d.warmup, help="build: untimed runs per entry (with --relative: "
                                                                "per burst)")
    p.add_argument("--min-runs", type=int, default=d.min_runs, help="build: timed runs per entry (per burst)")
    p.add_argument("--min-seconds", type=float, default=d.min_seconds, help="build: timing per entry and session")
    p.add_argument("--tables", default="latency_tables")
    p.add_argument("--refit", action="store_true", help="fit the correction again on a table that has one")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    rows = [one(args.space, rt, res, args) for rt in args.runtimes for res in args.resolutions]
    info = machine_info()
    print(f"\n{args.space}, {args.threads} thread(s), {info['cpu']}, load {info['load_avg_1m']}, {info['date']}; "
          f"end to end: {args.statistic} of {args.rounds} interleaved rounds"
          f"{'; entries and specs timed against the seed network' if args.relative else ''}")
    head = ["runtime", "px", "RMSPE", "within 5%", "within 10%", "tau", "noise floor", "sum RMSPE", "entries",
            "build s"]
    print(" | ".join(head))
    for r in rows:
        print(" | ".join([r["runtime"], str(r["resolution"]), f"{100 * r['rmspe']:.2f}%", f"{100 * r['within_5']:.0f}%",
                          f"{100 * r['within_10']:.0f}%", f"{r['kendall_tau']:.3f}", f"{100 * r['noise_rmspe']:.2f}%",
                          f"{100 * r['sum_rmspe']:.2f}%", str(r["entries"]), f"{r['build_seconds']:.0f}"]))
    for r in rows:
        rank = r["zoo_ranking"]
        if rank:
            verdict = rank.get("error") or ("same order" if rank["same_order"] else
                                            f"predicted {rank['predicted_order']} vs measured {rank['measured_order']}")
            print(f"{r['runtime']} {r['resolution']} px, zoo widths: {verdict}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
