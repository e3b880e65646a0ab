"""The claims of SweetSpot (S1-S2) and CLEAR (K1-K3), and this project's own P1, as predicates over tables.

Each returns a :class:`~phase_energy.analysis.verdict.Verdict`; :mod:`phase_energy.analysis.claims` runs them
with the paper's. Thresholds are the named constants below.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from phase_energy.analysis.tables import POINT_KEYS as GROUP_KEYS
from phase_energy.analysis.verdict import NOT_REPRODUCED, NOT_TESTABLE, REPRODUCED, Verdict, ci, conclude, pct
from phase_energy.grid import Lever

S1_INPUT_SPAN = 8.0  # longest / shortest input length a sweet-spot check needs
S1_OUTPUT_SPAN = 16.0
S2_MAPE_PCT = 2.0
K1_COVERAGE = 0.90
K2_CV = 0.095
P1_SAVING = 0.02  # share of request energy a phase lever saves against the best static lever
P1_MOST = 0.5  # share of (point, output length) cells where it must


def _span(lo: float, hi: float) -> str:
    """``0.77-8.17``, or one number when the two agree to the digits shown."""
    a, b = f"{lo:.2f}", f"{hi:.2f}"
    return a if a == b else f"{a}-{b}"


# each SweetSpot check and what its failure says
S1_CHECKS = {"peak_input": "the peak is at the longest input", "peak_output": "the peak is at an end of the outputs",
             "long_inputs": "long inputs do not drop", "short_outputs": "very short outputs do not drop"}


def s1(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    """S1: tokens per joule peaks at medium outputs and shorter inputs."""
    drop = cfg["analysis"]["sweetspot_drop_share"]
    crit = (f"Criterion: tokens per joule peaks at a shorter-than-longest input and a medium output, and long "
            f"inputs and very short outputs fall more than {drop:.0%} below the peak")
    cells = t["sweetspot_cells"]
    if cells.empty:
        return conclude(NOT_TESTABLE, crit, "no input x output cells (needs several contexts and output lengths)")
    parts, fails, n = [], [], 0
    for (arch, batch), g in cells.groupby(["arch", "batch"]):
        ins, outs = sorted(g["input"].unique()), sorted(g["output"].unique())
        if len(ins) < 3 or len(outs) < 3 or ins[-1] / ins[0] < S1_INPUT_SPAN or outs[-1] / outs[0] < S1_OUTPUT_SPAN:
            continue
        n += 1
        peak = g.loc[g["tokens_per_j"].idxmax()]
        at_long_in = g[(g["input"] == ins[-1]) & (g["output"] == peak["output"])]["tokens_per_j"].max()
        at_short_out = g[(g["input"] == peak["input"]) & (g["output"] == outs[0])]["tokens_per_j"].max()
        checks = {"peak_input": peak["input"] < ins[-1], "peak_output": outs[0] < peak["output"] < outs[-1],
                  "long_inputs": at_long_in < (1 - drop) * peak["tokens_per_j"],
                  "short_outputs": at_short_out < (1 - drop) * peak["tokens_per_j"]}
        failed = [S1_CHECKS[k] for k, v in checks.items() if not v]
        fails += failed
        parts.append(f"{arch} batch {batch} peaks at {peak['tokens_per_j']:.2f} tokens/J with input {peak['input']} "
                     f"and output {peak['output']}" + (f", but {' and '.join(failed)}" if failed else ""))
    if n == 0:
        return conclude(NOT_TESTABLE, crit, f"needs 3 or more inputs and outputs spanning {S1_INPUT_SPAN:.0f}x and "
                                            f"{S1_OUTPUT_SPAN:.0f}x per architecture")
    ev = f"{crit}. " + "; ".join(parts)
    if not fails:
        return conclude(REPRODUCED, ev, f"a medium-output, shorter-input peak at all {n} architecture-batch pairs")
    common = max(set(fails), key=fails.count)
    return conclude(NOT_REPRODUCED, ev, f"{common} at {fails.count(common)} of {n} architecture-batch pairs")


def s2(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    """S2: the analytical model's error on held-out input lengths."""
    crit = (f"Criterion: the model's error on held-out input lengths (whole jobs left out of the fit) is under "
            f"{S2_MAPE_PCT:.0f} % at every architecture and batch")
    f = t["sweetspot_fit"]
    if f.empty or f["mape_heldout_pct"].isna().all():
        return conclude(NOT_TESTABLE, crit, "no fit with held-out input lengths (needs 3 or more input lengths)")
    ev = f"{crit}. " + "; ".join(
        f"{r.arch} batch {r.batch}: held-out MAPE {r.mape_heldout_pct:.2f} % on {r.held_out} of {r.cells} cells, "
        f"{r.mape_fit_pct:.2f} % on the fitted ones" for r in f.itertuples())
    m = f["mape_heldout_pct"]
    over = int((m >= S2_MAPE_PCT).sum())
    return conclude(NOT_REPRODUCED if over else REPRODUCED, ev,
                    f"held-out MAPE {_span(m.min(), m.max())} %; {over} of {len(f)} fits at or above "
                    f"{S2_MAPE_PCT:.0f} %")


