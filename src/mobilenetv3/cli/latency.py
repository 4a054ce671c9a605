"""`mnv3 latency`: a model's or an ONNX file's latency on this machine, optionally per stage."""

from __future__ import annotations

import argparse

from ..runtime.timing import format_ms
from .arguments import add_input_size, add_model_source, given_size, load_model, run_input_size
from .output import CLIError, check_resolution, print_json, table


def timing_cells(result: dict) -> list[str]:
    """Median, p10, p90 and mean of a latency result, formatted."""
    return [format_ms(result[k]) for k in ("median_ms", "p10_ms", "p90_ms", "mean_ms")]


def print_ort_profile(title: str, prof: dict) -> None:
    total = prof["total_ms"] or 1.0
    print(f"\n{title}, per stage (its profiler: each node's median kernel ms over {prof['runs']} runs)")
    print(table(["stage", "ms", "share"],
                 [[k, format_ms(v), f"{100 * v / total:.1f}%"] for k, v in prof["by_stage"].items()]))
    print(f"\n{title}, per op type")
    print(table(["op", "ms", "share"],
                [[k, format_ms(v), f"{100 * v / total:.1f}%"] for k, v in prof["by_op"].items()]))


def print_isa_advice(results: list[dict]) -> None:
    from ..runtime.cpu import isa_advice

    advice = isa_advice(results)
    if advice:
        print(f"\n{advice}")


def latency_of_onnx_file(args: argparse.Namespace) -> int:
    from .. import latency

    runtime = (args.runtime or "onnxruntime").removesuffix("-int8")
    if runtime not in latency.FILE_RUNTIMES:
        raise CLIError(f"an ONNX file runs in ONNX Runtime or OpenVINO (--runtime {', '.join(latency.FILE_RUNTIMES)});"
                       f" --runtime {args.runtime} does not apply to {args.name}")
    try:
        report = latency.file_latency_report(args.name, runtime, per_layer=args.per_layer, threads=args.threads,
                                             warmup=args.warmup, min_runs=args.min_runs,
                                             min_seconds=args.min_seconds)
    except latency.MissingExtraError as e:
        raise CLIError(str(e)) from None
    if args.json:
        print_json(report)
        return 0
    result, prof = report["results"][0], report[f"per_layer_{runtime.split('-')[0]}"]
    print(f"{args.name}, input {'x'.join(map(str, result['input_shape']))}, {result['threads']} thread(s), "
          f"{result['cpu']} (load {result['load_avg_1m']}), {result['date']}"
          + latency.isa_cap_note(result.get("onednn_max_cpu_isa")))
    print(table(["runtime", "median ms", "p10", "p90", "mean", "runs", "set-up"],
                 [[result["runtime"], *timing_cells(result), result["runs"],
                   f"{result['detail']} ({result['runtime_version']})"]],
                 "lrrrrrl"))
    print_isa_advice([result])
    if prof and runtime == "onnxruntime":
        print_ort_profile("onnxruntime", prof)
    elif prof:
        total = prof["total_ms"]
        print("\nOpenVINO per-layer counters (PERF_COUNT; they add overhead of their own), by layer type and kernel")
        print(table(["layer (kernel)", "ms", "share"],
                     [[k, format_ms(v), f"{100 * v / total:.1f}%"] for k, v in prof["by_op"].items()]))
    return 0


def cmd_latency(args: argparse.Namespace) -> int:
    from .. import latency

    check_resolution(args.resolution)
    if args.onednn_max_isa is not None:  # first: oneDNN reads it once, at its first kernel
        try:
            latency.set_onednn_isa_cap(args.onednn_max_isa)
        except (ValueError, RuntimeError) as e:
            raise CLIError(str(e)) from None
    if args.name is not None and args.name.endswith(".onnx"):
        return latency_of_onnx_file(args)
    args.runtime = args.runtime or "eager"
    if args.predict and args.runtime == "all":
        raise CLIError("--predict compares with one runtime: the table's (give --runtime)")
    model, task, trained = load_model(args)
    size = given_size(args)
    if args.predict and size is not None and size[0] != size[1]:
        raise CLIError("--predict takes a square input (a latency table is built at one resolution)")
    if task != "classification":
        model, size = task_network(args, model, task, trained, size)
    runtimes = latency.available_runtimes() if args.runtime == "all" else [args.runtime]
    try:
        report = latency.latency_report(model, runtimes, per_layer=args.per_layer, resolution=size,
                                        batch=args.batch, threads=args.threads, warmup=args.warmup,
                                        min_runs=args.min_runs, min_seconds=args.min_seconds,
                                        channels_last=args.channels_last, frozen_method=args.frozen_method)
    except latency.MissingExtraError as e:
        raise CLIError(str(e)) from None
    results, layers = report["results"], report["per_layer_eager"]
    for r in results:
        r.update(trained_weights=trained, task=task)
        if task == "detection":
            r["timed"] = "head outputs"
    if args.predict:
        from .latency_table import predicted_line

        report["predicted"] = predicted_line(results[0], args.predict, model, size and size[0], args.force)
    if args.json:
        print_json(report)
        return 0
    first, info = results[0], latency.machine_info()
    print(f"{first['model']}, input {'x'.join(map(str, first['input_shape']))}, {first['threads']} thread(s), "
          f"{info['cpu']} ({info['logical_cpus']} logical CPUs, load {info['load_avg_1m']}), {first['date']}"
          + latency.isa_cap_note(info["onednn_max_cpu_isa"]))
    print(table(["runtime", "median ms", "p10", "p90", "mean", "runs", "speed-up vs eager", "set-up"],
                 [[r["runtime"], *timing_cells(r), r["runs"], f"{r['vs_eager']:.2f}x" if r["vs_eager"] else "-",
                   f"{r['detail']} ({r['runtime_version']})"] for r in results], "lrrrrrrl"))
    print_isa_advice(results)
    if layers:
        print("\neager, per stage (forward hooks; median ms)")
        print(table(["stage", "median ms", "p90", "share", "MAdds (M)", "GMAdd/s"],
                     [[t["name"], format_ms(t["median_ms"]), format_ms(t["p90_ms"]), f"{100 * t['share']:.1f}%",
                       "-" if t["madds"] is None else f"{t['madds'] / 1e6:.2f}",
                       "-" if not t["madds"] else f"{t['madds'] / t['median_ms'] / 1e6:.1f}"] for t in layers]))
    if report["per_layer_onnxruntime"]:
        print_ort_profile("onnxruntime", report["per_layer_onnxruntime"])
    if report["per_layer_onnxruntime_int8"]:
        print_ort_profile("onnxruntime-int8", report["per_layer_onnxruntime_int8"])
    if args.per_layer and "frozen" in runtimes and len(runtimes) == 1:
        print("\n(no per-layer profile for the frozen graph: freezing removes the module boundaries)")
    if args.predict:
        from .latency_table import print_predicted

        print_predicted(report["predicted"])
    if task == "detection":
        print(f"\n{DETECTION_NOTE}")
    if not trained:
        print("\nrandom weights (no checkpoint); latency does not depend on them")
    return 0


