"""`mnv3 latency-table`: build a latency table of a search space on this machine, fit its predictor's correction,
check its error end to end, and convert it from and to Once-for-All's YAML layout."""

from __future__ import annotations

import argparse
import sys

from ..runtime.timing import format_ms
from .output import CLIError, print_json, table


def get_space(name: str):
    from ..search.space import get_space as lookup

    return lookup(name)


def space_of(path: str, override: str | None):
    from ..search.latency_table import load_table

    name = override or load_table(path).header.get("space")
    if not name:
        raise CLIError(f"{path} records no search space (an imported table): give --space")
    return get_space(name)


def cmd_build(args: argparse.Namespace) -> int:
    from ..search.table_builder import TimingSettings, build_table, zoo_specs

    settings = TimingSettings(warmup=args.warmup, min_runs=args.min_runs, min_seconds=args.min_seconds,
                              clock=args.clock, relative=args.relative, sessions=args.sessions)
    built = build_table(get_space(args.space), args.resolution, args.runtime, args.out, threads=args.threads,
                        settings=settings, force=args.force, progress=not args.quiet,
                        extra_specs=zoo_specs(args.space, args.resolution))
    h = built.header
    print(f"{args.out}: {len(built.entries)} entries, {h['runtime']} {h['runtime_version']}, {h['threads']} "
          f"thread(s), {h['resolution']} px, {h['cpu']}, {settings.clock} clock"
          f"{', relative to ' + str(h['timing'].get('reference')) if settings.relative else ''}; measuring took "
          f"{h['build_seconds']:.0f} s in all")
    return 0


def timing_of(args: argparse.Namespace) -> dict:
    return {"warmup": args.warmup, "min_runs": args.min_runs, "min_seconds": args.min_seconds}


def rounds_of(args: argparse.Namespace) -> dict:
    return {**timing_of(args), "rounds": args.rounds, "statistic": args.statistic, "sessions": args.sessions}


