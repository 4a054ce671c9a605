"""`mnv3 models` and `mnv3 profile`: the zoo and a model's exact per-layer costs."""

from __future__ import annotations

import argparse

from ..cost import MADDS_RULE, spec_cost, zoo_costs
from ..zoo import REGISTRY, resolve_spec
from .output import check_resolution, print_json, table


def cmd_models(args: argparse.Namespace) -> int:
    rows = zoo_costs()
    if args.json:
        print_json({"madds_rule": MADDS_RULE, "models": rows})
        return 0
    print(table(
        ["model", "width", "res", "params", "MAdds (M)", "Table 3 params", "Table 3 MAdds (M)"],
        [[r["name"], f"{r['width_mult']:g}", r["resolution"], f"{r['params']:,}", f"{r['madds'] / 1e6:.1f}",
          f"{r['paper_params_m']}M" if r["paper_params_m"] else "-",
          f"{r['paper_madds_m']:g}" if r["paper_madds_m"] else "-"] for r in rows],
    ))
    print(f"\nMAdds: {MADDS_RULE}.")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    spec = resolve_spec(args.name, args.spec, args.width_mult)
    check_resolution(args.resolution)
    result = spec_cost(spec, args.resolution).to_dict(spec.name)
    if args.json:
        print_json(result)
        return 0

    def shape(s) -> str:
        return "x".join(str(v) for v in s)

    print(f"{result['name']} at {shape(result['resolution'])}")
    rows = [[r["name"], r["kind"], shape(r["in_shape"]), shape(r["out_shape"]), f"{r['params']:,}",
             f"{r['madds']:,}"] for r in result["layers"]]
    rows.append(["total", "", "", "", f"{result['params']:,}", f"{result['madds']:,}"])
    print(table(["layer", "kind", "input", "output", "params", "MAdds"], rows, "llrrrr"))
    print(f"\n{result['params'] / 1e6:.3f}M parameters, {result['madds'] / 1e6:.1f}M MAdds ({MADDS_RULE}).")
    return 0


def register(sub) -> None:
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
