"""The trace format: one folder per job with samples, windows, metadata and status (docs/trace-format.md)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .config import GridPoint, load_schema

log = logging.getLogger(__name__)

FORMAT_VERSION = 1

#: Columns of samples.parquet (SI units; the name carries the unit).
SAMPLE_COLUMNS: dict[str, str] = {
    "t_s": "float64",  # seconds since the job's time origin (device clock for power fields)
    "power_t_s": "float64",  # device timestamp of the power fields, on the same time origin
    "energy_j": "float64",  # energy counter, J since the origin (NaN in a gap)
    "power_instant_w": "float64",
    "power_avg_w": "float64",  # 1-s running average as NVML reports it
    "sm_clock_mhz": "float64",
    "mem_clock_mhz": "float64",
    "clock_reasons": "int64",  # bitmask, NVML clock-event reasons
    "thr_sw_power_s": "float64",  # cumulative throttle counters, seconds since origin
    "thr_sw_thermal_s": "float64",
    "thr_hw_thermal_s": "float64",
    "thr_hw_power_brake_s": "float64",
    "thr_board_limit_s": "float64",
    "thr_reliability_s": "float64",
    "temperature_c": "float64",
    "utilization_pct": "float64",
    "n_processes": "int64",  # compute processes on the GPU
    "gap": "bool",  # a poll that failed: values NaN, job went on
}
THROTTLE_COLUMNS = [c for c in SAMPLE_COLUMNS if c.startswith("thr_")]

#: Columns of windows.parquet.
WINDOW_COLUMNS: dict[str, str] = {
    "phase": "string",  # idle | prefill | decode
    "trial": "int64",
    "start_s": "float64",
    "end_s": "float64",
    "duration_s": "float64",
    "energy_j": "float64",  # counter difference, tick-aligned (gross; docs/trace-format.md)
    "energy_counter_raw_j": "float64",  # plain difference of the two synchronised counter reads
    "energy_trapz_j": "float64",  # trapezoid integral of instant power
    "tokens": "int64",  # tokens processed in the window (prefill: input, decode: output)
    "repetitions": "int64",  # how often the same work ran back to back
    "steps": "int64",  # decode steps per repetition (prefill: 1)
    "context_start": "int64",  # context position at the window's first decode step
    "context_end": "int64",
    "counter_ticks": "int64",  # distinct counter values seen inside the window
    "sm_clock_mhz": "float64",  # time-weighted
    "power_mean_w": "float64",
    "temperature_start_c": "float64",
    "temperature_end_c": "float64",
    **{c: "float64" for c in THROTTLE_COLUMNS},  # seconds throttled inside the window
    "cap_hold_excluded_s": "float64",  # head of a trial's first decode window still in the prefill's cap hold
    "thr_sw_power_steady_s": "float64",  # seconds under the SW power cap after that head
    "flags": "string",  # comma-separated validity flags, "" when valid
}


def empty_frame(columns: Mapping[str, str]) -> pd.DataFrame:
    """An empty DataFrame with the given typed columns."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()})


def conform(df: pd.DataFrame, columns: Mapping[str, str]) -> pd.DataFrame:
    """Order and type the columns of a table as the format prescribes (missing ones raise)."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"trace table lacks columns {missing}; required: {list(columns)}")
    return df[list(columns)].astype(dict(columns))


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _atomic_parquet(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    df.to_parquet(tmp, index=False, compression="zstd")
    os.replace(tmp, path)


def file_digest(path: Path) -> str:
    """SHA-256 of a file, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_files(out_dir: str | Path, tables: Mapping[str, pd.DataFrame], metadata: Mapping[str, Any],
                status: Mapping[str, Any]) -> None:
    """Write parquet tables, metadata.json and status.json (last); each file appears whole or not at all.

    status.json records every other file's size and SHA-256 (``files``), so that a damaged or truncated file
    is found when the trace is read (:func:`verify_trace`).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for name, df in tables.items():
        _atomic_parquet(df, out / f"{name}.parquet")
        names.append(f"{name}.parquet")
    _atomic_write_bytes(out / "metadata.json", json.dumps(metadata, indent=1, default=str).encode())
    names.append("metadata.json")
    files = {n: {"bytes": (out / n).stat().st_size, "sha256": file_digest(out / n)} for n in names}
    _atomic_write_bytes(out / "status.json", json.dumps({**status, "files": files}, indent=1, default=str).encode())


def write_trace(
    out_dir: str | Path,
    samples: pd.DataFrame,
    windows: pd.DataFrame,
    metadata: Mapping[str, Any],
    status: Mapping[str, Any],
) -> None:
    """Write one job's trace; each file appears whole or not at all, status.json last."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    validate_metadata(metadata)
    write_files(out, {"samples": conform(samples, SAMPLE_COLUMNS), "windows": conform(windows, WINDOW_COLUMNS)},
                metadata, status)


def validate_metadata(metadata: Mapping[str, Any]) -> None:
    """Check metadata against the schema; raise ValueError naming the bad field."""
    try:
        jsonschema.validate(dict(metadata), load_schema("metadata"))
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "<top level>"
        raise ValueError(f"trace metadata field {where!r}: {e.message}") from e


