"""``mnv3 bench``'s result as a reader sees it: header lines, then per section its lines and tables.

The renderers return lines (``str``) and :class:`Table` items (headers, rows, column alignment) in print order;
how a table is drawn is the caller's (the CLI draws plain text tables).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from ..runtime.timing import format_ms
from .paper import PHONES


class Table(NamedTuple):
    headers: list[str]
    rows: list[list[Any]]
    align: str | None = None  # one character per column, "l" or "r"; None: first left, the rest right


def millions(v: int) -> str:
    """A count (parameters, multiply-adds) in millions."""
    return f"{v / 1e6:.2f}"


def ratio_text(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def per_phone(d: dict | None, fmt: Callable[[Any], str] = ratio_text) -> list[str]:
    """One cell per Pixel phone of :data:`~.paper.PHONES` (``-`` where the paper has no figure)."""
    return [fmt(d[p]) if d else "-" for p in PHONES]


def round_range(row: dict) -> str:
    """The spread of a row's per-round medians, ``min-max`` ms (``-`` for a single round)."""
    v = row["round_medians_ms"]
    return f"{min(v):.2f}-{max(v):.2f}" if len(v) > 1 else "-"


def _pixel1(row: dict) -> Any:
    return row["paper_ms"]["Pixel 1"] if row["paper_ms"] else "-"


def _v3_vs_v2(sec: dict) -> list[str | Table]:
    return [Table(["model", "res", "params (M)", "MAdds (M)", "median ms", "rounds", "T3 params (M)", "T3 MAdds (M)",
                   "T3 P-1 ms", "P-2", "P-3"],
                  [[r["label"], r["resolution"], millions(r["params"]), millions(r["madds"]), format_ms(r["median_ms"]),
                    round_range(r), r["paper_params_m"] or "-", r["paper_madds_m"] or "-",
                    *per_phone(r["paper_ms"], str)] for r in sec["rows"]]),
            "",
            Table(["latency ratio", "ours", "T3 P-1", "P-2", "P-3", "MAdds ratio", "T3 MAdds ratio"],
                  [[c["pair"], ratio_text(c["latency_ratio"]), *per_phone(c["paper_latency_ratio"]),
                    ratio_text(c["madds_ratio"]), ratio_text(c["paper_madds_ratio"])] for c in sec["comparisons"]])]


def _hswish(sec: dict) -> list[str | Table]:
    return [Table(["variant", "h-swish", "MAdds (M)", "median ms", "rounds", "vs ReLU", "T5 P-1 ms", "T5 vs ReLU"],
                  [[r["label"], r["hswish"], millions(r["madds"]), format_ms(r["median_ms"]), round_range(r),
                    ratio_text(r["vs_relu"]), _pixel1(r), ratio_text(r["paper_vs_relu"])] for r in sec["rows"]]),
            "",
            Table(["naive / fused h-swish", "ours", "T5 P-1"],
                  [[c["variant"], ratio_text(c["naive_vs_fused"]), ratio_text(c["paper_naive_vs_fused"])]
                   for c in sec["comparisons"]])]


def _grid(sec: dict) -> list[str | Table]:
    return [Table(["model", "res", "params (M)", "MAdds (M)", "median ms", "rounds", "GMAdd/s", "vs 1.0@224",
                   "T3 P-1 ms", "T3 vs 1.0@224"],
                  [[r["label"], r["resolution"], millions(r["params"]), millions(r["madds"]), format_ms(r["median_ms"]),
                    round_range(r), f"{r['gmadds_per_s']:.1f}", ratio_text(r["vs_ref"]), _pixel1(r),
                    ratio_text((r["paper_vs_ref"] or {}).get("Pixel 1"))] for r in sec["rows"]])]


def _int8(sec: dict) -> list[str | Table]:
    return [Table(["model", "runtime", "MAdds (M)", "median ms", "rounds", "paper P-1 ms", "P-2", "P-3"],
                  [[r["label"], r["runtime"], millions(r["madds"]), format_ms(r["median_ms"]), round_range(r),
                    *per_phone(r["paper_ms"], str)] for r in sec["rows"]]),
            "",
            Table(["int8 speed-up", "ours", "T3/T4 P-1", "P-2", "P-3"],
                  [[c["model"], ratio_text(c["int8_speedup"]), *per_phone(c["paper_int8_speedup"])]
                   for c in sec["comparisons"]])]


