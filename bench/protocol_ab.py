"""The native protocol's before-and-after on one card: do the windows measure the same, and how much time moved.

    python bench/protocol_ab.py before=RUN_DIR[,RUN_DIR] after=RUN_DIR[,RUN_DIR] --out bench/...json

Each RUN_DIR holds traces (``engine~native/arch~A/bs~B/ctx~C/...``) of one process run of the same points.
Per point, for the runs of each label: the unflagged windows' energy per token and power per phase, decode
windows per trial and position, and per trace the time to the first window, the warm-up's runs, the time from
the first to the last window and the share of the job's time inside windows (as ``bench/gpu_job_time.py``).
Printed and written: each point's medians per label and the after/before ratio. Nothing runs on a GPU.
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


def trace_rows(run: Path, label: str) -> tuple[list[dict], list[dict]]:
    """(window rows, job rows) of every ok trace under ``run``."""
    windows, jobs = [], []
    for status in sorted(run.rglob("status.json")):
        trace = status.parent
        if json.loads(status.read_text()).get("status") != "ok":
            continue
        meta = json.loads((trace / "metadata.json").read_text())
        point = f"{meta['arch']}:{meta['batch']}x{meta['context']}"
        w = pd.read_parquet(trace / "windows.parquet")
        for r in w.itertuples(index=False):
            if r.phase not in ("prefill", "decode"):
                continue
            windows.append({"label": label, "run": str(run), "point": point, "phase": r.phase, "trial": int(r.trial),
                            "context_start": int(r.context_start), "flagged": bool(str(r.flags or "")),
                            "mj_per_token": 1e3 * float(r.energy_j) / max(int(r.tokens), 1),
                            "power_w": float(r.power_mean_w),
                            "ms_per_step": 1e3 * float(r.duration_s) / max(int(r.steps) * int(r.repetitions), 1)})
        t = job_times(trace)
        if t is not None:
            info = meta.get("engine_info") or {}
            jobs.append({"label": label, "run": str(run), "point": point, "git_commit": meta.get("git_commit"),
                         "gpu_uuid": t["gpu_uuid"], "time_to_first_window_s": t["time_to_first_window_s"],
                         "warmup_runs_s": (info.get("warmup_parts") or {}).get("runs_s"),
                         "first_to_last_window_s": t["process_to_last_window_s"] - t["time_to_first_window_s"],
                         "share_in_windows": t["share_in_windows"]})
    return windows, jobs


def med(values: list[float]) -> float | None:
    """The median, rounded, or None."""
    return round(statistics.median(values), 4) if values else None


def compare(windows: pd.DataFrame, jobs: pd.DataFrame) -> list[dict]:
    """Per point: each label's medians (unflagged windows), and after / before."""
    out = []
    for point, w in windows.groupby("point", sort=True):
        row: dict = {"point": point}
        ok = w[~w["flagged"]]
        for label in ("before", "after"):
            lw, lj = ok[ok["label"] == label], jobs[(jobs["point"] == point) & (jobs["label"] == label)]
            for phase in ("prefill", "decode"):
                p = lw[lw["phase"] == phase]
                row[f"{label}.{phase}_mj_per_token"] = med(p["mj_per_token"].tolist())
                row[f"{label}.{phase}_power_w"] = med(p["power_w"].tolist())
                row[f"{label}.{phase}_windows"] = len(p)
            # decode per trial: the later trials are where the refill went
            for trial, p in lw[lw["phase"] == "decode"].groupby("trial"):
                row[f"{label}.decode_trial{trial}_mj_per_token"] = med(p["mj_per_token"].tolist())
                row[f"{label}.decode_trial{trial}_ms_per_step"] = med(p["ms_per_step"].tolist())
            for k in ("first_to_last_window_s", "warmup_runs_s", "share_in_windows"):
                row[f"{label}.{k}"] = med([v for v in lj[k].tolist() if v is not None])
            row[f"{label}.runs"] = sorted(set(lj["run"]))
        # each decode window (trial, position): the mean over each label's runs, and after / before
        dec = ok[ok["phase"] == "decode"]
        for (trial, pos), p in dec.groupby(["trial", "context_start"]):
            means = {lab: p[p["label"] == lab][["mj_per_token", "power_w"]].mean() for lab in ("before", "after")}
            if all(len(p[p["label"] == lab]) for lab in means):
                for m in ("mj_per_token", "power_w"):
                    row[f"after_over_before.decode_trial{trial}_at_{pos}_{m}"] = round(
                        float(means["after"][m] / means["before"][m]), 4)
        for k in ("prefill_mj_per_token", "decode_mj_per_token", "decode_trial1_mj_per_token"):
            b, a = row.get(f"before.{k}"), row.get(f"after.{k}")
            row[f"after_over_before.{k}"] = round(a / b, 4) if a and b else None
        out.append(row)
    return out


def main() -> None:
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="LABEL=DIR[,DIR]", help="LABEL is before or after")
    p.add_argument("--out")
    a = p.parse_args()
    windows, jobs = [], []
    for item in a.runs:
        label, _, dirs = item.partition("=")
        if label not in ("before", "after") or not dirs:
            raise SystemExit(f"{item!r} is not accepted; expected before=DIR[,DIR] or after=DIR[,DIR]")
        for d in dirs.split(","):
            w, j = trace_rows(Path(d), label)
            if not j:
                raise SystemExit(f"{d}: no ok trace of a real card with its time to the first window; accepted: a "
                                 "folder of traces measured with backend nvml")
            windows += w
            jobs += j
    rows = compare(pd.DataFrame(windows), pd.DataFrame(jobs))
    for r in rows:
        def pair(key: str, r: dict = r) -> str:
            return f"{r[f'before.{key}']} -> {r[f'after.{key}']}"
        print(f"{r['point']:22s} prefill mJ/token {pair('prefill_mj_per_token')} "
              f"({r['after_over_before.prefill_mj_per_token']}), decode {pair('decode_mj_per_token')} "
              f"({r['after_over_before.decode_mj_per_token']}), trial 2 "
              f"({r['after_over_before.decode_trial1_mj_per_token']}); first to last window "
              f"{pair('first_to_last_window_s')} s, warm-up runs {pair('warmup_runs_s')} s")
    if a.out:
        Path(a.out).write_text(json.dumps({"what": "native protocol before and after, one card", "runs": a.runs,
                                           "cards": sorted({j["gpu_uuid"] for j in jobs if j["gpu_uuid"]}),
                                           "points": rows, "jobs": jobs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