def read_trace(trace_dir: str | Path) -> dict[str, Any]:
    """Read one job folder: samples, windows, metadata and status."""
    d = Path(trace_dir)
    return {
        "samples": pd.read_parquet(d / "samples.parquet"),
        "windows": pd.read_parquet(d / "windows.parquet"),
        "metadata": json.loads((d / "metadata.json").read_text()),
        "status": json.loads((d / "status.json").read_text()),
    }


def read_table(folder: str | Path, name: str) -> pd.DataFrame:
    """A result table (parquet or CSV) by name; empty when absent or written empty by a stage."""
    p = Path(folder) / name
    if not p.exists():
        return pd.DataFrame()
    if p.suffix == ".parquet":
        return pd.read_parquet(p)
    try:
        return pd.read_csv(p)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def job_dirs(traces_dir: str | Path) -> list[Path]:
    """Every job folder under a traces folder (those with a status.json)."""
    return sorted(p.parent for p in Path(traces_dir).rglob("status.json"))


POINT_KEYS = ("engine", "arch", "paradigm", "batch", "context", "lever_requested", "rep", "backend")


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
    for name, rec in (status.get("files") or {}).items():
        f = d / name
        if not f.exists() or f.stat().st_size != rec.get("bytes"):
            size = f.stat().st_size if f.exists() else "no file"
            raise TraceError(f"{f}: {size} bytes where status.json recorded {rec.get('bytes')}; the file is "
                             "truncated or replaced: measure the point again (delete its folder)")
        if deep and file_digest(f) != rec.get("sha256"):
            raise TraceError(f"{f}: its content differs from the SHA-256 status.json recorded; the file is "
                             "damaged: measure the point again (delete its folder) or restore it from a copy")
    if status["status"] == "ok":
        try:
            rows = pq.ParquetFile(d / "windows.parquet").metadata.num_rows
            pq.ParquetFile(d / "samples.parquet")
        except (OSError, pa.ArrowException) as e:
            raise TraceError(f"{d}: a parquet file is missing or unreadable ({e}); measure the point again") \
                from None
        if "windows" in status and rows != status["windows"]:
            raise TraceError(f"{d / 'windows.parquet'}: {rows} windows where status.json recorded "
                             f"{status['windows']}; the trace is damaged: measure the point again")
    return status, meta


def collect_windows(dirs: Iterable[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Windows of many jobs with their point columns, and one status row per job.

    Every trace is verified first (:func:`verify_trace`, against the point its folder names); only ``ok``
    traces contribute windows, ``skipped`` ones a status row with their reason.
    """
    frames = []
    statuses = []
    for d in dirs:
        d = Path(d)
        p = GridPoint.from_path(d)
        if not (d / "status.json").exists():  # a cached traces folder that lacks this point
            statuses.append({"engine": p.engine, "arch": p.arch, "batch": p.batch, "context": p.context,
                             "lever": p.lever, "rep": p.rep, "job": str(d), "status": "missing",
                             "reason": "not in the traces folder"})
            continue
        status, meta = verify_trace(d, p)
        point = {k: meta.get(k) for k in POINT_KEYS}
        point["engine"] = engine_of(meta)
        point["lever"] = point.pop("lever_requested")
        point["job"] = str(d)
        statuses.append({**point, "status": status["status"], "reason": status.get("reason", "")})
        if status["status"] != "ok":
            continue
        w = pd.read_parquet(d / "windows.parquet")
        if len(w):
            for k, v in point.items():
                w[k] = v
            w["power_limit_w"] = (meta.get("lever_enforced") or {}).get("power_limit_w")
            w["locked_sm_clock_mhz"] = (meta.get("lever_enforced") or {}).get("locked_sm_clock_mhz")
            w["bandwidth_bps"] = meta["gpu"].get("bandwidth_bps")
            w["matmul_flops"] = meta["gpu"].get("matmul_flops")
            frames.append(w)
    windows = pd.concat(frames, ignore_index=True) if frames else empty_frame(WINDOW_COLUMNS)
    return windows, pd.DataFrame(statuses)


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


def _git_commit() -> str | None:
    if os.environ.get("PHASE_ENERGY_GIT_COMMIT"):  # a copy of the tree without .git (compute nodes, tarballs)
        return os.environ["PHASE_ENERGY_GIT_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def package_versions(names: Iterable[str] = ("phase-energy", "torch", "numpy", "pandas", "pyarrow",
                                             "nvidia-ml-py", "triton", "flash-linear-attention",
                                             "fla-core", "snakemake", "vllm", "transformers")
                     ) -> dict[str, str | None]:
    """Installed versions of the packages a trace depends on (None when absent)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = importlib_metadata.version(n)
        except importlib_metadata.PackageNotFoundError:
            out[n] = None
    return out


def provenance() -> dict[str, Any]:
    """Versions, commit and host of the running job."""
    return {"versions": package_versions(), "git_commit": _git_commit(), "host": platform.node()}


def utc_now() -> str:
    """ISO-8601 UTC timestamp."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
