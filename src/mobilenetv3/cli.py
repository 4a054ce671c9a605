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


# -- train / eval / predict -------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from .latency import MissingExtraError
    from .tasks import get_task
    from .train import TrainConfig, TrainingDiverged, train

    config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    try:
        result = train(config)
    except TrainingDiverged as e:
        print(f"mnv3 train: error: {e}", file=sys.stderr)
        return 3
    except MissingExtraError as e:
        raise CLIError(str(e)) from None
    if result.get("rank", 0) != 0:
        return 130 if result["interrupted"] else 0
    if args.json:
        _print_json(result)
    elif not args.quiet:
        metric = get_task(config.task).primary_metric
        label = {"top1": "top-1"}.get(metric, metric)
        last = result["last_epoch"] or {}
        score = last.get(f"ema_val_{metric}", last.get(f"val_{metric}"))
        best = result[f"best_{metric}"]
        state = "interrupted" if result["interrupted"] else "done"
        print(f"{state}: {result['run_dir']} at step {result['global_step']}"
              + (f", epoch {last['epoch']}/{result['epochs']}, val {label} {score:.2f}%" if last else "")
              + (f", best {best:.2f}% (epoch {result['best_epoch']})" if best else "")
              + f", {result['wall_time_s'] / 60:.1f} min")
        if result.get("int8"):
            q = result["int8"]
            print(f"int8: {result['run_dir']}/{q['path']}, ONNX Runtime top-1 {q['int8_top1']:.2f}% "
                  f"({q['int8_top1_reloaded']:.2f}% after reloading the file), fake-quantised model "
                  f"{q['qat_top1']:.2f}%")
    return 130 if result["interrupted"] else 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .train import evaluate_run

    result = evaluate_run(args.run_dir, data=args.data, data_dir=args.data_dir, split=args.split,
                          weights=args.weights, checkpoint=args.checkpoint, batch_size=args.batch_size,
                          device=args.device, workers=args.workers, limit=args.limit)
    if args.json:
        _print_json(result)
        return 0
    print(f"{result['run_dir']} ({result['checkpoint']} checkpoint, {result['weights']} weights) on "
          f"{result['data']} {result['split']}, {result['count']:,} images: top-1 {result['top1']:.2f}%, "
          f"top-5 {result['top5']:.2f}%, loss {result['loss']:.4f}")
    classes = result["classes"]
    print()
    print(_table(["class", "images", "accuracy"],
                 [[name, sum(row), "-" if acc is None else f"{acc:.2f}%"]
                  for name, acc, row in zip(classes, result["per_class"].values(), result["confusion"],
                                            strict=True)]))
    if len(classes) <= 20:
        print("\nconfusion matrix (rows: true class, columns: predicted)")
        headers = ["", *[str(i) for i in range(len(classes))]]
        rows = [[f"{i} {name}", *row] for i, (name, row) in enumerate(zip(classes, result["confusion"],
                                                                          strict=True))]
        print(_table(headers, rows))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .train import predict

    results = predict(args.run_dir, args.images, weights=args.weights, checkpoint=args.checkpoint,
                      top_k=args.top_k, device=args.device)
    if args.json:
        _print_json(results)
        return 0
    for r in results:
        print(r["image"])
        for t in r["top"]:
            print(f"  {100 * t['probability']:6.2f}%  {t['label']}")
    return 0


