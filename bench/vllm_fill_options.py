"""What each way of treating a serving engine's cache fill would make of its campaign's share of time in windows.

    python bench/vllm_fill_options.py reference-data/h200-vllm/traces --out bench/vllm-fill-options.json

vLLM cannot rewind its requests: before each decode trial it prefills the whole batch (the ``fill`` window),
which at large batch x context takes most of a point's time. Which of these ways, if any, would bring the
share of a campaign's GPU time inside the windows that the estimates use to the 60 % target? From the time
each trace recorded (the same figures as ``bench/gpu_job_time.py``), per point and pooled over the points:

- ``now``: the windows the estimates use (idle, prefill, decode), the fill windows not counted;
- ``fill_counted``: the fill windows counted as measured time as they are;
- ``one_fill``: one fill shared by a point's decode trials: the later trials' fill windows taken out of its
  time (what the card would do before those trials' decode lead-in changes: a measurement change);
- ``one_fill_counted``: that, and the one fill counted;
- ``no_overhead``: the most that work on everything outside the windows and fills could give: the point's
  time as its windows and fills alone (every fill kept, not counted), every other second (start, lead-ins,
  pauses, the time between windows) taken out;
- ``one_fill_no_overhead``: that, with one fill shared by the decode trials;
- ``decode_s_for_60``: the decode-window seconds per decode trial that would bring the point to 60 % with
  its fills as they are and not counted (now: the trial's decode windows' seconds), and pooled, the factor
  by which every point's decode windows would have to grow.

Arithmetic on the recorded times, not a measurement of a changed protocol: a fill shared or more decode
windows would also change what the card does before and inside the windows, which only a run on a card can
show. Traces without fill windows (measured before the fill was a window of its own) are left out.

Whether a fill could stand in for a prefill trial (``fill_against_prefill``): each point's energy per token
in its fill windows (whatever their flags) against its prefill windows without a flag (medians; points whose
fills all last ``LONG_FILL_S`` or more, 30 ticks of the energy counter, and that have such prefill windows):
the ratio by the energy counter and by the trapezoid of instant power, whether every fill lay above every
prefill window of its point, and the medians of what else differs (power, SM clock, temperature at the
start, tokens per second).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_job_time import job_times

TARGET = 0.6
LONG_FILL_S = 3.0  # fills compared with the prefill windows: at least 30 ticks of the ~100 ms energy counter


def point(trace: Path) -> dict | None:
    """The options' figures for one vLLM trace with fill windows, else None."""
    t = job_times(trace)
    if t is None or t["engine"] != "vllm":
        return None
    w = pd.read_parquet(trace / "windows.parquet")
    fills = w[w["phase"] == "fill"].sort_values("trial")["duration_s"].to_numpy()
    if not len(fills):
        return None
    is_fill = w["phase"] == "fill"
    is_prefill = (w["phase"] == "prefill") & (w["flags"].fillna("") == "")

    def against(jpt: pd.Series) -> tuple[float | None, bool | None]:
        """Fill over prefill energy per token (medians), and whether every fill lay above every prefill window."""
        if not is_prefill.any():
            return None, None
        return float(jpt[is_fill].median() / jpt[is_prefill].median()), bool(jpt[is_fill].min() > jpt[is_prefill].max())

    jpt = w["energy_j"] / w["tokens"]
    ratio, above = against(jpt)
    # the same from the trapezoid of instant power instead of the energy counter
    trapz = w["energy_trapz_j"] / w["tokens"] if "energy_trapz_j" in w else jpt * float("nan")
    ratio_trapz, above_trapz = against(trapz)
    # what else the two kinds of window differ in, medians over each (power, clock, temperature at the start, rate)
    both = {kind: w[mask] for kind, mask in (("fill", is_fill), ("prefill", is_prefill))}
    measures = (("power_w", lambda d: d["power_mean_w"]), ("sm_clock_mhz", lambda d: d["sm_clock_mhz"]),
                ("temperature_start_c", lambda d: d["temperature_start_c"]),
                ("tokens_per_s", lambda d: d["tokens"] / d["duration_s"]))
    conditions = {f"{kind}_{name}": (float(f(d).median()) if len(d) else None) for kind, d in both.items()
                  for name, f in measures}
    total = t["process_to_last_window_s"]
    used = float(w[w["phase"] != "fill"]["duration_s"].sum())
    decode = w[w["phase"] == "decode"]
    trials = int(decode["trial"].nunique())
    later = float(fills[1:].sum())  # the fills a shared one would spare
    # decode seconds x added per trial so that (used + trials x) / (total + trials x) = TARGET
    extra = max(0.0, (TARGET * total - used) / ((1 - TARGET) * trials)) if trials else float("nan")
    return {"trace": t["trace"], "arch": t["arch"], "batch": t["batch"], "context": t["context"],
            "seconds": total, "used_s": used, "fill_s": float(fills.sum()), "later_fills_s": later,
            "decode_s_per_trial": float(decode["duration_s"].sum()) / max(trials, 1), "decode_trials": trials,
            "now": used / total, "fill_counted": (used + float(fills.sum())) / total,
            "one_fill": used / (total - later), "one_fill_counted": (used + float(fills[0])) / (total - later),
            "no_overhead": used / (used + float(fills.sum())), "one_fill_no_overhead": used / (used + float(fills[0])),
            "decode_s_for_60": float(decode["duration_s"].sum()) / max(trials, 1) + extra,
            "shortest_fill_s": float(fills.min()),
            "fill_j_per_token": float(jpt[is_fill].median()),
            "prefill_j_per_token": float(jpt[is_prefill].median()) if ratio is not None else None,
            "fill_over_prefill": ratio, "fill_above_every_prefill": above,
            "fill_over_prefill_trapz": ratio_trapz, "fill_above_every_prefill_trapz": above_trapz,
            "prefill_windows_compared": int(is_prefill.sum()), **conditions,
            "fill_rate_over_prefill": conditions["fill_tokens_per_s"] / conditions["prefill_tokens_per_s"]
            if conditions["prefill_tokens_per_s"] else None}


