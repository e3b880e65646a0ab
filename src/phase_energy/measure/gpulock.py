"""One measurement job per GPU at a time, whatever the command line: an exclusive lock per host and GPU.

Snakemake keeps GPU jobs apart only through its ``gpu`` resource, and a ``--resources`` given on the
command line (``--resources mem_mb=100000``) replaces the profile's ``gpu=1``: two measurement jobs then
share a card and each measures the other's energy. So every measurement or CLEAR job on a real GPU holds
:class:`GPULock` for its whole duration (:func:`phase_energy.measure.backend.open_backend` takes it); the
simulator takes none.

The lock is ``fcntl.flock`` on ``<host>--<GPU UUID>.gpu.lock`` in the state directory
(``PHASE_ENERGY_STATE_DIR``, default ``~/.cache/phase-energy``). The kernel releases it when its holder
exits, however it ends (SIGKILL included), so there are no stale locks; the file itself stays and is never
deleted (deleting a locked file would let two jobs lock two different files). Keying by host keeps nodes
that share a home directory apart; keying by UUID follows the card whatever its index. The holder writes
who it is (host, pid, job, since) into the file, so that a job that finds the GPU busy can name it.

Wait policy: a job that finds the GPU busy waits up to ``PHASE_ENERGY_GPU_LOCK_WAIT_S`` seconds (default
0: it refuses at once, since two jobs on one GPU mean a wrong ``--resources``), saying so in the log every
30 s, then fails with :class:`GPUBusy`, naming the holder and what to do.

This module also holds the host and process identity that the restore journal of
:mod:`phase_energy.measure.levers` records: :func:`this_host`, :func:`process_start` and :func:`process_alive`
(a pid together with its start tick and boot id, so that a reused pid is not taken for its first owner).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from phase_energy.measure.nvml import GPU

log = logging.getLogger(__name__)

WAIT_ENV = "PHASE_ENERGY_GPU_LOCK_WAIT_S"
DEFAULT_WAIT_S = 0.0
LOG_EVERY_S = 30.0


class GPULockError(RuntimeError):
    """A lock file could not be used; the message names it and what to do."""


class GPUBusy(GPULockError):
    """Another job holds the GPU; the message names it and what to do."""


# ---------------------------------------------------------------------- identity of hosts and processes
def this_host() -> str:
    """The host name of this machine, as journals and locks record it."""
    return socket.gethostname() or "unknown-host"


def safe_name(text: str) -> str:
    """``text`` reduced to characters that are safe in a file name (others become ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text) or "_"


def gpu_key(uuid: str, host: str | None = None) -> str:
    """File-name stem of one GPU of one host: ``<host>--<uuid>``, sanitised."""
    return f"{safe_name(host or this_host())}--{safe_name(uuid)}"


def state_dir() -> Path:
    """Where restore journals and GPU locks live; PHASE_ENERGY_STATE_DIR overrides."""
    return Path(os.environ.get("PHASE_ENERGY_STATE_DIR", Path.home() / ".cache" / "phase-energy"))


def utc_now() -> str:
    """The time now, ISO 8601 in UTC (for the records)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _proc_available() -> bool:
    return os.path.exists("/proc/self/stat")


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks after boot) of a process, from /proc/<pid>/stat; None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    return rest[0], int(rest[19])  # fields 3 (state) and 22 (starttime)


def process_start(pid: int) -> str | None:
    """Identity of a running process's start: ``<boot id>/<start tick>``; None if unknown (no /proc, gone)."""
    stat = _proc_stat(pid)
    return None if stat is None else f"{_boot_id()}/{stat[1]}"


def process_alive(pid: int, start: str | None) -> bool:
    """Whether process ``pid`` of this host still runs and is the one that started at ``start``.

    A pid that was reused by another process (other start tick, or another boot) is not alive in this
    sense, nor is a zombie. Without /proc (or without a recorded start) only the pid is checked.
    """
    if pid <= 0:
        return False
    if _proc_available():
        stat = _proc_stat(pid)
        if stat is None or stat[0] in ("Z", "X"):
            return False
        return start is None or start == f"{_boot_id()}/{stat[1]}"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def flocked(path: Path, timeout_s: float = 30.0) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if missing) for a short critical section."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise GPULockError(f"cannot open the lock file {path} ({e}); make its directory writable or set "
                           "PHASE_ENERGY_STATE_DIR to a writable local directory") from e
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise GPULockError(
                        f"the lock file {path} stayed locked for {timeout_s:.0f} s by another process of this "
                        "host (see: fuser -v FILE); wait for it to end, or stop it, and retry") from None
                time.sleep(0.02)
            except OSError as e:
                raise GPULockError(f"cannot lock {path} ({e}): the file system does not support locks; set "
                                   "PHASE_ENERGY_STATE_DIR to a local directory") from e
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


