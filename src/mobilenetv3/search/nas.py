"""Platform-aware NAS as section 4.1 of the paper runs it: a controller samples, a proxy task scores, a reward learns.

Per batch of ``batch`` samples:

1. draw: the controller (:mod:`.controller`, an LSTM policy) samples ``batch`` architectures of the space
   (:mod:`.space`); the random-search baseline draws uniformly (``space.sample_choice`` with a seeded
   ``random.Random``) for the same budget;
2. latency: each spec's latency from the latency model (a :class:`~.growing_table.GrowingTable`, or anything with
   ``predict(spec) -> ms``), all of a batch before any training starts (timing needs a quiet machine);
3. accuracy: each new spec trained from scratch for ``steps_per_sample`` steps on the proxy task and scored on its
   holdout (:func:`~.candidate.evaluate_candidate`, spread by an evaluator: processes or Ray). A spec is trained
   once: a spec sampled again reuses its accuracy (keyed by :func:`~.candidate.spec_hash`; journalled as cached);
4. reward: MnasNet's ``ACC x (LAT / TAR) ** w`` (:mod:`.reward`; accuracy as a fraction), then one controller
   update on the batch.

At the end the top-k distinct specs by reward are measured end to end (``measure``, default interleaved rounds on
the table's runtime), written to ``top_k.json`` and summarised: the best spec, the mean and standard deviation of the
reward over the last quarter of samples, and whether any sample met the target (``target_met``, on predicted
latency).

Proxy training uses the sampled spec with the proxy data's input channels, classes and resolution; latency is
predicted for the spec as the space defines it (the deployment network). The journal (:mod:`.journal`) gets one
record per sample as its result arrives and one per controller update. Resume replays it: the controller is rebuilt
from its seed and each journalled batch is drawn again (the tokens must equal the journal's, or the run is refused)
and learned from with the journalled rewards, so the controller and its generator stand exactly where they stood
at the start of the unfinished batch; the samples of that batch already journalled are not trained again.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..spec import ArchSpec
from ..train.commit import atomic_write_bytes
from ..train.evaluate import read_run_config
from ..train.sampler import mix_seed
from .candidate import evaluate_candidate, spec_hash
from .controller import ALGORITHMS, Controller, choice_to_tokens
from .evaluator import Evaluator, SerialEvaluator
from .journal import Journal
from .proxy import ProxyTask
from .reward import default_w, reward
from .space import SearchSpace

JOURNAL = "journal.jsonl"
TOP_K = "top_k.json"
STRATEGIES = ("controller", "random")
BN_BATCHES = 8  # training batches that re-estimate a sample's BatchNorm statistics before it is scored
PROXY_SCHEDULE, PROXY_WARMUP = "cosine", 0.1  # the proxy's learning rate: 10% of the steps warm-up, cosine to 0
MeasureFn = Callable[[Sequence[ArchSpec]], list[float]]


class NASError(ValueError):
    """Options, inputs or a journal the NAS loop cannot run with; the message says which and why."""


@dataclass(frozen=True)
class NASOptions:
    """``target_ms``: TAR of the reward; ``w``: its latency weight (None: the space's preset, -0.07 Large, -0.15
    Small); ``hard``: MnasNet's hard constraint; ``steps_per_sample``: proxy training steps from scratch;
    ``strategy``: ``controller`` or ``random`` (the baseline); ``algorithm``, ``lr``, ``entropy_weight``,
    ``hidden``, ``baseline_decay``: the controller's; ``top_k`` specs are measured end to end at the end, each in
    ``measure_rounds`` interleaved rounds."""

    target_ms: float
    samples: int = 100
    batch: int = 4
    w: float | None = None
    hard: bool = False
    steps_per_sample: int = 60
    seed: int = 0
    algorithm: str = "reinforce"
    strategy: str = "controller"
    top_k: int = 5
    measure_rounds: int = 10
    lr: float = 0.01
    entropy_weight: float = 1e-3
    hidden: int = 64
    baseline_decay: float = 0.95

    def __post_init__(self) -> None:
        if not self.target_ms > 0:
            raise NASError(f"the target latency must be a positive number of ms, got {self.target_ms}")
        if self.samples < 1 or self.batch < 1 or self.top_k < 1 or self.steps_per_sample < 0:
            raise NASError(f"samples ({self.samples}), batch ({self.batch}) and top_k ({self.top_k}) must be >= 1, "
                           f"steps_per_sample ({self.steps_per_sample}) >= 0")
        if self.w is not None and self.w > 0:
            raise NASError(f"the latency weight w must be <= 0 (MnasNet -0.07, V3-Small -0.15), got {self.w}")
        if self.strategy not in STRATEGIES:
            raise NASError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.algorithm not in ALGORITHMS:
            raise NASError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}")
        if self.measure_rounds < 2:
            raise NASError(f"measure_rounds must be >= 2, got {self.measure_rounds}")


def task_from_run(run_dir: str | os.PathLike, **changes: Any) -> tuple[ProxyTask, int]:
    """The proxy task of a training run (its data, preprocessing, holdout and BatchNorm momentum; ``changes``
    override fields) and its number of classes. The learning rate defaults to the run's own (its recipe's peak):
    samples train from scratch, not from trained weights, and for the same reason a run trained without
    ``--holdout`` serves too (the images held out now are left out of every sample's training). BatchNorm's
    statistics are re-estimated on :data:`BN_BATCHES` training batches before each sample is scored. The learning
    rate follows :data:`PROXY_SCHEDULE` (a cosine decay after a :data:`PROXY_WARMUP` warm-up): with 3 seeds each, it
    ranked V3-Small 0.35 < 0.8 < NetAdapt < 1.0 as full training does, a constant rate did not (docs/search.md)."""
    spec_file = Path(run_dir) / "spec.json"
    if not spec_file.is_file():
        raise NASError(f"{run_dir} has no spec.json: is it a training run directory?")
    lr = read_run_config(run_dir)["train"].get("lr")
    if lr and "lr" not in changes:
        changes["lr"] = float(lr)
    changes.setdefault("bn_batches", BN_BATCHES)
    changes.setdefault("schedule", PROXY_SCHEDULE)
    if changes["schedule"] == "cosine":
        changes.setdefault("warmup", PROXY_WARMUP)
    return ProxyTask.from_run(run_dir, **changes), ArchSpec.load(spec_file).num_classes


def proxy_spec(spec: ArchSpec, task: ProxyTask, num_classes: int | None) -> ArchSpec:
    """``spec`` as the proxy task trains it: the data's input channels, resolution and (when given) classes, and
    the task's BatchNorm momentum (the seed run's, when it recorded one)."""
    changes: dict[str, Any] = {"in_channels": task.channels, "resolution": task.resolution}
    if task.bn_momentum is not None:
        changes["bn_momentum"] = task.bn_momentum
    if num_classes is not None:
        changes["num_classes"] = num_classes
    return spec.replace(**changes)


def default_measure(table: Any, rounds: int) -> MeasureFn:
    """End-to-end latency of specs on the table's runtime (interleaved rounds, :mod:`.table_check`)."""
    from .table_check import measure_interleaved

    def measure(specs: Sequence[ArchSpec]) -> list[float]:
        return measure_interleaved(table.table, specs, rounds=rounds, min_seconds=0.2, progress=False)[0]

    return measure