def cmd_fit(args: argparse.Namespace) -> int:
    from ..search.table_check import fit_table

    record = fit_table(args.table, space_of(args.table, args.space), args.samples, force=args.force,
                       progress=not args.quiet, **rounds_of(args))
    if args.json:
        print_json(record)
        return 0
    verdict = "kept" if record["kept"] else "not kept (it did not lower the held-out error)"
    print(f"correction fitted on {record['samples'] - record['holdout']} specs, checked on {record['holdout']} "
          f"held out: RMSPE {100 * record['holdout_rmspe_sum']:.2f}% (sum of entries) -> "
          f"{100 * record['holdout_rmspe_corrected']:.2f}% (corrected): {verdict}; saved in {args.table}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from ..search.table_check import check_table

    report = check_table(args.table, space_of(args.table, args.space), args.samples, force=args.force,
                         progress=not args.quiet, **rounds_of(args))
    for diff in report["mismatches_forced"]:
        print(f"mnv3 latency-table: warning: {diff}", file=sys.stderr)
    if args.json:
        report = dict(report)
        if not args.verbose:
            report.pop("specs")
        print_json(report)
        return 0
    h = report["header"]
    print(f"{args.table}: {h.get('space')}, {h['runtime']}, {h['threads']} thread(s), {h['resolution']} px, "
          f"{report['entries']} entries; {report['samples']} sampled specs, timed in {args.rounds} interleaved rounds")
    rows = [["table sum", f"{100 * report['sum_rmspe']:.2f}%", "-", f"{100 * report['sum_within_10']:.0f}%",
             f"{report['sum_kendall_tau']:.3f}"]]
    if report["correction_kept"]:
        rows.append(["sum + correction", f"{100 * report['rmspe']:.2f}%", f"{100 * report['within_5']:.0f}%",
                     f"{100 * report['within_10']:.0f}%", f"{report['kendall_tau']:.3f}"])
    else:
        rows[0][2] = f"{100 * report['within_5']:.0f}%"
    rows.append(["noise floor (even vs odd rounds)", f"{100 * report['noise_rmspe']:.2f}%", "-", "-", "-"])
    print(table(["predictor", "RMSPE", "within 5%", "within 10%", "Kendall tau"], rows))
    if report["interpolated_keys"]:
        print(f"({report['interpolated_keys']} block(s) interpolated: keys the table lacks)")
    if not report["correction_kept"]:
        print("no correction in use: `mnv3 latency-table fit TABLE --samples N` fits one on other samples")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from ..search.latency_table import load_table, write_ofa_yaml

    loaded = load_table(args.table)
    if args.out.endswith((".yaml", ".yml")):
        write_ofa_yaml(loaded, args.out)
    else:
        loaded.save(args.out)
    print(f"{args.out}: {len(loaded.entries)} entries")
    return 0


def predicted_line(result: dict, table_path: str, model, resolution: int | None, force: bool) -> dict:
    """What `mnv3 latency --predict` adds: the table's prediction for the model beside the measured median."""
    from ..inputs import model_spec
    from ..runtime.cpu import this_cpu
    from ..search.latency_table import check_compatible, load_table
    from ..search.predictor import predict

    spec = model_spec(model)
    if spec is None:
        raise CLIError("--predict needs a model built from a spec")
    lut = load_table(table_path)
    res = resolution or spec.resolution
    diffs = check_compatible(lut, force=force, spec=spec, **this_cpu(), runtime=result["runtime"],
                             threads=result["threads"], resolution=res)
    p = predict(lut, spec, res)
    measured = result["median_ms"]
    return {"table": table_path, "predicted_ms": p.ms, "sum_ms": p.sum_ms, "measured_ms": measured,
            "error": (p.ms - measured) / measured, "entries": len(p.keys), "interpolated": list(p.interpolated),
            "mismatches_forced": diffs}


def print_predicted(pred: dict) -> None:
    note = f", {len(pred['interpolated'])} interpolated" if pred["interpolated"] else ""
    print(f"\npredicted {format_ms(pred['predicted_ms'])} ms from {pred['table']} (sum of {pred['entries']} entries "
          f"{format_ms(pred['sum_ms'])} ms{note}) vs measured {format_ms(pred['measured_ms'])} ms: "
          f"{100 * pred['error']:+.1f}%")
    for diff in pred["mismatches_forced"]:
        print(f"warning (forced): {diff}")


def register(sub) -> None:
    from ..search.table_builder import TABLE_RUNTIMES, TimingSettings
    from ..search.table_check import ROUNDS

    p = sub.add_parser("latency-table", help="a latency table of a search space on this machine: build, fit, check",
                       description="Latency tables for the search (docs/search.md): every block a space can "
                                   "produce, timed on this machine as the runtime runs it, and a predictor "
                                   "whose error is checked end to end.")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    d = TimingSettings()
    b = actions.add_parser("build", help="measure every key of a space and of the zoo's widths of its family "
                                         "(resumable: rerun to continue)")
    b.add_argument("--space", required=True, help="search space name (e.g. mobilenet_v3_small)")
    b.add_argument("--resolution", type=int, required=True, help="input size the table is for")
    b.add_argument("--runtime", choices=TABLE_RUNTIMES, required=True)
    b.add_argument("--threads", type=int, default=1, help="threads (default 1)")
    b.add_argument("--out", required=True, metavar="T.json", help="the table file (an existing one is resumed)")
    b.add_argument("--warmup", type=int, default=d.warmup,
                   help=f"untimed runs per entry (default {d.warmup}; with --relative per burst of 4)")
    b.add_argument("--min-runs", type=int, default=d.min_runs,
                   help=f"timed runs per entry (default {d.min_runs}; with --relative per burst of 4)")
    b.add_argument("--min-seconds", type=float, default=d.min_seconds,
                   help=f"and at least this long per entry (default {d.min_seconds}: sized for the 15-minute budget)")
    b.add_argument("--clock", choices=("wall", "cpu"), default=d.clock,
                   help="wall (default) or cpu: the timing thread's CPU time, which time the machine spends on "
                        "other work does not add to (one thread only); fit and check time with the table's clock")
    b.add_argument("--relative", action="store_true",
                   help="time every entry against the space's seed network, alternately in short bursts, and record "
                        "its ratio times the seed's latency: a machine whose speed changes within seconds (a shared "
                        "VM) slows both alike; fit and check then time specs the same way")
    b.add_argument("--sessions", type=int, default=d.sessions,
                   help=f"prepare and time every entry this many times, in as many passes over the keys, and take "
                        f"the median (default {d.sessions}; 3 with --relative on a shared machine: a runtime session "
                        f"can run fast or slow for its whole life); rerun with a larger N to add passes")
    b.set_defaults(func=cmd_build)
    f = actions.add_parser("fit", help="fit the predictor's correction on N measured specs; kept if it helps")
    f.add_argument("table", metavar="T.json")
    f.add_argument("--samples", type=int, default=60, help="specs to measure (default 60; a third held out)")
    f.set_defaults(func=cmd_fit)
    c = actions.add_parser("check", help="predicted vs measured on N sampled specs: RMSPE, within 5/10%%, tau, "
                                         "noise floor")
    c.add_argument("table", metavar="T.json")
    c.add_argument("--samples", type=int, default=100, help="specs to sample (default 100)")
    c.add_argument("--verbose", action="store_true", help="--json: include every spec's figures")
    c.set_defaults(func=cmd_check)
    for q in (b, f, c):
        q.add_argument("--force", action="store_true", help="use a table measured elsewhere (CPU, runtime, "
                                                            "threads, resolution differ)")
        q.add_argument("--quiet", action="store_true", help="no progress bar")
    for q in (f, c):
        q.add_argument("--space", default=None, help="the space (default: the table's)")
        q.add_argument("--json", action="store_true", help="machine-readable output")
        q.add_argument("--rounds", type=int, default=ROUNDS,
                       help=f"end-to-end: interleaved rounds over all specs (default {ROUNDS}; even and odd rounds "
                            "are the noise floor's two measurements)")
        q.add_argument("--warmup", type=int, default=3, help="end-to-end: untimed runs per spec and round (default 3)")
        q.add_argument("--min-runs", type=int, default=10,
                       help="end-to-end: timed runs per spec and round (default 10)")
        q.add_argument("--min-seconds", type=float, default=0.1,
                       help="end-to-end: and this long per spec and round (default 0.1 s)")
        q.add_argument("--statistic", choices=("median", "min"), default="median",
                       help="end-to-end: a spec's latency is this of its rounds' medians (default median; min, the "
                            "least disturbed round, is far more repeatable on a shared machine)")
        q.add_argument("--sessions", type=int, default=1,
                       help="end-to-end: prepare every spec this many times and take the median (default 1)")
    v = actions.add_parser("convert", help="between our JSON tables and Once-for-All's YAML layout")
    v.add_argument("table", metavar="IN")
    v.add_argument("out", metavar="OUT", help=".yaml/.yml: OFA's layout; else our JSON")
    v.set_defaults(func=cmd_convert)