def _add_training_commands(sub) -> None:
    from .tasks import TASKS
    from .train.config import AMP_MODES, OPTIMIZERS, RECIPES, WD_EXEMPT
    from .train.schedule import SCHEDULES

    p = sub.add_parser(
        "train", help="train a model into a run directory (resumable; torchrun for several processes)",
        description="Train a model. Options left out take the recipe's value (--recipe auto: 'fashion-mnist' for "
                    "the Fashion-MNIST data, 'paper' otherwise); --resume takes them from the run. Under "
                    "`torchrun --nproc-per-node N -m mobilenetv3 train ...` it runs DistributedDataParallel.")
    g = p.add_argument_group("model and data")
    g.add_argument("--task", choices=tuple(TASKS), help="what the model learns: its head, loss and metrics "
                                                        "(default classification)")
    g.add_argument("--model", help=f"zoo model: {', '.join(REGISTRY)}")
    g.add_argument("--spec", metavar="FILE.json", help="a spec file instead of a zoo name")
    g.add_argument("--width-mult", type=float, help="width multiplier for a zoo model (default 1.0)")
    g.add_argument("--data", help="'fashion-mnist' or an image folder ROOT/{train,val}/<class>/... "
                                  "(default fashion-mnist)")
    g.add_argument("--data-dir", help="where to look for the data")
    g.add_argument("--val-split", help="held-out split to validate on (default val; Fashion-MNIST: its test set)")
    g.add_argument("--holdout", type=int, metavar="N",
                   help="validate on N training images set aside (a fixed random choice) instead of --val-split, "
                        "so that tuning never sees the test set; `mnv3 eval RUN_DIR --split test` then tests")
    g.add_argument("--resolution", type=int, help="input size (default: the recipe's, else the spec's)")
    g.add_argument("--channels", type=int, choices=(1, 3), help="input channels (default: the data's)")
    g.add_argument("--limit-train", type=int, metavar="N", help="train on the first N images only")
    g.add_argument("--limit-val", type=int, metavar="N", help="validate on the first N images only")
    g.add_argument("--crop-scale", type=float, nargs=2, metavar=("LO", "HI"), help="area fraction of training crops")
    g.add_argument("--hflip", type=float, help="probability of a horizontal flip")
    g.add_argument("--color-jitter", type=float, help="brightness/contrast/saturation jitter strength")
    g.add_argument("--random-erase", type=float, metavar="P",
                   help="probability of random erasing: a rectangle of 2-40%% of the image replaced with noise")
    g.add_argument("--crop-fraction", type=float, help="evaluation centre-crop fraction")
    g.add_argument("--on-corrupt", choices=("fail", "skip"), help="unreadable images: fail (default) or skip")
    g = p.add_argument_group("recipe")
    g.add_argument("--recipe", choices=("auto", *RECIPES), help="defaults for the options below (default auto)")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int, help="global batch: images per step over all processes")
    g.add_argument("--lr", type=float, help="peak learning rate (default: 0.1 x batch / 4096, the paper's scaling)")
    g.add_argument("--schedule", choices=SCHEDULES)
    g.add_argument("--warmup-epochs", type=float)
    g.add_argument("--decay-rate", type=float, help="step schedule: multiply the lr by this ...")
    g.add_argument("--decay-epochs", type=float, help="... every this many epochs")
    g.add_argument("--min-lr", type=float, help="cosine schedule: final learning rate")
    g.add_argument("--lr-base", type=float, help="lr at --lr-base-batch for the linear scaling (default 0.1)")
    g.add_argument("--lr-base-batch", type=int, help="batch of --lr-base (default 4096)")
    g.add_argument("--optimizer", choices=OPTIMIZERS)
    g.add_argument("--momentum", type=float)
    g.add_argument("--rmsprop-decay", type=float, help="RMSProp mean-square decay (alpha/rho)")
    g.add_argument("--rmsprop-eps", type=float, help="RMSProp epsilon (inside the square root)")
    g.add_argument("--weight-decay", type=float, help="L2 weight decay")
    g.add_argument("--wd-exempt", choices=WD_EXEMPT, help="parameters without weight decay")
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--dropout", type=float, help="dropout before the classifier (default: the spec's)")
    g.add_argument("--bn-momentum", type=float, help="BatchNorm running-statistics momentum, PyTorch's convention "
                   "(default: the spec's, 0.01 as in the paper; 0.1 suits runs of a few thousand steps)")
    g.add_argument("--ema-decay", type=float, help="weight EMA decay (0: no EMA)")
    g.add_argument("--grad-clip", type=float, metavar="NORM", help="clip the global gradient norm")
    g.add_argument("--accum-steps", type=int, help="micro-batches per step (gradient accumulation)")
    g = p.add_argument_group("run")
    g.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory")
    g.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its last checkpoint")
    g.add_argument("--overwrite", action="store_true", help="replace a run already in RUN_DIR")
    g.add_argument("--seed", type=int, help="random seed (default 0)")
    g.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    g.add_argument("--workers", type=int, help="DataLoader worker processes (default 0)")
    g.add_argument("--threads", type=int, help="torch threads per process")
    g.add_argument("--amp", choices=AMP_MODES, help="bf16 autocast: auto (CUDA only), off, bf16")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, help="channels-last memory format")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction,
                   help="torch.compile the training step (default off: it builds for a minute or more first; "
                        "benchmarks/train_throughput.py measures what it gains)")
    g.add_argument("--deterministic", action=argparse.BooleanOptionalAction,
                   help="torch.use_deterministic_algorithms")
    g.add_argument("--eval-batch-size", type=int)
    g.add_argument("--checkpoint-every-steps", type=int, metavar="K", help="also checkpoint every K steps")
    g.add_argument("--keep", type=int, default=2, metavar="N",
                   help="checkpoints kept (default 2: --resume passes over a damaged newest one to the one before)")
    g.add_argument("--log-every-steps", type=int, metavar="N", help="also write a metrics line every N steps")
    g.add_argument("--tensorboard", action=argparse.BooleanOptionalAction,
                   help="log to RUN_DIR/tensorboard (default: when tensorboard is installed)")
    g.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")
    g.add_argument("--json", action="store_true", help="print the final summary as JSON")
    g = p.add_argument_group("fine-tuning and quantisation-aware training")
    g.add_argument("--init", metavar="RUN_DIR|FILE.safetensors",
                   help="start from a run's EMA weights (its model and data options are the defaults) or a weights "
                        "file; the architecture must match")
    g.add_argument("--qat", action="store_true", default=None,
                   help="quantisation-aware training: fake int8 as ONNX Runtime runs it (needs the deploy extra); "
                        "at the end RUN_DIR/model-int8.onnx is written and evaluated")
    g.add_argument("--qat-epochs", type=int, metavar="N",
                   help="fake quantisation for the last N epochs (default: all with --init, else the last 10%%, "
                        "at least 1)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a training run: top-1, top-5, per-class accuracy, confusion matrix")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--data", help="dataset (default: the run's)")
    p.add_argument("--data-dir", help="where to look for the data (default: the run's)")
    p.add_argument("--split", help="split (default: the run's validation split; 'holdout' for a run trained with "
                                   "--holdout, whose test split is then 'test')")
    p.add_argument("--weights", choices=("ema", "model"), default="ema", help="EMA (default) or raw weights")
    p.add_argument("--checkpoint", default="last", help="last (default), best, or a checkpoint file")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--limit", type=int, metavar="N", help="evaluate the first N images only")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="top-5 classes of image files with a trained run")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--weights", choices=("ema", "model"), default="ema", help="EMA (default) or raw weights")
    p.add_argument("--checkpoint", default="last", help="last (default), best, or a checkpoint file")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_predict)


