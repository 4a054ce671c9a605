"""NetAdapt as section 4.2 of the paper runs it: shrink a trained seed step by step until it meets a latency target.

Each step, from the current network (the seed, then the previous step's choice with its fine-tuned weights):

1. proposals (:mod:`.proposals`): for every expansion and every residual group, the largest smaller width (a
   multiple of 8) that the latency model (:class:`.growing_table.GrowingTable`) predicts cuts the latency by at
   least delta (default 0.025 x the seed's latency; the paper's 0.01 is below what a shared 2-core VM can
   measure); by default each proposal's cut is then timed end to end beside the current network and the seed,
   and one that falls short walks further down its site by the measured slope
   (:func:`.proposals.confirm_by_measurement`): isolated block timings at proxy resolutions swing 2x on such a
   machine, and a table-only run once predicted 0.86 x the seed where the network measured 0.99 x;
2. each proposal takes the current weights over (surviving channels by L2 norm, :mod:`.transfer`), is fine-tuned
   for T steps on the training split and scored on the holdout (:mod:`.candidate`, :mod:`.proxy`), all proposals
   of a step in parallel through an evaluator (:mod:`.evaluator`: processes, or Ray);
3. the choice: the proposal with the largest accuracy change per latency change, ``dAcc / |dLatency|`` (the
   paper's metric), or the smallest accuracy drop (the original NetAdapt's), ties to the faster;
4. the choice is measured end to end, interleaved with the seed (so machine drift cancels; the fastest of 20
   rounds, so other tenants' bursts do not count), and the loop stops when its measured latency meets the target
   (a ratio of the seed's measured latency, or absolute ms); the seed and the choice are each prepared as three
   sessions and the median taken, since one session can run slow for its whole life.

Every event goes to a JSON-lines journal (:mod:`.journal`) before the next one starts: the proposals of a step,
each evaluated proposal, each choice. ``resume=True`` replays it and runs only what is missing, so a kill costs at
most the proposals being fine-tuned at that moment. A journal from another seed or other options is refused.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..spec import ArchSpec
from ..train.evaluate import load_run
from ..train.sampler import mix_seed
from .candidate import evaluate_candidate, load_model, save_model, spec_hash
from .evaluator import Evaluator, SerialEvaluator
from .growing_table import GrowingTable
from .journal import Journal
from .proposals import Proposal, confirm_by_measurement, make_proposals
from .proxy import ProxyTask

METRICS = ("ratio", "drop")
PROPOSAL_LATENCY = ("measured", "table")
JOURNAL = "journal.jsonl"
MeasureFn = Callable[[Sequence[ArchSpec]], list[float]]


class NetAdaptError(ValueError):
    """Options or inputs NetAdapt cannot run with; the message says which and why."""


class TargetAlreadyMet(NetAdaptError):
    """The seed's measured latency already meets the absolute target (``measured_ms``): nothing to adapt."""

    def __init__(self, message: str, measured_ms: float) -> None:
        super().__init__(message)
        self.measured_ms = measured_ms


@dataclass(frozen=True)
class NetAdaptOptions:
    """``target_ratio`` (of the seed's measured latency) or ``target_ms``; ``delta_ratio`` x the seed's latency
    (measured, or the table's prediction with ``proposal_latency="table"``) is the least cut of a proposal;
    ``steps_per_proposal`` is T; ``metric`` ``ratio`` (dAcc/|dLat|) or ``drop``; ``finetune_lr`` the
    fine-tune's constant learning rate; ``measure_rounds`` the interleaved rounds of each end-to-end measurement;
    ``proposal_latency`` ``measured`` (each proposal's cut timed end to end, the table only choosing where to
    look, up to ``confirm_batches`` batches a step) or ``table`` (the table's prediction alone)."""

    target_ratio: float | None = 0.8
    target_ms: float | None = None
    delta_ratio: float = 0.025
    steps_per_proposal: int = 30
    metric: str = "ratio"
    max_steps: int = 100
    seed: int = 0
    finetune_lr: float = 0.01
    eval_limit: int | None = None
    measure_rounds: int = 20
    measure_statistic: str = "min"
    measure_sessions: int = 3
    proposal_latency: str = "measured"
    confirm_batches: int = 3

    def __post_init__(self) -> None:
        if (self.target_ratio is None) == (self.target_ms is None):
            raise NetAdaptError("give one target: a ratio of the seed's latency or a latency in ms")
        if self.target_ratio is not None and not 0 < self.target_ratio < 1:
            raise NetAdaptError(f"the target ratio must be between 0 and 1 (a latency below the seed's), "
                                f"got {self.target_ratio}")
        if self.target_ms is not None and self.target_ms <= 0:
            raise NetAdaptError(f"the target must be a positive number of ms, got {self.target_ms}")
        if not 0 < self.delta_ratio < 1:
            raise NetAdaptError(f"delta must be a fraction of the seed's latency in (0, 1), got {self.delta_ratio}")
        if self.metric not in METRICS:
            raise NetAdaptError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.proposal_latency not in PROPOSAL_LATENCY:
            raise NetAdaptError(f"proposal_latency must be one of {', '.join(PROPOSAL_LATENCY)}, got "
                                f"{self.proposal_latency!r}")
        if self.confirm_batches < 1:
            raise NetAdaptError(f"confirm_batches must be >= 1, got {self.confirm_batches}")
        if self.measure_statistic not in ("min", "median"):
            raise NetAdaptError(f"measure_statistic must be min or median, got {self.measure_statistic!r}")
        if self.steps_per_proposal < 0 or self.max_steps < 1 or self.measure_rounds < 2 or self.measure_sessions < 1:
            raise NetAdaptError("steps per proposal must be >= 0, max steps >= 1 and measure rounds >= 2")


