"""Lever control: power caps and SM clock locks, applied safely and always restored.

One code path for both backends: :class:`LeverControl` drives any :class:`~phase_energy.measure.backend.Device`
through the same setters, the NVML card's and the simulated card's. Only a card whose settings outlive the
process (``keeps_settings``: a real one) gets the restore journal and the signal handlers below.

A lever other than ``default`` changes a GPU's settings only when the configuration says
``allow_gpu_settings: true``; it is refused while other compute processes use the GPU; it is checked
against the card's constraints and supported clocks before anything is changed.

**Restore journal.** Before changing anything, a lever job writes the previous settings to a journal named
by host and GPU UUID, ``<host>--<uuid>.restore.json`` in ``PHASE_ENERGY_STATE_DIR`` (default
``~/.cache/phase-energy``), with its owner: host, GPU index and UUID, pid, and the process's start (boot id
and start tick from ``/proc/<pid>/stat``, so that a reused pid is not taken for the owner). The settings are
put back on success, on an exception, on SIGTERM (SLURM time limit, preemption), SIGHUP (a closed SSH
session) and SIGINT, and at interpreter exit; a signal the process ignores (``nohup``) stays ignored. The
owner then removes its journal, and only its own (it checks the pid in the file first). A journal left
behind (SIGKILL, a failed restore) is handled by ``phase-energy restore`` and by the next lever job on that
GPU of that host:

- its owner is dead (pid gone, a zombie, or reused by another process) or gave up after a failed restore:
  the journal is replayed, then removed;
- its owner still runs: nothing is replayed; a lever job refuses to start (:class:`JournalBusy`: another job
  holds the GPU's settings) and ``phase-energy restore`` refuses too, naming the pid;
- it was written on another host (state directories shared between nodes): it is never replayed nor
  removed here; a journal of another host that names this GPU's UUID (a container under another host name)
  is reported with what to do;
- it cannot be read (empty, corrupt, fields missing): :class:`JournalError` names the file and how to check
  and restore the GPU by hand.

The check, replay and creation of a journal are serialised per GPU on a host by a short ``flock``
(``<host>--<uuid>.restore.lock``), and a journal appears whole (written aside, then renamed). When restoring
fails the error says so and names the command to run by hand. Keeping whole measurement jobs apart, one per
GPU, is :mod:`phase_energy.measure.gpulock`.
"""

from __future__ import annotations

import atexit
import contextlib
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

from phase_energy.grid import Lever
from phase_energy.measure import gpulock
from phase_energy.measure.backend import Device
from phase_energy.measure.nvml import GPU, GPUError, GPUPermissionError

log = logging.getLogger(__name__)

JOURNAL_SUFFIX = ".restore.json"
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


class LeverError(RuntimeError):
    """A lever could not be applied; nothing was changed unless the message says otherwise."""


class LeverNotPermitted(LeverError):
    """The configuration does not allow changing GPU settings."""


class LeverRestoreError(LeverError):
    """Restoring the previous settings failed: the message says what to run by hand."""


class JournalError(LeverError):
    """A restore journal cannot be read: the message names the file and what to do by hand."""


class JournalBusy(LeverError):
    """A restore journal belongs to a job that still runs, or to another host: it is left alone."""


PERMISSION_HELP = (
    "changing GPU settings needs root (or CAP_SYS_ADMIN). Alternatives: run the job as root; use a "
    "privileged helper (a Zeus-style daemon) that applies the setting for you; on SLURM, ask for clocks "
    "with --gpu-freq=<MHz> (applied by slurmstepd as root, see docs/cluster.md); power caps need a root "
    "prolog running nvidia-smi -pl"
)


def default_journal_dir() -> Path:
    """Where restore journals live (one file per host and GPU); PHASE_ENERGY_STATE_DIR overrides."""
    return gpulock.state_dir()


def journal_path(uuid: str, journal_dir: Path | None = None, host: str | None = None) -> Path:
    """The restore journal of one GPU (by UUID) of one host (this one by default)."""
    return (journal_dir or default_journal_dir()) / f"{gpulock.gpu_key(uuid, host)}{JOURNAL_SUFFIX}"


