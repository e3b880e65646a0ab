"""Real GPU telemetry through NVML: a narrow device wrapper, a background sampler and the meter.

Units are in the names (``energy_mj``, ``power_w``); NVML's mJ/mW/ns/us are converted to SI only at
this boundary. NVML errors are mapped to a few exceptions of our own, raised ``from`` the original.
Nothing here changes a GPU setting: that is :mod:`phase_energy.measure.levers`, behind ``allow_gpu_settings``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pandas as pd

from phase_energy.measure.trace import SAMPLE_COLUMNS, conform

log = logging.getLogger(__name__)

# Field ids (nvml.h): instantaneous and 1-s average power (mW, each with its own us timestamp) and the
# cumulative clock-event (throttle) counters (ns).
FI_POWER_AVERAGE = 185
FI_POWER_INSTANT = 186
THROTTLE_FIELDS: dict[str, int] = {
    "thr_sw_power_s": 74,
    "thr_sw_thermal_s": 269,
    "thr_hw_thermal_s": 270,
    "thr_hw_power_brake_s": 271,
    "thr_board_limit_s": 77,
    "thr_reliability_s": 79,
}
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_TEMPERATURE_GPU = 0


class GPUError(RuntimeError):
    """An NVML call failed."""


class GPUPermissionError(GPUError):
    """NVML refused a setting for lack of privileges."""


class GPUNotSupported(GPUError):
    """The card or driver does not support a call."""


def load_nvml() -> ModuleType:
    """The ``pynvml`` module of nvidia-ml-py (the deprecated ``pynvml`` PyPI shim is not needed)."""
    try:
        import pynvml
    except ImportError as e:
        raise GPUError("backend nvml needs nvidia-ml-py: pip install 'phase-energy[gpu]'") from e
    return pynvml


def _field_value(v: Any) -> float:
    """Numeric value of an nvmlFieldValue_t whatever its value type."""
    vt = int(getattr(v, "valueType", 1))
    u = v.value
    return float({0: u.dVal, 1: u.uiVal, 2: u.ulVal, 3: u.ullVal, 4: u.sllVal, 5: u.siVal}.get(vt, u.uiVal))


def _decode(v: Any) -> str:
    """A string NVML returned (bytes in older bindings)."""
    return v.decode() if isinstance(v, bytes) else str(v)


class GPU:
    """One NVIDIA GPU through NVML: reads, and (for :mod:`levers`) the setters with their checks."""

    keeps_settings = True  # a power limit or clock lock outlives the process: levers journal it

    def __init__(self, index: int = 0, nvml: ModuleType | None = None):
        self.nvml = nvml or load_nvml()
        self.index = index
        try:
            self.nvml.nvmlInit()
            self.handle = self.nvml.nvmlDeviceGetHandleByIndex(index)
        except self.nvml.NVMLError as e:
            raise GPUError(f"NVML could not open GPU {index}: {e}") from e

    def call(self, name: str, *args: Any) -> Any:
        """Call an NVML device function by name, mapping its errors to ours."""
        fn: Callable[..., Any] = getattr(self.nvml, name)
        try:
            return fn(self.handle, *args)
        except self.nvml.NVMLError as e:
            code = getattr(e, "value", None)
            if code == getattr(self.nvml, "NVML_ERROR_NO_PERMISSION", 4):
                raise GPUPermissionError(f"{name}: no permission ({e})") from e
            if code == getattr(self.nvml, "NVML_ERROR_NOT_SUPPORTED", 3):
                raise GPUNotSupported(f"{name}: not supported on this GPU ({e})") from e
            raise GPUError(f"{name} failed: {e}") from e

    # ---------------------------------------------------------------- reads
    def _text(self, name: str) -> str:
        return _decode(self.call(name))

    def name(self) -> str:
        """Marketing name, e.g. NVIDIA H200."""
        return self._text("nvmlDeviceGetName")

    def uuid(self) -> str:
        """The card's UUID (``GPU-...``): which card, whatever its index."""
        return self._text("nvmlDeviceGetUUID")

    def driver(self) -> str:
        """Driver version."""
        return _decode(self.nvml.nvmlSystemGetDriverVersion())

    def energy_mj(self) -> int:
        """Energy counter: mJ since the driver loaded (updates about every 100 ms)."""
        return int(self.call("nvmlDeviceGetTotalEnergyConsumption"))

    def power_fields(self) -> tuple[float, float, float]:
        """(instant W, 1-s average W, device timestamp of the instant reading in s)."""
        vals = self.call("nvmlDeviceGetFieldValues", [FI_POWER_INSTANT, FI_POWER_AVERAGE])
        inst, avg = vals[0], vals[1]
        return _field_value(inst) / 1000.0, _field_value(avg) / 1000.0, float(inst.timestamp) / 1e6

    def throttle_counters_s(self) -> dict[str, float]:
        """Cumulative time under each clock-event reason, s."""
        vals = self.call("nvmlDeviceGetFieldValues", list(THROTTLE_FIELDS.values()))
        out = {}
        for (col, _), v in zip(THROTTLE_FIELDS.items(), vals, strict=True):
            ok = int(getattr(v, "nvmlReturn", 0)) == 0
            out[col] = _field_value(v) / 1e9 if ok else float("nan")
        return out

    def clocks_mhz(self) -> tuple[int, int]:
        """(SM clock, memory clock) now, MHz."""
        return (int(self.call("nvmlDeviceGetClockInfo", NVML_CLOCK_SM)),
                int(self.call("nvmlDeviceGetClockInfo", NVML_CLOCK_MEM)))

    def clock_reasons(self) -> int:
        """Clock-event reasons bitmask (0x4 SW power cap, 0x20/0x40 thermal, 0x80 power brake)."""
        return int(self.call("nvmlDeviceGetCurrentClocksEventReasons"))

    def temperature_c(self) -> float:
        """GPU temperature, degrees C."""
        return float(self.call("nvmlDeviceGetTemperature", NVML_TEMPERATURE_GPU))

    def utilization_pct(self) -> float:
        """GPU utilisation over the last sample period, percent."""
        return float(self.call("nvmlDeviceGetUtilizationRates").gpu)

    def compute_pids(self) -> list[int]:
        """PIDs of compute processes on this GPU."""
        return [int(p.pid) for p in self.call("nvmlDeviceGetComputeRunningProcesses")]

    def other_compute_pids(self) -> list[int]:
        """Compute processes on this GPU other than this one."""
        return [p for p in self.compute_pids() if p != os.getpid()]

    def power_limit_w(self) -> float:
        """The configured power limit, W."""
        return self.call("nvmlDeviceGetPowerManagementLimit") / 1000.0

    def enforced_power_limit_w(self) -> float:
        """The power limit actually enforced, W."""
        return self.call("nvmlDeviceGetEnforcedPowerLimit") / 1000.0

    def power_limit_range_w(self) -> tuple[float, float]:
        """(min, max) power limit the card accepts, W."""
        lo, hi = self.call("nvmlDeviceGetPowerManagementLimitConstraints")
        return lo / 1000.0, hi / 1000.0

    def supported_sm_clocks_mhz(self) -> list[int]:
        """SM clocks a lock may name at the highest memory clock, ascending."""
        mem = max(self.call("nvmlDeviceGetSupportedMemoryClocks"))
        return sorted(int(c) for c in self.call("nvmlDeviceGetSupportedGraphicsClocks", mem))

    def describe(self) -> dict[str, Any]:
        """GPU block of the trace metadata (never changes anything)."""
        out: dict[str, Any] = {"name": self.name(), "driver": self.driver(), "index": self.index}
        for key, fn in (("uuid", self.uuid),  # which card: runs may differ
                        ("serial", lambda: self._text("nvmlDeviceGetSerial")),
                        ("supported_sm_clocks_mhz", self.supported_sm_clocks_mhz),
                        ("power_limit_range_w", lambda: list(self.power_limit_range_w())),
                        ("power_limit_w", self.power_limit_w)):
            try:
                out[key] = fn()
            except GPUError as e:
                out[key] = None
                log.warning("could not read %s: %s", key, e)
        return out

    # ---------------------------------------------------------------- setters (levers.py only)
    def set_power_limit_w(self, watts: float) -> None:
        """Set the power limit (root). Use through :class:`levers.LeverControl`."""
        self.call("nvmlDeviceSetPowerManagementLimit", round(watts * 1000))

    def lock_sm_clock_mhz(self, mhz: int) -> None:
        """Lock the SM clock to one value (root). Use through :class:`levers.LeverControl`."""
        self.call("nvmlDeviceSetGpuLockedClocks", int(mhz), int(mhz))

    def reset_sm_clock(self) -> None:
        """Remove an SM clock lock (root)."""
        self.call("nvmlDeviceResetGpuLockedClocks")


