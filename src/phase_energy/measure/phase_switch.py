"""A phase lever's switch at the phase boundary, measured as a window of its own.

A phase lever (``phase:prefill=<lever>,decode=<lever>``, :class:`~phase_energy.grid.Lever`) holds one setting
while prefill runs and another while decode runs. At each boundary the job changes the setting through the
same :class:`~phase_energy.measure.levers.LeverControl` that applied it (journalled on a real card, restored
at the end) and opens a **switch window** (phase ``switch_decode`` or ``switch_prefill``): from the setter's
call, while the next phase's work runs one unit at a time (a decode step, or one prefill), until the SM clock
the device reports has settled, or ``measurement.switch_timeout_s`` has passed and more than ``SETTLE_READINGS``
units have run (flag ``switch_not_settled``).
Its duration is the switch's latency (to one unit of work), its energy the energy spent meanwhile; the
analysis subtracts what the same tokens cost in steady state under the new setting (docs/phase-policy.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from phase_energy.grid import Lever
from phase_energy.measure.backend import Device
from phase_energy.measure.levers import LeverControl
from phase_energy.measure.protocol import Meter, Window, Workload

log = logging.getLogger(__name__)

SETTLE_TOLERANCE = 0.02  # relative: a clock within this of its target, or of the reading before, has settled
SETTLE_READINGS = 2  # readings in a row that agree, where neither setting is a lock
SWITCH_PHASES = {"decode": "switch_decode", "prefill": "switch_prefill"}
NOT_SETTLED = "switch_not_settled"


def settled(readings: list[float], new: Lever, old: Lever) -> bool:
    """Whether the reported SM clocks (MHz, oldest first) show the new setting in force.

    A lock settles when the latest reading is within ``SETTLE_TOLERANCE`` of it. A released lock has no
    known target (the firmware picks the clock): it has settled when the latest reading has left the old
    lock by more than the tolerance. Between a power limit and the default neither is a lock: the clock has
    settled when the latest ``SETTLE_READINGS`` readings agree within the tolerance.
    """
    if not readings:
        return False
    f = readings[-1]
    if new.kind == "smclock":
        return abs(f - float(new.value or 0)) <= SETTLE_TOLERANCE * float(new.value or 1)
    if old.kind == "smclock":
        return abs(f - float(old.value or 0)) > SETTLE_TOLERANCE * float(old.value or 1)
    last = readings[-SETTLE_READINGS:]
    return len(last) == SETTLE_READINGS and max(last) - min(last) <= SETTLE_TOLERANCE * max(last)


class PhaseSwitch:
    """Switches a phase lever's setting at a phase boundary and measures the switch as a window."""

    def __init__(self, control: LeverControl, device: Device, timeout_s: float):
        self.control = control
        self.device = device
        self.timeout_s = timeout_s

    def window(self, meter: Meter, workload: Workload, phase: str, trial: int, run_unit: Callable[[], int]
               ) -> Window:
        """Switch to ``phase``'s setting and run its work until the reported SM clock settles.

        ``run_unit`` runs one unit of the phase's work and returns its tokens; the window spans the setter's
        call and that work.
        """
        old = self.control.current
        workload.synchronize()
        t0, e0 = meter.now(), meter.read_energy_j()
        new = self.control.switch(phase)
        readings: list[float] = []
        units = tokens = 0
        flags = ""
        while True:
            tokens += run_unit()
            units += 1
            workload.synchronize()
            readings.append(float(self.device.clocks_mhz()[0]))
            if settled(readings, new, old):
                break
            # not settled by the timeout: given up, but only after the readings the rule needs past the unit
            # the change landed in (a unit of work can outlast the timeout: a whole prefill, the way back,
            # takes seconds at a large batch, and the first may run under the old setting to its end)
            if meter.now() - t0 >= self.timeout_s and units > SETTLE_READINGS:
                flags = NOT_SETTLED
                log.warning("switch %s -> %s for %s: the SM clock (%.0f MHz) did not settle within %.2f s",
                            old, new, phase, readings[-1], self.timeout_s)
                break
        t1, e1 = meter.now(), meter.read_energy_j()
        log.info("switch %s -> %s for %s trial %d: %.1f ms, %d units, clock %.0f MHz", old, new, phase, trial,
                 1000 * (t1 - t0), units, readings[-1])
        return Window(SWITCH_PHASES[phase], trial, t0, t1, e1 - e0, tokens=tokens, repetitions=units,
                      steps=units if phase == "decode" else 1, extra_flags=flags)
