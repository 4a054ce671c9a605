"""The paper's whole search in one directory (section 4: "we use platform-aware NAS to search for the global
network structures, then NetAdapt to search per layer for the number of filters"), on this machine's latency:

1. ``calibrate``: the latency table of the space, deployed at the data's shape (input channels, resolution,
   classes), gets the entries of ``calibrate`` sampled specs and a correction fitted on their end-to-end latency
   (:func:`~.predictor.fit_correction`), so that the NAS reward's predicted ms and NetAdapt's measured ms speak
   of the same thing (the plain sum of entries overstates small networks: each entry pays a runtime call the
   network pays once);
2. ``nas`` (:mod:`.nas`): the controller (or random search) over the space, reward ACC x (LAT / TAR) ^ w;
3. ``seed``: the best spec trained with the data run's recipe (its holdout kept for NetAdapt's scores);
4. ``netadapt`` (:mod:`.netadapt`): the trained seed shrunk until its measured latency meets the target (skipped,
   and said so, when the seed already meets it);
5. ``final``: the adapted spec retrained with the same recipe (:mod:`.retrain`; ``scratch`` as the paper, or
   ``finetune``);
6. ``report``: the space's own seed (e.g. V3-Small), the data run's network (trained with the recipe: the baseline
   to beat), the NAS seed and the final network measured end to end in one interleaved session, their holdout and
   (once, at the end) test accuracy, in ``report.md``.

Every stage is resumable and journalled; the pipeline's own journal (``pipeline.jsonl``) records each finished
stage, so ``resume=True`` skips them and continues the unfinished one from its own journal or checkpoint. A
resume with other options is refused.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..cost import spec_cost
from ..spec import ArchSpec
from ..train.checkpoint import read_pointer
from ..train.evaluate import evaluate_run, read_run_config
from .evaluator import Evaluator, SerialEvaluator
from .growing_table import GrowingTable
from .journal import Journal
from .nas import JOURNAL as NAS_JOURNAL
from .nas import NAS, NASOptions, task_from_run
from .nas import default_measure as nas_measure
from .nas_report import write_report as write_nas_report
from .netadapt import JOURNAL as NETADAPT_JOURNAL
from .netadapt import NetAdapt, NetAdaptOptions, TargetAlreadyMet
from .netadapt_report import write_report as write_netadapt_report
from .predictor import fit_correction
from .retrain import retrain
from .space import get_space

JOURNAL = "pipeline.jsonl"
TABLE = "latency-table.json"
STAGES = ("calibrate", "nas", "seed", "netadapt", "final", "report")
MeasureFn = Callable[[Sequence[ArchSpec]], list[float]]


class PipelineError(ValueError):
    """Options or inputs the pipeline cannot run with; the message says which and why."""


@dataclass(frozen=True)
class PipelineOptions:
    """``space``: a preset of :mod:`.space`; ``target_ms``: the latency target of both searches (NAS's TAR,
    NetAdapt's measured target); ``data_run``: a training run with ``--holdout N`` (its data, recipe and holdout);
    ``calibrate``: specs measured end to end to fit the table's correction (0: none); ``nas``: NASOptions fields
    (``samples``, ``steps_per_sample``, ``strategy``, ...); ``netadapt``: NetAdaptOptions fields
    (``steps_per_proposal``, ``delta_ratio``, ...); ``retrain``: ``scratch`` or ``finetune``; ``train``: training
    options changed for both trainings (``epochs``, ``threads``; tests); ``test_split``: scored once at the end."""

    space: str
    target_ms: float
    data_run: str
    calibrate: int = 20
    nas: dict[str, Any] = field(default_factory=dict)
    netadapt: dict[str, Any] = field(default_factory=dict)
    retrain: str = "scratch"
    train: dict[str, Any] = field(default_factory=dict)
    test_split: str = "test"
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.target_ms > 0:
            raise PipelineError(f"the target latency must be a positive number of ms, got {self.target_ms}")
        if self.calibrate and self.calibrate < 8:
            raise PipelineError(f"calibrate needs at least 8 specs to fit the correction (0: none), got "
                                f"{self.calibrate}")
        if self.retrain not in ("scratch", "finetune"):
            raise PipelineError(f"retrain must be scratch or finetune, got {self.retrain!r}")
        for name, cls in (("nas", NASOptions), ("netadapt", NetAdaptOptions)):
            given = set(getattr(self, name))
            unknown = (given - set(cls.__dataclass_fields__)) | (given & {"target_ms", "target_ratio"})
            if unknown:
                raise PipelineError(f"{name} options {sorted(unknown)} are not options of that stage (the target "
                                    "is the pipeline's)")


class Pipeline:
    """The pipeline in ``out`` (see the module doc). ``measure`` replaces end-to-end timing everywhere (tests);
    ``runtime``/``threads``/``force`` are the latency table's, as for the searches."""

    def __init__(self, out: str | os.PathLike, options: PipelineOptions, *, evaluator: Evaluator | None = None,
                 resume: bool = False, progress: bool = True, log: Callable[[str], None] | None = None,
                 measure: MeasureFn | None = None, runtime: str | None = None, threads: int | None = None,
                 force: bool = False) -> None:
        self.out, self.options = Path(out), options
        self.evaluator = evaluator or SerialEvaluator()
        self.progress = progress
        self.log = log or (lambda m: print(m, file=sys.stderr))
        holdout = read_run_config(options.data_run)["train"].get("holdout") or 0
        if holdout <= 0:
            raise PipelineError(f"{options.data_run} was trained without --holdout: NetAdapt scores proposals on "
                                "held-out training images, never the test set; train the data run with --holdout N")
        self.task, classes = task_from_run(options.data_run)
        try:
            self.space = get_space(options.space).deployed(self.task.channels, self.task.resolution, classes)
        except ValueError as exc:
            raise PipelineError(str(exc)) from None
        self.num_classes = classes
        path = self.out / JOURNAL
        if path.exists() and not resume:
            raise PipelineError(f"{self.out} holds a pipeline: add --resume to continue it, or choose another --out")
        self.out.mkdir(parents=True, exist_ok=True)
        self.table = GrowingTable(self.out / TABLE, self.space.seed, runtime=runtime, threads=threads, force=force)
        for diff in self.table.mismatches:
            self.log(f"pipeline: warning (forced): {diff}")
        self.measure = measure
        options_record = asdict(options)
        options_record["data_run"] = str(Path(options.data_run).resolve())
        self.journal = Journal(path, {"kind": "pipeline", "format": 1, "options": options_record})

    # -- bookkeeping --------------------------------------------------------------------------------------
    def done(self, stage: str) -> dict[str, Any] | None:
        """What a finished stage gave (its journal record's fields), or None."""
        for r in self.journal.records:
            if r.get("type") == "stage" and r["stage"] == stage:
                return {k: v for k, v in r.items() if k not in ("type", "stage")}
        return None

    def finish_stage(self, stage: str, record: dict[str, Any]) -> dict[str, Any]:
        self.journal.append({"type": "stage", "stage": stage, **record})
        return record

    def stage(self, stage: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        found = self.done(stage)
        if found is not None:
            return found
        self.log(f"pipeline: stage {STAGES.index(stage) + 1}/{len(STAGES)}: {stage}")
        return self.finish_stage(stage, fn())

    def end_to_end(self, specs: Sequence[ArchSpec], rounds: int = 20) -> list[float]:
        if self.measure is not None:
            return [float(x) for x in self.measure(specs)]
        from .table_check import measure_interleaved

        return measure_interleaved(self.table.table, specs, rounds=rounds, min_seconds=0.1, progress=False,
                                   statistic="min", sessions=3)[0]

    # -- the stages ---------------------------------------------------------------------------------------
    def calibrate(self) -> dict[str, Any]:
        n = self.options.calibrate
        if not n:
            return {"correction": None}
        rng = random.Random(self.options.seed)
        specs = [self.space.seed] + [self.space.sample(rng) for _ in range(n - 1)]
        self.table.ensure(specs)
        self.log(f"pipeline: measuring {n} specs end to end to fit the table's correction")
        record = fit_correction(self.table.table, specs, self.end_to_end(specs, rounds=10))
        self.table.save()
        return {"correction": record}

    def nas(self) -> dict[str, Any]:
        o = self.options
        out = self.out / "nas"
        options = NASOptions(target_ms=o.target_ms, **{"seed": o.seed, **o.nas})
        run = NAS(self.space, self.table, self.task, out, options, num_classes=self.num_classes,
                  evaluator=self.evaluator, resume=(out / NAS_JOURNAL).exists(), progress=self.progress,
                  log=self.log, measure=self.measure or nas_measure(self.table, options.measure_rounds))
        summary = run.run()
        paths = write_nas_report(out, run.journal.header, run.journal.records)
        return {"spec": str(paths["spec"]), "accuracy": summary["best"]["accuracy"],
                "predicted_ms": summary["best"]["predicted_ms"], "measured_ms": summary["best"]["measured_ms"],
                "target_met": summary["target_met"], "samples": summary["samples"]}

    def train(self, source_run: str | os.PathLike, spec_file: str, name: str, mode: str = "scratch",
              weights: str | None = None) -> dict[str, Any]:
        out = self.out / name
        self.log(f"pipeline: training {spec_file} with the data run's recipe -> {out}")
        summary = retrain(source_run, spec_file, out, mode, weights=weights,
                          **{"quiet": not self.progress, **self.options.train})
        if summary.get("interrupted"):
            raise KeyboardInterrupt(f"training {out} was interrupted: --resume continues it")
        return {"run": str(out), "holdout_top1": summary.get("best_top1")}

    def netadapt(self, seed_run: str) -> dict[str, Any]:
        out = self.out / "netadapt"
        options = NetAdaptOptions(target_ratio=None, target_ms=self.options.target_ms,
                                  **{"seed": self.options.seed, **self.options.netadapt})
        try:
            run = NetAdapt(seed_run, self.table, out, options, evaluator=self.evaluator,
                           resume=(out / NETADAPT_JOURNAL).exists(), progress=self.progress, log=self.log,
                           measure=self.measure)
            summary = run.run()
        except TargetAlreadyMet as exc:
            self.log(f"pipeline: NetAdapt skipped: the trained NAS seed already meets the target "
                     f"({exc.measured_ms:.4f} ms <= {self.options.target_ms} ms)")
            return {"skipped": True, "measured_ms": exc.measured_ms}
        paths = write_netadapt_report(out, run.journal.header, run.journal.records)
        return {"skipped": False, "reason": summary["reason"], "steps": summary["steps"], "spec": str(paths["spec"]),
                "weights": str(paths["weights"]), "accuracy": summary["accuracy"],
                "measured_ms": summary["measured_ms"], "predicted_ms": summary["predicted_ms"]}

    def report(self, seed_run: str, final_run: str) -> dict[str, Any]:
        """The space's seed, the data run's network, the NAS seed and the final network measured in one session;
        test top-1 once for each trained run. The data run (the space's seed trained with the recipe, when it is
        the main job) is the trained baseline the search must beat; one that has no checkpoint is timed only."""
        runs = {"data run": str(self.options.data_run), "nas seed": seed_run, "final": final_run}
        specs = {"space seed": self.space.seed, **{k: ArchSpec.load(Path(v) / "spec.json") for k, v in runs.items()}}
        self.log("pipeline: measuring the space's seed, the data run, the NAS seed and the final network end to end")
        ms = dict(zip(specs, self.end_to_end(list(specs.values()), rounds=30), strict=True))
        rows = []
        for name, spec in specs.items():
            cost = spec_cost(spec, resolution=spec.resolution)
            row = {"name": name, "params": cost.params, "madds": cost.madds, "predicted_ms": self.table.predict(spec),
                   "measured_ms": ms[name], "ratio": ms[name] / ms["space seed"], "test_top1": None}
            if name == "data run" and not self.finished(runs[name]):
                self.log(f"pipeline: the data run {runs[name]} has not finished its training: timed, not scored")
            elif name in runs:
                row["test_top1"] = evaluate_run(runs[name], split=self.options.test_split, device="cpu")["top1"]
            rows.append(row)
        return {"rows": rows}

    @staticmethod
    def finished(run_dir: str) -> bool:
        """Whether a training run's last checkpoint is at its last step."""
        pointer = read_pointer(run_dir)
        total = read_run_config(run_dir).get("derived", {}).get("total_steps")
        return pointer is not None and total is not None and int(pointer["global_step"]) >= int(total)

    # -- the whole --------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.stage("calibrate", self.calibrate)
        nas = self.stage("nas", self.nas)
        seed = self.stage("seed", lambda: self.train(self.options.data_run, nas["spec"], "seed"))
        adapted = self.stage("netadapt", lambda: self.netadapt(seed["run"]))
        if adapted["skipped"]:
            final = self.stage("final", lambda: {**seed, "same_as_seed": True})
        else:
            final = self.stage("final", lambda: self.train(
                seed["run"], adapted["spec"], "final", self.options.retrain,
                weights=adapted["weights"] if self.options.retrain == "finetune" else None))
        report = self.stage("report", lambda: self.report(seed["run"], final["run"]))
        summary = {"calibrate": self.done("calibrate"), "nas": nas, "seed": seed, "netadapt": adapted,
                   "final": final, "report": report}
        write_report(self.out, self.journal.header["options"], summary)
        return summary


def write_report(out: str | os.PathLike, options: dict[str, Any], summary: dict[str, Any]) -> Path:
    """``report.md``: what each stage gave, and the end-to-end comparison."""
    out = Path(out)
    nas, seed, adapted, final = summary["nas"], summary["seed"], summary["netadapt"], summary["final"]
    corr = (summary.get("calibrate") or {}).get("correction")
    lines = ["# Search pipeline", "",
             f"Space `{options['space']}` deployed at the data's shape; target {options['target_ms']} ms; data "
             f"run `{options['data_run']}`.", "",
             "- calibration: " + (f"{options['calibrate']} specs measured end to end; correction "
                                  + ("kept" if corr and corr.get("kept") else "not kept (the plain sum was better)")
                                  if corr else "none"),
             f"- NAS ([report](nas/report.md)): {nas['samples']} samples; best spec proxy top-1 "
             f"{nas['accuracy']:.2f}%, predicted {nas['predicted_ms']:.4f} ms, measured {nas['measured_ms']:.4f} ms",
             f"- seed: `{seed['run']}`, holdout top-1 {seed['holdout_top1']}",
             "- NetAdapt: " + ("skipped: the trained seed already met the target "
                               f"({adapted['measured_ms']:.4f} ms)" if adapted["skipped"] else
                               f"([report](netadapt/report.md)) {adapted['steps']} steps, stopped: "
                               f"{adapted['reason']}; measured {adapted['measured_ms']:.4f} ms"),
             f"- final: `{final['run']}`, holdout top-1 {final['holdout_top1']}", "",
             "Measured in one interleaved session (the fastest of 30 rounds, the median of 3 sessions); test top-1 "
             "scored once, here:", "",
             "| network | params | MAdds | predicted ms | measured ms | x space seed | test top-1 |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in summary["report"]["rows"]:
        top1 = f"{r['test_top1']:.2f}%" if r["test_top1"] is not None else "-"
        lines.append(f"| {r['name']} | {r['params']:,} | {r['madds'] / 1e6:.1f}M | {r['predicted_ms']:.4f} | "
                     f"{r['measured_ms']:.4f} | {r['ratio']:.3f} | {top1} |")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


__all__ = ["JOURNAL", "Pipeline", "PipelineError", "PipelineOptions", "STAGES", "TABLE", "write_report"]
