"""`mnv3 train`, `mnv3 eval` and `mnv3 predict`: a training run, its evaluation and its predictions."""

from __future__ import annotations

import argparse
import sys

from ..detection import DET_MODELS
from ..segmentation import SEG_MODELS
from ..zoo import REGISTRY
from .output import CLIError, print_json, table


def cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from ..extras import MissingExtraError
    from ..tasks import get_task
    from ..train import TrainConfig, TrainingDiverged, train

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
        print_json(result)
    elif not args.quiet:
        metric = get_task(config.task).primary_metric
        label = {"top1": "top-1", "miou": "mIoU", "map": "mAP"}.get(metric, metric)
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
    from ..extras import MissingExtraError
    from ..train import evaluate_run

    if args.file is None and args.runtime is not None:
        raise CLIError("--runtime runs an exported file: give it with --file F.onnx")
    if args.file is not None and ((args.weights, args.checkpoint) != ("ema", "last")
                                  or args.device not in ("auto", "cpu")):
        raise CLIError("--weights, --checkpoint and --device choose the run's model; --file evaluates the file "
                       "(its weights are fixed; it runs on the CPU)")
    try:
        result = evaluate_run(args.run_dir, data=args.data, data_dir=args.data_dir, split=args.split,
                              weights=args.weights, checkpoint=args.checkpoint, batch_size=args.batch_size,
                              device=args.device, workers=args.workers, limit=args.limit, file=args.file,
                              runtime=args.runtime or "onnxruntime")
    except MissingExtraError as e:
        raise CLIError(str(e)) from None
    coco_results = result.pop("coco_results", None)
    if coco_results is not None and args.results:
        from ..tasks.det_metrics import write_results

        write_results(coco_results, args.results)
    if args.json:
        print_json(result)
        return 0
    if "miou" in result:
        print_segmentation(result)
        return 0
    if "map" in result:
        print_detection(result, args.results if coco_results is not None else None)
        return 0
    print(f"{evaluated(result)} on {result['data']} {result['split']}, {result['count']:,} images: top-1 "
          f"{result['top1']:.2f}%, top-5 {result['top5']:.2f}%, loss {result['loss']:.4f}")
    classes = result["classes"]
    print()
    print(table(["class", "images", "accuracy"],
                 [[name, sum(row), "-" if acc is None else f"{acc:.2f}%"]
                  for name, acc, row in zip(classes, result["per_class"].values(), result["confusion"],
                                            strict=True)]))
    if len(classes) <= 20:
        print("\nconfusion matrix (rows: true class, columns: predicted)")
        headers = ["", *[str(i) for i in range(len(classes))]]
        rows = [[f"{i} {name}", *row] for i, (name, row) in enumerate(zip(classes, result["confusion"],
                                                                          strict=True))]
        print(table(headers, rows))
    return 0


def evaluated(result: dict) -> str:
    """What was evaluated: the run's checkpoint, or a file exported from it and the runtime that ran it."""
    if "file" in result:
        return f"{result['file']} ({result['runtime']}; run {result['run_dir']})"
    return f"{result['run_dir']} ({result['checkpoint']} checkpoint, {result['weights']} weights)"


def print_segmentation(result: dict) -> None:
    """What `mnv3 eval` prints for a segmentation run: mIoU, pixel accuracy, IoU and pixels per class."""
    print(f"{evaluated(result)} on {result['data']} {result['split']}, {result['count']:,} images "
          f"({result['pixels']:,} labelled pixels): mIoU {result['miou']:.2f}%, pixel accuracy "
          f"{result['pixel_acc']:.2f}%, loss {result['loss']:.4f}")
    print()
    print(table(["class", "pixels", "IoU"],
                [[name, sum(row), "-" if iou is None else f"{iou:.2f}%"]
                 for name, iou, row in zip(result["classes"], result["per_class"].values(), result["confusion"],
                                           strict=True)]))


def print_detection(result: dict, results_file: str | None) -> None:
    """What `mnv3 eval` prints for a detection run: COCO's mAP@[.5:.95], AP50, AP75 and AP by object size."""
    print(f"{result['run_dir']} ({result['checkpoint']} checkpoint, {result['weights']} weights) on "
          f"{result['data']} {result['split']}, {result['count']:,} images ({result['boxes']:,} boxes, "
          f"{result['detections']:,} detections): loss {result['loss']:.4f}")
    print()
    names = {"map": "mAP@[.5:.95]", "ap50": "AP50", "ap75": "AP75", "ap_small": "AP small",
             "ap_medium": "AP medium", "ap_large": "AP large"}
    print(table(["COCO metric", "value"],
                [[label, "-" if result[key] is None else f"{result[key]:.2f}"] for key, label in names.items()]))
    if results_file:
        print(f"\ndetections (COCO result JSON): {results_file}")


