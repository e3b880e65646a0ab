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
from scipy import stats

from .config import Lever, expand_grid
from .costmodel import CostModel
from .presets import get_preset
from .trace import collect_windows

log = logging.getLogger(__name__)

POINT = ["engine", "arch", "paradigm", "batch", "context", "lever", "rep", "backend"]
GROUP = ["engine", "arch", "paradigm", "batch", "context"]
METRICS = ["j_per_token", "j_per_token_above_idle", "tokens_per_s", "power_mean_w", "sm_clock_mhz",
           "sw_power_cap_share", "floor_fraction", "compute_fraction"]


# ------------------------------------------------------------------------------------------ energy
def add_window_metrics(windows: pd.DataFrame) -> pd.DataFrame:
    """Idle-corrected energy, J/token, rates, throttle shares and roofline fractions per window."""
    if windows.empty:
        return windows.assign(**{m: pd.Series(dtype=float) for m in METRICS})
    w = windows.copy()
    idle = w[w["phase"] == "idle"].groupby("job").apply(
        lambda d: d["energy_j"].sum() / d["duration_s"].sum(), include_groups=False
    )
    w["idle_power_w"] = w["job"].map(idle).astype(float)
    w["energy_above_idle_j"] = w["energy_j"] - w["idle_power_w"].fillna(0.0) * w["duration_s"]
    tok = w["tokens"].where(w["tokens"] > 0)
    w["j_per_token"] = w["energy_j"] / tok
    w["j_per_token_above_idle"] = w["energy_above_idle_j"] / tok
    w["tokens_per_s"] = w["tokens"] / w["duration_s"]
    w["sw_power_cap_share"] = (w["thr_sw_power_s"] / w["duration_s"]).clip(0, 1)
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
    """One row per job x phase x trial: energy and tokens summed over the trial's windows."""
    w = w[w["phase"].isin(["prefill", "decode"])].copy()
    if w.empty:
        return pd.DataFrame(columns=[*POINT, "phase", "trial", *METRICS])
    w["_clock_t"] = w["sm_clock_mhz"] * w["duration_s"]
    w["_flags"] = w["flags"].fillna("")
    keys = [*POINT, "job", "lever_kind", "lever_value", "power_limit_w", "locked_sm_clock_mhz", "phase", "trial"]
    g = w.groupby(keys, dropna=False)
    t = g.agg(
        energy_j=("energy_j", "sum"), energy_above_idle_j=("energy_above_idle_j", "sum"),
        energy_trapz_j=("energy_trapz_j", "sum"), tokens=("tokens", "sum"),
        duration_s=("duration_s", "sum"), thr_sw_power_s=("thr_sw_power_s", "sum"),
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
    t["floor_fraction"] = t["bytes"] / t["duration_s"] / t["bandwidth_bps"]
    t["compute_fraction"] = t["flops"] / t["duration_s"] / t["matmul_flops"]
    t["trapz_mismatch"] = (t["energy_trapz_j"] - t["energy_j"]) / t["energy_j"]
    return t.drop(columns=["clock_t"])


def bootstrap_ci(values: np.ndarray, n_resamples: int, seed: int = 0,
                 confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (scipy.stats.bootstrap); degenerate samples give (x, x)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    if len(v) < 2 or np.ptp(v) == 0:
        return float(v.mean()), float(v.mean())
    res = stats.bootstrap((v,), np.mean, n_resamples=n_resamples, method="percentile",
                          confidence_level=confidence, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def summarise_trials(trials: pd.DataFrame, n_resamples: int) -> pd.DataFrame:
    """Per point and phase: median over trials and bootstrap CIs of the mean of each metric."""
    keys = [*POINT, "lever_kind", "lever_value", "power_limit_w", "locked_sm_clock_mhz", "phase"]
    rows = []
    for k, d in trials.groupby(keys, dropna=False):
        row: dict[str, Any] = dict(zip(keys, k, strict=True))
        row["trials"] = len(d)
        for m in METRICS:
            row[m] = float(d[m].median())
        for m in ("j_per_token", "tokens_per_s", "power_mean_w"):
            row[f"{m}_ci_low"], row[f"{m}_ci_high"] = bootstrap_ci(d[m].to_numpy(), n_resamples)
        row["idle_power_w"] = float(d["idle_power_w"].median())
        row["trapz_mismatch_max"] = float(d["trapz_mismatch"].abs().max())
        row["flags"] = ",".join(sorted({f for x in d["flags"] for f in str(x).split(",") if f}))
        rows.append(row)
    return pd.DataFrame(rows)


def stage_energy(cfg: Mapping[str, Any], outdir: Path) -> None:
    """Windows of all jobs with metrics, trials and the per-phase summary."""
    outdir.mkdir(parents=True, exist_ok=True)
    traces = Path(cfg["traces"])
    windows, jobs = collect_windows(traces / p.path for p in expand_grid(cfg))
    w = add_window_metrics(windows)
    t = trial_table(w)
    summary = summarise_trials(t, cfg["analysis"]["bootstrap_resamples"]) if len(t) else pd.DataFrame()
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


def _trial_matrix(d: pd.DataFrame, metric: str) -> tuple[list[str], list[np.ndarray]]:
    levers, values = [], []
    for lever, g in d.groupby("lever", sort=True):
        levers.append(str(lever))
        values.append(g[metric].to_numpy(dtype=float))
    return levers, values


def _resample_means(values: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    out = np.empty((n, len(values)))
    for j, v in enumerate(values):
        idx = rng.integers(0, len(v), size=(n, len(v)))
        out[:, j] = v[idx].mean(axis=1)
    return out


def pareto_table(trials: pd.DataFrame, n_resamples: int, seed: int = 0, phase: str = "decode") -> pd.DataFrame:
    """Per architecture x batch x context: each lever's medians, frontier membership and its probability."""
    d0 = trials[trials["phase"] == phase]
    rows = []
    rng = np.random.default_rng(seed)
    for key, d in d0.groupby(GROUP):
        # one sample per trial, pooled over repetitions of a lever
        levers, tps = _trial_matrix(d, "tokens_per_s")
        _, jpt = _trial_matrix(d, "j_per_token")
        med_t = np.array([np.median(v) for v in tps])
        med_e = np.array([np.median(v) for v in jpt])
        front = nondominated(med_t, med_e)
        # resample trials jointly per lever (same trial indices for both metrics)
        stacked_t = np.empty((n_resamples, len(levers)))
        stacked_e = np.empty((n_resamples, len(levers)))
        for j, (vt, ve) in enumerate(zip(tps, jpt, strict=True)):
            idx = rng.integers(0, len(vt), size=(n_resamples, len(vt)))
            stacked_t[:, j] = vt[idx].mean(axis=1)
            stacked_e[:, j] = ve[idx].mean(axis=1)
        prob = nondominated(stacked_t, stacked_e).mean(axis=0)
        for j, lever in enumerate(levers):
            lv = Lever.parse(lever)
            rows.append({**dict(zip(GROUP, key, strict=True)), "phase": phase, "lever": lever,
                         "lever_kind": lv.kind, "lever_value": lv.value, "tokens_per_s": med_t[j],
                         "j_per_token": med_e[j], "on_frontier": bool(front[j]),
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
    med = d.groupby([*GROUP, "lever_value"], as_index=False)[["sm_clock_mhz", "j_per_token",
                                                               "tokens_per_s"]].median()
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
        e_vals = [g[g["lever_value"] == c]["j_per_token"].to_numpy() for c in clocks]
        t_vals = [g[g["lever_value"] == c]["tokens_per_s"].to_numpy() for c in clocks]
        point = classify_curve(clocks, np.array([np.median(v) for v in e_vals]),
                               np.array([np.median(v) for v in t_vals]), flat, sensitivity)
        re = _resample_means(e_vals, n_resamples, rng)
        rt = _resample_means(t_vals, n_resamples, rng)
        labels = [classify_curve(clocks, re[i], rt[i], flat, sensitivity) for i in range(n_resamples)]
        counts = pd.Series(labels).value_counts()
        share = float(counts.iloc[0]) / n_resamples
        label = str(counts.index[0]) if share >= min_agreement else "indeterminate"
        e_med = np.array([np.median(v) for v in e_vals])
        t_med = np.array([np.median(v) for v in t_vals])
        rows.append({**dict(zip(GROUP, key, strict=True)), "class": label, "confidence": share,
                     "point_class": point,
                     "energy_range": float((e_med.max() - e_med.min()) / e_med.max()),
                     "throughput_drop_at_min_clock": float(1 - t_med[0] / t_med.max()),
                     "best_clock_mhz": int(clocks[int(np.argmin(e_med))]), "reason": ""})
    return pd.DataFrame(rows)


def clock_policy(summary: pd.DataFrame, loss_bound: float) -> pd.DataFrame:
    """Per point: the lowest-energy SM lock whose decode throughput loss vs default stays under the bound."""
    d = summary[summary["phase"] == "decode"]
    rows = []
    for key, g in d.groupby(GROUP):
        base = g[g["lever_kind"] == "default"]
        locks = g[g["lever_kind"] == "smclock"]
        if base.empty or locks.empty:
            continue
        b = base.iloc[0]
        ok = locks[locks["tokens_per_s"] >= (1 - loss_bound) * b["tokens_per_s"]]
        row = {**dict(zip(GROUP, key, strict=True)), "default_j_per_token": b["j_per_token"],
               "default_tokens_per_s": b["tokens_per_s"], "default_power_w": b["power_mean_w"]}
        if ok.empty:
            rows.append({**row, "best_clock_mhz": None, "energy_saving": 0.0, "throughput_loss": 0.0,
                         "power_saved_w": 0.0})
            continue
        best = ok.loc[ok["j_per_token"].idxmin()]
        saving = 1 - best["j_per_token"] / b["j_per_token"]
        rows.append({**row, "best_clock_mhz": int(best["lever_value"]), "energy_saving": max(saving, 0.0),
                     "throughput_loss": 1 - best["tokens_per_s"] / b["tokens_per_s"],
                     "power_saved_w": max(b["power_mean_w"] - best["power_mean_w"], 0.0)
                     if saving > 0 else 0.0})
    return pd.DataFrame(rows)


def fleet_projection(policy: pd.DataFrame, gpus: int, decode_share: float) -> pd.DataFrame:
    """Power saved across a fleet, with the load spread evenly over the measured points (per engine)."""
    if policy.empty:
        return pd.DataFrame(columns=["engine", "scope", "gpus", "decode_share", "mean_saved_w_per_gpu",
                                     "fleet_saved_mw"])
    rows = []
    for engine, pe in policy.groupby("engine"):
        for scope, d in [("all", pe), *[(a, g) for a, g in pe.groupby("arch")]]:
            w = float(d["power_saved_w"].mean())
            rows.append({"engine": engine, "scope": scope, "gpus": gpus, "decode_share": decode_share,
                         "mean_saved_w_per_gpu": w, "fleet_saved_mw": gpus * decode_share * w / 1e6})
    return pd.DataFrame(rows)


def stage_classes(cfg: Mapping[str, Any], outdir: Path) -> None:
    """DVFS classes, curves, clock policy and fleet projection."""
    a = cfg["analysis"]
    trials = pd.read_parquet(outdir / "phase_trials.parquet")
    summary = pd.read_parquet(outdir / "phase_energy.parquet")
    dvfs_curves(trials).to_parquet(outdir / "dvfs_curves.parquet", index=False)
    classes = dvfs_classes(trials, a["class_flat_threshold"], a["class_sensitivity_threshold"],
                           a["bootstrap_resamples"], cfg["seed"])
    if classes.empty:
        classes = pd.DataFrame(columns=[*GROUP, "class", "confidence", "point_class", "reason"])
    classes.to_csv(outdir / "dvfs_classes.csv", index=False)
    policy = clock_policy(summary, a["throughput_loss_bound"]) if len(summary) else pd.DataFrame()
    if policy.empty:
        policy = pd.DataFrame(columns=[*GROUP, "best_clock_mhz", "energy_saving", "throughput_loss",
                                       "power_saved_w"])
    policy.to_csv(outdir / "clock_policy.csv", index=False)
    fleet_projection(policy, a["fleet_gpus"], a["fleet_decode_share"]).to_csv(outdir / "fleet.csv", index=False)


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


CROSSOVER_COLUMNS = ["engine", "kind", "arch", "reference", "batch", "at", "crossover", "ci_low", "ci_high",
                     "share_none", "direction"]


def _reference_arch(trials: pd.DataFrame, cfg: Mapping[str, Any]) -> str | None:
    for a in cfg["architectures"]:
        if get_preset(a).paradigm == "gqa" and a in set(trials["arch"]):
            return a
    return None


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
    dwin = windows[(windows["phase"] == "decode") & (windows["lever"] == "default")]
    pre = trials[(trials["phase"] == "prefill") & (trials["lever"] == "default")]
    curves: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}  # (arch,batch,ctx) -> (R x N prefill, R x N decode)
    rows = []
    for (arch, batch, ctx), pw in pre.groupby(["arch", "batch", "context"]):
        dw = dwin[(dwin["arch"] == arch) & (dwin["batch"] == batch) & (dwin["context"] == ctx)]
        if dw.empty:
            continue
        per_trial = [request_energy_curve(0.0, ctx, g, grid)[1] for _, g in dw.groupby(["job", "trial"])]
        dec = np.array(per_trial)  # trials x N
        pj = pw["j_per_token"].to_numpy()
        di = rng.integers(0, len(dec), size=(n_res, len(dec)))
        pi = rng.integers(0, len(pj), size=(n_res, len(pj)))
        dec_bs = dec[di].mean(axis=1)  # R x N
        pre_bs = (pj[pi].mean(axis=1) * ctx)[:, None] * np.ones((1, len(grid)))
        curves[(arch, batch, ctx)] = (pre_bs, dec_bs)
        p_med, d_med = float(np.median(pj)) * ctx, np.median(dec, axis=0)
        for k, n in enumerate(grid):
            tot = pre_bs[:, k] + dec_bs[:, k]
            rows.append({"arch": arch, "paradigm": get_preset(arch).paradigm, "batch": batch, "context": ctx,
                         "output_length": int(n), "prefill_j": p_med, "decode_j": float(d_med[k]),
                         "total_j": p_med + float(d_med[k]), "total_ci_low": float(np.percentile(tot, 2.5)),
                         "total_ci_high": float(np.percentile(tot, 97.5)),
                         "in_output_grid": int(n) in set(cfg["output_lengths"])})
    request = pd.DataFrame(rows)
    ref = _reference_arch(trials, cfg)
    xrows: list[dict[str, Any]] = []
    if request.empty or ref is None:
        return request, pd.DataFrame(columns=CROSSOVER_COLUMNS)
    ref_tot = request[request["arch"] == ref].set_index(["batch", "context", "output_length"])["total_j"]
    request["ratio_vs_gqa"] = request.apply(
        lambda r: r["total_j"] / ref_tot.get((r["batch"], r["context"], r["output_length"]), np.nan), axis=1)
    for (arch, batch, ctx), (p, d) in curves.items():
        if arch == ref or (ref, batch, ctx) not in curves:
            continue
        rp, rd = curves[(ref, batch, ctx)]
        diff = (p + d) - (rp + rd)  # R x N
        xrows.append({"engine": None, "kind": "output_length", "arch": arch, "reference": ref, "batch": batch,
                      "at": ctx,
                      **crossing_with_ci(grid, diff)})
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
            xrows.append({"engine": None, "kind": "context", "arch": arch, "reference": ref, "batch": batch, "at": n,
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
def stage_claims(cfg: Mapping[str, Any], outdir: Path) -> None:
    """Evaluate C1-C11 over the tables and write results/claims.csv."""
    from .claims import evaluate_claims

    tables = outdir / "tables"
    claims = evaluate_claims(tables, cfg)
    outdir.mkdir(parents=True, exist_ok=True)
    claims.to_csv(outdir / "claims.csv", index=False)
