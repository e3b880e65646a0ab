"""How far the shipped traces' samples reach past their windows, and whether every trace passes its check.

    python bench/trace_spans.py reference-data --out bench/trace-spans.json

For each ``ok`` trace with windows under the folders given: the time from its first sample to its first
window's start and from its last window's end to its last sample (from the parquet footers, as
:func:`phase_energy.measure.layout.verify_trace` reads them), whether ``status.json`` records checksums,
and whether :func:`~phase_energy.measure.layout.verify_trace` passes it (``deep=False``, as the workflow
checks at parse time). Prints and writes the counts and the smallest margins, per set and in all.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pyarrow.parquet as pq

from phase_energy.measure.layout import TraceError, _column_range, verify_trace


def spans(root: Path) -> dict[str, dict]:
    """Per set (the folder under ``root`` a trace lies in): traces, without checksums, failing, margins."""
    out: dict[str, dict] = {}
    for status_file in sorted(root.rglob("status.json")):
        d = status_file.parent
        status = json.loads(status_file.read_text())
        if status.get("status") != "ok" or not (d / "windows.parquet").exists():
            continue
        samples = _column_range(pq.ParquetFile(d / "samples.parquet").metadata, "t_s")
        windows = pq.ParquetFile(d / "windows.parquet").metadata
        first, last = _column_range(windows, "start_s"), _column_range(windows, "end_s")
        s = out.setdefault(d.relative_to(root).parts[0], {"traces": 0, "without_checksums": 0, "failing": [],
                                                          "before_first_window_s": [], "after_last_window_s": []})
        s["traces"] += 1
        s["without_checksums"] += "samples.parquet" not in (status.get("files") or {})
        try:
            verify_trace(d, deep=False)
        except TraceError as e:
            s["failing"].append(str(e))
        if samples and first and last:
            s["before_first_window_s"].append(first[0] - samples[0])
            s["after_last_window_s"].append(samples[1] - last[1])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path, help="a folder of trace sets (reference-data)")
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    result: dict = {"root": str(a.root), "sets": {}}
    for name, s in spans(a.root).items():
        result["sets"][name] = {"traces": s["traces"], "without_checksums": s["without_checksums"],
                                "failing": s["failing"],
                                "min_before_first_window_s": round(min(s["before_first_window_s"]), 6),
                                "min_after_last_window_s": round(min(s["after_last_window_s"]), 6)}
    sets = result["sets"].values()
    result["all"] = {"traces": sum(s["traces"] for s in sets),
                     "without_checksums": sum(s["without_checksums"] for s in sets),
                     "failing": sum(len(s["failing"]) for s in sets),
                     "min_before_first_window_s": min(s["min_before_first_window_s"] for s in sets),
                     "min_after_last_window_s": min(s["min_after_last_window_s"] for s in sets)}
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