@dataclass
class Applied:
    """What a lever did: the enforced limit and lock, and what will be restored."""

    lever: str
    power_limit_w: float | None = None
    locked_sm_clock_mhz: int | None = None
    previous: dict[str, Any] = field(default_factory=dict)


def manual_restore_command(gpu_index: int | str, previous: dict[str, Any]) -> str:
    """The nvidia-smi commands that put the previous settings back (``gpu_index`` may be a UUID)."""
    cmds = []
    if "power_limit_w" in previous:
        cmds.append(f"nvidia-smi -i {gpu_index} -pl {previous['power_limit_w']:.0f}")
    if previous.get("sm_clock_locked"):
        cmds.append(f"nvidia-smi -i {gpu_index} -rgc")
    return " && ".join(cmds) or "nothing to restore"


# ---------------------------------------------------------------------- journal records
def _named_in(path: Path) -> tuple[str, str]:
    """(host, GPU) as the journal's file name says (sanitised)."""
    host, _, uuid = path.name.removesuffix(JOURNAL_SUFFIX).partition("--")
    return host or "?", uuid or "?"


def _unreadable(path: Path, why: str) -> JournalError:
    host, uuid = _named_in(path)
    return JournalError(
        f"restore journal {path} cannot be read: {why}. By its name it holds the settings a lever job changed on "
        f"GPU {uuid} of host {host}; what to put back is unknown, so nothing was replayed or changed. Look at "
        f"the file; on host {host}, check the GPU with 'nvidia-smi -q -d POWER,CLOCK -i {uuid}' and put it back "
        f"by hand if it is still capped or locked ('nvidia-smi -i {uuid} -pl <its default power limit W>', "
        f"'nvidia-smi -i {uuid} -rgc', as root); then delete {path}")


def read_journal(path: Path) -> dict[str, Any] | None:
    """The record of a restore journal; None if there is none; JournalError if it cannot be read."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise _unreadable(path, f"{type(e).__name__}: {e}") from e
    if not text.strip():
        raise _unreadable(path, "the file is empty")
    try:
        record = json.loads(text)
    except ValueError as e:
        raise _unreadable(path, f"it is not valid JSON ({e})") from e
    if not isinstance(record, dict):
        raise _unreadable(path, f"it holds a JSON {type(record).__name__}, not a record")
    missing = [k for k in ("host", "pid", "previous") if k not in record]
    if missing:
        raise _unreadable(path, f"the fields {', '.join(missing)} are missing")
    if not isinstance(record["previous"], dict) or not isinstance(record["pid"], int):
        raise _unreadable(path, f"pid {record['pid']!r} or previous {record['previous']!r} has the wrong type")
    return record


def owner_alive(record: dict[str, Any]) -> bool:
    """Whether the job that wrote a journal of this host still runs (and has not given the journal up)."""
    if record.get("released"):
        return False
    return gpulock.process_alive(int(record["pid"]), record.get("pid_start"))


def _owner_text(record: dict[str, Any]) -> str:
    return (f"pid {record['pid']} (lever {record.get('lever', '?')}, since {record.get('created_at', '?')}, "
            f"GPU {record.get('gpu_index', '?')} {record.get('gpu_uuid', '')})").replace(" )", ")")


def _write_journal(path: Path, record: dict[str, Any]) -> None:
    """Write a journal whole: aside, flushed, then renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(record, indent=1))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _remove_if_owned(path: Path, pid: int, host: str) -> bool:
    """Delete a journal only if it is the one this pid of this host wrote; say so if it is not."""
    try:
        record = read_journal(path)
    except JournalError as e:
        log.warning("left alone: %s", e)
        return False
    if record is None:
        return False
    if record.get("host") == host and record.get("pid") == pid:
        path.unlink(missing_ok=True)
        return True
    log.warning("restore journal %s now belongs to %s on host %s, not to this job (pid %d): left alone", path,
                _owner_text(record), record.get("host"), pid)
    return False


