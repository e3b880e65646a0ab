"""The measurement protocol of one job (docs/protocol.md), shared by every backend.

A backend provides a :class:`Meter` (clock, energy counter, samples) and a :class:`Workload` (the engine or
its simulation). The protocol decides what runs inside which window; the window summary (trapezoid
cross-check, throttle times, clocks, validity flags) is computed here from the samples, identically for
real and simulated traces.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from .costmodel import prefill_group
from .trace import THROTTLE_COLUMNS, WINDOW_COLUMNS, conform

log = logging.getLogger(__name__)

MISMATCH_TOLERANCE = 0.02
CLOCK_TOLERANCE = 0.02
TEMPERATURE_DRIFT_C = 5.0


class Meter(Protocol):
    """Clock, energy counter and sampler of one GPU (real or simulated)."""

    def now(self) -> float:
        """Seconds since the job's time origin."""
        ...

    def read_energy_j(self) -> float:
        """The energy counter (J since the origin), read after the device is synchronised."""
        ...

    def samples(self) -> pd.DataFrame:
        """The samples table so far."""
        ...


class Workload(Protocol):
    """The work one job runs: a model at one batch and context (real engine or simulation)."""

    batch: int
    context: int

    def warmup(self, runs: int, prefill_sequences: int | None = None) -> tuple[float, float]:
        """Compile, capture and run untimed; return estimated (prefill s of ``prefill_sequences``, decode step s)."""
        ...

    def prefill(self, sequences: int | None = None) -> None:
        """Prefill ``context`` tokens for the first ``sequences`` (default: all ``batch``) into the cache."""
        ...

    def fill_cache(self, sequences: int) -> None:
        """Prefill the first ``sequences`` and copy their cache rows over the rest of the batch."""
        ...

    def decode(self, position: int, steps: int) -> None:
        """Run ``steps`` decode steps starting at cache position ``position``."""
        ...

    def idle(self, seconds: float) -> None:
        """Leave the GPU idle (context open) for ``seconds``."""
        ...

    def synchronize(self) -> None:
        """Wait until the device has finished all queued work."""
        ...


@dataclass
class Window:
    """One measured window before its summary from the samples."""

    phase: str
    trial: int
    start_s: float
    end_s: float
    energy_j: float
    tokens: int
    repetitions: int = 1
    steps: int = 1
    context_start: int = 0
    context_end: int = 0


@dataclass
class Settings:
    """Measurement settings (config ``measurement:``) plus the parts of the point the protocol needs."""

    warmup_runs: int = 3
    idle_s: float = 2.0
    min_counter_ticks: int = 10
    counter_period_ms: float = 100.0
    sampling_period_ms: float = 10.0
    prefill_trials: int = 5
    decode_trials: int = 3
    decode_windows: int = 4
    pause_s: float = 0.5
    lead_in_s: float = 0.3
    prefill_max_tokens: int | None = None
    decode_window_steps: int | None = None
    max_output: int = 1024
    locked_sm_clock_mhz: int | None = None

    @classmethod
    def from_config(cls, measurement: Mapping[str, Any], **kw: Any) -> Settings:
        """Build from the config's ``measurement`` section."""
        known = {k: v for k, v in measurement.items() if k in cls.__dataclass_fields__}
        return cls(**known, **kw)

    @property
    def min_window_s(self) -> float:
        """Shortest window that spans the minimum number of counter ticks."""
        return self.min_counter_ticks * self.counter_period_ms / 1000.0

    def prefill_sequences(self, batch: int, context: int) -> int:
        """Sequences one measured prefill processes.

        The whole batch, or as many whole prompts as fit in ``prefill_max_tokens`` (at least one).
        Production servers bound the tokens of a prefill step the same way (chunked prefill), so the energy
        per prefill token is that of a full batch's prefill.
        """
        if self.prefill_max_tokens is None:
            return batch
        return prefill_group(batch, context, self.prefill_max_tokens)


def decode_spans(s: Settings) -> list[tuple[int, int]]:
    """(offset from the context, steps) of each decode window of a trial.

    Without ``decode_window_steps`` the windows tile ``[0, max_output)``; with it, windows of that many steps
    sit at evenly spaced positions from the first to the last output token (the analysis interpolates the
    energy per token between them), so long outputs cost no more to measure than short ones.
    """
    n_win = max(1, min(s.decode_windows, s.max_output))
    if s.decode_window_steps is None or s.decode_window_steps * n_win >= s.max_output:
        bounds = np.linspace(0, s.max_output, n_win + 1).round().astype(int)
        return [(int(a), int(b - a)) for a, b in itertools.pairwise(bounds) if b > a]
    steps = s.decode_window_steps
    starts = np.linspace(0, s.max_output - steps, n_win).round().astype(int)
    return [(int(a), steps) for a in starts]


