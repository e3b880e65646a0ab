"""Run the default paper grid end to end on the simulator and time it (measurement jobs, then analysis).

    python bench/sim_default_grid.py --workdir /tmp/simgrid --out bench/sim-default-grid.json

The workflow is copied into --workdir with a snapshot of the package, so the run is not disturbed by edits.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["energy", "pareto", "classes", "crossover", "claims"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", required=True)
    p.add_argument("--out", default="bench/sim-default-grid.json")
    p.add_argument("--cores", default="2")
    p.add_argument("--analysis-only", action="store_true", help="re-time the analysis on existing traces")
    a = p.parse_args()
    wd = Path(a.workdir)
    env = {**os.environ, "PYTHONPATH": str(wd / "src")}
    if not a.analysis_only:
        if wd.exists():
            shutil.rmtree(wd)
        wd.mkdir(parents=True)
        for name in ("Snakefile", "workflow", "config", "profiles", "envs", "src"):
            src = ROOT / name
            (shutil.copytree if src.is_dir() else shutil.copy)(src, wd / name)
    result: dict = {"cores": os.cpu_count(), "python": platform.python_version(),
                    "command": f"python bench/sim_default_grid.py --workdir {a.workdir}"}
    if not a.analysis_only:
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "snakemake", "--cores", a.cores, "--config", "backend=sim",
                              "--quiet", "progress"], cwd=wd, env=env, capture_output=True, text=True, check=False)
        result["end_to_end_s"] = round(time.perf_counter() - t0, 1)
        result["returncode"] = res.returncode
        (wd / "snakemake.log").write_text(res.stdout + res.stderr)
    cfgs = sorted((wd / "results" / "config").glob("*.json"), key=lambda p: len(p.read_text()))
    full = cfgs[-1]
    times = {}
    for stage in STAGES:
        outdir = wd / ("results" if stage == "claims" else "results/tables")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "phase_energy.cli", "analyse", stage, "--config", str(full),
                        "--outdir", str(outdir)], cwd=wd, env=env, check=True, capture_output=True)
        times[stage] = round(time.perf_counter() - t0, 2)
    result["analysis_s"] = times
    result["analysis_total_s"] = round(sum(times.values()), 2)
    jobs = (wd / "results/tables/jobs.csv").read_text().splitlines()[1:]
    result["jobs"] = len(jobs)
    result["jobs_skipped"] = sum(1 for j in jobs if ",skipped," in j)
    claims = (wd / "results/claims.csv").read_text()
    result["claims_csv"] = claims
    print(json.dumps(result, indent=1))
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
