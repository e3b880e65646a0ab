"""Where a GPU measurement job's time goes, from its traces: time to the first window, share inside windows.

    python bench/gpu_job_time.py reference-data/h200-default/traces reference-data/h200-engines/*/traces \
        --out bench/gpu-job-time.json

Per trace: ``time_to_first_window_s`` (from the job's process start, recorded by the job), the process time
up to the end of its last window (that plus the span of its windows), the seconds inside measured windows
(idle baseline, prefill, decode and a serving engine's fill windows) and their share of that time, the same
share without the fill windows, the seconds of each phase's windows, before the first measured window and
between the windows (summed over the jobs as ``pooled_seconds``), and the engine's build and
warm-up/capture time (``engine_info``). Printed and written: medians per engine and architecture, and the
pooled share, and the median of each part before the first window the traces recorded (``job_parts``, which
add up to the time to the first window, and ``unaccounted_s``, what that time has beyond their sum;
``open_backend.*``, ``build.*``, ``warmup.*``: the parts of those spans; ``prefetch.import_s``: the compile
prefetch's own seconds in its thread, ``prefetch.<module>_s`` each of its imports). Nothing is run on a GPU:
the numbers are those the traces recorded.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

import pandas as pd


def job_times(trace: Path) -> dict | None:
    """The time figures of one ok trace with a recorded time to the first window, else None."""
    status = json.loads((trace / "status.json").read_text())
    meta = json.loads((trace / "metadata.json").read_text())
    t_first = meta.get("time_to_first_window_s")
    if status.get("status") != "ok" or t_first is None or meta.get("backend") != "nvml":
        return None
    w = pd.read_parquet(trace / "windows.parquet", columns=["phase", "start_s", "end_s", "duration_s"])
    measured = w[w["phase"] != "idle"]
    first, last = float(measured["start_s"].min()), float(w["end_s"].max())
    until_last = float(t_first) + last - first  # process start to the end of the last window
    info = meta.get("engine_info") or {}
    job_parts = meta.get("job_parts") or {}
    prefetch = meta.get("compile_prefetch") or {}
    return {"trace": str(trace), "engine": str(meta.get("engine", "native")).split(" ")[0], "arch": meta["arch"],
            "batch": meta["batch"], "context": meta["context"], "gpu_uuid": (meta.get("gpu") or {}).get("uuid"),
            "time_to_first_window_s": float(t_first), "process_to_last_window_s": until_last,
            "in_windows_s": float(w["duration_s"].sum()), "share_in_windows": float(w["duration_s"].sum()) / until_last,
            # the same without the fill windows (a serving engine's whole-batch prefill before each decode
            # trial, measured since 2026-12-02; before, that time was outside every window)
            "share_in_windows_without_fill": float(w[w["phase"] != "fill"]["duration_s"].sum()) / until_last,
            # where the time up to the last window went: each phase's windows (the idle windows lie before the
            # first measured one, inside the time to it) and what lies between the measured windows
            "seconds": {**{f"{k}_windows": float(v) for k, v in w.groupby("phase")["duration_s"].sum().items()},
                        "before_first_window": float(t_first),
                        "between_windows": last - first - float(measured["duration_s"].sum())},
            "build_s": info.get("build_s"), "warmup_capture_s": info.get("capture_s"),
            # the parts before the first window, where the job recorded them: the job's consecutive spans
            # (process start, backend, compile prefetch wait, probe, engine build, lever and sampler, idle window,
            # warm-up, lead-in), what the time to the first window has beyond their sum (none since they were all
            # recorded), and the parts of the backend's opening, the engine's build and warm-up, and the seconds
            # the compile prefetch took in its thread
            "parts": {**job_parts,
                      **({"unaccounted_s": float(t_first) - sum(job_parts.values())} if job_parts else {}),
                      **{f"open_backend.{k}": v for k, v in (meta.get("open_backend_parts") or {}).items()},
                      **{f"build.{k}": v for k, v in (info.get("build_parts") or {}).items()},
                      **{f"warmup.{k}": v for k, v in (info.get("warmup_parts") or {}).items()},
                      **({"prefetch.import_s": prefetch["import_s"]} if "import_s" in prefetch else {}),
                      **{f"prefetch.{k}_s": v for k, v in (prefetch.get("modules") or {}).items()}}}


def summary(rows: list[dict]) -> dict:
    """Medians and the pooled share of a set of jobs."""
    def med(key: str) -> float | None:
        values = [r[key] for r in rows if r.get(key) is not None]
        return round(statistics.median(values), 2) if values else None

    return {"jobs": len(rows), "median_time_to_first_window_s": med("time_to_first_window_s"),
            "median_share_in_windows": med("share_in_windows"),
            "median_share_in_windows_without_fill": med("share_in_windows_without_fill"),
            "pooled_share_in_windows": round(sum(r["in_windows_s"] for r in rows)
                                             / sum(r["process_to_last_window_s"] for r in rows), 3),
            "pooled_share_in_windows_without_fill": round(
                sum(r["share_in_windows_without_fill"] * r["process_to_last_window_s"] for r in rows)
                / sum(r["process_to_last_window_s"] for r in rows), 3),
            "pooled_seconds": {k: round(sum(r["seconds"].get(k, 0.0) for r in rows), 1)
                               for k in sorted({k for r in rows for k in r["seconds"]})},
            "median_warmup_capture_s": med("warmup_capture_s"), "median_build_s": med("build_s"),
            **({"median_parts_s": parts} if (parts := median_parts(rows)) else {})}


# the prefix of each job part's own parts
SUBPARTS = {"open_backend_s": "open_backend.", "compile_prefetch_wait_s": "prefetch.", "build_workload_s": "build.",
            "warmup_s": "warmup."}


def part_order(rows: list[dict]) -> list[str]:
    """The parts in the order of a job: its spans as recorded (each followed by its own parts), then the rest."""
    names = list(dict.fromkeys(k for r in rows for k in r["parts"]))  # as recorded
    spans = max(([k for k in r["parts"] if "." not in k and k != "unaccounted_s"] for r in rows), key=len)
    order: list[str] = []
    for span in spans:
        order.append(span)
        order += [k for k in names if span in SUBPARTS and k.startswith(SUBPARTS[span])]
    return order + [k for k in names if k not in order]


def median_parts(rows: list[dict]) -> dict[str, float]:
    """The median seconds of each recorded part before the first window, over the jobs that recorded it."""
    return {k: round(statistics.median([r["parts"][k] for r in rows if k in r["parts"]]), 2)
            for k in part_order(rows)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("traces", nargs="+", help="traces folders (engine~E/arch~A/... below each)")
    p.add_argument("--out", help="write the figures as JSON here")
    a = p.parse_args()
    rows = [r for folder in a.traces for s in sorted(Path(folder).rglob("status.json"))
            if (r := job_times(s.parent)) is not None]
    if not rows:
        raise SystemExit(f"no GPU trace with a recorded time to its first window under {a.traces}")
    by_engine: dict[str, list[dict]] = defaultdict(list)
    by_arch: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_engine[r["engine"]].append(r)
        by_arch[f"{r['engine']} {r['arch']}"].append(r)
    result = {"what": "GPU measurement jobs: time to the first window and share of time inside windows",
              "sources": a.traces, "all": summary(rows),
              "by_engine": {k: summary(v) for k, v in sorted(by_engine.items())},
              "by_engine_and_arch": {k: summary(v) for k, v in sorted(by_arch.items())},
              # the jobs that took longest, with where their time went
              "longest_jobs": [{k: r[k] for k in ("trace", "process_to_last_window_s", "seconds")}
                               for r in sorted(rows, key=lambda r: -r["process_to_last_window_s"])[:5]]}
    for name, s in [("all", result["all"]), *result["by_engine"].items()]:
        print(f"{name}: {s['jobs']} jobs, time to first window median {s['median_time_to_first_window_s']} s, "
              f"in windows {s['median_share_in_windows']:.0%} (median) / {s['pooled_share_in_windows']:.0%} "
              f"(pooled), {s['median_share_in_windows_without_fill']:.0%} without fill windows (median), "
              f"warm-up and capture median {s['median_warmup_capture_s']} s")
        for part, secs in s.get("median_parts_s", {}).items():
            print(f"  {'  ' if '.' in part else ''}{part}: {secs} s")
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
