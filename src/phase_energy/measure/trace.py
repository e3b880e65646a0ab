"""The trace format: one folder per job with samples, windows, metadata and status (docs/trace-format.md)."""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import numpy as np
import pandas as pd

from phase_energy.config import load_schema
from phase_energy.grid import GridPoint
from phase_energy.measure.layout import engine_of, file_digest, verify_trace
from phase_energy.model.checkpoint import weights_label

if TYPE_CHECKING:  # pyarrow is imported where a table is read or written: a GPU job's start does not wait for it
    import pyarrow as pa

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
    "phase": "string",  # idle | prefill | decode | fill (a serving engine) | switch_decode | switch_prefill
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
#: samples.parquet of a job on several GPUs (tensor parallel): the columns above and the job's GPU (0..n-1)
MULTI_SAMPLE_COLUMNS: dict[str, str] = {**SAMPLE_COLUMNS, "gpu": "int64"}
#: gpu_windows.parquet (jobs on several GPUs only): each window summarised on each GPU
GPU_WINDOW_COLUMNS: dict[str, str] = {"gpu": "int64", **WINDOW_COLUMNS}


def empty_frame(columns: Mapping[str, str]) -> pd.DataFrame:
    """An empty DataFrame with the given typed columns."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()})


def conform(df: pd.DataFrame, columns: Mapping[str, str]) -> pd.DataFrame:
    """Order and type the columns of a table as the format prescribes (missing ones raise).

    A table that already has exactly these columns, in this order and of these types, is returned as it is
    (every caller only reads or writes the result); otherwise a new frame.
    """
    names = list(columns)
    if list(df.columns) == names and all(str(t) == columns[c] for c, t in df.dtypes.items()):
        return df
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"trace table lacks columns {missing}; required: {names}")
    out = df[names]  # a new frame (selecting columns by a list never aliases the caller's for writes)
    change = {c: t for c, t in columns.items() if str(out[c].dtype) != t}  # astype only where the type differs
    return out.astype(change) if change else out


def frame_from_rows(rows: Sequence[Mapping[str, Any]], columns: Mapping[str, str]) -> pd.DataFrame:
    """``conform(pd.DataFrame(rows), columns)``, built a column at a time from the rows' values.

    The same table (a key that some rows lack is missing there, one that every row lacks raises), without
    first making a frame of Python objects and converting it: a job makes one of these per trace.
    """
    absent = [c for c in columns if not any(c in r for r in rows)]
    if not rows or absent:
        return conform(pd.DataFrame(rows), columns)  # the error, or the empty table, as conform gives them
    return pd.DataFrame({c: _column([r.get(c) for r in rows], t) for c, t in columns.items()})


def _column(values: list[Any], dtype: str) -> Any:
    """``pd.array(values, dtype=dtype)``'s values; NumPy's array where NumPy alone makes them of that dtype.

    NumPy infers int64 from Python or NumPy integers and float64 from floats (ints among them, NaN); anything
    else (a None, a bool, a string, a float in an integer column) goes through pandas, which converts or
    refuses it as before. NumPy's own conversion is the faster by far for a job's one table.
    """
    if dtype in ("int64", "float64"):
        arr = np.array(values)
        if arr.dtype == dtype:
            return arr
    return pd.array(values, dtype=dtype)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


#: Arrow schemas (with their pandas metadata) of the tables converted so far, by column names and dtypes
_SCHEMAS: dict[tuple[tuple[str, Any], ...], pa.Schema] = {}


def _fixed_dtype(dtype: Any) -> bool:
    """Whether a column of this dtype converts to one Arrow type whatever its values hold.

    NumPy booleans, integers and floats, and pandas' string dtype do; an object column's Arrow type is
    inferred from its values, so it does not.
    """
    return (isinstance(dtype, np.dtype) and dtype.kind in "biuf") or isinstance(dtype, pd.StringDtype)


def to_arrow(df: pd.DataFrame) -> pa.Table:
    """``pa.Table.from_pandas(df, preserve_index=False)``, the same table and schema, built faster.

    pyarrow's conversion works out each column's type and the pandas metadata in Python, several
    milliseconds a table; a job writes two. The first table with given column names and dtypes is converted
    so and its schema kept; later ones with the same names and dtypes (every job of a workflow's process)
    convert each column's values to that schema's type. Only where each dtype fixes the Arrow type (see
    :func:`_fixed_dtype`) and the frame has no ``attrs``; any other table is converted by pyarrow each time.
    """
    import pyarrow as pa

    key = tuple(zip(df.columns, df.dtypes, strict=True))
    # a frame's attrs go into the pandas metadata: a table that has any is converted by pyarrow
    simple = all(isinstance(c, str) for c in df.columns) and df.columns.is_unique and not df.attrs and all(
        _fixed_dtype(t) for t in df.dtypes)
    schema = _SCHEMAS.get(key) if simple else None
    if schema is None:
        table = pa.Table.from_pandas(df, preserve_index=False, nthreads=1)
        if simple:
            _SCHEMAS[key] = table.schema
        return table
    return pa.Table.from_arrays([_to_arrow_array(col, field.type) for (_, col), field in
                                 zip(df.items(), schema, strict=True)], schema=schema)


def _to_arrow_array(col: pd.Series, typ: pa.DataType) -> pa.Array:
    """One column as pyarrow converts a pandas column: NaN in a float column becomes null."""
    import pyarrow as pa

    if not isinstance(col.dtype, np.dtype):
        return pa.array(col.array, type=typ, from_pandas=True)
    values = col.to_numpy()
    # looking for NaN while converting is slow in pyarrow; a column without any converts the same without
    nan = values.dtype.kind == "f" and bool(np.isnan(values).any())
    return pa.array(values, type=typ, from_pandas=nan)


def parquet_options(schema: pa.Schema) -> dict[str, Any]:
    """How a trace's tables are written (``pyarrow.parquet.write_table``'s options for a table of ``schema``).

    LZ4 (the raw block format the Parquet specification names, not its deprecated Hadoop framing), with each
    float column in the byte-stream-split encoding (the bytes of its values grouped by their
    place, so that a measured series' similar exponents and leading digits lie together): a simulated job's
    tables a fifth smaller than in zstd and the plain encoding, and written in about half the time
    (docs/benchmarks.md); both are in the Parquet format's specification. No dictionary pages: measured
    floats rarely repeat, and without them writing is faster and files smaller.
    """
    import pyarrow as pa

    floats = {f.name: "BYTE_STREAM_SPLIT" for f in schema if pa.types.is_floating(f.type)}
    return {"compression": "lz4_raw", "use_dictionary": False, "column_encoding": floats or None}


def _atomic_parquet(df: pd.DataFrame, path: Path) -> None:
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.tmp")
    # pandas' to_parquet's table (to_arrow: pyarrow's conversion), written in this thread (a job's tables are
    # small: a thread pool costs more than it saves)
    table = to_arrow(df)
    pq.write_table(table, tmp, **parquet_options(table.schema))
    os.replace(tmp, path)


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
    gpu_windows: pd.DataFrame | None = None,
) -> None:
    """Write one job's trace; each file appears whole or not at all, status.json last.

    A job on several GPUs passes samples with a ``gpu`` column and its per-GPU windows (``gpu_windows``);
    a one-GPU job passes neither, and its files are as they always were.
    """
    out = Path(out_dir)
    validate_metadata(metadata)
    multi = "gpu" in samples.columns
    if multi != (gpu_windows is not None):
        raise ValueError("a trace on several GPUs needs samples with a 'gpu' column and its gpu_windows table; "
                         f"got the gpu column {'present' if multi else 'absent'} and gpu_windows "
                         f"{'absent' if gpu_windows is None else 'present'}")
    tables = {"samples": conform(samples, MULTI_SAMPLE_COLUMNS if multi else SAMPLE_COLUMNS),
              "windows": conform(windows, WINDOW_COLUMNS)}
    if gpu_windows is not None:
        tables["gpu_windows"] = conform(gpu_windows, GPU_WINDOW_COLUMNS)
    write_files(out, tables, metadata, status)


@functools.cache
def _validator(schema: str) -> jsonschema.Draft202012Validator:
    """A metadata schema's validator, checked and built once per process."""
    s = load_schema(schema)
    jsonschema.Draft202012Validator.check_schema(s)
    return jsonschema.Draft202012Validator(s)


def validate_metadata(metadata: Mapping[str, Any], schema: str = "metadata") -> None:
    """Check metadata against its schema (``metadata`` or ``clear-metadata``); raise ValueError naming the field."""
    try:
        _validator(schema).validate(dict(metadata))
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


POINT_KEYS = ("engine", "arch", "paradigm", "batch", "context", "lever_requested", "rep", "backend")


READ_THREADS = 4  # traces read at once by the analysis


def _read_for_collect(d: Path) -> tuple[dict[str, Any], dict[str, Any], pa.Table | None] | None:
    """A trace's status, metadata and (when ok) windows, verified against its folder's point; None if absent.

    The windows come as an Arrow table: :func:`collect_windows` converts all jobs' tables to pandas at once.
    """
    import pyarrow.parquet as pq

    if not (d / "status.json").exists():
        return None
    status, meta = verify_trace(d, GridPoint.from_path(d))
    return status, meta, pq.ParquetFile(d / "windows.parquet").read() if status["status"] == "ok" else None


def tables_to_frame(tables: Sequence[pa.Table]) -> pd.DataFrame:
    """Arrow tables (one per job) as one DataFrame, as ``pd.concat`` of each converted alone would give.

    Converting once is what makes reading thousands of small tables fast. Tables whose schemas differ, in
    their types or in the pandas metadata that tells each column's type and the index (traces written by
    older code), are converted one by one and concatenated by pandas, which reconciles them as it always did.
    """
    import pyarrow as pa

    first = tables[0].schema
    if all(t.schema.equals(first, check_metadata=True) for t in tables[1:]):
        return pa.concat_tables(tables).to_pandas()
    return pd.concat([t.to_pandas() for t in tables], ignore_index=True)


def read_tables_of(folders: Iterable[str | Path], name: str) -> Iterator[pd.DataFrame]:
    """One table (e.g. ``samples.parquet``) of each folder, in order, read a few at a time."""
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        yield from pool.map(lambda d: pd.read_parquet(Path(d) / name), folders)


def gpu_name_of(meta: Mapping[str, Any]) -> str:
    """The card's name from a trace's metadata (``NVIDIA H200``); empty for a simulated trace."""
    if meta.get("backend") == "sim":
        return ""
    return str((meta.get("gpu") or {}).get("name") or "")


def gpu_uuid_of(meta: Mapping[str, Any]) -> str:
    """The cards' UUIDs from a trace's metadata, comma-separated: a multi-GPU job's every card (``gpu.gpus``).

    Empty for a simulated trace or one that did not record them.
    """
    if meta.get("backend") == "sim":
        return ""
    gpu = meta.get("gpu") or {}
    uuids = [str(g.get("uuid")) for g in gpu.get("gpus") or [] if g.get("uuid")] or [str(gpu.get("uuid") or "")]
    return ",".join(u for u in uuids if u)


def weights_of(meta: Mapping[str, Any]) -> str:
    """The weights a trace ran with, as tables show them (``random (normal)``, ``checkpoint Qwen3-4B``).

    Traces written before the metadata had a ``weights`` record ran the native engine's random normal init.
    """
    return weights_label(meta.get("weights") or {"source": "random", "init": "normal"})


def collect_windows(dirs: Iterable[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Windows of many jobs with their point columns, and one status row per job.

    Every trace is verified first (:func:`verify_trace`, against the point its folder names); only ``ok``
    traces contribute windows, ``skipped`` ones a status row with their reason.
    """
    frames: list[pa.Table] = []
    jobs: list[dict[str, Any]] = []
    statuses = []
    folders = [Path(d) for d in dirs]
    # reading and checking each trace is file work (the GIL is let go): several at once, used in order
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        read = list(pool.map(_read_for_collect, folders))
    for d, got in zip(folders, read, strict=True):
        p = GridPoint.from_path(d)
        if got is None:  # a cached traces folder that lacks this point
            statuses.append({"engine": p.engine, "arch": p.arch, "batch": p.batch, "context": p.context,
                             "lever": p.lever, "rep": p.rep, "job": str(d), "status": "missing",
                             "reason": "not in the traces folder"})
            continue
        status, meta, w = got
        point = {k: meta.get(k) for k in POINT_KEYS}
        point["engine"] = engine_of(meta)
        point["lever"] = point.pop("lever_requested")
        point["job"] = str(d)
        statuses.append({**point, "status": status["status"], "reason": status.get("reason", "")})
        if w is None:  # not ok: no windows
            continue
        if w.num_rows:
            enforced = meta.get("lever_enforced") or {}
            jobs.append({**point, "power_limit_w": enforced.get("power_limit_w"),
                         "locked_sm_clock_mhz": enforced.get("locked_sm_clock_mhz"),
                         "bandwidth_bps": meta["gpu"].get("bandwidth_bps"),
                         "matmul_flops": meta["gpu"].get("matmul_flops"), "gpu_name": gpu_name_of(meta),
                         "gpu_uuid": gpu_uuid_of(meta),
                         "weights": weights_of(meta),
                         # the code and settings its windows were summarised with
                         "summary_stamp": status.get("summary")})
            frames.append(w)
    if not frames:
        return empty_frame(WINDOW_COLUMNS), pd.DataFrame(statuses)
    windows = tables_to_frame(frames)
    # each job's columns, one value per job, repeated over its windows (one column at a time, not one per job)
    rows = np.repeat(np.arange(len(frames)), [w.num_rows for w in frames])
    cols = {k: _job_column([j[k] for j in jobs]).take(rows).reset_index(drop=True) for k in jobs[0]}
    return pd.concat([windows, pd.DataFrame(cols)], axis=1), pd.DataFrame(statuses)


def _job_column(values: list[Any]) -> pd.Series:
    """One value per job as a column typed as each job's own column would be (None keeps it ``object``)."""
    if any(v is None for v in values):
        return pd.Series(values, dtype=object)
    return pd.Series(values)


@functools.cache  # once per process: a run's jobs in one process share the commit they started from
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


@functools.cache
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
    return {"versions": dict(package_versions()), "git_commit": _git_commit(), "host": platform.node()}


def utc_now() -> str:
    """ISO-8601 UTC timestamp."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
