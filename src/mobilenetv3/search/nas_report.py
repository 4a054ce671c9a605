"""What a NAS run leaves for people: a Markdown report, a Pareto plot and the best spec, all from its journal.

Everything is derived from the journal (:mod:`.nas`), so it can be rewritten at any time, also for an unfinished
run. The plot needs matplotlib (the ``search`` or ``report`` extra) and is left out, with a note in the report,
without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..spec import ArchSpec

BEST = "best"


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (latency, accuracy) points no other point beats on both (lower or equal latency and higher
    or equal accuracy, one strictly), by increasing latency. Of exact duplicates the first is kept."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1], i))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def stage_text(choice: Sequence[Sequence[Any]]) -> str:
    """A choice in short: per stage depth delta / kernel / expansion / SE / activation / width multiplier."""
    parts = []
    for depth, kernel, expansion, se, act, width in choice:
        parts.append(f"{depth:+d} k{kernel} e{expansion:g} {'se' if se else '-'} {act} x{width:g}")
    return "; ".join(parts)


def plot_pareto(samples: list[dict[str, Any]], top: list[dict[str, Any]], target_ms: float, path: Path) -> bool:
    """Proxy accuracy against predicted latency of every sample (coloured by when it was drawn), the Pareto front,
    the target, and the top-k at their measured latency; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    x = [r["predicted_ms"] for r in samples]
    y = [r["accuracy"] for r in samples]
    points = ax.scatter(x, y, c=[r["index"] for r in samples], cmap="viridis", s=18, label="samples (predicted)")
    fig.colorbar(points, ax=ax, label="sample index")
    front = pareto_front(list(zip(x, y, strict=True)))
    ax.step([x[i] for i in front], [y[i] for i in front], where="post", color="black", lw=1, alpha=0.6,
            label="Pareto front")
    if top:
        ax.scatter([r["measured_ms"] for r in top], [r["accuracy"] for r in top], marker="x", color="red", s=40,
                   label="top-k (measured)")
    ax.axvline(target_ms, color="grey", ls="--", lw=1, label=f"target {target_ms:g} ms")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("proxy holdout top-1 (%)")
    ax.set_title("NAS samples")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_report(out: str | Path, header: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Path]:
    """Write ``report.md``, ``pareto.png`` and (when the run is done) ``best/spec.json`` under ``out``; returns the
    paths written."""
    out = Path(out)
    samples = sorted((r for r in records if r.get("type") == "sample"), key=lambda r: r["index"])
    done = next((r for r in records if r.get("type") == "done"), None)
    top = done["top"] if done is not None else []
    o = header["options"]
    written: dict[str, Path] = {}
    if done is not None:
        (out / BEST).mkdir(parents=True, exist_ok=True)
        ArchSpec.from_dict(done["best"]["spec"]).save(out / BEST / "spec.json")
        written["spec"] = out / BEST / "spec.json"
    png = out / "pareto.png"
    if samples and plot_pareto(samples, top, o["target_ms"], png):
        written["plot"] = png
    lat, task = header["latency"], header["task"]
    searcher = f"controller ({o['algorithm']})" if o["strategy"] == "controller" else "random search"
    constraint = "hard constraint" if o["hard"] else f"soft constraint, w = {header['w']}"
    lines = ["# NAS run", "",
             f"Space `{header['space']['name']}`, {searcher}, seed {o['seed']}; {len(samples)} of {o['samples']} "
             f"samples in batches of {o['batch']}. Reward ACC x (LAT / {o['target_ms']} ms) ^ w, {constraint}. "
             f"Latency: {lat['runtime']}, {lat['threads']} thread(s), {lat['resolution']} px, {lat.get('cpu')}. "
             f"Proxy: {o['steps_per_sample']} training steps from scratch on `{task['data']}` at "
             f"{task['resolution']} px, scored on {task['holdout']} held-out training images.", ""]
    if done is not None:
        q = done["last_quarter"]
        lines += [f"- trained: {done['trained']} distinct specs ({done['samples'] - done['trained']} samples reused "
                  "a cached accuracy)",
                  f"- mean reward of the last {q['count']} samples: {q['mean_reward']:.4f} (std {q['std_reward']:.4f})",
                  f"- samples within the target (predicted): {done['within_target']}"
                  + ("" if done["target_met"] else " - **no sample met the target**"),
                  f"- best: sample {done['best']['index']}, reward {done['best']['reward']:.4f}, proxy top-1 "
                  f"{done['best']['accuracy']:.2f}%, measured {done['best']['measured_ms']:.4f} ms; spec "
                  "`best/spec.json`", "",
                  "| rank | sample | spec | proxy top-1 | predicted ms | measured ms | reward | reward (measured) |",
                  "|---:|---:|---|---:|---:|---:|---:|---:|"]
        for r in top:
            lines.append(f"| {r['rank']} | {r['index']} | {stage_text(r['choice'])} | {r['accuracy']:.2f}% | "
                         f"{r['predicted_ms']:.4f} | {r['measured_ms']:.4f} | {r['reward']:.4f} | "
                         f"{r['measured_reward']:.4f} |")
    else:
        lines.append("The run has not finished: `mnv3 search nas ... --resume` continues it.")
    lines.append("")
    lines.append("![Pareto plot](pareto.png)" if "plot" in written else
                 "(No plot: install matplotlib, e.g. `pip install -e .[search]`, and rewrite the report.)")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    written["report"] = out / "report.md"
    return written


__all__ = ["BEST", "pareto_front", "plot_pareto", "stage_text", "write_report"]
