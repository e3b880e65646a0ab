"""The restore journal against a fake NVML: keyed by host and GPU UUID, owned by a live process or not,
readable or not. A live owner's journal is never replayed, another host's never touched, a dead owner's is
replayed, and every journal error names the file."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phase_energy.cli import main
from phase_energy.measure import gpulock, nvml
from phase_energy.measure.levers import (
    JournalBusy,
    JournalError,
    LeverControl,
    journal_path,
    replay_journal,
)
from phase_energy.measure.nvml import GPU
from phase_energy.testing.fake_nvml import FakeNVML

# a lever job in its own process, on its own fake of "the same card" (same UUID); when it ends normally it
# writes the card's settings as it left them
LEVER_JOB = r"""
import atexit, json, sys, time
from pathlib import Path
from phase_energy.measure.levers import LeverControl
from phase_energy.measure.nvml import GPU
from phase_energy.testing.fake_nvml import FakeNVML

journal_dir, lever, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
fake = FakeNVML()
atexit.register(lambda: out.write_text(json.dumps(fake.settings())))  # registered first: runs last
LeverControl(GPU(0, nvml=fake), lever, True, journal_dir=journal_dir).apply()
print("applied", flush=True)
time.sleep(60)
"""


@pytest.fixture
def lever_job(tmp_path):
    """Start a lever job in a subprocess; returns (process, file it writes its card's settings to)."""
    procs = []

    def start(lever):
        out = tmp_path / f"card-{len(procs)}.json"
        p = subprocess.Popen([sys.executable, "-c", LEVER_JOB, str(tmp_path), lever, str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(p)
        line = p.stdout.readline()
        assert line.strip() == "applied", line + p.stderr.read()
        return p, out

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def ended_pid():
    """The pid of a process that has ended."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(done.stdout)


def setters(fake):
    return [c for c in fake.calls if "Set" in c or "Reset" in c]


def held_journal(gpu, tmp_path, lever="powercap:300"):
    """Apply a lever in this process and leave it applied (this process owns the journal)."""
    ctl = LeverControl(gpu, lever, True, journal_dir=tmp_path, install_signal_handlers=False)
    ctl.apply()
    return ctl


def run_restore(monkeypatch, fake, tmp_path):
    real = GPU
    monkeypatch.setattr(nvml, "GPU", lambda i=0: real(i, nvml=fake))
    return main(["restore", "--state-dir", str(tmp_path)])


def test_journal_is_named_by_host_and_uuid_and_records_its_owner(tmp_path):
    fake = FakeNVML(n_gpus=2)
    gpu = GPU(1, nvml=fake)
    ctl = held_journal(gpu, tmp_path)
    assert ctl.journal == tmp_path / f"{gpulock.safe_name(gpulock.this_host())}--{fake.cards[1].uuid}.restore.json"
    record = json.loads(ctl.journal.read_text())
    assert record["host"] == gpulock.this_host() and record["gpu_uuid"] == fake.cards[1].uuid
    assert record["gpu_index"] == 1 and record["pid"] == os.getpid() and record["lever"] == "powercap:300"
    assert record["pid_start"] == gpulock.process_start(os.getpid()) and record["previous"] == {"power_limit_w": 700}
    ctl.restore()
    assert not ctl.journal.exists() and fake.settings(1) == (700_000, None)


def test_second_lever_job_is_refused_while_the_first_runs_then_its_journal_is_replayed(tmp_path, lever_job):
    first, _ = lever_job("powercap:300")
    fake = FakeNVML()
    fake.cards[0].power_limit_mw = 300_000  # the same card, as the first job set it
    gpu = GPU(0, nvml=fake)
    journal = journal_path(gpu.uuid(), tmp_path)
    held = journal.read_text()
    with pytest.raises(JournalBusy) as e:
        LeverControl(gpu, "smclock:1410", True, journal_dir=tmp_path, install_signal_handlers=False).apply()
    assert f"pid {first.pid}" in str(e.value) and str(journal) in str(e.value) and "still runs" in str(e.value)
    with pytest.raises(JournalBusy, match=f"still running, pid {first.pid}"):
        replay_journal(gpu, tmp_path)  # phase-energy restore
    assert fake.settings() == (300_000, None) and not setters(fake)  # the first job's cap was not reset
    assert journal.read_text() == held
    first.kill()  # SIGKILL: no restore ran; not reaped yet, the first job is a zombie, and as dead
    for _ in range(500):
        if Path(f"/proc/{first.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            break
        time.sleep(0.01)
    assert replay_journal(gpu, tmp_path)
    assert fake.settings() == (700_000, None) and not journal.exists()


def test_live_owner_in_this_process_keeps_its_setting_and_its_journal(tmp_path, monkeypatch, caplog):
    fake = FakeNVML()
    gpu = GPU(0, nvml=fake)
    first = held_journal(gpu, tmp_path)
    with pytest.raises(JournalBusy, match=f"pid {os.getpid()}"):
        LeverControl(gpu, "smclock:1410", True, journal_dir=tmp_path, install_signal_handlers=False).apply()
    with pytest.raises(SystemExit) as e:
        run_restore(monkeypatch, fake, tmp_path)
    assert e.value.code == 1 and f"still running, pid {os.getpid()}" in caplog.text
    assert fake.settings() == (300_000, None) and first.journal.exists()
    first.restore()
    assert not first.journal.exists() and fake.settings() == (700_000, None)
    with LeverControl(gpu, "smclock:1410", True, journal_dir=tmp_path, install_signal_handlers=False):
        assert fake.settings() == (700_000, (1410, 1410))


@pytest.mark.parametrize("owner", ["ended", "pid-reused"])
def test_dead_owners_journal_is_replayed_by_the_next_job_and_by_restore(tmp_path, monkeypatch, capsys, owner):
    fake = FakeNVML()
    gpu = GPU(0, nvml=fake)
    for replay in ("lever job", "restore"):
        ctl = held_journal(gpu, tmp_path, "powercap:250")
        ctl._remove_handlers()  # the job 'dies' here, its cap applied
        record = json.loads(ctl.journal.read_text())
        # a process that ended, or this pid with another start: the pid was reused by a process that is not the owner
        dead = {"pid": ended_pid()} if owner == "ended" else {"pid_start": "another-boot/12345"}
        ctl.journal.write_text(json.dumps({**record, **dead}))
        assert fake.settings() == (250_000, None)
        if replay == "restore":
            assert run_restore(monkeypatch, fake, tmp_path) == 0
            assert capsys.readouterr().out.startswith("restored")
            assert fake.settings() == (700_000, None)
        else:
            with LeverControl(gpu, "smclock:1410", True, journal_dir=tmp_path, install_signal_handlers=False):
                assert fake.settings() == (700_000, (1410, 1410))
        assert fake.settings() == (700_000, None) and not ctl.journal.exists()
    assert run_restore(monkeypatch, fake, tmp_path) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_journal_of_another_host_is_never_replayed_nor_removed(tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setattr(gpulock, "this_host", lambda: "node-a")
    card_a = FakeNVML(uuid="GPU-aaaaaaaa-0000-0000-0000-000000000000")
    gpu_a = GPU(0, nvml=card_a)
    job_a = held_journal(gpu_a, tmp_path)
    job_a._remove_handlers()  # node a's job is killed: its card stays capped
    journal_a = job_a.journal
    held = journal_a.read_text()
    # node b shares the directory (same home): its job on its own GPU 0 neither replays nor removes node a's journal
    monkeypatch.setattr(gpulock, "this_host", lambda: "node-b")
    card_b = FakeNVML(uuid="GPU-bbbbbbbb-0000-0000-0000-000000000000")
    gpu_b = GPU(0, nvml=card_b)
    with LeverControl(gpu_b, "smclock:1410", True, journal_dir=tmp_path, install_signal_handlers=False):
        assert card_b.settings() == (700_000, (1410, 1410))
    assert run_restore(monkeypatch, card_b, tmp_path) == 0
    out = capsys.readouterr().out
    assert "nothing to do" in out and "node-a" in out and str(journal_a) in out
    # the same card seen under another host name (a new container): left alone, with what to do
    assert not replay_journal(gpu_a, tmp_path)
    assert "node-a" in caplog.text and str(journal_a) in caplog.text and "nvidia-smi -i" in caplog.text
    assert card_a.settings() == (300_000, None) and journal_a.read_text() == held
    # a record of node a under node b's name (a hand-copied file): refused, not replayed
    foreign = journal_path(gpu_a.uuid(), tmp_path)
    foreign.write_text(held)
    with pytest.raises(JournalBusy, match="written on host node-a"):
        replay_journal(gpu_a, tmp_path)
    with pytest.raises(JournalBusy, match="written on host node-a"):
        LeverControl(gpu_a, "powercap:400", True, journal_dir=tmp_path, install_signal_handlers=False).apply()
    assert card_a.settings() == (300_000, None) and foreign.exists()
    # on node a, once its job is gone, the journal is replayed
    monkeypatch.setattr(gpulock, "this_host", lambda: "node-a")
    journal_a.write_text(json.dumps({**json.loads(held), "pid": ended_pid()}))
    assert replay_journal(gpu_a, tmp_path)
    assert card_a.settings() == (700_000, None) and not journal_a.exists()


@pytest.mark.parametrize("content,why", [("", "empty"), ("{not json", "not valid JSON"),
                                         ('{"pid": 1}', "host, previous are missing"), ("[1, 2]", "JSON list")])
def test_unreadable_journal_names_the_file_and_what_to_do(tmp_path, content, why):
    fake = FakeNVML()
    gpu = GPU(0, nvml=fake)
    path = journal_path(gpu.uuid(), tmp_path)
    path.write_text(content)
    for attempt in (lambda: LeverControl(gpu, "powercap:400", True, journal_dir=tmp_path,
                                         install_signal_handlers=False).apply(),
                    lambda: replay_journal(gpu, tmp_path)):
        with pytest.raises(JournalError) as e:
            attempt()
        msg = str(e.value)
        assert not isinstance(e.value, ValueError)  # not a bare JSONDecodeError
        assert str(path) in msg and why in msg and gpu.uuid() in msg
        assert "nvidia-smi -q -d POWER,CLOCK" in msg and f"delete {path}" in msg
    assert path.read_text() == content and not setters(fake)


def test_restore_removes_only_its_own_journal(tmp_path, caplog):
    fake = FakeNVML()
    gpu = GPU(0, nvml=fake)
    ctl = held_journal(gpu, tmp_path)
    parent = os.getppid()
    other = {**json.loads(ctl.journal.read_text()), "pid": parent, "pid_start": gpulock.process_start(parent)}
    ctl.journal.write_text(json.dumps(other))  # another job's journal now (it must not be lost)
    ctl.restore()
    assert fake.settings() == (700_000, None)
    assert json.loads(ctl.journal.read_text()) == other
    assert f"pid {os.getppid()}" in caplog.text and "left alone" in caplog.text


def test_sighup_restores_the_card_in_a_running_job(tmp_path, lever_job):
    job, card = lever_job("smclock:1410")
    journal = journal_path(FakeNVML().cards[0].uuid, tmp_path)
    assert journal.exists()
    job.send_signal(signal.SIGHUP)  # the SSH session of the job closed
    assert job.wait(timeout=20) == 128 + signal.SIGHUP
    assert json.loads(card.read_text()) == [700_000, None]
    assert not journal.exists()


def test_an_ignored_sighup_stays_ignored(tmp_path):
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup: the job is meant to outlive its session
    try:
        fake = FakeNVML()
        with LeverControl(GPU(0, nvml=fake), "powercap:300", True, journal_dir=tmp_path):
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
        assert fake.settings() == (700_000, None)
    finally:
        signal.signal(signal.SIGHUP, old)


def test_failed_restore_leaves_a_journal_that_restore_may_replay(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    fake = FakeNVML()
    gpu = GPU(0, nvml=fake)
    ctl = held_journal(gpu, tmp_path)
    fake.inject("nvmlDeviceSetPowerManagementLimit", times=1)
    with pytest.raises(Exception, match="FAILED"):
        ctl.restore()
    assert json.loads(ctl.journal.read_text())["released"] is True  # this process lives on, but gave it up
    assert replay_journal(gpu, tmp_path)
    assert fake.settings() == (700_000, None) and not ctl.journal.exists()