def _peers(sec: dict) -> list[str | Table]:
    v = sec["peer_versions"]
    return [f"peers ({sec['peer_python']}): torch {v.get('torch')}, torchvision {v.get('torchvision')}, "
            f"timm {v.get('timm')}, onnxruntime {v.get('onnxruntime', '-')}",
            Table(["model", "path", "MAdds (M)", "median ms", "rounds", "vs best peer"],
                  [[r["model"], r["path"], millions(r["madds"]), format_ms(r["median_ms"]), round_range(r),
                    f"{r['vs_best_peer']:.2f}x" if r["vs_best_peer"] else "-"] for r in sec["rows"]], "llrrrr")]


def _task(phone: str) -> Callable[[dict], list[str | Table]]:
    """Table 7's and Table 6's sections: the networks, then each pair's latency ratio beside the paper's."""
    short = {"Pixel 1": "P-1", "Pixel 3": "P-3"}[phone]

    def tables(sec: dict) -> list[str | Table]:
        return [Table(["network", "input", "params (M)", "MAdds (M)", "median ms", "rounds", f"paper {short} ms"],
                      [[r["label"], "x".join(map(str, r["resolution"])) if isinstance(r["resolution"], list)
                        else f"{r['resolution']}x{r['resolution']}", millions(r["params"]), millions(r["madds"]),
                        format_ms(r["median_ms"]), round_range(r), r["paper_ms"][phone]] for r in sec["rows"]]),
                "",
                Table(["latency ratio", "ours", "fastest", f"paper {short}", "MAdds ratio", "paper MAdds ratio"],
                      [[c["pair"], ratio_text(c["latency_ratio"]), ratio_text(c["fastest_ratio"]),
                        ratio_text(c["paper_latency_ratio"]), ratio_text(c["madds_ratio"]),
                        ratio_text(c["paper_madds_ratio"])] for c in sec["comparisons"]])]

    return tables


# section name -> its tables (the sections of .sections.BENCH_SECTIONS)
SECTION_TABLES: dict[str, Callable[[dict], list[str | Table]]] = {
    "v3-vs-v2": _v3_vs_v2, "hswish": _hswish, "grid": _grid, "int8": _int8, "segmentation": _task("Pixel 3"),
    "detection": _task("Pixel 1"), "peers": _peers,
}


def section_report(name: str, sec: dict) -> list[str | Table]:
    """One section of :func:`~.run.paper_comparisons`' result: its title, how it was measured, the paper's source,
    its tables and notes (or why it was skipped)."""
    m = sec["measured"]
    out: list[str | Table] = [f"\n== {name}: {sec['title']} ==",
                              f"{m['cpu']}, {m['runtime']}, {m['threads']} thread(s), {m['clock']} clock, batch 1, "
                              f"{m['date']} (load {m['load_avg_1m']})"]
    if sec.get("skipped"):
        return [*out, f"skipped: {sec['skipped']}"]
    if sec.get("paper"):
        out.append(f"paper: {sec['paper']}")
    if name in SECTION_TABLES:
        out += SECTION_TABLES[name](sec)
    return out + [f"  {note}" for note in sec.get("notes", [])]


def bench_header(result: dict) -> list[str]:
    """The lines above the sections: CPU, settings, load at start and end, versions."""
    m, s, v = result["machine"], result["settings"], result["versions"]
    return [f"CPU: {m['cpu']} ({m['logical_cpus']} logical CPUs), {s['threads']} thread(s), batch 1, {s['clock']} "
            f"clock, {s['rounds']} interleaved round(s), {m['date']}; load average (1 min) {m['load_avg_1m']} at the "
            f"start, {m['load_avg_1m_end']} at the end",
            f"torch {v['torch']}, onnxruntime {v['onnxruntime'] or '-'}, mobilenetv3 {v['mobilenetv3']}; random "
            "weights (latency does not depend on them); the paper measured TFLite on Pixel phones: compare ratios"]


def bench_footer(result: dict) -> list[str]:
    return [f"\nMAdds: {result['madds_rule']}."]


__all__ = ["SECTION_TABLES", "Table", "bench_footer", "bench_header", "millions", "per_phone", "ratio_text",
           "round_range", "section_report"]
