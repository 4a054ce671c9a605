"""`mnv3 search nas` killed with SIGKILL three times at random points and resumed: the journal loses no sample and
holds none twice, and with a fixed seed the trajectory (every sample's tokens, accuracy and reward, every
controller update) equals an uninterrupted run's. Real processes, real proxy training on a tiny data run; the
latency table is filled by the uninterrupted run and copied, so both runs predict from the same entries."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def command(data_run: str, table: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mobilenetv3", "search", "nas", "--space", "mobilenet_v3_small", "--table",
            str(table), "--target-ms", "0.5", "--samples", "10", "--batch", "2", "--steps-per-sample", "2",
            "--top-k", "2", "--data-run", data_run, "--out", str(out), "--backend", "serial", "--quiet", *extra]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}


def records(out: Path) -> list[dict]:
    lines = (out / "journal.jsonl").read_text().splitlines()[1:]
    return [json.loads(line) for line in lines]


def trajectory(out: Path) -> tuple[list, list]:
    rs = records(out)
    samples = sorted((r["index"], r["tokens"], r["spec_hash"], r["accuracy"], r["reward"]) for r in rs
                      if r["type"] == "sample")
    updates = [(r["batch"], r["rewards"], r.get("loss"), r.get("baseline")) for r in rs if r["type"] == "update"]
    return samples, updates


@pytest.mark.slow
def test_sigkill_three_times_and_resume_gives_the_uninterrupted_trajectory(data_run, tmp_path):
    table = tmp_path / "table.json"
    subprocess.run(command(data_run, table, tmp_path / "ref"), env=ENV, check=True, timeout=600)
    reference = trajectory(tmp_path / "ref")
    assert len(reference[0]) == 10 and len(reference[1]) == 5

    shutil.copyfile(table, tmp_path / "table-2.json")
    out, rng, kills = tmp_path / "killed", random.Random(7), 0
    while kills < 3:
        journal = out / "journal.jsonl"
        before = len(journal.read_text().splitlines()) if journal.exists() else 0
        resume = ["--resume"] if journal.exists() else []
        proc = subprocess.Popen(command(data_run, tmp_path / "table-2.json", out, *resume), env=ENV)
        wanted = before + rng.randint(1, 3)  # kill once the journal has grown by 1-3 lines, after a random pause
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if journal.exists() and len(journal.read_text().splitlines()) >= wanted:
                time.sleep(rng.uniform(0.0, 1.5))
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed: give it more samples"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    subprocess.run(command(data_run, tmp_path / "table-2.json", out, "--resume"), env=ENV, check=True, timeout=600)
    samples, updates = trajectory(out)
    indices = [s[0] for s in samples]
    assert indices == list(range(10)), f"lost or duplicated samples: {indices}"
    assert (samples, updates) == reference
    assert sum(r["type"] == "done" for r in records(out)) == 1
