"""The controller against random search (issue 16), with the V3 width family scored the same way.

    python benchmarks/nas_compare.py --nas runs/pipeline/nas --random runs/nas-random \\
        --data-run runs/seed --table runs/pipeline/latency-table.json --out benchmarks/results/nas-fmnist-small \\
        [--family mobilenet_v3_small:0.75,1.0,1.25] [--family mobilenet_v3_large:0.75,1.0] [--workers 2] \\
        [--rounds 20]

Reads the two NAS journals (same space, target, reward, proxy and budget: refused otherwise) and states each
search's reward over its samples by quarter and over the last quarter (mean, standard deviation, standard error),
the difference of the last quarters' means with a 95% interval (Welch), and how many samples met the target.

The width family (V3-Small and V3-Large at uniform width multipliers, at the data's shape) is trained on the same
proxy task exactly as a NAS sample (same steps, task and seed rule; `evaluate_candidate`), its latency predicted
by the same table, so the plot puts it on the searches' axes: ``pareto.png`` has both searches' samples, their
Pareto fronts, the family and the target. With ``--rounds`` > 0 the family and each search's best are also
measured end to end in one interleaved session (needs a quiet machine). The family's proxy results are cached in
``family.jsonl`` under ``--out``, so a rerun trains nothing twice.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from mobilenetv3 import zoo
from mobilenetv3.search.candidate import evaluate_candidate, spec_hash
from mobilenetv3.search.evaluator import make_evaluator
from mobilenetv3.search.growing_table import GrowingTable
from mobilenetv3.search.nas import proxy_spec, task_from_run
from mobilenetv3.search.nas_report import pareto_front
from mobilenetv3.search.proxy import ProxyTask
from mobilenetv3.search.reward import reward
from mobilenetv3.spec import ArchSpec
from mobilenetv3.train.sampler import mix_seed

SAME = ("space", "w", "num_classes")
SAME_OPTIONS = ("target_ms", "samples", "steps_per_sample", "hard", "batch")


def read_journal(directory: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    path = Path(directory) / "journal.jsonl"
    if not path.is_file():
        raise SystemExit(f"{directory}: no journal.jsonl (is it a NAS run directory?)")
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    header = lines[0]
    samples = sorted((r for r in lines[1:] if r.get("type") == "sample"), key=lambda r: r["index"])
    return header, samples


def describe(rewards: list[float]) -> dict[str, float]:
    n = len(rewards)
    sd = statistics.stdev(rewards) if n > 1 else 0.0
    return {"count": n, "mean": statistics.fmean(rewards), "std": sd, "sem": sd / math.sqrt(n) if n else 0.0}


def quarters(samples: list[dict[str, Any]]) -> list[dict[str, float]]:
    q = max(1, len(samples) // 4)
    return [describe([r["reward"] for r in samples[k * q:(k + 1) * q if k < 3 else len(samples)]]) for k in range(4)]


def family_specs(args: list[str], task: ProxyTask, classes: int) -> list[tuple[str, ArchSpec]]:
    out = []
    for item in args:
        name, _, widths = item.partition(":")
        maker = getattr(zoo, name, None)
        if maker is None or not widths:
            raise SystemExit(f"--family takes ZOO_NAME:W1,W2,... (e.g. mobilenet_v3_small:0.75,1.0), got {item!r}")
        for w in widths.split(","):
            spec = maker(float(w)).replace(in_channels=task.channels, resolution=task.resolution, num_classes=classes)
            out.append((f"{name.replace('mobilenet_', '').replace('_', '-')} {float(w):g}", spec))
    return out


def score_family(family: list[tuple[str, ArchSpec]], task: ProxyTask, classes: int, steps: int, seed: int,
                 out: Path, workers: int) -> dict[str, float]:
    """Proxy accuracy of each member, as NAS trains a sample (its seed from the spec's hash); cached."""
    cache_file = out / "family.jsonl"
    cache = {}
    if cache_file.is_file():
        for line in cache_file.read_text().splitlines():
            r = json.loads(line)
            if ProxyTask.from_dict(r["task"]) == task and r.get("steps") == steps and r.get("seed") == seed:
                cache[r["spec_hash"]] = r["accuracy"]
    todo = [(n, s) for n, s in family if spec_hash(s) not in cache]
    jobs = [{"spec": proxy_spec(s, task, classes).to_dict(), "task": task.to_dict(), "steps": steps,
             "seed": mix_seed(seed, int(spec_hash(s), 16)), "source": None, "out": None} for _, s in todo]
    if jobs:
        print(f"training {len(jobs)} width-family member(s) on the proxy ({steps} steps each)...", file=sys.stderr)

        def done(k: int, result: dict[str, Any]) -> None:
            digest = spec_hash(todo[k][1])
            cache[digest] = result["accuracy"]
            with cache_file.open("a") as f:
                f.write(json.dumps({"name": todo[k][0], "spec_hash": digest, "accuracy": result["accuracy"],
                                    "seconds": result.get("seconds"), "task": task.to_dict(), "steps": steps,
                                    "seed": seed}) + "\n")
            print(f"  {todo[k][0]}: {result['accuracy']:.2f}% ({result.get('seconds')} s)", file=sys.stderr)

        with make_evaluator("process" if workers > 1 else "serial", workers) as evaluator:
            evaluator.run(evaluate_candidate, jobs, on_result=done)
    return {n: cache[spec_hash(s)] for n, s in family}


def plot(runs: dict[str, list[dict[str, Any]]], family: list[dict[str, Any]], target_ms: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    styles = {"controller": ("tab:blue", "o"), "random": ("tab:orange", "^")}
    for name, samples in runs.items():
        colour, marker = styles[name]
        x = [r["predicted_ms"] for r in samples]
        y = [r["accuracy"] for r in samples]
        ax.scatter(x, y, s=16, alpha=0.55, color=colour, marker=marker, label=f"{name} samples ({len(samples)})")
        front = pareto_front(list(zip(x, y, strict=True)))
        ax.step([x[i] for i in front], [y[i] for i in front], where="post", color=colour, lw=1.2)
    ax.scatter([f["predicted_ms"] for f in family], [f["accuracy"] for f in family], marker="*", s=110,
               color="black", label="V3 width family (same proxy)", zorder=3)
    for f in family:
        ax.annotate(f["name"], (f["predicted_ms"], f["accuracy"]), fontsize=7, xytext=(4, -10),
                    textcoords="offset points")
    ax.axvline(target_ms, color="grey", ls="--", lw=1, label=f"target {target_ms:g} ms")
    ax.set_xlabel("predicted latency (ms, this machine's table)")
    ax.set_ylabel("proxy holdout top-1 (%)")
    ax.set_title("NAS: controller vs random search, same budget and proxy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nas", required=True, help="the controller's NAS directory")
    p.add_argument("--random", required=True, help="the random search's NAS directory")
    p.add_argument("--data-run", required=True, help="the data run both searches used")
    p.add_argument("--table", required=True, help="the latency table both searches used")
    p.add_argument("--out", required=True, help="where the figures, the plot and the family cache go")
    p.add_argument("--family", action="append", default=None, metavar="ZOO_NAME:W1,W2",
                   help="width family members (default mobilenet_v3_small:0.75,1.0,1.25 and "
                        "mobilenet_v3_large:0.75,1.0)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=20, help="interleaved rounds of end-to-end timing (0: none)")
    args = p.parse_args(argv)
    (h_c, s_c), (h_r, s_r) = read_journal(args.nas), read_journal(args.random)
    for k in SAME:
        if h_c.get(k) != h_r.get(k):
            raise SystemExit(f"the two searches differ in {k}: {h_c.get(k)!r} vs {h_r.get(k)!r}")
    for k in SAME_OPTIONS:
        if h_c["options"][k] != h_r["options"][k]:
            raise SystemExit(f"the two searches differ in {k}: {h_c['options'][k]!r} vs {h_r['options'][k]!r}")
    if h_c["task"] != h_r["task"]:
        raise SystemExit("the two searches trained on different proxy tasks")
    if h_c["options"]["strategy"] != "controller" or h_r["options"]["strategy"] != "random":
        raise SystemExit("--nas must be a controller run and --random a random-search run")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    o = h_c["options"]
    task = ProxyTask.from_dict(h_c["task"])
    from_run, classes = task_from_run(args.data_run, lr=task.lr, eval_limit=task.eval_limit,
                                      bn_batches=task.bn_batches)
    if from_run != task or classes != h_c["num_classes"]:
        raise SystemExit(f"{args.data_run} is not the data run the searches trained on")
    family = family_specs(args.family or ["mobilenet_v3_small:0.75,1.0,1.25", "mobilenet_v3_large:0.75,1.0"],
                          task, classes)
    seed_spec = family[0][1]
    table = GrowingTable(args.table, seed_spec.replace(name="seed"))
    accuracy = score_family(family, task, classes, o["steps_per_sample"], o["seed"], out, args.workers)
    rows = []
    for name, spec in family:
        ms = table.predict(spec)
        rows.append({"name": name, "spec_hash": spec_hash(spec), "accuracy": accuracy[name], "predicted_ms": ms,
                     "reward": reward(accuracy[name] / 100, ms, o["target_ms"], h_c["w"], hard=o["hard"])})
    runs = {"controller": s_c, "random": s_r}
    result: dict[str, Any] = {"target_ms": o["target_ms"], "w": h_c["w"], "latency": h_c["latency"], "searches": {}}
    for name, samples in runs.items():
        best = max(samples, key=lambda r: r["reward"])
        result["searches"][name] = {
            "samples": len(samples), "trained": sum(not r["cached"] for r in samples),
            "quarters": quarters(samples), "all": describe([r["reward"] for r in samples]),
            "within_target": sum(r["predicted_ms"] <= o["target_ms"] for r in samples),
            "seconds_per_trained_sample": statistics.fmean(r["seconds"] for r in samples if r.get("seconds")),
            "best": {k: best[k] for k in ("index", "accuracy", "predicted_ms", "reward", "spec_hash")}}
    a, b = result["searches"]["controller"]["quarters"][3], result["searches"]["random"]["quarters"][3]
    diff = a["mean"] - b["mean"]
    se = math.sqrt(a["sem"] ** 2 + b["sem"] ** 2)
    result["last_quarter_difference"] = {"mean": diff, "ci95": [diff - 1.96 * se, diff + 1.96 * se],
                                         "z": diff / se if se else None}
    result["family"] = rows
    if args.rounds > 0:
        from mobilenetv3.search.table_check import measure_interleaved

        specs = [s for _, s in family] + [ArchSpec.from_dict(max(sm, key=lambda r: r["reward"])["spec"])
                                          for sm in runs.values()]
        print(f"timing {len(specs)} specs end to end in {args.rounds} interleaved rounds...", file=sys.stderr)
        ms = measure_interleaved(table.table, specs, rounds=args.rounds, min_seconds=0.3, progress=False,
                                 statistic="min")[0]
        for r, m in zip(rows, ms, strict=False):
            r["measured_ms"] = m
        for name, m in zip(runs, ms[len(rows):], strict=True):
            result["searches"][name]["best"]["measured_ms"] = m
    plot(runs, rows, o["target_ms"], out / "pareto.png")
    (out / "nas-compare.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"target {o['target_ms']} ms, w {h_c['w']}, {h_c['latency'].get('cpu')}")
    print(f"{'search':<11} {'Q1':>16} {'Q2':>16} {'Q3':>16} {'Q4 (last)':>16}  within target  s/sample")
    for name, s in result["searches"].items():
        cells = [f"{q['mean']:.4f}+-{q['std']:.4f}" for q in s["quarters"]]
        print(f"{name:<11} " + " ".join(f"{c:>16}" for c in cells)
              + f"  {s['within_target']:>13}  {s['seconds_per_trained_sample']:>8.1f}")
    d = result["last_quarter_difference"]
    print(f"last quarter, controller - random: {d['mean']:+.4f} (95% CI {d['ci95'][0]:+.4f} .. {d['ci95'][1]:+.4f})")
    print(f"{'network':<24} {'proxy top-1':>11} {'predicted ms':>12} {'measured ms':>11} {'reward':>8}")
    for r in rows + [{"name": f"best of {n}", **s["best"]} for n, s in result["searches"].items()]:
        m = r.get("measured_ms")
        print(f"{r['name']:<24} {r['accuracy']:>10.2f}% {r['predicted_ms']:>12.4f} "
              f"{(f'{m:.4f}' if m is not None else '-'):>11} {r['reward']:>8.4f}")
    print(f"plot {out / 'pareto.png'}; figures {out / 'nas-compare.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
