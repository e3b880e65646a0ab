"""The README's main job on a machine without a GPU, timed end to end: the default grid on the simulator.

    python bench/sim_default_grid.py --cores 1 --cores 2 --out bench/sim-default-grid.json
    python bench/sim_default_grid.py --root OLD_CHECKOUT --cores 1 --out before.json   # another commit's code

For each ``--cores``, the workflow is copied into a fresh folder (with a snapshot of the package, so edits do
not disturb it) and ``snakemake --cores N --resources gpu=1`` runs there, as a new user would run it
(``backend: auto`` falls back to the simulator; the local profile applies). Printed and written: the wall
time end to end (traces, tables, claims and every figure), when the last measurement finished, the jobs,
the size of ``results/``, the seconds each rule's jobs took together (from the start and end times
Snakemake records for every job in ``.snakemake/metadata``), the seconds after the last measurement that no
job spans (Snakemake's own work between the analysis and figure jobs), Snakemake's own time before the first
measurement and between the measurements, and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("Snakefile", "workflow", "config", "profiles", "envs", "src")


def rule_seconds(workdir: Path) -> dict[str, float]:
    """Seconds each rule's jobs took, summed over its jobs, from Snakemake's record of every job's output."""
    jobs: dict[tuple[str, int], float] = {}
    for f in (workdir / ".snakemake" / "metadata").glob("*"):
        rec = json.loads(f.read_text())
        if rec.get("starttime") and rec.get("endtime"):
            jobs[(rec["rule"], rec["job_hash"])] = rec["endtime"] - rec["starttime"]
    total: dict[str, float] = {}
    for (rule, _), s in jobs.items():
        total[rule] = total.get(rule, 0.0) + s
    return {rule: round(s, 1) for rule, s in sorted(total.items())}


def between_jobs_after_measurements(workdir: Path) -> float:
    """Seconds from the last measurement's end to the last job's end that no analysis or figure job spans.

    What Snakemake spent of its own between the jobs after the measurements (preparing each job, its records
    when it ends), from the start and end times it records for every job's outputs.
    """
    spans = set()
    for f in (workdir / ".snakemake" / "metadata").glob("*"):
        rec = json.loads(f.read_text())
        if rec.get("starttime") and rec.get("endtime"):
            spans.add((rec["rule"], rec["job_hash"], rec["starttime"], rec["endtime"]))
    jobs: dict[tuple[str, int], tuple[float, float]] = {}
    for rule, h, start, end in spans:  # a job's outputs end at slightly different times: its latest
        s0, e0 = jobs.get((rule, h), (start, end))
        jobs[(rule, h)] = (min(s0, start), max(e0, end))
    last_measure = max((e for (rule, _), (_, e) in jobs.items() if rule == "measure"), default=None)
    if last_measure is None:
        return float("nan")
    after = sorted((s, e) for (rule, _), (s, e) in jobs.items() if rule != "measure" and e > last_measure)
    covered, t = 0.0, last_measure
    for s, e in after:  # the union of the spans past the last measurement
        s = max(s, t)
        if e > s:
            covered, t = covered + e - s, e
    return round(max(t - last_measure - covered, 0.0), 2)


