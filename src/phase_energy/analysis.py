"""From traces to results: per-phase energy, Pareto frontiers, DVFS classes, crossovers, policy, claims.

Every function takes and returns tidy DataFrames; the ``stage_*`` functions are what the workflow rules
call (through ``phase-energy analyse <stage>``). Statistics follow docs/methodology: bootstrap over trials
for every figure that is compared, probabilities of being on a frontier, crossovers with percentile CIs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .config import Lever, expand_grid
from .costmodel import CostModel
from .presets import get_preset
from .trace import collect_windows

log = logging.getLogger(__name__)

POINT = ["engine", "arch", "paradigm", "batch", "context", "lever", "rep", "backend"]
GROUP = ["engine", "arch", "paradigm", "batch", "context"]
METRICS = ["j_per_token", "j_per_token_above_idle", "tokens_per_s", "power_mean_w", "sm_clock_mhz",
           "sw_power_cap_share", "sw_power_cap_share_steady", "floor_fraction", "compute_fraction"]
CI_METRICS = ("j_per_token", "tokens_per_s", "power_mean_w", "sw_power_cap_share_steady")
# Flags of the workload itself (not derived from the samples): kept when windows are summarised again
WORKLOAD_FLAGS = ("irregular_steps",)


# ------------------------------------------------------------------------------------------ windows
def rederive_windows(windows: pd.DataFrame, cfg: Mapping[str, Any]) -> pd.DataFrame:
    """Every job's window summaries computed again from its samples, with the current summary code.

    A trace keeps its raw windows (boundaries, counter reads, tokens) and its samples; energy, throttle times
    and validity flags are derived from them. Deriving them here means a fix in that code (the counter's
    tick timing, the cap hold) reaches traces measured before it, and a trace's stored summary is never
    trusted over its samples. The settings are the config's ``measurement`` section with each job's lock.
    """
    from .protocol import Settings, Window, summarise_windows
    from .trace import WINDOW_COLUMNS

    if windows.empty:
        return windows
    point_cols = [c for c in windows.columns if c not in WINDOW_COLUMNS]
    out = []
    for job, w in windows.groupby("job", sort=False):
        samples = pd.read_parquet(Path(job) / "samples.parquet")
        locked = w["locked_sm_clock_mhz"].iloc[0]
        s = Settings.from_config(cfg["measurement"], max_output=max(cfg["output_lengths"]),
                                 locked_sm_clock_mhz=None if pd.isna(locked) else int(locked))
        raw = [Window(r.phase, int(r.trial), float(r.start_s), float(r.end_s), float(r.energy_counter_raw_j),
                      int(r.tokens), int(r.repetitions), int(r.steps), int(r.context_start), int(r.context_end),
                      extra_flags=",".join(f for f in str(r.flags or "").split(",") if f in WORKLOAD_FLAGS))
               for r in w.itertuples(index=False)]
        fresh = summarise_windows(samples, raw, s)
        for c in point_cols:
            fresh[c] = w[c].to_numpy()
        out.append(fresh)
    return pd.concat(out, ignore_index=True)


# ------------------------------------------------------------------------------------------ energy
def add_window_metrics(windows: pd.DataFrame, exclude_flags: tuple[str, ...] = ()) -> pd.DataFrame:
    """Idle-corrected energy, J/token, rates, throttle shares and roofline fractions per window.

    ``excluded`` marks windows with one of ``exclude_flags``; the idle power comes from unexcluded idle
    windows only (NaN, and no above-idle energy, when the job has none).
    """
    if windows.empty:
        return windows.assign(**{m: pd.Series(dtype=float) for m in METRICS}, excluded=pd.Series(dtype=bool))
    w = windows.copy()
    w["excluded"] = w["flags"].fillna("").map(lambda f: any(x in exclude_flags for x in f.split(",") if x))
    idle = w[(w["phase"] == "idle") & ~w["excluded"]].groupby("job").apply(
        lambda d: d["energy_j"].sum() / d["duration_s"].sum(), include_groups=False
    )
    w["idle_power_w"] = w["job"].map(idle).astype(float)
    w["energy_above_idle_j"] = w["energy_j"] - w["idle_power_w"] * w["duration_s"]
    tok = w["tokens"].where(w["tokens"] > 0)
    w["j_per_token"] = w["energy_j"] / tok
    w["j_per_token_above_idle"] = w["energy_above_idle_j"] / tok
    w["tokens_per_s"] = w["tokens"] / w["duration_s"]
    w["sw_power_cap_share"] = (w["thr_sw_power_s"] / w["duration_s"]).clip(0, 1)
    steady = (w["duration_s"] - w["cap_hold_excluded_s"].fillna(0.0)).where(lambda x: x > 0)
    w["sw_power_cap_share_steady"] = (w["thr_sw_power_steady_s"] / steady).clip(0, 1)
    w["lever_kind"] = w["lever"].map(lambda s: Lever.parse(s).kind)
    w["lever_value"] = w["lever"].map(lambda s: Lever.parse(s).value).astype(float)
    nbytes = np.zeros(len(w))
    flops = np.zeros(len(w))
    # the bytes of a step depend on how the engine lays out its cache (docs/engines.md)
    pairs = w[["arch", "engine"]].drop_duplicates().itertuples(index=False)
    models = {(a, e): CostModel(get_preset(a), engine=e) for a, e in pairs}
    for i, r in enumerate(w.itertuples(index=False)):
        m = models[(r.arch, r.engine)]
        if r.phase == "prefill":  # the sequences one repetition prefilled (prefill_max_tokens may bound them)
            seqs = r.tokens / max(r.context * r.repetitions, 1)
            nbytes[i] = r.repetitions * m.prefill_bytes(seqs, r.context)
            flops[i] = r.repetitions * m.prefill_flops(seqs, r.context)
        elif r.phase == "decode":
            mid = (r.context_start + r.context_end - 1) / 2.0  # both are affine in the position
            nbytes[i] = r.repetitions * r.steps * m.decode_bytes(r.batch, mid)
            flops[i] = r.repetitions * r.steps * m.decode_flops(r.batch, mid)
    w["bytes"] = nbytes
    w["flops"] = flops
    w["achieved_bw_bps"] = w["bytes"] / w["duration_s"]
    w["achieved_flops"] = w["flops"] / w["duration_s"]
    w["floor_fraction"] = w["achieved_bw_bps"] / w["bandwidth_bps"]
    w["compute_fraction"] = w["achieved_flops"] / w["matmul_flops"]
    w["tpot_s"] = np.where(w["phase"] == "decode",
                           w["duration_s"] / (w["steps"] * w["repetitions"]).where(w["steps"] > 0), np.nan)
    return w


def trial_table(w: pd.DataFrame) -> pd.DataFrame:
    """One row per job x phase x trial: energy and tokens summed over the trial's unexcluded windows."""
    w = w[w["phase"].isin(["prefill", "decode"]) & ~w.get("excluded", pd.Series(False, index=w.index))].copy()
    if w.empty:
        return pd.DataFrame(columns=[*POINT, "job", "phase", "trial", *METRICS])
    w["_clock_t"] = w["sm_clock_mhz"] * w["duration_s"]
    w["_steady_t"] = w["duration_s"] - w["cap_hold_excluded_s"].fillna(0.0)
    w["_flags"] = w["flags"].fillna("")
    keys = [*POINT, "job", "lever_kind", "lever_value", "power_limit_w", "locked_sm_clock_mhz", "phase", "trial"]
    g = w.groupby(keys, dropna=False)
    t = g.agg(
        energy_j=("energy_j", "sum"), energy_above_idle_j=("energy_above_idle_j", "sum"),
        energy_trapz_j=("energy_trapz_j", "sum"), tokens=("tokens", "sum"),
        duration_s=("duration_s", "sum"), thr_sw_power_s=("thr_sw_power_s", "sum"),
        thr_sw_power_steady_s=("thr_sw_power_steady_s", "sum"), steady_s=("_steady_t", "sum"),
        thr_thermal_s=("thr_hw_thermal_s", "sum"), bytes=("bytes", "sum"), flops=("flops", "sum"),
        clock_t=("_clock_t", "sum"), bandwidth_bps=("bandwidth_bps", "first"),
        matmul_flops=("matmul_flops", "first"), idle_power_w=("idle_power_w", "first"),
        flags=("_flags", lambda s: ",".join(sorted({f for x in s for f in x.split(",") if f}))),
    ).reset_index()
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