DETECTION_NOTE = ("timed up to the head outputs (class logits and box regressions), as Table 6 compares backbones; "
                  "decoding and NMS are not timed: for the whole pipeline export a run (mnv3 export RUN --out "
                  "F.onnx, NMS inside) and time the file (mnv3 latency F.onnx)")


def task_network(args: argparse.Namespace, model, task: str, trained: bool, size: tuple[int, int] | None):
    """A segmentation or detection network as it is timed (a detector up to its head outputs) and its input size
    (given, else the run's evaluation size, else the task's default)."""
    from ..detection import RawOutputs
    from ..tasks import get_task

    if args.per_layer:
        raise CLIError(f"--per-layer profiles classifiers; for a {task} network export it (mnv3 export ... --out "
                       f"F.onnx) and profile the file: mnv3 latency F.onnx --per-layer")
    if args.predict:
        raise CLIError("--predict: latency tables cover the classifier search spaces, not a " + task + " network")
    if size is None:
        size = run_input_size(args.name, task) if trained else get_task(task).default_input_size(model.spec)
    if task == "segmentation":
        model.spec.pooled_size(*size)  # a clear error when the pooling kernel does not fit
    return (RawOutputs(model) if task == "detection" else model), size


def register(sub) -> None:
    from ..latency import DEFAULT_FROZEN, FROZEN_METHODS, INT8_ISA_CAP, ONEDNN_ISA_VARIABLE, RUNTIMES

    p = sub.add_parser("latency", help="measured latency on this machine: eager, frozen graph, ONNX Runtime, LiteRT",
                       description="Time a model's forward pass the paper's way: batch 1 and one thread by "
                                   "default, warm-up runs, then at least --min-runs runs and --min-seconds "
                                   "seconds; median, p10, p90, mean.")
    add_model_source(p)
    p.add_argument("--runtime", choices=(*RUNTIMES, "all"), default=None,
                   help="runtime (default eager; all: eager, frozen, onnxruntime, and openvino and litert when "
                        "installed; onnxruntime-int8 / openvino-int8: the int8 QDQ model, calibrated on random inputs: "
                        "latency does not depend on them; openvino-bf16: bf16 where the CPU has it). NAME may also be "
                        "an .onnx file, timed as it is in ONNX Runtime")
    add_input_size(p, "input height and width (default: the spec's resolution; 1024x2048 for a segmentation "
                      "network, Table 7's size; 320 for a detector; a run's evaluation size)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first (default 10)")
    p.add_argument("--min-runs", type=int, default=50, help="at least this many timed runs (default 50)")
    p.add_argument("--min-seconds", type=float, default=2.0, help="and at least this long (default 2 s)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="eager/frozen in channels-last memory format (default: on, measured faster)")
    p.add_argument("--frozen-method", choices=FROZEN_METHODS, default=DEFAULT_FROZEN,
                   help=f"how the frozen graph is made (default {DEFAULT_FROZEN})")
    p.add_argument("--per-layer", action="store_true",
                   help="also time each stage (eager: forward hooks; onnxruntime: its profiler)")
    p.add_argument("--onednn-max-isa", metavar="ISA", default=None,
                   help=f"cap the instruction set of oneDNN (OpenVINO's CPU plugin, PyTorch) for this run, as "
                        f"${ONEDNN_ISA_VARIABLE} does, e.g. {INT8_ISA_CAP}: on CPUs with AMX, measured faster "
                        f"for batch-1 OpenVINO int8 (its 1x1 convolutions on AVX-512 VNNI instead of AMX)")
    p.add_argument("--predict", metavar="T.json", default=None,
                   help="also print the latency a table of `mnv3 latency-table` predicts, beside the measured one")
    p.add_argument("--force", action="store_true",
                   help="--predict: use a table measured elsewhere (CPU, runtime, threads or resolution differ)")
    p.set_defaults(func=cmd_latency)
