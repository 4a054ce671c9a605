"""`mnv3 export`: a model or a run to ONNX (float or int8) or LiteRT, checked against PyTorch; a segmentation run
to float or int8 ONNX, a detection run to float ONNX (the detector with its NMS), checked the same way."""

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


def keep_float_parts(text: str | None) -> tuple[str, ...] | None:
    """``--int8-keep-float``'s comma-separated parts (an empty string: nothing kept float); None when not given
    (the target's default)."""
    if text is None:
        return None
    return tuple(p.strip() for p in text.split(",") if p.strip())


def export_int8_file(args: argparse.Namespace, model, trained: bool, task: str = "classification",
                     size: tuple[int, int] | None = None) -> int:
    """A classifier or a segmentation run (``task``; ``size``: its --input-size) to int8 (``--int8``)."""
    from ..deploy.int8_export import export_int8
    from ..deploy.output import OutputPathError
    from ..deploy.task_export import TaskExportError, export_task_int8
    from ..extras import MissingExtraError

    source, run_data = calibration_source(args, trained)
    qat = None
    if trained and task == "classification" and args.int8_toolchain == "onnxruntime":
        from ..train.qat_phase import prepared_from_run, qat_state_of

        if qat_state_of(args.name, args.checkpoint, args.weights) is not None:
            if (args.int8_target != "onnxruntime" or args.input_layout != "nchw" or args.int8_reduce_range
                    or args.int8_calibration != "minmax" or args.int8_keep_float is not None):
                raise CLIError(f"{args.name} was trained with quantisation-aware training, which simulates the "
                               f"onnxruntime target's graph with NCHW input and 8-bit weights and learns its "
                               f"ranges; export it with --int8-target onnxruntime, without --input-layout, "
                               f"--int8-reduce-range, --int8-calibration and --int8-keep-float")
            qat = prepared_from_run(args.name, args.checkpoint, args.weights)  # its learned activation ranges
    common = dict(samples=args.calib_samples, toolchain=args.int8_toolchain, target=args.int8_target,
                  batch=args.batch, dynamic_batch=args.dynamic_batch, input_layout=args.input_layout,
                  reduce_range=args.int8_reduce_range, calibrate_method=args.int8_calibration,
                  keep_float=keep_float_parts(args.int8_keep_float))
    try:
        if task == "classification":
            result = export_int8(model, args.out, source, run_data=run_data, resolution=args.resolution, qat=qat,
                                 **common)
        else:
            result = export_task_int8(model, task, run_data, args.out, source, size=size, **common)
    except (MissingExtraError, OutputPathError, TaskExportError) as e:
        raise CLIError(str(e)) from None
    source = result.pop("calibration_data")
    result.update({"ok": True, "trained_weights": trained, "calibration_data": source, "task": task})
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
    if result.get("float_ops"):
        print("computed in float: " + ", ".join(f"{k} {v}" for k, v in result["float_ops"].items())
              + f" (kept float: {', '.join(result['options']['keep_float']) or 'nothing'}"
              + ("; OpenVINO runs each convolution with its activation as one int8 kernel)"
                 if result.get("target") == "openvino" else ")"))
    pixels = checks.get("argmax_positions", checks["images"])
    dense = pixels != checks["images"]
    print(f"check on {checks['images']} calibration images: {'per-pixel ' if dense else ''}argmax agrees with float "
          f"on {100 * checks['argmax_agreement']:.1f}%" + (f" of {pixels:,} pixels" if dense else "")
          + f", max |int8 - float| {checks['max_abs_diff']:.3g} "
          f"({100 * checks['relative_max_diff']:.1f}% of the float logits' range)"
          + ("" if trained else " (random weights)"))
    if "qat" in checks:
        print(f"quantisation-aware training: argmax agrees with the fake-quantised model on "
              f"{100 * checks['qat']['argmax_agreement']:.1f}% (max |int8 - fake-quantised| "
              f"{checks['qat']['max_abs_diff']:.3g})")
    if checks.get("note"):
        print(f"note: {checks['note']}")
    return 0


def describe_file(report, what: str = "") -> None:
    """The 'wrote ...' and 'ops: ...' lines of an exported file."""
    dyn = [n for n, on in (("batch", report.dynamic_batch), ("resolution", report.dynamic_resolution)) if on]
    kind = f"ONNX opset {report.opset}" if report.opset is not None else "LiteRT"
    n, c, h, w = report.input_shape
    shown = (n, c, h, w) if report.input_layout == "nchw" else (n, h, w, c)
    print(f"wrote {report.path}: {what}{kind} ({report.exporter} exporter), input "
          f"{'x'.join(map(str, shown))} ({report.input_layout.upper()})"
          + (f", dynamic {' and '.join(dyn)}" if dyn else "")
          + (", BatchNorm folded" if report.folded else ""))
    print("ops: " + ", ".join(f"{k} {v}" for k, v in report.ops.items()))