def job_groups(d: pd.DataFrame, columns: list[str]) -> list[np.ndarray]:
    """The trials of each job of one point: one (trials x columns) array per job."""
    return [g[columns].to_numpy(dtype=float) for _, g in d.groupby("job", sort=True)]


def hierarchical_means(groups: list[np.ndarray], n: int, rng: np.random.Generator, run_sd: float = 0.0
                       ) -> np.ndarray:
    """Resamples (n x columns) of the mean over jobs of each job's mean over trials.

    Two levels, as reruns vary: jobs are drawn with replacement, then each drawn job's trials. A point with
    one job has no spread between jobs to draw from: each resample is then multiplied by (1 + e), e normal
    with standard deviation ``run_sd``, the run-to-run spread measured on repeated points (0: trials only).
    """
    n_jobs = len(groups)
    cols = groups[0].shape[1]
    pick = rng.integers(0, n_jobs, size=(n, n_jobs))
    slot_means = np.empty((n, n_jobs, cols))
    for j, v in enumerate(groups):
        idx = rng.integers(0, len(v), size=(n, n_jobs, len(v)))
        draws = v[idx].mean(axis=2)  # (n, slots, cols): job j's resampled mean, wherever it is drawn
        slot_means[pick == j] = draws[pick == j]
    out = slot_means.mean(axis=1)
    if n_jobs == 1 and run_sd > 0:
        out = out * (1.0 + rng.normal(0.0, run_sd, size=(n, 1)))
    return out


def point_estimate(groups: list[np.ndarray]) -> np.ndarray:
    """The statistic the intervals resample: the mean over jobs of each job's mean over trials."""
    return np.mean([np.nanmean(v, axis=0) for v in groups], axis=0)


SUMMARY_KEYS = ["engine", "arch", "paradigm", "batch", "context", "lever", "backend", "lever_kind", "lever_value",
                "phase"]


