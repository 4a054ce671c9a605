"""Evaluating many search candidates in parallel: one interface, three backends.

NetAdapt and NAS score each candidate with a short fine-tune (seconds to a minute of CPU), hundreds of times. An
:class:`Evaluator` runs a picklable top-level function over a list of jobs and returns the results in job order,
calling ``on_result(index, result)`` in the calling process as each job finishes, so the caller can journal every
result the moment it exists and lose nothing to a kill.

- :class:`SerialEvaluator`: in-process, one job at a time (tests, debugging, a profiler).
- :class:`ProcessEvaluator`: a ``spawn`` process pool on this machine.
- :class:`RayEvaluator`: tasks on a Ray cluster, local or joined by address (the ``search`` extra).

Two kinds of failure are told apart. A worker process that dies (a segfault, SIGKILL, the OOM killer) is not the
job's fault: the job is run again, up to ``retries`` times. An exception raised by the function itself is a bug or
bad input and would fail again: it becomes an :class:`EvaluationError` at once, naming the job and carrying the
original traceback.

Every job runs under ``torch.set_num_threads(threads_per_worker)``, in every backend, so a job's result does not
depend on where it ran (the job seeds itself).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..extras import require

EVALUATORS = ("serial", "process", "ray")

OnResult = Callable[[int, Any], None] | None


class EvaluationError(RuntimeError):
    """A job failed: its function raised (``traceback`` holds the worker's traceback text) or its worker kept
    dying. ``index`` is the job's position in the list given to :meth:`Evaluator.run`."""

    def __init__(self, message: str, index: int, traceback_text: str = ""):
        super().__init__(message)
        self.index = index
        self.traceback = traceback_text


def _run_job(fn: Callable[[Any], Any], job: Any, threads: int) -> tuple[bool, Any]:
    """What a worker runs: ``fn(job)`` under ``threads`` intra-op threads. Returns (True, result), or (False, the
    traceback text) when ``fn`` raises (``sys.exit`` included), so the exception need not be picklable to reach the
    caller. Ctrl-C is not caught: it stops the run."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return True, fn(job)
    except (Exception, SystemExit):
        return False, traceback.format_exc()
    finally:
        torch.set_num_threads(before)


def _job_failed(index: int, text: str) -> EvaluationError:
    return EvaluationError(f"job {index} raised an exception (not retried: the same input would fail again):\n"
                           f"{text.rstrip()}", index, text)


def _check_counts(workers: int | None, threads_per_worker: int, retries: int) -> None:
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if threads_per_worker < 1:
        raise ValueError(f"threads_per_worker must be at least 1, got {threads_per_worker}")
    if retries < 0:
        raise ValueError(f"retries must be 0 or more, got {retries}")


class Evaluator(ABC):
    """Runs ``fn(job)`` for every job; a context manager whose exit releases the workers."""

    workers: int

    @abstractmethod
    def run(self, fn: Callable[[Any], Any], jobs: Sequence[Any], *, on_result: OnResult = None) -> list[Any]:
        """The results of ``fn`` over ``jobs``, in job order. ``on_result(index, result)`` is called in this process
        exactly once per job as it finishes (in completion order). ``fn`` must be a picklable top-level
        function. Raises :class:`EvaluationError` naming the job when one fails."""

    @abstractmethod
    def close(self) -> None:
        """Release the workers (idempotent)."""

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SerialEvaluator(Evaluator):
    """Every job in this process, one after another; the same results as the parallel backends."""

    def __init__(self, threads_per_worker: int = 1):
        _check_counts(1, threads_per_worker, 0)
        self.workers = 1
        self.threads_per_worker = threads_per_worker

    def close(self) -> None:
        """Nothing to release: the jobs ran in this process."""

    def run(self, fn: Callable[[Any], Any], jobs: Sequence[Any], *, on_result: OnResult = None) -> list[Any]:
        results = []
        for index, job in enumerate(jobs):
            ok, value = _run_job(fn, job, self.threads_per_worker)
            if not ok:
                raise _job_failed(index, value)
            results.append(value)
            if on_result is not None:
                on_result(index, value)
        return results


def _worker_start(started: Any) -> None:
    """Pool initializer: keep the queue on which each job announces itself before it runs."""
    global _STARTED
    _STARTED = started


_STARTED: Any = None
POLL_S = 0.5  # how often the parent empties the announcement queue while it waits


def _announced_job(fn: Callable[[Any], Any], job: Any, threads: int, index: int) -> tuple[bool, Any]:
    """:func:`_run_job`, announced first (synchronously, with this worker's pid), so that when a worker dies the
    parent knows which jobs were running rather than merely queued, and which processes to stop on an error."""
    _STARTED.put((index, os.getpid()))
    return _run_job(fn, job, threads)


class ProcessEvaluator(Evaluator):
    """A pool of ``workers`` spawned processes on this machine.

    When a worker dies the pool breaks and every unfinished future fails with it, so the jobs that had started are
    suspects and are charged one attempt each; the jobs merely queued are resubmitted free. Suspects then run one
    at a time with nothing beside them, so a later death is pinned on exactly one job, and an innocent job that
    happened to share the broken pool costs one extra run, not a failure. A job charged more than ``retries`` times
    is given up; the other jobs still run and are delivered, then an :class:`EvaluationError` names it.
    """

    def __init__(self, workers: int = 2, threads_per_worker: int = 1, retries: int = 2):
        _check_counts(workers, threads_per_worker, retries)
        self.workers = workers
        self.threads_per_worker = threads_per_worker
        self.retries = retries
        self._context = multiprocessing.get_context("spawn")
        self._pool: ProcessPoolExecutor | None = None

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._queue = self._context.SimpleQueue()
            self._pids: set[int] = set()
            self._pool = ProcessPoolExecutor(self.workers, mp_context=self._context, initializer=_worker_start,
                                             initargs=(self._queue,))
        return self._pool

    def _announced(self) -> set[int]:
        """Empty the announcement queue: the jobs that started since the last call."""
        started = set()
        while not self._queue.empty():
            index, pid = self._queue.get()
            started.add(index)
            self._pids.add(pid)
        return started

    def _drop_pool(self, stop_workers: bool = False) -> None:
        """Shut the pool down; with ``stop_workers`` (an error, Ctrl-C) its busy workers are terminated rather
        than waited for, since nobody will read what they are computing."""
        if self._pool is None:
            return
        if stop_workers:
            self._announced()
            for pid in self._pids:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None

    def close(self) -> None:
        self._drop_pool()

    def run(self, fn: Callable[[Any], Any], jobs: Sequence[Any], *, on_result: OnResult = None) -> list[Any]:
        jobs = list(jobs)
        results: list[Any] = [None] * len(jobs)
        pending = set(range(len(jobs)))
        charges = dict.fromkeys(pending, 0)
        given_up: list[int] = []
        ambiguous = False
        try:
            while pending:
                suspects = {i for i in pending if charges[i]}
                batch = sorted(pending - suspects) or [min(suspects, key=lambda i: (charges[i], i))]
                in_flight = self._run_batch(fn, jobs, batch, results, pending, on_result)
                for i in in_flight:
                    charges[i] += 1
                over = sorted(i for i in in_flight if charges[i] > self.retries)
                ambiguous |= len(over) > 1
                given_up += over
                pending -= set(over)
        except BaseException:
            self._drop_pool(stop_workers=True)
            raise
        if given_up:
            raise self._worker_died(sorted(given_up), charges, ambiguous)
        return results

    def _run_batch(self, fn: Callable[[Any], Any], jobs: list[Any], batch: list[int], results: list[Any],
                   pending: set[int], on_result: OnResult) -> set[int]:
        """Submit ``batch`` to the pool and collect it, delivering each result as it comes. Returns the jobs to
        charge with a worker's death: none when the pool held, else the unfinished jobs of the batch that had
        started."""
        pool = self._ensure_pool()
        self._announced()
        futures = {pool.submit(_announced_job, fn, jobs[i], self.threads_per_worker, i): i for i in batch}
        started: set[int] = set()
        broken = False
        waiting = set(futures)
        while waiting:
            done, waiting = wait(waiting, timeout=POLL_S, return_when=FIRST_COMPLETED)
            started |= self._announced()  # keep the pipe empty: a full one would block the workers' announcements
            for future in sorted(done, key=futures.__getitem__):
                index = futures[future]
                try:
                    ok, value = future.result()
                except BrokenProcessPool:
                    broken = True
                    continue
                except Exception as exc:  # fn, the job or the result failed to pickle: the job's fault, not a crash
                    text = "".join(traceback.format_exception(exc))
                    raise EvaluationError(f"job {index} could not be sent to its worker or its result back (is fn a "
                                          f"top-level function, are the job and result picklable?):\n{text.rstrip()}",
                                          index, text) from exc
                if not ok:
                    raise _job_failed(index, value)
                results[index] = value
                pending.discard(index)
                if on_result is not None:
                    on_result(index, value)
        if not broken:
            return set()
        started |= self._announced()
        self._drop_pool()  # the broken pool has already stopped its workers
        unfinished = set(batch) & pending
        # a job that died before announcing itself cannot be told apart: charge every unfinished one then
        return (started & unfinished) or unfinished

    def _worker_died(self, given_up: list[int], charges: dict[int, int], ambiguous: bool) -> EvaluationError:
        index = given_up[0]
        if ambiguous:
            message = (f"a worker process died while jobs {given_up} were running together and retries="
                       f"{self.retries} leaves no run to tell which one; raise retries to find out, or lower the "
                       "workers if memory is short")
        else:
            which = f"job {index}" if len(given_up) == 1 else f"jobs {given_up}"
            message = (f"{which}: its worker process died on each of {charges[index]} runs (a crash, SIGKILL or "
                       f"the out-of-memory killer; retries={self.retries}); run it alone with SerialEvaluator to "
                       "see where, or lower the workers if memory is short; every other job was delivered")
        return EvaluationError(message, index)


class RayEvaluator(Evaluator):
    """Ray tasks, on a local cluster started here (``address=None``) or on an existing one (``address``).

    Ray itself reruns a task whose worker dies (``max_retries``) and never reruns one whose function raised
    (``retry_exceptions=False``). Each task asks for ``threads_per_worker`` CPUs. ``workers`` caps the tasks in flight
    (a local cluster gets ``workers * threads_per_worker`` CPUs); None uses the whole cluster. Only a cluster started
    here is shut down by :meth:`close`.
    """

    def __init__(self, address: str | None = None, workers: int | None = None, threads_per_worker: int = 1,
                 retries: int = 2):
        _check_counts(workers, threads_per_worker, retries)
        ray = require("ray", "search", "evaluating search candidates on a Ray cluster")
        self._ray = ray
        self.threads_per_worker = threads_per_worker
        self.retries = retries
        self._started_ray = False
        if not ray.is_initialized():
            if address is None:
                cpus = None if workers is None else workers * threads_per_worker
                ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
            self._started_ray = True
        if workers is None:
            cpus = int(ray.cluster_resources().get("CPU", 1))
            workers = max(1, cpus // threads_per_worker)
        self.workers = workers
        self._task = ray.remote(num_cpus=threads_per_worker, max_retries=retries, retry_exceptions=False)(_run_job)

    def close(self) -> None:
        if self._started_ray and self._ray.is_initialized():
            self._ray.shutdown()
        self._started_ray = False

    def run(self, fn: Callable[[Any], Any], jobs: Sequence[Any], *, on_result: OnResult = None) -> list[Any]:
        ray = self._ray
        jobs = list(jobs)
        results: list[Any] = [None] * len(jobs)
        queue = list(range(len(jobs)))[::-1]
        in_flight: dict[Any, int] = {}
        fn_ref = ray.put(fn)
        try:
            while queue or in_flight:
                while queue and len(in_flight) < self.workers:
                    index = queue.pop()
                    in_flight[self._task.remote(fn_ref, jobs[index], self.threads_per_worker)] = index
                (ref,), _ = ray.wait(list(in_flight), num_returns=1)
                index = in_flight.pop(ref)
                ok, value = self._get(ref, index)
                if not ok:
                    raise _job_failed(index, value)
                results[index] = value
                if on_result is not None:
                    on_result(index, value)
        except BaseException:
            for ref in in_flight:
                ray.cancel(ref, force=True)
            raise
        return results

    def _get(self, ref: Any, index: int) -> tuple[bool, Any]:
        exceptions = self._ray.exceptions
        try:
            return self._ray.get(ref)
        except exceptions.RayTaskError as exc:  # raised before fn ran: unpickling the job, importing fn's module
            raise _job_failed(index, str(exc)) from exc
        except exceptions.RayError as exc:
            raise EvaluationError(f"job {index}: its Ray worker died and {self.retries} retries did not help "
                                  f"({type(exc).__name__}: {exc})", index) from exc


def make_evaluator(kind: str = "process", workers: int = 2, *, ray_address: str | None = None,
                   threads_per_worker: int = 1) -> Evaluator:
    """The evaluator ``kind`` names (``serial``, ``process``, ``ray``). A ``ray_address`` means Ray: it overrides
    the default ``process`` and contradicts ``serial``."""
    if kind not in EVALUATORS:
        raise ValueError(f"unknown evaluator {kind!r}; choose one of {', '.join(EVALUATORS)}")
    if ray_address is not None:
        if kind == "serial":
            raise ValueError(f"a Ray address ({ray_address!r}) was given with the serial evaluator; drop one")
        kind = "ray"
    if kind == "serial":
        return SerialEvaluator(threads_per_worker)
    if kind == "process":
        return ProcessEvaluator(workers, threads_per_worker)
    return RayEvaluator(ray_address, workers, threads_per_worker)


__all__ = ["EVALUATORS", "EvaluationError", "Evaluator", "ProcessEvaluator", "RayEvaluator", "SerialEvaluator",
           "make_evaluator"]
