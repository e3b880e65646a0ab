"""The paper's claims (C1-C11, paper.md) as predicates over the result tables.

Each predicate returns a verdict -- ``reproduced``, ``not reproduced`` or ``not testable`` -- and the
evidence it rests on (numbers, CIs). A claim about a lever is ``not testable`` on traces without that
lever; nothing here assumes what the data should say.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .trace import read_table

REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE = "reproduced", "not reproduced", "not testable"

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



def _fmt(x: float, unit: str = "", digits: int = 0) -> str:
    return f"{x:.{digits}f}{unit}"


def c1(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    s = t["summary"]
    d = s[(s.get("phase") == "decode") & (s.get("lever") == "default")] if len(s) else s
    if d.empty:
        return NOT_TESTABLE, "no decode windows at the default lever"
    lo, hi = d["power_mean_w"].min(), d["power_mean_w"].max()
    per_arch = d.groupby("arch")["power_mean_w"].agg(["min", "max"])
    ev = "; ".join(f"{a}: {r['min']:.0f}-{r['max']:.0f} W" for a, r in per_arch.iterrows())
    ff = d["floor_fraction"].median()
    ev = (f"decode mean power at the default limit {lo:.0f}-{hi:.0f} W over {len(d)} points ({ev}); "
          f"median fraction of the bandwidth floor {ff:.2f}")
    ok = lo >= 137 * 0.9 and hi <= 300 * 1.1
    return (REPRODUCED if ok else NOT_REPRODUCED), ev


def c2(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    s = t["summary"]
    if s.empty:
        return NOT_TESTABLE, "no data"
    d = s[s["phase"] == "decode"]
    default = d[d["lever"] == "default"]
    share = float(default["sw_power_cap_share"].max()) if len(default) else float("nan")
    capped_pts = default[default["sw_power_cap_share"] > 0.01]
    ev = (f"at the default limit the SW power cap was active in decode for up to {share:.1%} of the window "
          f"time; {len(capped_pts)} of {len(default)} points above 1 %")
    if len(capped_pts):
        worst = capped_pts.sort_values("sw_power_cap_share").iloc[-1]
        ev += f" (largest: {worst['arch']} batch {worst['batch']} context {worst['context']})"
    caps = d[d["lever_kind"] == "powercap"]
    if caps.empty:
        return (NOT_REPRODUCED if len(capped_pts) else REPRODUCED), ev + "; no power-cap levers in the data"
    merged = caps.merge(default[["arch", "batch", "context", "tokens_per_s", "power_mean_w"]],
                        on=["arch", "batch", "context"], suffixes=("", "_default"))
    merged["tp_change"] = merged["tokens_per_s"] / merged["tokens_per_s_default"] - 1
    triggered = merged[merged["sw_power_cap_share"] > 0.01]
    ev += (f"; under caps the cap bound in {len(triggered)} of {len(merged)} decode points, throughput "
           f"changed by {merged['tp_change'].min():+.1%} at worst")
    ok = len(capped_pts) == 0 and len(triggered) == 0 and merged["tp_change"].min() > -0.01
    return (REPRODUCED if ok else NOT_REPRODUCED), ev


def c3(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    s = t["summary"]
    if s.empty:
        return NOT_TESTABLE, "no data"
    pre = s[(s["phase"] == "prefill") & (s["lever"] == "default")]
    dec = s[(s["phase"] == "decode") & (s["lever"] == "default")]
    pre_share = float(pre["sw_power_cap_share"].mean()) if len(pre) else float("nan")
    dec_share = float(dec["sw_power_cap_share"].mean()) if len(dec) else float("nan")
    ev = (f"default limit: prefill under the SW power cap {pre_share:.1%} of its time (mean over points), "
          f"decode {dec_share:.1%}; prefill power {pre['power_mean_w'].median():.0f} W vs decode "
          f"{dec['power_mean_w'].median():.0f} W (medians)")
    caps = s[s["lever_kind"] == "powercap"]
    if caps.empty:
        return NOT_TESTABLE, ev + "; the prefill half holds" if pre_share > dec_share else ev
    base = s[s["lever"] == "default"][["arch", "batch", "context", "phase", "tokens_per_s"]]
    m = caps.merge(base, on=["arch", "batch", "context", "phase"], suffixes=("", "_default"))
    m["loss"] = 1 - m["tokens_per_s"] / m["tokens_per_s_default"]
    loss = m.groupby("phase")["loss"].median()
    ev += (f"; median throughput loss under caps: prefill {loss.get('prefill', np.nan):.1%}, "
           f"decode {loss.get('decode', np.nan):.1%}")
    ok = loss.get("prefill", 0) > loss.get("decode", 0) and pre_share > dec_share
    return (REPRODUCED if ok else NOT_REPRODUCED), ev


def c4(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    s = t["summary"]
    d = s[(s.get("lever") == "smclock:1980")] if len(s) else s
    if d.empty:
        return NOT_TESTABLE, "no smclock:1980 lever in the data"
    achieved = d["sm_clock_mhz"]
    ev = f"achieved SM clock under a 1980 MHz lock: median {achieved.median():.0f} MHz, min {achieved.min():.0f} MHz"
    ok = abs(achieved.median() - 1830) <= 60
    return (REPRODUCED if ok else NOT_REPRODUCED), ev


def c5(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    s = t["summary"]
    lev = s[s["lever_kind"].isin(["powercap", "smclock"])] if len(s) else s
    if lev.empty:
        return NOT_TESTABLE, "no lever runs in the data"
    flagged = lev["flags"].fillna("").str.contains("thermal_throttle|power_brake|clock_below_lock")
    ev = f"{int(flagged.sum())} of {len(lev)} lever points flagged with firmware throttling or a clamped lock"
    return (REPRODUCED if flagged.any() else NOT_REPRODUCED), ev


def c6(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    dom = t["dominance"]
    if dom.empty or not dom["testable"].astype(bool).any():
        return NOT_TESTABLE, "needs both powercap and smclock levers"
    d = dom[dom["testable"].astype(bool)]
    per_arch = d.groupby("arch")["lock_dominates_caps"].apply(lambda x: x.astype(bool).mean())
    ev = "share of points where one lock beats every cap: " + "; ".join(f"{a}: {v:.0%}" for a, v in per_arch.items())
    return (REPRODUCED if (per_arch == 1).all() else NOT_REPRODUCED), ev


def c7(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    p = t["policy"]
    if p.empty:
        return NOT_TESTABLE, "needs smclock levers and the default"
    best = p.loc[p["energy_saving"].idxmax()]
    bound = cfg["analysis"]["throughput_loss_bound"]
    if pd.isna(best["best_clock_mhz"]):
        return NOT_REPRODUCED, f"no clock lock kept the decode throughput loss within {bound:.0%} of the default"
    ev = (f"largest decode energy saving at <= {bound:.0%} throughput loss: {best['energy_saving']:.1%} "
          f"({best['arch']}, batch {best['batch']}, context {best['context']}, {best['best_clock_mhz']} MHz); "
          f"median over points {p['energy_saving'].median():.1%}")
    ok = abs(best["energy_saving"] - 0.32) <= 0.08
    return (REPRODUCED if ok else NOT_REPRODUCED), ev


def c8(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    c = t["classes"]
    if c.empty or (c["class"] == "indeterminate").all():
        return NOT_TESTABLE, "needs >= 3 smclock levers per point"
    per_arch = c[c["class"] != "indeterminate"].groupby("arch")["class"].agg(lambda x: x.value_counts().index[0])
    n = per_arch.nunique()
    ev = f"{n} distinct classes among architectures: " + "; ".join(f"{a}: {k}" for a, k in per_arch.items())
    return (REPRODUCED if n == 3 else NOT_REPRODUCED), ev


def c9(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    s, r = t["summary"], t["request"]
    if s.empty or r.empty or "ratio_vs_gqa" not in r:
        return NOT_TESTABLE, "needs GQA and another paradigm at the default lever"
    pre = s[(s["phase"] == "prefill") & (s["lever"] == "default")]
    ref = r[r["paradigm"] == "gqa"]["arch"].iloc[0] if (r["paradigm"] == "gqa").any() else None
    if ref is None:
        return NOT_TESTABLE, "no GQA architecture"
    ref_pre = pre[pre["arch"] == ref].set_index(["batch", "context"])["j_per_token"]
    others = pre[pre["paradigm"] != "gqa"]
    dearer = others.apply(lambda x: x["j_per_token"] > ref_pre.get((x["batch"], x["context"]), np.nan), axis=1)
    prod = r[(r["paradigm"] != "gqa") & (r["batch"] >= 32)]
    if prod.empty:
        return NOT_TESTABLE, "no batch >= 32 in the data"
    best = prod.groupby("paradigm")["ratio_vs_gqa"].min()
    ev = (f"prefill J/token above {ref} at {int(dearer.sum())} of {len(others)} points; lowest total request "
          "energy ratio vs GQA at batch >= 32: " + "; ".join(f"{k}: {v:.2f}" for k, v in best.items()))
    ok = dearer.mean() > 0.5 and (best <= 0.55).all()
    return (REPRODUCED if ok else NOT_REPRODUCED), ev


def c10(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    x = t["crossovers"]
    if x.empty:
        return NOT_TESTABLE, "needs GQA and MLA/Mamba2 at the default lever"
    parts, ok = [], []
    mla = x[(x["kind"] == "context") & (x["batch"] == 32) & x["arch"].map(
        lambda a: "mla" in a or "minicpm" in a)]
    if len(mla):
        v = mla["crossover"].dropna()
        where = (f"crossings at {', '.join(f'{c:.0f}' for c in v)} tokens" if len(v) else
                 "no crossing within the measured contexts")
        parts.append(f"MLA vs GQA at batch 32 over context: {where} "
                     f"({', '.join(str(a) for a in mla['at'].unique())} output tokens)")
        ok.append(bool(len(v)) and bool(((v >= 3000) & (v <= 6000)).any()))
    mam = x[(x["kind"] == "output_length") & x["arch"].str.contains("mamba|nemotron")]
    if len(mam):
        v = mam["crossover"].dropna()
        where = ", ".join(f"{c:.0f}" for c in v.head(8)) or "no"
        parts.append(f"Mamba2 vs GQA over output length: {where} crossing(s) (tokens) over {len(mam)} points")
        ok.append(bool(len(v)) and bool(((v >= 500) & (v <= 2000)).any()))
    if not parts:
        return NOT_TESTABLE, "no MLA or Mamba2 crossover rows"
    return (REPRODUCED if all(ok) else NOT_REPRODUCED), "; ".join(parts)


def c11(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    f = t["fleet"]
    if f.empty:
        return NOT_TESTABLE, "needs smclock levers and the default"
    allrow = f[f["scope"] == "all"].iloc[0]
    ev = (f"{allrow['gpus']:.0f} GPUs, decode share {allrow['decode_share']:.0%}: "
          f"{allrow['fleet_saved_mw']:.2f} MW saved ({allrow['mean_saved_w_per_gpu']:.0f} W per busy GPU)")
    ok = 0.25 <= allrow["fleet_saved_mw"] <= 1.0
    return (REPRODUCED if ok else NOT_REPRODUCED), ev


def s1(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    cells = t["sweetspot_cells"]
    if cells.empty:
        return NOT_TESTABLE, "no input x output cells (needs several contexts and output lengths)"
    drop = cfg["analysis"]["sweetspot_drop_share"]
    parts, ok_all, n = [], True, 0
    for (arch, batch), g in cells.groupby(["arch", "batch"]):
        if g["input"].nunique() < 3 or g["output"].nunique() < 3:
            continue
        n += 1
        peak = g.loc[g["tokens_per_j"].idxmax()]
        ins, outs = sorted(g["input"].unique()), sorted(g["output"].unique())
        at_long_in = g[(g["input"] == ins[-1]) & (g["output"] == peak["output"])]["tokens_per_j"].max()
        at_short_out = g[(g["input"] == peak["input"]) & (g["output"] == outs[0])]["tokens_per_j"].max()
        checks = {"peak input below the longest": peak["input"] < ins[-1],
                  "peak output medium": outs[0] < peak["output"] < outs[-1],
                  "long inputs drop": at_long_in < (1 - drop) * peak["tokens_per_j"],
                  "very short outputs drop": at_short_out < (1 - drop) * peak["tokens_per_j"]}
        failed = [k for k, v in checks.items() if not v]
        ok_all &= not failed
        parts.append(f"{arch} b{batch}: peak {peak['tokens_per_j']:.2f} tok/J at input {peak['input']}, output "
                     f"{peak['output']}" + (f" (fails: {', '.join(failed)})" if failed else ""))
    if n == 0:
        return NOT_TESTABLE, "needs at least 3 input and 3 output lengths per architecture"
    return (REPRODUCED if ok_all else NOT_REPRODUCED), "; ".join(parts)


def s2(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    f = t["sweetspot_fit"]
    if f.empty or f["mape_heldout_pct"].isna().all():
        return NOT_TESTABLE, "no SweetSpot fit with held-out cells"
    ev = "; ".join(f"{r.arch} b{r.batch}: held-out MAPE {r.mape_heldout_pct:.2f} % ({r.held_out} of {r.cells} "
                   f"cells), fit {r.mape_fit_pct:.2f} %" for r in f.itertuples())
    return (REPRODUCED if (f["mape_heldout_pct"] < 2.0).all() else NOT_REPRODUCED), ev


def _clear_label(r: Any) -> str:
    return f"{r.arch} b{r.batch} {r.phase}"


def k1(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    cov = t["clear_coverage"]
    if cov.empty:
        return NOT_TESTABLE, "no CLEAR measurements (config clear.architectures is empty)"
    ev = "; ".join(f"{_clear_label(r)}: {r.coverage:.0%}" for r in cov.itertuples())
    over = cov[cov["coverage"] > 1.10]
    if len(over):
        ev += (f". {len(over)} of {len(cov)} above 110 %: components cost more in isolation than inside the "
               f"model there")
    return (REPRODUCED if (cov["coverage"] > 0.90).all() else NOT_REPRODUCED), "coverage " + ev


def k2(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    comp = t["clear"]
    if comp.empty:
        return NOT_TESTABLE, "no CLEAR measurements (config clear.architectures is empty)"
    comp = comp.dropna(subset=["cv"])
    if comp.empty:
        return NOT_TESTABLE, "fewer than two trials per component"
    worst = comp.sort_values("cv").iloc[-1]
    ev = (f"coefficient of variation across {int(comp['trials'].min())}+ trials: median {comp['cv'].median():.2%}, "
          f"largest {worst['cv']:.2%} ({worst['component']}, {_clear_label(worst)}); "
          f"{int((comp['cv'] >= 0.095).sum())} of {len(comp)} components at or above 9.5 %")
    return (REPRODUCED if (comp["cv"] < 0.095).all() else NOT_REPRODUCED), ev


def k3(t: Mapping[str, pd.DataFrame], cfg: Mapping[str, Any]) -> Verdict:
    comp = t["clear"]
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
        parts.append(f"{key[0]} b{key[1]} {key[2]}: attention {jpf['attention'] * 1e12:.2f} pJ/FLOP, "
                     f"{ratio:.2f}x the highest of {', '.join(rest.index)}")
    if n == 0:
        return NOT_TESTABLE, "no architecture with attention and another matmul component in the CLEAR data"
    note = ("compared with the MLP and mixer layers (norms, embedding and head left out: memory-bound or "
            "one-token GEMVs): ")
    return (REPRODUCED if ok else NOT_REPRODUCED), note + "; ".join(parts)


PREDICATES: dict[str, Callable[[Mapping[str, pd.DataFrame], Mapping[str, Any]], Verdict]] = {
    "C1": c1, "C2": c2, "C3": c3, "C4": c4, "C5": c5, "C6": c6, "C7": c7, "C8": c8, "C9": c9, "C10": c10,
    "C11": c11, "S1": s1, "S2": s2, "K1": k1, "K2": k2, "K3": k3,
}


def load_tables(tables: Path) -> dict[str, pd.DataFrame]:
    """The result tables the predicates read."""
    return {
        "summary": read_table(tables, "phase_energy.parquet"),
        "dominance": read_table(tables, "dominance.csv"),
        "classes": read_table(tables, "dvfs_classes.csv"),
        "policy": read_table(tables, "clock_policy.csv"),
        "fleet": read_table(tables, "fleet.csv"),
        "crossovers": read_table(tables, "crossovers.csv"),
        "request": read_table(tables, "request_energy.parquet"),
        "sweetspot_fit": read_table(tables, "sweetspot_fit.csv"),
        "sweetspot_cells": read_table(tables, "sweetspot_cells.parquet"),
        "clear": read_table(tables, "clear_components.csv"),
        "clear_coverage": read_table(tables, "clear_coverage.csv"),
    }


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
    s = t["summary"]
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
        r = t["request"]
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


def evaluate_claims(tables: Path, cfg: Mapping[str, Any]) -> pd.DataFrame:
    """The claims table: id, claim, engine, verdict, evidence (and the backend the data came from).

    Every claim is judged per engine on that engine's rows; with several engines, C1, C2, C9 and C10 also
    carry a sentence comparing them. CLEAR's claims (K) rest on the native engine's components.
    """
    t = load_tables(tables)
    s = t["summary"]
    engines = sorted(s["engine"].dropna().unique()) if len(s) and "engine" in s else ["native"]
    if "native" in engines:  # the project's own engine first
        engines = ["native", *[e for e in engines if e != "native"]]

    def backends(df: pd.DataFrame) -> str:
        return ",".join(sorted(df["backend"].dropna().unique())) if len(df) and "backend" in df else "none"

    rows = []
    for engine in engines:
        te = _for_engine(t, engine)
        backend, clear_backend = backends(te["summary"]), backends(te["clear"])
        for cid, fn in PREDICATES.items():
            if cid.startswith("K") and engine != "native":
                continue  # CLEAR measures the native engine's components
            try:
                verdict, evidence = fn(te, cfg)
            except (KeyError, IndexError, ValueError) as e:  # a table lacks what the predicate needs
                verdict, evidence = NOT_TESTABLE, f"data insufficient ({type(e).__name__}: {e})"
            if len(engines) > 1 and cid in COMPARED:
                evidence = f"{evidence}. {engine_comparison(cid, t, engines)}".strip()
            rows.append({"id": cid, "claim": CLAIMS[cid], "engine": engine, "verdict": verdict,
                         "evidence": evidence, "backend": clear_backend if cid.startswith("K") else backend})
    return pd.DataFrame(rows)
