"""Stopping the local cluster's daemons by pid: processes that are not this test's children, like the daemons."""

import subprocess
import time

from phase_energy.testing.local_slurm import _alive, stop_pid, wait_ended


def _detached(script: str) -> int:
    """Start ``bash -c script`` in the background of a shell that exits at once: the process is not our child."""
    res = subprocess.run(["bash", "-c", f"({script}) >/dev/null 2>&1 & echo $!"],
                         capture_output=True, text=True, check=True)
    return int(res.stdout.strip())


def test_a_process_that_leaves_on_sigterm_is_not_killed():
    pid = _detached("exec sleep 30")
    assert _alive(pid)
    assert stop_pid(pid, grace_s=10) == "ended"
    assert not _alive(pid)


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period():
    pid = _detached("trap '' TERM; exec sleep 30")
    time.sleep(0.2)  # let the shell set the trap before the signal comes
    t0 = time.monotonic()
    assert stop_pid(pid, grace_s=0.5) == "killed"
    assert time.monotonic() - t0 >= 0.5
    assert wait_ended(pid, 5)


def test_a_process_already_gone_is_no_error():
    pid = _detached("exit 0")
    assert wait_ended(pid, 5)
    t0 = time.monotonic()
    # "gone" once reaped; a zombie that no init reaps still takes the signal, and reads as "ended"
    assert stop_pid(pid, grace_s=5) in ("gone", "ended")
    assert time.monotonic() - t0 < 1
