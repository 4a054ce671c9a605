"""Does the NAS proxy rank networks as full training does? (issue 16)

    python benchmarks/proxy_fidelity.py --data-run runs/seed --out benchmarks/results/proxy-fidelity \\
        --trained v3-small-0.35=SPEC.json:92.70 --trained nas-best=SPEC.json:91.81 ... \\
        --setting constant:60 --setting cosine:60 --setting cosine:120 [--seeds 2] [--workers 2]

Each ``--trained NAME=SPEC:ACC`` is a network trained with the main recipe and its test top-1 (%) (a zoo name
``ZOO_NAME@WIDTH`` works in place of a spec file). Each ``--setting SCHEDULE:STEPS[:WARMUP]`` is a proxy: every
network is trained from scratch on it exactly as a NAS sample is (``evaluate_candidate``, the sample's seed rule;
``--seeds`` > 1 adds seeds to see the proxy's own noise) and scored on the data run's holdout. Printed per setting:
each network's proxy accuracy (mean over seeds, and their standard deviation), Kendall's tau and Spearman's rho
against the trained accuracies, the pairs the proxy orders wrongly, and the seconds of one core per network.
Results are cached in ``fidelity.jsonl`` under ``--out`` (a rerun trains nothing twice) and summarised in
``fidelity.json`` (``--summary``).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from mobilenetv3 import zoo
from mobilenetv3.search.candidate import evaluate_candidate, spec_hash
from mobilenetv3.search.evaluator import make_evaluator
from mobilenetv3.search.nas import proxy_spec, task_from_run
from mobilenetv3.spec import ArchSpec
from mobilenetv3.train.sampler import mix_seed


def parse_trained(items: list[str], channels: int, resolution: int, classes: int) -> list[tuple[str, ArchSpec, float]]:
    out = []
    for item in items:
        name, _, rest = item.partition("=")
        source, _, acc = rest.rpartition(":")
        if not name or not source or not acc:
            raise SystemExit(f"--trained takes NAME=SPEC.json:ACC or NAME=ZOO_NAME@WIDTH:ACC, got {item!r}")
        if "@" in source and not Path(source).is_file():
            zoo_name, _, width = source.partition("@")
            spec = getattr(zoo, zoo_name)(float(width))
        else:
            spec = ArchSpec.load(source)
        spec = spec.replace(in_channels=channels, resolution=resolution, num_classes=classes)
        out.append((name, spec, float(acc)))
    return out


def ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    r = [0.0] * len(values)
    for pos, i in enumerate(order):
        r[i] = float(pos)
    return r


def kendall(a: list[float], b: list[float]) -> float:
    pairs = list(itertools.combinations(range(len(a)), 2))
    s = sum((a[i] - a[j]) * (b[i] - b[j]) > 0 for i, j in pairs) - sum((a[i] - a[j]) * (b[i] - b[j]) < 0
                                                                       for i, j in pairs)
    return s / len(pairs)


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = ranks(a), ranks(b)
    return statistics.correlation(ra, rb)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-run", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--trained", action="append", required=True, metavar="NAME=SPEC:ACC")
    p.add_argument("--setting", action="append", required=True, metavar="SCHEDULE:STEPS[:WARMUP]")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="the NAS seed whose sample seed rule is used")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--summary", default="fidelity.json", help="the summary's file name under --out")
    args = p.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base, classes = task_from_run(args.data_run)
    nets = parse_trained(args.trained, base.channels, base.resolution, classes)
    if len(nets) < 3:
        raise SystemExit("give at least three --trained networks: a ranking of two says little")
    cache_file = out / "fidelity.jsonl"
    cache: dict[tuple, dict[str, Any]] = {}
    if cache_file.is_file():
        for line in cache_file.read_text().splitlines():
            r = json.loads(line)
            cache[(r["spec_hash"], json.dumps(r["task"], sort_keys=True), r["steps"], r["seed"])] = r

    settings = []
    for item in args.setting:
        parts = item.split(":")
        if len(parts) not in (2, 3):
            raise SystemExit(f"--setting takes SCHEDULE:STEPS[:WARMUP], got {item!r}")
        warmup = float(parts[2]) if len(parts) == 3 else (0.1 if parts[0] == "cosine" else 0.0)
        settings.append((item, dataclasses.replace(base, schedule=parts[0], warmup=warmup), int(parts[1])))

    jobs, keys = [], []
    for _, task, steps in settings:
        for name, spec, _ in nets:
            for s in range(args.seeds):
                seed = mix_seed(args.seed + s, int(spec_hash(spec), 16))
                key = (spec_hash(spec), json.dumps(task.to_dict(), sort_keys=True), steps, seed)
                if key not in cache:
                    keys.append((key, name))
                    jobs.append({"spec": proxy_spec(spec, task, classes).to_dict(), "task": task.to_dict(),
                                 "steps": steps, "seed": seed, "source": None, "out": None})
    if jobs:
        print(f"training {len(jobs)} proxy run(s) on {args.workers} worker(s)...", file=sys.stderr)

        def done(k: int, result: dict[str, Any]) -> None:
            key, name = keys[k]
            row = {"name": name, "spec_hash": key[0], "task": json.loads(key[1]), "steps": key[2], "seed": key[3],
                   "accuracy": result["accuracy"], "seconds": result.get("seconds")}
            cache[key] = row
            with cache_file.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"  {name} {row['task']['schedule']}:{key[2]} seed {key[3] % 1000}: {row['accuracy']:.2f}% "
                  f"({row['seconds']} s)", file=sys.stderr)

        with make_evaluator("process" if args.workers > 1 else "serial", args.workers) as evaluator:
            evaluator.run(evaluate_candidate, jobs, on_result=done)

    trained = [acc for _, _, acc in nets]
    summary = {"data_run": args.data_run, "seeds": args.seeds, "trained": {n: a for n, _, a in nets}, "settings": []}
    for label, task, steps in settings:
        per_net, spread, seconds = [], [], []
        for _, spec, _ in nets:
            rows = [cache[(spec_hash(spec), json.dumps(task.to_dict(), sort_keys=True), steps,
                           mix_seed(args.seed + s, int(spec_hash(spec), 16)))] for s in range(args.seeds)]
            per_net.append(statistics.fmean(r["accuracy"] for r in rows))
            spread.append(statistics.stdev(r["accuracy"] for r in rows) if len(rows) > 1 else None)
            seconds += [r["seconds"] for r in rows if r["seconds"] is not None]
        wrong = [f"{nets[i][0]} vs {nets[j][0]}" for i, j in itertools.combinations(range(len(nets)), 2)
                 if (per_net[i] - per_net[j]) * (trained[i] - trained[j]) < 0]
        row = {"setting": label, "steps": steps, "schedule": task.schedule, "warmup": task.warmup,
               "proxy": {n: round(a, 2) for (n, _, _), a in zip(nets, per_net, strict=True)},
               "kendall_tau": round(kendall(per_net, trained), 3), "spearman_rho": round(spearman(per_net, trained), 3),
               "seed_std": {n: round(sd, 2) for (n, _, _), sd in zip(nets, spread, strict=True) if sd is not None},
               "misordered": wrong, "mean_seconds": round(statistics.fmean(seconds), 1) if seconds else None}
        summary["settings"].append(row)
        print(f"\n{label} ({args.seeds} seed(s) each, {row['mean_seconds']} s of one core per run):")
        for (name, _, acc), a, sd in zip(nets, per_net, spread, strict=True):
            noise = f" (seed std {sd:.2f})" if sd is not None else ""
            print(f"  {name:<18} trained {acc:6.2f}%   proxy {a:6.2f}%{noise}")
        print(f"  Kendall tau {row['kendall_tau']:+.3f}, Spearman rho {row['spearman_rho']:+.3f}; "
              f"misordered pairs: {', '.join(wrong) or 'none'}")
    (out / args.summary).write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
