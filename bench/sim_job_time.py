"""Cost of one simulated measurement job, and whether a change kept the simulated traces the same.

    python bench/sim_job_time.py --out /tmp/sim-jobs            # ms per job over 20 points of the default grid
    python bench/sim_job_time.py --out /tmp/after --compare /tmp/before   # and every trace equal to the bit
    python bench/sim_job_time.py --out /tmp/after --compare /tmp/before --values-only   # another encoding
    python bench/sim_job_time.py --out /tmp/sim-jobs --parts    # and the ms per job of each of its parts

The points span the default grid (config/config.yaml): every architecture, batch 1 and a large batch, short
and long contexts, the default lever, power caps (one that binds, one that does not), clock locks, and a
phase lever. Each runs through :func:`phase_energy.measure.job.run_job` into its own folder, as the workflow
runs it (backend sim, trace written: parquet tables, metadata, status). The time printed is the wall time of
those jobs after one untimed job (imports and caches of the process), divided by the jobs, best of
``--repeat`` passes. ``--compare`` checks that samples.parquet and windows.parquet equal another run's to the
last bit (and byte for byte, by the digests in status.json) and that metadata.json equals it except for
timestamps and the code's commit.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

POINTS = [  # (arch, batch, context, lever)
    ("qwen3-4b", 1, 512, "default"),
    ("qwen3-4b", 256, 512, "default"),
    ("qwen3-4b", 64, 8192, "powercap:300"),
    ("qwen3-4b", 8, 1024, "smclock:1410"),
    ("qwen3-4b", 128, 4096, "phase:prefill=default,decode=smclock:1410"),
    ("minicpm3-4b", 1, 2048, "powercap:200"),
    ("minicpm3-4b", 256, 512, "smclock:810"),
    ("minicpm3-4b", 32, 8192, "default"),
    ("minicpm3-4b", 64, 1024, "powercap:700"),
    ("minicpm3-4b", 8, 4096, "phase:prefill=powercap:400,decode=default"),
    ("qwen3.5-4b", 1, 8192, "smclock:1980"),
    ("qwen3.5-4b", 256, 4096, "powercap:400"),
    ("qwen3.5-4b", 128, 512, "smclock:1005"),
    ("qwen3.5-4b", 32, 2048, "powercap:500"),
    ("qwen3.5-4b", 64, 1024, "phase:prefill=default,decode=powercap:300"),
    ("mamba2-2.7b", 1, 1024, "default"),
    ("mamba2-2.7b", 256, 8192, "smclock:1605"),
    ("mamba2-2.7b", 128, 2048, "powercap:200"),
    ("mamba2-2.7b", 8, 512, "smclock:1830"),
    ("mamba2-2.7b", 64, 4096, "powercap:600"),
]
TIMESTAMPS = ("started_at", "finished_at")


def run_points(cfg: dict, out: Path) -> float:
    """Run every point into ``out``; the wall seconds."""
    from phase_energy.grid import GridPoint
    from phase_energy.measure.job import run_job

    t0 = time.perf_counter()
    for arch, b, c, lever in POINTS:
        point = GridPoint(arch, b, c, lever)
        run_job(cfg, point, out / point.path)
    return time.perf_counter() - t0


def compare(out: Path, ref: Path, values_only: bool = False) -> int:
    """Traces under ``out`` against those under ``ref``: the number that differ (each difference printed).

    ``values_only``: the tables value for value, not byte for byte (a change of how they are encoded).
    """
    bad = restamped = 0
    metas = sorted(ref.rglob("metadata.json"))
    for meta in metas:
        rel = meta.parent.relative_to(ref)
        try:
            for name in ("samples.parquet", "windows.parquet"):
                a, b = ref / rel / name, out / rel / name
                if a.exists() or b.exists():
                    pd.testing.assert_frame_equal(pd.read_parquet(b), pd.read_parquet(a), check_exact=True)
            ma, mb = (json.loads((d / rel / "metadata.json").read_text()) for d in (ref, out))
            for k in TIMESTAMPS:
                ma.pop(k, None)
                mb.pop(k, None)
            # the code's own commit differs between a run before and after a change
            ma.pop("git_commit", None)
            mb.pop("git_commit", None)
            if ma != mb:
                diff = sorted(k for k in set(ma) | set(mb) if ma.get(k) != mb.get(k))
                raise AssertionError(f"metadata differs in {diff}")
            # status records each file's digest: the parquet files equal byte for byte, metadata.json has the times
            sa, sb = (json.loads((d / rel / "status.json").read_text()) for d in (ref, out))
            for name in ("metadata.json", *(("samples.parquet", "windows.parquet") if values_only else ())):
                sa["files"].pop(name, None)
                sb["files"].pop(name, None)
            # the summary stamp names the summary code's version: a change to that code changes it alone
            restamped += sa.pop("summary", None) != sb.pop("summary", None)
            if sa != sb:
                diff = sorted(k for k in set(sa) | set(sb) if sa.get(k) != sb.get(k))
                raise AssertionError(f"status.json differs in {diff}")
        except AssertionError as e:
            bad += 1
            print(f"DIFFERS {rel}: {e}")
    print(f"compared {len(metas)} traces with {ref}: {len(metas) - bad} equal, {bad} differ"
          + (f" ({restamped} with another summary-code stamp: the summary code changed)" if restamped else ""))
    return bad


PARTS = [  # (module, function or Class.method): the parts of a simulated job that --parts times
    ("phase_energy.measure.job", "measure_with_lever"),  # the protocol on the simulator, and the window summaries
    ("phase_energy.measure.job", "run_protocol"),  # the protocol's steps placed on the simulated card's timeline
    ("phase_energy.measure.sim", "SimGPU.sample"),  # the samples table read off that timeline
    ("phase_energy.measure.job", "summarise_windows"),
    ("phase_energy.measure.job", "write_trace"),  # the trace written: the parquet tables, metadata and status
    ("phase_energy.measure.trace", "_atomic_parquet"),
    ("phase_energy.measure.trace", "validate_metadata"),
    ("phase_energy.measure.trace", "conform"),
    ("phase_energy.measure.trace", "file_digest"),
]


def time_parts() -> dict[str, float]:
    """Wrap each of PARTS with a timer; the returned dict sums each one's seconds from now on."""
    import importlib

    spent: dict[str, float] = {}
    for module, part in PARTS:
        mod: Any = importlib.import_module(module)
        *owner, name = part.split(".")
        for attr in owner:  # a method: wrapped on its class
            mod = getattr(mod, attr)
        inner = getattr(mod, name)

        def timed(*a, _inner=inner, _name=part, **k):
            t = time.perf_counter()
            try:
                return _inner(*a, **k)
            finally:
                spent[_name] = spent.get(_name, 0.0) + time.perf_counter() - t
        setattr(mod, name, timed)
    return spent


