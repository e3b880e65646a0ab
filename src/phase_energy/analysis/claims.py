"""The claims (the paper's C1-C11, SweetSpot's S1-S2, CLEAR's K1-K3; docs/paper.md) as predicates over tables.

Each predicate returns a verdict -- ``reproduced``, ``not reproduced`` or ``not testable`` -- and one
sentence of evidence that states its criterion and the numbers against it (with 95 % intervals, which
include the run-to-run spread). Thresholds are the named constants below. A claim about a lever is ``not
testable`` on traces without that lever; a predicate that fails raises and stops the stage. Nothing here
assumes what the data should say; tests/test_claims.py gives every claim a case for each verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phase_energy.analysis.tables import TableError, read_tables

REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE = "reproduced", "not reproduced", "not testable"
SIMULATED_MARK = "(simulated)"

CLAIMS: dict[str, str] = {
    "C1": "Decode draws only 137-300 W on the 700 W H200, across all four architectures.",
    "C2": "No power cap ever triggers during decode; capping changes neither its power nor its throughput.",
    "C3": "Capping 'appears to work' because of prefill (compute-bound) and firmware throttling, not decode.",
    "C4": "Locking SM clocks at 1980 MHz is silently clamped by firmware to about 1830 MHz.",
    "C5": "Firmware-initiated clock throttling during runs corrupts throughput attributed to the cap.",
    "C6": "SM clock locking Pareto-dominates power capping for decode, for all architectures.",
    "C7": "Clock locking recovers up to 32 % of decode energy at under ~1 % throughput loss.",
    "C8": "Architectures fall into three DVFS behavioural classes.",
    "C9": "MLA, GDN and Mamba2 pay more in prefill but their decode recoups it, eventually halving total "
          "request energy relative to GQA at production batch sizes.",
    "C10": "Crossovers: MLA beats GQA at batch 32 beyond 4K tokens; Mamba2 beats GQA after ~1000 output tokens.",
    "C11": "Across 10,000 GPUs, clock locking would save about 0.5 MW.",
    "S1": "SweetSpot: tokens per joule peaks at short-to-moderate inputs and medium outputs, dropping for long "
          "inputs or very short outputs.",
    "S2": "SweetSpot: an analytical model from compute and memory complexity fits request energy with MAPE under 2 %.",
    "K1": "CLEAR: the components measured in isolation add up to over 90 % of the whole model's energy.",
    "K2": "CLEAR: component energies vary by under 9.5 % across trials.",
    "K3": "CLEAR: attention spends more energy per FLOP than the other components.",
}

Verdict = tuple[str, str]

# ---------------------------------------------------------------------------------------- criteria
# Every threshold a verdict uses, with its unit; the evidence sentence states the one it applies.
C1_RANGE_W = (137.0, 300.0)  # W, the paper's decode power range
C1_TOLERANCE = 0.10  # the range's ends widened by this share
CAP_SHARE_MIN = 0.01  # share of steady decode under the SW power-cap reason that counts as the cap binding
THROUGHPUT_CHANGE_MAX = 0.01  # relative throughput change that counts as "no change"
C4_LOCK = "smclock:1980"
C4_CLAMP_MHZ = 1830.0  # MHz, the clock the paper saw under a 1980 MHz lock
C4_TOLERANCE_MHZ = 60.0
C7_SAVING = 0.32  # the paper's largest decode energy saving
C7_TOLERANCE = 0.08  # absolute, on the saving
C7_QUANTILE = 0.9  # "up to" is judged on this quantile of the points' savings, not on their maximum
C8_CLASSES = 3
C9_RATIO = 0.5  # "halving" request energy relative to GQA
C9_TOLERANCE = 0.05
C9_BATCH_MIN = 32  # "production batch sizes"
C10_MLA_BATCH = 32
C10_MLA_CONTEXT = (3000.0, 6000.0)  # tokens, "beyond 4K"
C10_MAMBA_OUTPUT = (500.0, 2000.0)  # tokens, "after ~1000"
C10_MOST = 0.5  # share of compared points whose crossing interval must lie in the claimed range
C11_MW = 0.5  # MW across 10,000 GPUs
C11_TOLERANCE = 0.5  # relative
S1_INPUT_SPAN = 8.0  # longest / shortest input length a sweet-spot check needs
S1_OUTPUT_SPAN = 16.0
S2_MAPE_PCT = 2.0
K1_COVERAGE = 0.90
K2_CV = 0.095


def _w(x: float) -> str:
    return f"{x:.0f} W"


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _ci(lo: float, hi: float, fmt: Callable[[float], str]) -> str:
    return f"[{fmt(lo)}, {fmt(hi)}]"


def _default_decode(t: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    s = t["phase_energy"]
    if s.empty:
        return s
    return s[(s["phase"] == "decode") & (s["lever"] == "default")]


def c1(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    d = _default_decode(t)
    if d.empty:
        return NOT_TESTABLE, "no decode windows at the default lever"
    lo, hi = C1_RANGE_W[0] * (1 - C1_TOLERANCE), C1_RANGE_W[1] * (1 + C1_TOLERANCE)
    outside = d[(d["power_mean_w_ci_low"] > hi) | (d["power_mean_w_ci_high"] < lo)]
    top = d.loc[d["power_mean_w"].idxmax()]
    ev = (f"Criterion: every decode point's power within {_w(lo)}-{_w(hi)} (the claimed 137-300 W, ends "
          f"widened by {C1_TOLERANCE:.0%}). Measured: {_w(d['power_mean_w'].min())}-{_w(d['power_mean_w'].max())} "
          f"over {len(d)} points; {len(outside)} of them lie outside with their whole 95 % interval, the highest "
          f"{top['arch']} batch {top['batch']} context {top['context']} at {_w(top['power_mean_w'])} "
          f"{_ci(top['power_mean_w_ci_low'], top['power_mean_w_ci_high'], _w)}; median fraction of the "
          f"bandwidth floor {d['floor_fraction'].median():.2f}")
    return (NOT_REPRODUCED if len(outside) else REPRODUCED), ev


def c2(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    s = t["phase_energy"]
    if s.empty:
        return NOT_TESTABLE, "no data"
    d = s[s["phase"] == "decode"]
    default = d[d["lever"] == "default"]
    if default.empty:
        return NOT_TESTABLE, "no decode at the default lever"
    capped = default[default["sw_power_cap_share_steady_ci_low"] > CAP_SHARE_MIN]
    ev = (f"Criterion: the SW power cap binds in decode where it is set in more than {CAP_SHARE_MIN:.0%} of steady "
          f"decode (after the firmware's hold of the cache-filling prefill's cap state) with the 95 % interval "
          f"above that; at the default limit it binds at {len(capped)} of {len(default)} points")
    if len(capped):
        worst = capped.loc[capped["sw_power_cap_share_steady"].idxmax()]
        ev += (f", most at {worst['arch']} batch {worst['batch']} context {worst['context']} "
               f"({_pct(worst['sw_power_cap_share_steady'])} of steady decode)")
    caps = d[d["lever_kind"] == "powercap"]
    if caps.empty:
        return (NOT_REPRODUCED if len(capped) else REPRODUCED), ev + "; no power-cap levers in the data"
    merged = caps.merge(default[["arch", "batch", "context", "tokens_per_s"]], on=["arch", "batch", "context"],
                        suffixes=("", "_default"))
    merged["tp_change"] = merged["tokens_per_s"] / merged["tokens_per_s_default"] - 1
    bound = merged[merged["sw_power_cap_share_steady_ci_low"] > CAP_SHARE_MIN]
    slower = merged[merged["tokens_per_s_ci_high"] < (1 - THROUGHPUT_CHANGE_MAX) * merged["tokens_per_s_default"]]
    ev += (f"; under power caps it binds at {len(bound)} of {len(merged)} points and throughput drops by more than "
           f"{THROUGHPUT_CHANGE_MAX:.0%} (whole interval) at {len(slower)}")
    ok = len(capped) == 0 and len(bound) == 0 and len(slower) == 0
    return (REPRODUCED if ok else NOT_REPRODUCED), ev


def c3(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    s = t["phase_energy"]
    if s.empty:
        return NOT_TESTABLE, "no data"
    pre = s[(s["phase"] == "prefill") & (s["lever"] == "default")]
    dec = s[(s["phase"] == "decode") & (s["lever"] == "default")]
    pre_share = float(pre["sw_power_cap_share"].mean()) if len(pre) else float("nan")
    dec_share = float(dec["sw_power_cap_share_steady"].mean()) if len(dec) else float("nan")
    ev = (f"At the default limit prefill runs under the SW power cap {_pct(pre_share)} of its time and steady "
          f"decode {_pct(dec_share)} (means over points); median power prefill {_w(pre['power_mean_w'].median())}, "
          f"decode {_w(dec['power_mean_w'].median())}")
    caps = s[s["lever_kind"] == "powercap"]
    if caps.empty:
        half = "holds" if pre_share > dec_share else "does not hold"
        return NOT_TESTABLE, (f"Criterion: under power caps prefill loses more throughput than decode; no power-cap "
                              f"levers in the data. {ev}, so the prefill half {half}")
    base = s[s["lever"] == "default"][["arch", "batch", "context", "phase", "tokens_per_s"]]
    m = caps.merge(base, on=["arch", "batch", "context", "phase"], suffixes=("", "_default"))
    m["loss"] = 1 - m["tokens_per_s"] / m["tokens_per_s_default"]
    loss = m.groupby("phase")["loss"].median()
    ev = (f"Criterion: under power caps prefill loses more throughput than decode and runs more under the cap. "
          f"{ev}; median throughput loss under caps: prefill {_pct(loss.get('prefill', np.nan))}, decode "
          f"{_pct(loss.get('decode', np.nan))}")
    ok = loss.get("prefill", 0) > loss.get("decode", 0) and pre_share > dec_share
    return (REPRODUCED if ok else NOT_REPRODUCED), ev


def c4(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    s = t["phase_energy"]
    d = s[(s["lever"] == C4_LOCK) & (s["phase"] == "decode")] if len(s) else s
    if d.empty:
        return NOT_TESTABLE, f"no decode under {C4_LOCK} in the data"
    achieved = d["sm_clock_mhz"]
    ev = (f"Criterion: decode under a 1980 MHz lock runs at {C4_CLAMP_MHZ:.0f} +- {C4_TOLERANCE_MHZ:.0f} MHz "
          f"(median over points). Measured in decode windows only (prefill's power throttling left out): median "
          f"{achieved.median():.0f} MHz, lowest {achieved.min():.0f} MHz over {len(d)} points")
    ok = abs(achieved.median() - C4_CLAMP_MHZ) <= C4_TOLERANCE_MHZ
    return (REPRODUCED if ok else NOT_REPRODUCED), ev


def c5(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    s = t["phase_energy"]
    lev = s[s["lever_kind"].isin(["powercap", "smclock"])] if len(s) else s
    if lev.empty:
        return NOT_TESTABLE, "no lever runs in the data"
    flags = lev["flags"].fillna("")
    firmware = flags.str.contains("thermal_throttle|power_brake")
    unexplained = flags.str.contains("clock_below_lock") & (lev["sw_power_cap_share_steady"] <= CAP_SHARE_MIN)
    events = lev[firmware | unexplained]
    ev = (f"Criterion: clock events the SW power cap does not explain (thermal or power-brake throttling, or a "
          f"locked clock not reached while the cap is set in under {CAP_SHARE_MIN:.0%} of steady decode) at lever "
          f"points; found at {len(events)} of {len(lev)} lever points")
    return (REPRODUCED if len(events) else NOT_REPRODUCED), ev


def c6(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    dom = t["dominance"]
    if dom.empty or not dom["testable"].astype(bool).any():
        return NOT_TESTABLE, "needs both powercap and smclock levers"
    d = dom[dom["testable"].astype(bool)]
    per_arch = d.groupby("arch")["lock_dominates_caps"].apply(lambda x: x.astype(bool).mean())
    ev = ("Criterion: at every point of every architecture one lock beats every cap on throughput and energy. "
          "Share of points where one does: " + "; ".join(f"{a} {v:.0%}" for a, v in per_arch.items()))
    return (REPRODUCED if (per_arch == 1).all() else NOT_REPRODUCED), ev


def c7(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    p = t["clock_policy"]
    if p.empty:
        return NOT_TESTABLE, "needs smclock levers and the default"
    bound = cfg["analysis"]["throughput_loss_bound"]
    sav = p["energy_saving"].astype(float)
    q = float(sav.quantile(C7_QUANTILE))
    top = p.loc[sav.idxmax()]
    ev = (f"Criterion: the {C7_QUANTILE:.0%} quantile of the points' decode energy savings at <= {bound:.0%} "
          f"throughput loss within {_pct(C7_SAVING)} +- {_pct(C7_TOLERANCE)} (a quantile, not the largest saving, "
          f"which the noise of many points inflates). Savings over {len(p)} points: median {_pct(sav.median())}, "
          f"{C7_QUANTILE:.0%} quantile {_pct(q)}, largest {_pct(top['energy_saving'])} "
          f"{_ci(top['energy_saving_ci_low'], top['energy_saving_ci_high'], _pct)} ({top['arch']} batch "
          f"{top['batch']} context {top['context']})")
    ok = abs(q - C7_SAVING) <= C7_TOLERANCE
    return (REPRODUCED if ok else NOT_REPRODUCED), ev


def c8(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    c = t["dvfs_classes"]
    if c.empty or (c["class"] == "indeterminate").all():
        return NOT_TESTABLE, "needs >= 3 smclock levers per point with a determinate class"
    per_arch = c[c["class"] != "indeterminate"].groupby("arch")["class"].agg(lambda x: x.value_counts().index[0])
    n = per_arch.nunique()
    ev = (f"Criterion: the architectures' most frequent determinate classes are {C8_CLASSES} different ones. "
          f"Found {n}: " + "; ".join(f"{a} {k}" for a, k in per_arch.items()))
    return (REPRODUCED if n == C8_CLASSES else NOT_REPRODUCED), ev


def c9(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    s, r = t["phase_energy"], t["request_energy"]
    if s.empty or r.empty or "ratio_vs_gqa" not in r or not (r["paradigm"] == "gqa").any():
        return NOT_TESTABLE, "needs a GQA model and another paradigm at the default lever"
    ref = r[r["paradigm"] == "gqa"]["arch"].iloc[0]
    pre = s[(s["phase"] == "prefill") & (s["lever"] == "default")]
    ref_pre = pre[pre["arch"] == ref].set_index(["batch", "context"])["j_per_token"]
    others = pre[(pre["paradigm"] != "gqa") & pre.apply(lambda x: (x["batch"], x["context"]) in ref_pre.index,
                                                          axis=1)]
    dearer = int((others.apply(lambda x: x["j_per_token"] > ref_pre[(x["batch"], x["context"])], axis=1)).sum()) \
        if len(others) else 0
    # output lengths of the grid only (they include decode), batch sizes of production
    prod = r[(r["paradigm"] != "gqa") & (r["batch"] >= C9_BATCH_MIN) & r["in_output_grid"].astype(bool)
             & r["ratio_vs_gqa"].notna()]
    if prod.empty or not len(others):
        return NOT_TESTABLE, f"no point with batch >= {C9_BATCH_MIN} compared with {ref}"
    limit = C9_RATIO + C9_TOLERANCE
    parts, halved, cannot = [], [], []
    for par, g in prod.groupby("paradigm"):
        best = g.loc[g["ratio_vs_gqa"].idxmin()]
        halved.append(bool((g["ratio_ci_high"] <= limit).any()))
        cannot.append(bool((g["ratio_ci_low"] > limit).all()))
        ci = _ci(best["ratio_ci_low"], best["ratio_ci_high"], "{:.2f}".format)
        parts.append(f"{par} {best['ratio_vs_gqa']:.2f} {ci} at batch {best['batch']}, context {best['context']}, "
                     f"{best['output_length']} output tokens")
    ev = (f"Criterion: prefill costs more than {ref}'s at most compared points, and every other paradigm reaches a "
          f"request-energy ratio of at most {limit:.2f} (halving, +{C9_TOLERANCE:.2f}) with its whole 95 % interval "
          f"at batch >= {C9_BATCH_MIN}. Prefill costs more at {dearer} of {len(others)} points; lowest ratios over "
          f"{len(prod)} compared cells: " + "; ".join(parts))
    ok = dearer > len(others) / 2 and all(halved)
    return (REPRODUCED if ok else NOT_REPRODUCED), ev


def _in_range(x: pd.DataFrame, rng: tuple[float, float]) -> pd.Series:
    return (x["ci_low"] >= rng[0]) & (x["ci_high"] <= rng[1]) & x["crossover"].notna()


def c10(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    x = t["crossovers"]
    if x.empty or "paradigm" not in x:
        return NOT_TESTABLE, "needs GQA and an MLA or Mamba2 model at the default lever"
    parts, ok = [], []
    mla = x[(x["kind"] == "context") & (x["batch"] == C10_MLA_BATCH) & (x["paradigm"] == "mla")]
    if len(mla):
        inside = _in_range(mla, C10_MLA_CONTEXT)
        parts.append(f"MLA over context at batch {C10_MLA_BATCH}: the crossing's 95 % interval lies within "
                     f"{C10_MLA_CONTEXT[0]:.0f}-{C10_MLA_CONTEXT[1]:.0f} tokens for {int(inside.sum())} of {len(mla)} "
                     f"comparisons ({int(mla['crossover'].notna().sum())} cross at all)")
        ok.append(inside.mean() > C10_MOST)
    mam = x[(x["kind"] == "output_length") & (x["paradigm"] == "mamba2")]
    if len(mam):
        inside = _in_range(mam, C10_MAMBA_OUTPUT)
        found = mam["crossover"].dropna()
        parts.append(f"Mamba2 over output length: the interval lies within {C10_MAMBA_OUTPUT[0]:.0f}-"
                     f"{C10_MAMBA_OUTPUT[1]:.0f} tokens for {int(inside.sum())} of {len(mam)} comparisons ("
                     + (f"crossings at {found.min():.0f}-{found.max():.0f} tokens" if len(found) else "none crosses")
                     + ")")
        ok.append(inside.mean() > C10_MOST)
    if not parts:
        return NOT_TESTABLE, "no MLA or Mamba2 crossover rows"
    ev = (f"Criterion: for each paradigm, more than {C10_MOST:.0%} of the compared points cross in the claimed range "
          f"with their whole interval (intervals include the run-to-run spread). " + "; ".join(parts))
    return (REPRODUCED if all(ok) else NOT_REPRODUCED), ev


def c11(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    f = t["fleet"]
    if f.empty or not (f["scope"] == "all").any():
        return NOT_TESTABLE, "needs smclock levers and the default"
    r = f[f["scope"] == "all"].iloc[0]
    lo, hi = C11_MW * (1 - C11_TOLERANCE), C11_MW * (1 + C11_TOLERANCE)
    ev = (f"Criterion: the fleet saving within {lo:.2f}-{hi:.2f} MW (the claimed {C11_MW} MW +- "
          f"{C11_TOLERANCE:.0%}). {r['gpus']:.0f} GPUs, {r['decode_share']:.0%} of the time in decode: "
          f"{r['fleet_saved_mw']:.2f} MW [{r['fleet_saved_mw_ci_low']:.2f}, {r['fleet_saved_mw_ci_high']:.2f}] "
          f"({r['mean_saved_w_per_gpu']:.0f} W per busy GPU over {r['points']:.0f} points)")
    if r["fleet_saved_mw_ci_high"] < lo or r["fleet_saved_mw_ci_low"] > hi:
        return NOT_REPRODUCED, ev
    return (REPRODUCED if lo <= r["fleet_saved_mw"] <= hi else NOT_REPRODUCED), ev


def s1(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    cells = t["sweetspot_cells"]
    if cells.empty:
        return NOT_TESTABLE, "no input x output cells (needs several contexts and output lengths)"
    drop = cfg["analysis"]["sweetspot_drop_share"]
    parts, ok_all, n = [], True, 0
    for (arch, batch), g in cells.groupby(["arch", "batch"]):
        ins, outs = sorted(g["input"].unique()), sorted(g["output"].unique())
        if len(ins) < 3 or len(outs) < 3 or ins[-1] / ins[0] < S1_INPUT_SPAN or outs[-1] / outs[0] < S1_OUTPUT_SPAN:
            continue
        n += 1
        peak = g.loc[g["tokens_per_j"].idxmax()]
        at_long_in = g[(g["input"] == ins[-1]) & (g["output"] == peak["output"])]["tokens_per_j"].max()
        at_short_out = g[(g["input"] == peak["input"]) & (g["output"] == outs[0])]["tokens_per_j"].max()
        checks = {"the peak input is below the longest": peak["input"] < ins[-1],
                  "the peak output is medium": outs[0] < peak["output"] < outs[-1],
                  "long inputs drop": at_long_in < (1 - drop) * peak["tokens_per_j"],
                  "very short outputs drop": at_short_out < (1 - drop) * peak["tokens_per_j"]}
        failed = [k for k, v in checks.items() if not v]
        ok_all &= not failed
        parts.append(f"{arch} batch {batch} peaks at {peak['tokens_per_j']:.2f} tokens/J with input {peak['input']} "
                     f"and output {peak['output']}" + (f", but {' and '.join(failed)} fails" if failed else ""))
    if n == 0:
        return NOT_TESTABLE, (f"needs per architecture at least 3 input and 3 output lengths spanning "
                              f"{S1_INPUT_SPAN:.0f}x and {S1_OUTPUT_SPAN:.0f}x")
    ev = (f"Criterion: the peak lies at a shorter-than-longest input and a medium output, and long inputs and very "
          f"short outputs fall more than {drop:.0%} below it. " + "; ".join(parts))
    return (REPRODUCED if ok_all else NOT_REPRODUCED), ev


def s2(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    f = t["sweetspot_fit"]
    if f.empty or f["mape_heldout_pct"].isna().all():
        return NOT_TESTABLE, "no SweetSpot fit with held-out input lengths (needs 3 or more input lengths)"
    ev = (f"Criterion: the model's error on held-out input lengths (whole jobs left out of the fit) under "
          f"{S2_MAPE_PCT:.0f} %. " + "; ".join(
              f"{r.arch} batch {r.batch}: held-out MAPE {r.mape_heldout_pct:.2f} % on {r.held_out} of {r.cells} "
              f"cells, {r.mape_fit_pct:.2f} % on the fitted ones" for r in f.itertuples()))
    return (REPRODUCED if (f["mape_heldout_pct"] < S2_MAPE_PCT).all() else NOT_REPRODUCED), ev


def _clear_label(r: Any) -> str:
    return f"{r.arch} batch {r.batch} {r.phase}"


def k1(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    cov = t["clear_coverage"]
    if cov.empty:
        return NOT_TESTABLE, "no CLEAR measurements (config clear.architectures is empty)"
    ev = (f"Criterion: the components add up to more than {K1_COVERAGE:.0%} of the whole model at every "
          f"architecture, batch and phase. Coverage: " + "; ".join(f"{_clear_label(r)} {r.coverage:.0%}"
                                                                    for r in cov.itertuples()))
    over = cov[cov["coverage"] > 1.10]
    if len(over):
        ev += (f". {len(over)} of {len(cov)} are above 110 %: components cost more in isolation than inside the "
               f"model there")
    return (REPRODUCED if (cov["coverage"] > K1_COVERAGE).all() else NOT_REPRODUCED), ev


def k2(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    comp = t["clear_components"]
    if comp.empty:
        return NOT_TESTABLE, "no CLEAR measurements (config clear.architectures is empty)"
    trials = comp.dropna(subset=["cv"])
    within = (f"the spread between back-to-back trials of one job (median {trials['cv'].median():.2%}, largest "
              f"{trials['cv'].max():.2%}) is not what a rerun shows" if len(trials) else "")
    if "job_cv" not in comp or comp["job_cv"].isna().all():
        return NOT_TESTABLE, ("needs two or more CLEAR jobs per point (clear.repetitions) for the spread between "
                              "jobs; " + within)
    c = comp.dropna(subset=["job_cv"])
    worst = c.loc[c["job_cv"].idxmax()]
    ev = (f"Criterion: every component's energy varies between jobs by under {K2_CV:.1%} (coefficient of "
          f"variation). Largest {worst['job_cv']:.2%} ({worst['component']}, {_clear_label(worst)}); "
          f"{int((c['job_cv'] >= K2_CV).sum())} of {len(c)} components at or above it")
    return (REPRODUCED if (c["job_cv"] < K2_CV).all() else NOT_REPRODUCED), ev


def k3(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    comp = t["clear_components"]
    if comp.empty:
        return NOT_TESTABLE, "no CLEAR measurements (config clear.architectures is empty)"
    parts, ok, n = [], True, 0
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
        ok &= bool(ratio > 1)
        parts.append(f"{key[0]} batch {key[1]} {key[2]}: attention {jpf['attention'] * 1e12:.2f} pJ/FLOP, "
                     f"{ratio:.2f}x the highest of {', '.join(rest.index)}")
    if n == 0:
        return NOT_TESTABLE, "no architecture with attention and another matmul component in the CLEAR data"
    note = ("Criterion: attention spends more energy per FLOP than the MLP and mixer layers at every "
            "architecture, batch and phase (norms, embedding and head left out: memory-bound or one-token GEMVs). ")
    return (REPRODUCED if ok else NOT_REPRODUCED), note + "; ".join(parts)


PREDICATES: dict[str, Callable[[Mapping[str, pd.DataFrame], Mapping[str, Any]], Verdict]] = {
    "C1": c1, "C2": c2, "C3": c3, "C4": c4, "C5": c5, "C6": c6, "C7": c7, "C8": c8, "C9": c9, "C10": c10,
    "C11": c11, "S1": s1, "S2": s2, "K1": k1, "K2": k2, "K3": k3,
}


# The result tables the predicates read (names of phase_energy.analysis.tables)
CLAIM_TABLES = ("phase_energy", "dominance", "dvfs_classes", "clock_policy", "fleet", "crossovers",
                "request_energy", "sweetspot_fit", "sweetspot_cells", "clear_components", "clear_coverage")


def _for_engine(t: Mapping[str, pd.DataFrame], engine: str) -> dict[str, pd.DataFrame]:
    """The tables' rows of one engine (tables without an engine column, CLEAR's, are the native engine's)."""
    out = {}
    for k, df in t.items():
        if len(df) and "engine" in df:
            out[k] = df[df["engine"] == engine].reset_index(drop=True)
        elif k.startswith("clear") and engine != "native":
            out[k] = df.iloc[0:0]
        else:
            out[k] = df
    return out


