"""How fast a trace's tables are written, and how large, in the encoding the jobs use and in the one before.

    python bench/sim_job_time.py --out /tmp/sim-jobs --repeat 1        # traces to read the tables from
    python bench/trace_encoding.py /tmp/sim-jobs --json bench/trace-encoding.json

Reads every ``samples.parquet`` and ``windows.parquet`` under the folder, then writes each table to memory
(no disk: the encoding alone) with the jobs' options (:func:`phase_energy.measure.trace.parquet_options`:
LZ4, float columns byte-stream-split) and with the earlier ones (zstd, plain encoding), alternating, best of
``--repeat`` passes. Prints ms per table and KB per table for each, and checks that both read back to the
same values.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

BEFORE: dict[str, Any] = {"compression": "zstd", "use_dictionary": False}


def write_all(tables: list[pa.Table], options: Any) -> tuple[float, int]:
    """Seconds to write every table to memory, and their bytes."""
    size = 0
    t0 = time.perf_counter()
    for t in tables:
        sink = pa.BufferOutputStream()
        pq.write_table(t, sink, **(options(t.schema) if callable(options) else options))
        size += sink.getvalue().size
    return time.perf_counter() - t0, size


def main() -> None:
    """Entry point."""
    from phase_energy.measure.trace import parquet_options

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("traces", help="a folder of traces (e.g. bench/sim_job_time.py's --out)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--json", help="also write the figures here, with the commit and the machine")
    args = p.parse_args()
    result: dict[str, Any] = {}
    for name in ("samples", "windows"):
        tables = [pq.read_table(f) for f in sorted(Path(args.traces).rglob(f"{name}.parquet"))]
        if not tables:
            raise SystemExit(f"no {name}.parquet under {args.traces}")
        best = {"now": float("inf"), "before": float("inf")}
        sizes = {}
        for _ in range(max(1, args.repeat)):
            for kind, options in (("now", parquet_options), ("before", BEFORE)):
                s, sizes[kind] = write_all(tables, options)
                best[kind] = min(best[kind], s)
        for t in tables[:3]:  # the same values both ways
            a, b = pa.BufferOutputStream(), pa.BufferOutputStream()
            pq.write_table(t, a, **parquet_options(t.schema))
            pq.write_table(t, b, **BEFORE)
            assert pq.read_table(a.getvalue()).equals(pq.read_table(b.getvalue()))
        result[name] = {kind: {"ms_per_table": round(1000 * best[kind] / len(tables), 2),
                               "kb_per_table": round(sizes[kind] / len(tables) / 1000, 1)} for kind in best}
        result[name]["tables"] = len(tables)
        for kind in ("now", "before"):
            r = result[name][kind]
            print(f"{name} ({len(tables)} tables), {kind}: {r['ms_per_table']} ms, {r['kb_per_table']} KB per table")
    if args.json:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
        Path(args.json).write_text(json.dumps({
            "what": "a trace's tables written to memory: the jobs' encoding (now: LZ4, floats byte-stream-split) "
                    "against zstd in the plain encoding (before); best of --repeat passes, alternating",
            "command": "python " + " ".join(sys.argv), "git_commit": commit.stdout.strip() or None,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "pyarrow": pa.__version__},
            **result}, indent=1) + "\n")


if __name__ == "__main__":
    main()
