"""The phase policy: one lever for prefill and another for decode, from single-lever traces and the switch cost.

For every point, every (prefill lever, decode lever) pair of the static levers measured there gets a request
energy and latency at each output length and each mix share ``m`` (with chunked prefill, the share of engine
steps that carry prefill tokens; 0: prefill and decode apart). Per batch of ``B`` requests, context ``C``,
``n`` output tokens, prefill lever ``P``, decode lever ``D``:

- energy per request ``C jp(P) + n (m jd(P) + (1 - m) jd(D)) + S Esw / B``;
- latency ``B C / tp(P) + n B (m / td(P) + (1 - m) / td(D)) + S Tsw``;

with ``jp``, ``jd`` the prefill and decode J/token and ``tp``, ``td`` their tokens/s at that lever, and ``S``
switches per batch: none when ``P == D`` or ``m == 1`` (every step carries prefill: the decode lever never
holds), else ``2 (1 + n m (1 - m))`` (the two phase boundaries, and a change between consecutive steps of
different kinds, steps mixed at random). ``Esw``, ``Tsw`` are the energy and time a switch adds beyond what
its tokens cost in steady state, from the switch windows of phase-lever jobs (docs/phase-policy.md): those of
the point, else the mean over the engine's points that have them, else none (0, said in ``switch_basis``);
each mean is taken as at least 0.

The best pair is the lowest-energy one whose latency is within ``latency_bound`` of the default's; it is
compared with the best static lever under the same bound and with the default. Each saving has a 95 %
interval (:func:`saving_intervals`): the pairs chosen on the estimates, their energies computed again on
resamples of every lever's rates (jobs, then trials, widened by the run-to-run spread where a lever was
measured by one job, each lever on its own: conservative for a ratio of levers measured on one card, whose
common shift cancels).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from phase_energy.analysis.energy import GROUP
from phase_energy.analysis.stats import groups, hierarchical_means, point_estimate, split_jobs
from phase_energy.grid import PHASES, Lever

PAIR_COLUMNS = [*GROUP, "output_length", "mix_share", "prefill_lever", "decode_lever", "switches", "request_j",
                "request_s", "latency_change", "within_bound"]
POLICY_COLUMNS = [*GROUP, "output_length", "mix_share", "prefill_lever", "decode_lever", "request_j", "request_s",
                  "latency_change", "default_j", "default_s", "best_static_lever", "best_static_j",
                  "saving_vs_default", "saving_vs_default_lo", "saving_vs_default_hi", "saving_vs_static",
                  "saving_vs_static_lo", "saving_vs_static_hi", "pays", "switch_j", "switch_s", "switch_basis"]
STATIC = ("default", "powercap", "smclock")


def _static_rates(trials: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The static levers' prefill and decode trials with finite rates, and their (J/token, tokens/s)."""
    d = trials[trials["lever_kind"].isin(STATIC) & trials["phase"].isin(PHASES)]
    values = d[["j_per_token", "tokens_per_s"]].to_numpy(dtype=float)
    finite = np.isfinite(values).all(axis=1)
    return d[finite], values[finite]


def lever_rates(trials: pd.DataFrame) -> pd.DataFrame:
    """Per point, static lever and phase: J/token and tokens/s (the mean over jobs of each job's mean)."""
    d, values = _static_rates(trials)
    rows = []
    jobs = d["job"].to_numpy()
    for key, pos in groups(d, [*GROUP, "lever", "phase"]):
        j, tps = point_estimate(split_jobs(jobs[pos], values[pos]))
        rows.append({**dict(zip([*GROUP, "lever", "phase"], key, strict=True)), "j_per_token": j,
                     "tokens_per_s": tps})
    return pd.DataFrame(rows, columns=[*GROUP, "lever", "phase", "j_per_token", "tokens_per_s"])


