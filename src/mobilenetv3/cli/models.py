"""`mnv3 models` and `mnv3 profile`: the zoo and a model's exact per-layer costs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cost import MADDS_RULE, zoo_costs
from .arguments import SOURCE_HELP, add_input_size, given_size
from .output import CLIError, check_resolution, print_json, table


def task_rows() -> dict[str, list[dict]]:
    """The registered segmentation and detection networks with their parameters and multiply-adds at their
    task's default size (Table 7's 1024x2048, Table 6's 320x320) and default classes (19, 91)."""
    from ..tasks import get_task
    from ..tasks.lookup import known_names, named_network

    out: dict[str, list[dict]] = {}
    for task, names in known_names().items():
        if task == "classification":
            continue
        rows = out.setdefault(task, [])
        for name in names:
            _, spec = named_network(name)
            size = get_task(task).default_input_size(spec)
            cost = get_task(task).spec_cost(spec, size)
            rows.append({"name": name, "resolution": list(size), "num_classes": spec.num_classes,
                         "params": cost.params, "madds": cost.madds})
    return out


def cmd_models(args: argparse.Namespace) -> int:
    rows = zoo_costs()
    tasks = task_rows()
    if args.json:
        print_json({"madds_rule": MADDS_RULE, "models": rows, **tasks})
        return 0
    print(table(
        ["model", "width", "res", "params", "MAdds (M)", "Table 3 params", "Table 3 MAdds (M)"],
        [[r["name"], f"{r['width_mult']:g}", r["resolution"], f"{r['params']:,}", f"{r['madds'] / 1e6:.1f}",
          f"{r['paper_params_m']}M" if r["paper_params_m"] else "-",
          f"{r['paper_madds_m']:g}" if r["paper_madds_m"] else "-"] for r in rows],
    ))
    for task, task_models in tasks.items():
        print(f"\n{task} (mnv3 profile NAME for the layers, --input-size H W for another size)")
        print(table(["model", "input", "classes", "params", "MAdds (M)"],
                    [[r["name"], "x".join(map(str, r["resolution"])), r["num_classes"], f"{r['params']:,}",
                      f"{r['madds'] / 1e6:,.1f}"] for r in task_models]))
    print(f"\nMAdds: {MADDS_RULE}.")
    return 0


def profiled_network(args: argparse.Namespace) -> tuple[str, object, tuple[int, int]]:
    """``(task, spec, (height, width))`` of the command's model source: a registered network or spec file of any
    task at its default size (a classifier's resolution, Cityscapes' 1024x2048 for segmentation, 320 for
    detection), or a run's spec at the size the run evaluates at; ``--input-size`` / ``--resolution`` override."""
    from ..tasks import get_task
    from ..tasks.lookup import resolve_network
    from ..train.evaluate import is_run_dir, read_run_config

    size = given_size(args)
    if args.spec is None and is_run_dir(args.name):
        if args.width_mult != 1.0:
            raise CLIError("--width-mult applies to zoo models, not to a run directory")
        if not Path(args.name).is_dir():
            raise FileNotFoundError(f"run directory not found: {args.name}")
        config = read_run_config(args.name)
        task = config["train"].get("task") or "classification"
        spec = get_task(task).load_spec(Path(args.name) / "spec.json")
        default = (get_task(task).eval_input_size(config["data"]) if task != "classification"
                   else get_task(task).default_input_size(spec))
        return task, spec, size or default
    task, spec = resolve_network(args.name, args.spec, args.width_mult)
    return task, spec, size or get_task(task).default_input_size(spec)


def cmd_profile(args: argparse.Namespace) -> int:
    from ..tasks import get_task

    check_resolution(args.resolution)
    task, spec, size = profiled_network(args)
    result = {**get_task(task).spec_cost(spec, size).to_dict(spec.name), "task": task}
    if args.json:
        print_json(result)
        return 0

    def shape(s) -> str:
        return "x".join(str(v) for v in s)

    print(f"{result['name']} ({task}) at {shape(result['resolution'])}")
    rows = [[r["name"], r["kind"], shape(r["in_shape"]), shape(r["out_shape"]), f"{r['params']:,}",
             f"{r['madds']:,}"] for r in result["layers"]]
    rows.append(["total", "", "", "", f"{result['params']:,}", f"{result['madds']:,}"])
    print(table(["layer", "kind", "input", "output", "params", "MAdds"], rows, "llrrrr"))
    print(f"\n{result['params'] / 1e6:.3f}M parameters, {result['madds'] / 1e6:.1f}M MAdds ({MADDS_RULE}).")
    return 0


def register(sub) -> None:
    p = sub.add_parser("models", help="list the registered networks of every task with parameters and multiply-adds")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("profile", help="per-layer shapes, parameters and multiply-adds of a network of any task")
    p.add_argument("name", nargs="?", metavar="NAME|RUN_DIR", help=SOURCE_HELP)
    p.add_argument("--spec", metavar="FILE.json", help="a spec file instead of a name (ArchSpec, SegSpec, DetSpec)")
    p.add_argument("--width-mult", type=float, default=1.0, help="width multiplier for a zoo model")
    p.add_argument("--resolution", type=int, default=None, help="input size, square")
    add_input_size(p, "input height and width (default: a classifier's resolution, 224 for the zoo; 1024x2048 "
                      "for segmentation, Table 7's size; 320 for detection; a run's evaluation size)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_profile)
