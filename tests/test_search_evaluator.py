"""search.evaluator: the same results from every backend, one on_result call per job, a function's exception
reported with its job and traceback, and a dead worker retried (process pool) or given up on after the retries."""

import os
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

from mobilenetv3.extras import MissingExtraError
from mobilenetv3.search.evaluator import (
    EvaluationError,
    ProcessEvaluator,
    RayEvaluator,
    SerialEvaluator,
    make_evaluator,
)

SEEDS = [3, 1, 4, 1, 5]


def sgd_job(seed):
    """A seeded least-squares fit: random data, five SGD steps, the final loss."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(32, 6, generator=g), torch.randn(32, generator=g)
    w = torch.zeros(6, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        loss = ((x @ w - y) ** 2).mean()
        loss.backward()
        opt.step()
    return float(((x @ w - y) ** 2).mean().detach())


def threads_job(_):
    return torch.get_num_threads()


def failing_job(x):
    if x == 2:
        raise ValueError(f"bad input {x}")
    return x * 10


def _count_attempt(path: Path) -> int:
    with open(path, "a") as f:
        f.write("x")
    return path.stat().st_size


def kill_once_job(job):
    """Kills its own worker on its first run (the attempts file counts runs), returns ``value`` on the next."""
    attempts, value = job
    if attempts is not None and _count_attempt(Path(attempts)) == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return value


def always_kill_job(job):
    """Kills its own worker on every run when given an attempts file, else sleeps ``delay`` and returns ``value``."""
    attempts, value, delay = job
    if attempts is not None:
        _count_attempt(Path(attempts))
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(delay)
    return value


def expected():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [sgd_job(s) for s in SEEDS]
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pool():
    with ProcessEvaluator(workers=2, threads_per_worker=1, retries=2) as evaluator:
        yield evaluator


def run_recording(evaluator, fn, jobs):
    seen = []
    results = evaluator.run(fn, jobs, on_result=lambda i, r: seen.append((i, r)))
    return results, seen


def test_sgd_job_is_seeded_and_differs_between_seeds():
    values = expected()
    assert values[1] == values[3]  # the same seed twice
    assert len(set(values)) == 4
    assert all(v > 0 for v in values)


def test_serial_matches_a_direct_call_and_reports_each_job_once():
    results, seen = run_recording(SerialEvaluator(), sgd_job, SEEDS)
    assert results == expected()
    assert seen == list(enumerate(expected()))


def test_serial_sets_the_threads_for_the_job_and_restores_them():
    before = torch.get_num_threads()
    assert SerialEvaluator(threads_per_worker=2).run(threads_job, [0]) == [2]
    assert torch.get_num_threads() == before


def test_process_pool_gives_the_serial_results_in_job_order(pool):
    results, seen = run_recording(pool, sgd_job, SEEDS)
    assert results == expected()
    assert sorted(seen) == list(enumerate(expected()))
    assert pool.run(threads_job, [0, 1]) == [1, 1]


def test_a_raising_job_is_an_error_naming_it_with_the_traceback():
    with pytest.raises(EvaluationError, match="job 2 raised") as info:
        SerialEvaluator().run(failing_job, [0, 1, 2, 3])
    assert info.value.index == 2
    assert "ValueError: bad input 2" in info.value.traceback


def test_process_pool_reports_a_raising_job_without_retrying_and_keeps_delivered_results(pool, tmp_path):
    seen = []
    with pytest.raises(EvaluationError, match="job 2 raised") as info:
        pool.run(failing_job, [0, 1, 2], on_result=lambda i, r: seen.append((i, r)))
    assert info.value.index == 2
    assert "in failing_job" in info.value.traceback and "ValueError: bad input 2" in info.value.traceback
    assert set(seen) <= {(0, 0), (1, 10)}
    # the evaluator is usable again afterwards
    assert pool.run(failing_job, [4, 5]) == [40, 50]


def test_process_pool_reruns_a_job_whose_worker_was_killed(pool, tmp_path):
    attempts = tmp_path / "attempts"
    jobs = [(None, 0), (str(attempts), 1), (None, 2), (None, 3)]
    results, seen = run_recording(pool, kill_once_job, jobs)
    assert results == [0, 1, 2, 3]
    assert sorted(seen) == [(0, 0), (1, 1), (2, 2), (3, 3)]  # each delivered exactly once
    assert attempts.read_text() == "xx"  # killed once, then ran to the end


def test_process_pool_gives_up_on_a_job_that_always_kills_its_worker_after_the_others(tmp_path):
    attempts = tmp_path / "attempts"
    # job 0 is likely still running when job 1 kills the pool: a suspect, rerun alone, then delivered
    jobs = [(None, 0, 1.0), (str(attempts), 1, 0), (None, 2, 0), (None, 3, 0)]
    seen = []
    with ProcessEvaluator(workers=2, retries=1) as evaluator:
        with pytest.raises(EvaluationError, match="job 1: its worker process died on each of 2 runs") as info:
            evaluator.run(always_kill_job, jobs, on_result=lambda i, r: seen.append((i, r)))
    assert info.value.index == 1
    assert attempts.read_text() == "xx"  # the first run and one retry
    assert sorted(seen) == [(0, 0), (2, 2), (3, 3)]  # every other job delivered, once


def test_make_evaluator_kinds_and_errors():
    assert isinstance(make_evaluator("serial"), SerialEvaluator)
    with make_evaluator("process", 3, threads_per_worker=2) as evaluator:
        assert isinstance(evaluator, ProcessEvaluator)
        assert (evaluator.workers, evaluator.threads_per_worker) == (3, 2)
    with pytest.raises(ValueError, match="unknown evaluator 'threads'; choose one of serial, process, ray"):
        make_evaluator("threads")
    with pytest.raises(ValueError, match="serial evaluator"):
        make_evaluator("serial", ray_address="auto")
    with pytest.raises(ValueError, match="retries must be 0 or more, got -1"):
        ProcessEvaluator(retries=-1)


def test_ray_missing_is_an_error_naming_the_extra(monkeypatch):
    import mobilenetv3.search.evaluator as evaluator

    def missing(module, extra, purpose):
        raise MissingExtraError(f"{module} is not installed; install it with: pip install 'mobilenetv3[{extra}]'")

    monkeypatch.setattr(evaluator, "require", missing)
    with pytest.raises(MissingExtraError, match=r"mobilenetv3\[search\]"):
        make_evaluator("ray")


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'mobilenetv3[search]')")
    # Ray's workers do not see pytest's sys.path: send this module's jobs by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_gives_the_serial_results_and_reports_each_job_once(ray_cluster):
    evaluator = make_evaluator("ray", 2)
    assert isinstance(evaluator, RayEvaluator) and evaluator.workers == 2
    results, seen = run_recording(evaluator, sgd_job, SEEDS)
    assert results == expected()
    assert sorted(seen) == list(enumerate(expected()))
    assert evaluator.run(threads_job, [0]) == [1]
    evaluator.close()
    assert ray_cluster.is_initialized()  # it joined the fixture's cluster, so it leaves it running


def test_ray_reports_a_raising_job_and_reruns_a_killed_worker(ray_cluster, tmp_path):
    with RayEvaluator(workers=2, retries=1) as evaluator:
        with pytest.raises(EvaluationError, match="job 2 raised") as info:
            evaluator.run(failing_job, [0, 1, 2])
        assert "ValueError: bad input 2" in info.value.traceback
        attempts = tmp_path / "attempts"
        assert evaluator.run(kill_once_job, [(None, 0), (str(attempts), 1)]) == [0, 1]
        assert attempts.read_text() == "xx"