def cmd_predict(args: argparse.Namespace) -> int:
    from ..train import predict
    from ..train.predict_dense import run_task

    task = run_task(args.run_dir)
    if task in ("segmentation", "detection"):
        return predict_dense(args, task)
    for option in ("out", "overlay"):
        if getattr(args, option):
            raise CLIError(f"--{option} applies to segmentation and detection runs; {args.run_dir} is a {task} run")
    results = predict(args.run_dir, args.images, weights=args.weights, checkpoint=args.checkpoint,
                      top_k=args.top_k, device=args.device)
    if args.json:
        print_json(results)
        return 0
    for r in results:
        print(r["image"])
        for t in r["top"]:
            print(f"  {100 * t['probability']:6.2f}%  {t['label']}")
    return 0


def predict_dense(args: argparse.Namespace, task: str) -> int:
    """`mnv3 predict` for a segmentation run (a colour mask, an overlay, pixel shares per class) or a detection
    run (the boxes drawn, or listed)."""
    from ..train.predict_dense import (
        blend,
        colour_mask,
        draw_detections,
        predict_detection,
        predict_segmentation,
        read_rgb,
    )

    if args.overlay and task != "segmentation":
        raise CLIError("--overlay applies to segmentation runs; --out draws a detection run's boxes")
    if (args.out or args.overlay) and len(args.images) != 1:
        raise CLIError(f"--out and --overlay take one image; {len(args.images)} given")
    common = dict(weights=args.weights, checkpoint=args.checkpoint, device=args.device)
    results = []
    for image in args.images:
        if task == "segmentation":
            r = predict_segmentation(args.run_dir, image, **common)
            if args.out:
                colour_mask(r["mask"]).save(args.out)
            if args.overlay:
                blend(read_rgb(image), r["mask"]).save(args.overlay)
            results.append({k: v for k, v in r.items() if k not in ("mask", "classes")})
        else:
            r = predict_detection(args.run_dir, image, score_threshold=args.score_threshold, **common)
            if args.out:
                from ..train.evaluate import read_run_config

                classes = list(read_run_config(args.run_dir)["data"]["classes"])
                draw_detections(read_rgb(image), r["detections"], classes).save(args.out)
            results.append(r)
    if args.json:
        print_json(results if len(results) > 1 else results[0])
        return 0
    for r in results:
        print(f"{r['image']} ({r['size'][1]}x{r['size'][0]})")
        if task == "segmentation":
            print(table(["class", "pixels"], [[name, f"{100 * share:.2f}%"] for name, share in r["shares"].items()
                                              if share > 0]))
        elif r["detections"]:
            print(table(["label", "score", "box (x1, y1, x2, y2)"],
                        [[det["label"], f"{det['score']:.3f}", ", ".join(f"{v:.1f}" for v in det["box"])]
                         for det in r["detections"]]))
        else:
            print(f"  no detections scoring {args.score_threshold} or more")
    for path in (args.out, args.overlay):
        if path:
            print(f"wrote {path}")
    return 0


