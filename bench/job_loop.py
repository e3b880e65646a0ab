"""GPU measurement jobs one after another, each in a fresh process, as the workflow's measure rule starts them.

Run on a GPU node (default lever only: nothing here changes a GPU setting):

    python bench/job_loop.py --config config/h200-reference.yaml --out OUT --cache OUT-cache \\
        --points qwen3-4b:32x2048,qwen3-4b:32x2048 --env PHASE_ENERGY_COMPILE_SCOPE=block --deadline-s 300

Each point is ``arch:BATCHxCONTEXT``; a point named again runs again as the next repetition (``rep~1``), so
the second run finds the compiled artefacts of the first in ``--cache`` (the job's compile cache, the
``PHASE_ENERGY_COMPILE_CACHE`` a campaign keeps between jobs). Every job is ``phase-energy measure`` in a new
Python process, the command the workflow runs; its wall time goes to ``OUT/jobs.jsonl``. Then

    python bench/gpu_job_time.py OUT --out bench/gpu-job-time-after.json

gives the time to the first window and the share of job time inside windows from the traces.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def parse_points(text: str) -> list[tuple[str, int, int]]:
    """``qwen3-4b:32x2048,mamba2-2.7b:1x512`` -> [("qwen3-4b", 32, 2048), ("mamba2-2.7b", 1, 512)]."""
    out = []
    for part in text.split(","):
        arch, _, shape = part.strip().partition(":")
        b, _, c = shape.partition("x")
        if not (arch and b.isdigit() and c.isdigit()):
            raise SystemExit(f"--points: {part!r} is not ARCH:BATCHxCONTEXT (e.g. qwen3-4b:32x2048)")
        out.append((arch, int(b), int(c)))
    return out


def main() -> None:
    """Entry point."""
    from phase_energy.grid import GridPoint

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--cache", required=True, help="compile cache folder shared by the jobs")
    p.add_argument("--points", required=True)
    p.add_argument("--engine", default="native", choices=["native", "vllm"])
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--deadline-s", type=float, default=540.0)
    a = p.parse_args()
    deadline = time.time() + a.deadline_s
    env = dict(os.environ, PHASE_ENERGY_COMPILE_CACHE=os.path.abspath(a.cache))
    env.update(kv.split("=", 1) for kv in a.env)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    seen: Counter[tuple[str, int, int]] = Counter()
    longest = 0.0
    for arch, batch, context in parse_points(a.points):
        rep = seen[(arch, batch, context)]
        seen[(arch, batch, context)] += 1
        point = GridPoint(arch, batch, context, "default", rep, a.engine)
        left = deadline - time.time()
        if left < 1.2 * max(longest, 30.0):
            print(f"stopping before {point.path}: {left:.0f} s left, a job took up to {longest:.0f} s", flush=True)
            break
        cmd = [sys.executable, "-m", "phase_energy.cli", "measure", "--config", a.config, "--engine", a.engine,
               "--arch", arch, "--batch", str(batch), "--context", str(context), "--lever", "default",
               "--rep", str(rep), "--out", str(out / point.path)]
        t0 = time.monotonic()
        log = out / f"{point.path.replace('/', '_')}.log"
        with log.open("w") as fh:
            rc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=left, check=False).returncode
        wall = time.monotonic() - t0
        longest = max(longest, wall)
        rec = {"point": point.path, "rc": rc, "wall_s": round(wall, 2), "env": a.env}
        print(json.dumps(rec), flush=True)
        with (out / "jobs.jsonl").open("a") as fh:
            fh.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