# -- latency / export -------------------------------------------------------------------------------
def load_model(name: str | None = None, spec_file: str | None = None, width_mult: float = 1.0,
               checkpoint: str = "last", weights: str = "ema", resolution: int | None = None):
    """A model and whether it has trained weights (:func:`mobilenetv3.train.evaluate.load_model_or_run`)."""
    from .train.evaluate import load_model_or_run

    return load_model_or_run(name, spec_file, width_mult, checkpoint, weights, resolution)


def _ms(v: float) -> str:
    from .runtime.timing import format_ms

    return format_ms(v)


def _print_ort_profile(title: str, prof: dict) -> None:
    total = prof["total_ms"] or 1.0
    print(f"\n{title}, per stage (its profiler: each node's median kernel ms over {prof['runs']} runs)")
    print(_table(["stage", "ms", "share"],
                 [[k, _ms(v), f"{100 * v / total:.1f}%"] for k, v in prof["by_stage"].items()]))
    print(f"\n{title}, per op type")
    print(_table(["op", "ms", "share"], [[k, _ms(v), f"{100 * v / total:.1f}%"] for k, v in prof["by_op"].items()]))


def _isa_hint(results: list[dict]) -> None:
    from .runtime.cpu import isa_advice

    advice = isa_advice(results)
    if advice:
        print(f"\n{advice}")


