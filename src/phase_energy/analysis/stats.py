"""Estimates and intervals that contain what a rerun shows: jobs resampled, then each job's trials.

Every metric of a point is the mean over its jobs (repetitions) of each job's mean over its trials, and
its interval comes from resampling jobs, then trials (docs/protocol.md, "From traces to estimates").
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def job_groups(d: pd.DataFrame, columns: list[str]) -> list[np.ndarray]:
    """The trials of each job of one point: one (trials x columns) array per job."""
    return split_jobs(d["job"].to_numpy(), d[columns].to_numpy(dtype=float))


def split_jobs(jobs: np.ndarray, values: np.ndarray) -> list[np.ndarray]:
    """:func:`job_groups` on arrays: the rows of ``values`` of each job (jobs in sorted order, rows in order)."""
    if len(jobs) and (jobs == jobs[0]).all():  # one job (most points): no grouping needed
        return [values]
    return [values[jobs == j] for j in sorted(set(jobs))]


def groups(df: pd.DataFrame, keys: list[str], dropna: bool = True, sort: bool = True
           ) -> list[tuple[tuple, np.ndarray]]:
    """``(key, row positions)`` of each group of ``df`` by ``keys``, in the order ``df.groupby(keys)`` gives.

    Keys sorted (``sort``; else in the order they first appear), rows in their order; rows with a missing key
    value left out (``dropna``) or a group. Iterating over
    positions into arrays taken from ``df`` once is what a loop over thousands of points needs: slicing a
    frame per group costs more than the work done on it.
    """
    if df.empty:
        return []
    codes = df.groupby(keys, dropna=dropna, sort=sort).ngroup().to_numpy(dtype=float, na_value=-1)
    kept = np.flatnonzero(codes >= 0)
    order = kept[np.argsort(codes[kept], kind="stable")]
    parts = np.split(order, np.flatnonzero(np.diff(codes[order])) + 1)
    cols = [df[k].to_numpy() for k in keys]
    return [(tuple(c[p[0]] for c in cols), p) for p in parts]


def hierarchical_means(groups: list[np.ndarray], n: int, rng: np.random.Generator, run_sd: float = 0.0
                       ) -> np.ndarray:
    """Resamples (n x columns) of the mean over jobs of each job's mean over trials.

    Two levels, as reruns vary: jobs are drawn with replacement, then each drawn job's trials. A point with
    one job has no spread between jobs to draw from: each resample is then multiplied by (1 + e), e normal
    with standard deviation ``run_sd``, the run-to-run spread measured on repeated points (0: trials only).
    """
    n_jobs = len(groups)
    cols = groups[0].shape[1]
    pick = rng.integers(0, n_jobs, size=(n, n_jobs))  # drawn with one job too: the later draws stay the same
    if n_jobs == 1:  # most points: every slot holds the one job; a mean over one slot is that slot, exactly
        v = groups[0]
        out = v[rng.integers(0, len(v), size=(n, 1, len(v)))].mean(axis=2)[:, 0]
        return out * (1.0 + rng.normal(0.0, run_sd, size=(n, 1))) if run_sd > 0 else out
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
