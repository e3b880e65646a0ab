"""Damaged traces, bad traces folders and hostile values: each is refused with its file or key, never used.

docs/reliability.md lists every case with the test that covers it.
"""

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phase_energy.config import ConfigError, validate_config
from phase_energy.grid import GridPoint
from phase_energy.measure.job import run_job
from phase_energy.measure.layout import TraceError, select_points, verify_trace
from phase_energy.measure.trace import collect_windows, conform, frame_from_rows

from .conftest import copy_workflow, run_snakemake

CFG = validate_config({"backend": "sim", "output_lengths": [32], "measurement": {
    "idle_s": 0.3, "warmup_runs": 1, "min_counter_ticks": 3, "prefill_trials": 2, "decode_trials": 2,
    "decode_windows": 1, "pause_s": 0.05}})
POINT = GridPoint("qwen3-4b", 1, 128, "default")


@pytest.fixture(scope="module")
def good_trace(tmp_path_factory):
    root = tmp_path_factory.mktemp("traces")
    run_job(CFG, POINT, root / POINT.path)
    other = GridPoint("qwen3-4b", 8, 128, "default")
    run_job(CFG, other, root / other.path)
    return root


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _edit_json(name, change):
    def apply(d: Path) -> None:
        value = json.loads((d / name).read_text())
        change(value)
        (d / name).write_text(json.dumps(value))
    return apply


def _drop_checksums_and_windows(d: Path) -> None:
    status = json.loads((d / "status.json").read_text())
    status.pop("files")
    status["windows"] += 1
    (d / "status.json").write_text(json.dumps(status))


def _drop_checksums_and_truncate_samples(d: Path) -> None:
    """A trace of the time before checksums whose samples lost their end: only the footer can tell."""
    status = json.loads((d / "status.json").read_text())
    status.pop("files")
    (d / "status.json").write_text(json.dumps(status))
    _truncate(d / "samples.parquet")


def _drop_checksums_and_rewrite_samples(keep: float):
    """A trace before checksums whose samples were replaced by a readable part of themselves (``keep``)."""
    def apply(d: Path) -> None:
        status = json.loads((d / "status.json").read_text())
        status.pop("files")
        (d / "status.json").write_text(json.dumps(status))
        samples = pd.read_parquet(d / "samples.parquet")
        samples.iloc[: int(len(samples) * keep)].to_parquet(d / "samples.parquet")
    return apply


def _windows_of_another_point(d: Path) -> None:
    shutil.copy(Path(str(d).replace("/bs~1/", "/bs~8/")) / "windows.parquet", d / "windows.parquet")


# (name, what is done to a good trace, words the error must contain)
CORRUPTIONS = [
    ("status empty object", lambda d: (d / "status.json").write_text("{}"), ["status.json", "None"]),
    ("status failed", lambda d: (d / "status.json").write_text('{"status": "failed"}'), ["status.json", "failed"]),
    ("status not JSON", lambda d: (d / "status.json").write_text("{'status': ok"), ["status.json", "not valid JSON"]),
    ("status empty file", lambda d: (d / "status.json").write_text(""), ["status.json", "not valid JSON"]),
    ("status a list", lambda d: (d / "status.json").write_text("[1]"), ["status.json", "JSON object"]),
    ("metadata batch changed", _edit_json("metadata.json", lambda m: m.update(batch=8)), ["metadata.json", "batch 8"]),
    ("metadata arch changed", _edit_json("metadata.json", lambda m: m.update(arch="mamba2-2.7b")),
     ["metadata.json", "arch 'mamba2-2.7b'"]),
    ("metadata engine changed", _edit_json("metadata.json", lambda m: m.update(engine="vllm")),
     ["metadata.json", "engine 'vllm'"]),
    ("metadata not JSON", lambda d: (d / "metadata.json").write_text("garbage"), ["metadata.json", "not valid JSON"]),
    ("metadata missing", lambda d: (d / "metadata.json").unlink(), ["metadata.json", "missing"]),
    ("bit flip in windows", lambda d: _flip_a_byte(d / "windows.parquet"), ["windows.parquet", "SHA-256"]),
    ("bit flip in samples", lambda d: _flip_a_byte(d / "samples.parquet"), ["samples.parquet", "SHA-256"]),
    ("truncated windows", lambda d: _truncate(d / "windows.parquet"), ["windows.parquet", "truncated"]),
    ("truncated samples", lambda d: _truncate(d / "samples.parquet"), ["samples.parquet", "truncated"]),
    ("windows deleted", lambda d: (d / "windows.parquet").unlink(), ["windows.parquet", "no file"]),
    ("samples deleted", lambda d: (d / "samples.parquet").unlink(), ["samples.parquet", "no file"]),
    ("windows of another point", _windows_of_another_point, ["windows.parquet"]),
    ("window count without checksums", _drop_checksums_and_windows, ["windows.parquet", "windows where"]),
    ("samples unreadable without checksums", _drop_checksums_and_truncate_samples, ["unreadable"]),
    ("samples emptied without checksums", _drop_checksums_and_rewrite_samples(0.0), ["samples.parquet", "no samples"]),
    ("samples halved without checksums", _drop_checksums_and_rewrite_samples(0.5),
     ["samples.parquet", "cut short"]),
    ("metadata without its gpu record", _edit_json("metadata.json", lambda m: m.pop("gpu")),
     ["metadata.json", "no 'gpu' record"]),
    ("bit flip in metadata", lambda d: _flip_a_byte(d / "metadata.json"), ["metadata.json"]),
]


