"""One measurement job per GPU: the lock per host and GPU UUID, its wait policy, and the real-GPU job taking it."""

import logging
import os
import subprocess
import sys
import threading
import time

import pytest

from phase_energy.config import ConfigError, validate_config
from phase_energy.grid import GridPoint
from phase_energy.measure import backend, gpulock, job, nvml
from phase_energy.measure.gpulock import WAIT_ENV, GPUBusy, GPULock, process_alive, process_start
from phase_energy.measure.nvml import GPU
from phase_energy.testing.fake_nvml import FakeNVML

UUID = "GPU-dff96f9c-bc90-b695-0f95-d91dd540d688"
JOB = "results/traces/engine~native/arch~qwen3-4b/bs~1/ctx~1024/lever~default/rep~0"

# a measurement job holding the GPU's lock until its stdin closes (or it is killed)
HOLDER = r"""
import sys
from pathlib import Path
from phase_energy.measure.gpulock import GPULock

GPULock(sys.argv[2], 0, job=sys.argv[3], directory=Path(sys.argv[1]), wait_s=0).acquire()
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def holder(tmp_path):
    procs = []

    def start(uuid=UUID, job=JOB):
        p = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), uuid, job], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(p)
        line = p.stdout.readline()
        assert line.strip() == "locked", line + p.stderr.read()
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def test_second_job_is_refused_naming_the_holder_and_a_killed_holder_frees_the_gpu(tmp_path, holder, monkeypatch):
    first = holder()
    second = GPULock(UUID, 0, job="second", directory=tmp_path, wait_s=0)
    with pytest.raises(GPUBusy) as e:
        second.acquire()
    msg = str(e.value)
    assert f"pid {first.pid}" in msg and JOB in msg and str(second.path) in msg
    assert "--resources gpu=1" in msg and WAIT_ENV in msg and "was not started" in msg
    # another GPU of this host, or this GPU's namesake on another host, is not blocked
    with GPULock("GPU-other", 1, directory=tmp_path, wait_s=0):
        pass
    monkeypatch.setattr(gpulock, "this_host", lambda: "node-b")
    with GPULock(UUID, 0, directory=tmp_path, wait_s=0):
        pass
    monkeypatch.undo()
    first.kill()  # SIGKILL: the kernel drops its lock, no stale lock is left
    first.wait()
    with second as lock:
        assert lock.holder()["pid"] == os.getpid() and lock.holder()["job"] == "second"
        with pytest.raises(GPUBusy, match=f"pid {os.getpid()}"):
            GPULock(UUID, 0, directory=tmp_path, wait_s=0).acquire()
    assert second.holder() is None  # released
    GPULock(UUID, 0, directory=tmp_path, wait_s=0).acquire().release()


def test_a_job_waits_as_told_then_refuses_or_gets_the_gpu(tmp_path, holder, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    first = holder()
    monkeypatch.setenv(WAIT_ENV, "0.4")
    t0 = time.monotonic()
    with pytest.raises(GPUBusy, match="still was after waiting"):
        GPULock(UUID, 0, directory=tmp_path).acquire()
    assert time.monotonic() - t0 >= 0.4
    assert "waiting for it" in caplog.text and f"pid {first.pid}" in caplog.text
    threading.Timer(0.3, first.stdin.close).start()  # the first job ends while the second waits
    t0 = time.monotonic()
    with GPULock(UUID, 0, directory=tmp_path, wait_s=20) as lock:
        assert 0.2 < time.monotonic() - t0 < 10 and lock.holder()["pid"] == os.getpid()
    monkeypatch.setenv(WAIT_ENV, "soon")
    with pytest.raises(ConfigError, match=f"{WAIT_ENV}='soon'"):
        GPULock(UUID, 0, directory=tmp_path).acquire()


def test_process_identity_survives_pid_reuse():
    me = process_start(os.getpid())
    assert me and process_alive(os.getpid(), me) and process_alive(os.getpid(), None)
    assert not process_alive(os.getpid(), "another-boot/1")  # this pid, but not the process that wrote it
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    assert not process_alive(int(done.stdout), None)


def test_real_gpu_job_holds_the_lock_for_its_whole_run(tmp_path, monkeypatch):
    """A job on the NVML backend (a fake NVML: no GPU here) holds the lock from its first probe to its end."""
    monkeypatch.setenv("PHASE_ENERGY_STATE_DIR", str(tmp_path))
    monkeypatch.delenv(WAIT_ENV, raising=False)
    fake = FakeNVML(uuid=UUID)
    monkeypatch.setattr(nvml, "GPU", lambda i: GPU(i, nvml=fake))
    seen = []

    def probe(stage):
        try:
            GPULock(UUID, 0, directory=tmp_path, wait_s=0).acquire().release()
            seen.append((stage, "free"))
        except GPUBusy:
            seen.append((stage, "held"))

    monkeypatch.setattr(backend, "measure_bandwidth_and_matmul", lambda: probe("describe") or {})
    monkeypatch.setattr(job, "build_workload", lambda cfg, point, settings, be: probe("build"))
    monkeypatch.setattr(job, "measure_point", lambda *a, **k: probe("measure"))
    cfg = validate_config({"backend": "nvml"})
    out = tmp_path / "trace"
    assert job.run_job(cfg, GridPoint("qwen3-4b", 1, 1024, "default"), out) == "nvml"
    assert seen == [("describe", "held"), ("build", "held"), ("measure", "held")]
    probe("after")
    assert seen[-1] == ("after", "free")
    # another job holds the GPU: this one refuses before it touches the card
    seen.clear()
    with GPULock(UUID, 0, job="the other job", directory=tmp_path, wait_s=0), \
            pytest.raises(GPUBusy, match="the other job"):
        job.run_job(cfg, GridPoint("qwen3-4b", 1, 1024, "default"), out)
    assert seen == []
