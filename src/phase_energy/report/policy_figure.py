"""fig15: the phase policy's saving per request against the default and the best static lever, per paradigm.

The saving against the best static lever is drawn with its 95 % interval as a band.

Drawn from ``phase_policy.csv`` (:mod:`phase_energy.analysis.phase_policy`) at the batch, context and output
length nearest 32, 2048 and 512; docs/phase-policy.md says how to read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from phase_energy.report.figbase import facet as _facet
from phase_energy.report.figbase import need as _need
from phase_energy.report.figbase import pick_point as _pick_point
from phase_energy.report.style import arch_palette


def fig15_phase_policy(t: Mapping[str, pd.DataFrame], traces: Path) -> tuple[plt.Figure, str]:
    """The phase policy's saving against the default and the best static lever over the mix share, per paradigm."""
    p = _need(t["phase_policy"], "two or more static levers per point (the phase policy table)")
    bs, ctx, n = _pick_point(p, batch=32, context=2048, output_length=512)
    d = p[(p["batch"] == bs) & (p["context"] == ctx) & (p["output_length"] == n)].sort_values("mix_share")
    long = d.melt(id_vars=["arch", "paradigm", "mix_share"], value_vars=["saving_vs_default", "saving_vs_static"],
                  var_name="against", value_name="saving (%)")
    long["saving (%)"] *= 100
    long["against"] = long["against"].map({"saving_vs_default": "the default", "saving_vs_static": "best static lever"})
    palette = arch_palette(long["arch"])
    n_par = long["paradigm"].nunique()
    g = sns.relplot(data=long, x="mix_share", y="saving (%)", hue="arch", style="against", col="paradigm",
                    col_wrap=2 if n_par == 4 else min(3, n_par), kind="line", markers=True, height=3.4, aspect=1.3,
                    palette=palette, errorbar=None, facet_kws={"sharey": True})
    g.set(xlabel="mix share (steps carrying prefill tokens)", ylabel="saving per request (%)")
    g.set_titles("{col_name}")
    stops = {}
    top = float(d["mix_share"].max())
    for (paradigm, arch), sub in d.groupby(["paradigm", "arch"]):
        pays = sub["pays"].astype(bool).to_numpy()
        if not pays.any():
            continue
        after = np.flatnonzero(~pays[np.argmax(pays):])  # the first share, past the first that pays, that does not
        stop = float(sub["mix_share"].to_numpy()[np.argmax(pays) + after[0]]) if len(after) else None
        if stop is not None and stop < top:  # at the largest share the pair is one lever by definition
            stops[arch] = stop
            g.axes_dict[paradigm].axvline(stop, color=palette[arch], ls=":", lw=1.5)
    for ax in g.axes.flat:
        ax.axhline(0, color="0.3", lw=0.8)
    # the saving against the best static lever with its 95 % interval (jobs, then trials: phase_policy.csv)
    banded = "saving_vs_static_lo" in d and d["saving_vs_static_lo"].notna().any()
    if banded:
        for (paradigm, arch), sub in d.groupby(["paradigm", "arch"]):
            g.axes_dict[paradigm].fill_between(sub["mix_share"], 100 * sub["saving_vs_static_lo"],
                                               100 * sub["saving_vs_static_hi"], color=palette[arch], alpha=0.15,
                                               lw=0)
    basis = ", ".join(sorted(set(d["switch_basis"].astype(str))))
    where = "; ".join(f"{a} at {m:g}" for a, m in stops.items()) or f"nowhere below {top:g}"
    if np.allclose(d["saving_vs_default"], d["saving_vs_static"]):
        basis += "; the best static lever within the bound is the default (the lines coincide)"
    band = "; band: 95 % interval against the best static lever" if banded else ""
    return _facet(g), (f"Phase policy at batch {bs}, context {ctx}, {n} output tokens: stops paying (dotted) "
                       f"{where}; switch cost: {basis}{band}")
