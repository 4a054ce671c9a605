"""`mnv3 search`: the paper's architecture search on this machine's measured latency. `netadapt` shrinks a trained
seed to a latency target (section 4.2) and retrains the result; `nas` samples architectures of a search space with
a controller (or at random) and scores them by MnasNet's reward (section 4.1); `pipeline` runs both in turn, with
the trainings between them."""

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
                              eval_limit=args.eval_limit, proposal_latency=args.proposal_latency,
                              confirm_batches=args.confirm_batches)
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
    reason = {"target": "target reached", "no_proposal": "target NOT reached: no proposal could cut delta more",
              "max_steps": "stopped at --max-steps"}[summary["reason"]]
    print(f"{reason}; report {paths['report']}")
    if retrained is not None:
        print(f"retrained: {args.out}/retrain, best holdout top-1 {retrained.get('best_top1')}")
    return 0


def cmd_nas(args: argparse.Namespace) -> int:
    from ..search.evaluator import make_evaluator
    from ..search.growing_table import GrowingTable
    from ..search.nas import NAS, NASOptions, task_from_run
    from ..search.nas_report import write_report
    from ..search.space import get_space

    if args.workers < 1:
        raise CLIError(f"--workers must be >= 1, got {args.workers}")
    changes = {k: v for k, v in (("lr", args.proxy_lr), ("eval_limit", args.eval_limit),
                                 ("bn_batches", args.bn_batches), ("schedule", args.proxy_schedule),
                                 ("warmup", args.proxy_warmup)) if v is not None}
    task, classes = task_from_run(args.data_run, **changes)
    space = get_space(args.space)
    if args.latency_shape == "data":
        space = space.deployed(task.channels, task.resolution, classes)
    options = NASOptions(target_ms=args.target_ms, samples=args.samples, batch=args.batch, w=args.w, hard=args.hard,
                         steps_per_sample=args.steps_per_sample, seed=args.seed, algorithm=args.algorithm,
                         strategy=args.strategy, top_k=args.top_k)
    lut = GrowingTable(args.table, space.seed, runtime=args.runtime, threads=args.threads, force=args.force)
    for diff in lut.mismatches:
        print(f"mnv3 search nas: warning (forced): {diff}", file=sys.stderr)
    backend = "ray" if args.ray_address else args.backend
    with make_evaluator(backend, args.workers, ray_address=args.ray_address) as evaluator:
        run = NAS(space, lut, task, args.out, options, num_classes=classes, evaluator=evaluator, resume=args.resume,
                  progress=not args.quiet, log=None if not args.quiet else (lambda m: None))
        summary = run.run()
    paths = write_report(args.out, run.journal.header, run.journal.records)
    if args.json:
        print_json({"summary": summary, "files": {k: str(v) for k, v in paths.items()}})
        return 0
    rows = [[r["rank"], r["index"], r["spec_hash"], f"{r['accuracy']:.2f}%", f"{r['predicted_ms']:.4f}",
             f"{r['measured_ms']:.4f}", f"{r['reward']:.4f}", f"{r['measured_reward']:.4f}"] for r in summary["top"]]
    print(table(["rank", "sample", "spec", "proxy top-1", "predicted ms", "measured ms", "reward",
                 "reward (measured)"], rows))
    q = summary["last_quarter"]
    print(f"{summary['samples']} samples ({summary['trained']} trained); last {q['count']}: mean reward "
          f"{q['mean_reward']:.4f} (std {q['std_reward']:.4f}); "
          + (f"{summary['within_target']} within the target" if summary["target_met"] else
             f"NO sample met the target of {summary['target_ms']} ms"))
    print(f"best spec {paths.get('spec')}; report {paths['report']}")
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from ..search.evaluator import make_evaluator
    from ..search.pipeline import Pipeline, PipelineOptions

    if args.workers < 1:
        raise CLIError(f"--workers must be >= 1, got {args.workers}")
    nas = {"samples": args.samples, "steps_per_sample": args.steps_per_sample, "strategy": args.strategy,
           "batch": args.batch, "hard": args.hard, "w": args.w}
    netadapt = {"steps_per_proposal": args.steps_per_proposal, "delta_ratio": args.delta}
    train = {k: v for k, v in (("epochs", args.epochs), ("threads", args.train_threads)) if v is not None}
    options = PipelineOptions(space=args.space, target_ms=args.target_ms, data_run=args.data_run,
                              calibrate=args.calibrate, nas=nas, netadapt=netadapt, retrain=args.retrain,
                              train=train, seed=args.seed)
    backend = "ray" if args.ray_address else args.backend
    with make_evaluator(backend, args.workers, ray_address=args.ray_address) as evaluator:
        pipeline = Pipeline(args.out, options, evaluator=evaluator, resume=args.resume, progress=not args.quiet,
                            log=None if not args.quiet else (lambda m: None), runtime=args.runtime,
                            threads=args.threads, force=args.force)
        summary = pipeline.run()
    if args.json:
        print_json(summary)
        return 0
    rows = [[r["name"], f"{r['params']:,}", f"{r['madds'] / 1e6:.1f}M", f"{r['predicted_ms']:.4f}",
             f"{r['measured_ms']:.4f}", f"{r['ratio']:.3f}",
             f"{r['test_top1']:.2f}%" if r["test_top1"] is not None else "-"] for r in summary["report"]["rows"]]
    print(table(["network", "params", "MAdds", "predicted ms", "measured ms", "x space seed", "test top-1"], rows))
    print(f"report {args.out}/report.md")
    return 0