def _foreign_message(path: Path, record: dict[str, Any]) -> str:
    host = record.get("host")
    return (f"restore journal {path} was written on host {host}, not on this host ({gpulock.this_host()}): "
            f"left alone (its owner, {_owner_text(record)}, cannot be checked from here). Run 'phase-energy "
            f"restore' on {host}; if {host} is this machine under another name (a container) and that job has "
            f"ended, restore by hand ({manual_restore_command(record.get('gpu_uuid', '<gpu>'), record['previous'])}"
            f") and delete the file")


def other_host_journals(journal_dir: Path | None = None, uuid: str | None = None) -> list[tuple[Path, str]]:
    """Journals in the directory written on other hosts (if ``uuid`` is given, those naming it), with messages.

    Also lists journals of the format before host keys (``gpu<N>-restore.json``), which record no host.
    """
    directory = journal_dir or default_journal_dir()
    out: list[tuple[Path, str]] = []
    here = gpulock.this_host()
    for path in sorted(directory.glob(f"*{JOURNAL_SUFFIX}")):
        try:
            record = read_journal(path)
        except JournalError as e:
            if not path.name.startswith(gpulock.safe_name(here) + "--"):
                out.append((path, str(e)))
            continue
        if record is None or record.get("host") == here:
            continue
        if uuid is None or record.get("gpu_uuid") == uuid:
            out.append((path, _foreign_message(path, record)))
    for path in sorted(directory.glob("gpu*-restore.json")):
        out.append((path, f"restore journal {path} has the format of an earlier version, without host or owner: "
                          "it may belong to another node sharing this directory, so it is not replayed. Check the "
                          "GPU it names with 'nvidia-smi -q -d POWER,CLOCK' on the node that wrote it, restore by "
                          f"hand if needed, then delete the file. It says: {_peek(path)}"))
    return out


def _peek(path: Path) -> str:
    try:
        return path.read_text()[:300] or "(empty)"
    except OSError as e:
        return f"(unreadable: {e})"