def _measured(meter: Meter, workload: Workload, fn: Any) -> tuple[float, float, float]:
    """Run ``fn`` between two synchronised counter reads; return (start, end, energy)."""
    workload.synchronize()
    t0, e0 = meter.now(), meter.read_energy_j()
    fn()
    workload.synchronize()
    t1, e1 = meter.now(), meter.read_energy_j()
    return t0, t1, e1 - e0


def run_protocol(meter: Meter, workload: Workload, s: Settings) -> list[Window]:
    """Idle baseline, warm-up, prefill trials and decode trials; return the raw windows."""
    windows: list[Window] = []
    b, ctx = workload.batch, workload.context

    if s.idle_s > 0:
        t0, t1, e = _measured(meter, workload, lambda: workload.idle(s.idle_s))
        windows.append(Window("idle", 0, t0, t1, e, tokens=0, repetitions=1, steps=0))

    n_seq = s.prefill_sequences(b, ctx)
    t_prefill, t_step = workload.warmup(s.warmup_runs, n_seq)
    log.info("warm-up done: prefill %.4f s (%d of %d sequences), decode step %.5f s", t_prefill, n_seq, b, t_step)

    reps = max(1, math.ceil(s.min_window_s / max(t_prefill, 1e-9)))
    lead = math.ceil(s.lead_in_s / max(t_prefill, 1e-9)) if s.lead_in_s > 0 else 0
    for trial in range(s.prefill_trials):
        for _ in range(lead):  # the same work first, so power and clocks are steady when the window opens
            workload.prefill(n_seq)

        def _prefill_reps() -> None:
            for _ in range(reps):
                workload.prefill(n_seq)
        t0, t1, e = _measured(meter, workload, _prefill_reps)
        windows.append(Window("prefill", trial, t0, t1, e, tokens=n_seq * ctx * reps, repetitions=reps,
                              steps=1, context_start=0, context_end=ctx))
        log.info("prefill trial %d/%d: %d repetitions, %.2f s", trial + 1, s.prefill_trials, reps, t1 - t0)
        if s.pause_s:
            workload.idle(s.pause_s)

    spans = decode_spans(s)
    for trial in range(s.decode_trials):
        workload.fill_cache(n_seq)  # outside every window
        for offset, steps in spans:
            start = ctx + offset
            reps = max(1, math.ceil(s.min_window_s / max(steps * t_step, 1e-9)))
            if s.lead_in_s > 0:  # steady state at the window's own positions before it opens
                for _ in range(math.ceil(s.lead_in_s / max(steps * t_step, 1e-9))):
                    workload.decode(start, steps)

            def _decode(start: int = start, steps: int = steps, reps: int = reps) -> None:
                for _ in range(reps):  # the same positions again: the static cache is rewritten
                    workload.decode(start, steps)
            t0, t1, e = _measured(meter, workload, _decode)
            windows.append(Window("decode", trial, t0, t1, e, tokens=b * steps * reps, repetitions=reps,
                                  steps=steps, context_start=start, context_end=start + steps))
        log.info("decode trial %d/%d done (%d windows)", trial + 1, s.decode_trials, len(spans))
        if s.pause_s:
            workload.idle(s.pause_s)
    return windows


def _trapz(t: np.ndarray, y: np.ndarray) -> float:
    if len(t) < 2:
        return float("nan")
    return float(np.sum((y[1:] + y[:-1]) * np.diff(t)) / 2.0)


def _interp_at(t: np.ndarray, y: np.ndarray, x: float) -> float:
    ok = ~np.isnan(y) & ~np.isnan(t)
    if ok.sum() == 0:
        return float("nan")
    return float(np.interp(x, t[ok], y[ok]))


