"""The moonshot's front (issue 16): Fashion-MNIST test top-1 against latency as a fraction of V3-Small 1.0's, from
`netadapt_compare.py` results, each timed in its own session beside V3-Small 1.0.

    python benchmarks/moonshot_front.py --compare run1.json --compare run2.json --compare other.json:v3-small-1.0 \\
        --accuracy v3-small-1.0=93.57 --out front.png

A ``--compare FILE[:REF]`` is one timing session (``netadapt_compare.py --json``); REF names its V3-Small 1.0
row (default ``seed``), whose latency the session's figures are divided by, so sessions on a drifting machine
compare. Rows with a test accuracy are points; a network timed in several sessions is drawn once per session,
joined by a line (the spread of the timing). ``--accuracy NAME=TOP1`` gives a row without a scored run its
accuracy (the reference row of a session that timed V3-Small 1.0 without training it); ``--rename
FILE:ROW=LABEL`` labels a row. The table is printed too.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path


def load_points(compares: list[str], accuracy: dict[str, float], rename: dict[tuple[str, str], str]) -> list[dict]:
    points = []
    for item in compares:
        path, _, ref = item.partition(":")
        data = json.loads(Path(path).read_text())
        rows = {r["name"]: r for r in data["rows"]}
        ref = ref or "seed"
        if ref not in rows:
            raise SystemExit(f"{path}: no row {ref!r} (rows: {', '.join(rows)})")
        base = rows[ref]["measured_ms"]
        for r in data["rows"]:
            top1 = r.get("top1") if r.get("top1") is not None else accuracy.get(r["name"])
            if top1 is None:
                continue
            name = "v3-small-1.0" if r["name"] == ref else rename.get((Path(path).name, r["name"]), r["name"])
            points.append({"name": name, "session": Path(path).name, "ratio": r["measured_ms"] / base,
                           "ms": r["measured_ms"], "top1": float(top1)})
    return points


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--compare", action="append", required=True, metavar="FILE[:REF]")
    p.add_argument("--accuracy", action="append", default=[], metavar="NAME=TOP1")
    p.add_argument("--rename", action="append", default=[], metavar="FILE:ROW=LABEL",
                   help="label a session's row (FILE: the file's name), e.g. a 'seed' that is not V3-Small")
    p.add_argument("--out", default=None, help="the plot (PNG; needs matplotlib)")
    p.add_argument("--title", default="Fashion-MNIST test top-1 against latency (ONNX Runtime, 1 thread, 80 px)")
    args = p.parse_args(argv)
    accuracy = {k: float(v) for k, _, v in (a.partition("=") for a in args.accuracy)}
    rename = {}
    for item in args.rename:
        where, _, label = item.partition("=")
        file, _, row = where.rpartition(":")
        rename[(file, row)] = label
    points = load_points(args.compare, accuracy, rename)
    print(f"{'network':<22} {'session':<26} {'ms':>7} {'x V3-Small':>10} {'top-1':>7}")
    for q in sorted(points, key=lambda q: (q["name"], q["session"])):
        print(f"{q['name']:<22} {q['session']:<26} {q['ms']:7.3f} {q['ratio']:10.3f} {q['top1']:6.2f}%")
    if args.out:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("matplotlib is not installed (the search extra): no plot", file=sys.stderr)
            return 1
        by_name = defaultdict(list)
        for q in points:
            by_name[q["name"]].append(q)
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, group in sorted(by_name.items()):
            group.sort(key=lambda q: q["ratio"])
            xs, ys = [q["ratio"] for q in group], [q["top1"] for q in group]
            ax.plot(xs, ys, "-o", label=name, markersize=6)
            ax.annotate(name, (xs[-1], ys[-1]), textcoords="offset points", xytext=(5, 3), fontsize=8)
        ax.axvline(0.9, color="grey", linestyle=":", linewidth=1)
        ax.text(0.9, ax.get_ylim()[0], " 0.9x", color="grey", fontsize=8, va="bottom")
        ax.set_xlabel("latency / V3-Small 1.0's in the same session")
        ax.set_ylabel("test top-1 (%)")
        ax.set_title(args.title, fontsize=9)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(args.out, dpi=120)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
