"""`mnv3 bench`: the paper's latency comparisons re-measured on this machine, optionally beside the peers."""

from __future__ import annotations

import argparse
import json
import sys

from .output import CLIError, print_json, table


def print_bench_section(name: str, sec: dict) -> None:
    from ..bench.report import section_report

    for item in section_report(name, sec):
        print(item if isinstance(item, str) else table(*item))


def task_sizes(args: argparse.Namespace) -> dict:
    sizes = {}
    if args.seg_size is not None:
        sizes["seg_size"] = tuple(args.seg_size)
    if args.det_resolution is not None:
        sizes["det_resolution"] = args.det_resolution
    return sizes


def cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..bench.report import bench_footer, bench_header
    from ..bench.run import paper_comparisons
    from ..extras import MissingExtraError

    if args.peer_python is not None and not args.peers and "peers" not in ",".join(args.sections or []):
        raise CLIError("--peer-python applies to --peers")
    try:
        result = paper_comparisons(args.sections, runtime=args.runtime, threads=args.threads,
                                   resolution=args.resolution, quick=args.quick, multipliers=args.multipliers,
                                   resolutions=args.resolutions, rounds=args.rounds, warmup=args.warmup,
                                   min_runs=args.min_runs, min_seconds=args.min_seconds, clock=args.clock,
                                   peers=args.peers, peer_python=args.peer_python, progress=not args.quiet,
                                   **task_sizes(args))
    except MissingExtraError as e:
        raise CLIError(str(e)) from None
    for name, sec in result["sections"].items():
        if sec.get("skipped"):
            print(f"mnv3 bench: {name}: {sec['skipped']}", file=sys.stderr)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print_json(result)
        return 0
    print("\n".join(bench_header(result)))
    for name, sec in result["sections"].items():
        print_bench_section(name, sec)
    print("\n".join(bench_footer(result)))
    return 0


def register(sub) -> None:
    from ..bench.sections import (
        BENCH_RUNTIMES,
        BENCH_SECTIONS,
        DEFAULT_BENCH_SECTIONS,
        GRID_MULTIPLIERS,
        GRID_RESOLUTIONS,
        QUICK_GRID,
    )
    from ..runtime.timing import CLOCKS

    p = sub.add_parser(
        "bench", help="the paper's latency comparisons (Tables 3-7, Figure 7) re-measured on this machine",
        description="The paper's comparisons measured here in one run: V3 against MobileNetV2 (Table 3), the "
                    "h-swish ablation (Table 5), multipliers x resolutions (Figure 7) and float against int8 "
                    "(Table 4); on request the segmentation heads (Table 7: LR-ASPP against R-ASPP, V3 against V2 "
                    "at 512x1024) and the SSDLite detectors (Table 6, at 320x320); each model prepared first and "
                    "then timed in interleaved rounds; with MAdds, params "
                    "and the paper's figure (and ratio) where it has one, the CPU model, threads, runtime, clock "
                    "and date. --peers adds torchvision's and timm's Large and Small (eager and exported to ONNX "
                    "Runtime) next to ours: they need a newer torch than ours, so they run in a subprocess of the "
                    "peer environment (make peer-setup), taking turns with this process round by round.")
    p.add_argument("--sections", nargs="+", metavar="SECTION",
                   help=f"sections to run, by space or comma: {', '.join(BENCH_SECTIONS)} (default: "
                        f"{' '.join(DEFAULT_BENCH_SECTIONS)})")
    p.add_argument("--runtime", choices=BENCH_RUNTIMES, default="eager",
                   help="runtime of every section but int8, which compares onnxruntime with onnxruntime-int8 "
                        "(default eager)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1, as the paper)")
    p.add_argument("--resolution", type=int, default=224, help="input size outside the grid (default 224)")
    p.add_argument("--quick", action="store_true",
                   help=f"grid: multipliers {' '.join(map(str, QUICK_GRID[0]))} x resolutions "
                        f"{' '.join(map(str, QUICK_GRID[1]))} only")
    p.add_argument("--multipliers", type=float, nargs="+", metavar="W",
                   help=f"grid multipliers (default {' '.join(map(str, GRID_MULTIPLIERS))})")
    p.add_argument("--resolutions", type=int, nargs="+", metavar="R",
                   help=f"grid resolutions (default {' '.join(map(str, GRID_RESOLUTIONS))})")
    p.add_argument("--seg-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="segmentation section's input (default 512 1024, Table 7's CPU (h))")
    p.add_argument("--det-resolution", type=int, default=None, metavar="R",
                   help="detection section's input side (default 320, Table 6's)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (default 3)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs per path per round (default 5)")
    p.add_argument("--min-runs", type=int, default=20, help="timed runs per path per round, at least (default 20)")
    p.add_argument("--min-seconds", type=float, default=0.5, help="and seconds per path per round (default 0.5)")
    p.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                   help="wall (default) or cpu: the calling thread's CPU time, for a machine busy with other work "
                        "(one thread only)")
    p.add_argument("--peers", action="store_true", help="add torchvision's and timm's models, timed in the same run")
    p.add_argument("--peer-python", metavar="PATH",
                   help="python of the peer environment (default: $MNV3_PEER_PYTHON, else .peer-venv)")
    p.add_argument("--out", metavar="FILE.json", help="also write the results as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_bench)
