"""DVFS behaviour classes, decode energy against the locked clock, the clock policy and the fleet projection."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from phase_energy.analysis.energy import GROUP
from phase_energy.analysis.pareto import lever_resamples
from phase_energy.analysis.stats import groups, point_estimate, split_jobs
from phase_energy.grid import Lever

CLASS_NAMES = ("flat", "interior-optimum", "lower-clock-saves", "higher-clock-saves")


def classify_curve(clocks: np.ndarray, energy: np.ndarray, throughput: np.ndarray,
                   flat: float, sensitivity: float) -> str:
    """DVFS class of one energy/token-vs-clock curve (clocks ascending, values normalised).

    flat: energy varies by less than ``flat`` and throughput by less than ``sensitivity``;
    interior-optimum: the lowest energy lies strictly inside the clock range and beats both ends by
    ``flat``; lower-/higher-clock-saves: the lowest energy is at that end and beats the other by ``flat``.
    """
    return classify_curves(np.asarray(energy, dtype=float)[None], np.asarray(throughput, dtype=float)[None],
                           flat, sensitivity)[0]


def classify_curves(energy: np.ndarray, throughput: np.ndarray, flat: float, sensitivity: float) -> list[str]:
    """:func:`classify_curve` of each row of ``energy`` and ``throughput`` (curves x clocks), at once.

    NaN values are left out of each curve's range and minimum; a curve of NaN energies only is an error.
    """
    e = np.asarray(energy, dtype=float)
    t = np.asarray(throughput, dtype=float)
    e_rel = e / np.nanmax(e, axis=1, keepdims=True)
    t_rel = t / np.nanmax(t, axis=1, keepdims=True)
    is_flat = ((np.nanmax(e_rel, axis=1) - np.nanmin(e_rel, axis=1) < flat)
               & (np.nanmax(t_rel, axis=1) - np.nanmin(t_rel, axis=1) < sensitivity))
    lowest = np.nanargmin(e, axis=1)
    first, last = e_rel[:, 0], e_rel[:, -1]
    lower_end = np.where(last < first, last, first)  # min(first, last) as Python's min takes it (NaN: first)
    at_lowest = np.take_along_axis(e_rel, lowest[:, None], axis=1)[:, 0]
    interior = (lowest > 0) & (lowest < e.shape[1] - 1) & (at_lowest < lower_end - flat)
    classes = np.select([is_flat, interior, first < last - flat, last < first - flat],
                        ["flat", "interior-optimum", "lower-clock-saves", "higher-clock-saves"], default="flat")
    return [str(c) for c in classes]


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
        labels = classify_curves(boot[:, :, 0], boot[:, :, 1], flat, sensitivity)
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


def _best_locks(boot: np.ndarray, default: int, locks: list[int], bound: float) -> np.ndarray:
    """(saving, power saved) of :func:`_best_lock` for each resample of ``boot`` (resamples x levers x metrics).

    At once for all resamples; resamples with a non-finite energy take :func:`_best_lock` one by one.
    """
    e, t, p = boot[:, :, 0], boot[:, :, 1], boot[:, :, 2]
    at = np.asarray(locks)
    ok = t[:, at] >= (1 - bound) * t[:, [default]]
    finite = np.isfinite(e[:, at]).all(axis=1)
    rows = np.arange(len(boot))
    best = at[np.argmin(np.where(ok, e[:, at], np.inf), axis=1)]  # the first of the lowest, as min() takes it
    saving = 1 - e[rows, best] / e[:, default]
    diff = p[:, default] - p[rows, best]
    saved = np.where(diff < 0.0, 0.0, diff)  # max(diff, 0.0) as Python takes it (NaN stays)
    keeps_default = ~ok.any(axis=1) | (saving <= 0)
    out = np.stack([np.where(keeps_default, 0.0, saving), np.where(keeps_default, 0.0, saved)], axis=1)
    for r in np.flatnonzero(~finite):
        out[r] = _best_lock(boot[r], default, locks, bound)[1:4:2]
    return out


def _cross_fitted_saving(g: pd.DataFrame, levers: list[str], metrics: list[str], default: int, locks: list[int],
                         bound: float) -> float:
    """The saving of the chosen lock, chosen on half of each lever's trials and measured on the other half.

    Choosing the lowest of several noisy energies and reporting that same energy overstates the saving (the
    winner's curse); with the choice and the estimate on different trials (even and odd, both ways, averaged)
    it does not. Levers with a single trial leave the choice and the estimate on the same trials.
    """
    lev, jobs, values = g["lever"].to_numpy(), g["job"].to_numpy(), g[metrics].to_numpy(dtype=float)
    parity = g["trial"].to_numpy() % 2
    at = [lev == lv for lv in levers]
    folds = []
    for half in (0, 1):
        part = [m & (parity == half) for m in at]
        if any(not p.any() for p in part):
            return _best_lock(np.array([point_estimate(split_jobs(jobs[m], values[m])) for m in at]),
                              default, locks, bound)[1]
        folds.append(np.array([point_estimate(split_jobs(jobs[p], values[p])) for p in part]))
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
    and trials and chooses the lock again in every resample. :func:`clock_policy` and
    :func:`fleet_projection` take the result, so that a stage computing both resamples once.
    """
    d = trials[(trials["phase"] == "decode") & trials["lever_kind"].isin(["default", "smclock"])]
    rng = np.random.default_rng(seed)
    out = []
    kinds = d["lever_kind"].to_numpy()
    for key, pos in groups(d, GROUP):
        if not (kinds[pos] == "default").any() or not (kinds[pos] == "smclock").any():
            continue
        g = d.iloc[pos]
        metrics = ["j_per_token", "tokens_per_s", "power_mean_w"]
        levers, est, boot = lever_resamples(g, metrics, n_resamples, rng)
        default = levers.index("default")
        locks = [i for i, lv in enumerate(levers) if lv != "default"]
        best, _, loss, saved = _best_lock(est, default, locks, loss_bound)
        saving = _cross_fitted_saving(g, levers, metrics, default, locks, loss_bound)
        draws = _best_locks(boot, default, locks, loss_bound)
        row = {**dict(zip(GROUP, key, strict=True)),
               "best_clock_mhz": Lever.parse(levers[best]).value if best is not None else None,
               "energy_saving": saving, "throughput_loss": loss, "power_saved_w": saved,
               "default_j_per_token": est[default, 0], "default_tokens_per_s": est[default, 1],
               "default_power_w": est[default, 2]}
        out.append((row, draws))
    return out


Resamples = list[tuple[dict[str, Any], np.ndarray]]


def clock_policy(trials: pd.DataFrame, loss_bound: float, n_resamples: int, seed: int = 0,
                 resamples: Resamples | None = None) -> pd.DataFrame:
    """Per point: the lowest-energy SM lock whose decode throughput loss vs default stays under the bound.

    With the 95 % intervals of its energy saving and the power it saves (selection inside the bootstrap).
    ``resamples``: :func:`policy_resamples` of the same arguments, when the caller has them already.
    """
    rows = []
    found = policy_resamples(trials, loss_bound, n_resamples, seed) if resamples is None else resamples
    for row, draws in found:
        lo, hi = np.percentile(draws, [2.5, 97.5], axis=0)
        rows.append({**row, "energy_saving_ci_low": lo[0], "energy_saving_ci_high": hi[0],
                     "power_saved_w_ci_low": lo[1], "power_saved_w_ci_high": hi[1]})
    return pd.DataFrame(rows, columns=POLICY_COLUMNS)


FLEET_COLUMNS = ["engine", "scope", "gpus", "decode_share", "points", "mean_saved_w_per_gpu", "fleet_saved_mw",
                 "fleet_saved_mw_ci_low", "fleet_saved_mw_ci_high"]


def fleet_projection(trials: pd.DataFrame, loss_bound: float, gpus: int, decode_share: float, n_resamples: int,
                     seed: int = 0, resamples: Resamples | None = None) -> pd.DataFrame:
    """Power saved across a fleet running the clock policy, the load spread evenly over the measured points.

    Per engine, over all points and per architecture, with the 95 % interval of the mean power saved.
    ``resamples``: :func:`policy_resamples` of the same arguments, when the caller has them already.
    """
    rows = []
    found = policy_resamples(trials, loss_bound, n_resamples, seed) if resamples is None else resamples
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
