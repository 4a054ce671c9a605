"""The peer worker: a subprocess answering JSON commands line by line, and :class:`PeerWorker`, which starts it.

The worker runs under the PEER environment's python (torch 2.15, torchvision, timm), not the core one, or under
this python with a oneDNN instruction-set cap (which holds for a whole process). So this module, and everything
imported on its way (``mobilenetv3``'s, ``mobilenetv3.bench``'s and ``mobilenetv3.bench.peers``' ``__init__``),
may import only the standard library, torch, numpy and :mod:`mobilenetv3.runtime.timing`; each command imports
what it prepares with (:mod:`.prepare`) when it comes.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from ...runtime.timing import CLOCKS, time_callable

# what the worker process runs; its path holds only a link to this package (see PeerWorker)
WORKER_COMMAND = "from mobilenetv3.bench.peers.worker import peer_worker; peer_worker()"


def peer_worker() -> None:
    """(Runs in the peer environment, or the core one for :func:`ours_prepare`.) Answer JSON commands on stdin,
    one per line, with one JSON line each on the real stdout: ``prepare`` (see :func:`.prepare.peer_prepare`),
    ``prepare_ours`` (:func:`.prepare.ours_prepare`), ``time`` (one model's path, with :func:`time_callable`),
    ``quit``."""
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything else printed goes to stderr
    runners: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for line in sys.stdin:
            cmd = json.loads(line)
            try:
                if cmd["cmd"] == "prepare":
                    from .prepare import peer_prepare  # torchvision and timm: the peer environment's

                    runners, info = peer_prepare(cmd["models"], cmd["resolution"], cmd["threads"], tmp,
                                                 onnx=cmd.get("onnx", True), int8=cmd.get("int8", False))
                    reply = {"ok": True, **info}
                elif cmd["cmd"] == "prepare_ours":
                    from .prepare import ours_prepare  # the core environment's (a capped worker)

                    runners, info = ours_prepare(cmd["models"], cmd["resolution"], cmd["threads"], cmd["paths"],
                                                 cmd.get("suffix", ""))
                    reply = {"ok": True, **info}
                elif cmd["cmd"] == "time":
                    stats = time_callable(runners[(cmd["model"], cmd["label"])], warmup=cmd["warmup"],
                                          min_runs=cmd["min_runs"], min_seconds=cmd["min_seconds"],
                                          timer=CLOCKS[cmd.get("clock", "wall")])
                    reply = {"ok": True, "median_ms": stats.median_ms, "p90_ms": stats.p90_ms}
                else:
                    reply = {"ok": True}
            except Exception as e:  # report, keep serving
                reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            out.write(json.dumps(reply) + "\n")
            out.flush()
            if cmd["cmd"] == "quit":
                break


class PeerWorker:
    """The peer worker: a subprocess of the peer environment's python running :func:`peer_worker`.

    The worker imports this package from a directory holding only a link to it, so nothing of the core
    environment (its torch) is on the worker's path. Its stderr goes to a log whose end is shown on failure.
    """

    def __init__(self, python: str, env: dict[str, str] | None = None) -> None:
        import subprocess

        self._tmp = tempfile.TemporaryDirectory()
        os.symlink(Path(__file__).resolve().parents[2], Path(self._tmp.name) / "mobilenetv3")
        self._log_path = Path(self._tmp.name) / "worker.log"
        self._log = open(self._log_path, "w")  # noqa: SIM115  (closed in close())
        self.python = python
        self.proc = subprocess.Popen(
            [python, "-c", WORKER_COMMAND], cwd=self._tmp.name,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
            env=dict(os.environ, **(env or {}), PYTHONPATH=self._tmp.name))

    def _log_tail(self, chars: int = 1500) -> str:
        try:
            return self._log_path.read_text()[-chars:].strip()
        except OSError:
            return ""

    def ask(self, **cmd: Any) -> dict:
        try:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            raise RuntimeError(f"the peer worker ({self.python}) exited with code {self.proc.wait()}:\n"
                               f"{self._log_tail()}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"peer worker ({self.python}): {reply.get('error')}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask(cmd="quit")
            except RuntimeError:
                pass
            try:
                self.proc.wait(timeout=30)
            except Exception:
                self.proc.kill()
        self._log.close()
        self._tmp.cleanup()

    def __enter__(self) -> PeerWorker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["WORKER_COMMAND", "PeerWorker", "peer_worker"]