def register(sub) -> None:
    from ..tasks import TASKS
    from ..train.config import AMP_MODES, OPTIMIZERS, RECIPES, WD_EXEMPT
    from ..train.schedule import SCHEDULES

    p = sub.add_parser(
        "train", help="train a model into a run directory (resumable; torchrun for several processes)",
        description="Train a model. Options left out take the recipe's value (--recipe auto: 'fashion-mnist' for "
                    "the Fashion-MNIST data, 'paper' otherwise); --resume takes them from the run. Under "
                    "`torchrun --nproc-per-node N -m mobilenetv3 train ...` it runs DistributedDataParallel.")
    g = p.add_argument_group("model and data")
    g.add_argument("--task", choices=tuple(TASKS), help="what the model learns: its head, loss and metrics "
                                                        "(default classification)")
    g.add_argument("--model", help=f"zoo model: {', '.join(REGISTRY)}; with --task segmentation: "
                                   f"{', '.join(SEG_MODELS)}; with --task detection: {', '.join(DET_MODELS)}")
    g.add_argument("--spec", metavar="FILE.json", help="a spec file instead of a zoo name (a SegSpec for "
                                                       "segmentation, a DetSpec for detection)")
    g.add_argument("--width-mult", type=float, help="width multiplier for a zoo model (default 1.0)")
    g.add_argument("--data", help="'fashion-mnist' or an image folder ROOT/{train,val}/<class>/... (default "
                                  "fashion-mnist); segmentation: 'scenes[:size=HxW,train=N,val=N,test=N,items=A-B,"
                                  "seed=S]' (default) or 'cityscapes:PATH'; detection: 'scenes[:...]' (default) or "
                                  "'coco:PATH' (PATH/annotations/instances_<split>.json and the images)")
    g.add_argument("--data-dir", help="where to look for the data")
    g.add_argument("--val-split", help="held-out split to validate on (default val; Fashion-MNIST: its test set)")
    g.add_argument("--holdout", type=int, metavar="N",
                   help="validate on N training images set aside (a fixed random choice) instead of --val-split, "
                        "so that tuning never sees the test set; `mnv3 eval RUN_DIR --split test` then tests")
    g.add_argument("--resolution", type=int, help="input size (default: the recipe's, else the spec's); "
                                                  "segmentation: the side of the square training crop")
    g.add_argument("--channels", type=int, choices=(1, 3), help="input channels (default: the data's)")
    g.add_argument("--limit-train", type=int, metavar="N", help="train on the first N images only")
    g.add_argument("--limit-val", type=int, metavar="N", help="validate on the first N images only")
    g.add_argument("--crop-scale", type=float, nargs=2, metavar=("LO", "HI"),
                   help="area fraction of training crops (segmentation: the random scale factor's range)")
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
                        "file; the architecture must match. Segmentation and detection: a classification run or "
                        "file as the pretrained backbone (loaded while the shapes agree; 1 <-> 3 channel stems "
                        "adapted; the head from scratch)")
    g.add_argument("--qat", action="store_true", default=None,
                   help="quantisation-aware training: fake int8 as ONNX Runtime runs it (needs the deploy extra); "
                        "at the end RUN_DIR/model-int8.onnx is written and evaluated")
    g.add_argument("--qat-epochs", type=int, metavar="N",
                   help="fake quantisation for the last N epochs (default: all with --init, else the last 10%%, "
                        "at least 1)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a training run: top-1, top-5, per-class accuracy, confusion matrix; "
                                    "mIoU, pixel accuracy and per-class IoU for a segmentation run; COCO mAP, "
                                    "AP50, AP75 and AP by size for a detection run; or an ONNX file exported from "
                                    "the run (--file)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--file", metavar="F.onnx",
                   help="evaluate this exported file (float or int8) on the run's data instead of its checkpoint, "
                        "scored the same way (classification and segmentation runs); a fixed-size file gets images "
                        "of its size, a fixed-batch file batches of its batch")
    p.add_argument("--runtime", choices=("onnxruntime", "openvino"),
                   help="with --file: the runtime that runs it (default onnxruntime; openvino at f32 precision)")
    p.add_argument("--data", help="dataset (default: the run's)")
    p.add_argument("--data-dir", help="where to look for the data (default: the run's)")
    p.add_argument("--split", help="split (default: the run's validation split; 'holdout' for a run trained with "
                                   "--holdout, whose test split is then 'test')")
    p.add_argument("--weights", choices=("ema", "model"), default="ema", help="EMA (default) or raw weights")
    p.add_argument("--checkpoint", default="last", help="last (default), best, or a checkpoint file")
    p.add_argument("--batch-size", type=int, help="images per batch (default: the run's evaluation batch, 256 for "
                                                   "runs that recorded none)")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--limit", type=int, metavar="N", help="evaluate the first N images only")
    p.add_argument("--results", metavar="FILE.json", help="detection: also write the detections as a COCO result "
                                                           "file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="predictions of a trained run on image files: top-5 classes, a "
                                       "segmentation mask or detected boxes",
                       description="Classification runs: the top-k classes of each image. Segmentation runs: "
                                   "the share of pixels per class; --out a colour mask, --overlay the image "
                                   "blended with it. Detection runs: the boxes scoring --score-threshold or more; "
                                   "--out the image with them drawn. Images are preprocessed as the run's "
                                   "evaluation data.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--weights", choices=("ema", "model"), default="ema", help="EMA (default) or raw weights")
    p.add_argument("--checkpoint", default="last", help="last (default), best, or a checkpoint file")
    p.add_argument("--top-k", type=int, default=5, help="classification: how many classes (default 5)")
    p.add_argument("--out", metavar="FILE.png", help="segmentation: the colour mask (class 0 black) at the "
                                                     "image's size; detection: the image with the boxes drawn")
    p.add_argument("--overlay", metavar="FILE.png", help="segmentation: the image blended with its mask")
    p.add_argument("--score-threshold", type=float, default=0.3,
                   help="detection: the lowest score kept (default 0.3)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_predict)
