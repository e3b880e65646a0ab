"""Lever control against a fake NVML: every injected failure ends with the card as it was, or with an
error that says restoring failed and what to run by hand."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from phase_energy.measure.backend import nvml_backend
from phase_energy.measure.job import measure_with_lever
from phase_energy.measure.levers import (
    LeverControl,
    LeverError,
    LeverNotPermitted,
    LeverRestoreError,
    journal_path,
    replay_journal,
)
from phase_energy.measure.nvml import GPU, GPUError
from phase_energy.measure.protocol import Settings
from phase_energy.testing.fake_nvml import NVML_ERROR_NO_PERMISSION, NVML_ERROR_NOT_SUPPORTED, FakeNVML


class Boom(RuntimeError):
    pass


class StubWorkload:
    """Tiny real-time workload that fails (or signals itself) at a chosen call."""

    batch, context, rewinds, max_position = 1, 16, True, 64

    def __init__(self, fake, fail=None):
        self.fake, self.fail, self.n = fake, fail, {"prefill": 0, "decode": 0}

    def _tick(self, kind):
        self.n[kind] += 1
        if self.fail and self.fail[0] == kind and self.fail[1] == self.n[kind]:
            what = self.fail[2]
            if what == "raise":
                raise Boom(f"{kind} {self.n[kind]}")
            os.kill(os.getpid(), what)
            time.sleep(0.05)  # the handler runs here

    def warmup(self, runs, prefill_sequences=None):
        return 0.002, 0.0005

    def fill_cache(self, sequences):
        self.prefill(sequences)

    def prefill(self, sequences=None):
        self._tick("prefill")
        self.fake.cards[0].set_load(500)
        time.sleep(0.002)
        self.fake.cards[0].set_load(0)

    def decode(self, position, steps):
        self._tick("decode")
        time.sleep(0.0005 * steps)

    def end_decode(self):
        pass

    def irregular_steps(self):
        return 0

    def decoded_tokens(self):
        return 0

    def next_position(self):
        return self.context

    def idle(self, seconds):
        time.sleep(seconds)

    def synchronize(self):
        pass


SETTINGS = dict(idle_s=0.01, warmup_runs=1, min_counter_ticks=1, counter_period_ms=5, sampling_period_ms=2,
                prefill_trials=3, decode_trials=2, decode_windows=2, pause_s=0.0, max_output=8, decode_lead_in_s=0.0)

LEVERS = ["powercap:400", "smclock:1410"]
SET_CALL = {"powercap:400": "nvmlDeviceSetPowerManagementLimit", "smclock:1410": "nvmlDeviceSetGpuLockedClocks"}
RESTORE_CALL = {"powercap:400": ("nvmlDeviceSetPowerManagementLimit", 1),  # the second set is the restore
                "smclock:1410": ("nvmlDeviceResetGpuLockedClocks", 0)}

# (name, workload failure, nvml faults [(call, code, after, times)], expected exception)
SCENARIOS = [
    *[(f"prefill-raise-{k}", ("prefill", k, "raise"), [], Boom) for k in range(1, 6)],
    *[(f"decode-raise-{k}", ("decode", k, "raise"), [], Boom) for k in range(1, 6)],
    *[(f"decode-sigterm-{k}", ("decode", k, signal.SIGTERM), [], SystemExit) for k in (1, 3)],
    ("decode-sighup-1", ("decode", 1, signal.SIGHUP), [], SystemExit),  # the SSH session closed
    ("prefill-sighup-2", ("prefill", 2, signal.SIGHUP), [], SystemExit),
    ("prefill-sigterm-2", ("prefill", 2, signal.SIGTERM), [], SystemExit),
    ("decode-sigint-2", ("decode", 2, signal.SIGINT), [], KeyboardInterrupt),
    ("apply-nvml-error", None, [("SET", 999, 0, 1)], LeverError),
    ("apply-permission-denied", None, [("SET", NVML_ERROR_NO_PERMISSION, 0, 1)], LeverError),
    ("restore-nvml-error", None, [("RESTORE", 999, 0, 1)], LeverRestoreError),
    ("decode-raise-then-restore-fails", ("decode", 2, "raise"), [("RESTORE", 999, 0, 1)], LeverRestoreError),
    ("sampler-fields-fail-3", None, [("nvmlDeviceGetFieldValues", 999, 3, 2)], None),
    ("sampler-fields-fail-10", None, [("nvmlDeviceGetFieldValues", 999, 10, 5)], None),
    ("sampler-clock-fail", None, [("nvmlDeviceGetClockInfo", 999, 4, 3)], None),
    ("counter-read-fails-mid-run", None, [("nvmlDeviceGetTotalEnergyConsumption", 999, 40, 1000)], GPUError),
    # a cap reads the limit it must restore first; a lock does not need it
    ("limit-read-fails-before-apply", None, [("nvmlDeviceGetPowerManagementLimit", 999, 0, 1)],
     {"powercap:400": GPUError, "smclock:1410": None}),
    ("enforced-read-fails-after-apply", None, [("nvmlDeviceGetEnforcedPowerLimit", 999, 0, 1)], None),
    ("processes-read-fails", None, [("nvmlDeviceGetComputeRunningProcesses", 999, 0, 1)], GPUError),
]
CASES = [(lever, *s) for lever in LEVERS for s in SCENARIOS]


def _faults(fake, lever, faults):
    for call, code, after, times in faults:
        if call == "SET":
            call = SET_CALL[lever]
        elif call == "RESTORE":
            call, extra = RESTORE_CALL[lever]
            after += extra
        fake.inject(call, code, after=after, times=times)


@pytest.mark.parametrize("lever,name,fail,faults,expected", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_every_failure_leaves_the_card_as_it_was(tmp_path, lever, name, fail, faults, expected):
    if isinstance(expected, dict):
        expected = expected[lever]
    fake = FakeNVML()
    gpu = GPU(0, nvml=fake)
    journal = journal_path(gpu.uuid(), tmp_path)
    before = fake.settings()
    _faults(fake, lever, faults)
    work = StubWorkload(fake, fail)
    run = lambda: measure_with_lever(nvml_backend(gpu, lambda: None), lever, True, work,  # noqa: E731
                                     Settings(**SETTINGS), journal_dir=tmp_path)
    if expected is None:
        samples, windows, _, _ = run()
        assert len(windows) > 0
        if "sampler" in name:
            assert samples["gap"].any()
    else:
        with pytest.raises(expected) as e:
            run()
        if expected is LeverRestoreError:
            assert "nvidia-smi" in str(e.value) and "FAILED" in str(e.value)
            assert journal.exists()  # phase-energy restore can finish the job, though this process lives on
            assert json.loads(journal.read_text())["released"] is True
            assert replay_journal(gpu, tmp_path)
    assert fake.settings() == before
    assert not journal.exists()
    assert not list(tmp_path.glob("*.tmp"))
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.default_int_handler) or \
        not getattr(signal.getsignal(signal.SIGTERM), "__self__", None)


def test_lever_is_applied_during_the_job(tmp_path):
    fake = FakeNVML()
    gpu = GPU(0, nvml=fake)
    with LeverControl(gpu, "powercap:300", True, journal_dir=tmp_path, install_signal_handlers=False) as applied:
        assert fake.settings()[0] == 300_000
        assert applied.power_limit_w == 300
    with LeverControl(gpu, "smclock:1410", True, journal_dir=tmp_path, install_signal_handlers=False) as applied:
        assert fake.settings()[1] == (1410, 1410)
    assert fake.settings() == (700_000, None)


def test_refusals_change_nothing_and_say_why(tmp_path):
    fake = FakeNVML(other_pids=[4242])
    gpu = GPU(0, nvml=fake)
    with pytest.raises(LeverError, match="4242"):
        LeverControl(gpu, "powercap:400", True, journal_dir=tmp_path).apply()
    fake = FakeNVML()
    gpu = GPU(0, nvml=fake)
    with pytest.raises(LeverNotPermitted, match="allow_gpu_settings"):
        LeverControl(gpu, "smclock:1410", False, journal_dir=tmp_path).apply()
    with pytest.raises(LeverError, match="200-700 W"):
        LeverControl(gpu, "powercap:150", True, journal_dir=tmp_path).apply()
    with pytest.raises(LeverError, match="1230, 1245 MHz"):
        LeverControl(gpu, "smclock:1234", True, journal_dir=tmp_path).apply()
    assert fake.settings() == (700_000, None)
    assert not [c for c in fake.calls if c.startswith("nvmlDeviceSet")]


def test_permission_denied_names_the_alternatives(tmp_path):
    fake = FakeNVML(root=False)
    with pytest.raises(LeverError) as e:
        LeverControl(GPU(0, nvml=fake), "smclock:1410", True, journal_dir=tmp_path).apply()
    msg = str(e.value)
    assert "root" in msg and "privileged helper" in msg and "--gpu-freq" in msg
    assert fake.settings() == (700_000, None)


def test_default_lever_never_calls_a_setter(tmp_path):
    fake = FakeNVML()
    gpu = GPU(0, nvml=fake)
    samples, windows, applied, _ = measure_with_lever(nvml_backend(gpu, lambda: None), "default", False,
                                                      StubWorkload(fake), Settings(**SETTINGS), journal_dir=tmp_path)
    assert applied.power_limit_w == 700
    assert not [c for c in fake.calls if "Set" in c or "Reset" in c]
    assert len(samples) > 10 and set(windows["phase"]) == {"idle", "prefill", "decode"}


def test_journal_of_a_killed_job_is_replayed_by_the_next(tmp_path):
    fake = FakeNVML()
    gpu = GPU(0, nvml=fake)
    ctl = LeverControl(gpu, "powercap:250", True, journal_dir=tmp_path, install_signal_handlers=False)
    ctl.apply()
    ctl._remove_handlers()  # the process 'dies' here: no restore ran
    assert fake.settings()[0] == 250_000
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                           check=True)
    record = json.loads(ctl.journal.read_text())
    ctl.journal.write_text(json.dumps({**record, "pid": int(ended.stdout)}))  # the owner: a process that ended
    with LeverControl(gpu, "smclock:1410", True, journal_dir=tmp_path, install_signal_handlers=False):
        assert fake.settings() == (700_000, (1410, 1410))
    assert fake.settings() == (700_000, None)


def test_gpu_block_names_the_card_and_survives_unsupported_queries():
    fake = FakeNVML(uuid="GPU-dff96f9c-bc90-b695-0f95-d91dd540d688", serial="1654724121010")
    block = GPU(0, nvml=fake).describe()
    assert (block["uuid"], block["serial"]) == ("GPU-dff96f9c-bc90-b695-0f95-d91dd540d688", "1654724121010")
    assert block["power_limit_w"] == 700
    fake.inject("nvmlDeviceGetSerial", NVML_ERROR_NOT_SUPPORTED)  # e.g. consumer cards have no serial
    block = GPU(0, nvml=fake).describe()
    assert block["serial"] is None and block["uuid"].startswith("GPU-dff96f9c")
    assert not any("Set" in c or "Reset" in c for c in fake.calls)  # describing changes nothing
