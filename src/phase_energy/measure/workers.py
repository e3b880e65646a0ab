"""Simulated jobs, analyses and figures run for the workflow by a few long-lived Python processes.

A simulated measurement takes some 50 ms; starting Python and importing pandas for each would take 20
times that. So the workflow runs simulated jobs inside its own process: with one core in its job thread,
with more in a pool of worker processes, one per core, that each import the package once and then run
one job after another (a thread would share the interpreter's lock with the workflow and the other
jobs). Each job still is one Snakemake job with its own outputs and log. A GPU job never comes here.
The analysis and figure jobs (``phase-energy analyse`` and ``figure``) run the same way, whatever the
backend: each would otherwise spend a second or two starting Python and importing pandas and matplotlib.

Worker protocol: one JSON line per job on the worker's stdin (a simulated job's config, point, out and
log; or a command's ``argv`` and log), one JSON line back on its stdout (``{"ok": true}`` or the error). A
worker's own stderr goes to a file in ``logs/``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from phase_energy.grid import GridPoint

WORKER_LOGS = Path("logs/workers")  # the default run's; a run with its own results folder passes its own


class WorkerError(RuntimeError):
    """A job failed in a worker, or the worker itself ended."""


class _Worker:
    def __init__(self, index: int, logs: Path = WORKER_LOGS):
        logs.mkdir(parents=True, exist_ok=True)
        self.stderr_path = logs / f"worker-{index}.log"
        self.stderr: IO[str] = open(self.stderr_path, "w")  # noqa: SIM115 (open as long as the worker)
        self.proc = subprocess.Popen([sys.executable, "-m", "phase_energy.measure.workers"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True, bufsize=1)

    def run(self, request: Mapping[str, Any]) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError) as e:
            line = ""
            cause: Exception | None = e
        else:
            cause = None
        if not line:
            raise WorkerError(f"the worker process running {_what(request)} ended (exit code "
                              f"{self.proc.poll()}); its messages: {self.stderr_path}") from cause
        reply = json.loads(line)
        if not reply.get("ok"):
            raise WorkerError(f"{reply.get('error')} (the job's log: {request['log']})")

    def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):  # a dead worker (BrokenPipeError): what it was sent cannot be flushed
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.stderr.close()


def _what(request: Mapping[str, Any]) -> str:
    """A request's job in a few words: the simulated point's folder, or the command."""
    if "argv" in request:
        return "phase-energy " + " ".join(request["argv"][:2])
    return GridPoint(**request["point"]).path


class WorkerPool:
    """Up to ``size`` worker processes, started when first needed; a job takes a free one and gives it back.

    Each worker's own output (anything it prints outside a job's log) goes to ``logs/worker-<i>.log``.
    """

    def __init__(self, size: int, logs: Path = WORKER_LOGS):
        self.size = size
        self.logs = logs
        self._free: queue.Queue[_Worker] = queue.Queue()
        self._started: list[_Worker] = []
        self._lock = threading.Lock()

    def _take(self) -> _Worker:
        with self._lock:
            if self._free.empty() and len(self._started) < self.size:
                worker = _Worker(len(self._started), self.logs)
                self._started.append(worker)
                return worker
        return self._free.get()

    def run(self, request: Mapping[str, Any]) -> None:
        """Run one job in a worker; raise WorkerError naming what failed."""
        worker = self._take()
        try:
            worker.run(request)
        except WorkerError:
            if worker.proc.poll() is not None:  # a dead worker is not given back; a new one starts if needed
                with self._lock:
                    self._started.remove(worker)
                worker.close()
                raise
            self._free.put(worker)
            raise
        self._free.put(worker)

    def close(self) -> None:
        """End every worker (at the end of the run)."""
        with self._lock:
            for w in self._started:
                w.close()
            self._started.clear()


_POOL: WorkerPool | None = None
_POOL_LOCK = threading.Lock()


def _pool(cores: int, logs: str | Path) -> WorkerPool:
    """The process's worker pool, started by the first job that needs it (``logs`` fixed then)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = WorkerPool(cores, Path(logs))
            atexit.register(_POOL.close)
        return _POOL


def run_command(argv: list[str], log: str | Path, cores: int, logs: str | Path = WORKER_LOGS) -> None:
    """``phase-energy ARGV`` (an analysis or figure job) for the workflow: in this thread or in a worker.

    With one core in this thread, with more in a worker process (two jobs drawing figures in threads of one
    process would share matplotlib's state). Raises when it fails, naming the job's log, which holds its
    records and any traceback.
    """
    if cores <= 1:
        from phase_energy.cli import run_in_process

        try:
            run_in_process(argv, log)
        except Exception as e:  # as a worker reports it
            raise WorkerError(f"{type(e).__name__}: {e} (the job's log: {log})") from e
        return
    _pool(cores, logs).run({"argv": [str(a) for a in argv], "log": str(log)})


def run_simulated(config: str | Path, point: GridPoint, out: str | Path, log: str | Path, cores: int,
                  logs: str | Path = WORKER_LOGS) -> None:
    """A simulated job for the workflow: in this thread with one core, in a worker process with more.

    ``logs``: the workers' own log folder (the run's logs folder's ``workers``), fixed by the first call.
    The point's folder is removed first, as a group removes a failed point's: the rule declares only
    ``status.json`` (written last), so Snakemake removes nothing else, and a table of an earlier, unfinished
    job must not stay behind.
    """
    shutil.rmtree(out, ignore_errors=True)
    if cores <= 1:
        from phase_energy.measure.job import run_job_in_process

        run_job_in_process(config, point, out, log)
        return
    _pool(cores, logs).run({"config": str(config), "point": asdict(point), "out": str(out), "log": str(log)})


def main() -> None:
    """A worker: run the jobs that arrive on stdin, one reply line each on stdout."""
    from phase_energy.cli import run_in_process
    from phase_energy.measure.job import run_job_in_process

    replies, sys.stdout = sys.stdout, sys.stderr  # stdout carries the replies only: anything printed goes aside
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if "argv" in req:
                run_in_process(req["argv"], req["log"])
            else:
                run_job_in_process(req["config"], GridPoint(**req["point"]), req["out"], req["log"])
            reply: dict[str, Any] = {"ok": True}
        except Exception as e:  # the job's log has the traceback; the workflow gets the message
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


if __name__ == "__main__":
    main()
