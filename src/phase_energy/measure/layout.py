"""Trace folders as the workflow finds them: the layout check, verification and the cheap check at DAG time.

Light on purpose (no pandas): the workflow calls :func:`select_points` when it parses. A trace's tables are
read and written by :mod:`phase_energy.measure.trace`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from phase_energy.grid import GridPoint

log = logging.getLogger(__name__)


def file_digest(path: Path) -> str:
    """SHA-256 of a file, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def job_dirs(traces_dir: str | Path) -> list[Path]:
    """Every job folder under a traces folder (those with a status.json)."""
    return sorted(p.parent for p in Path(traces_dir).rglob("status.json"))


def engine_of(metadata: Mapping[str, Any]) -> str:
    """The engine a trace was measured with (``native`` for traces written before engines were an axis)."""
    return str(metadata.get("engine") or "native").split(" ")[0]  # older simulated traces: "native (simulated)"


class TraceError(ValueError):
    """A trace that cannot be used as it is; the message names the file, what is wrong and what to do."""


STATUSES = ("ok", "skipped")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise TraceError(f"{path}: missing; the trace is incomplete (measure the point again: delete its "
                         "folder, or let the workflow re-measure it)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TraceError(f"{path}: not valid JSON ({e}); the trace is damaged (measure the point again: delete "
                         "its folder)") from None
    if not isinstance(value, dict):
        raise TraceError(f"{path}: expected a JSON object, found {type(value).__name__}; the trace is damaged")
    return value


def _point_fields(meta: Mapping[str, Any]) -> dict[str, Any]:
    return {"engine": engine_of(meta), "arch": meta.get("arch"), "batch": meta.get("batch"),
            "context": meta.get("context"), "lever": meta.get("lever_requested"), "rep": meta.get("rep", 0)}


def verify_trace(trace_dir: str | Path, point: GridPoint | None = None, deep: bool = True
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check one trace folder and return its (status, metadata); raise TraceError naming what is wrong.

    Checked: status.json and metadata.json are JSON objects, the status is one the workflow writes, the
    metadata names the point its folder names (``point``), every file status.json lists has its size and
    (``deep``) its SHA-256, and an ``ok`` trace has readable windows with the count status.json records.
    Traces written before checksums were recorded are checked without them.
    """
    d = Path(trace_dir)
    status = _read_json(d / "status.json")
    if status.get("status") not in STATUSES:
        raise TraceError(f"{d / 'status.json'}: status {status.get('status')!r} is not one a finished job writes "
                         f"(accepted: {', '.join(STATUSES)}); the job did not end or the file was edited: measure "
                         "the point again (delete its folder)")
    meta = _read_json(d / "metadata.json")
    if point is not None:
        wanted = {"engine": point.engine, "arch": point.arch, "batch": point.batch, "context": point.context,
                  "lever": point.lever, "rep": point.rep}
        found = _point_fields(meta)
        wrong = [f"{k} {found[k]!r} (the folder says {wanted[k]!r})" for k in wanted if found[k] != wanted[k]]
        if wrong:
            raise TraceError(f"{d / 'metadata.json'}: names another point than its folder: {'; '.join(wrong)}; "
                             "a trace was copied into the wrong folder or edited: move it to the folder of its "
                             "point or measure this one again")
    if status["status"] == "ok" and not isinstance(meta.get("gpu"), dict):
        raise TraceError(f"{d / 'metadata.json'}: no 'gpu' record (the card, its bandwidth and matmul rate, which "
                         "the analysis reads); the file was edited or is damaged: restore it or measure the point "
                         "again (delete its folder)")
    verified = set()  # files whose bytes are those the job wrote: readable as it wrote them
    for name, rec in (status.get("files") or {}).items():
        f = d / name
        if not f.exists() or f.stat().st_size != rec.get("bytes"):
            size = f.stat().st_size if f.exists() else "no file"
            raise TraceError(f"{f}: {size} bytes where status.json recorded {rec.get('bytes')}; the file is "
                             "truncated or replaced: measure the point again (delete its folder)")
        if deep:
            if file_digest(f) != rec.get("sha256"):
                raise TraceError(f"{f}: its content differs from the SHA-256 status.json recorded; the file is "
                                 "damaged: measure the point again (delete its folder) or restore it from a "
                                 "copy")
            verified.add(name)
    if status["status"] == "ok":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            windows = pq.ParquetFile(d / "windows.parquet").metadata
            rows = windows.num_rows
            if "samples.parquet" not in verified:  # a trace without checksums: its footer at least
                samples = pq.ParquetFile(d / "samples.parquet").metadata
                if "samples.parquet" not in (status.get("files") or {}):  # no recorded size guards it either
                    _check_samples_span(d, samples, windows)
        except (OSError, pa.ArrowException) as e:
            raise TraceError(f"{d}: a parquet file is missing or unreadable ({e}); measure the point again") \
                from None
        if "windows" in status and rows != status["windows"]:
            raise TraceError(f"{d / 'windows.parquet'}: {rows} windows where status.json recorded "
                             f"{status['windows']}; the trace is damaged: measure the point again")
    return status, meta


def _column_range(md: Any, column: str) -> tuple[float, float] | None:
    """(min, max) of a parquet file's column from its footer's statistics; None where they are not all there."""
    names = md.schema.names
    if column not in names or md.num_row_groups == 0:
        return None
    i = names.index(column)
    stats = [md.row_group(g).column(i).statistics for g in range(md.num_row_groups)]
    if any(st is None or not st.has_min_max for st in stats):
        return None
    return min(float(st.min) for st in stats), max(float(st.max) for st in stats)


SPAN_SLACK_S = 0.25  # how far a window may reach past the samples and the trace still be whole


def _check_samples_span(d: Path, samples: Any, windows: Any) -> None:
    """Raise TraceError where the samples (footer ``samples``) stop well short of the windows (``windows``).

    For a trace without checksums (written before they were recorded), whose cut or replaced samples no
    recorded size betrays. A job samples from about its first window's start (the sampler's first poll
    races it by a fraction of a millisecond) to after its last window or shortly before it ends (no pause
    after it, or a phase lever's switch back), so samples that begin or end more than ``SPAN_SLACK_S``
    away (a file cut short, or replaced by a part of itself) leave windows without the data they were
    measured from. Only footers are read: the files' statistics of the times.
    """
    if windows.num_rows == 0:
        return
    if samples.num_rows == 0:
        raise TraceError(f"{d / 'samples.parquet'}: no samples, but {windows.num_rows} windows; the file is damaged "
                         "or replaced: measure the point again (delete its folder)")
    have, first, last = (_column_range(samples, "t_s"), _column_range(windows, "start_s"),
                         _column_range(windows, "end_s"))
    if have is None or first is None or last is None:  # written without statistics: nothing cheap to compare
        return
    if have[0] > first[0] + SPAN_SLACK_S or have[1] < last[1] - SPAN_SLACK_S:
        raise TraceError(f"{d / 'samples.parquet'}: the samples span {have[0]:.3f}-{have[1]:.3f} s but the windows "
                         f"{first[0]:.3f}-{last[1]:.3f} s; the file is cut short or replaced: measure the point "
                         "again (delete its folder)")


def select_points(traces: str, measured: str, points: list[GridPoint]) -> list[GridPoint]:
    """The grid points the workflow takes from a traces folder, checked cheaply at DAG time.

    A cached folder (anything but ``measured``) must exist, hold traces of this grid, and sit outside
    ``results/``; points it lacks are left out (a warning says how many). In the measured folder a trace
    whose files do not have their recorded sizes (truncated, half-copied) is moved aside to
    ``results/traces-damaged/`` so that the workflow measures the point again.
    """
    root = Path(traces)
    check_layout(root)
    if traces != measured:
        if Path(measured).parent in (root, *root.parents) or traces.startswith(str(Path(measured).parent) + "/"):
            raise TraceError(f"config key 'traces': {traces!r} lies under {Path(measured).parent}/ but is not "
                             f"{measured}: measured traces go to {measured}; put cached traces outside "
                             f"{Path(measured).parent}/ (accepted: {measured} to measure, or a folder elsewhere)")
        if not root.is_dir():
            raise TraceError(f"config key 'traces': folder {traces!r} does not exist; accepted: {measured} (to "
                             "measure) or a folder of cached traces (engine~E/arch~A/...)")
        present = [p for p in points if (root / p.path / "status.json").exists()]
        if not present:
            found = sum(1 for _ in root.rglob("status.json"))
            raise TraceError(f"config key 'traces': folder {traces!r} holds no trace of this grid ({found} "
                             "status.json files in all); check the folder and the grid (architectures, "
                             "batch_sizes, contexts, levers, engines)")
        return present
    for p in points:
        d = root / p.path
        if not (d / "status.json").exists():
            continue
        try:
            verify_trace(d, p, deep=False)
        except TraceError as e:
            aside = Path(f"{measured}-damaged") / p.path
            aside.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(aside, ignore_errors=True)
            shutil.move(str(d), str(aside))
            log.warning("%s; moved to %s, the point is measured again", e, aside)
    return points


LEGACY_POINT_GLOB = "arch~*/bs~*/ctx~*/lever~*/rep~*"


class TraceLayoutError(TraceError):
    """A traces folder in a layout this version does not read; the message says how to convert it."""


def check_layout(traces_dir: str | Path) -> None:
    """Refuse a traces folder written before engines were a grid axis (``arch~...`` at its top)."""
    root = Path(traces_dir)
    if root.is_dir() and any(root.glob(f"{LEGACY_POINT_GLOB}/status.json")):
        raise TraceLayoutError(
            f"traces folder {str(root)!r} holds traces in the layout before engines (arch~A/... at its top, "
            f"no engine~E/ level); convert it once with: phase-energy migrate-traces {root}")


def migrate_traces(traces_dir: str | Path, engine: str = "native") -> list[Path]:
    """Move legacy point folders (``arch~A/...``) under ``engine~<engine>/``; return the points moved.

    Traces written before engines were an axis all came from the native engine. A point that already exists
    in the new layout is left where it is and reported, never overwritten.
    """
    root = Path(traces_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"traces folder {str(root)!r} does not exist")
    moved = []
    for arch_dir in sorted(root.glob("arch~*")):
        target = root / f"engine~{engine}" / arch_dir.name
        if target.exists():
            raise FileExistsError(f"{target} exists already: merge {arch_dir} into it by hand")
        target.parent.mkdir(parents=True, exist_ok=True)
        moved += [p.parent.relative_to(root) for p in arch_dir.glob("bs~*/ctx~*/lever~*/rep~*/status.json")]
        arch_dir.rename(target)
    return moved
