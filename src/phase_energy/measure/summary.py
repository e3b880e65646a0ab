"""Window summaries from a job's samples: energy, trapezoid cross-check, clocks, throttle times, validity flags.

The protocol (:mod:`~phase_energy.measure.protocol`) records each window's boundaries, counter reads and
tokens; everything else a window's row holds is derived here from the samples, identically for real and
simulated traces, and again by the analysis when this code changes (a trace's ``summary`` stamp names the
code and settings its windows were summarised with: :func:`summary_stamp`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phase_energy.measure.protocol import Settings, Window
from phase_energy.measure.trace import THROTTLE_COLUMNS, WINDOW_COLUMNS, frame_from_rows

MISMATCH_TOLERANCE = 0.02
# The firmware keeps its power-cap state this long after a prefill at the limit (99th percentile over the
# reference campaign's decode trials, bench/cap-hold.json): a decode window that starts sooner than this after
# the cache-filling prefill counts its SW-cap time only after it (thr_sw_power_steady_s).
CAP_HOLD_S = 0.9
CLOCK_TOLERANCE = 0.02
TEMPERATURE_DRIFT_C = 5.0


def _trapz(t: np.ndarray, y: np.ndarray) -> float:
    if len(t) < 2:
        return float("nan")
    return float(np.sum((y[1:] + y[:-1]) * np.diff(t)) / 2.0)


REGULAR_POLL_SHARE = 0.3  # a tick is timed well when the polls around it are closer than this share of a period


def counter_ticks(samples: pd.DataFrame | SampleArrays) -> tuple[np.ndarray, np.ndarray]:
    """Tick times and values of the energy counter, from the polls that saw it change.

    The counter updates on a regular grid (about every 100 ms). A tick happened between the last poll that
    saw the old value and the first that saw the new one. When those polls are close (the sampler kept its
    pace), the midpoint times the tick to half a poll. When the sampler stalled, the gap can span several
    ticks and its midpoint lies far before the last of them, the one whose value the new poll shows: then the
    tick is put on the grid fitted to the well-timed ticks, at its last point before the new poll (and after
    the old one). Without enough well-timed ticks to fit a grid (fewer than three, or all on one point of it),
    midpoints are kept.
    """
    if isinstance(samples, SampleArrays):
        t, e, gap = samples.t, samples.energy, samples.gap
    else:  # a table needs only these three columns
        t, e = (samples[c].to_numpy(dtype=float) for c in ("t_s", "energy_j"))
        gap = samples["gap"].to_numpy(dtype=bool)
    polled = ~gap & ~np.isnan(e)
    t, e = t[polled], e[polled]
    if len(t) < 2:
        return t[:0], e[:0]
    changed = np.flatnonzero(np.diff(e) != 0) + 1
    before, after = t[changed - 1], t[changed]
    mid = (before + after) / 2.0
    gaps = after - before
    if len(mid) < 4:
        return mid, e[changed]
    period0 = float(np.median(np.diff(mid)))
    regular = gaps < REGULAR_POLL_SHARE * period0
    if regular.sum() < 3 or period0 <= 0:
        return mid, e[changed]
    # the grid: t = phase + period * k, least squares over the well-timed ticks
    k = np.round((mid[regular] - mid[regular][0]) / period0)
    if np.unique(k).size < 2:  # the well-timed ticks fall on one grid point (a sampler that kept pace only briefly)
        return mid, e[changed]
    period, phase = np.polyfit(k, mid[regular], 1)
    if not (np.isfinite(period) and np.isfinite(phase) and period > 0):
        return mid, e[changed]
    last_k = np.floor((after - phase) / period)
    on_grid = phase + period * last_k
    use_grid = ~regular & (on_grid > before)
    return np.where(use_grid, on_grid, mid), e[changed]


def tick_aligned_energy(ticks: tuple[np.ndarray, np.ndarray], start: float, end: float) -> float:
    """Window energy from the counter ticks that fall inside it: their mean power times the duration.

    A plain difference of two counter reads is off by up to one tick period of power at each end; inside
    a window of back-to-back identical work the power is steady, so the ticks inside it give its mean
    power without the edge error. NaN when fewer than two ticks fall inside, or they share one time.
    """
    tick_t, tick_e = ticks
    inside = (tick_t >= start) & (tick_t <= end)
    if inside.sum() < 2:
        return float("nan")
    ti, ei = tick_t[inside], tick_e[inside]
    if not ti[-1] > ti[0]:
        return float("nan")
    return float((ei[-1] - ei[0]) / (ti[-1] - ti[0]) * (end - start))


class SampleArrays:
    """A samples table as numpy arrays, with each column's valid points for interpolation (built once per job)."""

    def __init__(self, samples: pd.DataFrame):
        self.t = samples["t_s"].to_numpy(dtype=float)
        self.power_t = samples["power_t_s"].to_numpy(dtype=float)
        self.power = samples["power_instant_w"].to_numpy(dtype=float)
        self.clock = samples["sm_clock_mhz"].to_numpy(dtype=float)
        self.energy = samples["energy_j"].to_numpy(dtype=float)
        self.n_processes = samples["n_processes"].to_numpy()
        self.gap = samples["gap"].to_numpy(dtype=bool)
        # polls in time order (a sampler's always are): a window's polls are one slice, found by bisection
        self.sorted = bool(np.all(np.diff(self.t) >= 0)) and not np.isnan(self.t).any()
        self.power_sorted = bool(np.all(np.diff(self.power_t) >= 0)) and not np.isnan(self.power_t).any()
        self._valid: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name, tx, y in [("power", self.power_t, self.power),
                            ("temperature_c", self.t, samples["temperature_c"].to_numpy(dtype=float)),
                            *((c, self.t, samples[c].to_numpy(dtype=float)) for c in THROTTLE_COLUMNS)]:
            ok = ~np.isnan(y) & ~np.isnan(tx)
            self._valid[name] = (tx[ok], y[ok])

    def inside(self, start: float, end: float) -> slice | np.ndarray:
        """The polls with ``start <= t <= end``: a slice when in time order, else a mask.

        A window with a NaN end (a damaged trace's) holds no poll: it takes the mask too.
        """
        if self.sorted and math.isfinite(start) and math.isfinite(end):
            return slice(int(np.searchsorted(self.t, start, "left")), int(np.searchsorted(self.t, end, "right")))
        return (self.t >= start) & (self.t <= end)

    def power_inside(self, start: float, end: float) -> slice | np.ndarray:
        """The power readings timed within ``[start, end]``, likewise."""
        if self.power_sorted and math.isfinite(start) and math.isfinite(end):
            return slice(int(np.searchsorted(self.power_t, start, "left")),
                         int(np.searchsorted(self.power_t, end, "right")))
        return (self.power_t >= start) & (self.power_t <= end)

    def at(self, column: str, x: float) -> float:
        """``column`` interpolated at time ``x`` from its valid points (NaN when it has none)."""
        tx, y = self._valid[column]
        return float(np.interp(x, tx, y)) if len(tx) else float("nan")


