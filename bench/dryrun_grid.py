"""Time `snakemake -n` over a large grid (default 10,000 measurement points); prints and writes the figure.

    python bench/dryrun_grid.py --out bench/dryrun-10k.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="bench/dryrun-10k.json")
    a = p.parse_args()
    grid = {
        "architectures": ["qwen3-4b", "minicpm3-4b", "qwen3.5-4b", "mamba2-2.7b"],
        "batch_sizes": [1, 2, 4, 8, 16, 32, 64, 96, 128, 256],
        "contexts": [256, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192],
        "levers": ["default", *[f"powercap:{w}" for w in range(200, 701, 50)],
                   *[f"smclock:{c}" for c in range(810, 1981, 90)]],
        "backend": "sim",
    }
    n = len(grid["architectures"]) * len(grid["batch_sizes"]) * len(grid["contexts"]) * len(grid["levers"])
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp)
        for name in ("Snakefile", "workflow", "config", "profiles", "envs"):
            src = ROOT / name
            (shutil.copytree if src.is_dir() else shutil.copy)(src, wd / name)
        (wd / "config" / "big.yaml").write_text(yaml.safe_dump(grid))
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--resources", "gpu=1",
                              "--configfile", "config/big.yaml", "--quiet", "rules"],
                             cwd=wd, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(res.stderr[-3000:])
    m = re.search(r"^measure\s+(\d+)$", res.stdout, re.M)
    out = {"points": n, "measure_jobs_listed": int(m.group(1)) if m else None, "dry_run_s": round(wall, 2),
           "cores": os.cpu_count(), "python": platform.python_version(),
           "command": "python bench/dryrun_grid.py"}
    print(json.dumps(out, indent=1))
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
