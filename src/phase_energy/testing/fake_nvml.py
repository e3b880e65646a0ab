"""A stateful fake of the ``pynvml`` module, for tests: the real card's settings are never touched.

It keeps power limits, supported clocks, a clock lock, permissions, other processes and counters that
advance with a simulated power draw, gives every card its own UUID, and can make any call fail (``inject``).
Its state lives in the process that made it: a test that needs "the same card" in two processes makes
one fake in each, with the same UUID.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_UNKNOWN = 999
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_TEMPERATURE_GPU = 0


class NVMLError(Exception):
    """Same shape as pynvml.NVMLError: ``value`` holds the return code."""

    def __init__(self, value: int):
        super().__init__(f"NVML error {value}")
        self.value = value


@dataclass
class FakeCard:
    """State of one fake GPU."""

    name: str = "NVIDIA H200"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    serial: str = "0000000000000"
    power_limit_mw: int = 700_000
    default_limit_mw: int = 700_000
    limit_range_mw: tuple[int, int] = (200_000, 700_000)
    mem_clocks: tuple[int, ...] = (3201, 2201)
    sm_clocks: tuple[int, ...] = tuple(range(345, 1981, 15))
    locked: tuple[int, int] | None = None
    load_w: float = 0.0  # power on top of idle while "running"
    idle_w: float = 122.0
    other_pids: list[int] = field(default_factory=list)
    root: bool = True
    energy_mj: float = 1_000_000.0
    throttle_ns: dict[int, int] = field(default_factory=lambda: dict.fromkeys((74, 269, 270, 271, 77, 79), 0))
    t_last: float = field(default_factory=time.monotonic)
    # a lock or its release shows in the reported SM clock this long after the call (0: at once)
    switch_latency_s: float = 0.0
    clock_before: int | None = None  # the SM clock reported before the latest lock or release
    clock_changed_at: float = 0.0
    # the sampler thread and the workload both advance the counter: one at a time, or energy counts twice
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def sm_clock(self) -> int:
        """The SM clock reported now: the lock's, the top one, or the one before a change not yet reached."""
        if self.clock_before is not None and time.monotonic() - self.clock_changed_at < self.switch_latency_s:
            return self.clock_before
        return self.locked[1] if self.locked else max(self.sm_clocks)

    def change_lock(self, locked: tuple[int, int] | None) -> None:
        """Lock (or release, None) the SM clock; the reported clock follows after ``switch_latency_s``."""
        self.clock_before, self.clock_changed_at = self.sm_clock(), time.monotonic()
        self.locked = locked

    def power_w(self) -> float:
        return min(self.idle_w + self.load_w, self.power_limit_mw / 1000.0)

    def advance(self) -> None:
        """Add the energy since the last call at the present power."""
        with self.lock:
            self._advance()

    def set_load(self, watts: float) -> None:
        """Start (or end, at 0 W) drawing ``watts`` above idle, the energy so far counted at the old power."""
        with self.lock:
            self._advance()
            self.load_w = watts

    def _advance(self) -> None:
        now = time.monotonic()
        dt = now - self.t_last
        self.t_last = now
        self.energy_mj += self.power_w() * dt * 1000.0
        if self.idle_w + self.load_w > self.power_limit_mw / 1000.0:
            self.throttle_ns[74] += int(dt * 1e9)