def counter_ticks(samples: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Tick times and values of the energy counter, from the polls that saw it change.

    The counter updates about every 100 ms; a tick happened between the last poll that saw the old value
    and the first that saw the new one, so its time is taken as their midpoint (error: half a poll).
    """
    df = samples.loc[~samples["gap"].astype(bool) & samples["energy_j"].notna(), ["t_s", "energy_j"]]
    t = df["t_s"].to_numpy(dtype=float)
    e = df["energy_j"].to_numpy(dtype=float)
    if len(t) < 2:
        return t[:0], e[:0]
    changed = np.flatnonzero(np.diff(e) != 0) + 1
    return (t[changed] + t[changed - 1]) / 2.0, e[changed]


def tick_aligned_energy(ticks: tuple[np.ndarray, np.ndarray], start: float, end: float) -> float:
    """Window energy from the counter ticks that fall inside it: their mean power times the duration.

    A plain difference of two counter reads is off by up to one tick period of power at each end; inside
    a window of back-to-back identical work the power is steady, so the ticks inside it give its mean
    power without the edge error. NaN when fewer than two ticks fall inside.
    """
    tick_t, tick_e = ticks
    inside = (tick_t >= start) & (tick_t <= end)
    if inside.sum() < 2:
        return float("nan")
    ti, ei = tick_t[inside], tick_e[inside]
    return float((ei[-1] - ei[0]) / (ti[-1] - ti[0]) * (end - start))


def summarise_window(samples: pd.DataFrame, w: Window, s: Settings,
                     ticks: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Cross-check, clocks, throttle times and validity flags of one window from the samples."""
    t = samples["t_s"].to_numpy()
    inside = (t >= w.start_s) & (t <= w.end_s)
    sub = samples[inside]
    duration = w.end_s - w.start_s
    # trapezoid over instant power, with the ends interpolated onto the window's edges
    # on the device's own timestamps of the power readings (NVML field values carry them)
    tp = samples["power_t_s"].to_numpy(dtype=float)
    p = samples["power_instant_w"].to_numpy(dtype=float)
    pin = (tp >= w.start_s) & (tp <= w.end_s)
    tt = np.concatenate([[w.start_s], tp[pin], [w.end_s]])
    pp = np.concatenate([[_interp_at(tp, p, w.start_s)], p[pin], [_interp_at(tp, p, w.end_s)]])
    ok = ~np.isnan(pp) & ~np.isnan(tt)
    energy_trapz = _trapz(tt[ok], pp[ok])
    clock = sub["sm_clock_mhz"].to_numpy(dtype=float)
    if len(sub) >= 2:
        dt = np.diff(np.concatenate([sub["t_s"].to_numpy(), [w.end_s]]))
        good = ~np.isnan(clock)
        sm = float(np.sum(clock[good] * dt[good]) / max(np.sum(dt[good]), 1e-12))
    else:
        sm = float(np.nanmean(clock)) if len(clock) else float("nan")
    aligned = tick_aligned_energy(ticks if ticks is not None else counter_ticks(samples), w.start_s, w.end_s)
    energy = aligned if np.isfinite(aligned) else w.energy_j
    row: dict[str, Any] = {
        "phase": w.phase, "trial": w.trial, "start_s": w.start_s, "end_s": w.end_s,
        "duration_s": duration, "energy_j": energy, "energy_counter_raw_j": w.energy_j,
        "energy_trapz_j": energy_trapz,
        "tokens": w.tokens, "repetitions": w.repetitions, "steps": w.steps,
        "context_start": w.context_start, "context_end": w.context_end,
        "counter_ticks": int(sub["energy_j"].dropna().nunique()),
        "sm_clock_mhz": sm,
        "power_mean_w": energy / duration if duration > 0 else float("nan"),
        "temperature_start_c": _interp_at(t, samples["temperature_c"].to_numpy(float), w.start_s),
        "temperature_end_c": _interp_at(t, samples["temperature_c"].to_numpy(float), w.end_s),
    }
    for c in THROTTLE_COLUMNS:
        y = samples[c].to_numpy(dtype=float)
        row[c] = max(0.0, _interp_at(t, y, w.end_s) - _interp_at(t, y, w.start_s))
    flags = []
    if row["counter_ticks"] < s.min_counter_ticks or duration < s.min_window_s * 0.999:
        flags.append("short_window")
    if energy > 0 and abs(energy - energy_trapz) / energy > MISMATCH_TOLERANCE:
        flags.append("counter_trapz_mismatch")
    if s.locked_sm_clock_mhz and sm < s.locked_sm_clock_mhz * (1 - CLOCK_TOLERANCE):
        flags.append("clock_below_lock")
    if row["thr_hw_thermal_s"] > 0 or row["thr_sw_thermal_s"] > 0:
        flags.append("thermal_throttle")
    if row["thr_hw_power_brake_s"] > 0:
        flags.append("power_brake")
    if abs(row["temperature_end_c"] - row["temperature_start_c"]) > TEMPERATURE_DRIFT_C:
        flags.append("temperature_drift")
    if len(sub) and int(sub["n_processes"].max()) > 1:
        flags.append("other_processes")
    if len(sub) and bool(sub["gap"].any()):
        flags.append("sampling_gap")
    row["flags"] = ",".join(flags)
    return row


def summarise_windows(samples: pd.DataFrame, windows: list[Window], s: Settings) -> pd.DataFrame:
    """The windows table of the trace format."""
    ticks = counter_ticks(samples)
    rows = [summarise_window(samples, w, s, ticks) for w in windows]
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in WINDOW_COLUMNS.items()})
    return conform(pd.DataFrame(rows), WINDOW_COLUMNS)
