"""The claims as predicates over tables: the paper's C1-C11, SweetSpot's S1-S2, CLEAR's K1-K3, our own P1.

docs/paper.md lists them; P1 is this project's finding on the phase policy, not a paper's claim. The paper's
predicates are here, the others' and P1 in :mod:`phase_energy.analysis.claims_studies`.

Each predicate returns a :class:`~phase_energy.analysis.verdict.Verdict`: ``reproduced``, ``not reproduced``
or ``not testable``, the evidence -- its criterion, the numbers against it (with 95 % intervals, which
include the run-to-run spread) and the conclusion -- and a reason of at most ``REASON_MAX`` characters.
Thresholds are the named constants below. A claim about a lever is ``not testable`` on traces without that
lever; a predicate that fails raises and stops the stage. Nothing here
assumes what the data should say; tests/test_claims.py gives every claim a case for each verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from phase_energy.analysis.claims_studies import k1, k2, k3, p1, s1, s2
from phase_energy.analysis.tables import TableError, read_tables
from phase_energy.analysis.verdict import (
    NOT_REPRODUCED,
    NOT_TESTABLE,
    REASON_MAX,
    REPRODUCED,
    Verdict,
    ci,
    conclude,
    pct,
    watts,
)

__all__ = ["CLAIMS", "NOT_REPRODUCED", "NOT_TESTABLE", "PREDICATES", "REASON_MAX", "REPRODUCED", "Verdict",
           "evaluate_claims", "evaluate_tables"]
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
    "P1": "This project's finding, not a paper claim: a phase lever (prefill at the default, decode locked or "
          "capped) saves at least 2 % of request energy against the best static lever within the latency bound, "
          "with the saving's 95 % interval above zero, with prefill and decode apart (mix share 0), at more than "
          "half of the points and output lengths where it can be formed.",
}
# Where a claim comes from: a paper (the C claims, SweetSpot's S, CLEAR's K) or this project (P)
SOURCES = {cid: "project" if cid.startswith("P") else "paper" for cid in CLAIMS}
# CLEAR's components run on the native engine's random weights (normal init), never a checkpoint
CLEAR_WEIGHTS = "random (normal)"

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


def _default_decode(t: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    s = t["phase_energy"]
    if s.empty:
        return s
    return s[(s["phase"] == "decode") & (s["lever"] == "default")]


def c1(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    lo, hi = C1_RANGE_W[0] * (1 - C1_TOLERANCE), C1_RANGE_W[1] * (1 + C1_TOLERANCE)
    crit = (f"Criterion: every decode point's power lies within {lo:.0f}-{hi:.0f} W (the claimed 137-300 W, ends "
            f"widened by {C1_TOLERANCE:.0%}) with its whole 95 % interval")
    d = _default_decode(t)
    if d.empty:
        return conclude(NOT_TESTABLE, crit, "no decode windows at the default lever")
    outside = d[(d["power_mean_w_ci_low"] > hi) | (d["power_mean_w_ci_high"] < lo)]
    top = d.loc[d["power_mean_w"].idxmax()]
    span = f"{d['power_mean_w'].min():.0f}-{d['power_mean_w'].max():.0f} W"
    ev = (f"{crit}. Measured: {span} over {len(d)} points; {len(outside)} of them lie outside with their whole "
          f"interval, the highest {top['arch']} batch {top['batch']} context {top['context']} at "
          f"{watts(top['power_mean_w'])} {ci(top['power_mean_w_ci_low'], top['power_mean_w_ci_high'], watts)}; median "
          f"fraction of the bandwidth floor {d['floor_fraction'].median():.2f}")
    if len(outside):
        side = "above" if (outside["power_mean_w_ci_low"] > hi).any() else "below"
        return conclude(NOT_REPRODUCED, ev, f"decode draws {span}: {len(outside)} of {len(d)} points lie {side} "
                                            "the paper's 137-300 W")
    return conclude(REPRODUCED, ev, f"decode draws {span}, within the paper's 137-300 W (ends widened by "
                                    f"{C1_TOLERANCE:.0%})")


def c2(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    crit = (f"Criterion: the SW power cap never binds in decode (set in more than {CAP_SHARE_MIN:.0%} of steady "
            f"decode, after the firmware's hold of the cache-filling prefill's cap state, with the 95 % interval "
            f"above that), and power caps cut decode throughput by no more than {THROUGHPUT_CHANGE_MAX:.0%}")
    s = t["phase_energy"]
    d = s[s["phase"] == "decode"] if len(s) else s
    default = d[d["lever"] == "default"] if len(d) else d
    if default.empty:
        return conclude(NOT_TESTABLE, crit, "no decode at the default lever")
    capped = default[default["sw_power_cap_share_steady_ci_low"] > CAP_SHARE_MIN]
    ev = f"{crit}. At the default limit the cap binds at {len(capped)} of {len(default)} points"
    if len(capped):
        worst = capped.loc[capped["sw_power_cap_share_steady"].idxmax()]
        ev += (f", most at {worst['arch']} batch {worst['batch']} context {worst['context']} "
               f"({pct(worst['sw_power_cap_share_steady'])} of steady decode)")
    at_default = f"the SW power cap binds in steady decode at {len(capped)} of {len(default)} default points"
    caps = d[d["lever_kind"] == "powercap"]
    if caps.empty:
        ev += "; no power-cap levers in the data, so only the first half is judged"
        return conclude(NOT_REPRODUCED if len(capped) else REPRODUCED, ev, at_default)
    merged = caps.merge(default[["arch", "batch", "context", "tokens_per_s"]], on=["arch", "batch", "context"],
                        suffixes=("", "_default"))
    bound = merged[merged["sw_power_cap_share_steady_ci_low"] > CAP_SHARE_MIN]
    slower = merged[merged["tokens_per_s_ci_high"] < (1 - THROUGHPUT_CHANGE_MAX) * merged["tokens_per_s_default"]]
    ev += (f"; under power caps it binds at {len(bound)} of {len(merged)} points and throughput drops by more than "
           f"{THROUGHPUT_CHANGE_MAX:.0%} (whole interval) at {len(slower)}")
    if len(capped):
        return conclude(NOT_REPRODUCED, ev, at_default)
    if len(bound) or len(slower):
        return conclude(NOT_REPRODUCED, ev, f"under power caps the cap binds in decode at {len(bound)} and slows it "
                                            f"at {len(slower)} of {len(merged)} points")
    return conclude(REPRODUCED, ev, f"the cap never binds in decode and caps keep its throughput at {len(merged)} "
                                    "points")


def c3(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    crit = ("Criterion: under power caps prefill loses more throughput than decode, and at the default limit "
            "prefill runs under the SW power cap for more of its time than steady decode")
    s = t["phase_energy"]
    if s.empty:
        return conclude(NOT_TESTABLE, crit, "no data")
    pre = s[(s["phase"] == "prefill") & (s["lever"] == "default")]
    dec = s[(s["phase"] == "decode") & (s["lever"] == "default")]
    if not len(pre) or not len(dec):
        return conclude(NOT_TESTABLE, crit, f"needs both phases at the default limit ({len(pre)} prefill, "
                                            f"{len(dec)} decode points)")
    pre_share = float(pre["sw_power_cap_share"].mean())
    dec_share = float(dec["sw_power_cap_share_steady"].mean())
    ev = (f"{crit}. At the default limit prefill runs under the cap {pct(pre_share)} of its time and steady "
          f"decode {pct(dec_share)} (means over points); median power prefill {watts(pre['power_mean_w'].median())}, "
          f"decode {watts(dec['power_mean_w'].median())}")
    shares = f"prefill runs capped {pre_share:.0%} of its time, decode {dec_share:.0%}"
    caps = s[s["lever_kind"] == "powercap"]
    if caps.empty:
        return conclude(NOT_TESTABLE, ev, f"no power-cap levers (at the default, {shares})",
                        "no power-cap levers in the data")
    base = s[s["lever"] == "default"][["arch", "batch", "context", "phase", "tokens_per_s"]]
    m = caps.merge(base, on=["arch", "batch", "context", "phase"], suffixes=("", "_default"))
    m["loss"] = 1 - m["tokens_per_s"] / m["tokens_per_s_default"]
    loss = m.groupby("phase")["loss"].median()
    lp, ld = loss.get("prefill", np.nan), loss.get("decode", np.nan)
    ev += f"; median throughput loss under caps: prefill {pct(lp)}, decode {pct(ld)}"
    losses = f"under caps prefill loses {pct(lp)} of its throughput, decode {pct(ld)}"
    if not lp > ld:
        return conclude(NOT_REPRODUCED, ev, losses)
    if not pre_share > dec_share:
        return conclude(NOT_REPRODUCED, ev, f"at the default {shares}")
    return conclude(REPRODUCED, ev, f"{losses}; {shares}", losses)


def c4(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    crit = (f"Criterion: decode under a 1980 MHz lock runs at {C4_CLAMP_MHZ:.0f} +- {C4_TOLERANCE_MHZ:.0f} MHz "
            "(median over points; decode windows only, prefill's power throttling left out)")
    s = t["phase_energy"]
    d = s[(s["lever"] == C4_LOCK) & (s["phase"] == "decode")] if len(s) else s
    if d.empty:
        return conclude(NOT_TESTABLE, crit, f"no decode under {C4_LOCK} in the data")
    med = d["sm_clock_mhz"].median()
    ev = f"{crit}. Measured: median {med:.0f} MHz, lowest {d['sm_clock_mhz'].min():.0f} MHz over {len(d)} points"
    ok = abs(med - C4_CLAMP_MHZ) <= C4_TOLERANCE_MHZ
    return conclude(REPRODUCED if ok else NOT_REPRODUCED, ev,
                    f"decode under the 1980 MHz lock runs at {med:.0f} MHz, {'within' if ok else 'outside'} "
                    f"{C4_CLAMP_MHZ:.0f} +- {C4_TOLERANCE_MHZ:.0f} MHz")


def c5(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    crit = (f"Criterion: clock events the SW power cap does not explain (thermal or power-brake throttling, or a "
            f"locked clock not reached while the cap is set in under {CAP_SHARE_MIN:.0%} of steady decode) occur "
            "at lever points")
    s = t["phase_energy"]
    lev = s[s["lever_kind"].isin(["powercap", "smclock"])] if len(s) else s
    if lev.empty:
        return conclude(NOT_TESTABLE, crit, "no power-cap or clock-lock runs in the data")
    flags = lev["flags"].fillna("")
    firmware = flags.str.contains("thermal_throttle|power_brake")
    unexplained = flags.str.contains("clock_below_lock") & (lev["sw_power_cap_share_steady"] <= CAP_SHARE_MIN)
    n = int((firmware | unexplained).sum())
    ev = f"{crit}. Found at {n} of {len(lev)} lever points"
    return conclude(REPRODUCED if n else NOT_REPRODUCED, ev,
                    f"clock events the cap does not explain at {n} of {len(lev)} lever points")


def c6(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    crit = "Criterion: at every point of every architecture one lock beats every cap on throughput and energy"
    dom = t["dominance"]
    if dom.empty or not dom["testable"].astype(bool).any():
        return conclude(NOT_TESTABLE, crit, "needs both power-cap and clock-lock levers at a point")
    d = dom[dom["testable"].astype(bool)]
    per_arch = d.groupby("arch")["lock_dominates_caps"].apply(lambda x: x.astype(bool).mean())
    ev = f"{crit}. Share of points where one does: " + "; ".join(f"{a} {v:.0%}" for a, v in per_arch.items())
    if (per_arch == 1).all():
        return conclude(REPRODUCED, ev, f"a lock dominates every cap at every point of {len(per_arch)} "
                                        "architectures")
    worst = per_arch.idxmin()
    return conclude(NOT_REPRODUCED, ev, f"a lock dominates every cap at only {per_arch[worst]:.0%} of {worst}'s "
                                        "points", f"a lock dominates every cap at only {per_arch[worst]:.0%} of "
                                                  "one architecture's points")


def c7(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    bound = cfg["analysis"]["throughput_loss_bound"]
    crit = (f"Criterion: the {C7_QUANTILE:.0%} quantile of the points' decode energy savings at <= {bound:.0%} "
            f"throughput loss lies within {pct(C7_SAVING)} +- {pct(C7_TOLERANCE)} (a quantile, not the largest "
            "saving, which the noise of many points inflates)")
    p = t["clock_policy"]
    if p.empty:
        return conclude(NOT_TESTABLE, crit, "needs clock-lock levers and the default at a point")
    sav = p["energy_saving"].astype(float)
    q = float(sav.quantile(C7_QUANTILE))
    top = p.loc[sav.idxmax()]
    ev = (f"{crit}. Savings over {len(p)} points: median {pct(sav.median())}, {C7_QUANTILE:.0%} quantile "
          f"{pct(q)}, largest {pct(top['energy_saving'])} "
          f"{ci(top['energy_saving_ci_low'], top['energy_saving_ci_high'], pct)} ({top['arch']} batch "
          f"{top['batch']} context {top['context']})")
    ok = abs(q - C7_SAVING) <= C7_TOLERANCE
    return conclude(REPRODUCED if ok else NOT_REPRODUCED, ev,
                    f"the {C7_QUANTILE:.0%} quantile saving is {pct(q)}, {'within' if ok else 'outside'} the "
                    f"paper's 32 % +- {100 * C7_TOLERANCE:.0f} %")


def c8(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    crit = f"Criterion: the architectures' most frequent determinate classes are {C8_CLASSES} different ones"
    c = t["dvfs_classes"]
    if c.empty or (c["class"] == "indeterminate").all():
        return conclude(NOT_TESTABLE, crit, "needs 3 or more clock locks per point with a determinate class")
    per_arch = c[c["class"] != "indeterminate"].groupby("arch")["class"].agg(lambda x: x.value_counts().index[0])
    n = per_arch.nunique()
    ev = f"{crit}. Found {n}: " + "; ".join(f"{a} {k}" for a, k in per_arch.items())
    return conclude(REPRODUCED if n == C8_CLASSES else NOT_REPRODUCED, ev,
                    f"{n} classes among {len(per_arch)} architectures; the paper names {C8_CLASSES}")


def c9(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    limit = C9_RATIO + C9_TOLERANCE
    crit = (f"Criterion: the other paradigms' prefill costs more than GQA's at most compared points, and every "
            f"other paradigm has a cell at batch >= {C9_BATCH_MIN} whose request-energy ratio to GQA lies at or "
            f"under {limit:.2f} (halving, +{C9_TOLERANCE:.2f}) with its whole 95 % interval")
    s, r = t["phase_energy"], t["request_energy"]
    if s.empty or r.empty or "ratio_vs_gqa" not in r or not (r["paradigm"] == "gqa").any():
        return conclude(NOT_TESTABLE, crit, "needs a GQA model and another paradigm at the default lever")
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
        return conclude(NOT_TESTABLE, crit, f"no point with batch >= {C9_BATCH_MIN} compared with {ref}")
    parts, short, failed = [], [], []
    for par, g in prod.groupby("paradigm"):
        best = g.loc[g["ratio_vs_gqa"].idxmin()]
        halves = bool((g["ratio_ci_high"] <= limit).any())
        interval = ci(best["ratio_ci_low"], best["ratio_ci_high"], "{:.2f}".format)
        verdict = "halves" if halves else f"no interval lies wholly at or under {limit:.2f}"
        parts.append(f"{par} lowest {best['ratio_vs_gqa']:.2f} {interval} at batch {best['batch']}, context "
                     f"{best['context']}, {best['output_length']} output tokens ({verdict})")
        short.append(f"{par} {best['ratio_vs_gqa']:.2f}")
        if not halves:
            failed.append((str(par), float(best["ratio_vs_gqa"])))
    ev = (f"{crit}. Against {ref}: prefill costs more at {dearer} of {len(others)} points; lowest ratios over "
          f"{len(prod)} compared cells: " + "; ".join(parts))
    if dearer <= len(others) / 2:
        return conclude(NOT_REPRODUCED, ev, f"other paradigms' prefill costs more than GQA's at only {dearer} of "
                                            f"{len(others)} points")
    if failed:
        names = " and ".join(", ".join(p for p, _ in failed).rsplit(", ", 1))
        lows = ", ".join(f"{x:.2f}" for _, x in failed)
        return conclude(NOT_REPRODUCED, ev,
                        f"{names}: no interval wholly at or under {limit:.2f} (lowest {lows})",
                        f"{names}: no interval wholly at or under {limit:.2f}",
                        f"{len(failed)} paradigms have no interval wholly at or under {limit:.2f}")
    return conclude(REPRODUCED, ev, f"every paradigm halves GQA's request energy somewhere ({', '.join(short)})",
                    f"every paradigm halves GQA's request energy at batch >= {C9_BATCH_MIN}")


def _in_range(x: pd.DataFrame, rng: tuple[float, float]) -> pd.Series:
    return (x["ci_low"] >= rng[0]) & (x["ci_high"] <= rng[1]) & x["crossover"].notna()


def c10(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    crit = (f"Criterion: for each paradigm, more than {C10_MOST:.0%} of the compared points cross GQA in the "
            "claimed range with their whole interval (intervals include the run-to-run spread)")
    x = t["crossovers"]
    if x.empty or "paradigm" not in x:
        return conclude(NOT_TESTABLE, crit, "needs GQA and an MLA or Mamba2 model at the default lever")
    parts, short, ok = [], [], []
    mla = x[(x["kind"] == "context") & (x["batch"] == C10_MLA_BATCH) & (x["paradigm"] == "mla")]
    if len(mla):
        inside = _in_range(mla, C10_MLA_CONTEXT)
        parts.append(f"MLA over context at batch {C10_MLA_BATCH}: the crossing's 95 % interval lies within "
                     f"{C10_MLA_CONTEXT[0]:.0f}-{C10_MLA_CONTEXT[1]:.0f} tokens for {int(inside.sum())} of {len(mla)} "
                     f"comparisons ({int(mla['crossover'].notna().sum())} cross at all)")
        short.append(f"MLA at {int(inside.sum())} of {len(mla)}")
        ok.append(inside.mean() > C10_MOST)
    mam = x[(x["kind"] == "output_length") & (x["paradigm"] == "mamba2")]
    if len(mam):
        inside = _in_range(mam, C10_MAMBA_OUTPUT)
        found = mam["crossover"].dropna()
        parts.append(f"Mamba2 over output length: the interval lies within {C10_MAMBA_OUTPUT[0]:.0f}-"
                     f"{C10_MAMBA_OUTPUT[1]:.0f} tokens for {int(inside.sum())} of {len(mam)} comparisons ("
                     + (f"crossings at {found.min():.0f}-{found.max():.0f} tokens" if len(found) else "none crosses")
                     + ")")
        short.append(f"Mamba2 at {int(inside.sum())} of {len(mam)}")
        ok.append(inside.mean() > C10_MOST)
    if not parts:
        return conclude(NOT_TESTABLE, crit, "no MLA or Mamba2 crossover rows")
    return conclude(REPRODUCED if all(ok) else NOT_REPRODUCED, f"{crit}. " + "; ".join(parts),
                    "crossings of GQA in the claimed ranges: " + ", ".join(short) + " comparisons")


def c11(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    lo, hi = C11_MW * (1 - C11_TOLERANCE), C11_MW * (1 + C11_TOLERANCE)
    crit = (f"Criterion: the fleet saving lies within {lo:.2f}-{hi:.2f} MW (the claimed {C11_MW} MW +- "
            f"{C11_TOLERANCE:.0%})")
    f = t["fleet"]
    if f.empty or not (f["scope"] == "all").any():
        return conclude(NOT_TESTABLE, crit, "needs clock-lock levers and the default at a point")
    r = f[f["scope"] == "all"].iloc[0]
    ev = (f"{crit}. {r['gpus']:.0f} GPUs, {r['decode_share']:.0%} of the time in decode: {r['fleet_saved_mw']:.2f} "
          f"MW [{r['fleet_saved_mw_ci_low']:.2f}, {r['fleet_saved_mw_ci_high']:.2f}] "
          f"({r['mean_saved_w_per_gpu']:.0f} W per busy GPU over {r['points']:.0f} points)")
    ok = (lo <= r["fleet_saved_mw"] <= hi and not (r["fleet_saved_mw_ci_high"] < lo or r["fleet_saved_mw_ci_low"] > hi))
    return conclude(REPRODUCED if ok else NOT_REPRODUCED, ev,
                    f"the fleet would save {r['fleet_saved_mw']:.2f} MW, {'within' if ok else 'outside'} "
                    f"{lo:.2f}-{hi:.2f} MW")


PREDICATES: dict[str, Callable[[Mapping[str, pd.DataFrame], Mapping[str, Any]], Verdict]] = {
    "C1": c1, "C2": c2, "C3": c3, "C4": c4, "C5": c5, "C6": c6, "C7": c7, "C8": c8, "C9": c9, "C10": c10,
    "C11": c11, "S1": s1, "S2": s2, "K1": k1, "K2": k2, "K3": k3, "P1": p1,
}


# The result tables the predicates read (names of phase_energy.analysis.tables)
CLAIM_TABLES = ("phase_energy", "dominance", "dvfs_classes", "clock_policy", "fleet", "crossovers",
                "request_energy", "sweetspot_fit", "sweetspot_cells", "clear_components", "clear_coverage",
                "phase_pairs", "phase_policy")


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
            d = r[(r["engine"] == e) & (r["paradigm"] != "gqa") & (r["batch"] >= 32)]["ratio_vs_gqa"].dropna()
            parts.append(f"{e} {d.min():.2f}" if len(d) else f"{e} none (no GQA point beside another paradigm)")
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


BETWEEN_MODELS = ("C9", "C10")  # claims that compare models, which may have run on different cards


def card_note(t: Mapping[str, pd.DataFrame]) -> str:
    """Which cards the models ran on, when more than one: ratios between them then include the cards' difference."""
    s = t["phase_energy"]
    if s.empty or "cards" not in s:
        return ""
    archs_on: dict[str, set[str]] = {}
    for arch, cards in zip(s["arch"], s["cards"].fillna(""), strict=True):
        for card in str(cards).split(","):
            if card:
                archs_on.setdefault(card, set()).add(str(arch))
    real = s[s["backend"] != "sim"] if "backend" in s else s
    unrecorded = real[real["cards"].fillna("") == ""][["arch", "batch", "context"]].drop_duplicates()
    if not archs_on and len(unrecorded):  # measured, but no trace says on which card
        return ("The traces did not record their cards: comparisons between models measured in other runs include "
                "what separates the cards, which the run-to-run spread covers as far as the pairs of cards it was "
                "measured on")
    if len(archs_on) + (len(unrecorded) > 0) < 2:
        return ""
    where = "; ".join(f"{card[:12]}: {', '.join(sorted(archs))}" for card, archs in sorted(archs_on.items()))
    n = len(unrecorded)
    unknown = (f"{n} point did not record its card" if n == 1 else f"{n} points did not record theirs") if n else ""
    cards = f"{len(archs_on)} recorded card" + ("s" if len(archs_on) != 1 else "")
    return (f"The models ran on {cards} ({'; '.join(x for x in (where, unknown) if x)}): "
            "comparisons between them include what separates the cards, which the run-to-run spread covers as far "
            "as the pairs of cards it was measured on")