class FakeNVML:
    """Module-like object with the pynvml functions phase-energy calls."""

    NVMLError = NVMLError
    NVML_ERROR_NO_PERMISSION = NVML_ERROR_NO_PERMISSION
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    NVML_CLOCK_SM = NVML_CLOCK_SM
    NVML_CLOCK_MEM = NVML_CLOCK_MEM

    def __init__(self, n_gpus: int = 1, **card: Any):
        # every card its own UUID (card i ends in i), as on a real node, unless the test names one
        self.cards = [FakeCard(**{"uuid": f"GPU-00000000-0000-0000-0000-{i:012d}", **card}) for i in range(n_gpus)]
        self.calls: list[str] = []
        self._faults: dict[str, list[int]] = {}  # name -> [calls to let pass, error code, failures left]
        self.initialised = False

    # ------------------------------------------------------------ fault injection
    def inject(self, name: str, code: int = NVML_ERROR_UNKNOWN, after: int = 0, times: int = 1) -> None:
        """Let ``after`` calls of ``name`` pass, then make the next ``times`` calls fail with ``code``."""
        self._faults[name] = [after, code, times]

    def _enter(self, name: str) -> None:
        self.calls.append(name)
        fault = self._faults.get(name)
        if not fault:
            return
        if fault[0] > 0:
            fault[0] -= 1
            return
        code = fault[1]
        fault[2] -= 1
        if fault[2] <= 0:
            del self._faults[name]
        raise NVMLError(code)

    def _card(self, handle: Any) -> FakeCard:
        return self.cards[handle.index]

    def _privileged(self, handle: Any) -> FakeCard:
        card = self._card(handle)
        if not card.root:
            raise NVMLError(NVML_ERROR_NO_PERMISSION)
        return card

    # ------------------------------------------------------------ API
    def nvmlInit(self) -> None:
        self._enter("nvmlInit")
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.cards)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> Any:
        self._enter("nvmlDeviceGetHandleByIndex")
        return SimpleNamespace(index=i)

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter("nvmlSystemGetDriverVersion")
        return "580.159.04 (fake)"

    def nvmlDeviceGetName(self, h: Any) -> str:
        self._enter("nvmlDeviceGetName")
        return self._card(h).name

    def nvmlDeviceGetUUID(self, h: Any) -> str:
        self._enter("nvmlDeviceGetUUID")
        return self._card(h).uuid

    def nvmlDeviceGetSerial(self, h: Any) -> str:
        self._enter("nvmlDeviceGetSerial")
        return self._card(h).serial

    def nvmlDeviceGetTotalEnergyConsumption(self, h: Any) -> int:
        self._enter("nvmlDeviceGetTotalEnergyConsumption")
        c = self._card(h)
        c.advance()
        return int(c.energy_mj)

    def nvmlDeviceGetFieldValues(self, h: Any, ids: list[int]) -> list[Any]:
        self._enter("nvmlDeviceGetFieldValues")
        c = self._card(h)
        c.advance()
        out = []
        for fid in ids:
            if fid in (185, 186):
                val, vt = int(c.power_w() * 1000), 1
            else:
                val, vt = c.throttle_ns.get(fid, 0), 3
            u = SimpleNamespace(dVal=float(val), uiVal=val, ulVal=val, ullVal=val, sllVal=val, siVal=val)
            out.append(SimpleNamespace(fieldId=fid, timestamp=int(time.monotonic() * 1e6), valueType=vt,
                                       nvmlReturn=0, value=u))
        return out

    def nvmlDeviceGetPowerUsage(self, h: Any) -> int:
        self._enter("nvmlDeviceGetPowerUsage")
        return int(self._card(h).power_w() * 1000)

    def nvmlDeviceGetClockInfo(self, h: Any, kind: int) -> int:
        self._enter("nvmlDeviceGetClockInfo")
        c = self._card(h)
        if kind == NVML_CLOCK_MEM:
            return c.mem_clocks[0]
        return c.sm_clock()

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: Any) -> int:
        self._enter("nvmlDeviceGetCurrentClocksEventReasons")
        c = self._card(h)
        return 0x4 if c.idle_w + c.load_w > c.power_limit_mw / 1000 else (0x1 if c.load_w == 0 else 0)

    def nvmlDeviceGetTemperature(self, h: Any, sensor: int) -> int:
        self._enter("nvmlDeviceGetTemperature")
        return 40 + int(self._card(h).power_w() / 20)

    def nvmlDeviceGetUtilizationRates(self, h: Any) -> Any:
        self._enter("nvmlDeviceGetUtilizationRates")
        return SimpleNamespace(gpu=100 if self._card(h).load_w else 0, memory=0)

    def nvmlDeviceGetComputeRunningProcesses(self, h: Any) -> list[Any]:
        self._enter("nvmlDeviceGetComputeRunningProcesses")
        return [SimpleNamespace(pid=p, usedGpuMemory=0) for p in [os.getpid(), *self._card(h).other_pids]]

    def nvmlDeviceGetSupportedMemoryClocks(self, h: Any) -> list[int]:
        self._enter("nvmlDeviceGetSupportedMemoryClocks")
        return list(self._card(h).mem_clocks)

    def nvmlDeviceGetSupportedGraphicsClocks(self, h: Any, mem: int) -> list[int]:
        self._enter("nvmlDeviceGetSupportedGraphicsClocks")
        return sorted(self._card(h).sm_clocks, reverse=True)

    def nvmlDeviceGetPowerManagementLimit(self, h: Any) -> int:
        self._enter("nvmlDeviceGetPowerManagementLimit")
        return self._card(h).power_limit_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, h: Any) -> int:
        self._enter("nvmlDeviceGetEnforcedPowerLimit")
        return self._card(h).power_limit_mw

    def nvmlDeviceGetPowerManagementLimitConstraints(self, h: Any) -> tuple[int, int]:
        self._enter("nvmlDeviceGetPowerManagementLimitConstraints")
        return self._card(h).limit_range_mw

    def nvmlDeviceSetPowerManagementLimit(self, h: Any, mw: int) -> None:
        self._enter("nvmlDeviceSetPowerManagementLimit")
        c = self._privileged(h)
        lo, hi = c.limit_range_mw
        if not lo <= mw <= hi:
            raise NVMLError(2)
        c.advance()
        c.power_limit_mw = mw

    def nvmlDeviceSetGpuLockedClocks(self, h: Any, lo: int, hi: int) -> None:
        self._enter("nvmlDeviceSetGpuLockedClocks")
        c = self._privileged(h)
        c.change_lock((lo, hi))

    def nvmlDeviceResetGpuLockedClocks(self, h: Any) -> None:
        self._enter("nvmlDeviceResetGpuLockedClocks")
        c = self._privileged(h)
        c.change_lock(None)

    # ------------------------------------------------------------ test helpers
    def settings(self, i: int = 0) -> tuple[int, tuple[int, int] | None]:
        """(power limit mW, lock) of card i, to compare before and after a job."""
        c = self.cards[i]
        return c.power_limit_mw, c.locked
