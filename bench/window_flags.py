"""How many windows a flag leaves out, per phase, and how far the counter and the power readings' trapezoid
differ, from the traces alone (nothing runs on a GPU).

    python bench/window_flags.py reference-data/h200-vllm/traces --flag counter_trapz_mismatch \
        --out bench/h200-2026-12-02f/window-flags-vllm-campaign.json

Per phase: windows, the share carrying ``--flag``, the 5/50/95 % quantiles of (trapezoid - counter) /
counter; the cells (engine, arch, batch, context) whose windows of a phase all carry the flag, so that the
analysis has no estimate of that phase there; and for the flagged window with the widest spread of instant
power readings, its trace and the readings' range.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd


def windows_of(trace: Path) -> pd.DataFrame:
    """A trace's windows with their mismatch and the range of the instant power readings inside each."""
    w = pd.read_parquet(trace / "windows.parquet")
    s = pd.read_parquet(trace / "samples.parquet", columns=["t_s", "power_instant_w"])
    w["mismatch"] = (w["energy_trapz_j"] - w["energy_j"]) / w["energy_j"]
    inside = [s["power_instant_w"][(s["t_s"] >= a) & (s["t_s"] <= b)] for a, b in zip(w["start_s"], w["end_s"],
                                                                                      strict=True)]
    w["power_min_w"] = [float(x.min()) if len(x) else np.nan for x in inside]
    w["power_max_w"] = [float(x.max()) if len(x) else np.nan for x in inside]
    w["trace"] = str(trace)
    return w


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("traces", nargs="+", help="traces folders (engine~E/arch~A/... below each)")
    p.add_argument("--flag", default="counter_trapz_mismatch")
    p.add_argument("--out", help="write the figures as JSON here")
    a = p.parse_args()
    traces = [s.parent for folder in a.traces for s in sorted(Path(folder).rglob("windows.parquet"))]
    if not traces:
        raise SystemExit(f"no trace with windows under {a.traces}")
    w = pd.concat([windows_of(t) for t in traces], ignore_index=True)
    w["flagged"] = w["flags"].fillna("").astype(str).str.split(",").map(lambda f: a.flag in f)
    phases = {}
    for phase, g in w.groupby("phase"):
        finite = g["mismatch"][np.isfinite(g["mismatch"])]
        q = finite.quantile([0.05, 0.5, 0.95]) if len(finite) else pd.Series(dtype=float)
        all_flagged = g.groupby("trace")["flagged"].all()
        wide = g[g["flagged"]].assign(spread=lambda x: x["power_max_w"] - x["power_min_w"])
        widest = wide.loc[wide["spread"].idxmax()] if len(wide) and wide["spread"].notna().any() else None
        phases[str(phase)] = {
            "windows": len(g), "flagged_share": round(float(g["flagged"].mean()), 3),
            "mismatch_quantiles": {f"{k:.2f}": round(float(v), 4) for k, v in q.items()},
            "traces_with_every_window_flagged": sorted(all_flagged[all_flagged].index),
            **({"widest_flagged_window": {"trace": widest["trace"], "trial": int(widest["trial"]),
                                          "power_instant_w": [round(widest["power_min_w"], 1),
                                                              round(widest["power_max_w"], 1)]}}
               if widest is not None else {})}
        print(f"{phase}: {len(g)} windows, {g['flagged'].mean():.0%} flagged {a.flag}, "
              f"mismatch 5/50/95 %: {', '.join(f'{v:+.1%}' for v in q.values)}; "
              f"every window flagged in {len(phases[str(phase)]['traces_with_every_window_flagged'])} traces")
    if a.out:
        Path(a.out).write_text(json.dumps({"what": f"windows carrying {a.flag}", "sources": a.traces,
                                           "traces": len(traces), "phases": phases}, indent=1) + "\n")


if __name__ == "__main__":
    main()
