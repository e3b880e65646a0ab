"""Lever control on a real GPU: power caps and SM clock locks, applied safely and always restored.

A lever other than ``default`` changes a GPU's settings only when the configuration says
``allow_gpu_settings: true``; it is refused while other compute processes use the GPU; it is checked
against the card's constraints and supported clocks before anything is changed. The previous settings
are written to a restore journal first and put back on success, on an exception, on SIGTERM (SLURM time
limit, preemption) and SIGINT, and at interpreter exit. A job killed with SIGKILL leaves the journal,
which ``phase-energy restore`` (and the next job on that GPU) replays. When restoring fails the error
says so and names the command to run by hand.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from .config import Lever
from .telemetry import GPU, GPUError, GPUPermissionError

log = logging.getLogger(__name__)


class LeverError(RuntimeError):
    """A lever could not be applied; nothing was changed unless the message says otherwise."""


class LeverNotPermitted(LeverError):
    """The configuration does not allow changing GPU settings."""


class LeverRestoreError(LeverError):
    """Restoring the previous settings failed: the message says what to run by hand."""


PERMISSION_HELP = (
    "changing GPU settings needs root (or CAP_SYS_ADMIN). Alternatives: run the job as root; use a "
    "privileged helper (a Zeus-style daemon) that applies the setting for you; on SLURM, ask for clocks "
    "with --gpu-freq=<MHz> (applied by slurmstepd as root, see docs/cluster.md); power caps need a root "
    "prolog running nvidia-smi -pl"
)


def default_journal_dir() -> Path:
    """Where restore journals live (one file per GPU); PHASE_ENERGY_STATE_DIR overrides."""
    return Path(os.environ.get("PHASE_ENERGY_STATE_DIR", Path.home() / ".cache" / "phase-energy"))


@dataclass
class Applied:
    """What a lever did: the enforced limit and lock, and what will be restored."""

    lever: str
    power_limit_w: float | None = None
    locked_sm_clock_mhz: int | None = None
    previous: dict[str, Any] = field(default_factory=dict)


def manual_restore_command(gpu_index: int, previous: dict[str, Any]) -> str:
    """The nvidia-smi commands that put the previous settings back."""
    cmds = []
    if "power_limit_w" in previous:
        cmds.append(f"nvidia-smi -i {gpu_index} -pl {previous['power_limit_w']:.0f}")
    if previous.get("sm_clock_locked"):
        cmds.append(f"nvidia-smi -i {gpu_index} -rgc")
    return " && ".join(cmds) or "nothing to restore"


class LeverControl:
    """Context manager applying one lever to one GPU and restoring the previous settings.

    >>> with LeverControl(gpu, "powercap:400", allow_gpu_settings=True) as applied:  # doctest: +SKIP
    ...     run_protocol(...)
    """

    def __init__(self, gpu: GPU, lever: str, allow_gpu_settings: bool, journal_dir: Path | None = None,
                 install_signal_handlers: bool = True):
        self.gpu = gpu
        self.lever = Lever.parse(lever)
        self.allow = allow_gpu_settings
        self.journal = (journal_dir or default_journal_dir()) / f"gpu{gpu.index}-restore.json"
        self.install_signal_handlers = install_signal_handlers
        self.applied = Applied(str(self.lever))
        self._restored = True
        self._lock = threading.Lock()
        self._old_handlers: dict[int, Any] = {}

    # ------------------------------------------------------------------ checks
    def check(self) -> None:
        """Refuse before changing anything: permission flag, other processes, range, supported clocks."""
        if self.lever.kind == "default":
            return
        if not self.allow:
            raise LeverNotPermitted(
                f"lever {self.lever} changes the GPU's settings, and allow_gpu_settings is false. Set "
                "allow_gpu_settings: true only on a GPU you may reconfigure; the default lever needs nothing")
        others = self.gpu.other_compute_pids()
        if others:
            raise LeverError(f"lever {self.lever} refused: other compute processes use GPU {self.gpu.index} "
                             f"(pids {others}); changing its settings would disturb them")
        if self.lever.kind == "powercap":
            lo, hi = self.gpu.power_limit_range_w()
            if not lo <= float(self.lever.value or 0) <= hi:
                raise LeverError(f"lever {self.lever}: {self.lever.value} W is outside this GPU's power-limit "
                                 f"range; accepted: {lo:.0f}-{hi:.0f} W")
        if self.lever.kind == "smclock":
            clocks = self.gpu.supported_sm_clocks_mhz()
            if self.lever.value not in clocks:
                near = sorted(clocks, key=lambda c: abs(c - int(self.lever.value or 0)))[:3]
                raise LeverError(f"lever {self.lever}: {self.lever.value} MHz is not a supported SM clock of "
                                 f"this GPU; nearest supported: {', '.join(map(str, sorted(near)))} MHz")

    # ------------------------------------------------------------------ apply / restore
    def _write_journal(self, previous: dict[str, Any]) -> None:
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.journal.with_suffix(".tmp")
        tmp.write_text(json.dumps({"gpu_index": self.gpu.index, "pid": os.getpid(), "previous": previous}))
        os.replace(tmp, self.journal)

    def apply(self) -> Applied:
        """Check, journal the previous settings, apply, and record what is enforced."""
        self.check()
        if self.lever.kind == "default":
            self.applied.power_limit_w = self._safe(self.gpu.enforced_power_limit_w)
            return self.applied
        replay_journal(self.gpu, self.journal.parent)  # a job killed earlier may have left settings behind
        previous: dict[str, Any] = {}
        if self.lever.kind == "powercap":
            previous["power_limit_w"] = self.gpu.power_limit_w()
        else:
            previous["sm_clock_locked"] = True
        self.applied.previous = previous
        self._write_journal(previous)
        self._restored = False
        self._install_handlers()
        try:
            if self.lever.kind == "powercap":
                self.gpu.set_power_limit_w(float(self.lever.value or 0))
                self.applied.power_limit_w = self._safe(self.gpu.enforced_power_limit_w)
            else:
                self.gpu.lock_sm_clock_mhz(int(self.lever.value or 0))
                self.applied.locked_sm_clock_mhz = int(self.lever.value or 0)
                self.applied.power_limit_w = self._safe(self.gpu.enforced_power_limit_w)
        except GPUError as e:
            # the setter failed, so nothing changed: drop the journal instead of 'restoring'
            self._abandon()
            help_ = PERMISSION_HELP if isinstance(e, GPUPermissionError) else str(e)
            raise LeverError(f"lever {self.lever} could not be applied (nothing was changed): {help_}") from e
        log.info("lever %s applied (enforced limit %s W)", self.lever, self.applied.power_limit_w)
        return self.applied

    def _abandon(self) -> None:
        with self._lock:
            self._restored = True
            self.journal.unlink(missing_ok=True)
            self._remove_handlers()

    @staticmethod
    def _safe(fn: Callable[[], float]) -> float | None:
        try:
            return fn()
        except GPUError:
            return None

    def restore(self) -> None:
        """Put the previous settings back (idempotent); raise LeverRestoreError if that fails."""
        with self._lock:
            if self._restored:
                return
            try:
                restore_settings(self.gpu, self.applied.previous)
            except GPUError as e:
                self._remove_handlers()  # the journal stays for `phase-energy restore`
                raise LeverRestoreError(
                    f"restoring GPU {self.gpu.index} after lever {self.lever} FAILED ({e}); the GPU keeps the "
                    f"changed setting. Restore by hand: {manual_restore_command(self.gpu.index, self.applied.previous)}"
                    f" (or run: phase-energy restore)") from e
            self._restored = True
            self.journal.unlink(missing_ok=True)
            self._remove_handlers()
            log.info("lever %s: previous settings restored", self.lever)

    # ------------------------------------------------------------------ signals and exit
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.warning("signal %d during lever %s: restoring GPU settings", signum, self.lever)
        old = self._old_handlers.get(signum)
        try:
            self.restore()
        except LeverRestoreError as e:
            log.error("%s", e)
        self._remove_handlers()
        if callable(old):
            old(signum, frame)
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt
        else:
            raise SystemExit(128 + signum)

    def _atexit(self) -> None:
        try:
            self.restore()
        except LeverRestoreError as e:
            log.error("%s", e)

    def _install_handlers(self) -> None:
        atexit.register(self._atexit)
        if not self.install_signal_handlers or threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def _remove_handlers(self) -> None:
        atexit.unregister(self._atexit)
        for sig, old in self._old_handlers.items():
            signal.signal(sig, old)
        self._old_handlers.clear()

    def __enter__(self) -> Applied:
        return self.apply()

    def __exit__(self, *exc: object) -> None:
        self.restore()


def restore_settings(gpu: GPU, previous: dict[str, Any]) -> None:
    """Apply a 'previous settings' record: power limit and/or clock lock reset."""
    if "power_limit_w" in previous:
        gpu.set_power_limit_w(float(previous["power_limit_w"]))
    if previous.get("sm_clock_locked"):
        gpu.reset_sm_clock()


def replay_journal(gpu: GPU, journal_dir: Path | None = None) -> bool:
    """Restore settings left by a job that was killed before it could; True if a journal was replayed."""
    path = (journal_dir or default_journal_dir()) / f"gpu{gpu.index}-restore.json"
    if not path.exists():
        return False
    record = json.loads(path.read_text())
    log.warning("found a restore journal of pid %s for GPU %d: restoring %s", record.get("pid"), gpu.index,
                record["previous"])
    restore_settings(gpu, record["previous"])
    path.unlink()
    return True