def switch_costs(windows: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Per phase-lever job's switch window: the energy (J) and time (s) it adds beyond its tokens' steady cost.

    The steady cost is the same job's trials of the phase switched to. A switch lasts tens of ms, under the
    energy counter's ~100 ms tick: its energy is the trapezoid of instant power when fewer than two ticks fall
    inside (the counter's difference otherwise).
    """
    sw = windows[windows["phase"].astype(str).str.startswith("switch_")]
    if sw.empty:
        return pd.DataFrame(columns=[*GROUP, "lever", "job", "to_phase", "extra_j", "extra_s"])
    steady = trials.groupby(["job", "phase"])[["energy_j", "tokens", "duration_s"]].sum()
    rows = []
    for r in sw.itertuples(index=False):
        to = str(r.phase).removeprefix("switch_")
        if (r.job, to) not in steady.index:
            continue
        s = steady.loc[(r.job, to)]
        energy = r.energy_trapz_j if r.counter_ticks < 2 and np.isfinite(r.energy_trapz_j) else r.energy_j
        rows.append({**{k: getattr(r, k) for k in GROUP}, "lever": r.lever, "job": r.job, "to_phase": to,
                     "extra_j": energy - r.tokens * s["energy_j"] / s["tokens"],
                     "extra_s": r.duration_s - r.tokens * s["duration_s"] / s["tokens"]})
    return pd.DataFrame(rows)


def _switch_cost(costs: pd.DataFrame, key: tuple[Any, ...]) -> tuple[float, float, str]:
    """(J, s, basis) of one switch at the point ``key`` (GROUP values): measured there, or the engine's mean."""
    if costs.empty:
        return 0.0, 0.0, "none measured (0 assumed)"
    at = costs[(costs[GROUP].apply(tuple, axis=1) == key)]
    if len(at):
        return (*_clipped(at), f"measured here ({len(at)} switches)")
    mine = costs[costs["engine"] == key[0]]
    if mine.empty:
        return 0.0, 0.0, "none measured (0 assumed)"
    points = mine[GROUP].drop_duplicates().shape[0]
    return (*_clipped(mine), f"mean of {len(mine)} switches at {points} other points")


def _clipped(costs: pd.DataFrame) -> tuple[float, float]:
    """Mean extra energy and time of the switches, each at least 0: a switch is never counted as a gain.

    The work run while the old setting still holds can be cheaper (a prefill under a decode lock), but a
    policy that relied on it would be another policy (docs/phase-policy.md).
    """
    return max(float(costs["extra_j"].mean()), 0.0), max(float(costs["extra_s"].mean()), 0.0)


def lever_resamples(trials: pd.DataFrame, n: int, run_sd: float, seed: int
                    ) -> dict[tuple[Any, ...], np.ndarray]:
    """Per point, static lever and phase (:func:`lever_rates`' keys): ``n`` resamples of (J/token, tokens/s).

    Jobs, then each job's trials (:func:`~phase_energy.analysis.stats.hierarchical_means`); a lever measured by
    one job is widened by ``run_sd``. Trials without finite rates are left out, as the estimates leave them.
    """
    d, values = _static_rates(trials)
    rng = np.random.default_rng(seed)
    jobs = d["job"].to_numpy()
    return {key: hierarchical_means(split_jobs(jobs[pos], values[pos]), n, rng, run_sd)
            for key, pos in groups(d, [*GROUP, "lever", "phase"])}


def saving_intervals(policy: pd.DataFrame, boot: Mapping[tuple[Any, ...], np.ndarray], costs: pd.DataFrame,
                     level: float = 0.95) -> pd.DataFrame:
    """``level`` intervals of each policy row's savings against the default and the best static lever.

    The row's pairs (best, best static, default) stay as chosen on the estimates; their request energies are
    computed again on each resample of the levers' rates (:func:`lever_resamples`), the switch cost as
    measured. Columns ``saving_vs_default_lo/hi``, ``saving_vs_static_lo/hi``, in the policy's row order;
    NaN where a lever has no resamples.
    """
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    cols = ["saving_vs_default_lo", "saving_vs_default_hi", "saving_vs_static_lo", "saving_vs_static_hi"]
    out = np.full((len(policy), 4), np.nan)
    keys = policy[GROUP].to_numpy(dtype=object)
    meta = policy[["output_length", "mix_share", "prefill_lever", "decode_lever", "best_static_lever"]].to_numpy(
        dtype=object)
    sw: dict[tuple[Any, ...], float] = {}
    savings: list[tuple[int, int, np.ndarray]] = []  # (row, first column, the saving on each resample)
    for i, (key, (n, m, p, d, s)) in enumerate(zip(map(tuple, keys), meta, strict=True)):
        if key not in sw:
            sw[key] = _switch_cost(costs, key)[0]
        best, default, static = (_resampled_energy(boot, key, pre, dec, int(n), float(m), sw[key])
                                 for pre, dec in ((p, d), ("default", "default"), (s, s)))
        if best is None:
            continue
        savings += [(i, col, 1 - best / other) for col, other in ((0, default), (2, static)) if other is not None]
    # the savings without NaN in one percentile call (as each alone: the same values), the others one by one
    whole = [(i, col, v) for i, col, v in savings if not np.isnan(v).any()]
    if whole:
        bounds = np.percentile(np.stack([v for _, _, v in whole]), q, axis=1).T
        for (i, col, _), b in zip(whole, bounds, strict=True):
            out[i, col:col + 2] = b
    for i, col, v in savings:
        if np.isnan(v).any():
            out[i, col:col + 2] = np.nanpercentile(v, q)
    return pd.DataFrame(out, columns=cols, index=policy.index)


def _resampled_energy(boot: Mapping[tuple[Any, ...], np.ndarray], key: tuple[Any, ...], pre: str, dec: str, n: int,
                      m: float, e_sw: float) -> np.ndarray | None:
    """A pair's request energy on each resample of its levers' rates (None when a lever has no resamples)."""
    parts = [boot.get((*key, lv, ph)) for lv, ph in ((pre, "prefill"), (pre, "decode"), (dec, "decode"))]
    if any(x is None for x in parts):
        return None
    (jp, tp), (jdp, tdp), (jdd, tdd) = (x.T for x in parts)  # type: ignore[union-attr]
    b, c = float(key[3]), float(key[4])
    energy, _ = _energy_latency(jp, tp, jdp, tdp, jdd, tdd, switches_per_batch(n, m, pre == dec), n, m, b, c, e_sw,
                                0.0)
    return energy


def switches_per_batch(output_length: int, mix: float, same: bool) -> float:
    """Setting changes per batch of requests (see the module docstring)."""
    if same or mix >= 1:
        return 0.0
    return 2.0 * (1.0 + output_length * mix * (1.0 - mix))


def _request(r: pd.DataFrame, p: str, d: str, n: int, m: float, b: float, c: float, e_sw: float, t_sw: float
             ) -> tuple[float, float, float]:
    """(switches per batch, J per request, s per request) of prefill lever ``p`` and decode lever ``d``.

    ``r``: J/token and tokens/s by (lever, phase); ``n`` outputs, mix share ``m``, batch ``b``, context ``c``.
    """
    jp, tp = r.loc[(p, "prefill")]
    jdp, tdp = r.loc[(p, "decode")]
    jdd, tdd = r.loc[(d, "decode")]
    s = switches_per_batch(n, m, p == d)
    return s, *_energy_latency(jp, tp, jdp, tdp, jdd, tdd, s, n, m, b, c, e_sw, t_sw)


def _energy_latency(jp: Any, tp: Any, jdp: Any, tdp: Any, jdd: Any, tdd: Any, s: Any, n: int, m: float, b: float,
                    c: float, e_sw: float, t_sw: float) -> tuple[Any, Any]:
    """J and s per request of a lever pair; numbers, or arrays that broadcast over all pairs of a point.

    The prefill lever's rates (``jp``, ``tp``, and its decode ``jdp``, ``tdp``), the decode lever's (``jdd``,
    ``tdd``), ``s`` switches per batch.
    """
    energy = c * jp + n * (m * jdp + (1 - m) * jdd) + s * e_sw / b
    latency = b * c / tp + n * b * (m / tdp + (1 - m) / tdd) + s * t_sw
    return energy, latency


def pair_table(rates: pd.DataFrame, costs: pd.DataFrame, outputs: Iterable[int], mixes: Iterable[float],
               latency_bound: float) -> pd.DataFrame:
    """Every (prefill lever, decode lever) pair at every point, output length and mix share.

    Rows come point by point, then output length, mix share, prefill lever and decode lever, each pair's
    energy and latency as :func:`_request` gives them (the same arithmetic, for all pairs of a point at once).
    """
    keys, parts = [], []  # each point's key and the columns of its rows
    names: dict[str, int] = {}  # every lever's number: the lever columns are built as numbers, named at the end
    outputs, mixes = list(outputs), list(mixes)
    lever_col, phase_col = rates["lever"].to_numpy(), rates["phase"].to_numpy()
    values = rates[["j_per_token", "tokens_per_s"]].to_numpy(dtype=float)
    kinds = {lv: Lever.parse(lv).kind for lv in set(lever_col)}
    for key, pos in groups(rates, GROUP):  # points in rates.groupby(GROUP)'s order
        at = {(lv, ph): i for lv, ph, i in zip(lever_col[pos], phase_col[pos], pos, strict=True)}  # one row each
        levers = sorted({lv for lv, _ in at if (lv, "prefill") in at and (lv, "decode") in at},
                        key=lambda lv: (kinds[lv] != "default", lv))
        if "default" not in levers:
            continue
        e_sw, t_sw, _ = _switch_cost(costs, key)
        b, c = float(key[3]), float(key[4])
        pre = values[[at[(lv, "prefill")] for lv in levers]]
        dec = values[[at[(lv, "decode")] for lv in levers]]
        jp, tp, jd, td = pre[:, 0], pre[:, 1], dec[:, 0], dec[:, 1]
        k = len(levers)
        same = np.eye(k, dtype=bool)  # [prefill lever, decode lever]
        cols: dict[str, list[Any]] = {c: [] for c in PAIR_COLUMNS[len(GROUP):] if not c.endswith("_lever")}
        for n in outputs:
            for m in mixes:
                s = np.where(same, 0.0, switches_per_batch(n, m, False))
                energy, latency = _energy_latency(jp[:, None], tp[:, None], jd[:, None], td[:, None], jd[None, :],
                                                  td[None, :], s, n, m, b, c, e_sw, t_sw)
                change = latency / latency[0, 0] - 1  # levers[0] is the default
                for col, v in (("output_length", np.full(k * k, n)), ("mix_share", np.full(k * k, m)),
                               ("switches", s.ravel()), ("request_j", energy.ravel()),
                               ("request_s", latency.ravel()), ("latency_change", change.ravel()),
                               ("within_bound", (change <= latency_bound + 1e-12).ravel())):
                    cols[col].append(v)
        blocks = len(outputs) * len(mixes)  # the point's (output length, mix share) blocks of k x k pairs
        keys.append(key)
        ids = np.array([names.setdefault(lv, len(names)) for lv in levers])
        parts.append({"prefill_lever": np.tile(np.repeat(ids, k), blocks), "decode_lever": np.tile(ids, k * blocks),
                      **{col: np.concatenate(v) for col, v in cols.items()}})
    if not parts:
        return pd.DataFrame(columns=PAIR_COLUMNS)
    rows = [len(p["switches"]) for p in parts]
    points = pd.DataFrame(keys, columns=GROUP).take(np.repeat(np.arange(len(keys)), rows))
    lever_names = pd.Series(list(names)).array
    out = {col: np.concatenate([p[col] for p in parts]) for col in PAIR_COLUMNS[len(GROUP):]}
    out.update({col: lever_names.take(out[col]) for col in ("prefill_lever", "decode_lever")})
    return pd.DataFrame({**{col: points[col].array for col in GROUP}, **out})[PAIR_COLUMNS]


def policy_table(pairs: pd.DataFrame, costs: pd.DataFrame) -> pd.DataFrame:
    """Per point, output length and mix share: the best pair within the bound, against static levers.

    The best pair is the first of the lowest energy within the latency bound (pairs in :func:`pair_table`'s
    order); the default pair is always within it (no latency change), and it is static.
    """
    keys = [*GROUP, "output_length", "mix_share"]
    if pairs.empty:
        return pd.DataFrame(columns=POLICY_COLUMNS)
    ok = pairs[pairs["within_bound"]]
    static = ok[ok["prefill_lever"] == ok["decode_lever"]]
    best = pairs.loc[ok.groupby(keys)["request_j"].idxmin()].set_index(keys)
    best_static = pairs.loc[static.groupby(keys)["request_j"].idxmin()].set_index(keys)
    default = pairs[(pairs["prefill_lever"] == "default") & (pairs["decode_lever"] == "default")]
    default = default.drop_duplicates(keys).set_index(keys).loc[best.index]
    best_static = best_static.loc[best.index]
    switch = {key: _switch_cost(costs, key) for key in best.index.droplevel(["output_length", "mix_share"]).unique()}
    sw = [switch[key[:len(GROUP)]] for key in best.index]
    out = pd.DataFrame({
        "prefill_lever": best["prefill_lever"], "decode_lever": best["decode_lever"],
        "request_j": best["request_j"], "request_s": best["request_s"], "latency_change": best["latency_change"],
        "default_j": default["request_j"], "default_s": default["request_s"],
        "best_static_lever": best_static["prefill_lever"], "best_static_j": best_static["request_j"],
        "saving_vs_default": 1 - best["request_j"] / default["request_j"],
        "saving_vs_default_lo": np.nan, "saving_vs_default_hi": np.nan,
        "saving_vs_static": 1 - best["request_j"] / best_static["request_j"],
        "saving_vs_static_lo": np.nan, "saving_vs_static_hi": np.nan,
        "pays": (best["prefill_lever"] != best["decode_lever"]) & (best["request_j"] < best_static["request_j"]),
        "switch_j": [c[0] for c in sw], "switch_s": [c[1] for c in sw], "switch_basis": [c[2] for c in sw]},
        index=best.index)
    return out.reset_index()[POLICY_COLUMNS]


def phase_policy_tables(windows: pd.DataFrame, trials: pd.DataFrame, outputs: Iterable[int],
                        mixes: Iterable[float], latency_bound: float, n_resamples: int = 0, run_sd: float = 0.0,
                        seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The pairs table and the policy table from the phase trials and the windows (switch windows).

    With ``n_resamples`` > 0 the policy's savings get their intervals (:func:`saving_intervals`).
    """
    costs = switch_costs(windows, trials)
    pairs = pair_table(lever_rates(trials), costs, outputs, mixes, latency_bound)
    if not len(pairs):
        return pairs, pd.DataFrame(columns=POLICY_COLUMNS)
    policy = policy_table(pairs, costs)
    if n_resamples > 0:
        ci = saving_intervals(policy, lever_resamples(trials, n_resamples, run_sd, seed), costs)
        policy[ci.columns] = ci
    return pairs, policy
