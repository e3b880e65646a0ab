"""Where the figures' time goes: each figure drawn again from a finished run's tables, its parts timed.

    python bench/figure_time.py RUN_FOLDER --out bench/figure-time.json

``RUN_FOLDER`` is a workflow folder after a run (``results/tables``, ``results/claims.csv`` and
``results/config/analysis-*.json`` there; the main job's folder of ``bench/sim_default_grid.py --workdir``
holds them under ``cores-1``). Every figure of the catalog is drawn as the figure jobs draw it
(:func:`phase_energy.report.figures.render`, into a temporary folder), after one untimed figure (the
imports and font caches of the process). Printed and written: the seconds of each figure, and of all of
them split into reading the tables, drawing (seaborn and the figure's own code, with the layouts seaborn's
grids do themselves), the constrained layout done once before saving, saving the PNG and saving the SVG.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def time_figures(run: Path, out: Path) -> dict[str, Any]:
    """Draw every figure from ``run``'s tables into ``out``; seconds per figure and per part."""
    import matplotlib.figure
    import matplotlib.layout_engine

    from phase_energy.analysis.tables import TABLES
    from phase_energy.cli import _load
    from phase_energy.report import figures
    from phase_energy.report.catalog import FIGURES

    cfg = _load(str(next((run / "results" / "config").glob("analysis*"))))
    tables = {name: run / "results" / t.path for name, t in TABLES.items()}
    traces = run / "results" / "traces"
    parts: dict[str, float] = defaultdict(float)
    wrapped: list[tuple[Any, str, Any]] = []

    def timed(owner: Any, name: str, part: Any) -> None:
        inner = getattr(owner, name)

        def wrapper(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return inner(*a, **k)
            finally:
                parts[part(a)] += time.perf_counter() - t
        wrapped.append((owner, name, inner))
        setattr(owner, name, wrapper)

    def render(name: str) -> None:
        figures.render(name, {k: tables[k] for k in FIGURES[name].tables}, out / name, cfg, traces)

    per: dict[str, float] = {}
    try:
        timed(figures, "read_tables", lambda a: "read_tables")
        timed(figures, "draw", lambda a: "draw")
        timed(matplotlib.layout_engine.ConstrainedLayoutEngine, "execute", lambda a: "layout")
        timed(matplotlib.figure.Figure, "savefig", lambda a: "save_" + Path(str(a[1])).suffix.lstrip("."))
        render("fig10_claims")  # untimed: imports, font caches
        parts.clear()
        for name in FIGURES:
            t = time.perf_counter()
            render(name)
            per[name] = round(time.perf_counter() - t, 2)
    finally:  # the functions as they were (a test process draws more figures after)
        for owner, name, inner in reversed(wrapped):
            setattr(owner, name, inner)
    return {"total_s": round(sum(per.values()), 2), "parts_s": {k: round(v, 2) for k, v in parts.items()},
            "figures_s": per}


def main() -> None:
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a workflow folder after a run (results/tables, results/claims.csv)")
    p.add_argument("--out", help="write the figures here as JSON")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        res = time_figures(Path(a.run), Path(tmp))
    print(f"{len(res['figures_s'])} figures in {res['total_s']} s: "
          + ", ".join(f"{k} {v} s" for k, v in res["parts_s"].items()))
    for name, s in res["figures_s"].items():
        print(f"  {name}: {s} s")
    if a.out:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
        Path(a.out).write_text(json.dumps({
            "what": "each figure drawn again from a finished run's tables", "git_commit": commit.stdout.strip() or None,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            **res}, indent=1) + "\n")


if __name__ == "__main__":
    main()
