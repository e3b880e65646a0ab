"""Simulated GPU backend: a physical model of an H200-class card running the measurement protocol.

The card runs :class:`Work`: FLOPs, bytes and kernels per step (the engines' and CLEAR's work is built in
:mod:`phase_energy.measure.sim_workload`). Timing comes from that work and the SM clock; power from a
static part that rises with temperature, a clock-tree part, memory traffic and compute activity, each
scaled with the clock and the voltage it needs; a power-cap controller picks the highest clock whose
power fits under the limit and sets the SW power-cap reason, which it holds for a while after the capped
work ends; a clock lock bounds the clock (with an optional firmware clamp); temperature follows power
with a time constant. Sensors are sampled as NVML reports them: a counter that ticks every ~100 ms, an
instant power covering part of each period, a 1-s running average.

Every parameter lives in :class:`~phase_energy.measure.sim_params.SimParams` and is documented there
(docs/simulator.md). Nothing about
architectures' classes, savings or crossovers is in here: they must come out of FLOPs, bytes and power.
"""

from __future__ import annotations

import bisect
import functools
import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from phase_energy.measure.sim_params import SimParams
from phase_energy.measure.trace import SAMPLE_COLUMNS, THROTTLE_COLUMNS, conform

log = logging.getLogger(__name__)

REASON_IDLE = 0x1
REASON_SW_POWER_CAP = 0x4
WORK_CACHE_BYTES = 64 << 20  # a card's cached step terms (per work and clock set) are dropped beyond this
BISECT_STEPS = 16  # from this many steps a power-capped piece of work finds its clocks without the whole grid


@dataclass
class Work:
    """A batch of identical GPU work items (steps) to place on the timeline."""

    flops: np.ndarray  # per step
    bytes: np.ndarray  # per step
    rows: float  # GEMM rows (batch x tokens per step)
    kernels: int
    efficiency: float = 1.0
    eager: bool = False  # issued kernel by kernel from the host (the prefill), not replayed from a graph

    @functools.cached_property
    def key(self) -> tuple[Any, ...]:
        """What the card's time and power of this work depend on (a Work is not changed once built)."""
        return self.flops.tobytes(), self.bytes.tobytes(), self.rows, self.kernels, self.efficiency, self.eager


def _steps(w: Work, start: int, end: int) -> Work:
    """Steps ``start:end`` of a piece of work."""
    return Work(w.flops[start:end], w.bytes[start:end], w.rows, w.kernels, w.efficiency, w.eager)