class _ControllerStrategy:
    def __init__(self, space: SearchSpace, o: NASOptions) -> None:
        self.controller = Controller(space, hidden=o.hidden, seed=o.seed, lr=o.lr, entropy_weight=o.entropy_weight,
                                     baseline_decay=o.baseline_decay, algorithm=o.algorithm)

    def draw(self, n: int) -> list[tuple[tuple[int, ...], tuple, float | None]]:
        return [(s.tokens, s.choice, s.log_prob) for s in self.controller.sample_batch(n)]

    def learn(self, tokens: list[tuple[int, ...]], rewards: list[float]) -> dict[str, Any]:
        stats = self.controller.update(tokens, rewards)
        return {k: stats[k] for k in ("loss", "baseline", "entropy")}


class _RandomStrategy:
    def __init__(self, space: SearchSpace, o: NASOptions) -> None:
        self.space = space
        self.rng = random.Random(o.seed)

    def draw(self, n: int) -> list[tuple[tuple[int, ...], tuple, float | None]]:
        choices = [self.space.sample_choice(self.rng) for _ in range(n)]
        return [(choice_to_tokens(self.space, c), c, None) for c in choices]

    def learn(self, tokens: list[tuple[int, ...]], rewards: list[float]) -> dict[str, Any]:
        return {}


