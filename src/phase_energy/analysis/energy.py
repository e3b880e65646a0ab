"""From traces to per-phase energy: windows summarised again from their samples, trials, the summary.

Every function takes and returns tidy DataFrames; :mod:`phase_energy.analysis.stages` runs them for the
workflow. Statistics (docs/protocol.md): each point's estimate is the mean over its jobs of each job's mean
over its trials, with hierarchical bootstrap intervals widened by the measured run-to-run spread.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phase_energy.analysis.stats import groups, hierarchical_means, point_estimate, split_jobs
from phase_energy.grid import Lever
from phase_energy.model.costmodel import cost_model
from phase_energy.model.presets import get_preset

log = logging.getLogger(__name__)

POINT = ["engine", "arch", "paradigm", "batch", "context", "lever", "rep", "backend"]
GROUP = ["engine", "arch", "paradigm", "batch", "context"]
METRICS = ["j_per_token", "j_per_token_above_idle", "tokens_per_s", "power_mean_w", "sm_clock_mhz",
           "sw_power_cap_share", "sw_power_cap_share_steady", "floor_fraction", "compute_fraction"]
# Labels of the job carried to every row (not part of a point's identity: one value per point in a run):
# the card's name (empty when simulated) and the weights (phase_energy.measure.trace.weights_of)
LABELS = {"gpu_name": "", "weights": "random (normal)"}
CI_METRICS = ("j_per_token", "tokens_per_s", "power_mean_w", "sw_power_cap_share_steady")
# Flags of the workload itself (not derived from the samples): kept when windows are summarised again
WORKLOAD_FLAGS = ("irregular_steps", "switch_not_settled")


# ------------------------------------------------------------------------------------------ windows
def rederive_windows(windows: pd.DataFrame, cfg: Mapping[str, Any]) -> pd.DataFrame:
    """Every job's window summaries computed again from its samples, with the current summary code.

    A trace keeps its raw windows (boundaries, counter reads, tokens) and its samples; energy, throttle times
    and validity flags are derived from them. Deriving them here means a fix in that code (the counter's
    tick timing, the cap hold) reaches traces measured before it. A trace whose summary was written by this
    very summary code with these very settings (its ``summary`` stamp, :func:`~phase_energy.measure.summary.
    summary_stamp`) and whose files passed their checksums would come out the same: its stored summary is
    used as it is. The settings are the config's ``measurement`` section with each job's lock.
    """
    from phase_energy.measure.layout import TraceError
    from phase_energy.measure.multigpu import job_summary_rows, multi_summary_stamp
    from phase_energy.measure.protocol import Settings, Window
    from phase_energy.measure.summary import summary_stamp
    from phase_energy.measure.trace import SAMPLE_COLUMNS, WINDOW_COLUMNS, conform, frame_from_rows, read_tables_of

    if windows.empty:
        return windows.drop(columns=["summary_stamp"], errors="ignore")
    point_cols = [c for c in windows.columns if c not in WINDOW_COLUMNS and c != "summary_stamp"]
    stamps = (windows["summary_stamp"] if "summary_stamp" in windows else pd.Series(None, index=windows.index)
              ).to_numpy()
    # each job's row positions, jobs in the order they first appear
    jobs = [(job, pos) for (job,), pos in groups(windows, ["job"], sort=False)]
    by_jobs = np.concatenate([pos for _, pos in jobs])  # every row, grouped by job
    locks = windows["locked_sm_clock_mhz"].to_numpy()

    def settings_of(locked: Any) -> Settings:
        return Settings.from_config(cfg["measurement"], max_output=max(cfg["output_lengths"]),
                                    locked_sm_clock_mhz=None if pd.isna(locked) else int(locked))

    current: dict[Any, tuple[str, str]] = {}  # the stamps of this code, by lock (settings differ only in it)
    settings, stale = {}, []
    for job, pos in jobs:
        lock = None if pd.isna(locks[pos[0]]) else int(locks[pos[0]])
        if lock not in current:
            s = settings_of(lock)
            current[lock] = (summary_stamp(s), multi_summary_stamp(s))
        if stamps[pos[0]] not in current[lock]:
            settings[job] = settings_of(lock)
            stale.append(job)
    by_job = {job: windows.iloc[pos] for job, pos in jobs if job in settings}
    rows: list[dict[str, Any]] = []
    spans: dict[str, tuple[int, int]] = {}  # a stale job's rows in ``rows``
    for job, samples in zip(stale, read_tables_of(stale, "samples.parquet"), strict=True):
        raw = [Window(r.phase, int(r.trial), float(r.start_s), float(r.end_s), float(r.energy_counter_raw_j),
                      int(r.tokens), int(r.repetitions), int(r.steps), int(r.context_start), int(r.context_end),
                      extra_flags=",".join(f for f in str(r.flags or "").split(",") if f in WORKLOAD_FLAGS))
               for r in by_job[job].itertuples(index=False)]
        start = len(rows)
        lacks = [c for c in SAMPLE_COLUMNS if c not in samples.columns]  # every sampler has written them all
        if lacks:
            raise TraceError(f"{Path(job) / 'samples.parquet'}: no columns {lacks}, which the windows' summary "
                             "reads; the file is damaged or not a samples table: measure the point again (delete "
                             "its folder)")
        rows += job_summary_rows(samples, raw, settings[job])  # on one GPU or, summed, on several
        spans[job] = (start, len(rows))
    log.info("windows: %d jobs summarised again from their samples, %d as stored by the same code",
             len(stale), len(jobs) - len(stale))
    fresh = frame_from_rows(rows, WINDOW_COLUMNS) if rows else None  # one table for every stale job
    if len(stale) == len(jobs):
        summaries = fresh
    elif not stale:
        summaries = conform(windows.iloc[by_jobs], WINDOW_COLUMNS).reset_index(drop=True)
    else:
        assert fresh is not None
        summaries = pd.concat([fresh.iloc[spans[job][0]:spans[job][1]] if job in spans
                               else conform(windows.iloc[pos], WINDOW_COLUMNS)
                               for job, pos in jobs], ignore_index=True)
    rowwise = windows.iloc[by_jobs]
    return pd.concat([summaries, pd.DataFrame({c: rowwise[c].to_numpy() for c in point_cols})], axis=1)


# ------------------------------------------------------------------------------------------ energy
def add_window_metrics(windows: pd.DataFrame, exclude_flags: tuple[str, ...] = ()) -> pd.DataFrame:
    """Idle-corrected energy, J/token, rates, throttle shares and roofline fractions per window.

    ``excluded`` marks windows with one of ``exclude_flags``; the idle power comes from unexcluded idle
    windows only (NaN, and no above-idle energy, when the job has none).
    """
    if windows.empty:
        return windows.assign(**{m: pd.Series(dtype=float) for m in METRICS}, excluded=pd.Series(dtype=bool))
    w = windows.copy()
    w["excluded"] = False  # the columns that depend on which windows count: count_windows fills them
    w["idle_power_w"] = np.nan
    w["energy_above_idle_j"] = np.nan
    w["j_per_token"] = w["energy_j"] / w["tokens"].where(w["tokens"] > 0)
    w["j_per_token_above_idle"] = np.nan
    w["tokens_per_s"] = w["tokens"] / w["duration_s"]
    w["sw_power_cap_share"] = (w["thr_sw_power_s"] / w["duration_s"]).clip(0, 1)
    steady = (w["duration_s"] - w["cap_hold_excluded_s"].fillna(0.0)).where(lambda x: x > 0)
    w["sw_power_cap_share_steady"] = (w["thr_sw_power_steady_s"] / steady).clip(0, 1)
    levers = {lv: Lever.parse(lv) for lv in w["lever"].unique()}
    w["lever_kind"] = w["lever"].map(lambda s: levers[s].kind)
    w["lever_value"] = w["lever"].map(lambda s: levers[s].value).astype(float)
    nbytes = np.zeros(len(w))
    flops = np.zeros(len(w))
    # the bytes of a step depend on how the engine lays out its cache (docs/engines.md)
    pairs = w[["arch", "engine"]].drop_duplicates().itertuples(index=False)
    models = {(a, e): cost_model(get_preset(a), engine=e) for a, e in pairs}  # bytes per GPU on several
    done: dict[tuple[Any, ...], tuple[float, float]] = {}  # windows of the same shape: one model call
    for i, r in enumerate(w.itertuples(index=False)):
        if r.phase not in ("prefill", "decode"):
            continue
        shape = (r.arch, r.engine, r.phase, r.tokens, r.context, r.repetitions, r.steps, r.batch, r.context_start,
                 r.context_end)
        if shape not in done:
            done[shape] = _window_work(models[(r.arch, r.engine)], r)
        nbytes[i], flops[i] = done[shape]
    w["bytes"] = nbytes
    w["flops"] = flops
    w["achieved_bw_bps"] = w["bytes"] / w["duration_s"]
    w["achieved_flops"] = w["flops"] / w["duration_s"]
    w["floor_fraction"] = w["achieved_bw_bps"] / w["bandwidth_bps"]
    w["compute_fraction"] = w["achieved_flops"] / w["matmul_flops"]
    w["tpot_s"] = np.where(w["phase"] == "decode",
                           w["duration_s"] / (w["steps"] * w["repetitions"]).where(w["steps"] > 0), np.nan)
    return count_windows(w, exclude_flags)


def _window_work(m: Any, r: Any) -> tuple[float, float]:
    """(bytes, FLOPs) of one prefill or decode window ``r`` by the cost model ``m``."""
    if r.phase == "prefill":  # the sequences one repetition prefilled (prefill_max_tokens may bound them)
        seqs = r.tokens / max(r.context * r.repetitions, 1)
        return r.repetitions * m.prefill_bytes(seqs, r.context), r.repetitions * m.prefill_flops(seqs, r.context)
    mid = (r.context_start + r.context_end - 1) / 2.0  # both are affine in the position
    return r.repetitions * r.steps * m.decode_bytes(r.batch, mid), r.repetitions * r.steps * m.decode_flops(r.batch,
                                                                                                          mid)


def count_windows(w: pd.DataFrame, exclude_flags: tuple[str, ...]) -> pd.DataFrame:
    """Windows with metrics (:func:`add_window_metrics`) counted again with ``exclude_flags`` left out.

    Only ``excluded`` and what the idle power gives depend on which windows count; the other metrics are
    kept as they are.
    """
    w = w.copy()
    w["excluded"] = w["flags"].fillna("").map(lambda f: any(x in exclude_flags for x in f.split(",") if x))
    kept = w[(w["phase"] == "idle") & ~w["excluded"]]
    # no idle window counted in any job (all flagged): no idle power anywhere (apply would give an empty frame)
    idle = kept.groupby("job").apply(lambda d: d["energy_j"].sum() / d["duration_s"].sum(), include_groups=False) \
        if len(kept) else pd.Series(dtype=float)
    w["idle_power_w"] = w["job"].map(idle).astype(float)
    w["energy_above_idle_j"] = w["energy_j"] - w["idle_power_w"] * w["duration_s"]
    w["j_per_token_above_idle"] = w["energy_above_idle_j"] / w["tokens"].where(w["tokens"] > 0)
    return w


def trial_table(w: pd.DataFrame) -> pd.DataFrame:
    """One row per job x phase x trial: energy and tokens summed over the trial's unexcluded windows."""
    w = w[w["phase"].isin(["prefill", "decode"]) & ~w.get("excluded", pd.Series(False, index=w.index))].copy()
    if w.empty:
        return pd.DataFrame(columns=[*POINT, *LABELS, "job", "phase", "trial", *METRICS])
    w = with_labels(w)
    w["_clock_t"] = w["sm_clock_mhz"] * w["duration_s"]
    w["_steady_t"] = w["duration_s"] - w["cap_hold_excluded_s"].fillna(0.0)
    w["_flags"] = w["flags"].fillna("")
    w["gpu_uuid"] = w["gpu_uuid"].fillna("") if "gpu_uuid" in w else ""  # one card per job: not a point's key
    keys = [*POINT, *LABELS, "job", "gpu_uuid", "lever_kind", "lever_value", "power_limit_w", "locked_sm_clock_mhz",
            "phase", "trial"]
    g = w.groupby(keys, dropna=False)
    t = g.agg(
        energy_j=("energy_j", "sum"), energy_above_idle_j=("energy_above_idle_j", "sum"),
        energy_trapz_j=("energy_trapz_j", "sum"), tokens=("tokens", "sum"),
        duration_s=("duration_s", "sum"), thr_sw_power_s=("thr_sw_power_s", "sum"),
        thr_sw_power_steady_s=("thr_sw_power_steady_s", "sum"), steady_s=("_steady_t", "sum"),
        thr_thermal_s=("thr_hw_thermal_s", "sum"), bytes=("bytes", "sum"), flops=("flops", "sum"),
        clock_t=("_clock_t", "sum"), bandwidth_bps=("bandwidth_bps", "first"),
        matmul_flops=("matmul_flops", "first"), idle_power_w=("idle_power_w", "first"),
    ).reset_index()
    # each trial's flags, the union of its windows' (sorted): only windows with flags need looking at
    union: list[set[str]] = [set() for _ in range(len(t))]
    for trial, f in zip(g.ngroup().to_numpy(), w["_flags"].to_numpy(), strict=True):
        if f:
            union[trial].update(x for x in f.split(",") if x)
    t["flags"] = pd.array([",".join(sorted(u)) for u in union], dtype=w["_flags"].dtype)  # typed as the windows'
    # a job without a counted idle window has no idle power: its above-idle energy is unknown, not the sum
    # (zero) of its windows' NaN
    t.loc[t["idle_power_w"].isna(), "energy_above_idle_j"] = np.nan
    t["j_per_token"] = t["energy_j"] / t["tokens"]
    t["j_per_token_above_idle"] = t["energy_above_idle_j"] / t["tokens"]
    t["tokens_per_s"] = t["tokens"] / t["duration_s"]
    t["power_mean_w"] = t["energy_j"] / t["duration_s"]
    t["sm_clock_mhz"] = t["clock_t"] / t["duration_s"]
    t["sw_power_cap_share"] = (t["thr_sw_power_s"] / t["duration_s"]).clip(0, 1)
    t["sw_power_cap_share_steady"] = (t["thr_sw_power_steady_s"] / t["steady_s"].where(t["steady_s"] > 0)).clip(0, 1)
    t["floor_fraction"] = t["bytes"] / t["duration_s"] / t["bandwidth_bps"]
    t["compute_fraction"] = t["flops"] / t["duration_s"] / t["matmul_flops"]
    t["trapz_mismatch"] = (t["energy_trapz_j"] - t["energy_j"]) / t["energy_j"]
    return t.drop(columns=["clock_t"])