class LeverControl:
    """Context manager applying one lever to one GPU and restoring the previous settings.

    >>> with LeverControl(gpu, "powercap:400", allow_gpu_settings=True) as applied:  # doctest: +SKIP
    ...     run_protocol(...)
    """

    def __init__(self, gpu: Device, lever: str, allow_gpu_settings: bool, journal_dir: Path | None = None,
                 install_signal_handlers: bool = True):
        self.gpu = gpu
        self.lever = Lever.parse(lever)
        self.allow = allow_gpu_settings
        self.journal_dir = journal_dir or default_journal_dir()
        self.journal: Path | None = None  # known once the lever reads the GPU's UUID
        self.install_signal_handlers = install_signal_handlers
        self.applied = Applied(str(self.lever))
        self._current = Lever("default")  # the static setting in force now (a phase lever switches it)
        self._restored = True
        self._lock = threading.RLock()  # a signal may arrive while the main thread is inside restore()
        self._old_handlers: dict[int, Any] = {}
        self._pid = os.getpid()
        self._host = gpulock.this_host()

    # ------------------------------------------------------------------ checks
    def check(self) -> None:
        """Refuse before changing anything: permission flag, other processes, range, supported clocks.

        A phase lever is checked for both of its phases' levers.
        """
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
        for sub in self.lever.static_levers:
            self._check_range(sub)

    def _check_range(self, sub: Lever) -> None:
        if sub.kind == "powercap":
            lo, hi = self.gpu.power_limit_range_w()
            if not lo <= float(sub.value or 0) <= hi:
                raise LeverError(f"lever {self.lever}: {sub.value} W is outside this GPU's power-limit "
                                 f"range; accepted: {lo:.0f}-{hi:.0f} W")
        if sub.kind == "smclock":
            clocks = self.gpu.supported_sm_clocks_mhz()
            if sub.value not in clocks:
                near = sorted(clocks, key=lambda c: abs(c - int(sub.value or 0)))[:3]
                raise LeverError(f"lever {self.lever}: {sub.value} MHz is not a supported SM clock of "
                                 f"this GPU; nearest supported: {', '.join(map(str, sorted(near)))} MHz")

    # ------------------------------------------------------------------ journal
    def _claim_journal(self) -> None:
        """Take over the GPU's journal: replay a dead owner's, refuse a live or foreign one, write ours."""
        try:
            uuid = self.gpu.uuid()
        except GPUError as e:
            raise LeverError(f"lever {self.lever} refused: the UUID of GPU {self.gpu.index} cannot be read ({e}), "
                             "and the restore journal is keyed by it; nothing was changed") from e
        self.journal = path = journal_path(uuid, self.journal_dir, self._host)
        for _, message in other_host_journals(self.journal_dir, uuid):
            log.warning("%s", message)
        with gpulock.flocked(path.with_name(path.name.removesuffix(JOURNAL_SUFFIX) + ".restore.lock")):
            record = read_journal(path)
            if record is not None:
                if record.get("host") != self._host:
                    raise JournalBusy(f"lever {self.lever} refused, nothing was changed: "
                                      f"{_foreign_message(path, record)}")
                if owner_alive(record):
                    raise JournalBusy(
                        f"lever {self.lever} refused, nothing was changed: GPU {self.gpu.index} ({uuid}) has "
                        f"settings changed by another lever job that still runs on this host, "
                        f"{_owner_text(record)}; its restore journal is {path}. Run one lever job per GPU at a "
                        "time (Snakemake: --resources gpu=1); that job restores the GPU when it ends")
                _replay(self.gpu, path, record)
            previous = self.applied.previous = self._previous()
            _write_journal(path, {
                "host": self._host, "gpu_index": self.gpu.index, "gpu_uuid": uuid, "pid": self._pid,
                "pid_start": gpulock.process_start(self._pid), "lever": str(self.lever),
                "created_at": gpulock.utc_now(), "previous": previous})

    def _previous(self) -> dict[str, Any]:
        """What restoring this lever puts back: the power limit set now, and/or releasing the clock lock.

        A phase lever puts back what either of its phases' levers changes.
        """
        kinds = {sub.kind for sub in self.lever.static_levers}
        previous: dict[str, Any] = {}
        if "powercap" in kinds:
            previous["power_limit_w"] = self.gpu.power_limit_w()
        if "smclock" in kinds:
            previous["sm_clock_locked"] = True
        return previous

    def _release_journal(self) -> None:
        """After a failed restore: mark the journal as given up, so that 'phase-energy restore' may replay it."""
        if self.journal is None:
            return
        try:
            record = read_journal(self.journal)
            if record is not None and record.get("pid") == self._pid and record.get("host") == self._host:
                _write_journal(self.journal, {**record, "released": True})
        except (JournalError, OSError) as e:
            log.warning("could not mark %s as given up (%s): 'phase-energy restore' replays it once this "
                        "process has ended", self.journal, e)

    # ------------------------------------------------------------------ apply / restore
    def apply(self) -> Applied:
        """Check, journal the previous settings, apply, and record what is enforced."""
        self.check()
        if self.lever.kind == "default":
            self.applied.power_limit_w = self._safe(self.gpu.enforced_power_limit_w)
            return self.applied
        if self.gpu.keeps_settings:  # a real card: journal first (replays what a killed job left behind)
            self._claim_journal()
        else:  # a simulated card's settings end with it: nothing to journal, no signal to catch
            self.applied.previous = self._previous()
        self._restored = False
        if self.gpu.keeps_settings:
            self._install_handlers()
        try:
            self._set(self.lever.for_phase("prefill"))  # a phase lever starts in its prefill setting
            self.applied.power_limit_w = self._safe(self.gpu.enforced_power_limit_w)
        except (GPUError, ValueError) as e:  # the simulated card's setters raise ValueError
            # the setter failed, so nothing changed: drop the journal instead of 'restoring'
            self._abandon()
            help_ = PERMISSION_HELP if isinstance(e, GPUPermissionError) else str(e)
            raise LeverError(f"lever {self.lever} could not be applied (nothing was changed): {help_}") from e
        log.info("lever %s applied (enforced limit %s W)", self.lever, self.applied.power_limit_w)
        return self.applied

    def _set(self, sub: Lever) -> None:
        """Apply one static lever through the device's setters (``default``: nothing to set)."""
        if sub.kind == "powercap":
            self.gpu.set_power_limit_w(float(sub.value or 0))
        elif sub.kind == "smclock":
            self.gpu.lock_sm_clock_mhz(int(sub.value or 0))
            self.applied.locked_sm_clock_mhz = int(sub.value or 0)
        self._current = sub

    @property
    def current(self) -> Lever:
        """The static setting in force now (a phase lever's prefill or decode one)."""
        return self._current

    def switch(self, phase: str) -> Lever:
        """A phase lever: change from the setting of the phase now to ``phase``'s; return the new setting.

        Undoes what the old setting changed and the new one does not set (a lock released, a cap put back to
        the limit found at the start), then sets the new one. Nothing to do when the setting is the same. A
        failure leaves the journal in place: the previous settings are put back when the job ends.
        """
        new = self.lever.for_phase(phase)
        with self._lock:
            if self._restored:
                raise LeverError(f"lever {self.lever}: switch to {phase} after the settings were restored")
            old = self._current
            if new == old:
                return new
            try:
                if old.kind == "smclock" and new.kind != "smclock":
                    self.gpu.reset_sm_clock()
                if old.kind == "powercap" and new.kind != "powercap":
                    self.gpu.set_power_limit_w(float(self.applied.previous["power_limit_w"]))
                self._set(new)
            except (GPUError, ValueError) as e:
                help_ = PERMISSION_HELP if isinstance(e, GPUPermissionError) else str(e)
                raise LeverError(f"lever {self.lever}: switching from {old} to {new} for {phase} failed ({help_}); "
                                 "the previous settings are put back when the job ends") from e
        log.debug("lever %s: %s -> %s for %s", self.lever, old, new, phase)
        return new

    def _abandon(self) -> None:
        with self._lock:
            self._restored = True
            if self.journal is not None:
                _remove_if_owned(self.journal, self._pid, self._host)
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
            if self._restored or os.getpid() != self._pid:  # a forked child never restores its parent's lever
                return
            try:
                restore_settings(self.gpu, self.applied.previous)
            except GPUError as e:
                self._remove_handlers()
                self._release_journal()  # the journal stays for `phase-energy restore`
                raise LeverRestoreError(
                    f"restoring GPU {self.gpu.index} after lever {self.lever} FAILED ({e}); the GPU keeps the "
                    f"changed setting. Restore by hand: {manual_restore_command(self.gpu.index, self.applied.previous)}"
                    f" (or run: phase-energy restore; journal {self.journal})") from e
            self._restored = True
            if self.journal is not None:
                _remove_if_owned(self.journal, self._pid, self._host)
            self._remove_handlers()
            log.info("lever %s: previous settings restored", self.lever)

    # ------------------------------------------------------------------ signals and exit
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        old = self._old_handlers.get(signum)
        if os.getpid() == self._pid:
            log.warning("signal %d during lever %s: restoring GPU settings", signum, self.lever)
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
        for sig in HANDLED_SIGNALS:
            if signal.getsignal(sig) is signal.SIG_IGN:
                continue  # ignored on purpose (nohup ignores SIGHUP): the job goes on, and restores at its end
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def _remove_handlers(self) -> None:
        atexit.unregister(self._atexit)
        if os.getpid() == self._pid and threading.current_thread() is threading.main_thread():
            for sig, old in self._old_handlers.items():
                signal.signal(sig, old)
        self._old_handlers.clear()

    def __enter__(self) -> Applied:
        return self.apply()

    def __exit__(self, *exc: object) -> None:
        self.restore()


