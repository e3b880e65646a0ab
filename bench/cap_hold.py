"""How long the SW power-cap state of the cache-filling prefill lasts into decode, from the reference traces.

Each decode trial of the reference campaign prefilled (at the power limit, the cap reason set), ran 0.3 s
of decode lead-in, then opened its first decode window. For every such first window whose second half is
free of the cap reason (the steady decode is not capped), the time from the window's start to the last
sample with the reason set is the part of the firmware's hold that leaked into the window; the hold after
the prefill is that plus the lead-in.

    python bench/cap_hold.py            # prints the distribution, writes bench/cap-hold.json
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "reference-data/h200-default/traces"
LEAD_IN_S = 0.3  # measurement.lead_in_s of the campaign (config/h200-reference.yaml)
SW_POWER_CAP = 0x4


def main() -> None:
    leaks, jobs, first_windows, capped = [], set(), 0, 0
    for status in sorted(TRACES.rglob("status.json")):
        if json.loads(status.read_text())["status"] != "ok":
            continue
        d = status.parent
        s = pd.read_parquet(d / "samples.parquet")
        w = pd.read_parquet(d / "windows.parquet")
        t = s["t_s"].to_numpy()
        cap = (s["clock_reasons"].to_numpy() & SW_POWER_CAP) > 0
        for _, g in w[w["phase"] == "decode"].groupby("trial"):
            first = g.sort_values("start_s").iloc[0]
            first_windows += 1
            inside = (t >= first.start_s) & (t <= first.end_s)
            second_half = (t >= (first.start_s + first.end_s) / 2) & (t <= first.end_s)
            if cap[second_half].mean() > 0.5:
                capped += 1  # the decode itself runs at the cap: no hold to see
                continue
            if cap[inside].any():
                leaks.append(float(t[inside & cap].max() - first.start_s))
                jobs.add(str(d.relative_to(TRACES)))
    leaks_a = np.array(leaks)
    q = {f"p{p}": float(np.percentile(leaks_a, p)) for p in (50, 75, 90, 95, 99)}
    out = {
        "command": "python bench/cap_hold.py",
        "first_decode_windows": first_windows, "capped_in_steady_decode": capped,
        "with_cap_at_the_start_only": len(leaks), "jobs_with_leak": len(jobs),
        "leak_into_window_s": {**q, "max": float(leaks_a.max())},
        "hold_after_prefill_s": {k: v + LEAD_IN_S for k, v in {**q, "max": float(leaks_a.max())}.items()},
    }
    (ROOT / "bench/cap-hold.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