def summarise_window(samples: pd.DataFrame | SampleArrays, w: Window, s: Settings,
                     ticks: tuple[np.ndarray, np.ndarray] | None = None, hold_s: float = 0.0) -> dict[str, Any]:
    """Cross-check, clocks, throttle times and validity flags of one window from the samples."""
    a = SampleArrays(samples) if isinstance(samples, pd.DataFrame) else samples
    if ticks is None:
        ticks = counter_ticks(a)
    inside = a.inside(w.start_s, w.end_s)
    duration = w.end_s - w.start_s
    # trapezoid over instant power, with the ends interpolated onto the window's edges
    # on the device's own timestamps of the power readings (NVML field values carry them)
    pin = a.power_inside(w.start_s, w.end_s)
    tt = np.concatenate([[w.start_s], a.power_t[pin], [w.end_s]])
    pp = np.concatenate([[a.at("power", w.start_s)], a.power[pin], [a.at("power", w.end_s)]])
    ok = ~np.isnan(pp) & ~np.isnan(tt)
    energy_trapz = _trapz(tt[ok], pp[ok])
    clock = a.clock[inside]
    if len(clock) >= 2:
        dt = np.diff(np.concatenate([a.t[inside], [w.end_s]]))
        good = ~np.isnan(clock)
        sm = float(np.sum(clock[good] * dt[good]) / max(np.sum(dt[good]), 1e-12))
    else:
        sm = float(np.nanmean(clock)) if len(clock) else float("nan")
    aligned = tick_aligned_energy(ticks, w.start_s, w.end_s)
    energy = aligned if np.isfinite(aligned) else w.energy_j
    e_inside = a.energy[inside]
    row: dict[str, Any] = {
        "phase": w.phase, "trial": w.trial, "start_s": w.start_s, "end_s": w.end_s,
        "duration_s": duration, "energy_j": energy, "energy_counter_raw_j": w.energy_j,
        "energy_trapz_j": energy_trapz,
        "tokens": w.tokens, "repetitions": w.repetitions, "steps": w.steps,
        "context_start": w.context_start, "context_end": w.context_end,
        "counter_ticks": len(np.unique(e_inside[~np.isnan(e_inside)])),
        "sm_clock_mhz": sm,
        "power_mean_w": energy / duration if duration > 0 else float("nan"),
        "temperature_start_c": a.at("temperature_c", w.start_s),
        "temperature_end_c": a.at("temperature_c", w.end_s),
    }
    for c in THROTTLE_COLUMNS:
        row[c] = max(0.0, a.at(c, w.end_s) - a.at(c, w.start_s))
    head = min(max(hold_s, 0.0), duration)
    row["cap_hold_excluded_s"] = head
    row["thr_sw_power_steady_s"] = max(0.0, a.at("thr_sw_power_s", w.end_s) - a.at("thr_sw_power_s", w.start_s + head))
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
    polled = len(a.t[inside]) > 0
    if polled and np.nanmax(a.n_processes[inside].astype(float)) > 1:
        flags.append("other_processes")
    if polled and bool(a.gap[inside].any()):
        flags.append("sampling_gap")
    flags += [f for f in w.extra_flags.split(",") if f]
    row["flags"] = ",".join(flags)
    return row


