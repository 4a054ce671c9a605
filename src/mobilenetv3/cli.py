"""`mnv3`: a thin command line over the library. Each subcommand calls one public function."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import __version__
from .cost import MADDS_RULE, spec_cost
from .spec import ArchSpec, SpecError
from .zoo import REGISTRY, get_spec, list_models


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


def _print_json(data) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """A plain text table; ``align`` is one character per column, 'l' or 'r'."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = align or "l" + "r" * (len(headers) - 1)
    lines = []
    for j, row in enumerate(cells):
        parts = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align, strict=True)]
        lines.append("  ".join(parts).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# -- models ---------------------------------------------------------------------------------------
def models_table() -> list[dict]:
    """Every zoo model at its listed widths with parameters and multiply-adds at its default resolution,
    beside the paper's Table 3 figure where the paper gives one."""
    rows = []
    for family, width in list_models():
        spec = get_spec(family, width)
        cost = spec_cost(spec)
        paper = (REGISTRY[family].paper or {}).get(width)
        rows.append({
            "name": spec.name, "family": family, "width_mult": width, "resolution": spec.resolution,
            "params": cost.params, "madds": cost.madds,
            "paper_params_m": paper[0] if paper else None, "paper_madds_m": paper[1] if paper else None,
        })
    return rows


def cmd_models(args: argparse.Namespace) -> int:
    rows = models_table()
    if args.json:
        _print_json({"madds_rule": MADDS_RULE, "models": rows})
        return 0
    print(_table(
        ["model", "width", "res", "params", "MAdds (M)", "Table 3 params", "Table 3 MAdds (M)"],
        [[r["name"], f"{r['width_mult']:g}", r["resolution"], f"{r['params']:,}", f"{r['madds'] / 1e6:.1f}",
          f"{r['paper_params_m']}M" if r["paper_params_m"] else "-",
          f"{r['paper_madds_m']:g}" if r["paper_madds_m"] else "-"] for r in rows],
    ))
    print(f"\nMAdds: {MADDS_RULE}.")
    return 0


# -- profile --------------------------------------------------------------------------------------
def resolve_spec(name: str | None = None, spec_file: str | None = None, width_mult: float = 1.0) -> ArchSpec:
    """A spec from a zoo name (with width multiplier) or a JSON spec file."""
    if (name is None) == (spec_file is None):
        raise CLIError("give a model NAME or --spec FILE.json (exactly one)")
    if spec_file is not None:
        if width_mult != 1.0:
            raise CLIError("--width-mult applies to zoo models; a spec file already holds its widths")
        return ArchSpec.load(spec_file)
    return get_spec(name, width_mult)


def profile(spec: ArchSpec, resolution: int | None = None) -> dict:
    """Per-layer shapes, parameters and multiply-adds of ``spec``, with totals."""
    cost = spec_cost(spec, resolution)
    return {
        "name": spec.name, "resolution": list(cost.resolution), "params": cost.params, "madds": cost.madds,
        "madds_rule": MADDS_RULE, "layers": [layer.to_dict() for layer in cost.layers],
    }


def cmd_profile(args: argparse.Namespace) -> int:
    spec = resolve_spec(args.name, args.spec, args.width_mult)
    if args.resolution is not None and args.resolution < 1:
        raise CLIError(f"--resolution must be a positive integer, got {args.resolution}")
    result = profile(spec, args.resolution)
    if args.json:
        _print_json(result)
        return 0

    def shape(s) -> str:
        return "x".join(str(v) for v in s)

    print(f"{result['name']} at {shape(result['resolution'])}")
    rows = [[r["name"], r["kind"], shape(r["in_shape"]), shape(r["out_shape"]), f"{r['params']:,}",
             f"{r['madds']:,}"] for r in result["layers"]]
    rows.append(["total", "", "", "", f"{result['params']:,}", f"{result['madds']:,}"])
    print(_table(["layer", "kind", "input", "output", "params", "MAdds"], rows, "llrrrr"))
    print(f"\n{result['params'] / 1e6:.3f}M parameters, {result['madds'] / 1e6:.1f}M MAdds ({MADDS_RULE}).")
    return 0


# -- entry point ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnv3", description="MobileNetV3 models, costs and tools.")
    parser.add_argument("--version", action="version", version=f"mnv3 {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("models", help="list zoo models with parameters and multiply-adds")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("profile", help="per-layer shapes, parameters and multiply-adds of a model")
    p.add_argument("name", nargs="?", help=f"zoo model: {', '.join(REGISTRY)}")
    p.add_argument("--spec", metavar="FILE.json", help="a spec file instead of a zoo name")
    p.add_argument("--width-mult", type=float, default=1.0, help="width multiplier for a zoo model")
    p.add_argument("--resolution", type=int, default=None, help="input size (default: the spec's own, 224)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_profile)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (CLIError, SpecError, FileNotFoundError, ValueError) as e:
        print(f"mnv3 {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyError as e:
        print(f"mnv3 {args.command}: error: {e.args[0]}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