def _latency_of_onnx_file(args: argparse.Namespace) -> int:
    from . import latency

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
        _print_json(report)
        return 0
    result, prof = report["results"][0], report[f"per_layer_{runtime.split('-')[0]}"]
    print(f"{args.name}, input {'x'.join(map(str, result['input_shape']))}, {result['threads']} thread(s), "
          f"{result['cpu']} (load {result['load_avg_1m']}), {result['date']}"
          + latency.isa_cap_note(result.get("onednn_max_cpu_isa")))
    print(_table(["runtime", "median ms", "p10", "p90", "mean", "runs", "set-up"],
                 [[result["runtime"], _ms(result["median_ms"]), _ms(result["p10_ms"]), _ms(result["p90_ms"]),
                   _ms(result["mean_ms"]), result["runs"], f"{result['detail']} ({result['runtime_version']})"]],
                 "lrrrrrl"))
    _isa_hint([result])
    if prof and runtime == "onnxruntime":
        _print_ort_profile("onnxruntime", prof)
    elif prof:
        total = prof["total_ms"]
        print("\nOpenVINO per-layer counters (PERF_COUNT; they add overhead of their own), by layer type and kernel")
        print(_table(["layer (kernel)", "ms", "share"],
                     [[k, _ms(v), f"{100 * v / total:.1f}%"] for k, v in prof["by_op"].items()]))
    return 0


def cmd_latency(args: argparse.Namespace) -> int:
    from . import latency

    if args.resolution is not None and args.resolution < 1:
        raise CLIError(f"--resolution must be a positive integer, got {args.resolution}")
    if args.onednn_max_isa is not None:  # first: oneDNN reads it once, at its first kernel
        try:
            latency.set_onednn_isa_cap(args.onednn_max_isa)
        except (ValueError, RuntimeError) as e:
            raise CLIError(str(e)) from None
    if args.name is not None and args.name.endswith(".onnx"):
        return _latency_of_onnx_file(args)
    args.runtime = args.runtime or "eager"
    model, trained = load_model(args.name, args.spec, args.width_mult, args.checkpoint, args.weights,
                                args.resolution)
    runtimes = latency.available_runtimes() if args.runtime == "all" else [args.runtime]
    try:
        report = latency.latency_report(model, runtimes, per_layer=args.per_layer, resolution=args.resolution,
                                        batch=args.batch, threads=args.threads, warmup=args.warmup,
                                        min_runs=args.min_runs, min_seconds=args.min_seconds,
                                        channels_last=args.channels_last, frozen_method=args.frozen_method)
    except latency.MissingExtraError as e:
        raise CLIError(str(e)) from None
    results, layers = report["results"], report["per_layer_eager"]
    for r in results:
        r["trained_weights"] = trained
    if args.json:
        _print_json(report)
        return 0
    first, info = results[0], latency.machine_info()
    print(f"{first['model']}, input {'x'.join(map(str, first['input_shape']))}, {first['threads']} thread(s), "
          f"{info['cpu']} ({info['logical_cpus']} logical CPUs, load {info['load_avg_1m']}), {first['date']}"
          + latency.isa_cap_note(info["onednn_max_cpu_isa"]))
    print(_table(["runtime", "median ms", "p10", "p90", "mean", "runs", "speed-up vs eager", "set-up"],
                 [[r["runtime"], _ms(r["median_ms"]), _ms(r["p10_ms"]), _ms(r["p90_ms"]), _ms(r["mean_ms"]),
                   r["runs"], f"{r['vs_eager']:.2f}x" if r["vs_eager"] else "-",
                   f"{r['detail']} ({r['runtime_version']})"] for r in results], "lrrrrrrl"))
    _isa_hint(results)
    if layers:
        print("\neager, per stage (forward hooks; median ms)")
        print(_table(["stage", "median ms", "p90", "share", "MAdds (M)", "GMAdd/s"],
                     [[t["name"], _ms(t["median_ms"]), _ms(t["p90_ms"]), f"{100 * t['share']:.1f}%",
                       "-" if t["madds"] is None else f"{t['madds'] / 1e6:.2f}",
                       "-" if not t["madds"] else f"{t['madds'] / t['median_ms'] / 1e6:.1f}"] for t in layers]))
    if report["per_layer_onnxruntime"]:
        _print_ort_profile("onnxruntime", report["per_layer_onnxruntime"])
    if report["per_layer_onnxruntime_int8"]:
        _print_ort_profile("onnxruntime-int8", report["per_layer_onnxruntime_int8"])
    if args.per_layer and "frozen" in runtimes and len(runtimes) == 1:
        print("\n(no per-layer profile for the frozen graph: freezing removes the module boundaries)")
    if not trained:
        print("\nrandom weights (no checkpoint); latency does not depend on them")
    return 0


