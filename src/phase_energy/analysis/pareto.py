"""Pareto frontiers over levers (throughput against energy per token) and the caps-vs-locks dominance test."""

from __future__ import annotations

import numpy as np
import pandas as pd

from phase_energy.analysis.energy import GROUP
from phase_energy.analysis.stats import hierarchical_means, point_estimate, split_jobs
from phase_energy.grid import Lever


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
    lev, jobs, values = d["lever"].to_numpy(), d["job"].to_numpy(), d[metrics].to_numpy(dtype=float)
    for lever in sorted(set(lev)):  # the order of d.groupby("lever")
        at = lev == lever
        groups = split_jobs(jobs[at], values[at])
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