def _sentences(*parts: str) -> str:
    """Sentences joined by one space, each ending with a full stop (none doubled, empty ones left out)."""
    kept = [p.strip() for p in parts if p and p.strip()]
    return " ".join(p if p.endswith(".") else p + "." for p in kept)


def evaluate_claims(paths: Mapping[str, str | Path], cfg: Mapping[str, Any]) -> pd.DataFrame:
    """The claims table from the result tables at ``paths`` (``{name: path}``, see :func:`evaluate_tables`)."""
    missing = [n for n in CLAIM_TABLES if n not in paths]
    if missing:
        raise TableError(f"claims: no path given for the tables {missing}; the claims read {list(CLAIM_TABLES)}")
    return evaluate_tables(read_tables({n: paths[n] for n in CLAIM_TABLES}), cfg)


def evaluate_tables(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> pd.DataFrame:
    """The claims table: id, claim, engine, verdict, evidence, reason, source, backend and weights.

    Every claim is judged per engine on that engine's rows; with several engines, C1, C2, C9 and C10 also
    carry a sentence comparing them. CLEAR's claims (K) rest on the native engine's components. ``source``
    says whose claim it is (``paper``, or ``project`` for this project's own findings); ``backend`` and
    ``weights`` the data its evidence used (``sim`` also marks the verdict itself).
    """
    s = t["phase_energy"]
    engines = sorted(s["engine"].dropna().unique()) if len(s) and "engine" in s else ["native"]
    if "native" in engines:  # the project's own engine first
        engines = ["native", *[e for e in engines if e != "native"]]

    def backends(df: pd.DataFrame) -> str:
        return ",".join(sorted(df["backend"].dropna().unique())) if len(df) and "backend" in df else "none"

    def weights(df: pd.DataFrame) -> str:  # tables from before weights were recorded: the random normal init
        return "; ".join(sorted(df["weights"].fillna(CLEAR_WEIGHTS).unique())) if len(df) and "weights" in df \
            else (CLEAR_WEIGHTS if len(df) else "none")

    rows = []
    for engine in engines:
        te = _for_engine(t, engine)
        backend, clear_backend = backends(te["phase_energy"]), backends(te["clear_components"])
        for cid, fn in PREDICATES.items():
            if cid.startswith("K") and engine != "native":
                continue  # CLEAR measures the native engine's components
            verdict, evidence, reason = fn(te, cfg)  # a predicate that fails stops the stage, never "not testable"
            if verdict != NOT_TESTABLE and cid in WITH_INTERVALS:
                evidence = _sentences(evidence, interval_note(te, cfg))
            if verdict != NOT_TESTABLE and cid in BETWEEN_MODELS:
                evidence = _sentences(evidence, card_note(te))
            if len(engines) > 1 and cid in COMPARED:
                evidence = _sentences(evidence, engine_comparison(cid, t, engines))
            evidence = _sentences(evidence)
            clear = cid.startswith("K")
            source = clear_backend if clear else backend
            if "sim" in source.split(","):  # the verdict itself says where its data came from
                verdict = f"{verdict} {SIMULATED_MARK}"
            used = (CLEAR_WEIGHTS if len(te["clear_components"]) else "none") if clear else weights(te["phase_energy"])
            rows.append({"id": cid, "claim": CLAIMS[cid], "engine": engine, "verdict": verdict,
                         "evidence": evidence, "reason": reason, "source": SOURCES[cid], "backend": source,
                         "weights": used})
    return pd.DataFrame(rows)