def _range(d: pd.DataFrame, col: str, unit: str) -> str:
    return f"{d[col].min():.0f}-{d[col].max():.0f} {unit}" if len(d) else "no points"


def engine_comparison(cid: str, t: Mapping[str, pd.DataFrame], engines: list[str]) -> str:
    """One sentence comparing the engines on what a claim rests on, over the points every engine measured."""
    s = t["phase_energy"]
    dec = s[(s["phase"] == "decode") & (s["lever"] == "default")] if len(s) else s
    keys = ["arch", "batch", "context"]
    if cid in ("C1", "C2") and len(dec):
        common = set.intersection(*[set(map(tuple, dec[dec["engine"] == e][keys].to_numpy())) for e in engines])
        both = dec[dec[keys].apply(tuple, axis=1).isin(common)]
        if cid == "C1":
            parts = [f"{e} {_range(both[both['engine'] == e], 'power_mean_w', 'W')}" for e in engines]
            piv = both.pivot_table(index=keys, columns="engine", values="power_mean_w")
            ratio = (piv[engines[1]] / piv[engines[0]]).median() if len(piv) else float("nan")
            return (f"Engines on the {len(common)} points both measured: decode power {', '.join(parts)}; median "
                    f"{engines[1]}/{engines[0]} power ratio {ratio:.2f}.")
        parts = [f"{e} {int((both[both['engine'] == e]['sw_power_cap_share'] > 0.01).sum())} of "
                 f"{len(common)}" for e in engines]
        return (f"Engines: points with the SW power cap set over 1 % of decode, on the {len(common)} points both "
                f"measured: {', '.join(parts)}.")
    if cid == "C9":
        r = t["request_energy"]
        if not len(r) or "ratio_vs_gqa" not in r:
            return ""
        parts = []
        for e in engines:
            d = r[(r["engine"] == e) & (r["paradigm"] != "gqa") & (r["batch"] >= 32)]
            parts.append(f"{e} {d['ratio_vs_gqa'].min():.2f}" if len(d) else f"{e} none")
        return "Engines: lowest request-energy ratio vs GQA at batch >= 32: " + ", ".join(parts) + "."
    if cid == "C10":
        x = t["crossovers"]
        if not len(x):
            return ""
        parts = []
        for e in engines:
            d = x[(x["engine"] == e) & (x["kind"] == "output_length")]
            found = d["crossover"].dropna()
            parts.append(f"{e} {len(found)} of {len(d)} comparisons cross over output length"
                         + (f" ({found.min():.0f}-{found.max():.0f} tokens)" if len(found) else ""))
        return "Engines: " + "; ".join(parts) + "."
    return ""