class Sampler:
    """Background thread polling one GPU every ``period_s`` into the samples table.

    A failing NVML call records a gap row (values NaN, ``gap`` true) and the sampler goes on.
    """

    def __init__(self, gpu: GPU, period_s: float = 0.01, origin: float | None = None):
        self.gpu = gpu
        self.period = period_s
        self.origin = time.monotonic() if origin is None else origin
        self.rows: list[dict[str, Any]] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"nvml-sampler-{gpu.index}", daemon=True)
        self._device_offset: float | None = None  # device timestamp -> job time

    def poll(self) -> dict[str, Any]:
        """One sample (raises GPUError on a failed call)."""
        t = time.monotonic() - self.origin
        inst, avg, dev_t = self.gpu.power_fields()
        if self._device_offset is None:
            self._device_offset = t - dev_t
        sm, mem = self.gpu.clocks_mhz()
        row = {"t_s": t, "power_t_s": dev_t + self._device_offset,
               "energy_j": self.gpu.energy_mj() / 1000.0, "power_instant_w": inst, "power_avg_w": avg,
               "sm_clock_mhz": float(sm), "mem_clock_mhz": float(mem), "clock_reasons": self.gpu.clock_reasons(),
               **self.gpu.throttle_counters_s(), "temperature_c": self.gpu.temperature_c(),
               "utilization_pct": self.gpu.utilization_pct(), "n_processes": len(self.gpu.compute_pids()),
               "gap": False}
        return row

    def _gap(self) -> dict[str, Any]:
        t = time.monotonic() - self.origin
        row: dict[str, Any] = {c: float("nan") for c in SAMPLE_COLUMNS}
        row.update({"t_s": t, "power_t_s": t, "clock_reasons": 0, "n_processes": 0, "gap": True})
        return row

    def _run(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            try:
                self.rows.append(self.poll())
            except GPUError as e:
                self.errors += 1
                if self.errors <= 5:
                    log.warning("NVML poll failed (gap recorded): %s", e)
                self.rows.append(self._gap())
            next_t += self.period
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    def start(self) -> Sampler:
        """Start polling."""
        self._thread.start()
        return self

    def stop(self) -> pd.DataFrame:
        """Stop polling and return the samples table."""
        self._stop.set()
        self._thread.join(timeout=5)
        return self.frame()

    def frame(self) -> pd.DataFrame:
        """The samples so far, energy relative to the first good sample."""
        df = pd.DataFrame(list(self.rows)) if self.rows else pd.DataFrame(columns=list(SAMPLE_COLUMNS))
        good = df.loc[~df["gap"].astype(bool), "energy_j"] if len(df) else pd.Series(dtype=float)
        if len(good):
            df["energy_j"] = df["energy_j"] - float(good.iloc[0])
        return conform(df, SAMPLE_COLUMNS)


class NvmlMeter:
    """Clock, energy counter and sampler of one real GPU (the protocol opens and closes the windows)."""

    def __init__(self, gpu: GPU, sampling_period_s: float, origin: float | None = None):
        self.gpu = gpu
        self.origin = time.monotonic() if origin is None else origin  # a job's GPUs share one origin
        self.e0_mj = gpu.energy_mj()
        self.sampler = Sampler(gpu, sampling_period_s, self.origin)

    def start(self) -> NvmlMeter:
        """Start the background sampler."""
        self.sampler.start()
        return self

    def stop(self) -> pd.DataFrame:
        """Stop the sampler; return the samples."""
        return self.sampler.stop()

    def now(self) -> float:
        """Seconds since the meter started."""
        return time.monotonic() - self.origin

    def read_energy_j(self) -> float:
        """The counter in J since the meter started."""
        return (self.gpu.energy_mj() - self.e0_mj) / 1000.0

    def samples(self) -> pd.DataFrame:
        """Samples so far."""
        return self.sampler.frame()
