"""Every figure, from the result tables (and, for the timeline, one trace); one function per figure.

Long-form tables, one declarative seaborn call per panel, the theme set once, titles that state the
finding, units on every axis, one fixed colour per architecture (:mod:`phase_energy.report.style`). Figures
drawn from simulated traces say SIMULATED in the title and carry a watermark, figures from real traces say
MEASURED with the card and the engine; a figure whose data is missing is drawn as a placeholder naming what it
needs (without watermark: it shows no data).
"""

from __future__ import annotations

import json
import logging
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.layout_engine import ConstrainedLayoutEngine, PlaceHolderLayoutEngine
from matplotlib.lines import Line2D

from phase_energy.analysis.tables import TableError, read_tables
from phase_energy.report.catalog import FIGURES, figure
from phase_energy.report.figbase import MissingData, fixed_jitter, interval_bars, lean_seaborn, sns  # sns: no SciPy
from phase_energy.report.figbase import facet as _facet
from phase_energy.report.figbase import need as _need
from phase_energy.report.figbase import pick as _pick
from phase_energy.report.figbase import pick_point as _pick_point
from phase_energy.report.headline import fig00_headline  # noqa: F401 (drawn through RENDERERS)
from phase_energy.report.policy_figure import fig15_phase_policy  # noqa: F401 (drawn through RENDERERS)
from phase_energy.report.style import LIMIT_COLOUR, Provenance, arch_palette, provenance, set_theme, watermark
from phase_energy.report.weights_figure import fig16_random_vs_trained  # noqa: F401 (drawn through RENDERERS)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- figures
def fig01_power_timeline(t: Mapping[str, pd.DataFrame], traces: Path) -> tuple[plt.Figure, str]:
    """Power and SM clock over one job, phases shaded, the power limit dashed."""
    from phase_energy.measure.layout import job_dirs
    from phase_energy.measure.trace import read_trace

    found = None  # (batch, folder): the first of the largest batch; only the chosen job's tables are read
    for d in job_dirs(traces):
        status, meta = (json.loads((d / f).read_text()) for f in ("status.json", "metadata.json"))
        if status.get("status") == "ok" and meta["lever_requested"] == "default" and \
                (found is None or meta["batch"] > found[0]):
            found = (meta["batch"], d)
    if found is None:
        raise MissingData("one trace at the default lever")
    chosen = read_trace(found[1])
    s, w, m = chosen["samples"], chosen["windows"], chosen["metadata"]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    # a job on several GPUs samples each: one line per GPU, not one through all their samples (nor their mean)
    cards = [g.sort_values("t_s") for _, g in s.groupby("gpu", sort=True)] \
        if "gpu" in s and s["gpu"].nunique() > 1 else [s]
    if len(cards) > 1:
        for i, card in enumerate(cards):
            ax.plot(card["t_s"], card["power_instant_w"], lw=0.6, color="C0",
                    label=None if i else "instant power, each GPU")
    else:
        sns.lineplot(data=s, x="t_s", y="power_instant_w", ax=ax, lw=0.6, color="C0", errorbar=None,
                     label="instant power")
    colors = {"idle": "0.85", "prefill": "C1", "decode": "C2", "fill": "C4"}
    for ph, g in w.groupby("phase"):
        for i, r in enumerate(g.itertuples()):
            ax.axvspan(r.start_s, r.end_s, color=colors.get(str(ph), "0.9"), alpha=0.25,
                       label=str(ph) if i == 0 else None)
    limit = (m.get("lever_enforced") or {}).get("power_limit_w")
    if limit:
        ax.axhline(limit, color=LIMIT_COLOUR, ls="--", lw=1.2, label=f"power limit {limit:.0f} W (red dashed)")
    ax2 = ax.twinx()
    for i, card in enumerate(cards):
        ax2.plot(card["t_s"], card["sm_clock_mhz"], color="0.3", lw=0.7,
                 label=None if i else ("SM clock, each GPU" if len(cards) > 1 else "SM clock") + " (right axis)")
    ax2.set_ylabel("SM clock (MHz)")
    ax2.grid(False)
    ax.set(xlabel="time since job start (s)", ylabel="power (W)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper center", bbox_to_anchor=(0.5, -0.15), fontsize=8, ncol=6, frameon=False)
    dec = w[w["phase"] == "decode"]["power_mean_w"].median()
    pre = w[w["phase"] == "prefill"]["power_mean_w"].median()
    title = (f"{m['arch']} batch {m['batch']} ctx {m['context']}: prefill draws {pre:.0f} W, "
             f"decode {dec:.0f} W")
    return fig, title