def score(metric: str, accuracy: float, latency_ms: float, base_accuracy: float, base_ms: float) -> float:
    """A proposal's selection score (larger is better): ``dAcc / |dLatency|`` (accuracy points per ms) or, for
    ``drop``, the accuracy itself (the smallest drop)."""
    if metric == "drop":
        return accuracy
    return (accuracy - base_accuracy) / max(abs(base_ms - latency_ms), 1e-12)


def latency_pair(proposal: dict[str, Any], base_ms: float) -> tuple[float, float]:
    """A proposal's (latency, the current network's latency) in ms: both measured in one batch when the proposal
    was timed end to end, else its prediction and ``base_ms``."""
    if proposal.get("measured_ms") is not None:
        return proposal["measured_ms"], proposal["base_ms"]
    return proposal["predicted_ms"], base_ms


def choose(metric: str, proposals: Sequence[dict[str, Any]], base_accuracy: float, base_ms: float) -> int:
    """The index of the chosen proposal (each a dict with ``accuracy`` and ``predicted_ms``, and ``measured_ms``
    with ``base_ms`` when measured): best score, then the larger relative cut, then earlier site."""
    def key(i: int) -> tuple[float, float, int]:
        p = proposals[i]
        ms, base = latency_pair(p, base_ms)
        return (-score(metric, p["accuracy"], ms, base_accuracy, base), ms / base, i)

    return min(range(len(proposals)), key=key)


@dataclass
class State:
    """Where the adaptation stands: the current network and its figures."""

    spec: ArchSpec
    weights: str
    sha256: str
    accuracy: float
    predicted_ms: float
    measured_ms: float
    measured_ratio: float = 1.0
    step: int = 0


def default_measure(table: GrowingTable, rounds: int, statistic: str = "min", sessions: int = 3) -> MeasureFn:
    """End-to-end latency of specs on the table's runtime: each spec prepared ``sessions`` times, ``rounds``
    interleaved rounds of 0.1 s each, reduced by ``statistic`` (the fastest round by default), the median over
    sessions (see :func:`~.table_check.measure_interleaved`)."""
    from .table_check import measure_interleaved

    def measure(specs: Sequence[ArchSpec]) -> list[float]:
        return measure_interleaved(table.table, specs, rounds=rounds, min_seconds=0.1, progress=False,
                                   statistic=statistic, sessions=sessions)[0]

    return measure