def _clear_label(r: Any) -> str:
    return f"{r.arch} batch {r.batch} {r.phase}"


NO_CLEAR = "no CLEAR measurements (config clear.architectures is empty)"


def k1(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    """K1: the components add up to the whole model."""
    crit = (f"Criterion: the components add up to more than {K1_COVERAGE:.0%} of the whole model at every "
            "architecture, batch and phase")
    cov = t["clear_coverage"]
    if cov.empty:
        return conclude(NOT_TESTABLE, crit, NO_CLEAR)
    ev = f"{crit}. Coverage: " + "; ".join(f"{_clear_label(r)} {r.coverage:.0%}" for r in cov.itertuples())
    over = cov[cov["coverage"] > 1.10]
    if len(over):
        ev += (f". {len(over)} of {len(cov)} are above 110 %: components cost more in isolation than inside the "
               "model there")
    under = int((cov["coverage"] <= K1_COVERAGE).sum())
    return conclude(NOT_REPRODUCED if under else REPRODUCED, ev,
                    f"coverage {cov['coverage'].min():.0%}-{cov['coverage'].max():.0%}; {under} of {len(cov)} at "
                    f"or below {K1_COVERAGE:.0%}")


def k2(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    """K2: the components' spread between jobs."""
    crit = (f"Criterion: every component's energy varies between jobs by under {K2_CV:.1%} (coefficient of "
            "variation)")
    comp = t["clear_components"]
    if comp.empty:
        return conclude(NOT_TESTABLE, crit, NO_CLEAR)
    trials = comp.dropna(subset=["cv"])
    if "job_cv" not in comp or comp["job_cv"].isna().all():
        within = (f"; the spread between back-to-back trials of one job (median {trials['cv'].median():.2%}, "
                  f"largest {trials['cv'].max():.2%}) is not what a rerun shows" if len(trials) else "")
        return conclude(NOT_TESTABLE, crit + within, "needs two or more CLEAR jobs per point for the spread between "
                                                     "jobs")
    c = comp.dropna(subset=["job_cv"])
    worst = c.loc[c["job_cv"].idxmax()]
    above = int((c["job_cv"] >= K2_CV).sum())
    ev = (f"{crit}. Largest {worst['job_cv']:.2%} ({worst['component']}, {_clear_label(worst)}); {above} of "
          f"{len(c)} components at or above it")
    return conclude(NOT_REPRODUCED if above else REPRODUCED, ev,
                    f"the largest spread between jobs is {worst['job_cv']:.2%}; {above} of {len(c)} at or above "
                    f"{K2_CV:.1%}")


def k3(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    """K3: attention's energy per FLOP against the other matmul components."""
    crit = ("Criterion: attention spends more energy per FLOP than the MLP and mixer layers at every "
            "architecture, batch and phase (norms, embedding and head left out: memory-bound or one-token GEMVs)")
    comp = t["clear_components"]
    if comp.empty:
        return conclude(NOT_TESTABLE, crit, NO_CLEAR)
    parts, n, dearer = [], 0, 0
    others = ["mlp", "gdn", "mamba2"]  # the head in prefill is one token's GEMV over the vocabulary
    for key, g in comp.groupby(["arch", "batch", "phase"], sort=False):
        jpf = g.set_index("component")["j_per_flop"]
        if "attention" not in jpf or not np.isfinite(jpf["attention"]):
            continue
        rest = jpf[[c for c in others if c in jpf.index]].dropna()
        if rest.empty:
            continue
        n += 1
        ratio = jpf["attention"] / rest.max()
        dearer += bool(ratio > 1)
        parts.append(f"{key[0]} batch {key[1]} {key[2]}: attention {jpf['attention'] * 1e12:.2f} pJ/FLOP, "
                     f"{ratio:.2f}x the highest of {', '.join(rest.index)}")
    if n == 0:
        return conclude(NOT_TESTABLE, crit, "no architecture with attention and another matmul component")
    return conclude(REPRODUCED if dearer == n else NOT_REPRODUCED, f"{crit}. " + "; ".join(parts),
                    f"attention costs more per FLOP than the rest at {dearer} of {n} architecture-batch-phase cases")


def p1(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    """P1, the project's finding on the phase policy (analysis/phase_policy.py; docs/phase-policy.md)."""
    bound = cfg["analysis"]["phase_latency_bound"]
    crit = (f"Criterion (this project's, not a paper's): with prefill and decode apart (mix share 0), at more than "
            f"{P1_MOST:.0%} of the points and output lengths where a lock or cap was measured next to the default, "
            f"the lowest-energy lever pair within {bound:.0%} of the default's latency is prefill at the default "
            f"with decode locked or capped, and it saves at least {P1_SAVING:.0%} of request energy against the "
            "best static lever within that bound, with the saving's 95 % interval above zero (jobs and trials "
            "resampled, widened by the run-to-run spread)")
    pairs, policy = t["phase_pairs"], t["phase_policy"]
    keys = [*GROUP_KEYS, "output_length"]
    formed = pairs[(pairs["mix_share"] == 0) & (pairs["prefill_lever"] == "default")
                   & _lock_or_cap_of(pairs["decode_lever"])] if len(pairs) else pairs
    if formed.empty:
        return conclude(NOT_TESTABLE, crit, "no lock or cap measured next to the default: no phase lever to form")
    cells = policy[policy["mix_share"] == 0].merge(formed[keys].drop_duplicates(), on=keys)
    if cells.empty:
        return conclude(NOT_TESTABLE, crit, "no phase-policy rows at mix share 0")
    phase = (cells["prefill_lever"] == "default") & _lock_or_cap_of(cells["decode_lever"])
    saving = cells["saving_vs_static"].astype(float).where(phase, 0.0)  # a static best pair saves nothing
    # a saving resolved from the spread of jobs and trials: its interval wholly above zero (no interval: not
    # counted); the interval is that of the pair chosen on the estimates (docs/phase-policy.md)
    low = (cells["saving_vs_static_lo"] if "saving_vs_static_lo" in cells else pd.Series(np.nan, cells.index))
    resolved = low.astype(float) > 0
    large = saving >= P1_SAVING
    hits = int((large & resolved).sum())
    ev = (f"{crit}. A phase lever is the best pair at {int(phase.sum())} of {len(cells)} cells and saves at least "
          f"{P1_SAVING:.0%} at {int(large.sum())}, {hits} of them with the interval above zero; savings against "
          f"the best static lever: median {pct(saving.median())}")
    if phase.any():
        top = cells.loc[saving[phase].idxmax()]
        levers = cells[phase]["decode_lever"].value_counts()
        interval = (" " + ci(float(top["saving_vs_static_lo"]), float(top["saving_vs_static_hi"]), pct)
                    if "saving_vs_static_hi" in cells and np.isfinite(float(top["saving_vs_static_lo"])) else "")
        ev += (f", largest {pct(saving.max())}{interval} ({top['arch']} batch {top['batch']} context {top['context']}, "
               f"{top['output_length']} output tokens, decode {top['decode_lever']}); decode levers chosen: "
               + ", ".join(f"{k} at {v} cells" for k, v in levers.items()))
    else:
        static = cells["best_static_lever"].value_counts()
        ev += "; the best pair is a static lever everywhere (" + ", ".join(
            f"{k} at {v} cells" for k, v in static.items()) + ")"
    ev += f"; switch cost: {cells['switch_basis'].iloc[0]}"
    ok = hits > P1_MOST * len(cells)
    return conclude(REPRODUCED if ok else NOT_REPRODUCED, ev,
                    f"a phase lever saves {P1_SAVING:.0%} or more, interval above 0, at {hits} of {len(cells)} "
                    f"cells (median {pct(saving.median())})")


def _lock_or_cap(lever: str) -> bool:
    return Lever.parse(lever).kind in ("smclock", "powercap")


def _lock_or_cap_of(levers: pd.Series) -> pd.Series:
    """Which of ``levers`` lock the clock or cap the power (each distinct lever parsed once)."""
    return levers.isin([lv for lv in levers.unique() if _lock_or_cap(lv)])