def print_output_checks(report, runner: str = "ONNX Runtime") -> None:
    print(table(["input", f"max |{runner} - PyTorch|", "max |output|"],
                [["x".join(map(str, c["input_shape"])), f"{c['max_abs_diff']:.2e}", f"{c['max_abs_output']:.3g}"]
                 for c in report.checks]))


def export_task_file(args: argparse.Namespace, model, task: str, data_info: dict | None) -> int:
    """A segmentation or detection run (``data_info``: its recorded data) or network without a run (None) to
    float ONNX (:func:`mobilenetv3.deploy.export_task_onnx`), a segmentation run to int8 ONNX (``--int8``:
    :func:`mobilenetv3.deploy.export_task_int8`)."""
    trained = data_info is not None
    from ..deploy import ExportMismatchError, TaskExportError, export_task_onnx
    from ..deploy.output import OutputPathError
    from ..extras import MissingExtraError

    if args.int8 and task != "segmentation":
        raise CLIError(f"--int8 export of {task} runs is not supported yet: export float ONNX (leave out --int8)")
    if args.int8 and not trained:
        raise CLIError(f"--int8 of a {task} network calibrates on a trained run's data: give a RUN_DIR (to time "
                       f"int8 without one: mnv3 latency {args.name or '--spec ' + str(args.spec)} --runtime "
                       f"onnxruntime-int8)")
    if args.format != "onnx":
        raise CLIError(f"--format {args.format} is not supported for {task} runs yet: use --format onnx")
    if args.input_size is not None and args.resolution is not None:
        raise CLIError("give the input size once: --input-size H W or --resolution R")
    if args.check_images is not None and (task != "detection" or args.check_images < 0 or not trained):
        raise CLIError("--check-images N (N >= 0) applies to detection runs (a network without a run is checked "
                       "on seeded random inputs)")
    size = args.input_size or args.resolution
    if args.int8:
        if args.check_size:
            raise CLIError("--check-size checks a float file of dynamic resolution; an int8 file takes one size "
                           "(--input-size H W)")
        return export_int8_file(args, model, True, task, size)
    try:
        report = export_task_onnx(
            model, task, data_info, args.out, size=size, check_sizes=args.check_size,
            images=8 if args.check_images is None else args.check_images, batch=args.batch,
            dynamic_batch=args.dynamic_batch, dynamic_resolution=args.dynamic_resolution, opset=args.opset,
            fold=args.fold, exporter=args.exporter, atol=args.atol, input_layout=args.input_layout)
    except (MissingExtraError, OutputPathError, TaskExportError) as e:
        raise CLIError(str(e)) from None
    except ExportMismatchError as e:
        print(f"mnv3 export: error: {e}", file=sys.stderr)
        if args.json and e.report is not None:
            print_json({**e.report.to_dict(), "ok": False, "trained_weights": trained, "task": task})
        return 1
    result = {**report.to_dict(), "ok": True, "trained_weights": trained, "task": task}
    spec = model.spec
    if task == "segmentation" and spec.pooling == "kernel":
        result["min_input_size"] = list(spec.min_input())
    if args.json:
        print_json(result)
        return 0
    if task == "segmentation":
        describe_file(report, f"{spec.num_classes}-class logits at the input's size, ")
        print_output_checks(report)
        print(f"ok: within {report.atol:g} at {len(report.checks)} input size(s)"
              + ("" if trained else " (random weights, BatchNorm calibrated on noise)"))
        if "min_input_size" in result and report.dynamic_resolution:
            print("note: the pooling kernel needs inputs of at least {}x{}".format(*result["min_input_size"]))
        elif not report.dynamic_resolution:
            print("note: the file takes this size only; --dynamic-resolution makes one for any size the spec takes "
                  "(checked at --check-size H W)")
        return 0
    describe_file(report, f"detections with NMS inside (outputs {', '.join(report.outputs)}), ")
    print(f"checked on {report.check_inputs}:")
    print(table(["input", "detections", "paired", "ties", "same order", "max |box diff| (px)", "max |score diff|"],
                [["x".join(map(str, c["input_shape"])), c["detections"], c["paired"], c["ties"],
                  "yes" if c["same_order"] else "no", f"{c['max_box_diff']:.2e}", f"{c['max_score_diff']:.2e}"]
                 for c in report.checks]))
    first, ties = report.checks[0], sum(c["ties"] for c in report.checks)
    print(f"ok: the same detections (labels; boxes within {first['box_atol']:g} px, scores within "
          f"{first['atol']:g})" + (f", but for {ties} tie(s): the runtimes kept different ones of two overlapping "
                                   f"candidates whose scores agree within {first['atol']:g}" if ties else ""))
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
                          or args.int8_target != "onnxruntime" or args.int8_reduce_range
                          or args.int8_calibration != "minmax" or args.int8_keep_float is not None):
        raise CLIError("--calib-data, --int8-toolchain, --int8-target, --int8-reduce-range, --int8-calibration and "
                       "--int8-keep-float apply to --int8 exports")
    for option, given in (("--int8-target", args.int8_target != "onnxruntime"),
                          ("--int8-reduce-range", args.int8_reduce_range),
                          ("--int8-calibration", args.int8_calibration != "minmax"),
                          ("--int8-keep-float", args.int8_keep_float is not None)):
        if args.int8_toolchain == "pt2e" and given:
            raise CLIError(f"{option} shapes the QDQ ONNX graph; it does not apply to --int8-toolchain pt2e")
    if args.int8 and args.calib_samples < 1:
        raise CLIError(f"--calib-samples must be a positive integer, got {args.calib_samples}")
    model, task, trained = load_model(args)
    if task != "classification":
        from ..train.evaluate import read_run_config

        return export_task_file(args, model, task, read_run_config(args.name)["data"] if trained else None)
    if args.input_size is not None or args.check_size or args.check_images is not None:
        raise CLIError("--input-size, --check-size and --check-images apply to segmentation and detection runs "
                       "(a classifier: --resolution, checked at other sizes with --dynamic-resolution)")
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
    describe_file(report)
    print_output_checks(report, "LiteRT" if report.opset is None else "ONNX Runtime")
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
                   help="largest allowed |ONNX Runtime - PyTorch| difference (default 1e-4; a detector's scores)")
    g = p.add_argument_group("segmentation and detection runs")
    g.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                   help="input height and width (default: the size the run evaluates at: a scenes run's canvas, "
                        "a COCO run's resolution, Cityscapes' 1024x2048)")
    g.add_argument("--check-size", type=int, nargs=2, action="append", metavar=("H", "W"),
                   help="segmentation with --dynamic-resolution: another size to check (repeatable; default 32 "
                        "and 1 pixel more than the input size)")
    g.add_argument("--check-images", type=int, default=None, metavar="N",
                   help="detection: how many of the run's evaluation images the detections are compared on "
                        "(default 8; 0: seeded random inputs)")
    g = p.add_argument_group("int8 (post-training quantisation)")
    g.add_argument("--int8", action="store_true",
                   help="quantise to int8: QDQ ONNX for ONNX Runtime (uint8 activations, per-channel int8 weights); "
                        "classifiers and segmentation runs (at --input-size, default the size the run evaluates at)")
    g.add_argument("--calib-data", metavar="fashion-mnist|FOLDER|noise",
                   help="calibration images (default for a RUN_DIR: its own training data); FOLDER: ImageNet "
                        "layout or any folder of images; noise: seeded random inputs, for timing only; a "
                        "segmentation run: its data (default) or other segmentation data (scenes:..., cityscapes:...)")
    g.add_argument("--calib-samples", type=int, default=256, metavar="N", help="calibration images (default 256)")
    g.add_argument("--int8-target", choices=("onnxruntime", "openvino"), default="onnxruntime",
                   help="the runtime the QDQ file is shaped for: onnxruntime (default; integer hard-swish) or "
                        "openvino (no quantisation between a convolution and its activation, which OpenVINO fuses; "
                        "ONNX Runtime runs that file too, slower)")
    g.add_argument("--int8-reduce-range", action="store_true",
                   help="7-bit weights: for CPUs with AVX2 but no VNNI (e.g. AMD Zen 3), whose uint8 x int8 products "
                        "saturate in ONNX Runtime; the export's check notes when this CPU is one")
    g.add_argument("--int8-calibration", choices=("minmax", "percentile"), default="minmax",
                   help="how the calibration images' activations become int8 ranges: minmax (default) or "
                        "percentile (the 0.001st-99.999th percentiles of each tensor's histogram: rare outliers "
                        "clipped, the rest resolved more finely; it clips only with enough calibration values)")
    g.add_argument("--int8-keep-float", metavar="PARTS", default=None,
                   help="comma-separated parts left in float: stem, block<i>, se, head (a classifier's last stage "
                        "and classifier; a segmentation network's head) or node-name substrings "
                        "(default stem,block1; an empty string: nothing)")
    g.add_argument("--int8-toolchain", choices=("onnxruntime", "pt2e"), default="onnxruntime",
                   help="onnxruntime (default, measured faster) or pt2e: PyTorch PT2E with the X86InductorQuantizer, "
                        "written as a torch.export program (.pt2; needs torchao)")
    p.set_defaults(func=cmd_export)