@pytest.mark.parametrize("name,damage,words", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_a_damaged_trace_is_refused_naming_its_file(tmp_path, good_trace, name, damage, words):
    root = tmp_path / "traces"
    shutil.copytree(good_trace, root)
    d = root / POINT.path
    verify_trace(d, POINT)  # the good trace passes
    damage(d)
    with pytest.raises(TraceError) as e:
        collect_windows([d])
    for w in words:
        assert w in str(e.value), str(e.value)


def test_samples_without_a_column_the_summary_reads_are_named(tmp_path, good_trace):
    from phase_energy.analysis.energy import rederive_windows

    root = tmp_path / "traces"
    shutil.copytree(good_trace, root)
    d = root / POINT.path
    pd.read_parquet(d / "samples.parquet").drop(columns=["energy_j"]).to_parquet(d / "samples.parquet")
    status = json.loads((d / "status.json").read_text())
    status.pop("files"), status.pop("summary")  # a trace before checksums, summarised by other code
    (d / "status.json").write_text(json.dumps(status))
    windows, _ = collect_windows([d])
    with pytest.raises(TraceError, match=r"bs~1/.*samples.parquet: no columns \['energy_j'\], which the windows'"):
        rederive_windows(windows, CFG)


@pytest.mark.parametrize("lever,measurement", [
    ("phase:prefill=default,decode=smclock:1410", {}),  # the last window: the switch back, after the pause
    ("default", {"pause_s": 0.0}),  # no pause after the last window: the sampler stops at its end
])
def test_whole_traces_whose_samples_end_with_their_last_window_are_kept(tmp_path, monkeypatch, lever, measurement):
    """The samples-span check is for traces without checksums; a whole trace whose last window ends as the
    sampler stops (or a little after) is neither refused nor moved aside."""
    monkeypatch.chdir(tmp_path)
    cfg = validate_config({**CFG, "allow_gpu_settings": True, "measurement": {**CFG["measurement"], **measurement}})
    p = GridPoint("qwen3-4b", 1, 128, lever)
    run_job(cfg, p, Path("results/traces") / p.path)
    assert select_points("results/traces", "results/traces", [p]) == [p]
    assert (Path("results/traces") / p.path / "status.json").exists() and not Path("results/traces-damaged").exists()
    verify_trace(Path("results/traces") / p.path, p, deep=True)


def test_a_trace_in_the_wrong_folder_is_refused(tmp_path, good_trace):
    root = tmp_path / "traces"
    shutil.copytree(good_trace, root)
    wrong = root / GridPoint("qwen3-4b", 32, 128, "default").path
    shutil.copytree(root / POINT.path, wrong)
    with pytest.raises(TraceError, match=r"batch 1 .the folder says 32"):
        collect_windows([wrong])


def test_skipped_traces_count_no_windows(tmp_path):
    cfg = validate_config({**CFG, "gpu": {"memory_budget_gb": 1}})
    run_job(cfg, POINT, tmp_path / POINT.path)
    windows, jobs = collect_windows([tmp_path / POINT.path])
    assert windows.empty and jobs.loc[0, "status"] == "skipped" and jobs.loc[0, "reason"].startswith("memory")


def test_measured_traces_whose_files_lost_their_size_are_moved_aside(tmp_path, good_trace, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = Path("results/traces")
    shutil.copytree(good_trace, root)
    _truncate(root / POINT.path / "windows.parquet")
    points = select_points("results/traces", "results/traces", [POINT])
    assert points == [POINT] and not (root / POINT.path).exists()  # measured again by the workflow
    assert (Path("results/traces-damaged") / POINT.path / "windows.parquet").exists()  # kept for a look


@pytest.mark.parametrize("folder,words", [
    ("missing-folder", ["'missing-folder'", "does not exist"]),
    ("empty-folder", ["'empty-folder'", "holds no trace"]),
    ("garbage-folder", ["'garbage-folder'", "holds no trace", "1 status.json"]),
    ("results/traces2", ["results/traces2", "lies under results/"]),
    ("results", ["'results'", "lies under results/"]),
])
def test_bad_traces_folders_are_named(tmp_path, monkeypatch, folder, words):
    monkeypatch.chdir(tmp_path)
    Path("empty-folder").mkdir()
    Path("garbage-folder/x").mkdir(parents=True)
    Path("garbage-folder/x/status.json").write_text("not json")
    with pytest.raises(TraceError) as e:
        select_points(folder, "results/traces", [POINT])
    for w in words:
        assert w in str(e.value), str(e.value)


@pytest.mark.slow
def test_workflow_measures_a_damaged_trace_again_and_quotes_hostile_paths(tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    args = ["--cores", "2", "--configfile", "config/test.yaml", "--config", "architectures=[qwen3-4b]",
            "batch_sizes=[1]", "levers=[default]"]
    res = run_snakemake(wd, *args)
    assert res.returncode == 0, res.stderr[-3000:]
    trace = wd / "results/traces/engine~native/arch~qwen3-4b/bs~1/ctx~256/lever~default/rep~0"
    before = json.loads((trace / "status.json").read_text())["files"]["windows.parquet"]["sha256"]
    _truncate(trace / "windows.parquet")
    res = run_snakemake(wd, *args)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "measured again" in res.stderr
    after = json.loads((trace / "status.json").read_text())["files"]["windows.parquet"]["sha256"]
    assert after == before  # the simulator is seeded: the point came back as it was
    # a cached traces folder whose name holds a space and a command substitution: read, never run
    hostile = wd / "cached $(touch PWNED) x"
    shutil.copytree(wd / "results/traces", hostile)
    res = run_snakemake(wd, *args[:-3], "architectures=[qwen3-4b]", "batch_sizes=[1]", "levers=[default]",
                        f"traces={hostile.name}", "results=results-cached")  # results/ holds the measured run
    assert res.returncode == 0, res.stderr[-3000:]
    assert not (wd / "PWNED").exists() and (wd / "results-cached/figures/fig01_power_timeline.svg").exists()
    assert pd.read_csv(wd / "results-cached/tables/jobs.csv")["status"].tolist() == ["ok"]


def test_a_simulated_trace_without_its_status_or_missing_a_table_is_measured_again(tmp_path):
    """A simulated measure job declares status.json alone (written last, with each other file's checksum).

    So Snakemake does not see the tables: a job that died before its status.json leaves stale tables behind,
    and a table can go missing after the job. Both points must be measured again, whole.
    """
    wd = copy_workflow(tmp_path / "wf")
    args = ["traces", "--cores", "1", "--configfile", "config/test.yaml", "--config", "architectures=[qwen3-4b]",
            "batch_sizes=[1,8]", "levers=[default]"]
    res = run_snakemake(wd, *args)
    assert res.returncode == 0, res.stderr[-3000:]
    root = wd / "results/traces"
    lost, died = (GridPoint("qwen3-4b", b, 256, "default") for b in (1, 8))
    tables = ("samples.parquet", "windows.parquet")  # metadata.json holds the job's times
    before = {p: {n: json.loads((root / p.path / "status.json").read_text())["files"][n] for n in tables}
              for p in (lost, died)}
    (root / lost.path / "samples.parquet").unlink()
    (root / died.path / "status.json").unlink()  # as a job killed between its tables and its status leaves it
    _truncate(root / died.path / "windows.parquet")
    (root / died.path / "gpu_windows.parquet").write_bytes(b"left by an earlier job")  # a file this job never writes
    res = run_snakemake(wd, *args)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "measured again" in res.stderr  # the trace missing a table, moved aside by the workflow's own check
    assert not (root / died.path / "gpu_windows.parquet").exists()  # the folder was emptied before the job
    for p in (lost, died):
        status, _ = verify_trace(root / p.path, p, deep=True)  # every file whole, with its recorded checksum
        assert status["status"] == "ok"
        assert {n: status["files"][n] for n in tables} == before[p]  # seeded: the same tables again


def test_a_table_built_from_rows_is_the_one_conform_makes_and_fails_as_it_does():
    cols = {"phase": "string", "trial": "int64", "energy_j": "float64"}
    rows = [{"phase": "decode", "trial": 0, "energy_j": 1.5}, {"phase": None, "trial": 1},  # energy_j missing
            {"trial": 2, "energy_j": float("nan"), "phase": "fill", "other": "x"}]  # another order, a key more
    made = frame_from_rows(rows, cols)
    pd.testing.assert_frame_equal(made, conform(pd.DataFrame(rows), cols), check_exact=True)
    assert made["phase"].isna().tolist() == [False, True, False] and made["energy_j"].isna().tolist()[1:] == [True] * 2
    with pytest.raises(ValueError, match=r"lacks columns \['trial'\]"):  # a column no row has
        frame_from_rows([{"phase": "a", "energy_j": 1.0}], cols)
    with pytest.raises((ValueError, TypeError)):  # an integer column with a hole
        frame_from_rows([{"phase": "a", "trial": 1, "energy_j": 1.0}, {"phase": "b", "energy_j": 2.0}], cols)
    with pytest.raises(ValueError, match="lacks columns"):  # no rows: no columns, as conform finds it
        frame_from_rows([], cols)


def test_numeric_columns_from_rows_are_those_pandas_makes_and_odd_values_go_through_pandas():
    """frame_from_rows takes NumPy's array where NumPy infers the column's own type (the fast path); any
    other values (a bool, a float in an integer column, a string) are converted, or refused, by pandas."""
    cols = {"n": "int64", "x": "float64"}
    for rows in ([{"n": 1, "x": 1}, {"n": np.int64(2), "x": 2.5}],  # an int among the floats
                 [{"n": 3, "x": 0}, {"n": 4, "x": 1}],  # only ints in a float column: NumPy says int64
                 [{"n": 5, "x": np.float32(0.1)}],  # float32 values: NumPy says float32, pandas makes float64
                 [{"n": True, "x": np.float64(0.25)}, {"n": False, "x": float("inf")}]):  # bools as integers
        made = frame_from_rows(rows, cols)
        want = pd.DataFrame({c: pd.array([r[c] for r in rows], dtype=t) for c, t in cols.items()})
        pd.testing.assert_frame_equal(made, want, check_exact=True)
        assert [str(t) for t in made.dtypes] == ["int64", "float64"]
    for odd in ({"n": 1.5, "x": "2.5"}, {"n": "7", "x": None}):  # a fraction, strings, a None: pandas's way
        want = pd.DataFrame({c: pd.array([odd[c]], dtype=t) for c, t in cols.items()})
        pd.testing.assert_frame_equal(frame_from_rows([odd], cols), want, check_exact=True)


def test_tables_convert_to_arrow_as_pyarrow_converts_them_and_write_the_same_bytes(tmp_path):
    """to_arrow keeps each names-and-dtypes' schema and converts later tables' columns to it: the table, its
    schema with the pandas metadata and the parquet file are those of pyarrow's own conversion."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from phase_energy.measure import trace

    def frame(n: int, seed: int) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        x = rng.normal(size=n)
        x[::3] = np.nan  # pyarrow makes NaN in a float column null
        return pd.DataFrame({"t_s": np.arange(n, dtype=float), "x": x, "n": rng.integers(0, 9, n),
                             "u": rng.integers(0, 9, n).astype("uint8"), "f": x.astype("float32"),
                             "gap": rng.random(n) < 0.5,
                             "phase": pd.array(rng.choice(["prefill", "decode", None], n), dtype="string"),
                             "kind": pd.Series(rng.choice(["a", "b"], n), dtype="str")})  # pandas' default

    with_attrs = frame(6, 5)
    with_attrs.attrs["run"] = "A"  # pyarrow writes attrs into the pandas metadata
    kinds = [frame(50, 0), frame(7, 1), frame(0, 2), frame(9, 3).astype({"n": "float64"}),  # another dtype
             frame(5, 4).astype({"phase": object}),  # an object column: pyarrow infers its type every time
             with_attrs, frame(4, 6)]  # the same names and dtypes as the first, without attrs
    for i, df in enumerate(kinds * 2):  # the second round takes the kept schemas
        ours, theirs = trace.to_arrow(df), pa.Table.from_pandas(df, preserve_index=False)
        assert ours.equals(theirs) and ours.schema.equals(theirs.schema, check_metadata=True)
        a, b = tmp_path / f"ours{i}.parquet", tmp_path / f"theirs{i}.parquet"
        trace._atomic_parquet(df, a)
        pq.write_table(theirs, b, **trace.parquet_options(theirs.schema))
        assert a.read_bytes() == b.read_bytes()
        pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b), check_exact=True)
        assert pd.read_parquet(a)["x"].isna().sum() == df["x"].isna().sum()  # NaN read back as NaN
    kept = [k for k in trace._SCHEMAS if [c for c, _ in k] == list(kinds[0].columns)]
    assert len(kept) == 2  # float or integer n; neither the object column's table nor the attrs' was kept
    # a later table of the same names and dtypes takes the kept schema (here marked) instead of pyarrow's
    key = tuple(zip(kinds[0].columns, kinds[0].dtypes, strict=True))
    schema = trace._SCHEMAS[key]
    trace._SCHEMAS[key] = schema.with_metadata({**schema.metadata, b"kept": b"yes"})
    try:
        assert trace.to_arrow(frame(3, 7)).schema.metadata[b"kept"] == b"yes"
    finally:
        trace._SCHEMAS[key] = schema


def test_trace_tables_keep_every_float_to_the_bit_in_their_encoding(tmp_path):
    """Floats in the byte-stream-split encoding, LZ4 compressed: every value read back as written, to the bit
    (signed zeros, infinities, the smallest numbers, NaN as pandas writes it), and the file says so."""
    import pyarrow.parquet as pq

    from phase_energy.measure import trace

    special = [0.0, -0.0, np.inf, -np.inf, 5e-324, -2.2250738585072014e-308, 1.7976931348623157e308, np.nan]
    x = np.concatenate([special, np.random.default_rng(0).normal(400.0, 50.0, 1000)])
    with np.errstate(over="ignore"):  # the largest double is infinite as a float32
        f = x.astype("float32")
    df = pd.DataFrame({"x": x, "f": f, "n": np.arange(len(x)), "gap": x > 400})
    trace._atomic_parquet(df, tmp_path / "t.parquet")
    back = pd.read_parquet(tmp_path / "t.parquet")
    for c in ("x", "f"):  # the bits of every value but NaN's (pyarrow writes NaN as null: read back as NaN)
        finite = ~np.isnan(df[c].to_numpy())
        assert np.array_equal(back[c].to_numpy()[finite].view(np.uint8), df[c].to_numpy()[finite].view(np.uint8))
        assert back[c].isna().sum() == 1
    pd.testing.assert_frame_equal(back, df, check_exact=True)
    meta = pq.ParquetFile(tmp_path / "t.parquet").metadata.row_group(0)
    cols = {meta.column(i).path_in_schema: meta.column(i) for i in range(meta.num_columns)}
    assert {c.compression for c in cols.values()} == {"LZ4"}  # pyarrow's name of its raw LZ4 (lz4_raw)
    assert all("BYTE_STREAM_SPLIT" in cols[c].encodings for c in ("x", "f"))
    assert "BYTE_STREAM_SPLIT" not in cols["n"].encodings


def test_conform_returns_a_conforming_table_itself_and_converts_any_other():
    cols = {"phase": "string", "trial": "int64"}
    ok = pd.DataFrame({"phase": pd.array(["a"], dtype="string"), "trial": [1]})
    assert conform(ok, cols) is ok
    for other in (ok[["trial", "phase"]], ok.assign(trial=[1.0]), ok.assign(more=2)):  # order, type, extra
        out = conform(other, cols)
        assert out is not other and list(out.columns) == list(cols)
        assert [str(t) for t in out.dtypes] == list(cols.values())


def test_windows_of_many_jobs_read_at_once_equal_each_read_alone(tmp_path, good_trace):
    """collect_windows converts all jobs' Arrow tables at once: the frame is that of each read and concatenated;
    a job whose table is typed otherwise (an older trace) is reconciled by pandas as before."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from phase_energy.measure.trace import tables_to_frame

    files = sorted(good_trace.rglob("windows.parquet"))
    tables = [pq.read_table(f) for f in files]
    alone = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    pd.testing.assert_frame_equal(tables_to_frame(tables), alone, check_exact=True)
    older = pd.read_parquet(files[0]).assign(trial=lambda w: w["trial"].astype("float64"))
    mixed = [pa.Table.from_pandas(older), tables[1]]
    pd.testing.assert_frame_equal(tables_to_frame(mixed), pd.concat([older, alone.iloc[len(older):]],
                                                                    ignore_index=True), check_exact=True)
    # the same Arrow types, other pandas types in the metadata (object against string): converted one by one
    a = pa.Table.from_pandas(pd.DataFrame({"flags": pd.Series(["x"], dtype=object)}), preserve_index=False)
    b = pa.Table.from_pandas(pd.DataFrame({"flags": pd.array(["y"], dtype=pd.StringDtype("python"))}),
                             preserve_index=False)
    assert a.schema.equals(b.schema) and not a.schema.equals(b.schema, check_metadata=True)
    pd.testing.assert_frame_equal(tables_to_frame([a, b]), pd.concat([a.to_pandas(), b.to_pandas()],
                                                                     ignore_index=True), check_exact=True)
    windows, _ = collect_windows([f.parent for f in files])
    pd.testing.assert_frame_equal(windows[alone.columns], alone, check_exact=True)


# ---------------------------------------------------------------------------------------------- config values
# (override, words the message must contain); with tests/test_config.py and tests/test_engines.py these make
# more than 60 malformed inputs
BAD_VALUES = [
    ({"batch_sizes": [1.0]}, ["batch_sizes[0]", "1.0", "write 1"]),
    ({"batch_sizes": [2.5]}, ["batch_sizes[0]", "2.5", "integer"]),
    ({"contexts": [512.0]}, ["contexts[0]", "512.0", "integer"]),
    ({"output_lengths": [float("inf")]}, ["output_lengths[0]", "inf", "finite"]),
    ({"repetitions": 2.0}, ["repetitions", "2.0", "integer"]),
    ({"seed": -1}, ["seed", "-1", ">= 0"]),
    ({"sim": {"noise": float("nan")}}, ["sim.noise", "nan", "finite"]),
    ({"sim": {"noise": -0.1}}, ["sim.noise", "-0.1", ">= 0"]),
    ({"sim": {"wall_delay_s": float("inf")}}, ["sim.wall_delay_s", "inf", "finite"]),
    ({"analysis": {"throughput_loss_bound": float("nan")}}, ["analysis.throughput_loss_bound", "nan", "finite"]),
    ({"analysis": {"throughput_loss_bound": 0}}, ["analysis.throughput_loss_bound", "0", "> 0"]),
    ({"analysis": {"bootstrap_resamples": 10}}, ["analysis.bootstrap_resamples", "10", ">= 50"]),
    ({"analysis": {"run_to_run_sd": -0.1}}, ["analysis.run_to_run_sd", "-0.1", ">= 0"]),
    ({"analysis": {"exclude_flags": ["too_hot"]}}, ["analysis.exclude_flags[0]", "too_hot", "short_window"]),
    ({"analysis": {"fleet_decode_share": 1.5}}, ["analysis.fleet_decode_share", "1.5", "<= 1"]),
    ({"measurement": {"idle_s": "nan"}}, ["measurement.idle_s", "nan", "finite"]),
    ({"measurement": {"counter_period_ms": -100}}, ["measurement.counter_period_ms", "-100", "> 0"]),
    ({"measurement": {"prefill_trials": 0}}, ["measurement.prefill_trials", "0", ">= 1"]),
    ({"measurement": {"decode_lead_in_s": -1}}, ["measurement.decode_lead_in_s", "-1", ">= 0"]),
    ({"measurement": {"decode_window_steps": 0}}, ["measurement.decode_window_steps", "0", ">= 1"]),
    ({"levers": ["powercap:0300", "powercap:300"]}, ["levers[1]", "powercap:300", "same lever"]),
    ({"levers": ["default", "default"]}, ["levers", "without repeated"]),
    ({"levers": ["powercap:300.5"]}, ["levers[0]", "powercap:300.5", "powercap:<watts>"]),
    ({"levers": ["smclock:-5"]}, ["levers[0]", "smclock:-5", "smclock:<MHz>"]),
    ({"levers": ["SMCLOCK:1410"]}, ["levers[0]", "SMCLOCK:1410", "smclock:<MHz>"]),
    ({"gpu": {"sm_clock_min_mhz": 2000}}, ["gpu.sm_clock_min_mhz", "2000", "min <= max"]),
    ({"gpu": {"memory_budget_gb": 0}}, ["gpu.memory_budget_gb", "0", "> 0"]),
    ({"cluster": {"gpu_freq_for_smclock": "maybe"}}, ["cluster.gpu_freq_for_smclock", "maybe", "boolean"]),
    ({"cluster": {"partition": "gpu"}}, ["cluster.partition", "unknown key", "gpu_freq_for_smclock"]),
    ({"clear": {"architectures": ["gpt-5"]}}, ["clear.architectures[0]", "gpt-5", "qwen3-4b"]),
    ({"clear": {"trials": 1}}, ["clear.trials", "1", ">= 2"]),
    ({"clear": {"repetitions": 0}}, ["clear.repetitions", "0", ">= 1"]),
    ({"clear": {"context": 0}}, ["clear.context", "0", ">= 1"]),
    ({"vllm": {"max_num_batched_tokens": 8}}, ["vllm.max_num_batched_tokens", "8", ">= 16"]),
    ({"vllm": {"compilation_mode": 4}}, ["vllm.compilation_mode", "4", "<= 3"]),
    ({"vllm": {"async_scheduling": "sometimes"}}, ["vllm.async_scheduling", "sometimes", "boolean"]),
    ({"traces": ""}, ["traces", "non-empty"]),
    ({"architectures": "qwen3-4b"}, ["architectures", "qwen3-4b", "array"]),
    ({"batch_sizes": [5000]}, ["batch_sizes[0]", "5000", "<= 4096"]),
    ({"backend": "NVML"}, ["backend", "NVML", "'nvml'"]),
]


@pytest.mark.parametrize("override,words", BAD_VALUES, ids=[str(b[0]) for b in BAD_VALUES])
def test_bad_values_name_key_value_and_accepted(override, words):
    with pytest.raises(ConfigError) as e:
        validate_config(override)
    for w in words:
        assert w in str(e.value), f"{w!r} missing from: {e.value}"


def test_lever_spellings_become_one():
    assert validate_config({"levers": ["powercap:0300", "smclock:01410"]})["levers"] == ["powercap:300",
                                                                                       "smclock:1410"]


@pytest.mark.parametrize("text,words", [
    ("batch_sizes: [1, 2\nbackend: sim\n", ["bad.yaml", "line"]),
    ("", ["bad.yaml", "empty"]),
    ("- 1\n- 2\n", ["bad.yaml", "mapping"]),
])
def test_check_config_names_the_file_of_a_broken_yaml(tmp_path, text, words, caplog):
    from phase_energy.cli import main

    (tmp_path / "bad.yaml").write_text(text)
    assert main(["check-config", str(tmp_path / "bad.yaml")]) == 2
    for w in words:
        assert w in caplog.text, caplog.text


def test_a_dead_worker_fails_its_job_naming_its_log_and_the_next_job_gets_a_new_one(tmp_path):
    from dataclasses import asdict

    from phase_energy.measure.workers import WorkerError, WorkerPool

    config = Path(__file__).parents[1] / "config" / "test.yaml"

    def job(name: str) -> dict:
        return {"config": str(config), "point": asdict(GridPoint("qwen3-4b", 1, 64, "default")),
                "out": str(tmp_path / name), "log": str(tmp_path / f"{name}.log")}

    pool = WorkerPool(1, tmp_path / "workers")
    try:
        pool.run(job("first"))
        first = pool._started[0]
        first.proc.kill()  # as the kernel's out-of-memory killer would
        first.proc.wait()
        with pytest.raises(WorkerError, match=r"ended \(exit code -9\).*worker-0\.log"):
            pool.run(job("second"))
        pool.run(job("third"))
        assert pool._started and pool._started[0] is not first
    finally:
        pool.close()
    assert json.loads((tmp_path / "third/status.json").read_text())["status"] == "ok"


def test_a_command_in_the_workflow_process_logs_its_warnings_to_its_job_log_once_per_place(tmp_path, monkeypatch,
                                                                                               capfd):
    """Python's warnings of an analysis run in the workflow's process go to the job's log, not to the console of
    the person running it, as the process's filters let them through, and before the error of a failed job
    (whose log's last line the console shows). The stage here is a stand-in that warns and, as "classes",
    fails (no real stage warns or fails on purpose)."""
    import warnings

    from phase_energy import cli
    from phase_energy.report.progress import last_line

    def stage(a):
        for _ in range(3):
            warnings.warn("overflow in a row that is dropped", RuntimeWarning, stacklevel=1)
        warnings.warn("another place", UserWarning, stacklevel=1)
        warnings.warn("noise the process filters out", UserWarning, stacklevel=1)
        log = logging.getLogger("phase_energy.analysis.stages")
        log.info("stage %s done", a.stage)
        if a.stage == "classes":
            raise ValueError("the stage broke")

    monkeypatch.setattr(cli, "cmd_analyse", stage)
    pkg = logging.getLogger("phase_energy")
    before = (pkg.level, pkg.propagate)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="noise the process")
        cli.run_in_process(["analyse", "pareto", "--config", "x.json"], tmp_path / "job.log")
        with pytest.raises(ValueError, match="the stage broke"):
            cli.run_in_process(["analyse", "classes", "--config", "x.json"], tmp_path / "failed.log")
    assert (pkg.level, pkg.propagate) == before  # the package's records reach the process's handlers again
    text = (tmp_path / "job.log").read_text()
    assert text.count("RuntimeWarning: overflow in a row that is dropped") == 1
    assert text.count("UserWarning: another place") == 1 and "stage pareto done" in text
    assert "noise" not in text
    failed = (tmp_path / "failed.log").read_text()
    assert "UserWarning: another place" in failed
    assert last_line(tmp_path / "failed.log") == "ValueError: the stage broke"  # what the console shows
    out, err = capfd.readouterr()
    assert "overflow" not in out + err and "another place" not in out + err


def test_a_worker_process_runs_a_job_and_keeps_its_own_log_where_told(tmp_path):
    """Simulated jobs with more than one core run in worker processes; each worker's own output goes to the
    log folder the run names (a run with its own results folder: <results>/logs/workers)."""
    from dataclasses import asdict

    from phase_energy.measure.workers import WorkerPool

    config = Path(__file__).parents[1] / "config" / "test.yaml"
    point = GridPoint("qwen3-4b", 1, 64, "default")
    pool = WorkerPool(1, tmp_path / "results-b" / "logs" / "workers")
    try:
        pool.run({"config": str(config), "point": asdict(point), "out": str(tmp_path / "trace"),
                  "log": str(tmp_path / "job.log")})
    finally:
        pool.close()
    assert (tmp_path / "results-b/logs/workers/worker-0.log").exists()
    assert json.loads((tmp_path / "trace/status.json").read_text())["status"] == "ok"