def add_evaluator_arguments(parser, workers_help: str, table_runtimes) -> None:
    """The options every search shares: where candidates run, and the runtime and threads of a new table."""
    parser.add_argument("--workers", type=int, default=2, help=f"{workers_help} (default 2)")
    parser.add_argument("--backend", choices=("process", "ray", "serial"), default="process",
                        help="process: a local process pool (default); ray: Ray (a local cluster unless "
                             "--ray-address); serial: in this process")
    parser.add_argument("--ray-address", default=None, help="join this Ray cluster (implies --backend ray)")
    parser.add_argument("--runtime", choices=table_runtimes, default=None,
                        help="runtime of a new table (default onnxruntime; an existing table's is used)")
    parser.add_argument("--threads", type=int, default=None, help="threads of a new table (default 1)")


def register(sub) -> None:
    from ..search.netadapt import PROPOSAL_LATENCY
    from ..search.retrain import RETRAIN_MODES
    from ..search.table_builder import TABLE_RUNTIMES

    p = sub.add_parser("search", help="architecture search on this machine's measured latency (NetAdapt, NAS)",
                       description="The paper's search (docs/search.md), driven by latency measured here.")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    n = actions.add_parser(
        "netadapt", help="shrink a trained seed to a latency target, step by step (paper section 4.2)",
        description="NetAdapt: each step proposes, for every expansion and every residual group, the largest "
                    "smaller width that cuts the latency by delta (the table proposes, an end-to-end "
                    "measurement beside the current network confirms); fine-tunes each proposal for T steps "
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
    n.add_argument("--delta", type=float, default=0.025,
                   help="least latency cut of a proposal, as a fraction of the seed's latency (default 0.025: "
                        "the paper's 0.01 is below what a shared 2-core VM can measure, 1-3%%)")
    n.add_argument("--proposal-latency", choices=PROPOSAL_LATENCY, default="measured",
                   help="measured (default): each proposal's cut timed end to end beside the current network, the "
                        "table only choosing the widths to try; table: the table's prediction alone (fast, but "
                        "isolated block timings can misrank proposals on a noisy machine)")
    n.add_argument("--confirm-batches", type=int, default=3, metavar="K",
                   help="with measured proposals: timing batches a step; a proposal still short of delta after K "
                        "walks down is dropped for that step (default 3)")
    n.add_argument("--steps-per-proposal", type=int, default=30, metavar="T",
                   help="fine-tune steps of each proposal (default 30; the paper's T is 10,000 on ImageNet)")
    n.add_argument("--metric", choices=("ratio", "drop"), default="ratio",
                   help="ratio: the paper's dAcc/|dLatency| (default); drop: the original NetAdapt's smallest "
                        "accuracy drop")
    n.add_argument("--finetune-lr", type=float, default=0.01, help="the fine-tune's learning rate (default 0.01)")
    n.add_argument("--eval-limit", type=int, default=None, help="score on the first N holdout images (default all)")
    n.add_argument("--max-steps", type=int, default=100, help="stop after this many steps (default 100)")
    n.add_argument("--seed", type=int, default=0, help="seed of the fine-tunes (default 0)")
    add_evaluator_arguments(n, "proposals fine-tuned at once", TABLE_RUNTIMES)
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
    register_nas(actions, TABLE_RUNTIMES)


def register_nas(actions, table_runtimes) -> None:
    from ..search.controller import ALGORITHMS
    from ..search.nas import STRATEGIES
    from ..search.proxy import SCHEDULES
    from ..search.space import SPACES

    n = actions.add_parser(
        "nas", help="platform-aware NAS over a search space (paper section 4.1)",
        description="Platform-aware NAS: a controller (an LSTM, REINFORCE or PPO) samples architectures of "
                    "MnasNet's factorised hierarchical space around V3-Small or V3-Large; each is trained from "
                    "scratch on a proxy task (the data of --data-run) and scored by MnasNet's reward ACC x "
                    "(LAT/TAR)^w with latency from this machine's table; --strategy random is the baseline with "
                    "the same budget. The top specs are measured end to end. Every sample is journalled: --resume "
                    "continues after a kill.")
    n.add_argument("--space", choices=tuple(SPACES), required=True, help="the search space (its seed network)")
    n.add_argument("--table", required=True, metavar="T.json",
                   help="latency table of the space on this machine (mnv3 latency-table build); entries it lacks "
                        "are measured and added")
    n.add_argument("--target-ms", type=float, required=True, help="the reward's target latency TAR (ms)")
    n.add_argument("--samples", type=int, default=100, help="architectures sampled (default 100)")
    n.add_argument("--out", required=True, metavar="DIR", help="journal, top_k.json, report, best spec")
    n.add_argument("--data-run", required=True, metavar="RUN_DIR",
                   help="a training run trained with --holdout N: its data, preprocessing, classes and holdout "
                        "make the proxy task")
    n.add_argument("--steps-per-sample", type=int, default=60,
                   help="proxy training steps of each sample, from scratch (default 60: under a minute of one core "
                        "for most samples of the V3-Small space at 80 px)")
    n.add_argument("--proxy-lr", type=float, default=None,
                   help="the proxy training's peak learning rate (default: the data run's)")
    n.add_argument("--proxy-schedule", choices=SCHEDULES, default=None,
                   help="the proxy's learning rate over its steps: cosine (default; a linear warm-up, then a cosine "
                        "decay to 0) or constant (how runs before 2026-12-03 trained)")
    n.add_argument("--proxy-warmup", type=float, default=None,
                   help="the cosine schedule's warm-up, a fraction of the steps (default 0.1)")
    n.add_argument("--eval-limit", type=int, default=None, help="score on the first N holdout images (default all)")
    n.add_argument("--bn-batches", type=int, default=None,
                   help="training batches that re-estimate each sample's BatchNorm statistics before it is scored "
                        "(default 8; 0: none)")
    n.add_argument("--batch", type=int, default=4, help="samples per controller update (default 4)")
    n.add_argument("--strategy", choices=STRATEGIES, default="controller",
                   help="controller (default) or random (uniform sampling, the baseline)")
    n.add_argument("--algorithm", choices=ALGORITHMS, default="reinforce",
                   help="the controller's update: reinforce (default) or ppo (MnasNet's)")
    n.add_argument("--hard", action="store_true",
                   help="MnasNet's hard constraint (w = 0 at or below the target, -1 above) instead of the soft one")
    n.add_argument("--w", type=float, default=None,
                   help="the soft constraint's latency weight (default: -0.07 Large, -0.15 Small, the paper's)")
    n.add_argument("--latency-shape", choices=("data", "space"), default="data",
                   help="the networks whose latency the reward uses: data (default): the space's networks with the "
                        "data run's input channels, resolution and classes, as deployed after training on it; "
                        "space: as the space defines them (224 px, 1000 classes)")
    n.add_argument("--top-k", type=int, default=5, help="best specs measured end to end at the end (default 5)")
    n.add_argument("--seed", type=int, default=0, help="seed of the controller or the random draws (default 0)")
    add_evaluator_arguments(n, "samples trained at once", table_runtimes)
    n.add_argument("--resume", action="store_true", help="continue the run in --out")
    n.add_argument("--force", action="store_true", help="use a table measured on another CPU or runtime")
    n.add_argument("--json", action="store_true", help="machine-readable summary")
    n.add_argument("--quiet", action="store_true", help="no progress bar or batch lines")
    n.set_defaults(func=cmd_nas)
    register_pipeline(actions, table_runtimes)


def register_pipeline(actions, table_runtimes) -> None:
    from ..search.nas import STRATEGIES
    from ..search.space import SPACES

    n = actions.add_parser(
        "pipeline", help="NAS -> train the best -> NetAdapt -> retrain, in one directory (paper section 4)",
        description="The paper's search end to end on this machine's latency: calibrate the latency table, NAS over "
                    "the space (deployed at the data run's shape), train the best spec with the data run's "
                    "recipe, NetAdapt it to the target on measured latency, retrain the result, and measure the "
                    "space's seed, the NAS seed and the final network together (test top-1 scored once). Each "
                    "stage is resumable: --resume continues after a kill.")
    n.add_argument("--space", choices=tuple(SPACES), required=True, help="the search space (its seed network)")
    n.add_argument("--target-ms", type=float, required=True,
                   help="latency target (ms on this machine): NAS's TAR and NetAdapt's measured target")
    n.add_argument("--data-run", required=True, metavar="RUN_DIR",
                   help="a training run trained with --holdout N: its data, recipe and holdout")
    n.add_argument("--out", required=True, metavar="DIR", help="the pipeline's directory")
    n.add_argument("--calibrate", type=int, default=20,
                   help="specs measured end to end to fit the latency table's correction (default 20; 0: none)")
    n.add_argument("--samples", type=int, default=100, help="NAS samples (default 100)")
    n.add_argument("--steps-per-sample", type=int, default=60, help="NAS proxy steps per sample (default 60)")
    n.add_argument("--batch", type=int, default=4, help="NAS samples per controller update (default 4)")
    n.add_argument("--strategy", choices=STRATEGIES, default="controller", help="NAS: controller or random")
    n.add_argument("--hard", action="store_true",
                   help="NAS: MnasNet's hard constraint (no reward for beating the target) instead of the soft one")
    n.add_argument("--w", type=float, default=None,
                   help="NAS: the soft constraint's latency weight (default: -0.07 Large, -0.15 Small)")
    n.add_argument("--steps-per-proposal", type=int, default=30, metavar="T",
                   help="NetAdapt's fine-tune steps per proposal (default 30)")
    n.add_argument("--delta", type=float, default=0.025, help="NetAdapt's delta (default 0.025)")
    n.add_argument("--retrain", choices=("scratch", "finetune"), default="scratch",
                   help="the final training: from scratch (default, the paper's) or from NetAdapt's weights")
    n.add_argument("--epochs", type=int, default=None, help="epochs of both trainings (default: the data run's)")
    n.add_argument("--train-threads", type=int, default=None, help="threads of the trainings (default: the run's)")
    n.add_argument("--seed", type=int, default=0, help="seed of NAS and NetAdapt (default 0)")
    add_evaluator_arguments(n, "NAS samples or NetAdapt proposals trained at once", table_runtimes)
    n.add_argument("--resume", action="store_true", help="continue the pipeline in --out")
    n.add_argument("--force", action="store_true", help="use a table measured on another CPU or runtime")
    n.add_argument("--json", action="store_true", help="machine-readable summary")
    n.add_argument("--quiet", action="store_true", help="no progress bars or stage lines")
    n.set_defaults(func=cmd_pipeline)


def check_netadapt(args: argparse.Namespace) -> None:
    if args.target_ratio is None and args.target_ms is None:
        args.target_ratio = 0.8
    if args.workers < 1:
        raise CLIError(f"--workers must be >= 1, got {args.workers}")


__all__ = ["register"]
