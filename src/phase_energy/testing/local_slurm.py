"""A single-node SLURM on localhost for tests and rehearsals of the cluster path (root, Debian packages).

Installs ``slurm-wlm`` and ``munge`` if missing, writes a configuration under a folder of its own
(one stand-in GPU advertised as GRES, so ``--gpus=1`` is accepted), starts munged, slurmctld and slurmd,
waits for the node, and stops every daemon it started by pid, even when the caller fails.

    with LocalSlurm(Path("/tmp/slurm")) as slurm:
        subprocess.run(["sbatch", "--wrap", "hostname"], env=slurm.env)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]


def ensure_installed() -> None:
    """apt-get install slurm-wlm and munge when sbatch is missing (needs root and Debian's archive)."""
    if shutil.which("sbatch") and shutil.which("slurmctld") and shutil.which("munged"):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-qq"], env=env)
    res = _run(["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"], env=env)
    if res.returncode != 0:
        raise RuntimeError(f"could not install SLURM: {res.stderr[-2000:]}")


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs: a zombie (ended, not yet reaped by its parent) counts as ended."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust the signal probe
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_ended(pid: int, timeout_s: float) -> bool:
    """Whether ``pid`` ends within ``timeout_s`` (checked every 0.1 s)."""
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def stop_pid(pid: int, grace_s: float = 30) -> str:
    """SIGTERM ``pid``, wait up to ``grace_s`` for it to end, then SIGKILL it.

    The daemons are not this process's children (they fork away), so they can end at any moment,
    between any two of these calls: a process that is gone is never an error. slurmctld saves its state
    on SIGTERM, which can take several seconds on a busy machine. Returns ``"gone"`` (not running when
    asked), ``"ended"`` (left on SIGTERM) or ``"killed"``.
    """
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return "gone"
    if wait_ended(pid, grace_s):
        return "ended"
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return "ended"
    return "killed"


class LocalSlurm:
    """Start a one-node cluster (partition ``debug``) in ``root``; stop it on exit."""

    partition = "debug"

    def __init__(self, root: Path, cpus: int = 8):
        self.root = root
        self.cpus = cpus  # advertised (config_overrides): light test jobs may share the real cores
        self.pids: dict[str, int] = {}
        # job steps (srun inside a batch job) look for the default path, so the configuration goes there;
        # a configuration already present is kept aside and put back on stop
        self.conf = Path("/etc/slurm/slurm.conf")
        self.saved: dict[Path, bytes] = {}
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def _write_config(self) -> None:
        r = self.root
        r.mkdir(parents=True, exist_ok=True)
        os.chmod(r, 0o755)  # the daemons run as user slurm
        for d in ("state", "spool", "log", "run"):
            (r / d).mkdir(parents=True, exist_ok=True)
            shutil.chown(r / d, "slurm", "slurm")
        mem = 4096
        self.conf.parent.mkdir(parents=True, exist_ok=True)
        for f in (self.conf, self.conf.parent / "gres.conf"):
            if f.exists() and f not in self.saved:
                self.saved[f] = f.read_bytes()
        self.conf.write_text(f"""ClusterName=local
SlurmctldHost=localhost
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
MpiDefault=none
SlurmdParameters=config_overrides
GresTypes=gpu
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={mem} Gres=gpu:1 State=UNKNOWN
PartitionName={self.partition} Nodes=localhost Default=YES MaxTime=INFINITE State=UP
""")
        (self.conf.parent / "gres.conf").write_text("NodeName=localhost Name=gpu File=/dev/null Count=1\n")

    def _start_munge(self) -> None:
        if _run(["munge", "-n"]).returncode == 0:
            return
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        if not Path("/etc/munge/munge.key").exists():
            _run(["mungekey", "--create"])
            shutil.chown("/etc/munge/munge.key", "munge", "munge")
        res = _run(["runuser", "-u", "munge", "--", "munged"])
        if res.returncode != 0:
            raise RuntimeError(f"munged did not start: {res.stderr}")
        pidfile = Path("/run/munge/munged.pid")
        if pidfile.exists():
            self.pids["munged"] = int(pidfile.read_text().strip())

    def start(self, timeout_s: float = 60) -> LocalSlurm:
        """Install if needed, configure, start the daemons and wait until the node is idle."""
        ensure_installed()
        self._write_config()
        self._start_munge()
        for daemon in ("slurmctld", "slurmd"):
            res = _run([daemon, "-f", str(self.conf)], env=self.env)
            if res.returncode != 0:
                raise RuntimeError(f"{daemon} did not start: {res.stderr}")
        t0 = time.monotonic()
        for daemon in ("slurmctld", "slurmd"):
            pidfile = self.root / "run" / f"{daemon}.pid"
            while not pidfile.exists() and time.monotonic() - t0 < timeout_s:
                time.sleep(0.2)
            if pidfile.exists():
                self.pids[daemon] = int(pidfile.read_text().strip())
        while time.monotonic() - t0 < timeout_s:
            out = _run(["sinfo", "-h", "-o", "%t"], env=self.env).stdout.strip()
            if out in ("idle", "mix", "alloc"):
                return self
            if out in ("down", "drain", "unk*", "down*"):
                _run(["scontrol", "update", "nodename=localhost", "state=resume"], env=self.env)
            time.sleep(0.5)
        raise RuntimeError(f"SLURM node not idle after {timeout_s} s: {self.logs()}")

    def logs(self) -> str:
        """The daemons' log tails (for error messages)."""
        out = []
        for f in sorted((self.root / "log").glob("*.log")):
            out.append(f"--- {f.name}\n" + f.read_text()[-1500:])
        return "\n".join(out)

    def stop(self, grace_s: float = 30) -> None:
        """Stop every daemon this object started, by pid, and remove their pid files."""
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self.pids.pop(name, None)
            if pid is not None:
                stop_pid(pid, grace_s)
        for f in (self.root / "run").glob("*.pid"):
            f.unlink(missing_ok=True)
        for f in (self.conf, self.conf.parent / "gres.conf"):
            if f in self.saved:
                f.write_bytes(self.saved.pop(f))
            else:
                f.unlink(missing_ok=True)

    def __enter__(self) -> LocalSlurm:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m phase_energy.testing.local_slurm start|stop [ROOT]``: a rehearsal cluster on this machine."""
    import argparse
    import json

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("action", choices=["start", "stop"])
    p.add_argument("root", nargs="?", default="/tmp/phase-energy-slurm")
    a = p.parse_args(argv)
    root = Path(a.root)
    state = root / "pids.json"
    cluster = LocalSlurm(root)
    if a.action == "start":
        cluster.start()
        state.write_text(json.dumps(cluster.pids))
        print(f"SLURM is up: partition {cluster.partition!r}, configuration {cluster.conf}")
    else:
        cluster.pids = json.loads(state.read_text()) if state.exists() else {}
        cluster.stop()
        print("SLURM stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