class NetAdapt:
    """One adaptation run in ``out`` (see the module doc); :meth:`run` does it, :func:`run_netadapt` wraps it."""

    def __init__(self, seed_run: str | os.PathLike, table: GrowingTable, out: str | os.PathLike,
                 options: NetAdaptOptions, *, task: ProxyTask | None = None, evaluator: Evaluator | None = None,
                 resume: bool = False, progress: bool = True, log: Callable[[str], None] | None = None,
                 measure: MeasureFn | None = None) -> None:
        self.out = Path(out)
        self.options = options
        self.table = table
        self.evaluator = evaluator or SerialEvaluator()
        self.progress = progress
        self.log = log or (lambda m: print(m, file=sys.stderr))
        self.measure = measure or default_measure(table, options.measure_rounds, options.measure_statistic,
                                                  options.measure_sessions)
        model, _ = load_run(seed_run)
        self.seed_spec: ArchSpec = model.spec
        if self.seed_spec.resolution != table.resolution:
            raise NetAdaptError(f"the seed run trains at {self.seed_spec.resolution} px, the latency table is for "
                                f"{table.resolution} px: use a table of the seed's resolution")
        self.task = task or ProxyTask.from_run(seed_run, lr=options.finetune_lr, eval_limit=options.eval_limit)
        journal_path = self.out / JOURNAL
        if journal_path.exists() and not resume:
            raise NetAdaptError(f"{self.out} holds a NetAdapt journal: add --resume to continue it, or choose "
                                "another --out")
        self.out.mkdir(parents=True, exist_ok=True)
        seed_file = self.out / "seed.safetensors"
        self.seed_sha = save_model(model, seed_file)
        header = {"kind": "netadapt", "format": 1, "seed_run": str(Path(seed_run).resolve()),
                  "seed_weights_sha256": self.seed_sha, "seed_spec": spec_hash(self.seed_spec),
                  "options": asdict(options), "task": self.task.to_dict(),
                  "latency": {"runtime": table.runtime, "threads": table.threads, "resolution": table.resolution,
                              "cpu": table.table.header.get("cpu")}}
        self.journal = Journal(journal_path, header,
                               identity=("kind", "format", "seed_weights_sha256", "seed_spec", "options", "task",
                                         "latency"))
        self.seed_file = seed_file

    # -- journal replay ------------------------------------------------------------------------
    def records(self, kind: str, step: int | None = None) -> list[dict[str, Any]]:
        return [r for r in self.journal.records if r.get("type") == kind and (step is None or r.get("step") == step)]

    def state(self) -> State:
        seed = self.records("seed")[0]
        state = State(self.seed_spec, str(self.seed_file), self.seed_sha, seed["accuracy"], seed["predicted_ms"],
                      seed["measured_ms"])
        for r in self.records("step"):
            state = State(ArchSpec.from_dict(r["spec"]), r["weights"], r["sha256"], r["accuracy"],
                          r["predicted_ms"], r["measured_ms"], r["measured_ratio"], r["step"])
        return state

    # -- the pieces --------------------------------------------------------------------------------------
    def job(self, spec: ArchSpec, state: State, steps: int, seed: int, out: Path | None) -> dict[str, Any]:
        return {"spec": spec.to_dict(), "task": self.task.to_dict(), "steps": steps, "seed": seed,
                "source": {"weights": state.weights, "sha256": state.sha256}, "out": str(out) if out else None}

    def start(self) -> None:
        """The seed's predicted and measured latency and holdout accuracy, once."""
        if self.records("seed"):
            return
        self.log("netadapt: the seed's latency and holdout accuracy")
        predicted = self.table.predict(self.seed_spec)
        measured = self.measure([self.seed_spec])[0]
        if self.options.target_ms is not None and self.options.target_ms >= measured:
            raise TargetAlreadyMet(f"the target {self.options.target_ms} ms is not below the seed's measured "
                                   f"latency ({measured:.4f} ms): nothing to adapt", measured)
        seed_state = State(self.seed_spec, str(self.seed_file), self.seed_sha, 0.0, predicted, measured)
        result = self.evaluator.run(evaluate_candidate, [self.job(self.seed_spec, seed_state, 0, 0, None)])[0]
        self.journal.append({"type": "seed", "predicted_ms": predicted, "measured_ms": measured,
                             "accuracy": result["accuracy"]})

    def propose(self, state: State, delta_ms: float) -> list[Proposal]:
        step = state.step + 1
        saved = self.records("proposals", step)
        if saved:  # replay: the table may have grown since and timings vary, the journal's proposals stand
            return [Proposal.from_dict(p, state.spec) for p in saved[0]["proposals"]]
        proposals = make_proposals(state.spec, self.table.predict, delta_ms, current_ms=state.predicted_ms)
        record: dict[str, Any] = {"type": "proposals", "step": step, "base_ms": state.predicted_ms}
        if self.options.proposal_latency == "measured" and proposals:
            self.log(f"step {step}: {len(proposals)} proposals from the latency table")
            proposals, record["batches"] = confirm_by_measurement(
                state.spec, proposals, self.seed_spec, self.measure, self.table.predict, self.options.delta_ratio,
                rounds=self.options.confirm_batches, log=self.log)
        record["proposals"] = [p.to_dict() for p in proposals]
        self.journal.append(record)
        return proposals

    def evaluate(self, state: State, proposals: list[Proposal]) -> list[dict[str, Any]]:
        step = state.step + 1
        done = {r["index"]: r for r in self.records("evaluated", step)}
        todo = [i for i in range(len(proposals)) if i not in done]
        folder = self.out / "steps" / f"step-{step:03d}"
        jobs = [self.job(proposals[i].spec, state, self.options.steps_per_proposal, mix_seed(self.options.seed,
                         step, i), folder / f"proposal-{i:02d}.safetensors") for i in todo]
        bar = None
        if self.progress and todo:
            from tqdm import tqdm

            bar = tqdm(total=len(proposals), initial=len(done), unit="proposal", desc=f"step {step}", leave=False)

        def record(k: int, result: dict[str, Any]) -> None:
            i = todo[k]
            entry = {"type": "evaluated", "step": step, "index": i, **proposals[i].to_dict(), **result}
            self.journal.append(entry)
            done[i] = entry
            if bar is not None:
                bar.update(1)

        try:
            self.evaluator.run(evaluate_candidate, jobs, on_result=record)
        finally:
            if bar is not None:
                bar.close()
        return [done[i] for i in range(len(proposals))]

    def commit_step(self, state: State, proposals: list[Proposal], results: list[dict[str, Any]]) -> State:
        step = state.step + 1
        chosen = choose(self.options.metric, results, state.accuracy, state.predicted_ms)
        p, r = proposals[chosen], results[chosen]
        seed_ms, ms = self.measure([self.seed_spec, p.spec])
        latency, base = latency_pair(r, state.predicted_ms)
        entry = {"type": "step", "step": step, "index": chosen, "site": p.site, "old_width": p.old_width,
                 "width": p.width, "predicted_ms": p.predicted_ms, "measured_ms": ms, "seed_measured_ms": seed_ms,
                 "measured_ratio": ms / seed_ms, "accuracy": r["accuracy"], "weights": r["weights"],
                 "sha256": r["sha256"], "score": score(self.options.metric, r["accuracy"], latency, state.accuracy,
                                                       base),
                 "proposals": len(proposals), "spec": p.spec.to_dict()}
        self.journal.append(entry)
        for other in results:  # only the choice's weights are needed from here on
            if other["weights"] != r["weights"]:
                Path(other["weights"]).unlink(missing_ok=True)
        self.log(f"step {step}: {p.site} {p.old_width} -> {p.width}, predicted {p.predicted_ms:.4f} ms, measured "
                 f"{ms:.4f} ms = {ms / seed_ms:.3f} x the seed's, holdout {r['accuracy']:.2f}% "
                 f"({len(proposals)} proposals)")
        return State(p.spec, r["weights"], r["sha256"], r["accuracy"], p.predicted_ms, ms, ms / seed_ms, step)

    def reached(self, state: State) -> bool:
        """Whether the current network meets the target, on its latency measured end to end."""
        if self.options.target_ratio is not None:
            return state.measured_ratio <= self.options.target_ratio
        return state.measured_ms <= self.options.target_ms  # type: ignore[operator]

    # -- the loop ----------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        done = self.records("done")
        if done:
            return done[-1]
        self.start()
        seed = self.records("seed")[0]
        # A table's entries each carry one runtime call's overhead, so its sums overstate a network (1.30 ms
        # predicted for a seed measured at 0.45 ms on a Zen 3) and so do its differences (2-11x there): with
        # measured proposals the table only picks the first width to try, with delta x the seed's measured
        # latency (mostly one step of 8), and the measurement walks on from there.
        reference = seed["measured_ms"] if self.options.proposal_latency == "measured" else seed["predicted_ms"]
        delta_ms = self.options.delta_ratio * reference
        state = self.state()
        reason = "max_steps"
        while state.step < self.options.max_steps:
            if state.step and self.reached(state):
                reason = "target"
                break
            proposals = self.propose(state, delta_ms)
            if not proposals:
                reason = "no_proposal"
                self.log(f"netadapt: no proposal cuts another {self.options.delta_ratio:g} x the seed's latency: "
                         f"stopping at "
                         f"{state.measured_ratio:.3f} x the seed's latency, short of the target")
                break
            results = self.evaluate(state, proposals)
            state = self.commit_step(state, proposals, results)
        else:
            if self.reached(state):
                reason = "target"
        steps = self.records("step")
        summary = {"type": "done", "reason": reason, "steps": state.step, "spec": state.spec.to_dict(),
                   "weights": state.weights, "sha256": state.sha256, "accuracy": state.accuracy,
                   "predicted_ms": state.predicted_ms, "measured_ms": state.measured_ms,
                   "measured_ratio": state.measured_ratio,
                   # the seed as measured beside the final network (the same minutes: drift cancels in the ratio)
                   "seed_measured_ms": steps[-1]["seed_measured_ms"] if steps else seed["measured_ms"],
                   "seed_accuracy": seed["accuracy"], "seed_predicted_ms": seed["predicted_ms"]}
        self.journal.append(summary)
        return summary


def final_model(summary: dict[str, Any]):
    """The adapted network of a finished run (its ``done`` record), weights verified."""
    return load_model(summary["weights"], summary["sha256"])


__all__ = ["JOURNAL", "METRICS", "PROPOSAL_LATENCY", "NetAdapt", "NetAdaptError", "NetAdaptOptions", "State",
           "TargetAlreadyMet", "choose", "default_measure", "final_model", "latency_pair", "score"]