def restore_settings(gpu: Device, previous: dict[str, Any]) -> None:
    """Apply a 'previous settings' record: power limit and/or clock lock reset."""
    if "power_limit_w" in previous:
        gpu.set_power_limit_w(float(previous["power_limit_w"]))
    if previous.get("sm_clock_locked"):
        gpu.reset_sm_clock()


def _replay(gpu: Device, path: Path, record: dict[str, Any]) -> None:
    """Put back what a dead (or given-up) owner's journal records, then remove the journal."""
    why = "gave it up after a failed restore" if record.get("released") else "ended without restoring"
    log.warning("restore journal %s: its job, %s, %s; restoring GPU %d: %s", path, _owner_text(record), why,
                gpu.index, record["previous"])
    try:
        restore_settings(gpu, record["previous"])
    except GPUError as e:
        raise LeverRestoreError(
            f"replaying restore journal {path} (left by {_owner_text(record)}) FAILED ({e}); the GPU keeps the "
            f"changed setting and the journal stays. Run 'phase-energy restore' as root, or by hand: "
            f"{manual_restore_command(gpu.index, record['previous'])}, then delete the file") from e
    path.unlink(missing_ok=True)


def replay_journal(gpu: GPU, journal_dir: Path | None = None) -> bool:
    """Restore the settings a job of this host left on this GPU and did not restore; True if replayed.

    Refuses (JournalBusy) while the journal's owner still runs or when it was written on another host, and
    says so (JournalError) when the journal cannot be read; in these cases nothing is changed. Journals of
    other hosts that name this GPU are reported in the log and left alone.
    """
    try:
        uuid = gpu.uuid()
    except GPUError as e:
        raise LeverError(f"the UUID of GPU {gpu.index} cannot be read ({e}), and restore journals are keyed by "
                         "it; restore by hand with nvidia-smi (see 'nvidia-smi -q -d POWER,CLOCK')") from e
    directory = journal_dir or default_journal_dir()
    path = journal_path(uuid, directory)
    for _, message in other_host_journals(directory, uuid):
        log.warning("%s", message)
    with gpulock.flocked(path.with_name(path.name.removesuffix(JOURNAL_SUFFIX) + ".restore.lock")):
        record = read_journal(path)
        if record is None:
            return False
        if record.get("host") != gpulock.this_host():
            raise JournalBusy(f"nothing was restored: {_foreign_message(path, record)}")
        if owner_alive(record):
            raise JournalBusy(
                f"nothing was restored: restore journal {path} belongs to a job that is still running, "
                f"{_owner_text(record)}; it restores GPU {gpu.index} itself when it ends (also on SIGTERM, "
                f"SIGHUP, SIGINT). To end it now: kill {record['pid']}; if it was killed with SIGKILL, run "
                "'phase-energy restore' again")
        _replay(gpu, path, record)
    return True


class MultiLeverControl:
    """One lever on every GPU of a job: a :class:`LeverControl` (and a journal) per GPU, restored on all.

    GPUs are set in order; when one refuses, those already set are restored before the error goes on. At the
    end (or on a signal, through each control's handler) every GPU gets its previous settings back, the last
    set first; a GPU whose restore fails does not keep the others from theirs.
    """

    def __init__(self, gpus: list[Device], lever: str, allow_gpu_settings: bool, journal_dir: Path | None = None,
                 install_signal_handlers: bool = True):
        if not gpus:
            raise ValueError("MultiLeverControl needs at least one GPU; got none")
        self.controls = [LeverControl(g, lever, allow_gpu_settings, journal_dir, install_signal_handlers)
                         for g in gpus]
        self._stack: contextlib.ExitStack | None = None

    @property
    def journals(self) -> list[Path | None]:
        """Each GPU's journal (None before it was applied, or for a device that keeps no settings)."""
        return [c.journal for c in self.controls]

    def __enter__(self) -> list[Applied]:
        with contextlib.ExitStack() as stack:
            applied = [stack.enter_context(c) for c in self.controls]
            self._stack = stack.pop_all()
        return applied

    def __exit__(self, *exc: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()
