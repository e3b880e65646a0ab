"""Random against real-checkpoint weights on the same shapes: power and energy per token per phase, side by side.

Which architectures have the same shapes is read from the ``phase_energy`` table alone
(:func:`shape_groups`): rows of one architecture name belong together whatever their weights, and an
architecture running a checkpoint joins the random-weights architecture of the same paradigm whose name
its own name extends (``qwen3-4b-trained`` -> ``qwen3-4b``, the way ``config/random-vs-trained.yaml`` names
them) or equals its checkpoint folder's name (``checkpoint Qwen3-4B`` -> ``qwen3-4b``). Under a name of its
own a checkpoint's shapes come from its ``config.json`` unchecked (:mod:`phase_energy.model.checkpoint`):
the pairing rests on these names, and the caption says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from phase_energy.report.figbase import MissingData, need, pick

REFERENCE = "random (normal)"  # the weights the others are compared with, where the run has them
METRICS = {"power_mean_w": "mean power (W)", "j_per_token": "energy (J/token)"}
NEEDS = "two kinds of weights on the same shapes (a config like config/random-vs-trained.yaml)"


def shape_groups(pe: pd.DataFrame) -> dict[str, str]:
    """``{arch: the architecture whose shapes it has}``: checkpoint architectures joined to their random preset."""
    labels = pe.groupby("arch")["weights"].agg(lambda w: set(w.astype(str)))
    paradigm = pe.groupby("arch")["paradigm"].first()
    randoms = [a for a, w in labels.items() if any(x.startswith("random") for x in w)]
    out = {}
    for arch, weights in labels.items():
        out[arch] = arch
        if arch in randoms:
            continue
        folders = {w.removeprefix("checkpoint ").strip().lower() for w in weights if w.startswith("checkpoint ")}
        same = [r for r in randoms if paradigm[r] == paradigm[arch] and (arch.startswith(f"{r}-") or r in folders)]
        if same:
            out[arch] = max(same, key=len)  # the most specific preset name: qwen3-4b-transmla before qwen3-4b
    return out


def _pct(change: float) -> str:
    """A relative change as ``+3.1 %`` (a space that a wrapped title keeps with its number)."""
    return f"{100 * change:+.1f}\u00a0%"


def _order(labels: list[str]) -> list[str]:
    """The reference weights first, then other random inits, then checkpoints."""
    return sorted(labels, key=lambda w: (w != REFERENCE, not w.startswith("random"), w))


def fig16_random_vs_trained(t: Mapping[str, pd.DataFrame], traces: Path) -> tuple[plt.Figure, str]:
    """Power and J/token per phase of each kind of weights, bars side by side, per shape group and batch."""
    s = need(t["phase_energy"], NEEDS)
    if "weights" not in s:
        raise MissingData(NEEDS)
    d = s[s["lever"] == "default"].copy()
    d["weights"] = d["weights"].fillna(REFERENCE).astype(str)
    d["shapes"] = d["arch"].map(shape_groups(d)) if len(d) else d["arch"]
    kinds = d.groupby("shapes")["weights"].nunique()
    d = need(d[d["shapes"].isin(kinds[kinds > 1].index)], NEEDS)
    ctx = pick(d["context"], 2048)
    d = d[d["context"] == ctx]
    phases = [p for p in ("prefill", "decode") if p in set(d["phase"])]
    weights = _order(list(d["weights"].unique()))
    colours = dict(zip(weights, sns.color_palette("colorblind", len(weights)), strict=True))
    cells = list(d[["shapes", "batch"]].drop_duplicates().sort_values(["shapes", "batch"]).itertuples(index=False))
    several = len({c.shapes for c in cells}) > 1
    names = [f"{c.shapes}\nbatch {c.batch}" if several else f"batch {c.batch}" for c in cells]
    fig = plt.figure(figsize=(max(9.0, 1.1 * len(cells) * len(weights) * len(phases) + 3), 7.6),
                     layout="constrained")
    fig._phase_energy_fixed = True  # type: ignore[attr-defined]
    axes = fig.subplots(len(METRICS), len(phases), squeeze=False)
    width = 0.8 / len(weights)
    for i, (metric, ylabel) in enumerate(METRICS.items()):
        for j, phase in enumerate(phases):
            ax = axes[i, j]
            rows = d[d["phase"] == phase].set_index(["shapes", "batch", "weights"])
            for k, w in enumerate(weights):
                keys = [(c.shapes, c.batch, w) for c in cells]
                r = rows.reindex(keys)
                y = r[metric].to_numpy(dtype=float)
                err = np.vstack([y - r[f"{metric}_ci_low"].to_numpy(dtype=float),
                                 r[f"{metric}_ci_high"].to_numpy(dtype=float) - y])
                x = np.arange(len(cells)) + (k - (len(weights) - 1) / 2) * width
                ax.bar(x, y, width=width * 0.95, color=colours[w], label=w if i == j == 0 else None,
                       yerr=np.nan_to_num(err), capsize=3, error_kw={"lw": 0.8})
                if k:  # each other kind's difference to the reference, over its bar
                    ref = rows.reindex([(c.shapes, c.batch, weights[0]) for c in cells])[metric].to_numpy(dtype=float)
                    for xi, yi, top, r0 in zip(x, y, y + np.nan_to_num(err[1]), ref, strict=True):
                        if np.isfinite(yi) and np.isfinite(r0) and r0:
                            ax.annotate(_pct(yi / r0 - 1), (xi, top), xytext=(0, 2), textcoords="offset points",
                                        ha="center", va="bottom", fontsize=7)
            ax.set_ylim(0, ax.get_ylim()[1] * 1.08)  # room for the differences over the bars
            ax.set_xticks(np.arange(len(cells)), names if i == len(METRICS) - 1 else [""] * len(cells))
            ax.set(ylabel=ylabel if j == 0 else "", title=f"{phase}: {ylabel.split(' (')[0]}")
    fig.legend(loc="outside lower center", ncol=min(len(weights), 4), frameon=False, fontsize=9,
               title="weights (bars: 95 % interval; over a bar: its difference to the first)", title_fontsize=9)
    return fig, f"Weights on the same shapes at context {ctx}: " + _differences(d, weights)


def _differences(d: pd.DataFrame, weights: list[str]) -> str:
    """Each other kind of weights against the reference, decode power and J/token, median over batches."""
    ref = weights[0]
    phase = "decode" if (d["phase"] == "decode").any() else str(d["phase"].iloc[0])
    p = d[d["phase"] == phase].pivot_table(index=["shapes", "batch"], columns="weights",
                                           values=list(METRICS), aggfunc="first")
    parts = []
    for w in weights[1:]:
        ratio = {m: (p[(m, w)] / p[(m, ref)] - 1).median() for m in METRICS if (m, w) in p and (m, ref) in p}
        if not ratio or all(pd.isna(v) for v in ratio.values()):
            continue
        parts.append(f"{w} vs {ref}: {phase} power {_pct(ratio['power_mean_w'])}, "
                     f"J/token {_pct(ratio['j_per_token'])}")
    return "; ".join(parts) + " (median over batch sizes)" if parts else "no batch size has both kinds"