def _calibration(args: argparse.Namespace, trained: bool) -> tuple[str, dict | None]:
    """The calibration source for ``--int8`` (--calib-data, else a RUN_DIR's own training data) and the run's
    recorded data options (its preprocessing; None for a zoo model)."""
    run_data = None
    if trained:
        from .train.evaluate import read_run_config

        run_data = read_run_config(args.name)["data"]
    source = args.calib_data or (run_data or {}).get("name")
    if source is None:
        raise CLIError("--int8 needs calibration images: --calib-data fashion-mnist|FOLDER (a RUN_DIR calibrates on "
                       "its own training data by default; --calib-data noise gives a model for timing only)")
    return source, run_data


def _export_int8(args: argparse.Namespace, model, trained: bool) -> int:
    from .deploy.int8_export import export_int8
    from .deploy.output import OutputPathError
    from .extras import MissingExtraError

    source, run_data = _calibration(args, trained)
    qat = None
    if trained and args.int8_toolchain == "onnxruntime":
        from .train.qat_phase import prepared_from_run, qat_state_of

        if qat_state_of(args.name, args.checkpoint, args.weights) is not None:
            if args.int8_target != "onnxruntime" or args.input_layout != "nchw":
                raise CLIError(f"{args.name} was trained with quantisation-aware training, which simulates the "
                               f"onnxruntime target's graph with NCHW input; export it with --int8-target "
                               f"onnxruntime and without --input-layout")
            qat = prepared_from_run(args.name, args.checkpoint, args.weights)  # its learned activation ranges
    try:
        result = export_int8(model, args.out, source, samples=args.calib_samples, run_data=run_data,
                             toolchain=args.int8_toolchain, target=args.int8_target, resolution=args.resolution,
                             batch=args.batch, dynamic_batch=args.dynamic_batch, input_layout=args.input_layout,
                             qat=qat)
    except (MissingExtraError, OutputPathError) as e:
        raise CLIError(str(e)) from None
    source = result.pop("calibration_data")
    result.update({"ok": True, "trained_weights": trained, "calibration_data": source})
    if args.json:
        _print_json(result)
        return 0
    checks = result["checks"]
    target = f", shaped for {result['target']}" if result.get("target") else ""
    n, c, h, w = result["input_shape"]
    nhwc = result.get("input_layout") == "nhwc"
    print(f"wrote {result['path']}: int8 ({result['toolchain']}{target}), "
          f"input {'x'.join(map(str, (n, h, w, c) if nhwc else (n, c, h, w)))}" + (" (NHWC)" if nhwc else "")
          + (", dynamic batch" if result.get("dynamic_batch") else "")
          + f", calibrated on {result['calibration_samples']} batch(es) from {source}")
    if result.get("graph_changes"):
        print("graph changes: " + ", ".join(f"{k} {v}" for k, v in result["graph_changes"].items()))
    if result.get("ops"):
        print("ops: " + ", ".join(f"{k} {v}" for k, v in result["ops"].items()))
    print(f"check on {checks['images']} calibration images: argmax agrees with float on "
          f"{100 * checks['argmax_agreement']:.1f}%, max |int8 - float| {checks['max_abs_diff']:.3g} "
          f"({100 * checks['relative_max_diff']:.1f}% of the float logits' range)"
          + ("" if trained else " (random weights)"))
    if "qat" in checks:
        print(f"quantisation-aware training: argmax agrees with the fake-quantised model on "
              f"{100 * checks['qat']['argmax_agreement']:.1f}% (max |int8 - fake-quantised| "
              f"{checks['qat']['max_abs_diff']:.3g})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .deploy import ExportMismatchError, export_litert, export_onnx
    from .deploy.output import OutputPathError
    from .extras import MissingExtraError

    if args.resolution is not None and args.resolution < 1:
        raise CLIError(f"--resolution must be a positive integer, got {args.resolution}")
    if args.format == "litert" and (args.dynamic_batch or args.dynamic_resolution):
        raise CLIError("--format litert exports a fixed input shape (no --dynamic-batch / --dynamic-resolution)")
    if args.int8 and (args.format != "onnx" or args.dynamic_resolution):
        raise CLIError("--int8 writes ONNX (or a .pt2 with --int8-toolchain pt2e) at a fixed resolution "
                       "(no --format litert, no --dynamic-resolution)")
    if not args.int8 and (args.calib_data is not None or args.int8_toolchain != "onnxruntime"
                          or args.int8_target != "onnxruntime"):
        raise CLIError("--calib-data, --int8-toolchain and --int8-target apply to --int8 exports")
    if args.int8_toolchain == "pt2e" and args.int8_target != "onnxruntime":
        raise CLIError("--int8-target chooses the QDQ ONNX graph; it does not apply to --int8-toolchain pt2e")
    if args.int8 and args.calib_samples < 1:
        raise CLIError(f"--calib-samples must be a positive integer, got {args.calib_samples}")
    model, trained = load_model(args.name, args.spec, args.width_mult, args.checkpoint, args.weights,
                                args.resolution)
    if args.input_layout != "nchw" and (args.format != "onnx" or (args.int8 and args.int8_toolchain == "pt2e")):
        raise CLIError("--input-layout nhwc applies to ONNX exports through ONNX Runtime's tools (LiteRT and "
                       "PT2E files take NCHW input)")
    if args.int8:
        return _export_int8(args, model, trained)
    try:
        if args.format == "litert":
            report = export_litert(model, args.out, resolution=args.resolution, batch=args.batch, fold=args.fold,
                                   atol=args.atol)
        else:
            report = export_onnx(model, args.out, resolution=args.resolution, batch=args.batch,
                                 dynamic_batch=args.dynamic_batch, dynamic_resolution=args.dynamic_resolution,
                                 opset=args.opset, fold=args.fold, exporter=args.exporter, atol=args.atol,
                                 input_layout=args.input_layout)
    except (MissingExtraError, OutputPathError) as e:
        raise CLIError(str(e)) from None
    except ExportMismatchError as e:
        print(f"mnv3 export: error: {e}", file=sys.stderr)
        if args.json and e.report is not None:
            _print_json({**e.report.to_dict(), "ok": False, "trained_weights": trained})
        return 1
    result = {**report.to_dict(), "ok": True, "trained_weights": trained}
    if args.json:
        _print_json(result)
        return 0
    dyn = [n for n, on in (("batch", report.dynamic_batch), ("resolution", report.dynamic_resolution)) if on]
    kind = f"ONNX opset {report.opset}" if report.opset is not None else "LiteRT"
    n, c, h, w = report.input_shape
    shown = (n, c, h, w) if report.input_layout == "nchw" else (n, h, w, c)
    print(f"wrote {report.path}: {kind} ({report.exporter} exporter), input "
          f"{'x'.join(map(str, shown))} ({report.input_layout.upper()})"
          + (f", dynamic {' and '.join(dyn)}" if dyn else "")
          + (", BatchNorm folded" if report.folded else ""))
    print("ops: " + ", ".join(f"{k} {v}" for k, v in report.ops.items()))
    runner = "LiteRT" if report.opset is None else "ONNX Runtime"
    print(_table(["input", f"max |{runner} - PyTorch|", "max |output|"],
                 [["x".join(map(str, c["input_shape"])), f"{c['max_abs_diff']:.2e}", f"{c['max_abs_output']:.3g}"]
                  for c in report.checks]))
    print(f"ok: within {report.atol:g}" + ("" if trained else " (random weights, BatchNorm calibrated on noise)"))
    return 0


def _add_model_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", metavar="NAME|RUN_DIR",
                   help=f"zoo model ({', '.join(REGISTRY)}) or a training run directory")
    p.add_argument("--spec", metavar="FILE.json", help="a spec file instead of a zoo name")
    p.add_argument("--width-mult", type=float, default=1.0, help="width multiplier for a zoo model")
    p.add_argument("--checkpoint", default="last", help="RUN_DIR: last (default), best, or a checkpoint file")
    p.add_argument("--weights", choices=("ema", "model"), default="ema", help="RUN_DIR: EMA (default) or raw")
    p.add_argument("--resolution", type=int, default=None, help="input size (default: the spec's)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _add_deploy_commands(sub) -> None:
    from .deploy.onnx_export import EXPORTERS, INPUT_LAYOUTS, MIN_OPSET
    from .latency import DEFAULT_FROZEN, FROZEN_METHODS, INT8_ISA_CAP, ONEDNN_ISA_VARIABLE, RUNTIMES

    p = sub.add_parser("latency", help="measured latency on this machine: eager, frozen graph, ONNX Runtime, LiteRT",
                       description="Time a model's forward pass the paper's way: batch 1 and one thread by "
                                   "default, warm-up runs, then at least --min-runs runs and --min-seconds "
                                   "seconds; median, p10, p90, mean.")
    _add_model_source(p)
    p.add_argument("--runtime", choices=(*RUNTIMES, "all"), default=None,
                   help="runtime (default eager; all: eager, frozen, onnxruntime, and openvino and litert when "
                        "installed; onnxruntime-int8 / openvino-int8: the int8 QDQ model, calibrated on random inputs: "
                        "latency does not depend on them; openvino-bf16: bf16 where the CPU has it). NAME may also be "
                        "an .onnx file, timed as it is in ONNX Runtime")
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
    p.set_defaults(func=cmd_latency)

    p = sub.add_parser("export", help="export a model to ONNX or LiteRT, checked against PyTorch in its runtime")
    _add_model_source(p)
    p.add_argument("--format", choices=("onnx", "litert"), default="onnx",
                   help="onnx (default; the deploy extra) or litert (.tflite; the litert extra)")
    p.add_argument("--out", required=True, metavar="FILE", help="output file")
    p.add_argument("--input-layout", choices=INPUT_LAYOUTS, default="nchw",
                   help="the file's input: nchw (default, as PyTorch) or nhwc (images as decoded; OpenVINO then "
                        "skips reordering the input)")
    p.add_argument("--dynamic-batch", action="store_true", help="symbolic batch dimension")
    p.add_argument("--dynamic-resolution", action="store_true", help="symbolic height and width")
    p.add_argument("--opset", type=int, default=MIN_OPSET, help=f"ONNX opset (default and minimum {MIN_OPSET})")
    p.add_argument("--exporter", choices=EXPORTERS, default="torchscript",
                   help="torch.onnx exporter (default torchscript; dynamo needs onnxscript)")
    p.add_argument("--fold", action=argparse.BooleanOptionalAction, default=True,
                   help="fold BatchNorm into the convolutions first (default on)")
    p.add_argument("--atol", type=float, default=1e-4,
                   help="largest allowed |ONNX Runtime - PyTorch| difference (default 1e-4)")
    g = p.add_argument_group("int8 (post-training quantisation)")
    g.add_argument("--int8", action="store_true",
                   help="quantise to int8: QDQ ONNX for ONNX Runtime (uint8 activations, per-channel int8 weights)")
    g.add_argument("--calib-data", metavar="fashion-mnist|FOLDER|noise",
                   help="calibration images (default for a RUN_DIR: its own training data); FOLDER: ImageNet "
                        "layout or any folder of images; noise: seeded random inputs, for timing only")
    g.add_argument("--calib-samples", type=int, default=256, metavar="N", help="calibration images (default 256)")
    g.add_argument("--int8-target", choices=("onnxruntime", "openvino"), default="onnxruntime",
                   help="the runtime the QDQ file is shaped for: onnxruntime (default; integer hard-swish) or "
                        "openvino (no quantisation between a convolution and its activation, which OpenVINO fuses; "
                        "ONNX Runtime runs that file too, slower)")
    g.add_argument("--int8-toolchain", choices=("onnxruntime", "pt2e"), default="onnxruntime",
                   help="onnxruntime (default, measured faster) or pt2e: PyTorch PT2E with the X86InductorQuantizer, "
                        "written as a torch.export program (.pt2; needs torchao)")
    p.set_defaults(func=cmd_export)


# -- bench ----------------------------------------------------------------------------------------
def _print_bench_section(name: str, sec: dict) -> None:
    from .bench.report import section_report

    for item in section_report(name, sec):
        print(item if isinstance(item, str) else _table(*item))


def cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .bench.report import bench_footer, bench_header
    from .bench.run import paper_comparisons
    from .extras import MissingExtraError

    if args.peer_python is not None and not args.peers and "peers" not in ",".join(args.sections or []):
        raise CLIError("--peer-python applies to --peers")
    try:
        result = paper_comparisons(args.sections, runtime=args.runtime, threads=args.threads,
                                   resolution=args.resolution, quick=args.quick, multipliers=args.multipliers,
                                   resolutions=args.resolutions, rounds=args.rounds, warmup=args.warmup,
                                   min_runs=args.min_runs, min_seconds=args.min_seconds, clock=args.clock,
                                   peers=args.peers, peer_python=args.peer_python, progress=not args.quiet)
    except MissingExtraError as e:
        raise CLIError(str(e)) from None
    for name, sec in result["sections"].items():
        if sec.get("skipped"):
            print(f"mnv3 bench: {name}: {sec['skipped']}", file=sys.stderr)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        _print_json(result)
        return 0
    print("\n".join(bench_header(result)))
    for name, sec in result["sections"].items():
        _print_bench_section(name, sec)
    print("\n".join(bench_footer(result)))
    return 0


def _add_bench_command(sub) -> None:
    from .bench.sections import (
        BENCH_RUNTIMES,
        BENCH_SECTIONS,
        DEFAULT_BENCH_SECTIONS,
        GRID_MULTIPLIERS,
        GRID_RESOLUTIONS,
        QUICK_GRID,
    )
    from .runtime.timing import CLOCKS

    p = sub.add_parser(
        "bench", help="the paper's latency comparisons (Tables 3, 4, 5, Figure 7) re-measured on this machine",
        description="The paper's comparisons measured here in one run: V3 against MobileNetV2 (Table 3), the "
                    "h-swish ablation (Table 5), multipliers x resolutions (Figure 7) and float against int8 "
                    "(Table 4), each model prepared first and then timed in interleaved rounds; with MAdds, params "
                    "and the paper's figure (and ratio) where it has one, the CPU model, threads, runtime, clock "
                    "and date. --peers adds torchvision's and timm's Large and Small (eager and exported to ONNX "
                    "Runtime) next to ours: they need a newer torch than ours, so they run in a subprocess of the "
                    "peer environment (make peer-setup), taking turns with this process round by round.")
    p.add_argument("--sections", nargs="+", metavar="SECTION",
                   help=f"sections to run, by space or comma: {', '.join(BENCH_SECTIONS)} (default: "
                        f"{' '.join(DEFAULT_BENCH_SECTIONS)})")
    p.add_argument("--runtime", choices=BENCH_RUNTIMES, default="eager",
                   help="runtime of every section but int8, which compares onnxruntime with onnxruntime-int8 "
                        "(default eager)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1, as the paper)")
    p.add_argument("--resolution", type=int, default=224, help="input size outside the grid (default 224)")
    p.add_argument("--quick", action="store_true",
                   help=f"grid: multipliers {' '.join(map(str, QUICK_GRID[0]))} x resolutions "
                        f"{' '.join(map(str, QUICK_GRID[1]))} only")
    p.add_argument("--multipliers", type=float, nargs="+", metavar="W",
                   help=f"grid multipliers (default {' '.join(map(str, GRID_MULTIPLIERS))})")
    p.add_argument("--resolutions", type=int, nargs="+", metavar="R",
                   help=f"grid resolutions (default {' '.join(map(str, GRID_RESOLUTIONS))})")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (default 3)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs per path per round (default 5)")
    p.add_argument("--min-runs", type=int, default=20, help="timed runs per path per round, at least (default 20)")
    p.add_argument("--min-seconds", type=float, default=0.5, help="and seconds per path per round (default 0.5)")
    p.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                   help="wall (default) or cpu: the calling thread's CPU time, for a machine busy with other work "
                        "(one thread only)")
    p.add_argument("--peers", action="store_true", help="add torchvision's and timm's models, timed in the same run")
    p.add_argument("--peer-python", metavar="PATH",
                   help="python of the peer environment (default: $MNV3_PEER_PYTHON, else .peer-venv)")
    p.add_argument("--out", metavar="FILE.json", help="also write the results as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_bench)


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

    _add_training_commands(sub)
    _add_deploy_commands(sub)
    _add_bench_command(sub)
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