def _bounds(d: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``d`` with ``metric``'s interval as ``low`` and ``high`` (its ``_ci_low`` and ``_ci_high``; NaN if none)."""
    return d.assign(low=d.get(f"{metric}_ci_low", np.nan), high=d.get(f"{metric}_ci_high", np.nan))


def _long(d: pd.DataFrame, ids: list[str], metrics: Mapping[str, str]) -> pd.DataFrame:
    """``d`` in long form: one block of rows per metric (``{column: label}``), each in ``d``'s row order.

    Columns: the ``ids``, the metric's ``value``, its interval's ``low`` and ``high``, its label as ``metric``.
    """
    return pd.concat([_bounds(d, m)[[*ids, m, "low", "high"]].rename(columns={m: "value"}).assign(metric=label)
                      for m, label in metrics.items()], ignore_index=True)


def fig02_power_vs_batch(t: Mapping[str, pd.DataFrame], traces: Path) -> tuple[plt.Figure, str]:
    """Mean prefill and decode power against batch size per architecture."""
    s = _need(t["phase_energy"], "prefill and decode at the default lever")
    d = _need(s[s["lever"] == "default"], "the default lever")
    contexts = sorted(d["context"].unique())
    rows = {"row": "context"} if len(contexts) > 1 else {}  # one row of panels per context
    palette = arch_palette(d["arch"])
    g = sns.relplot(data=d, x="batch", y="power_mean_w", hue="arch", style="arch", col="phase", **rows,
                    palette=palette,
                    kind="line", markers=True, height=4 if not rows else 3, aspect=1.2 if not rows else 1.6,
                    errorbar=None, facet_kws={"sharey": True})
    interval_bars(g, _bounds(d, "power_mean_w"), "batch", "arch", palette, rows.get("row"), "phase")
    g.set(xscale="log", xlabel="batch size (sequences)", ylabel="mean power (W)")
    g.set_titles("{row_var} {row_name}, {col_name}" if rows else "{col_name}")
    limit = d["power_limit_w"].dropna().max() if "power_limit_w" in d else None
    for ax in g.axes.flat:
        if limit:
            ax.axhline(limit, color=LIMIT_COLOUR, ls="--", lw=1)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xticks(sorted(d["batch"].unique()), [str(b) for b in sorted(d["batch"].unique())])
    dec = d[d["phase"] == "decode"]["power_mean_w"]
    where = f"context {contexts[0]}" if len(contexts) == 1 else f"contexts {', '.join(map(str, contexts))}"
    title = f"Decode draws {dec.min():.0f}-{dec.max():.0f} W at {where}; red dashed: power limit"
    return _facet(g), title


def fig03_clock_policy(t: Mapping[str, pd.DataFrame], traces: Path) -> tuple[plt.Figure, str]:
    """Energy saving and throughput loss at each locked SM clock."""
    s = _need(t["phase_energy"], "smclock levers")
    d = s[s["phase"] == "decode"]
    base = d[d["lever"] == "default"].set_index(["arch", "batch", "context"])
    locks = _need(d[d["lever_kind"] == "smclock"].copy(), "smclock levers")
    locks = locks.join(base[["j_per_token", "tokens_per_s"]].add_suffix("_def"), on=["arch", "batch", "context"])
    locks = _need(locks.dropna(subset=["j_per_token_def"]), "the default lever next to smclock levers")
    locks["energy saving (%)"] = 100 * (1 - locks["j_per_token"] / locks["j_per_token_def"])
    locks["throughput loss (%)"] = 100 * (1 - locks["tokens_per_s"] / locks["tokens_per_s_def"])
    long = locks.melt(id_vars=["arch", "batch", "lever_value"], value_vars=["energy saving (%)",
                      "throughput loss (%)"], var_name="metric", value_name="percent")
    g = sns.relplot(data=long, x="lever_value", y="percent", hue="batch", style="metric", col="arch",
                    col_wrap=3, kind="line", markers=True, height=3.4, aspect=1.2, palette="viridis",
                    errorbar=("pi", 100))
    g.set(xlabel="locked SM clock (MHz)", ylabel="relative to default (%)")
    g.set_titles("{col_name}")
    best = locks.loc[locks[locks["throughput loss (%)"] <= 1]["energy saving (%)"].idxmax()] \
        if (locks["throughput loss (%)"] <= 1).any() else None
    title = ("Clock locks: decode energy saving vs throughput loss"
             + (f"; best {best['energy saving (%)']:.0f} % at {best['lever_value']:.0f} MHz ({best['arch']})"
                if best is not None else "; no lock keeps the loss under 1 %"))
    return _facet(g), title


def fig04_pareto(t: Mapping[str, pd.DataFrame], traces: Path) -> tuple[plt.Figure, str]:
    """Decode throughput vs energy per token over levers, with frontier probabilities."""
    p = _need(t["pareto"], "levers")
    p = p[p["phase"] == "decode"]
    if p.groupby(["arch", "batch", "context"])["lever"].nunique().max() < 2:
        raise MissingData("two or more levers per point")
    several = p.groupby(["arch", "batch", "context"])["lever"].transform("nunique") >= 2
    bs, ctx = _pick_point(p[several], batch=32, context=2048)  # a point with levers to compare
    d = p[(p["batch"] == bs) & (p["context"] == ctx)].copy()
    d["frontier probability"] = d["frontier_probability"]
    g = sns.relplot(data=d, x="j_per_token", y="tokens_per_s", hue="lever_kind", size="frontier probability",
                    sizes=(20, 160), col="arch", col_wrap=3, height=3.4, aspect=1.1,
                    facet_kws={"sharex": False, "sharey": False})
    g.set_titles("{col_name}")
    for ax, (_, sub) in zip(g.axes.flat, d.groupby("arch"), strict=False):
        f = sub[sub["on_frontier"]].sort_values("j_per_token")
        ax.plot(f["j_per_token"], f["tokens_per_s"], color="0.2", lw=1)
    g.set(xlabel="decode energy (J/token)", ylabel="decode throughput (tokens/s)")
    g.figure.subplots_adjust(hspace=0.45, wspace=0.35)  # own axes per panel: room for their labels
    winners = d[d["on_frontier"]].groupby("lever_kind").size()
    title = (f"Decode Pareto frontiers at batch {bs}, context {ctx}: frontier points by lever kind "
             + ", ".join(f"{k} {v}" for k, v in winners.items()))
    return _facet(g), title


def fig05_roofline(t: Mapping[str, pd.DataFrame], traces: Path) -> tuple[plt.Figure, str]:
    """Decode windows on the measured roofline."""
    w = _need(t["windows"], "decode windows")
    d = _need(w[(w["phase"] == "decode") & (w["lever"] == "default")].copy(), "decode windows at default")
    d["intensity"] = d["flops"] / d["bytes"]
    bw = float(d["bandwidth_bps"].iloc[0])
    peak = float(d["matmul_flops"].iloc[0])
    fig, ax = plt.subplots(figsize=(8, 5))
    x = np.geomspace(max(d["intensity"].min() / 2, 0.1), max(peak / bw * 4, d["intensity"].max() * 2), 200)
    ax.plot(x, np.minimum(bw * x, peak) / 1e12, color="0.2", lw=1.5,
            label=f"ceilings: {bw / 1e12:.2f} TB/s, {peak / 1e12:.0f} TFLOP/s (measured)")
    d["achieved TFLOP/s"] = d["achieved_flops"] / 1e12
    sns.scatterplot(data=d, x="intensity", y="achieved TFLOP/s", hue="arch", size="batch", sizes=(15, 120),
                    ax=ax, alpha=0.7, palette=arch_palette(d["arch"]))
    ax.set(xscale="log", yscale="log", xlabel="arithmetic intensity (FLOP/byte)",
           ylabel="achieved (TFLOP/s)")
    ax.legend(fontsize=7, loc="lower right")
    frac = d.groupby("arch")["floor_fraction"].median()
    title = "Decode sits under the bandwidth roof; median fraction of the floor: " + ", ".join(
        f"{a} {v:.2f}" for a, v in frac.items())
    return fig, title


def fig06_dvfs_classes(t: Mapping[str, pd.DataFrame], traces: Path) -> tuple[plt.Figure, str]:
    """Normalised energy/token and throughput against the locked clock, by class."""
    c = _need(t["dvfs_curves"], "three or more smclock levers")
    if c.groupby(["arch", "batch", "context"])["lever_value"].nunique().max() < 3:
        raise MissingData("three or more smclock levers")
    cls = t["dvfs_classes"]
    d = c.merge(cls[["arch", "batch", "context", "class"]], on=["arch", "batch", "context"], how="left") \
        if len(cls) else c.assign(**{"class": "indeterminate"})
    long = d.melt(id_vars=["arch", "batch", "context", "lever_value", "class"],
                  value_vars=["energy_norm", "throughput_norm"], var_name="metric", value_name="normalised")
    long["metric"] = long["metric"].map({"energy_norm": "energy/token", "throughput_norm": "throughput"})
    long["point"] = long["batch"].astype(str) + "/" + long["context"].astype(str)  # one line per batch and context
    g = sns.relplot(data=long, x="lever_value", y="normalised", hue="class", style="metric", col="arch",
                    col_wrap=3, kind="line", units="point", estimator=None, height=3.4, aspect=1.2, lw=1)
    g.set_titles("{col_name}")
    g.set(xlabel="locked SM clock (MHz)", ylabel="relative to the highest lock")
    # what claim C8 counts: each architecture's most frequent determinate class, then the distinct ones
    det = cls[cls["class"] != "indeterminate"] if len(cls) else cls
    per_arch = det.groupby("arch")["class"].agg(lambda x: x.value_counts().index[0]) if len(det) else pd.Series()
    return _facet(g), (f"DVFS behaviour: {per_arch.nunique()} distinct class(es) among the architectures' most "
                       f"frequent determinate classes (what claim C8 counts; one line per batch and context)")


def fig07_request_energy(t: Mapping[str, pd.DataFrame], traces: Path) -> tuple[plt.Figure, str]:
    """Request energy relative to GQA against output length, crossovers, phase split."""
    r = _need(t["request_energy"], "request energy")
    if "ratio_vs_gqa" not in r:
        raise MissingData("a GQA architecture and another paradigm at the default lever")
    ctx = _pick(r["context"], 2048)
    d = r[(r["context"] == ctx)]
    drawn_at = d.dropna(subset=["ratio_vs_gqa"]).groupby("batch")["arch"].unique()  # batch -> archs drawn
    batches = sorted(b for b, archs in drawn_at.items() if len(archs) > 1)  # GQA alone: nothing to compare
    if not batches:
        raise MissingData("a GQA architecture and another paradigm at the same batch size")
    ncol = min(len(batches), 3)
    nrow = -(-len(batches) // ncol)
    fig = plt.figure(figsize=(4.3 * ncol + 5.2, 3.4 * nrow + 1.6), layout="constrained")
    fig._phase_energy_fixed = True  # type: ignore[attr-defined]
    grid = fig.add_gridspec(nrow, ncol + 1, width_ratios=[1] * ncol + [1.25])
    x = t["crossovers"]
    xs = x.iloc[0:0]
    if len(x):
        xs = x[(x["kind"] == "output_length") & (x["at"] == ctx)].dropna(subset=["crossover"])
    palette = arch_palette(d["arch"])
    first = None
    for k, b in enumerate(batches):
        ax = fig.add_subplot(grid[k // ncol, k % ncol], sharey=first)
        first = first or ax
        sns.lineplot(data=d[d["batch"] == b], x="output_length", y="ratio_vs_gqa", hue="arch", ax=ax,
                     palette=palette, legend=False, errorbar=None)
        # each ratio's 95 % interval (request_energy), a band in its architecture's colour
        for arch, e in d[(d["batch"] == b) & d["ratio_ci_low"].notna()].sort_values("output_length").groupby(
                "arch", sort=False):
            ax.fill_between(e["output_length"].to_numpy(dtype=float), e["ratio_ci_low"].to_numpy(dtype=float),
                            e["ratio_ci_high"].to_numpy(dtype=float), color=palette[arch], alpha=0.15, lw=0)
        ax.axhline(1.0, color="0.3", lw=1)
        for r_ in xs[xs["batch"] == b].itertuples() if "batch" in xs else ():
            ax.axvline(r_.crossover, color=palette.get(r_.arch, "0.5"), ls=":", lw=1)
            if pd.notna(r_.ci_low):
                ax.axvspan(r_.ci_low, r_.ci_high, color="0.5", alpha=0.08)
        ax.set(xscale="log", title=f"batch {b}", xlabel="output length (tokens)" if k // ncol == nrow - 1 else "",
               ylabel="request energy / GQA's" if k % ncol == 0 else "")
    # one legend for every architecture any panel draws (a batch can lack one: its prefill windows all flagged)
    shown = sorted({a for b in batches for a in drawn_at[b]})
    fig.legend([Line2D([], [], color=palette[a]) for a in shown], shown, loc="outside lower center",
               ncol=min(len(shown), 6), frameon=False, fontsize=9)
    split_ax = fig.add_subplot(grid[:, ncol])
    axes = [split_ax, split_ax]
    bs = _pick(d["batch"], 32)
    n = max(d["output_length"][d["in_output_grid"]]) if d["in_output_grid"].any() else d["output_length"].max()
    split = d[(d["batch"] == bs) & (d["output_length"] == n)].melt(
        id_vars=["arch"], value_vars=["prefill_j", "decode_j"], var_name="phase", value_name="energy (J)")
    split["phase"] = split["phase"].str.replace("_j", "")
    sns.barplot(data=split, x="arch", y="energy (J)", hue="phase", ax=axes[1],
                palette={"prefill": "C1", "decode": "C2"}, errorbar=None)
    axes[1].set(xlabel="", ylabel="energy per request (J)", title=f"split at batch {bs}, {n} output tokens",
                ylim=(0, 1.25 * split["energy (J)"].max()))  # room for the legend above the bars
    sns.move_legend(axes[1], "upper right", ncol=2, title=None)
    axes[1].tick_params(axis="x", rotation=90)
    nx = int(x["crossover"].notna().sum()) if len(x) else 0
    missing = [f"{a} at batch {b}" for b in batches for a in shown if a not in set(drawn_at[b])]
    absent = (f"; no estimate for {', '.join(missing)} (not measured, or every window of a phase flagged)"
              if missing else "")
    return fig, (f"Request energy vs GQA: crossovers over output length at context {ctx}: {len(xs)} "
                 f"(dotted, with 95 % CI); {nx} over output length and context in all (crossovers table)"
                 f"{absent}")


def fig08_clocks_throttle(t: Mapping[str, pd.DataFrame], traces: Path) -> tuple[plt.Figure, str]:
    """Requested vs achieved clocks and time under the SW power-cap reason."""
    s = _need(t["phase_energy"], "decode windows")
    d = s.copy()
    d["requested clock (MHz)"] = np.where(d["lever_kind"] == "smclock", d["lever_value"], np.nan)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    locks = d.dropna(subset=["requested clock (MHz)"])
    if len(locks):
        sns.scatterplot(data=locks, x="requested clock (MHz)", y="sm_clock_mhz", hue="arch", style="phase",
                        ax=axes[0], palette=arch_palette(locks["arch"]))
        lim = [locks["requested clock (MHz)"].min() - 50, locks["requested clock (MHz)"].max() + 50]
        axes[0].plot(lim, lim, color="0.3", lw=1, ls="--")
        axes[0].set(ylabel="achieved SM clock (MHz)", title="requested vs achieved (dashed: equal)")
    else:
        sns.boxplot(data=d, x="phase", y="sm_clock_mhz", hue="arch", ax=axes[0], palette=arch_palette(d["arch"]))
        axes[0].set(ylabel="achieved SM clock (MHz)", title="achieved clock at the default (no locks in data)")
    d["time under SW power cap (%)"] = 100 * d["sw_power_cap_share"]
    sns.barplot(data=d, x="lever_kind", y="time under SW power cap (%)", hue="phase", ax=axes[1],
                errorbar=("pi", 100))
    axes[1].set(xlabel="lever", title="share of window time with the SW power-cap reason")
    share = d.groupby("phase")["sw_power_cap_share"].mean()
    return fig, ("Throttling: SW power cap active " + ", ".join(f"{k} {v:.0%}" for k, v in share.items())
                 + " of the time (mean)")


def fig09_cap_sweep(t: Mapping[str, pd.DataFrame], traces: Path) -> tuple[plt.Figure, str]:
    """Power, throughput and energy against the power cap, per phase."""
    s = _need(t["phase_energy"], "powercap levers")
    d = s[s["lever_kind"].isin(["powercap", "default"])].copy()
    if not (d["lever_kind"] == "powercap").any():
        raise MissingData("powercap levers")
    d["cap (W)"] = np.where(d["lever_kind"] == "default", d["power_limit_w"], d["lever_value"])
    bs, ctx = _pick_point(d[d["lever_kind"] == "powercap"], batch=32, context=2048)  # a point with caps
    d = d[(d["batch"] == bs) & (d["context"] == ctx)]
    # one estimate per cap: the default stands for the card's limit only where no cap lever was measured there
    # (else a line would draw the mean of two levers' rows)
    d = d.sort_values("lever_kind", key=lambda k: k.eq("default"), kind="stable").drop_duplicates(
        [c for c in ("engine", "arch", "phase", "cap (W)") if c in d])
    long = _long(d, ["arch", "phase", "cap (W)"], {"power_mean_w": "mean power (W)",
                                                    "tokens_per_s": "throughput (tokens/s)",
                                                    "j_per_token": "energy (J/token)"})
    palette = arch_palette(long["arch"])
    g = sns.relplot(data=long, x="cap (W)", y="value", hue="arch", style="phase", row="metric", col="phase",
                    palette=palette,
                    kind="line", markers=True, height=2.8, aspect=1.6, errorbar=None, facet_kws={"sharey": False})
    interval_bars(g, long, "cap (W)", "arch", palette, "metric", "phase")
    g.set_titles("{row_name} | {col_name}")
    g.set(xlabel="power cap (W)", ylabel="")
    dec = d[d["phase"] == "decode"]
    span = dec.groupby("arch")["tokens_per_s"].agg(lambda x: x.max() / x.min() - 1).max() if len(dec) else 0
    return _facet(g), f"Cap sweep at batch {bs}, context {ctx}: decode throughput varies by up to {span:.0%}"


REASON_CHARS = 90  # a claim's reason on the figure; the whole evidence is in claims.csv and the report


def short_reason(evidence: str, limit: int = REASON_CHARS) -> str:
    """A reason of at most ``limit`` characters from a claim's evidence (for tables without a ``reason``).

    The evidence's opening "Criterion: ..." sentence is left out where a finding follows it; the rest is
    cut at a word boundary with an ellipsis.
    """
    text = " ".join(str(evidence).split())
    if text.startswith("Criterion:"):
        _, sep, rest = text.partition(". ")
        if sep and rest:
            text = rest
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    if " " in cut:
        cut = cut[:cut.rindex(" ")]
    return cut.rstrip(" ,;:") + "\u2026"


def fig10_claims(t: Mapping[str, pd.DataFrame], traces: Path) -> tuple[plt.Figure, str]:
    """The claims check on one page: each claim, its verdict and a short reason (the evidence is in claims.csv)."""
    c = _need(t["claims"], "results/claims.csv").copy()
    if "reason" in c and c["reason"].notna().any():
        c["why"] = c["reason"].fillna("").astype(str).map(lambda r: short_reason(r, REASON_CHARS + 10))
    else:
        c["why"] = c["evidence"].fillna("").map(short_reason)
    several = "engine" in c and c["engine"].nunique() > 1
    cols = [("id", 0.0, 4), *([("engine", 0.045, 8)] if several else []),
            ("claim", 0.045 + 0.075 * several, 52), ("verdict", 0.40 + 0.06 * several, 18),
            ("reason", 0.56 + 0.06 * several, 64)]
    rows = []
    for r in c.itertuples():
        cells = {"id": str(r.id), "engine": str(getattr(r, "engine", "")), "claim": textwrap.fill(str(r.claim), 52),
                 "verdict": textwrap.fill(str(r.verdict), 18), "reason": textwrap.fill(str(r.why), 64 - 8 * several)}
        rows.append((cells, max(v.count("\n") + 1 for v in cells.values()), str(r.verdict)))
    line_in = 0.155  # inches per text line at 8 pt, with leading
    total = sum(n for _, n, _ in rows) + len(rows) * 0.6 + 1.6
    fig = plt.figure(figsize=(13, 0.8 + total * line_in))
    ax = fig.add_axes((0.01, 0.0, 0.98, 1 - 0.8 / fig.get_figheight()))  # the top 0.8 in: the title
    ax.set_axis_off()
    ax.set(xlim=(0, 1), ylim=(total, 0))
    fig._phase_energy_fixed = True  # type: ignore[attr-defined]
    colours = {"reproduced": "#c7e9c0", "not reproduced": "#fcbba1", "not testable": "#e0e0e0"}
    for name, x, _ in cols:
        ax.text(x + 0.005, 0.8, name, weight="bold", fontsize=9, va="center")
    y = 1.6
    for i, (cells, n, verdict) in enumerate(rows):
        h = n + 0.6
        if i % 2:
            ax.axhspan(y, y + h, color="0.96", lw=0)
        base = verdict.replace(" (simulated)", "")
        vx = next(x for name, x, _ in cols if name == "verdict")
        ax.add_patch(plt.Rectangle((vx, y + 0.1), 0.15, h - 0.2, color=colours.get(base, "white"), lw=0))
        for name, x, _ in cols:
            ax.text(x + 0.005, y + 0.3, cells[name], fontsize=8, va="top", linespacing=1.25)
        y += h
    counts = c["verdict"].value_counts()
    return fig, "Claims check: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + \
        " (the whole evidence: results/claims.csv)"


def fig11_sweetspot(t: Mapping[str, pd.DataFrame], traces: Path) -> tuple[plt.Figure, str]:
    """Heatmap of output tokens per joule over input x output, per architecture, with the model's contours."""
    from phase_energy.analysis.sweetspot import predict, terms_for

    c = _need(t["sweetspot_cells"], "SweetSpot cells")
    f = _need(t["sweetspot_fit"], "a SweetSpot fit")
    bs = _pick(f["batch"], 1)
    archs = sorted(f[f["batch"] == bs]["arch"].unique())
    fig, axes = plt.subplots(1, len(archs), figsize=(4.6 * len(archs) + 1, 4.4), squeeze=False)
    for ax, arch in zip(axes[0], archs, strict=True):
        g = c[(c["arch"] == arch) & (c["batch"] == bs)]
        grid = g.pivot_table(index="input", columns="output", values="tokens_per_j").sort_index(ascending=False)
        sns.heatmap(grid, ax=ax, cmap="viridis", annot=grid.shape[0] * grid.shape[1] <= 49, fmt=".2f",
                    cbar_kws={"label": "output tokens / J"}, annot_kws={"fontsize": 7})
        fr = f[(f["arch"] == arch) & (f["batch"] == bs)].iloc[0]
        terms = terms_for(arch)
        coef = np.array([fr[k] for k in terms])
        ins, outs = grid.index.to_numpy()[::-1], grid.columns.to_numpy()
        # the model on a fine grid, placed in the heatmap's cell coordinates (log-length interpolation)
        fi, fo = np.geomspace(ins[0], ins[-1], 60), np.geomspace(outs[0], outs[-1], 60)
        ii, oo = np.meshgrid(fi, fo, indexing="ij")
        eff = oo / predict(coef, ii.ravel(), oo.ravel(), terms).reshape(ii.shape)
        x = np.interp(np.log(fo), np.log(outs), np.arange(len(outs))) + 0.5
        y = len(ins) - 0.5 - np.interp(np.log(fi), np.log(ins), np.arange(len(ins)))
        cs = ax.contour(x, y, eff, levels=5, colors="white", linewidths=0.8)
        if not grid.shape[0] * grid.shape[1] <= 49:  # annotated cells give the numbers; labels would cover them
            ax.clabel(cs, fontsize=6, fmt="%.2f")
        ax.set(title=f"{arch}: model MAPE {fr['mape_heldout_pct']:.1f} % held out", xlabel="output tokens",
               ylabel="input tokens")
    best = f[f["batch"] == bs].sort_values("peak_tokens_per_j").iloc[-1]
    return fig, (f"Tokens per joule over input x output (batch {bs}; contours: the fitted model); best: "
                 f"{best['arch']} at input {best['peak_input']}, output {best['peak_output']}")


def fig12_sweetspot_residuals(t: Mapping[str, pd.DataFrame], traces: Path) -> tuple[plt.Figure, str]:
    """Residuals of the SweetSpot model per cell, held-out cells marked."""
    c = _need(t["sweetspot_cells"], "SweetSpot cells")
    if "residual_pct" not in c or c["residual_pct"].isna().all():
        raise MissingData("a SweetSpot fit")
    d = c.dropna(subset=["residual_pct"]).assign(cell="held out")
    d.loc[~d["held_out"].astype(bool), "cell"] = "fitted"
    archs = sorted(d["arch"].unique())
    fig = plt.figure(figsize=(max(12.0, 3.2 * len(archs) + 5), 5.2), layout="constrained")
    fig._phase_energy_fixed = True  # type: ignore[attr-defined]
    grid = fig.add_gridspec(1, len(archs) + 1, width_ratios=[1] * len(archs) + [max(1.4, 0.5 * len(archs))])
    first = None
    for k, arch in enumerate(archs):  # one panel per architecture, batch on x: few ticks each
        ax = fig.add_subplot(grid[0, k], sharey=first)
        first = first or ax
        with fixed_jitter(k):  # the same jitter in every run
            sns.stripplot(data=d[d["arch"] == arch], x="batch", y="residual_pct", hue="cell", dodge=True, ax=ax,
                          palette={"fitted": "0.55", "held out": "C3"}, hue_order=["fitted", "held out"],
                          legend=k == 0)
        ax.axhline(0, color="0.3", lw=1)
        ax.set(xlabel="batch size", ylabel="model - measured (%)" if k == 0 else "", title=arch)
        if k:
            ax.tick_params(labelleft=False)
        else:
            sns.move_legend(ax, "best", title=None, fontsize=8)
    ax2 = fig.add_subplot(grid[0, len(archs)])
    sns.scatterplot(data=d, x="energy_j", y="predicted_j", hue="arch", style="cell", ax=ax2,
                    palette=arch_palette(d["arch"]))
    lim = [d[["energy_j", "predicted_j"]].min().min(), d[["energy_j", "predicted_j"]].max().max()]
    ax2.plot(lim, lim, color="0.3", lw=1)
    ax2.set(xscale="log", yscale="log", xlabel="measured request energy (J)", ylabel="model (J)",
            title="model against measurement")
    sns.move_legend(ax2, "upper left", bbox_to_anchor=(1.02, 1), title=None, fontsize=8, frameon=False)
    held = d[d["cell"] == "held out"]
    m = float((held["residual_pct"].abs()).mean()) if len(held) else float("nan")
    return fig, f"SweetSpot model residuals: held-out MAPE {m:.2f} % over {len(held)} cells"


def fig13_clear(t: Mapping[str, pd.DataFrame], traces: Path) -> tuple[plt.Figure, str]:
    """Stacked component energy per token against the whole model, and energy per FLOP per component."""
    from phase_energy.model.costmodel import COMPONENTS, MODEL

    c = _need(t["clear_components"], "CLEAR component tables")
    cov = t["clear_coverage"]
    c = c.assign(tokens=c["sequences"] * np.where(c["phase"] == "prefill", c["context"], 1),
                 label=c["arch"] + " b" + c["batch"].astype(str))
    c["mj_per_token"] = c["scaled_j"] / c["tokens"] * 1e3
    phases = [p for p in ("prefill", "decode") if p in set(c["phase"])]
    batches = sorted(c["batch"].unique())
    archs = sorted(c["arch"].unique())
    comps = [k for k in COMPONENTS if k in set(c["component"])]
    colours = dict(zip(comps, sns.color_palette("colorblind", len(comps)), strict=True))
    fig, axes = plt.subplots(len(batches) + 1, len(phases), figsize=(6.5 * len(phases), 3.6 * (len(batches) + 1)),
                             squeeze=False)
    x = np.arange(len(archs))
    for j, phase in enumerate(phases):
        for i, bs in enumerate(batches):
            ax = axes[i, j]
            d = c[(c["phase"] == phase) & (c["batch"] == bs)]
            bottom = np.zeros(len(archs))
            for comp in comps:
                v = d[d["component"] == comp].set_index("arch").reindex(archs)["mj_per_token"].fillna(0).to_numpy()
                ax.bar(x, v, bottom=bottom, color=colours[comp], label=comp, width=0.65)
                bottom += v
            whole = d[d["component"] == MODEL].set_index("arch").reindex(archs)["mj_per_token"].to_numpy()
            ax.scatter(x, whole, marker="_", s=1100, color="black", linewidths=2.5, label="whole model", zorder=5)
            ax.set_xticks(x, archs, fontsize=8)
            ax.set(ylabel="energy per token (mJ)", title=f"{phase}, batch {bs}: components x count")
            if i == 0 and j == 0:  # room above the bars for the legend
                ax.set_ylim(0, np.nanmax(np.r_[bottom, whole]) * 1.45)
                ax.legend(fontsize=7, loc="upper left", ncol=4, markerscale=0.3)
        ax2 = axes[-1, j]
        e = c[(c["phase"] == phase) & c["component"].isin(comps) & c["j_per_flop"].notna()]
        # one row per component and bar (a CLEAR point has one context): no interval of seaborn's over rows
        sns.barplot(e.assign(pj_per_flop=e["j_per_flop"] * 1e12), x="component", y="pj_per_flop", hue="label",
                    order=[k for k in comps if k in set(e["component"])], ax=ax2, palette="colorblind",
                    errorbar=None)
        ax2.set(yscale="log", ylabel="energy per FLOP (pJ)", xlabel="", title=f"{phase}: energy per FLOP")
        ax2.legend(fontsize=7, title=None, ncol=2)
    title = "CLEAR: components in isolation vs the whole model (black marks)"
    if len(cov):
        low = cov.sort_values("coverage").iloc[0]
        title += (f"; coverage {cov['coverage'].min():.0%}-{cov['coverage'].max():.0%}, lowest {low['arch']} "
                  f"b{low['batch']} {low['phase']}")
    return fig, title


def fig14_engines(t: Mapping[str, pd.DataFrame], traces: Path) -> tuple[plt.Figure, str]:
    """Decode power and energy per token of each engine, side by side per paradigm, at the default lever."""
    s = _need(t["phase_energy"], "two engines")
    if "engine" not in s or s["engine"].nunique() < 2:
        raise MissingData("two engines")
    d = s[(s["phase"] == "decode") & (s["lever"] == "default")].copy()
    ctx = _pick(d["context"], 2048)
    d = d[d["context"] == ctx]
    d["model"] = d["arch"].str.replace(r" \(.*\)$", "", regex=True)  # engine-labelled arch back to the preset
    long = _long(d, ["engine", "model", "paradigm", "batch"], {"power_mean_w": "decode power (W)",
                                                                "j_per_token": "decode energy (J/token, log)"})
    engines_drawn = list(long["engine"].dropna().unique())  # seaborn's hue order: as the rows hold them
    palette = dict(zip(engines_drawn, sns.color_palette(n_colors=len(engines_drawn)), strict=True))
    g = sns.relplot(data=long, x="batch", y="value", hue="engine", style="model", row="metric", col="paradigm",
                    palette=palette,
                    kind="line", markers=True, height=3.0, aspect=1.15, errorbar=None, facet_kws={"sharey": "row"})
    interval_bars(g, long, "batch", "engine", palette, "metric", "paradigm")
    g.set(xscale="log")
    batches = sorted(d["batch"].unique())
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")  # 0.2, not 2 x 10^-1
    # between powers of ten only 2 x and 5 x are labelled: 0.2, 0.5, 2, 5 (all nine would run together)
    sparse = matplotlib.ticker.FuncFormatter(
        lambda v, _: f"{v:g}" if v > 0 and round(v / 10 ** np.floor(np.log10(v)), 6) in (2.0, 5.0) else "")
    metrics, paradigms = list(g.row_names), list(g.col_names)
    for (metric, paradigm), ax in g.axes_dict.items():
        # the paradigm above each column, the metric beside each row: titles short enough not to run together
        ax.set_title(str(paradigm) if metric == metrics[0] else "")
        ax.set_ylabel(str(metric) if paradigm == paradigms[0] else "")
        ax.set_xlabel("batch size (sequences)")
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())  # the batches measured, and nothing between
        ax.set_xticks(batches, [str(b) for b in batches])
        if metric.startswith("decode energy"):  # J/token falls ~30x from batch 1 to 128: log keeps both ends apart
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(sparse)
    piv = d.pivot_table(index=["model", "batch"], columns="engine", values="power_mean_w")
    engines = sorted(d["engine"].unique())
    span = ", ".join(f"{e} {p.min():.0f}-{p.max():.0f} W"
                     for e, p in ((e, d[d["engine"] == e]["power_mean_w"]) for e in engines))
    ratio = (piv[engines[1]] / piv[engines[0]]).median() if len(engines) > 1 and len(piv.dropna()) else float("nan")
    return _facet(g), (f"Decode at context {ctx} by engine: {span}; median {engines[1]}/{engines[0]} power ratio "
                       f"{ratio:.2f} over {len(piv.dropna())} shared points")


RENDERERS: dict[str, Callable[[Mapping[str, pd.DataFrame], Path], tuple[plt.Figure, str]]] = {
    name: globals()[name] for name in FIGURES  # fig00, fig15 and fig16 come from their own modules (imported above)
}


# ----------------------------------------------------------------------------- frame
def placeholder(name: str, needs: str, prov: Provenance) -> plt.Figure:
    """A clear stand-in for a figure whose data is missing: no watermark, the run's kind said in words."""
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.axis("off")
    ax.text(0.5, 0.62, f"{name}: no data to draw", ha="center", va="center", fontsize=14, weight="bold")
    needs = textwrap.fill(f"This figure needs {needs}.", 90, break_on_hyphens=False)  # a path stays whole
    ax.text(0.5, 0.3, f"{needs}\nAdd it to the grid (config/README.md) and rerun.\n(This run: {prov.mark}.)",
            ha="center", va="center", fontsize=10)
    return fig


def label_engines(t: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """With several engines, name each model with its engine (``qwen3-4b (vllm)``) in every table that has them.

    Every figure then draws each engine's points as their own series; with one engine nothing changes.
    """
    s = t["phase_energy"]
    if not len(s) or "engine" not in s or s["engine"].nunique() < 2:
        return t
    out = dict(t)
    for k, df in t.items():
        if len(df) and "engine" in df and "arch" in df and k != "claims":
            df = df.copy()
            df["arch"] = df["arch"] + " (" + df["engine"].astype(str) + ")"
            if "reference" in df:
                df["reference"] = df["reference"] + " (" + df["engine"].astype(str) + ")"
            out[k] = df
    return out


def trace_gpus(traces: Path, limit: int = 64) -> list[str]:
    """Names of the cards in the first ``limit`` measured traces (for tables without a ``gpu_name`` column)."""
    import json

    names: set[str] = set()
    for i, f in enumerate(Path(traces).glob("**/metadata.json")):
        if i >= limit:
            break
        try:
            meta = json.loads(f.read_text())
            if meta.get("status", "ok") != "ok":  # a skipped point names no card
                continue
            gpu = meta.get("gpu") or {}
        except (OSError, ValueError):
            continue
        if isinstance(gpu, dict) and gpu.get("name"):
            names.add(str(gpu["name"]))
    return sorted(names)


def draw(name: str, t: Mapping[str, pd.DataFrame], traces: Path) -> plt.Figure:
    """One figure from its tables (read, engines labelled), with its title and provenance mark, laid out."""
    spec = figure(name)
    set_theme()
    has_gpu_name = any(len(df) and "gpu_name" in df for df in t.values())
    prov = provenance(t, () if has_gpu_name else trace_gpus(traces))
    try:
        with lean_seaborn():
            fig, title = RENDERERS[name](t, traces)
    except MissingData as e:
        log.warning("%s: data missing (%s), drawing a placeholder", name, e)
        fig = placeholder(name, spec.needs, prov)
        fig.tight_layout()
        return fig
    if prov.simulated:
        watermark(fig)
    title = f"{prov.mark}: {title}"
    fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 9.5)))
    if getattr(fig, "_phase_energy_fixed", False):  # laid out by hand, room left for the title
        pass
    elif getattr(fig, "_phase_energy_facet", False):  # seaborn laid the grid out with its legend outside
        lines = fig._suptitle.get_text().count("\n") + 1  # type: ignore[attr-defined]
        fig.subplots_adjust(top=1 - (0.6 + 0.25 * lines) / fig.get_figheight())
    else:
        fig.tight_layout()
    return fig


def render(name: str, tables: Mapping[str, Path], out: Path, cfg: Mapping[str, Any], traces: Path | None = None
           ) -> None:
    """Draw one figure from its tables (``{name: path}``) to ``out``.png and ``out``.svg.

    A figure whose tables hold too little to draw becomes a placeholder that says what it needs; a table
    that is missing or damaged is an error naming it.
    """
    spec = figure(name)
    missing = [n for n in spec.tables if n not in tables]
    if missing:
        raise TableError(f"figure {name}: no path given for the tables {missing}; it draws {list(spec.tables)}")
    t = label_engines(read_tables({n: tables[n] for n in spec.tables}))
    fig = draw(name, t, Path(traces or cfg["traces"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    engine = fig.get_layout_engine()
    if isinstance(engine, ConstrainedLayoutEngine):
        # laid out once here, as savefig would lay it out for the PNG (at its resolution), for both files (the SVG
        # takes the PNG's layout, as a tight layout's): savefig would lay it out for each, drawing it once more to do so
        dpi = fig.dpi
        if plt.rcParams["savefig.dpi"] != "figure":
            fig.dpi = plt.rcParams["savefig.dpi"]
        try:
            engine.execute(fig)
        finally:
            fig.dpi = dpi
    if isinstance(engine, (PlaceHolderLayoutEngine, ConstrainedLayoutEngine)):
        # laid out once already (tight_layout leaves a placeholder engine behind, which does nothing): without an
        # engine, each savefig draws the figure once instead of twice
        with plt.rc_context({"figure.autolayout": False, "figure.constrained_layout.use": False}):
            fig.set_layout_engine(None)  # None under these settings: no engine at all ("none" keeps a placeholder)
    fig.savefig(out.with_suffix(".png"))
    fig.savefig(out.with_suffix(".svg"))
    plt.close(fig)