def summarise_trials(trials: pd.DataFrame, n_resamples: int, run_sd: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Per point and phase (repetitions pooled): estimates and 95 % intervals that include rerun variation.

    Every metric is the mean over the point's jobs of each job's mean over its trials; the intervals of
    ``CI_METRICS`` come from :func:`hierarchical_means`. ``jobs`` counts the jobs; ``interval_basis`` says
    whether the interval rests on several jobs or on one job's trials widened by the run-to-run spread.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for k, d in trials.groupby(SUMMARY_KEYS, dropna=False):
        row: dict[str, Any] = dict(zip(SUMMARY_KEYS, k, strict=True))
        row["trials"] = len(d)
        row["jobs"] = int(d["job"].nunique())
        row["power_limit_w"] = d["power_limit_w"].iloc[0]
        row["locked_sm_clock_mhz"] = d["locked_sm_clock_mhz"].iloc[0]
        est = point_estimate(job_groups(d, METRICS))
        row.update(dict(zip(METRICS, map(float, est), strict=True)))
        groups = job_groups(d, list(CI_METRICS))
        finite = [g[np.isfinite(g).all(axis=1)] for g in groups]
        finite = [g for g in finite if len(g)]
        if finite:
            boot = hierarchical_means(finite, n_resamples, rng, run_sd)
            for i, m in enumerate(CI_METRICS):
                row[f"{m}_ci_low"], row[f"{m}_ci_high"] = (float(np.percentile(boot[:, i], 2.5)),
                                                           float(np.percentile(boot[:, i], 97.5)))
        row["interval_basis"] = (f"{row['jobs']} jobs" if row["jobs"] > 1 else
                                 f"1 job: its trials, widened by the run-to-run spread ({run_sd:.1%})")
        row["idle_power_w"] = float(d["idle_power_w"].mean())
        row["trapz_mismatch_max"] = float(d["trapz_mismatch"].abs().max())
        row["flags"] = ",".join(sorted({f for x in d["flags"] for f in str(x).split(",") if f}))
        rows.append(row)
    return pd.DataFrame(rows)


def stage_energy(cfg: Mapping[str, Any], outdir: Path) -> None:
    """Windows of all jobs with metrics, trials and the per-phase summary."""
    outdir.mkdir(parents=True, exist_ok=True)
    traces = Path(cfg["traces"])
    windows, jobs = collect_windows(traces / p.path for p in expand_grid(cfg))
    a = cfg["analysis"]
    w = add_window_metrics(rederive_windows(windows, cfg), tuple(a["exclude_flags"]))
    t = trial_table(w)
    summary = summarise_trials(t, a["bootstrap_resamples"], a["run_to_run_sd"], cfg["seed"]) if len(t) \
        else pd.DataFrame()
    w.to_parquet(outdir / "windows.parquet", index=False)
    t.to_parquet(outdir / "phase_trials.parquet", index=False)
    summary.to_parquet(outdir / "phase_energy.parquet", index=False)
    summary.to_csv(outdir / "phase_energy.csv", index=False)
    jobs.to_csv(outdir / "jobs.csv", index=False)
    log.info("energy: %d jobs (%d ok), %d windows, %d trial rows", len(jobs),
             int((jobs.get("status") == "ok").sum()) if len(jobs) else 0, len(w), len(t))


# ------------------------------------------------------------------------------------------ pareto
def nondominated(throughput: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """Mask of points no other point beats on both axes (higher throughput, lower energy/token).

    Works on the last axis, so a stack of resamples (R x C) is handled at once.
    """
    t = np.asarray(throughput, dtype=float)
    e = np.asarray(energy, dtype=float)
    ti, tj = t[..., :, None], t[..., None, :]
    ei, ej = e[..., :, None], e[..., None, :]
    dominated = ((tj >= ti) & (ej <= ei) & ((tj > ti) | (ej < ei))).any(axis=-1)
    return np.asarray(~dominated)


def lever_resamples(d: pd.DataFrame, metrics: list[str], n: int, rng: np.random.Generator
                    ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per lever of one point: (levers, estimates [levers x metrics], resamples [n x levers x metrics]).

    The metrics of a trial are resampled together (jobs, then trials), so that a lever's throughput and
    energy stay paired. Levers of a point are compared with each other, so the run-to-run spread (a card or
    run effect shared by the levers of one run) is not added here.
    """
    levers, est, boot = [], [], []
    for lever, g in d.groupby("lever", sort=True):
        groups = job_groups(g, metrics)
        levers.append(str(lever))
        est.append(point_estimate(groups))
        boot.append(hierarchical_means(groups, n, rng))
    return levers, np.array(est), np.stack(boot, axis=1)


def pareto_table(trials: pd.DataFrame, n_resamples: int, seed: int = 0, phase: str = "decode") -> pd.DataFrame:
    """Per architecture x batch x context: each lever's estimates, frontier membership and its probability."""
    d0 = trials[trials["phase"] == phase]
    rows = []
    rng = np.random.default_rng(seed)
    for key, d in d0.groupby(GROUP):
        levers, est, boot = lever_resamples(d, ["tokens_per_s", "j_per_token"], n_resamples, rng)
        front = nondominated(est[:, 0], est[:, 1])
        prob = nondominated(boot[..., 0], boot[..., 1]).mean(axis=0)
        for j, lever in enumerate(levers):
            lv = Lever.parse(lever)
            rows.append({**dict(zip(GROUP, key, strict=True)), "phase": phase, "lever": lever,
                         "lever_kind": lv.kind, "lever_value": lv.value, "tokens_per_s": float(est[j, 0]),
                         "j_per_token": float(est[j, 1]), "on_frontier": bool(front[j]),
                         "frontier_probability": float(prob[j])})
    return pd.DataFrame(rows)


def dominance_table(pareto: pd.DataFrame) -> pd.DataFrame:
    """Per group: whether some clock lock beats every power cap on both axes."""
    rows = []
    for key, d in pareto.groupby(GROUP):
        caps = d[d["lever_kind"] == "powercap"]
        locks = d[d["lever_kind"] == "smclock"]
        if caps.empty or locks.empty:
            rows.append({**dict(zip(GROUP, key, strict=True)), "testable": False, "lock_dominates_caps": None,
                         "dominating_locks": "", "caps": len(caps), "locks": len(locks)})
            continue
        winners = []
        for lk in locks.itertuples():
            beats = ((lk.tokens_per_s >= caps["tokens_per_s"]) & (lk.j_per_token <= caps["j_per_token"])).all()
            if beats:
                winners.append(lk.lever)
        rows.append({**dict(zip(GROUP, key, strict=True)), "testable": True,
                     "lock_dominates_caps": bool(winners), "dominating_locks": " ".join(winners),
                     "caps": len(caps), "locks": len(locks)})
    return pd.DataFrame(rows)


def stage_pareto(cfg: Mapping[str, Any], outdir: Path) -> None:
    """Pareto frontiers (decode and prefill) and the dominance test."""
    trials = pd.read_parquet(outdir / "phase_trials.parquet")
    n = cfg["analysis"]["bootstrap_resamples"]
    frames = [pareto_table(trials, n, cfg["seed"], phase) for phase in ("decode", "prefill")]
    pareto = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) \
        else pd.DataFrame(columns=[*GROUP, "phase", "lever", "lever_kind", "lever_value", "tokens_per_s",
                                   "j_per_token", "on_frontier", "frontier_probability"])
    pareto.to_parquet(outdir / "pareto.parquet", index=False)
    decode = pareto[pareto["phase"] == "decode"] if len(pareto) else pareto
    dom = dominance_table(decode) if len(decode) else pd.DataFrame(
        columns=[*GROUP, "testable", "lock_dominates_caps", "dominating_locks", "caps", "locks"])
    dom.to_csv(outdir / "dominance.csv", index=False)


# ------------------------------------------------------------------------------------------ classes
CLASS_NAMES = ("flat", "interior-optimum", "lower-clock-saves", "higher-clock-saves")


def classify_curve(clocks: np.ndarray, energy: np.ndarray, throughput: np.ndarray,
                   flat: float, sensitivity: float) -> str:
    """DVFS class of one energy/token-vs-clock curve (clocks ascending, values normalised).

    flat: energy varies by less than ``flat`` and throughput by less than ``sensitivity``;
    interior-optimum: the lowest energy lies strictly inside the clock range and beats both ends by
    ``flat``; lower-/higher-clock-saves: the lowest energy is at that end and beats the other by ``flat``.
    """
    e = np.asarray(energy, dtype=float)
    t = np.asarray(throughput, dtype=float)
    e_rel = e / np.nanmax(e)
    t_rel = t / np.nanmax(t)
    if np.nanmax(e_rel) - np.nanmin(e_rel) < flat and np.nanmax(t_rel) - np.nanmin(t_rel) < sensitivity:
        return "flat"
    i = int(np.nanargmin(e))
    if 0 < i < len(e) - 1 and e_rel[i] < min(e_rel[0], e_rel[-1]) - flat:
        return "interior-optimum"
    if e_rel[0] < e_rel[-1] - flat:
        return "lower-clock-saves"
    if e_rel[-1] < e_rel[0] - flat:
        return "higher-clock-saves"
    return "flat"


def dvfs_curves(trials: pd.DataFrame) -> pd.DataFrame:
    """Decode energy/token and throughput vs locked SM clock, normalised to the highest lock."""
    d = trials[(trials["phase"] == "decode") & (trials["lever_kind"] == "smclock")]
    if d.empty:
        return pd.DataFrame(columns=[*GROUP, "lever_value", "sm_clock_mhz", "j_per_token", "tokens_per_s",
                                     "energy_norm", "throughput_norm"])
    cols = ["sm_clock_mhz", "j_per_token", "tokens_per_s"]  # the mean over jobs of each job's mean (as the CIs)
    med = d.groupby([*GROUP, "lever_value", "job"], as_index=False)[cols].mean() \
        .groupby([*GROUP, "lever_value"], as_index=False)[cols].mean()
    top = med.sort_values("lever_value").groupby(GROUP).tail(1).set_index(GROUP)
    med = med.join(top[["j_per_token", "tokens_per_s"]], on=GROUP, rsuffix="_top")
    med["energy_norm"] = med["j_per_token"] / med["j_per_token_top"]
    med["throughput_norm"] = med["tokens_per_s"] / med["tokens_per_s_top"]
    return med.drop(columns=["j_per_token_top", "tokens_per_s_top"])


def dvfs_classes(trials: pd.DataFrame, flat: float, sensitivity: float, n_resamples: int,
                 seed: int = 0, min_agreement: float = 0.8) -> pd.DataFrame:
    """Class per architecture x batch x context from bootstrap resamples; 'indeterminate' when unsure."""
    d = trials[(trials["phase"] == "decode") & (trials["lever_kind"] == "smclock")]
    rng = np.random.default_rng(seed)
    rows = []
    for key, g in d.groupby(GROUP):
        clocks = np.array(sorted(g["lever_value"].unique()))
        if len(clocks) < 3:
            rows.append({**dict(zip(GROUP, key, strict=True)), "class": "indeterminate", "confidence": 0.0,
                         "point_class": "", "reason": f"needs >= 3 locked clocks, has {len(clocks)}"})
            continue
        levers, est, boot = lever_resamples(g.sort_values("lever_value"), ["j_per_token", "tokens_per_s"],
                                            n_resamples, rng)
        order = np.argsort([float(Lever.parse(lv).value or 0) for lv in levers])  # ascending clocks
        est, boot = est[order], boot[:, order]
        e_est, t_est = est[:, 0], est[:, 1]
        point = classify_curve(clocks, e_est, t_est, flat, sensitivity)
        labels = [classify_curve(clocks, boot[i, :, 0], boot[i, :, 1], flat, sensitivity)
                  for i in range(n_resamples)]
        counts = pd.Series(labels).value_counts()
        share = float(counts.iloc[0]) / n_resamples
        label = str(counts.index[0]) if share >= min_agreement else "indeterminate"
        rows.append({**dict(zip(GROUP, key, strict=True)), "class": label, "confidence": share,
                     "point_class": point,
                     "energy_range": float((e_est.max() - e_est.min()) / e_est.max()),
                     "throughput_drop_at_min_clock": float(1 - t_est[0] / t_est.max()),
                     "best_clock_mhz": int(clocks[int(np.argmin(e_est))]), "reason": ""})
    return pd.DataFrame(rows)


POLICY_COLUMNS = [*GROUP, "best_clock_mhz", "energy_saving", "energy_saving_ci_low", "energy_saving_ci_high",
                  "throughput_loss", "power_saved_w", "power_saved_w_ci_low", "power_saved_w_ci_high",
                  "default_j_per_token", "default_tokens_per_s", "default_power_w"]


def _best_lock(est: np.ndarray, default: int, locks: list[int], bound: float) -> tuple[int | None, float, float, float]:
    """(index of the lowest-energy lock within the throughput bound, saving, loss, power saved) of estimates.

    ``est`` rows are levers, columns j_per_token, tokens_per_s, power_mean_w. No lock within the bound: None
    and zeros (the policy keeps the default).
    """
    ok = [i for i in locks if est[i, 1] >= (1 - bound) * est[default, 1]]
    if not ok:
        return None, 0.0, 0.0, 0.0
    best = min(ok, key=lambda i: est[i, 0])
    saving = 1 - est[best, 0] / est[default, 0]
    if saving <= 0:
        return best, 0.0, 1 - est[best, 1] / est[default, 1], 0.0
    return best, saving, 1 - est[best, 1] / est[default, 1], max(est[default, 2] - est[best, 2], 0.0)


def _cross_fitted_saving(g: pd.DataFrame, levers: list[str], metrics: list[str], default: int, locks: list[int],
                         bound: float) -> float:
    """The saving of the chosen lock, chosen on half of each lever's trials and measured on the other half.

    Choosing the lowest of several noisy energies and reporting that same energy overstates the saving (the
    winner's curse); with the choice and the estimate on different trials (even and odd, both ways, averaged)
    it does not. Levers with a single trial leave the choice and the estimate on the same trials.
    """
    folds = []
    for parity in (0, 1):
        part = [g[(g["lever"] == lv) & (g["trial"] % 2 == parity)] for lv in levers]
        if any(p.empty for p in part):
            return _best_lock(np.array([point_estimate(job_groups(g[g["lever"] == lv], metrics)) for lv in levers]),
                              default, locks, bound)[1]
        folds.append(np.array([point_estimate(job_groups(p, metrics)) for p in part]))
    savings = []
    for pick, measure in ((folds[0], folds[1]), (folds[1], folds[0])):
        best, chosen_saving, _, _ = _best_lock(pick, default, locks, bound)
        # no lock saves on the choosing half: the policy keeps the default; otherwise what the other half says
        savings.append(0.0 if best is None or chosen_saving <= 0 else 1 - measure[best, 0] / measure[default, 0])
    return float(np.mean(savings))


def policy_resamples(trials: pd.DataFrame, loss_bound: float, n_resamples: int, seed: int = 0
                     ) -> list[tuple[dict[str, Any], np.ndarray]]:
    """Per point with the default and locks: the policy's estimate and its resampled (saving, power saved).

    The saving's point estimate is cross-fitted (:func:`_cross_fitted_saving`); its interval resamples jobs
    and trials and chooses the lock again in every resample.
    """
    d = trials[(trials["phase"] == "decode") & trials["lever_kind"].isin(["default", "smclock"])]
    rng = np.random.default_rng(seed)
    out = []
    for key, g in d.groupby(GROUP):
        if not (g["lever_kind"] == "default").any() or not (g["lever_kind"] == "smclock").any():
            continue
        metrics = ["j_per_token", "tokens_per_s", "power_mean_w"]
        levers, est, boot = lever_resamples(g, metrics, n_resamples, rng)
        default = levers.index("default")
        locks = [i for i, lv in enumerate(levers) if lv != "default"]
        best, _, loss, saved = _best_lock(est, default, locks, loss_bound)
        saving = _cross_fitted_saving(g, levers, metrics, default, locks, loss_bound)
        draws = np.array([_best_lock(boot[r], default, locks, loss_bound)[1:4:2] for r in range(n_resamples)])
        row = {**dict(zip(GROUP, key, strict=True)),
               "best_clock_mhz": Lever.parse(levers[best]).value if best is not None else None,
               "energy_saving": saving, "throughput_loss": loss, "power_saved_w": saved,
               "default_j_per_token": est[default, 0], "default_tokens_per_s": est[default, 1],
               "default_power_w": est[default, 2]}
        out.append((row, draws))
    return out


def clock_policy(trials: pd.DataFrame, loss_bound: float, n_resamples: int, seed: int = 0) -> pd.DataFrame:
    """Per point: the lowest-energy SM lock whose decode throughput loss vs default stays under the bound.

    With the 95 % intervals of its energy saving and the power it saves (selection inside the bootstrap).
    """
    rows = []
    for row, draws in policy_resamples(trials, loss_bound, n_resamples, seed):
        lo, hi = np.percentile(draws, [2.5, 97.5], axis=0)
        rows.append({**row, "energy_saving_ci_low": lo[0], "energy_saving_ci_high": hi[0],
                     "power_saved_w_ci_low": lo[1], "power_saved_w_ci_high": hi[1]})
    return pd.DataFrame(rows, columns=POLICY_COLUMNS)


FLEET_COLUMNS = ["engine", "scope", "gpus", "decode_share", "points", "mean_saved_w_per_gpu", "fleet_saved_mw",
                 "fleet_saved_mw_ci_low", "fleet_saved_mw_ci_high"]


def fleet_projection(trials: pd.DataFrame, loss_bound: float, gpus: int, decode_share: float, n_resamples: int,
                     seed: int = 0) -> pd.DataFrame:
    """Power saved across a fleet running the clock policy, the load spread evenly over the measured points.

    Per engine, over all points and per architecture, with the 95 % interval of the mean power saved.
    """
    rows = []
    found = policy_resamples(trials, loss_bound, n_resamples, seed)
    for engine in sorted({r["engine"] for r, _ in found}):
        mine = [(r, dr) for r, dr in found if r["engine"] == engine]
        scopes = [("all", mine), *[(a, [(r, dr) for r, dr in mine if r["arch"] == a])
                                   for a in sorted({r["arch"] for r, _ in mine})]]
        for scope, items in scopes:
            w = float(np.mean([r["power_saved_w"] for r, _ in items]))
            boot = np.mean([dr[:, 1] for _, dr in items], axis=0)
            lo, hi = np.percentile(boot, [2.5, 97.5])
            mw = gpus * decode_share / 1e6
            rows.append({"engine": engine, "scope": scope, "gpus": gpus, "decode_share": decode_share,
                         "points": len(items), "mean_saved_w_per_gpu": w, "fleet_saved_mw": mw * w,
                         "fleet_saved_mw_ci_low": mw * lo, "fleet_saved_mw_ci_high": mw * hi})
    return pd.DataFrame(rows, columns=FLEET_COLUMNS)


def stage_classes(cfg: Mapping[str, Any], outdir: Path) -> None:
    """DVFS classes, curves, clock policy and fleet projection."""
    a = cfg["analysis"]
    trials = pd.read_parquet(outdir / "phase_trials.parquet")
    dvfs_curves(trials).to_parquet(outdir / "dvfs_curves.parquet", index=False)
    classes = dvfs_classes(trials, a["class_flat_threshold"], a["class_sensitivity_threshold"],
                           a["bootstrap_resamples"], cfg["seed"])
    if classes.empty:
        classes = pd.DataFrame(columns=[*GROUP, "class", "confidence", "point_class", "reason"])
    classes.to_csv(outdir / "dvfs_classes.csv", index=False)
    n, bound = a["bootstrap_resamples"], a["throughput_loss_bound"]
    clock_policy(trials, bound, n, cfg["seed"]).to_csv(outdir / "clock_policy.csv", index=False)
    fleet_projection(trials, bound, a["fleet_gpus"], a["fleet_decode_share"], n, cfg["seed"]).to_csv(
        outdir / "fleet.csv", index=False)


# ------------------------------------------------------------------------------------------ crossovers
def request_energy_curve(prefill_j_per_token: float, context: int, decode_windows: pd.DataFrame,
                         outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prefill and decode energy (J) of one request for each output length in ``outputs``.

    ``decode_windows`` has context_start, context_end and j_per_token of one trial's windows. Windows that
    tile [context, ...) are integrated as piecewise-constant J/token; windows sampled at spaced positions
    (``measurement.decode_window_steps``) are joined by linear interpolation between their centres (constant
    beyond the first and last) and summed over positions [context, context + n).
    """
    dw = decode_windows.sort_values("context_start")
    lo = dw["context_start"].to_numpy() - context
    hi = dw["context_end"].to_numpy() - context
    j = dw["j_per_token"].to_numpy()
    outputs = np.asarray(outputs)
    prefill = np.full(len(outputs), prefill_j_per_token * context)
    if lo[0] == 0 and np.array_equal(hi[:-1], lo[1:]):
        n = outputs.astype(float)[:, None]
        covered = np.clip(np.minimum(n, hi[None, :]) - lo[None, :], 0, None)
        return prefill, (covered * j[None, :]).sum(axis=1)
    per_token = np.interp(np.arange(int(outputs.max())) + 0.5, (lo + hi) / 2.0, j)
    cum = np.concatenate([[0.0], np.cumsum(per_token)])
    return prefill, cum[outputs.astype(int)]


def request_resamples(jobs: list[tuple[np.ndarray, np.ndarray]], context: int, n: int, rng: np.random.Generator,
                      run_sd: float) -> tuple[np.ndarray, np.ndarray]:
    """Resampled (prefill J, decode J) request curves of one point, each n x output lengths.

    ``jobs``: per job, its prefill J/token trials and its decode energy curves (trials x output lengths).
    Jobs are drawn with replacement, then each drawn job's trials; a point with one job is multiplied, per
    resample, by (1 + e) with e normal of standard deviation ``run_sd`` (the run-to-run spread), the same
    factor for prefill and decode (a card or run effect moves both).
    """
    n_out = jobs[0][1].shape[1]
    pick = rng.integers(0, len(jobs), size=(n, len(jobs)))
    pre = np.zeros((n, n_out))
    dec = np.zeros((n, n_out))
    for j, (pj, dj) in enumerate(jobs):
        count = (pick == j).sum(axis=1)  # how often job j was drawn into each resample
        for c in np.unique(count[count > 0]):
            rows = np.flatnonzero(count == c)
            for _ in range(c):  # every draw of a job resamples its trials anew
                pre[rows] += pj[rng.integers(0, len(pj), size=(len(rows), len(pj)))].mean(axis=1)[:, None] * context
                dec[rows] += dj[rng.integers(0, len(dj), size=(len(rows), len(dj)))].mean(axis=1)
    pre /= len(jobs)
    dec /= len(jobs)
    if len(jobs) == 1 and run_sd > 0:
        f = 1.0 + rng.normal(0.0, run_sd, size=(n, 1))
        pre, dec = pre * f, dec * f
    return pre, dec


def first_crossing(x: np.ndarray, diff: np.ndarray, log_x: bool = False) -> float | None:
    """First x where ``diff`` changes sign, linearly interpolated (in log x when asked); None if none."""
    s = np.sign(diff)
    idx = np.flatnonzero((s[:-1] != s[1:]) & (s[:-1] != 0))
    if len(idx) == 0:
        return None
    i = int(idx[0])
    xa, xb = (np.log(x[i]), np.log(x[i + 1])) if log_x else (x[i], x[i + 1])
    xc = xa + (xb - xa) * diff[i] / (diff[i] - diff[i + 1])
    return float(np.exp(xc) if log_x else xc)


def crossing_with_ci(x: np.ndarray, diffs: np.ndarray) -> dict[str, Any]:
    """Crossover of the median difference curve with its percentile CI over resamples (rows of ``diffs``).

    Also the share of resamples without a sign change and on which side the architecture ends up cheaper.
    """
    boots = [first_crossing(x, row, log_x=True) for row in diffs]
    found = np.array([b for b in boots if b is not None])
    return {"crossover": first_crossing(x, np.median(diffs, axis=0), log_x=True),
            "ci_low": float(np.percentile(found, 2.5)) if len(found) else None,
            "ci_high": float(np.percentile(found, 97.5)) if len(found) else None,
            "share_none": 1 - len(found) / len(boots),
            "direction": "cheaper beyond" if np.median(diffs[:, -1]) < 0 else "dearer beyond"}


CROSSOVER_COLUMNS = ["engine", "kind", "arch", "paradigm", "reference", "batch", "at", "crossover", "ci_low",
                     "ci_high", "share_none", "direction"]


def _reference_arch(trials: pd.DataFrame, cfg: Mapping[str, Any]) -> str | None:
    """The GQA model the others are compared with: the first of the config's architectures with GQA data."""
    gqa = set(trials[trials["paradigm"] == "gqa"]["arch"])
    return next((a for a in cfg["architectures"] if a in gqa), None)


def crossover_tables(windows: pd.DataFrame, trials: pd.DataFrame, cfg: Mapping[str, Any]
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Request energy and crossovers vs GQA, for each engine against the GQA model of the same engine."""
    requests, crossings = [], []
    for engine in sorted(trials["engine"].unique()):
        r, x = _crossover_tables_one(windows[windows["engine"] == engine], trials[trials["engine"] == engine], cfg)
        requests.append(r.assign(engine=engine) if len(r) else r)
        crossings.append(x.assign(engine=engine)[CROSSOVER_COLUMNS] if len(x) else x)
    request = pd.concat([r for r in requests if len(r)], ignore_index=True) if any(len(r) for r in requests) \
        else pd.DataFrame()
    cross = pd.concat([x for x in crossings if len(x)], ignore_index=True) if any(len(x) for x in crossings) \
        else pd.DataFrame(columns=CROSSOVER_COLUMNS)
    return request, cross


def _crossover_tables_one(windows: pd.DataFrame, trials: pd.DataFrame, cfg: Mapping[str, Any]
                          ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Request energy per arch/batch/context/output length (default lever), and crossovers vs GQA (one engine)."""
    n_res = cfg["analysis"]["bootstrap_resamples"]
    rng = np.random.default_rng(cfg["seed"])
    max_out = max(cfg["output_lengths"])
    grid = np.unique(np.concatenate([np.geomspace(1, max_out, 64).round(), cfg["output_lengths"]]))
    run_sd = cfg["analysis"]["run_to_run_sd"]
    kept = ~windows["excluded"] if "excluded" in windows else pd.Series(True, index=windows.index)
    dwin = windows[(windows["phase"] == "decode") & (windows["lever"] == "default") & kept]
    pre = trials[(trials["phase"] == "prefill") & (trials["lever"] == "default")]
    curves: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}  # (arch,batch,ctx) -> (R x N prefill, R x N decode)
    rows = []
    for (arch, batch, ctx), pw in pre.groupby(["arch", "batch", "context"]):
        dw = dwin[(dwin["arch"] == arch) & (dwin["batch"] == batch) & (dwin["context"] == ctx)]
        if dw.empty:
            continue
        # per job: its prefill J/token trials and its decode curves (one per trial), resampled jobs-then-trials
        jobs = [(pw[pw["job"] == job]["j_per_token"].to_numpy(),
                 np.array([request_energy_curve(0.0, ctx, g, grid)[1] for _, g in d.groupby("trial")]))
                for job, d in dw.groupby("job") if (pw["job"] == job).any()]
        if not jobs:
            continue
        pre_bs, dec_bs = request_resamples(jobs, ctx, n_res, rng, run_sd)
        curves[(arch, batch, ctx)] = (pre_bs, dec_bs)
        p_est = float(np.mean([p.mean() for p, _ in jobs])) * ctx
        d_est = np.mean([d.mean(axis=0) for _, d in jobs], axis=0)
        for k, n in enumerate(grid):
            tot = pre_bs[:, k] + dec_bs[:, k]
            rows.append({"arch": arch, "paradigm": get_preset(arch).paradigm, "batch": batch, "context": ctx,
                         "output_length": int(n), "prefill_j": p_est, "decode_j": float(d_est[k]),
                         "total_j": p_est + float(d_est[k]), "total_ci_low": float(np.percentile(tot, 2.5)),
                         "total_ci_high": float(np.percentile(tot, 97.5)), "jobs": len(jobs),
                         "in_output_grid": int(n) in set(cfg["output_lengths"])})
    request = pd.DataFrame(rows)
    ref = _reference_arch(trials, cfg)
    xrows: list[dict[str, Any]] = []
    if request.empty or ref is None:
        return request, pd.DataFrame(columns=CROSSOVER_COLUMNS)
    ref_tot = request[request["arch"] == ref].set_index(["batch", "context", "output_length"])["total_j"]
    request["ratio_vs_gqa"] = request.apply(
        lambda r: r["total_j"] / ref_tot.get((r["batch"], r["context"], r["output_length"]), np.nan), axis=1)
    request["ratio_ci_low"] = np.nan
    request["ratio_ci_high"] = np.nan
    for (arch, batch, ctx), (p, d) in curves.items():
        if (ref, batch, ctx) not in curves:
            continue
        rp, rd = curves[(ref, batch, ctx)]
        ratio = (p + d) / (rp + rd)  # R x N, resampled independently: the models were measured in other jobs
        sel = (request["arch"] == arch) & (request["batch"] == batch) & (request["context"] == ctx)
        order = request.loc[sel, "output_length"].map({int(n): k for k, n in enumerate(grid)}).to_numpy()
        request.loc[sel, "ratio_ci_low"] = np.percentile(ratio, 2.5, axis=0)[order]
        request.loc[sel, "ratio_ci_high"] = np.percentile(ratio, 97.5, axis=0)[order]
        if arch == ref:
            continue
        diff = (p + d) - (rp + rd)  # R x N
        xrows.append({"engine": None, "kind": "output_length", "arch": arch, "paradigm": get_preset(arch).paradigm,
                      "reference": ref, "batch": batch, "at": ctx, **crossing_with_ci(grid, diff)})
    # crossover over context, at each output length of the grid
    for (arch, batch), g in request[request["arch"] != ref].groupby(["arch", "batch"]):
        for n in cfg["output_lengths"]:
            ctxs = sorted(c for c in g["context"].unique() if (ref, batch, c) in curves and (arch, batch, c) in curves)
            if len(ctxs) < 2:
                continue
            k = int(np.flatnonzero(grid == n)[0])
            diffs = np.array([(curves[(arch, batch, c)][0][:, k] + curves[(arch, batch, c)][1][:, k])
                              - (curves[(ref, batch, c)][0][:, k] + curves[(ref, batch, c)][1][:, k])
                              for c in ctxs]).T  # R x C
            xrows.append({"engine": None, "kind": "context", "arch": arch, "paradigm": get_preset(arch).paradigm,
                          "reference": ref, "batch": batch, "at": n,
                          **crossing_with_ci(np.array(ctxs, dtype=float), diffs)})
    return request, pd.DataFrame(xrows, columns=CROSSOVER_COLUMNS)


def stage_crossover(cfg: Mapping[str, Any], outdir: Path) -> None:
    """Request energy relative to GQA and the crossover points."""
    windows = pd.read_parquet(outdir / "windows.parquet")
    trials = pd.read_parquet(outdir / "phase_trials.parquet")
    request, cross = crossover_tables(windows, trials, cfg) if len(trials) else \
        (pd.DataFrame(), pd.DataFrame(columns=CROSSOVER_COLUMNS))
    request.to_parquet(outdir / "request_energy.parquet", index=False)
    cross.to_csv(outdir / "crossovers.csv", index=False)


# ------------------------------------------------------------------------------------------ claims
def derived_tables(windows: pd.DataFrame, cfg: Mapping[str, Any], exclude_flags: tuple[str, ...]
                   ) -> dict[str, pd.DataFrame]:
    """The tables the claims read, derived from window summaries with the given windows left out."""
    from .sweetspot import cells_from_request, fit_cells, sweet_region

    a = cfg["analysis"]
    n, seed = a["bootstrap_resamples"], cfg["seed"]
    w = add_window_metrics(windows.drop(columns=[c for c in ("excluded",) if c in windows]), exclude_flags)
    trials = trial_table(w)
    if trials.empty:
        return {}
    pareto = pd.concat([pareto_table(trials, n, seed, ph) for ph in ("decode", "prefill")], ignore_index=True)
    request, cross = crossover_tables(w, trials, cfg)
    cells, fit = fit_cells(sweet_region(cells_from_request(request), a["sweetspot_drop_share"]),
                           a["sweetspot_holdout_share"], seed)
    decode = pareto[pareto["phase"] == "decode"]
    return {
        "summary": summarise_trials(trials, n, a["run_to_run_sd"], seed),
        "dominance": dominance_table(decode) if len(decode) else pd.DataFrame(),
        "classes": dvfs_classes(trials, a["class_flat_threshold"], a["class_sensitivity_threshold"], n, seed),
        "policy": clock_policy(trials, a["throughput_loss_bound"], n, seed),
        "fleet": fleet_projection(trials, a["throughput_loss_bound"], a["fleet_gpus"], a["fleet_decode_share"], n,
                                  seed),
        "crossovers": cross, "request": request, "sweetspot_cells": cells, "sweetspot_fit": fit,
    }


def claims_sensitivity(tables: Path, cfg: Mapping[str, Any], claims: pd.DataFrame) -> pd.DataFrame:
    """Each claim's verdict as published (flagged windows left out) and with every window counted."""
    from .claims import evaluate_tables, load_tables

    windows = pd.read_parquet(tables / "windows.parquet")
    t = load_tables(tables)
    t.update(derived_tables(windows, cfg, ()))
    everything = evaluate_tables(t, cfg)
    keys = ["id", "engine"]
    out = claims[[*keys, "verdict"]].merge(everything[[*keys, "verdict", "evidence"]], on=keys, how="left",
                                           suffixes=("", "_all_windows"))
    out = out.rename(columns={"verdict": "verdict_flagged_left_out"})
    out["changed"] = out["verdict_flagged_left_out"] != out["verdict_all_windows"]
    out["left_out"] = ", ".join(cfg["analysis"]["exclude_flags"])
    return out


def stage_claims(cfg: Mapping[str, Any], outdir: Path) -> None:
    """Evaluate the claims over the tables; results/claims.csv and the sensitivity to flagged windows."""
    from .claims import evaluate_claims

    tables = outdir / "tables"
    claims = evaluate_claims(tables, cfg)
    outdir.mkdir(parents=True, exist_ok=True)
    claims.to_csv(outdir / "claims.csv", index=False)
    claims_sensitivity(tables, cfg, claims).to_csv(tables / "claims_sensitivity.csv", index=False)