# What a window summary depends on besides the samples: this module's code (its bytes), the columns it fills
# and the fields of the raw window it reads, and the settings.
SUMMARY_CODE = hashlib.sha256(Path(__file__).read_bytes() + json.dumps(
    [WINDOW_COLUMNS, THROTTLE_COLUMNS, [f.name for f in dataclasses.fields(Window)]]).encode()).hexdigest()[:16]


def summary_stamp(s: Settings) -> str:
    """The summary code and settings a windows table was derived with: equal stamps, equal summaries."""
    settings = json.dumps(dataclasses.asdict(s), sort_keys=True)
    return hashlib.sha256(f"{SUMMARY_CODE} {settings}".encode()).hexdigest()[:16]


def summarise_windows(samples: pd.DataFrame, windows: list[Window], s: Settings) -> pd.DataFrame:
    """The windows table of the trace format."""
    rows = summary_rows(samples, windows, s)
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in WINDOW_COLUMNS.items()})
    return frame_from_rows(rows, WINDOW_COLUMNS)


def summary_rows(samples: pd.DataFrame, windows: list[Window], s: Settings) -> list[dict[str, Any]]:
    """The windows table's rows, as dicts (many jobs' rows make one table at once)."""
    arrays = SampleArrays(samples)
    ticks = counter_ticks(arrays)
    # the first decode window of each trial follows the cache-filling prefill after the decode lead-in only
    firsts: dict[int, Window] = {}
    for w in windows:
        if w.phase == "decode" and (w.trial not in firsts or w.start_s < firsts[w.trial].start_s):
            firsts[w.trial] = w
    heads = {id(w): max(0.0, CAP_HOLD_S - s.decode_lead_in_s) for w in firsts.values()}
    return [summarise_window(arrays, w, s, ticks, heads.get(id(w), 0.0)) for w in windows]