def fill_against_prefill(rows: list[dict]) -> dict:
    """Fill against prefill energy per token over the points whose fills all last ``LONG_FILL_S`` or more."""
    long_fills = [r for r in rows if r["shortest_fill_s"] >= LONG_FILL_S]
    long = [r for r in long_fills if r["fill_over_prefill"] is not None]

    def spread(key: str) -> dict:
        values = [r[key] for r in long if r[key] is not None and r[key] == r[key]]
        if not values:
            return {"median": None, "range": None}
        return {"median": round(statistics.median(values), 3), "range": [round(min(values), 3), round(max(values), 3)]}

    ratio = spread("fill_over_prefill")
    return {"points": len(long), "min_fill_s": LONG_FILL_S,
            # points with fills that long whose every prefill window is flagged: nothing to compare with
            "points_without_unflagged_prefill": len(long_fills) - len(long),
            "ratio_median": ratio["median"], "ratio_range": ratio["range"],
            "points_every_fill_above_every_prefill_window": sum(r["fill_above_every_prefill"] for r in long),
            "trapz_ratio": spread("fill_over_prefill_trapz"),
            "trapz_points_every_fill_above_every_prefill_window": sum(bool(r["fill_above_every_prefill_trapz"])
                                                                      for r in long),
            "prefill_windows_compared": spread("prefill_windows_compared"),
            **{k: spread(k) for k in ("fill_power_w", "prefill_power_w", "fill_sm_clock_mhz", "prefill_sm_clock_mhz",
                                      "fill_temperature_start_c", "prefill_temperature_start_c", "fill_tokens_per_s",
                                      "prefill_tokens_per_s", "fill_rate_over_prefill")}}


def pooled(rows: list[dict]) -> dict:
    """The options pooled over the points (seconds summed), the medians, and the decode growth for 60 %."""
    total, used = sum(r["seconds"] for r in rows), sum(r["used_s"] for r in rows)
    fill, later = sum(r["fill_s"] for r in rows), sum(r["later_fills_s"] for r in rows)
    first = fill - later
    decode = sum(r["decode_s_per_trial"] * r["decode_trials"] for r in rows)
    # every point's decode windows k times as long: (used + (k-1) decode) / (total + (k-1) decode) = TARGET
    k = 1 + max(0.0, (TARGET * total - used) / ((1 - TARGET) * decode))
    return {"points": len(rows), "seconds": round(total, 1), "fill_seconds": round(fill, 1),
            "pooled": {"now": round(used / total, 3), "fill_counted": round((used + fill) / total, 3),
                       "one_fill": round(used / (total - later), 3),
                       "one_fill_counted": round((used + first) / (total - later), 3),
                       "no_overhead": round(used / (used + fill), 3),
                       "one_fill_no_overhead": round(used / (used + first), 3)},
            "median": {k_: round(statistics.median(r[k_] for r in rows), 3)
                       for k_ in ("now", "fill_counted", "one_fill", "one_fill_counted", "no_overhead",
                                  "one_fill_no_overhead")},
            "decode_windows_factor_for_60_pooled": round(k, 1), "fill_against_prefill": fill_against_prefill(rows)}


def main() -> None:
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("traces", nargs="+", help="trace folders (searched for status.json)")
    p.add_argument("--out", help="write the figures here as JSON")
    a = p.parse_args()
    rows = [r for d in a.traces for s in sorted(Path(d).rglob("status.json")) if (r := point(s.parent))]
    if not rows:
        raise SystemExit("no vLLM trace with fill windows under " + ", ".join(a.traces))
    res = {"what": "a serving engine's campaign: share of time in the windows the estimates use, per way of "
                   "treating the cache fill (arithmetic on the recorded times)",
           "sources": a.traces, "target": TARGET, "all": pooled(rows),
           "by_arch": {arch: pooled([r for r in rows if r["arch"] == arch])
                       for arch in sorted({r["arch"] for r in rows})},
           "points": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]}
    s = res["all"]
    print(f"{s['points']} vLLM points with fill windows, {s['seconds']} s, {s['fill_seconds']} s of it in fills")
    for name, share in s["pooled"].items():
        print(f"  {name:18s} pooled {share:.0%}, median point {s['median'][name]:.0%}")
    print(f"  decode windows {s['decode_windows_factor_for_60_pooled']}x as long (fills kept, not counted) "
          f"for {TARGET:.0%} pooled")
    f = s["fill_against_prefill"]
    if f["points"]:
        print(f"  fill against prefill energy per token ({f['points']} points with fills of {LONG_FILL_S:.0f} s or "
              f"more): median {f['ratio_median']}, {f['ratio_range'][0]}-{f['ratio_range'][1]}; every fill above "
              f"every prefill window at {f['points_every_fill_above_every_prefill_window']} of them")
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
