"""`mnv3 export`: a model or a run to ONNX (float or int8) or LiteRT, checked against PyTorch."""

from __future__ import annotations

import argparse
import sys

from .arguments import add_model_source, load_model
from .output import CLIError, check_resolution, print_json, table


def calibration_source(args: argparse.Namespace, trained: bool) -> tuple[str, dict | None]:
    """The calibration source for ``--int8`` (--calib-data, else a RUN_DIR's own training data) and the run's
    recorded data options (its preprocessing; None for a zoo model)."""
    run_data = None
    if trained:
        from ..train.evaluate import read_run_config

        run_data = read_run_config(args.name)["data"]
    source = args.calib_data or (run_data or {}).get("name")
    if source is None:
        raise CLIError("--int8 needs calibration images: --calib-data fashion-mnist|FOLDER (a RUN_DIR calibrates on "
                       "its own training data by default; --calib-data noise gives a model for timing only)")
    return source, run_data


def export_int8_file(args: argparse.Namespace, model, trained: bool) -> int:
    from ..deploy.int8_export import export_int8
    from ..deploy.output import OutputPathError
    from ..extras import MissingExtraError

    source, run_data = calibration_source(args, trained)
    qat = None
    if trained and args.int8_toolchain == "onnxruntime":
        from ..train.qat_phase import prepared_from_run, qat_state_of

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
        print_json(result)
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
    if checks.get("note"):
        print(f"note: {checks['note']}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..deploy import ExportMismatchError, export_litert, export_onnx
    from ..deploy.output import OutputPathError
    from ..extras import MissingExtraError

    check_resolution(args.resolution)
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
        return export_int8_file(args, model, trained)
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
            print_json({**e.report.to_dict(), "ok": False, "trained_weights": trained})
        return 1
    result = {**report.to_dict(), "ok": True, "trained_weights": trained}
    if args.json:
        print_json(result)
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
    print(table(["input", f"max |{runner} - PyTorch|", "max |output|"],
                 [["x".join(map(str, c["input_shape"])), f"{c['max_abs_diff']:.2e}", f"{c['max_abs_output']:.3g}"]
                  for c in report.checks]))
    print(f"ok: within {report.atol:g}" + ("" if trained else " (random weights, BatchNorm calibrated on noise)"))
    return 0


def register(sub) -> None:
    from ..deploy.onnx_export import EXPORTERS, INPUT_LAYOUTS, MIN_OPSET

    p = sub.add_parser("export", help="export a model to ONNX or LiteRT, checked against PyTorch in its runtime")
    add_model_source(p)
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
