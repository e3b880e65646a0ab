"""Telemetry of a job on several GPUs (tensor parallel): one sampler per GPU, windows per GPU and summed.

A job on ``n`` GPUs samples every GPU with its own sampler, on one time origin; its ``samples.parquet`` holds
the rows of all of them with a ``gpu`` column (the job's GPU 0..n-1). The protocol's counter reads are the
sum over the GPUs (:class:`MultiMeter`). Each window is summarised on each GPU from that GPU's samples, with
the same code as a one-GPU job (``gpu_windows.parquet``, one row per window and GPU), and summed into the
job's row (``windows.parquet``, as for one GPU): energies add up, throttle seconds and temperatures are the
most affected GPU's, the SM clock is the GPUs' mean, flags are every GPU's. A one-GPU job writes neither the
``gpu`` column nor ``gpu_windows.parquet``: its trace is as it always was.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phase_energy.measure.protocol import SampledMeter, Settings, Window
from phase_energy.measure.summary import CAP_HOLD_S, SampleArrays, counter_ticks, summarise_window, summary_stamp
from phase_energy.measure.trace import (
    GPU_WINDOW_COLUMNS,
    MULTI_SAMPLE_COLUMNS,
    SAMPLE_COLUMNS,
    THROTTLE_COLUMNS,
    WINDOW_COLUMNS,
    conform,
)

# columns of the job's row that add up over GPUs; the rest take the most affected GPU or the mean
SUMMED = ("energy_j", "energy_counter_raw_j", "energy_trapz_j")
MAXIMUM = (*THROTTLE_COLUMNS, "thr_sw_power_steady_s", "temperature_start_c", "temperature_end_c")

MULTI_CODE = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def multi_summary_stamp(s: Settings) -> str:
    """The stamp of a multi-GPU windows table: the protocol's summary code and settings, and this module's code."""
    return hashlib.sha256(f"{summary_stamp(s)} {MULTI_CODE}".encode()).hexdigest()[:16]


class MultiMeter:
    """The meters of a job's GPUs as one :class:`~phase_energy.measure.protocol.Meter`.

    ``read_energy_j`` is the sum of the GPUs' counters (each since its meter started); the meters share one time
    origin (the first one's), so their samples line up.
    """

    def __init__(self, meters: Sequence[SampledMeter]):
        if not meters:
            raise ValueError("MultiMeter needs at least one GPU's meter; got none")
        self.meters = list(meters)
        self.origin = getattr(self.meters[0], "origin", None)

    def now(self) -> float:
        """Seconds since the shared origin."""
        return self.meters[0].now()

    def read_energy_j(self) -> float:
        """Sum of the GPUs' energy counters, J since their meters started."""
        return float(sum(m.read_energy_j() for m in self.meters))

    def read_energy_by_gpu_j(self) -> list[float]:
        """Each GPU's counter, J since its meter started."""
        return [m.read_energy_j() for m in self.meters]

    def samples(self) -> pd.DataFrame:
        """Every GPU's samples so far, with the ``gpu`` column."""
        return stack_samples([m.samples() for m in self.meters])

    def stop(self) -> pd.DataFrame:
        """Stop every sampler; return all samples."""
        return stack_samples([m.stop() for m in self.meters])


def stack_samples(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Per-GPU samples tables as one, GPU by GPU, with the ``gpu`` column."""
    parts = [conform(f, SAMPLE_COLUMNS).assign(gpu=i) for i, f in enumerate(frames)]
    return conform(pd.concat(parts, ignore_index=True), MULTI_SAMPLE_COLUMNS)


def is_multi_gpu(samples: pd.DataFrame) -> bool:
    """True for the samples of a job on several GPUs (they carry the ``gpu`` column)."""
    return "gpu" in samples.columns


def _gpu_raw_energy(a: SampleArrays, start: float, end: float) -> float:
    """One GPU's counter difference over a window, interpolated from its polls (its own reads are not kept)."""
    ok = ~a.gap & ~np.isnan(a.energy)
    t, e = a.t[ok], a.energy[ok]
    if len(t) < 2:
        return float("nan")
    return float(np.interp(end, t, e) - np.interp(start, t, e))


def gpu_summary_rows(samples: pd.DataFrame, windows: list[Window], s: Settings) -> list[dict[str, Any]]:
    """Every window summarised on every GPU of the job, from that GPU's samples (rows with ``gpu``)."""
    firsts: dict[int, Window] = {}
    for w in windows:
        if w.phase == "decode" and (w.trial not in firsts or w.start_s < firsts[w.trial].start_s):
            firsts[w.trial] = w
    heads = {id(w): max(0.0, CAP_HOLD_S - s.decode_lead_in_s) for w in firsts.values()}
    rows = []
    for gpu, part in samples.groupby("gpu", sort=True):
        own = part.drop(columns="gpu").reset_index(drop=True)
        arrays = SampleArrays(own)
        ticks = counter_ticks(arrays)
        for w in windows:
            mine = replace(w, energy_j=_gpu_raw_energy(arrays, w.start_s, w.end_s))
            rows.append({"gpu": int(gpu), **summarise_window(arrays, mine, s, ticks, heads.get(id(w), 0.0))})
    return rows


def job_rows(per_gpu: pd.DataFrame, windows: list[Window]) -> list[dict[str, Any]]:
    """The job's row of each window from its per-GPU rows: summed energies, the most affected GPU, all flags."""
    out = []
    n = len(windows)
    for i, w in enumerate(windows):
        rows = per_gpu.iloc[i::n]  # gpu_summary_rows lists the windows in order, GPU after GPU
        row = rows.iloc[0][list(WINDOW_COLUMNS)].to_dict()
        for c in SUMMED:
            row[c] = float(rows[c].sum())
        row["energy_counter_raw_j"] = w.energy_j  # the summed counter reads the protocol made
        for c in MAXIMUM:
            row[c] = float(rows[c].max())
        row["sm_clock_mhz"] = float(rows["sm_clock_mhz"].mean())
        row["counter_ticks"] = int(rows["counter_ticks"].min())
        row["power_mean_w"] = row["energy_j"] / row["duration_s"] if row["duration_s"] > 0 else float("nan")
        flags = [f for x in rows["flags"] for f in str(x).split(",") if f]
        row["flags"] = ",".join(dict.fromkeys(flags))
        out.append(row)
    return out


def summarise_multi(samples: pd.DataFrame, windows: list[Window], s: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the job's windows table, the per-GPU windows table) of a job on several GPUs."""
    per_gpu = pd.DataFrame(gpu_summary_rows(samples, windows, s))
    if per_gpu.empty:
        return (pd.DataFrame({c: pd.Series(dtype=t) for c, t in WINDOW_COLUMNS.items()}),
                pd.DataFrame({c: pd.Series(dtype=t) for c, t in GPU_WINDOW_COLUMNS.items()}))
    per_gpu = conform(per_gpu, GPU_WINDOW_COLUMNS)
    return conform(pd.DataFrame(job_rows(per_gpu, windows)), WINDOW_COLUMNS), per_gpu


def job_summary_rows(samples: pd.DataFrame, windows: list[Window], s: Settings) -> list[dict[str, Any]]:
    """The job's window rows from its samples, on one GPU or several (what the analysis derives again)."""
    if not is_multi_gpu(samples):
        from phase_energy.measure.summary import summary_rows

        return summary_rows(samples, windows, s)
    per_gpu = conform(pd.DataFrame(gpu_summary_rows(samples, windows, s)), GPU_WINDOW_COLUMNS)
    return job_rows(per_gpu, windows)
