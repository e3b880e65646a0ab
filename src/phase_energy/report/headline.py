"""The headline figure: decode energy per token against the power cap and against the SM clock lock.

One colour per architecture (:mod:`phase_energy.report.style`), one row per batch size (the ones nearest
1 and 32, at the context nearest 2048), the run's default-lever points drawn as stars next to the lever
curves: in the power-cap panel at the card's power limit, in the clock panel at the clock the card chose
itself. Drawn from the run's ``phase_energy`` table only: a run without levers (the H200 reference data)
gets its default points alone and a title that says no lever was measured, never curves from elsewhere;
a table holding simulated and measured rows labels each series with its source.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from phase_energy.report.figbase import MissingData, need, pick
from phase_energy.report.style import arch_palette

# lever kind -> (panel name, x label, column giving the default lever's x)
PANELS = {"powercap": ("power cap", "power cap (W)", "power_limit_w"),
          "smclock": ("SM clock lock", "locked SM clock (MHz)", "sm_clock_mhz")}
SIM, MEASURED = "SIMULATED", "measured"


def _best_saving(levers: pd.DataFrame, default: pd.DataFrame, kind: str) -> str:
    """The largest decode saving of one lever kind against the default, with where, in words."""
    base = default.set_index(["arch", "batch"])["j_per_token"]
    lv = levers[levers["lever_kind"] == kind]
    if lv.empty:
        return f"no {PANELS[kind][0]} measured"
    if base.empty:
        return f"{PANELS[kind][0]}s measured without the default to compare"
    best = lv.loc[lv.groupby(["arch", "batch"])["j_per_token"].idxmin()]
    best = best.assign(saving=1 - best["j_per_token"].to_numpy()
                       / base.reindex(pd.MultiIndex.from_frame(best[["arch", "batch"]])).to_numpy())
    best = best.dropna(subset=["saving"])
    if best.empty:
        return f"{PANELS[kind][0]}s measured without the default to compare"
    top = best.loc[best["saving"].idxmax()]
    unit = "W" if kind == "powercap" else "MHz"
    if top["saving"] <= 0:
        return f"no {PANELS[kind][0]} lowers it"
    return (f"the best {PANELS[kind][0]} saves up to {100 * top['saving']:.0f} % ({top['arch']}, batch {top['batch']}, "
            f"{top['lever_value']:.0f} {unit})")


def fig00_headline(t: Mapping[str, pd.DataFrame], traces: Path) -> tuple[plt.Figure, str]:
    """Decode J/token against the power cap and the SM clock lock per architecture, the default points next to them."""
    s = need(t["phase_energy"], "decode energy per token at the default lever or under levers")
    d = need(s[(s["phase"] == "decode") & s["lever_kind"].isin(["default", *PANELS])],
             "decode at the default lever, power caps or SM clock locks")
    ctx = pick(d["context"], 2048)
    d = d[d["context"] == ctx]
    batches = sorted({pick(d["batch"], 1), pick(d["batch"], 32)})
    d = d[d["batch"].isin(batches)].assign(source=lambda x: np.where(x["backend"] == "sim", SIM, MEASURED))
    mixed = d["source"].nunique() > 1  # never simulated next to measured without saying which is which
    levers, default = d[d["lever_kind"] != "default"], d[d["lever_kind"] == "default"]
    if levers.empty and default.empty:
        raise MissingData("decode at the default lever, power caps or SM clock locks")
    palette = arch_palette(d["arch"])
    fig = plt.figure(figsize=(11, 3.3 * len(batches) + 1.6), layout="constrained")
    fig._phase_energy_fixed = True  # type: ignore[attr-defined]
    axes = fig.subplots(len(batches), len(PANELS), squeeze=False, sharey="row")
    for i, b in enumerate(batches):
        for j, (kind, (panel, xlabel, default_x)) in enumerate(PANELS.items()):
            ax = axes[i, j]
            lv = levers[(levers["batch"] == b) & (levers["lever_kind"] == kind)]
            for (arch, source), g in lv.groupby(["arch", "source"]):
                g = g.sort_values("lever_value")
                ls = "--" if mixed and source == SIM else "-"
                ax.fill_between(g["lever_value"], g["j_per_token_ci_low"], g["j_per_token_ci_high"],
                                color=palette[arch], alpha=0.15, lw=0)
                ax.plot(g["lever_value"], g["j_per_token"], color=palette[arch], marker="o", ms=4, lw=1.5, ls=ls)
            df = default[(default["batch"] == b)].dropna(subset=[default_x])
            for (arch, source), g in lv.groupby(["arch", "source"]):  # dotted: from the curve to its default
                top, base = g.loc[g["lever_value"].idxmax()], df[(df["arch"] == arch) & (df["source"] == source)]
                if len(base):
                    ax.plot([top["lever_value"], base[default_x].iloc[0]], [top["j_per_token"],
                            base["j_per_token"].iloc[0]], color=palette[arch], ls=":", lw=1)
            for source, g in df.groupby("source"):
                ax.scatter(g[default_x], g["j_per_token"], color=[palette[a] for a in g["arch"]], s=190, zorder=5,
                           marker="X" if mixed and source == SIM else "*", edgecolor="black", linewidth=0.8)
            ax.ticklabel_format(axis="x", useOffset=False)  # clocks as MHz, not as an offset from 1980
            if lv.empty and len(df):  # the default points alone: a window of the lever's units around them
                mid = float(df[default_x].median())
                ax.set_xlim(mid - (100 if kind == "powercap" else 200), mid + (100 if kind == "powercap" else 200))
            none = "" if len(lv) else f" (no {panel} measured)"
            ax.set(title=f"batch {b}: {panel}{none}", xlabel=xlabel if i == len(batches) - 1 else "",
                   ylabel="decode energy (J/token)" if j == 0 else "")
    curve = {"lw": 1.5} if len(levers) else {"lw": 0, "marker": "s", "ms": 8}  # no curves: colour swatches
    handles = [Line2D([], [], color=palette[a], **({"marker": "o"} | curve), label=a) for a in sorted(palette)]
    star = "default lever (x: the power limit / the clock the card chose)"
    handles.append(Line2D([], [], color="0.6", marker="*", ms=13, mec="black", lw=0,
                          label=star + (", measured" if mixed else "")))
    if mixed:
        handles += [Line2D([], [], color="0.6", marker="X", ms=10, mec="black", lw=0,
                           label="default lever, SIMULATED"),
                    Line2D([], [], color="0.4", ls="--", lw=1.5, label="lever curves SIMULATED"),
                    Line2D([], [], color="0.4", ls="-", lw=1.5, label="lever curves measured")]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), frameon=False, fontsize=9)
    if levers.empty:
        lo, hi = default["j_per_token"].min(), default["j_per_token"].max()
        return fig, (f"No lever was measured in this run: decode energy at the default lever only (stars, "
                     f"{lo:.3g}-{hi:.3g} J/token at batch {' and '.join(map(str, batches))}, context {ctx}); "
                     "no lever curves")
    sources = set(levers["source"])
    lead = ("Lever curves SIMULATED (dashed), default points measured: " if sources == {SIM} and mixed else
            "Lever curves partly SIMULATED (dashed): " if mixed else "")
    return fig, (f"{lead}Decode J/token against power cap and SM clock lock at context {ctx}, against the "
                 f"default (stars): {_best_saving(levers, default, 'powercap')}; "
                 f"{_best_saving(levers, default, 'smclock')}")
