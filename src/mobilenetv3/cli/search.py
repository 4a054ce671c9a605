"""`mnv3 search`: the paper's architecture search on this machine's measured latency. `netadapt` shrinks a trained
seed to a latency target (section 4.2) and retrains the result."""

from __future__ import annotations

import argparse
import sys

from .output import CLIError, print_json, table


def cmd_netadapt(args: argparse.Namespace) -> int:
    from ..search.evaluator import make_evaluator
    from ..search.growing_table import GrowingTable
    from ..search.netadapt import NetAdapt, NetAdaptOptions
    from ..search.netadapt_report import write_report
    from ..search.retrain import retrain
    from ..search.table_builder import TimingSettings
    from ..train.evaluate import load_run

    check_netadapt(args)
    options = NetAdaptOptions(target_ratio=args.target_ratio, target_ms=args.target_ms, delta_ratio=args.delta,
                              steps_per_proposal=args.steps_per_proposal, metric=args.metric,
                              max_steps=args.max_steps, seed=args.seed, finetune_lr=args.finetune_lr,
                              eval_limit=args.eval_limit)
    seed_spec = load_run(args.init)[0].spec
    lut = GrowingTable(args.table, seed_spec, runtime=args.runtime, threads=args.threads, force=args.force,
                       settings=TimingSettings(min_seconds=args.entry_seconds))
    for diff in lut.mismatches:
        print(f"mnv3 search netadapt: warning (forced): {diff}", file=sys.stderr)
    backend = "ray" if args.ray_address else args.backend
    with make_evaluator(backend, args.workers, ray_address=args.ray_address) as evaluator:
        run = NetAdapt(args.init, lut, args.out, options, evaluator=evaluator, resume=args.resume,
                       progress=not args.quiet, log=None if not args.quiet else (lambda m: None))
        summary = run.run()
    paths = write_report(args.out, run.journal.header, run.journal.records)
    retrained = None
    if args.retrain != "none" and "spec" in paths:
        print(f"retraining {paths['spec']} with the seed's recipe ({args.retrain}) -> {args.out}/retrain",
              file=sys.stderr)
        changes = {"threads": args.retrain_threads} if args.retrain_threads else {}
        retrained = retrain(args.init, paths["spec"], f"{args.out}/retrain", args.retrain, weights=paths["weights"],
                            **changes)
    if args.json:
        print_json({"summary": summary, "files": {k: str(v) for k, v in paths.items()}, "retrain": retrained})
        return 0
    rows = [["seed", f"{summary['seed_predicted_ms']:.4f}", f"{summary['seed_measured_ms']:.4f}", "1.000",
             f"{summary['seed_accuracy']:.2f}%"],
            [f"adapted ({summary['steps']} steps)", f"{summary['predicted_ms']:.4f}", f"{summary['measured_ms']:.4f}",
             f"{summary['measured_ratio']:.3f}", f"{summary['accuracy']:.2f}%"]]
    print(table(["network", "predicted ms", "measured ms", "measured / seed", "holdout top-1"], rows))
    reason = {"target": "target reached", "no_proposal": "target NOT reached: no width could cut delta more",
              "max_steps": "stopped at --max-steps"}[summary["reason"]]
    print(f"{reason}; report {paths['report']}")
    if retrained is not None:
        print(f"retrained: {args.out}/retrain, best holdout top-1 {retrained.get('best_top1')}")
    return 0


