"""Request energy relative to GQA over output length and context, and where the curves cross."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from phase_energy.model.presets import get_preset


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
    """First x where ``diff`` changes sign, linearly interpolated (in log x when asked); None if none.

    A NaN next to a value counts as a change of sign: the crossing there is NaN (not None).
    """
    at, found = first_crossings(x, np.asarray(diff, dtype=float)[None], log_x)
    return float(at[0]) if found[0] else None


def first_crossings(x: np.ndarray, diffs: np.ndarray, log_x: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """:func:`first_crossing` of each row of ``diffs`` at once: (the crossings, whether each row has one).

    A row without a change of sign has NaN and False; a row whose first change involves a NaN has NaN and True.
    """
    x = np.asarray(x, dtype=float)
    diffs = np.asarray(diffs, dtype=float)
    if diffs.shape[1] < 2:  # one point: nothing can change
        return np.full(len(diffs), np.nan), np.zeros(len(diffs), dtype=bool)
    s = np.sign(diffs)
    change = (s[:, :-1] != s[:, 1:]) & (s[:, :-1] != 0)  # NaN differs from everything: a change
    has = change.any(axis=1)
    i = np.argmax(change, axis=1)  # the first change of each row (0 where none: masked below)
    rows = np.arange(len(diffs))
    xs = np.log(x) if log_x else x
    xa, xb = xs[i], xs[i + 1]
    da, db = diffs[rows, i], diffs[rows, i + 1]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # rows without a change: values dropped
        xc = xa + (xb - xa) * da / (da - db)
        return np.where(has, np.exp(xc) if log_x else xc, np.nan), has


def crossing_with_ci(x: np.ndarray, diffs: np.ndarray) -> dict[str, Any]:
    """Crossover of the median difference curve with its percentile CI over resamples (rows of ``diffs``).

    Also the share of resamples without a sign change and on which side the architecture ends up cheaper.
    A resample whose crossing is NaN (a NaN in its curve) has one: the interval is then NaN.
    """
    boots, has = first_crossings(x, diffs, log_x=True)
    found = boots[has]
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
        low, high = np.percentile(pre_bs + dec_bs, [2.5, 97.5], axis=0)  # each output length's interval
        for k, n in enumerate(grid):
            rows.append({"arch": arch, "paradigm": get_preset(arch).paradigm, "batch": batch, "context": ctx,
                         "output_length": int(n), "prefill_j": p_est, "decode_j": float(d_est[k]),
                         "total_j": p_est + float(d_est[k]), "total_ci_low": float(low[k]),
                         "total_ci_high": float(high[k]), "jobs": len(jobs),
                         "in_output_grid": int(n) in set(cfg["output_lengths"])})
    request = pd.DataFrame(rows)
    ref = _reference_arch(trials, cfg)
    xrows: list[dict[str, Any]] = []
    if request.empty or ref is None:  # no GQA model of this engine in the grid: nothing to compare against
        if len(request):
            request = request.assign(ratio_vs_gqa=np.nan, ratio_ci_low=np.nan, ratio_ci_high=np.nan)
        return request, pd.DataFrame(columns=CROSSOVER_COLUMNS)
    ref_tot = request[request["arch"] == ref].set_index(["batch", "context", "output_length"])["total_j"]
    at = pd.MultiIndex.from_frame(request[["batch", "context", "output_length"]])
    request["ratio_vs_gqa"] = request["total_j"].to_numpy() / ref_tot.reindex(at).to_numpy()
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