def main() -> None:
    """Entry point."""
    from phase_energy.config import load_config

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the traces (emptied first)")
    p.add_argument("--compare", help="a folder of traces from another run of this script")
    p.add_argument("--values-only", action="store_true",
                   help="with --compare: the tables value for value only, not byte for byte (a change of encoding)")
    p.add_argument("--repeat", type=int, default=3, help="timed passes; the best is printed")
    p.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    p.add_argument("--json", help="also write the figure here, with the commit and the machine")
    p.add_argument("--parts", action="store_true",
                   help="also print the ms per job of each part (timers around them, over every timed pass)")
    args = p.parse_args()
    cfg = load_config(args.config, {"backend": "sim"})
    out = Path(args.out)
    warm = out / "_warm"
    run_job_once = POINTS[0]
    from phase_energy.grid import GridPoint
    from phase_energy.measure.job import run_job

    run_job(cfg, GridPoint(*run_job_once), warm)  # imports, schema validators, config caches
    shutil.rmtree(warm)
    spent = time_parts() if args.parts else {}
    best = float("inf")
    for _ in range(max(1, args.repeat)):
        for d in out.glob("engine~*"):
            shutil.rmtree(d)
        best = min(best, run_points(cfg, out))
    ms = 1000 * best / len(POINTS)
    print(f"{len(POINTS)} simulated jobs: {ms:.1f} ms/job (best of {args.repeat})")
    for name, seconds in spent.items():  # nested: measure_with_lever holds summarise_windows, write_trace the rest
        print(f"  {name}: {1000 * seconds / (len(POINTS) * max(1, args.repeat)):.1f} ms/job (mean of every pass)")
    if args.json:
        import os
        import platform
        import subprocess

        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
        Path(args.json).write_text(json.dumps({
            "what": "a simulated measurement job through run_job, trace written, over 20 points of the default grid",
            "command": "python " + " ".join(sys.argv), "git_commit": commit.stdout.strip() or None,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "jobs": len(POINTS), "repeat": args.repeat, "ms_per_job": round(ms, 1)}, indent=1) + "\n")
    if args.compare and compare(out, Path(args.compare), args.values_only):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