class SimGPU:
    """A simulated card with a virtual clock: work appends segments, sensors read the timeline."""

    def __init__(self, params: SimParams | None = None, seed: int = 0):
        self.p = params or SimParams()
        self.rng = np.random.default_rng(seed)
        self.clocks = self.p.supported_clocks()
        self.limit_w = self.p.power_limit_w
        self.locked_clock: int | None = None
        self.t = 0.0
        self.energy = 0.0
        self.temperature = self.p.idle_temperature()
        self._seg: dict[str, list[np.ndarray]] = {
            k: [] for k in ("start", "dur", "power", "clock", "reasons", "util", "temp")
        }
        self._timeline: dict[str, np.ndarray] | None = None
        self._terms: dict[bytes, tuple[np.ndarray, ...]] = {}
        self._work_cache: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._work_cache_bytes = 0
        self._last_fit: dict[tuple[Any, ...], np.ndarray | None] = {}  # None: the power does not rise with the clock
        self._allowed: dict[float, np.ndarray] = {}  # the clocks a lock (and clamp) allows, per highest clock
        # per appended piece: (edges, cumulative energy), the running sums continued from the piece before
        self._energy_pieces: list[tuple[np.ndarray, np.ndarray]] = []
        self._piece_starts: list[float] = []
        self.counter_phase = float(self.rng.uniform(0, self.p.counter_period_s))
        # a setting changed less than clock_switch_latency_s ago: (when it takes effect, the settings before)
        self._pending: tuple[float, int | None, float] | None = None
        self.idle(1.0)  # process start: the card idles with a context open before the protocol begins

    # ------------------------------------------------------------ device interface (named as NVML's)
    index = 0
    keeps_settings = False  # a simulated card's settings end with the object: no restore journal

    def uuid(self) -> str:
        """A stable identifier of the simulated card."""
        return f"SIM-{self.p.name}"

    def other_compute_pids(self) -> list[int]:
        """Nobody else computes on a simulated card."""
        return []

    def power_limit_range_w(self) -> tuple[float, float]:
        """The settable power-limit range."""
        return self.p.power_limit_min_w, self.p.power_limit_w

    def supported_sm_clocks_mhz(self) -> list[int]:
        """Clocks an SM clock lock accepts."""
        return [int(c) for c in self.clocks]

    def power_limit_w(self) -> float:
        """The power limit set now."""
        return self.limit_w

    def enforced_power_limit_w(self) -> float:
        """The limit the firmware enforces (the one set)."""
        return self.limit_w

    def set_power_limit_w(self, watts: float) -> None:
        """Set the power limit (within the card's constraints)."""
        if not self.p.power_limit_min_w <= watts <= self.p.power_limit_w:
            raise ValueError(
                f"power limit {watts} W outside {self.p.power_limit_min_w:g}-{self.p.power_limit_w:g} W"
            )
        self._changing()
        self.limit_w = float(watts)

    def lock_sm_clock_mhz(self, mhz: int) -> None:
        """Lock the SM clock; the value must be a supported clock."""
        if mhz not in set(self.clocks.tolist()):
            near = self.clocks[np.argmin(np.abs(self.clocks - mhz))]
            raise ValueError(f"SM clock {mhz} MHz is not supported; nearest supported: {near} MHz")
        self._changing()
        self.locked_clock = int(mhz)

    def reset_sm_clock(self) -> None:
        """Release the SM clock lock."""
        self._changing()
        self.locked_clock = None

    def clocks_mhz(self) -> tuple[int, int]:
        """(SM, memory) clocks as NVML reports them now: the SM clock of the latest work or idle on the timeline."""
        clocks = self._seg["clock"]
        return (int(clocks[-1][-1]) if clocks and len(clocks[-1]) else int(self.max_clock)), self.p.mem_clock_mhz

    def _changing(self) -> None:
        """A setting is about to change: the work of the next ``clock_switch_latency_s`` runs under the old one."""
        if self.p.clock_switch_latency_s <= 0:
            return
        if self._pending is None or self.t >= self._pending[0]:  # else: the settings before the first change hold
            self._pending = (self.t, self.locked_clock, self.limit_w)
        self._pending = (self.t + self.p.clock_switch_latency_s, self._pending[1], self._pending[2])

    def _old_settings_until(self) -> float | None:
        """When a pending change takes effect (None: none pending)."""
        if self._pending is not None and self.t >= self._pending[0]:
            self._pending = None
        return None if self._pending is None else self._pending[0]

    def _under_old_settings(self, fn: Any) -> Any:
        """``fn()`` with the settings from before the pending change; the change stays pending if not yet due."""
        pending, self._pending = self._pending, None
        assert pending is not None
        new = self.locked_clock, self.limit_w
        self.locked_clock, self.limit_w = pending[1], pending[2]
        try:
            return fn()
        finally:
            self.locked_clock, self.limit_w = new
            self._pending = pending if self.t < pending[0] else None

    @property
    def max_clock(self) -> float:
        """Highest clock the firmware grants now (lock and clamp)."""
        f = float(self.locked_clock or self.p.sm_clock_max_mhz)
        if self.locked_clock and self.p.firmware_clamp_mhz:
            f = min(f, float(self.p.firmware_clamp_mhz))
        return f

    # ------------------------------------------------------------ physics
    def _bandwidth(self, f: np.ndarray) -> np.ndarray:
        return self.p.bandwidth_bps * self.p.stream_efficiency * np.minimum(1.0, (f / self.p.bw_knee_mhz) ** 0.7)

    def _clock_terms(self, f: np.ndarray) -> tuple[np.ndarray, ...]:
        """The terms of a step's time and power that depend on the clocks alone (computed once per clock set)."""
        key = f.tobytes()
        terms = self._terms.get(key)
        if terms is None:
            g = self.p.clock_scale(f)
            terms = (self._bandwidth(f), self.p.gemm_rate(f),
                     self.p.kernel_time_fixed_s + self.p.kernel_time_clocked_s * self.p.sm_clock_max_mhz / f, g,
                     self.p.clock_tree_w * g, self.p.memory_w + self.p.memory_sm_w * g)
            self._terms[key] = terms
        return terms

    @staticmethod
    def _work_key(w: Work, f: np.ndarray) -> tuple[Any, ...]:
        return w.key, f.shape, f.tobytes()

    def _work_terms(self, w: Work, f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The parts of a step's time and power that do not depend on the temperature, for steps x clocks.

        (time, memory power, compute power), each computed once per work and clock set: a job runs the same
        work again and again (a window's repetitions, each trial's prefill) at a different temperature only.
        """
        key = self._work_key(w, f)
        terms = self._work_cache.get(key)
        if terms is not None:
            return terms
        bandwidth, gemm_rate, kernel_s, g, _, memory_w = self._clock_terms(f)
        flops = w.flops[:, None]
        nbytes = w.bytes[:, None]
        t_mem = nbytes / bandwidth
        small = w.rows / (w.rows + self.p.matmul_rows_half)
        t_cmp = flops / (gemm_rate * small * w.efficiency)
        t_ker = w.kernels * kernel_s
        t = np.maximum(t_mem, t_cmp) + t_ker
        if w.eager:  # the host issues kernel by kernel, ahead of the GPU: the slower of the two sets the pace
            t = np.maximum(t, w.kernels * self.p.prefill_kernel_time_s)
        u_mem = nbytes / t / self.p.bandwidth_bps
        # compute activity: the share of the step the SMs spend on this work's compute at its own rate (a
        # prefill's attention and elementwise kernels keep them as busy as its GEMMs)
        u_cmp = flops / t / (gemm_rate * w.efficiency)
        terms = (t, u_mem * memory_w, u_cmp * self.p.compute_w * g)
        size = sum(a.nbytes for a in terms)
        if self._work_cache_bytes + size > WORK_CACHE_BYTES:
            self._work_cache.clear()
            self._last_fit.clear()
            self._work_cache_bytes = 0
        self._work_cache[key] = terms
        self._work_cache_bytes += size
        return terms

    def _step(self, w: Work, f: np.ndarray, temp: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Step time (s) and power (W) for steps x clocks (broadcast); ``temp``: per step, C."""
        t, mem_w, cmp_w = self._work_terms(w, f)
        tree_w = self._clock_terms(f)[4]
        # summed in this order (static first), the same numbers whatever was cached
        return t, self.p.static_power(np.reshape(temp, (-1, 1))) + tree_w + mem_w + cmp_w

    def _temperatures_ahead(self, dur: np.ndarray, power: np.ndarray) -> np.ndarray:
        """Mean temperature over each of consecutive segments starting now (first order, closed form).

        Exact when the power is the same over the segments (the steps of one piece of work); the clock
        choice and the static power of each step use it.
        """
        tau = self.p.thermal_tau_s
        target = self.p.ambient_c + self.p.thermal_resistance_c_per_w * power
        start = np.concatenate([[0.0], np.cumsum(dur)[:-1]])
        t_start = target + (self.temperature - target) * np.exp(-start / tau)
        d = np.maximum(dur, 1e-12)
        return target + (t_start - target) * (tau / d) * -np.expm1(-d / tau)

    def _choose_clock(self, w: Work, temp: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per step: the highest allowed clock under the power limit; (time, power, clock, capped).

        ``temp``: the temperature of each step (default: the card's now). The power at a clock includes the
        static power at that temperature, so a hotter card reaches the limit at a lower clock.
        """
        allowed = self._allowed.get(self.max_clock)
        if allowed is None:
            allowed = self.clocks[self.clocks <= self.max_clock + 1e-9].astype(float)
            if not len(allowed):
                allowed = np.array([self.max_clock])
            self._allowed[self.max_clock] = allowed
        if temp is None:
            temp = np.full(len(w.flops), self.temperature)
        # the top clock first: when every step fits under the limit there, it is the clock (no grid needed)
        t, p = self._step(w, allowed[None, -1:], temp)
        if (p[:, 0] <= self.limit_w).all():
            n = len(t)
            return t[:, 0], np.minimum(p[:, 0], self.limit_w * 1.003), np.full(n, allowed[-1]), np.zeros(n, bool)
        f = allowed[None, :]
        rows = np.arange(len(t))
        idx = self._highest_fitting(w, f, temp) if len(t) >= BISECT_STEPS else None
        if idx is not None:
            t, mem_w, cmp_w = self._work_terms(w, f)
            # the same sum as _step's, at the chosen clock only
            p = self.p.static_power(temp) + self._clock_terms(f)[4][0, idx] + mem_w[rows, idx] + cmp_w[rows, idx]
            return t[rows, idx], np.minimum(p, self.limit_w * 1.003), allowed[idx], idx < len(allowed) - 1
        t, p = self._step(w, f, temp)
        fits = p <= self.limit_w
        # index of the highest clock that fits; the lowest clock when none fits
        idx = np.where(fits.any(axis=1), fits.shape[1] - 1 - np.argmax(fits[:, ::-1], axis=1), 0)
        capped = idx < len(allowed) - 1
        return t[rows, idx], np.minimum(p[rows, idx], self.limit_w * 1.003), allowed[idx], capped

    def _highest_fitting(self, w: Work, f: np.ndarray, temp: np.ndarray) -> np.ndarray | None:
        """Per step: the index in ``f`` of the highest clock whose power fits (0: none), without the whole grid.

        None unless every term of the power (as :meth:`_step` sums it) rises or stays from one clock to the
        next: a rounded sum of such terms never falls, so the clocks that fit are those below one index. The
        same work's last answer (a window's repetition before, a little cooler or warmer) is checked first:
        it holds for a step when its clock fits and the next does not; the other steps bisect.
        """
        key = self._work_key(w, f)
        _, mem_w, cmp_w = self._work_terms(w, f)
        tree_w = self._clock_terms(f)[4][0]
        if key not in self._last_fit:
            rises = all((np.diff(x, axis=-1) >= 0).all() for x in (tree_w, mem_w, cmp_w))
            self._last_fit[key] = np.zeros(0, dtype=np.intp) if rises else None
        last = self._last_fit[key]
        if last is None:
            return None
        static = self.p.static_power(temp)
        n, m = mem_w.shape

        def fits(rows: np.ndarray, at: np.ndarray) -> np.ndarray:
            return static[rows] + tree_w[at] + mem_w[rows, at] + cmp_w[rows, at] <= self.limit_w

        rows = np.arange(n)
        if len(last) != n:  # no answer yet
            idx, todo = np.zeros(n, dtype=np.intp), rows
        else:
            holds = (fits(rows, last) | (last == 0)) & ((last == m - 1) | ~fits(rows, np.minimum(last + 1, m - 1)))
            idx, todo = last.copy(), rows[~holds]
        lo = np.zeros(len(todo), dtype=np.intp)  # the clocks below lo fit
        hi = np.full(len(todo), m, dtype=np.intp)  # those from hi up do not
        while (active := lo < hi).any():
            mid = (lo + hi) // 2
            ok = fits(todo, np.minimum(mid, m - 1))
            lo, hi = np.where(active & ok, mid + 1, lo), np.where(active & ~ok, mid, hi)
        idx[todo] = np.maximum(lo - 1, 0)
        self._last_fit[key] = idx
        return idx

    def run(self, w: Work) -> float:
        """Place the work on the timeline; return its total seconds.

        Two passes: the clocks at the temperature now give each step's power, hence the temperature each
        step will run at; the clocks and power are then chosen again at those temperatures.
        """
        until = self._old_settings_until()
        if until is not None:  # a changed setting has not reached the clocks yet: the steps that start before it
            t_old = self._under_old_settings(lambda: self._choose_clock(w)[0])
            starts = self.t + np.concatenate([[0.0], np.cumsum(t_old)[:-1]])
            n_old = int((starts < until).sum())
            head = self._under_old_settings(lambda: self.run(_steps(w, 0, n_old)))
            if n_old == len(w.flops):
                return head
            self._pending = None  # the change is due: the rest of the work runs under it
            return head + self.run(_steps(w, n_old, len(w.flops)))
        t, p, f, capped = self._choose_clock(w)
        t, p, f, capped = self._choose_clock(w, self._temperatures_ahead(t, p))
        reasons = np.where(capped, REASON_SW_POWER_CAP, 0).astype(np.int64)
        self._append(t, p, f, reasons, np.ones_like(t))
        return float(t.sum())

    def idle(self, seconds: float) -> None:
        """The card idle (context open) for ``seconds``."""
        if seconds <= 0:
            return
        until = self._old_settings_until()
        if until is not None:  # the old settings' clock until the change takes effect, then the new one's
            head = min(seconds, until - self.t)
            self._under_old_settings(lambda: self.idle(head))
            if seconds > head:
                self._pending = None
                self.idle(seconds - head)
            return
        f = float(self.locked_clock or self.p.sm_clock_max_mhz)
        tree = self.p.clock_tree_w * float(self.p.clock_scale(f))
        n = max(1, int(np.ceil(seconds / 0.05)))
        dur = np.full(n, seconds / n)
        p = np.full(n, float(self.p.static_power(self.temperature)) + tree)
        p = self.p.static_power(self._temperatures_ahead(dur, p)) + tree
        self._append(dur, p, np.full(n, f), np.full(n, REASON_IDLE, dtype=np.int64), np.zeros(n))

    def _append(self, dur: np.ndarray, power: np.ndarray, clock: np.ndarray, reasons: np.ndarray,
                util: np.ndarray) -> None:
        start = self.t + np.concatenate([[0.0], np.cumsum(dur)[:-1]])
        # temperature: first-order response to power, evaluated per segment
        a = 1.0 - np.exp(-dur / self.p.thermal_tau_s)
        target = self.p.ambient_c + self.p.thermal_resistance_c_per_w * power
        cur = float(self.temperature)
        # sequential, in Python floats: the same IEEE operations in the same order as ever (a comprehension
        # is the fastest loop Python has for it)
        temp = np.array([cur := cur + ai * (ti - cur) for ai, ti in zip(a.tolist(), target.tolist(), strict=True)],
                        dtype=float)
        self.temperature = cur
        for k, v in zip(("start", "dur", "power", "clock", "reasons", "util", "temp"),
                        (start, dur, power, clock, reasons, util, temp), strict=True):
            self._seg[k].append(np.asarray(v))
        self._timeline = None  # the joined arrays are built again when next read
        total = self._energy_pieces[-1][1][-1] if self._energy_pieces else 0.0
        # the same left-to-right sums as a cumulative sum over the whole timeline
        self._energy_pieces.append((start + dur, np.cumsum(np.concatenate([[total], dur * power]))[1:]))
        self._piece_starts.append(float(start[0]) if len(start) else self.t)
        self.t += float(dur.sum())
        self.energy += float((dur * power).sum())

    def timeline(self) -> dict[str, np.ndarray]:
        """All segments so far as arrays (joined once per change of the timeline)."""
        if self._timeline is None:
            tl = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in self._seg.items()}
            tl["cum_energy"] = np.concatenate([[0.0], np.cumsum(tl["dur"] * tl["power"])])
            tl["edges"] = np.concatenate([[0.0], tl["start"] + tl["dur"]])
            self._timeline = tl
        return self._timeline

    def cap_intervals(self) -> tuple[np.ndarray, np.ndarray]:
        """(starts, ends) of the spans with the SW power-cap reason set, merged and ascending.

        The controller sets the reason while it holds the clock under the limit and keeps it set for
        ``cap_hold_s`` after the capped work ends, whatever runs then (the clocks are not held).
        """
        tl = self.timeline()
        capped = (tl["reasons"].astype(np.int64) & REASON_SW_POWER_CAP) > 0
        starts = tl["start"][capped]
        ends = starts + tl["dur"][capped] + self.p.cap_hold_s
        if not len(starts):
            return starts, ends
        # segments are in time order and the hold is the same after each: the ends ascend too
        new = np.concatenate([[True], starts[1:] > ends[:-1]])
        last = np.concatenate([np.flatnonzero(new)[1:] - 1, [len(new) - 1]])
        return starts[new], ends[last]

    def _cap_reason_at(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per time: whether the SW power-cap reason is set, and its cumulative seconds (throttle counter)."""
        gs, ge = self.cap_intervals()
        if not len(gs):
            return np.zeros(len(times), dtype=bool), np.zeros(len(times))
        k = np.searchsorted(gs, times, side="right") - 1
        kk = np.maximum(k, 0)
        before = np.concatenate([[0.0], np.cumsum(ge - gs)])
        held = (k >= 0) & (times < ge[kk])
        total = np.where(k >= 0, before[kk] + np.clip(times - gs[kk], 0.0, ge[kk] - gs[kk]), 0.0)
        return held, total

    # ------------------------------------------------------------ sensors
    def _true_energy_at(self, times: np.ndarray) -> np.ndarray:
        tl = self.timeline()
        if not len(tl["dur"]):
            return np.zeros_like(times)
        return np.interp(times, tl["edges"], tl["cum_energy"])

    def _true_energy_now(self, x: float) -> float:
        """The true energy at one time ``x`` (a counter read), from the appended piece that holds it."""
        if not self._energy_pieces:
            return 0.0
        i = max(0, bisect.bisect_right(self._piece_starts, x) - 1)
        edges, cum = self._energy_pieces[i]
        if i == 0:
            return float(np.interp(x, np.concatenate([[0.0], edges]), np.concatenate([[0.0], cum])))
        prev_edges, prev_cum = self._energy_pieces[i - 1]
        return float(np.interp(x, np.concatenate([prev_edges[-1:], edges]), np.concatenate([prev_cum[-1:], cum])))

    def counter_now(self) -> float:
        """The energy counter read now: :meth:`counter_j` at the current time, without joining the timeline."""
        period, phase = self.p.counter_period_s, self.counter_phase
        tick = max(float(np.floor((self.t - phase) / period) * period + phase), 0.0)
        return float(np.floor(self._true_energy_now(min(tick, self.t)) * 1000.0) / 1000.0)

    def counter_j(self, times: np.ndarray) -> np.ndarray:
        """The energy counter as read at ``times``: the value of the last ~100 ms tick (mJ resolution)."""
        period, phase = self.p.counter_period_s, self.counter_phase
        ticks = np.floor((np.asarray(times) - phase) / period) * period + phase
        ticks = np.maximum(ticks, 0.0)
        return np.floor(self._true_energy_at(ticks) * 1000.0) / 1000.0

    def sample(self, period_s: float) -> pd.DataFrame:
        """The samples table over the whole timeline, as the NVML sampler would have polled it."""
        tl = self.timeline()
        t_end = self.t
        times = np.arange(0.0, t_end, period_s)
        if not len(times):
            times = np.array([0.0])
        ends = tl["start"] + tl["dur"]
        idx = np.clip(np.searchsorted(ends, times, side="right"), 0, max(len(ends) - 1, 0))
        e_true = lambda x: self._true_energy_at(np.clip(x, 0.0, t_end))  # noqa: E731
        e_now = e_true(times)
        w_i = self.p.instant_window_s
        instant = (e_now - e_true(times - w_i)) / np.where(times >= w_i, w_i, np.maximum(times, 1e-9))
        w_a = self.p.average_window_s
        avg = (e_now - e_true(times - w_a)) / np.where(times >= w_a, w_a, np.maximum(times, 1e-9))
        noise = self.rng.normal(0.0, self.p.power_noise, size=len(times))
        held, thr = self._cap_reason_at(times)
        reasons = tl["reasons"][idx].astype(np.int64) if len(idx) else np.zeros(len(times), dtype=np.int64)
        reasons = np.where(held, reasons | REASON_SW_POWER_CAP, reasons)
        zeros = np.zeros(len(times))
        cols = {
            "t_s": times,
            "power_t_s": times,
            "energy_j": self.counter_j(times),
            "power_instant_w": instant * (1 + noise),
            "power_avg_w": avg,
            "sm_clock_mhz": tl["clock"][idx] if len(idx) else zeros,
            "mem_clock_mhz": np.full(len(times), float(self.p.mem_clock_mhz)),
            "clock_reasons": reasons,
            "thr_sw_power_s": thr,
            "thr_sw_thermal_s": zeros, "thr_hw_thermal_s": zeros, "thr_hw_power_brake_s": zeros,
            "thr_board_limit_s": zeros, "thr_reliability_s": zeros,
            "temperature_c": np.round(tl["temp"][idx], 0) if len(idx) else zeros,
            "utilization_pct": 100.0 * tl["util"][idx] if len(idx) else zeros,
            "n_processes": np.ones(len(times), dtype=np.int64),
            "gap": np.zeros(len(times), dtype=bool),
        }
        assert set(THROTTLE_COLUMNS) <= set(cols)
        same = list(cols) == list(SAMPLE_COLUMNS) and all(str(v.dtype) == SAMPLE_COLUMNS[c] for c, v in cols.items())
        return pd.DataFrame(cols) if same else conform(pd.DataFrame(cols), SAMPLE_COLUMNS)  # built once when it can

    # ------------------------------------------------------------ micro-benchmarks
    def matmul_load(self, n: int = 8192, seconds: float = 8.0) -> dict[str, float]:
        """A bf16 n^3 matmul loop for ``seconds``: achieved FLOP/s, mean power and clock."""
        one = Work(np.array([2.0 * n**3]), np.array([3.0 * n * n * 2]), rows=n, kernels=1)
        t, _, f, capped = self._choose_clock(one)
        reps = max(1, int(seconds / t[0]))
        w = Work(np.full(reps, 2.0 * n**3), np.full(reps, 3.0 * n * n * 2), rows=n, kernels=1)
        e0, t0 = self.energy, self.t
        self.run(w)
        dt = self.t - t0
        return {"flops": reps * 2.0 * n**3 / dt, "power_w": (self.energy - e0) / dt,
                "sm_clock_mhz": float(f[0]), "capped": float(capped[0])}

    def describe(self) -> dict[str, Any]:
        """GPU block of the trace metadata."""
        return {
            "name": self.p.name, "driver": None,
            "supported_sm_clocks_mhz": [int(x) for x in self.clocks],
            "power_limit_range_w": [self.p.power_limit_min_w, self.p.power_limit_w],
            "bandwidth_bps": self.p.bandwidth_bps, "matmul_flops": self.matmul_rate_measured(),
            "sim_params": asdict(self.p),
        }

    def matmul_rate_measured(self) -> float:
        """The matmul ceiling a real job records (metadata ``gpu.matmul_flops``).

        A real job measures it with a ~40 ms bf16 8192^3 burst at the card's default settings, before the
        lever is applied and quicker than the power controller pulls the clock down: the top clock's rate.
        """
        n = 8192.0
        return float(self.p.gemm_rate(self.p.sm_clock_max_mhz)) * n / (n + self.p.matmul_rows_half)


class SimMeter:
    """Clock and counter of a :class:`SimGPU`."""

    def __init__(self, gpu: SimGPU, sampling_period_s: float):
        self.gpu = gpu
        self.period = sampling_period_s

    def now(self) -> float:
        """Virtual seconds since the origin."""
        return self.gpu.t

    def read_energy_j(self) -> float:
        """The counter at the current virtual time (its last tick)."""
        return self.gpu.counter_now()

    def start(self) -> SimMeter:
        """Nothing to start: the timeline is sampled when asked."""
        return self

    def stop(self) -> pd.DataFrame:
        """The samples of the whole timeline."""
        return self.samples()

    def samples(self) -> pd.DataFrame:
        """Sampled sensors over the whole timeline."""
        return self.gpu.sample(self.period)