COMPARED = ("C1", "C2", "C9", "C10")
WITH_INTERVALS = ("C1", "C2", "C7", "C9", "C10", "C11")


def interval_note(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> str:
    """What the intervals rest on, when points were measured by one job each."""
    s = t["phase_energy"]
    if s.empty or "jobs" not in s or not (s["jobs"] == 1).any():
        return ""
    share = (s["jobs"] == 1).mean()
    which = "Every point has" if share == 1 else f"{share:.0%} of the points have"
    return (f"{which} one job: their intervals are widened by the run-to-run spread of "
            f"{cfg['analysis']['run_to_run_sd']:.1%} measured on repeated points.")


def evaluate_claims(paths: Mapping[str, str | Path], cfg: Mapping[str, Any]) -> pd.DataFrame:
    """The claims table from the result tables at ``paths`` (``{name: path}``, see :func:`evaluate_tables`)."""
    missing = [n for n in CLAIM_TABLES if n not in paths]
    if missing:
        raise TableError(f"claims: no path given for the tables {missing}; the claims read {list(CLAIM_TABLES)}")
    return evaluate_tables(read_tables({n: paths[n] for n in CLAIM_TABLES}), cfg)


def evaluate_tables(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> pd.DataFrame:
    """The claims table: id, claim, engine, verdict, evidence (and the backend the data came from).

    Every claim is judged per engine on that engine's rows; with several engines, C1, C2, C9 and C10 also
    carry a sentence comparing them. CLEAR's claims (K) rest on the native engine's components.
    """
    s = t["phase_energy"]
    engines = sorted(s["engine"].dropna().unique()) if len(s) and "engine" in s else ["native"]
    if "native" in engines:  # the project's own engine first
        engines = ["native", *[e for e in engines if e != "native"]]

    def backends(df: pd.DataFrame) -> str:
        return ",".join(sorted(df["backend"].dropna().unique())) if len(df) and "backend" in df else "none"

    rows = []
    for engine in engines:
        te = _for_engine(t, engine)
        backend, clear_backend = backends(te["phase_energy"]), backends(te["clear_components"])
        for cid, fn in PREDICATES.items():
            if cid.startswith("K") and engine != "native":
                continue  # CLEAR measures the native engine's components
            verdict, evidence = fn(te, cfg)  # a predicate that fails stops the stage: never "not testable"
            if verdict != NOT_TESTABLE and cid in WITH_INTERVALS:
                evidence = f"{evidence}. {interval_note(te, cfg)}".strip()
            if len(engines) > 1 and cid in COMPARED:
                evidence = f"{evidence}. {engine_comparison(cid, t, engines)}".strip()
            source = clear_backend if cid.startswith("K") else backend
            if "sim" in source.split(","):  # the verdict itself says where its data came from
                verdict = f"{verdict} {SIMULATED_MARK}"
            rows.append({"id": cid, "claim": CLAIMS[cid], "engine": engine, "verdict": verdict,
                         "evidence": evidence, "backend": source})
    return pd.DataFrame(rows)