def register(sub) -> None:
    from ..search.retrain import RETRAIN_MODES
    from ..search.table_builder import TABLE_RUNTIMES

    p = sub.add_parser("search", help="architecture search on this machine's measured latency (NetAdapt)",
                       description="The paper's search (docs/search.md), driven by latency measured here.")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    n = actions.add_parser(
        "netadapt", help="shrink a trained seed to a latency target, step by step (paper section 4.2)",
        description="NetAdapt: each step proposes, for every expansion and every residual group, the largest "
                    "smaller width that cuts the predicted latency by delta; fine-tunes each proposal for T steps "
                    "on the training split; keeps the best by holdout accuracy change per latency change; stops "
                    "when the measured latency meets the target; then retrains the result with the seed's recipe. "
                    "Every step is journalled: --resume continues after a kill.")
    n.add_argument("--init", required=True, metavar="RUN_DIR", help="the trained seed (a training run directory "
                   "trained with --holdout N: its holdout scores the proposals)")
    n.add_argument("--table", required=True, metavar="T.json",
                   help="latency table of this machine at the seed's resolution; entries it lacks are measured and "
                        "added (a missing file is created)")
    target = n.add_mutually_exclusive_group()
    target.add_argument("--target-ratio", type=float, default=None,
                        help="target latency as a fraction of the seed's measured latency (default 0.8)")
    target.add_argument("--target-ms", type=float, default=None, help="target latency in ms (measured)")
    n.add_argument("--out", required=True, metavar="DIR", help="journal, step weights, report, final spec")
    n.add_argument("--delta", type=float, default=0.01,
                   help="least latency cut of a proposal, as a fraction of the seed's predicted latency "
                        "(default 0.01, the paper's)")
    n.add_argument("--steps-per-proposal", type=int, default=30, metavar="T",
                   help="fine-tune steps of each proposal (default 30; the paper's T is 10,000 on ImageNet)")
    n.add_argument("--metric", choices=("ratio", "drop"), default="ratio",
                   help="ratio: the paper's dAcc/|dLatency| (default); drop: the original NetAdapt's smallest "
                        "accuracy drop")
    n.add_argument("--finetune-lr", type=float, default=0.01, help="the fine-tune's learning rate (default 0.01)")
    n.add_argument("--eval-limit", type=int, default=None, help="score on the first N holdout images (default all)")
    n.add_argument("--max-steps", type=int, default=100, help="stop after this many steps (default 100)")
    n.add_argument("--seed", type=int, default=0, help="seed of the fine-tunes (default 0)")
    n.add_argument("--workers", type=int, default=2, help="proposals fine-tuned at once (default 2)")
    n.add_argument("--backend", choices=("process", "ray", "serial"), default="process",
                   help="process: a local process pool (default); ray: Ray (a local cluster unless --ray-address); "
                        "serial: in this process")
    n.add_argument("--ray-address", default=None, help="join this Ray cluster (implies --backend ray)")
    n.add_argument("--runtime", choices=TABLE_RUNTIMES, default=None,
                   help="runtime of a new table (default onnxruntime; an existing table's is used)")
    n.add_argument("--threads", type=int, default=None, help="threads of a new table (default 1)")
    n.add_argument("--entry-seconds", type=float, default=0.2,
                   help="a new table: time each entry at least this long (default 0.2 s: NetAdapt compares "
                        "entries that differ by 8 channels, so they need more runs than a space's table)")
    n.add_argument("--retrain", choices=RETRAIN_MODES, default="scratch",
                   help="afterwards, train the result with the seed's recipe: from scratch (default, the paper's), "
                        "from the adapted weights (finetune), or not at all")
    n.add_argument("--retrain-threads", type=int, default=None, help="threads of the retrain (default: the seed's)")
    n.add_argument("--resume", action="store_true", help="continue the run in --out")
    n.add_argument("--force", action="store_true", help="use a table measured on another CPU or runtime")
    n.add_argument("--json", action="store_true", help="machine-readable summary")
    n.add_argument("--quiet", action="store_true", help="no progress bars or step lines")
    n.set_defaults(func=cmd_netadapt)


def check_netadapt(args: argparse.Namespace) -> None:
    if args.target_ratio is None and args.target_ms is None:
        args.target_ratio = 0.8
    if args.workers < 1:
        raise CLIError(f"--workers must be >= 1, got {args.workers}")


__all__ = ["register"]