class NAS:
    """One search in ``out`` (see the module doc). ``evaluate`` replaces :func:`evaluate_candidate` (a picklable
    top-level function of one job; tests), ``measure`` the end-to-end timing of the top-k."""

    def __init__(self, space: SearchSpace, table: Any, task: ProxyTask, out: str | os.PathLike, options: NASOptions,
                 *, num_classes: int | None = None, evaluator: Evaluator | None = None, resume: bool = False,
                 progress: bool = True, log: Callable[[str], None] | None = None, measure: MeasureFn | None = None,
                 evaluate: Callable[[dict[str, Any]], dict[str, Any]] = evaluate_candidate) -> None:
        self.space, self.table, self.task, self.options = space, table, task, options
        self.num_classes = num_classes
        self.out = Path(out)
        self.evaluator = evaluator or SerialEvaluator()
        self.progress = progress
        self.log = log or (lambda m: print(m, file=sys.stderr))
        self.evaluate_fn = evaluate
        try:
            self.w = options.w if options.w is not None else default_w(space.name)
        except ValueError as exc:
            raise NASError(str(exc)) from None
        resolution = getattr(table, "resolution", None)
        if resolution is not None and resolution != space.seed.resolution:
            raise NASError(f"the latency table is for {resolution} px, space {space.name!r} for "
                           f"{space.seed.resolution} px: use a table of the space's resolution")
        if measure is None and not hasattr(table, "table"):
            raise NASError("the latency model has no table file to measure the top-k on: give measure=")
        self.measure = measure or default_measure(table, options.measure_rounds)
        path = self.out / JOURNAL
        if path.exists() and not resume:
            raise NASError(f"{self.out} holds a NAS journal: add --resume to continue it, or choose another --out")
        self.out.mkdir(parents=True, exist_ok=True)
        inner = getattr(table, "table", None)
        header = {"kind": "nas", "format": 1,
                  "space": {"name": space.name, "seed": spec_hash(space.seed), "stages": space.stages,
                            "choices": asdict(space.choices)},
                  "options": asdict(options), "w": self.w, "task": task.to_dict(), "num_classes": num_classes,
                  "latency": {"runtime": getattr(table, "runtime", None), "threads": getattr(table, "threads", None),
                              "resolution": resolution,
                              "cpu": inner.header.get("cpu") if inner is not None else None}}
        self.journal = Journal(path, header, identity=tuple(header))

    # -- journal ---------------------------------------------------------------------------------------
    def records(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        return [r for r in self.journal.records
                if r.get("type") == kind and all(r.get(k) == v for k, v in match.items())]

    def samples(self) -> list[dict[str, Any]]:
        """Every journalled sample, by index."""
        return sorted(self.records("sample"), key=lambda r: r["index"])

    # -- one batch -------------------------------------------------------------------------------------
    def job(self, spec: ArchSpec, digest: str) -> dict[str, Any]:
        """Train ``spec`` from scratch; the seed depends on the spec, not on when it was drawn."""
        return {"spec": proxy_spec(spec, self.task, self.num_classes).to_dict(), "task": self.task.to_dict(),
                "steps": self.options.steps_per_sample, "seed": mix_seed(self.options.seed, int(digest, 16)),
                "source": None, "out": None}

    def evaluate_batch(self, batch: int, indices: list[int], drawn: list[tuple], bar: Any) -> dict[int, dict]:
        done = {r["index"]: r for r in self.records("sample", batch=batch)}
        todo = [i for i in indices if i not in done]
        if not todo:
            return done
        specs = {i: self.space.decode(drawn[i - indices[0]][1]) for i in todo}
        digests = {i: spec_hash(specs[i]) for i in todo}
        latency = {i: float(self.table.predict(specs[i])) for i in todo}  # all timing before any training
        cache = {r["spec_hash"]: r["accuracy"] for r in self.records("sample")}
        o = self.options

        def record(i: int, accuracy: float, cached: bool, seconds: float | None = None) -> None:
            tokens, choice, log_prob = drawn[i - indices[0]]
            entry = {"type": "sample", "index": i, "batch": batch, "tokens": list(tokens),
                     "choice": [list(c) for c in choice], "spec_hash": digests[i], "predicted_ms": latency[i],
                     "accuracy": accuracy, "reward": reward(accuracy / 100, latency[i], o.target_ms, self.w,
                                                            hard=o.hard),
                     "cached": cached, "log_prob": log_prob, "spec": specs[i].to_dict()}
            if seconds is not None:
                entry["seconds"] = seconds
            self.journal.append(entry)
            done[i] = entry
            if bar is not None:
                bar.update(1)

        groups: dict[str, list[int]] = {}
        for i in todo:
            groups.setdefault(digests[i], []).append(i)
        jobs, job_digests = [], []
        for digest, members in groups.items():
            if digest in cache:
                for i in members:
                    record(i, cache[digest], True)
            else:
                jobs.append(self.job(specs[members[0]], digest))
                job_digests.append(digest)

        def on_result(k: int, result: dict[str, Any]) -> None:
            members = groups[job_digests[k]]
            for n, i in enumerate(members):
                record(i, float(result["accuracy"]), n > 0, result.get("seconds") if n == 0 else None)

        if jobs:
            self.evaluator.run(self.evaluate_fn, jobs, on_result=on_result)
        return done

    # -- the loop ---------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        finished = self.records("done")
        if finished:
            return finished[-1]
        o = self.options
        strategy = _ControllerStrategy(self.space, o) if o.strategy == "controller" else _RandomStrategy(self.space, o)
        journalled = len(self.records("sample"))
        if journalled:
            self.log(f"nas: resuming after {journalled} journalled sample(s)")
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=o.samples, initial=journalled, unit="sample", desc=f"nas ({o.strategy})")
        batches = range(0, o.samples, o.batch)
        try:
            for b, start in enumerate(batches):
                indices = list(range(start, min(start + o.batch, o.samples)))
                drawn = strategy.draw(len(indices))
                self._check_replay(b, indices, drawn)
                tokens = [d[0] for d in drawn]
                update = self.records("update", batch=b)
                if update:
                    strategy.learn(tokens, update[0]["rewards"])
                    continue
                done = self.evaluate_batch(b, indices, drawn, bar)
                rewards = [done[i]["reward"] for i in indices]
                stats = strategy.learn(tokens, rewards)
                self.journal.append({"type": "update", "batch": b, "indices": indices, "rewards": rewards, **stats})
                best = max(r["reward"] for r in self.records("sample"))
                self.log(f"nas: batch {b + 1}/{len(batches)}: mean reward {statistics.fmean(rewards):.4f}, best so "
                         f"far {best:.4f}" + (f", baseline {stats['baseline']:.4f}" if "baseline" in stats else ""))
        finally:
            if bar is not None:
                bar.close()
        return self.finish()

    def _check_replay(self, batch: int, indices: list[int], drawn: list[tuple]) -> None:
        for r in self.records("sample", batch=batch):
            tokens = list(drawn[r["index"] - indices[0]][0])
            if r["tokens"] != tokens:
                raise NASError(f"{self.journal.path}: sample {r['index']} was journalled as tokens {r['tokens']}, the "
                               f"replay draws {tokens}: the {self.options.strategy} cannot be restored exactly here "
                               "(another torch version or thread count?); start a new --out")

    # -- the end --------------------------------------------------------------------------------------
    def top_k(self) -> list[dict[str, Any]]:
        """The ``top_k`` distinct specs (first sample of each) by reward, then lower latency, then earlier."""
        first: dict[str, dict[str, Any]] = {}
        for r in self.samples():
            first.setdefault(r["spec_hash"], r)
        ranked = sorted(first.values(), key=lambda r: (-r["reward"], r["predicted_ms"], r["index"]))
        return ranked[: self.options.top_k]

    def finish(self) -> dict[str, Any]:
        o = self.options
        samples = self.samples()
        top = self.top_k()
        digests = [r["spec_hash"] for r in top]
        measured = self.records("measured")
        if measured and measured[-1]["spec_hashes"] == digests:
            ms = measured[-1]["measured_ms"]
        else:
            self.log(f"nas: measuring the top {len(top)} spec(s) end to end")
            ms = [float(x) for x in self.measure([ArchSpec.from_dict(r["spec"]) for r in top])]
            self.journal.append({"type": "measured", "spec_hashes": digests, "measured_ms": ms})
        rows = [{"rank": k + 1, "index": r["index"], "spec_hash": r["spec_hash"], "accuracy": r["accuracy"],
                 "predicted_ms": r["predicted_ms"], "measured_ms": m, "reward": r["reward"],
                 "measured_reward": reward(r["accuracy"] / 100, m, o.target_ms, self.w, hard=o.hard),
                 "choice": r["choice"], "spec": r["spec"]} for k, (r, m) in enumerate(zip(top, ms, strict=True))]
        atomic_write_bytes(self.out / TOP_K, (json.dumps(rows, indent=2) + "\n").encode())
        last = [r["reward"] for r in samples[-max(1, len(samples) // 4):]]
        within = sum(r["predicted_ms"] <= o.target_ms for r in samples)
        summary = {"type": "done", "strategy": o.strategy, "algorithm": o.algorithm if o.strategy == "controller"
                   else None, "samples": len(samples), "trained": sum(not r["cached"] for r in samples),
                   "target_ms": o.target_ms, "w": self.w, "hard": o.hard, "target_met": within > 0,
                   "within_target": within, "best": rows[0], "top": rows,
                   "last_quarter": {"count": len(last), "mean_reward": statistics.fmean(last),
                                    "std_reward": statistics.pstdev(last)},
                   "top_k": TOP_K}  # relative to the run directory: the journal does not depend on where it lies
        if not within:
            self.log(f"nas: no sample met the target of {o.target_ms} ms (predicted latency)"
                     + ("; under the hard constraint every reward was cut by target / latency" if o.hard else ""))
        self.journal.append(summary)
        return summary


__all__ = ["BN_BATCHES", "JOURNAL", "NAS", "NASError", "NASOptions", "PROXY_SCHEDULE", "PROXY_WARMUP",
           "STRATEGIES", "TOP_K", "default_measure", "proxy_spec", "task_from_run"]