# ---------------------------------------------------------------------- the per-GPU job lock
def lock_wait_s() -> float:
    """How long a job waits for a busy GPU: PHASE_ENERGY_GPU_LOCK_WAIT_S seconds, default 0 (refuse)."""
    raw = os.environ.get(WAIT_ENV, "").strip()
    if not raw:
        return DEFAULT_WAIT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= 0:  # also rejects nan
        from phase_energy.config import ConfigError

        raise ConfigError(f"{WAIT_ENV}={raw!r} is not accepted: give the seconds a measurement job waits for a "
                          "busy GPU, a number >= 0 (0 refuses at once)")
    return value


class GPULock:
    """Exclusive lock of one GPU of this host for one measurement job (a context manager).

    >>> with GPULock(uuid, gpu_index=0, job="results/traces/...") as lock:  # doctest: +SKIP
    ...     measure(...)
    """

    def __init__(self, uuid: str, gpu_index: int | None = None, job: str = "", directory: Path | None = None,
                 wait_s: float | None = None):
        self.uuid = uuid
        self.gpu_index = gpu_index
        self.job = job
        self.host = this_host()
        self.path = (directory or state_dir()) / f"{gpu_key(uuid, self.host)}.gpu.lock"
        self.wait_s = wait_s
        self._fd: int | None = None

    def _gpu(self) -> str:
        return f"GPU {self.gpu_index} ({self.uuid})" if self.gpu_index is not None else f"GPU {self.uuid}"

    def holder(self) -> dict[str, Any] | None:
        """Who holds the lock, as its holder wrote it (None if unknown)."""
        try:
            data = json.loads(self.path.read_text() or "null")
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _holder_text(self) -> str:
        h = self.holder()
        if not h:
            return "a job that is just starting (it has not written its name yet)"
        return f"pid {h.get('pid')} (job {h.get('job') or 'unnamed'}, since {h.get('since')})"

    def _busy(self, waited_s: float) -> GPUBusy:
        waited = f" and still was after waiting {waited_s:.0f} s" if waited_s > 0 else ""
        return GPUBusy(
            f"{self._gpu()} on host {self.host} is in use by another measurement job{waited}: "
            f"{self._holder_text()}; lock file {self.path}. This job was not started: one measurement job per "
            "GPU, or each measures the other's energy. Give Snakemake the gpu resource (--resources gpu=1, and "
            "keep gpu=1 when you override --resources, e.g. --resources gpu=1 mem_mb=100000), wait for that job "
            f"to end, or set {WAIT_ENV}=<seconds> to let jobs wait for the GPU")

    def acquire(self) -> GPULock:
        """Take the lock, waiting as the wait policy says; raise GPUBusy if another job keeps it."""
        wait_s = lock_wait_s() if self.wait_s is None else self.wait_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise GPULockError(f"cannot open the GPU lock file {self.path} ({e}); make its directory writable "
                               "or set PHASE_ENERGY_STATE_DIR to a writable local directory") from e
        t0 = time.monotonic()
        next_log = t0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.monotonic()
                if now - t0 >= wait_s:
                    os.close(fd)
                    raise self._busy(now - t0) from None
                if now >= next_log:
                    log.warning("%s is in use by another measurement job, %s; waiting for it (%.0f of at most "
                                "%.0f s so far; lock file %s)", self._gpu(), self._holder_text(), now - t0, wait_s,
                                self.path)
                    next_log = now + LOG_EVERY_S
                time.sleep(min(0.2, max(0.0, wait_s - (now - t0))))
            except OSError as e:
                os.close(fd)
                raise GPULockError(f"cannot lock {self.path} ({e}): the file system does not support locks; set "
                                   "PHASE_ENERGY_STATE_DIR to a local directory") from e
        self._fd = fd
        info = {"host": self.host, "pid": os.getpid(), "gpu_index": self.gpu_index, "gpu_uuid": self.uuid,
                "job": self.job, "since": utc_now()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        if time.monotonic() - t0 > 1:
            log.info("%s is free now: this job holds it", self._gpu())
        return self

    def release(self) -> None:
        """Give the lock back (the kernel does it too when the process ends)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # while still locked: a waiting job never reads a finished holder's name
        finally:
            os.close(fd)

    def __enter__(self) -> GPULock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def gpu_lock(gpu: GPU, job: str = "", directory: Path | None = None, wait_s: float | None = None) -> GPULock:
    """The job lock of a GPU, keyed by this host and the card's UUID (its index if the UUID cannot be read)."""
    from phase_energy.measure.nvml import GPUError

    try:
        uuid = gpu.uuid()
    except GPUError as e:
        uuid = f"index{gpu.index}"
        log.warning("could not read the UUID of GPU %d (%s): its job lock is keyed by its index", gpu.index, e)
    return GPULock(uuid, gpu.index, job, directory, wait_s)
