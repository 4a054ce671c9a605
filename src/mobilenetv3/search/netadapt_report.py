"""What a NetAdapt run leaves for people: the final spec and weights, a Markdown report and a trajectory plot.

All of it is derived from the journal (:mod:`.netadapt`), so it can be rewritten at any time; the plot needs
matplotlib (the ``search`` or ``report`` extra) and is left out, with a note in the report, without it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..spec import ArchSpec

FINAL = "final"


def step_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The seed and each step: predicted and measured latency, ratio to the seed, holdout accuracy, the change."""
    seed = next(r for r in records if r.get("type") == "seed")
    rows = [{"step": 0, "change": "seed", "predicted_ms": seed["predicted_ms"], "measured_ms": seed["measured_ms"],
             "measured_ratio": 1.0, "accuracy": seed["accuracy"], "proposals": 0}]
    for r in records:
        if r.get("type") == "step":
            rows.append({"step": r["step"], "change": f"{r['site']} {r['old_width']} -> {r['width']}",
                         "predicted_ms": r["predicted_ms"], "measured_ms": r["measured_ms"],
                         "measured_ratio": r["measured_ratio"], "accuracy": r["accuracy"],
                         "proposals": r["proposals"]})
    return rows


def plot_trajectory(rows: list[dict[str, Any]], path: Path) -> bool:
    """Holdout accuracy against measured and predicted latency (relative to the seed), one point per step; False
    when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    seed_pred = rows[0]["predicted_ms"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot([r["measured_ratio"] for r in rows], [r["accuracy"] for r in rows], "o-", label="measured latency")
    ax.plot([r["predicted_ms"] / seed_pred for r in rows], [r["accuracy"] for r in rows], "s--", alpha=0.6,
            label="predicted latency (table)")
    for r in rows[:: max(1, len(rows) // 8)]:
        ax.annotate(str(r["step"]), (r["measured_ratio"], r["accuracy"]), textcoords="offset points", xytext=(4, 4),
                    fontsize=8)
    ax.invert_xaxis()
    ax.set_xlabel("latency / seed's latency")
    ax.set_ylabel("holdout top-1 (%) after the step's fine-tune")
    ax.set_title("NetAdapt trajectory")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_report(out: str | Path, header: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Path]:
    """Write ``final/spec.json``, ``final/weights.safetensors`` (when the run is done), ``report.md`` and
    ``trajectory.png`` under ``out``; returns the paths written."""
    out = Path(out)
    rows = step_rows(records)
    done = next((r for r in records if r.get("type") == "done"), None)
    written: dict[str, Path] = {}
    if done is not None:
        final = out / FINAL
        final.mkdir(parents=True, exist_ok=True)
        ArchSpec.from_dict(done["spec"]).save(final / "spec.json")
        shutil.copyfile(done["weights"], final / "weights.safetensors")
        written["spec"], written["weights"] = final / "spec.json", final / "weights.safetensors"
    png = out / "trajectory.png"
    has_plot = plot_trajectory(rows, png)
    if has_plot:
        written["plot"] = png
    o, lat = header["options"], header["latency"]
    target = f"{o['target_ratio']} x the seed's latency" if o.get("target_ratio") else f"{o['target_ms']} ms"
    cut_basis = ("latency, each proposal's cut measured end to end" if o.get("proposal_latency", "table") == "measured"
                 else "predicted latency (the table's prediction)")
    lines = ["# NetAdapt run", "",
             f"Seed: `{header['seed_run']}`. Latency: {lat['runtime']}, {lat['threads']} thread(s), "
             f"{lat['resolution']} px, {lat.get('cpu')}. Target {target}; delta {o['delta_ratio']} x the seed's "
             f"{cut_basis}; T = {o['steps_per_proposal']} fine-tune steps per proposal; metric "
             f"{o['metric']}.", "",
             "| step | change | proposals | predicted ms | measured ms | measured / seed | holdout top-1 |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['step']} | {r['change']} | {r['proposals']} | {r['predicted_ms']:.4f} | "
                     f"{r['measured_ms']:.4f} | {r['measured_ratio']:.3f} | {r['accuracy']:.2f}% |")
    lines.append("")
    if done is not None:
        verdict = {"target": "reached the target", "no_proposal": "stopped: no proposal could cut delta more (target "
                   "not reached)", "max_steps": "stopped at the step limit"}[done["reason"]]
        lines.append(f"Result: {verdict} after {done['steps']} step(s); final spec `final/spec.json`, weights "
                     "`final/weights.safetensors`.")
    else:
        lines.append("The run has not finished: `mnv3 search netadapt ... --resume` continues it.")
    lines.append("")
    lines.append("![trajectory](trajectory.png)" if has_plot else
                 "(No plot: install matplotlib, e.g. `pip install -e .[search]`, and rerun with --resume.)")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    written["report"] = out / "report.md"
    return written


__all__ = ["FINAL", "plot_trajectory", "step_rows", "write_report"]