SUMMARY_KEYS = ["engine", "arch", "paradigm", "batch", "context", "lever", "backend", "lever_kind", "lever_value",
                "phase", *LABELS]


def with_labels(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the job labels it lacks (a table from before they were recorded) at their defaults."""
    missing = {k: v for k, v in LABELS.items() if k not in df}
    return df.assign(**missing) if missing else df


def _nan_mean(x: np.ndarray) -> float:
    """The mean with NaN left out (NaN when none is left), summed as pandas sums it: NaN as zero, in place."""
    n = int((~np.isnan(x)).sum())
    with np.errstate(invalid="ignore"):  # inf - inf is NaN, quietly, as pandas gives it
        return float(np.where(np.isnan(x), 0.0, x).sum() / n) if n else float("nan")


def _nan_max(x: np.ndarray) -> float:
    """The largest value, NaN left out (NaN when none is left), as pandas takes it."""
    kept = x[~np.isnan(x)]
    return float(kept.max()) if len(kept) else float("nan")


def summarise_trials(trials: pd.DataFrame, n_resamples: int, run_sd: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Per point and phase (repetitions pooled): estimates and 95 % intervals that include rerun variation.

    Every metric is the mean over the point's jobs of each job's mean over its trials; the intervals of
    ``CI_METRICS`` come from :func:`hierarchical_means`. ``jobs`` counts the jobs; ``interval_basis`` says
    whether the interval rests on several jobs or on one job's trials widened by the run-to-run spread;
    ``cards`` lists the UUIDs of the cards its jobs ran on (empty when simulated).
    """
    rng = np.random.default_rng(seed)
    trials = with_labels(trials)
    jobs = trials["job"].to_numpy()
    values = trials[METRICS].to_numpy(dtype=float)
    ci_values = trials[list(CI_METRICS)].to_numpy(dtype=float)
    power_limit, locked = trials["power_limit_w"].to_numpy(), trials["locked_sm_clock_mhz"].to_numpy()
    idle = trials["idle_power_w"].to_numpy(dtype=float)
    trapz, flags = trials["trapz_mismatch"].abs().to_numpy(dtype=float), trials["flags"].to_numpy()
    cards = (trials["gpu_uuid"] if "gpu_uuid" in trials else pd.Series("", index=trials.index)).fillna("").to_numpy()
    rows = []
    for k, pos in groups(trials, SUMMARY_KEYS, dropna=False):
        row: dict[str, Any] = dict(zip(SUMMARY_KEYS, k, strict=True))
        job = jobs[pos]
        row["trials"] = len(pos)
        row["jobs"] = len(set(job))
        row["power_limit_w"] = power_limit[pos[0]]
        row["locked_sm_clock_mhz"] = locked[pos[0]]
        est = point_estimate(split_jobs(job, values[pos]))
        row.update(dict(zip(METRICS, map(float, est), strict=True)))
        finite = [g[np.isfinite(g).all(axis=1)] for g in split_jobs(job, ci_values[pos])]
        finite = [g for g in finite if len(g)]
        if finite:
            boot = hierarchical_means(finite, n_resamples, rng, run_sd)
            low, high = np.percentile(boot, [2.5, 97.5], axis=0)  # every metric's bounds at once
            for i, m in enumerate(CI_METRICS):
                row[f"{m}_ci_low"], row[f"{m}_ci_high"] = float(low[i]), float(high[i])
        row["interval_basis"] = (f"{row['jobs']} jobs" if row["jobs"] > 1 else
                                 f"1 job: its trials, widened by the run-to-run spread ({run_sd:.1%})")
        row["idle_power_w"] = _nan_mean(idle[pos])
        row["trapz_mismatch_max"] = _nan_max(trapz[pos])
        row["flags"] = ",".join(sorted({f for x in flags[pos] for f in str(x).split(",") if f}))
        row["cards"] = ",".join(sorted({u for c in cards[pos] for u in str(c).split(",") if u}))  # its jobs' cards
        rows.append(row)
    return pd.DataFrame(rows)