def measurement_gaps(workdir: Path, t0: float) -> dict[str, float]:
    """Where Snakemake's own time went up to the last measurement, from the times it records for every job.

    ``before_first_measurement_s``: from the command's start (``t0``, wall clock) to the first measure job's
    start: Python's start, Snakemake's import, parsing the workflow, building the graph of jobs.
    ``between_measurements_s``: from the first measure job's start to the last one's end, the time no measure
    job spans: Snakemake's scheduling rounds, each job's preparation and records (and any other job that runs
    among the measurements, such as the CLEAR stage's short job). ``per_gap_ms``: the median gap, where every
    measure job starts after the one before has ended (so with ``--cores 1``); None where some overlap.
    """
    spans = sorted({(rec["starttime"], rec["endtime"], rec["job_hash"])
                    for f in (workdir / ".snakemake" / "metadata").glob("*")
                    if (rec := json.loads(f.read_text())).get("rule") == "measure" and rec.get("starttime")
                    and rec.get("endtime")})
    if not spans:
        return {}
    jobs: dict[int, tuple[float, float]] = {}
    for start, end, h in spans:
        s0, e0 = jobs.get(h, (start, end))
        jobs[h] = (min(s0, start), max(e0, end))
    ordered = sorted(jobs.values())
    idle, reach, gaps = 0.0, ordered[0][0], []
    for start, end in ordered:
        if start > reach:
            idle += start - reach
            gaps.append(start - reach)
        reach = max(reach, end)
    return {"before_first_measurement_s": round(ordered[0][0] - t0, 2), "between_measurements_s": round(idle, 2),
            "per_gap_ms": round(statistics.median(gaps) * 1e3, 1) if len(gaps) == len(ordered) - 1 and gaps else None}


def run_once(cores: int, workdir: Path, root: Path = ROOT) -> dict:
    """One run of the main job in a fresh copy of the workflow (from ``root``); its timings and counts."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    for name in COPIED:
        src = root / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, workdir / name)
    # the interpreter's scripts (phase-energy) on PATH, as in an activated environment
    env = {**os.environ, "PYTHONPATH": str(workdir / "src"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(cores), "--resources", "gpu=1"]
    t0 = time.time()
    res = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, check=False)
    end = time.time()
    (workdir / "snakemake.log").write_text(res.stdout + res.stderr)
    status = list((workdir / "results" / "traces").rglob("status.json"))
    skipped = sum(1 for s in status if json.loads(s.read_text())["status"] == "skipped")
    backends = {json.loads((s.parent / "metadata.json").read_text())["backend"] for s in status}
    figures = sorted(p.name for p in (workdir / "figures").glob("*.png")) if (workdir / "figures").exists() else []
    return {
        "cores": cores,
        "command": " ".join(["snakemake", *cmd[3:]]),
        "returncode": res.returncode,
        "end_to_end_s": round(end - t0, 1),
        "measurements_done_s": round(max(s.stat().st_mtime for s in status) - t0, 1) if status else None,
        "jobs": len(status),
        "jobs_skipped": skipped,
        "backends": sorted(backends),
        "figures": len(figures),
        "claims": (workdir / "results" / "claims.csv").exists(),
        # what the run left under results/ (traces, tables, claims), in MB
        "results_mb": round(sum(f.stat().st_size for f in (workdir / "results").rglob("*") if f.is_file()) / 1e6, 1),
        "rule_seconds": rule_seconds(workdir),
        "between_jobs_after_measurements_s": between_jobs_after_measurements(workdir),
        "snakemake_before_last_measurement": measurement_gaps(workdir, t0),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cores", type=int, action="append", help="repeat for several runs (default: 1 and 2)")
    p.add_argument("--workdir", help="where the copies run (default: a temporary folder)")
    p.add_argument("--out", default="bench/sim-default-grid.json")
    p.add_argument("--root", default=str(ROOT), help="the checkout whose workflow and package run (default: this one)")
    a = p.parse_args()
    root = Path(a.root).resolve()
    base = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="sim-default-grid-"))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=False)
    result: dict = {
        "what": "the README's main job without a GPU: default grid on the simulator, end to end with figures",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "git_commit": commit.stdout.strip() or None,
        "runs": [],
    }
    for cores in a.cores or [1, 2]:
        run = run_once(cores, base / f"cores-{cores}", root)
        result["runs"].append(run)
        print(f"--cores {cores}: {run['end_to_end_s']} s end to end (measurements done at "
              f"{run['measurements_done_s']} s), {run['jobs']} jobs ({run['jobs_skipped']} skipped), "
              f"{run['figures']} figures, rc {run['returncode']}", flush=True)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
