"""A real card's job before its first window: every span recorded, and the compiler's modules imported ahead.

No GPU here: the jobs run through the job's own entry point (``run_job``) on the NVML backend with a fake
NVML (the card's settings and counters cannot be reached here), the native engine on CPU, and a stand-in
for the copy-bandwidth probe (it needs CUDA). Everything else is real: the backend's opening, the GPU lock,
the compile prefetch's thread and its imports, the protocol, the trace.
"""

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from phase_energy.config import validate_config
from phase_energy.grid import GridPoint

from .conftest import ROOT

MEASUREMENT = {"idle_s": 0.01, "warmup_runs": 1, "min_counter_ticks": 1, "prefill_trials": 1, "decode_trials": 1,
               "decode_windows": 1, "pause_s": 0.0, "lead_in_s": 0.01, "decode_lead_in_s": 0.0}
# the job's consecutive spans, in order: their sum is the time to the first window
JOB_PARTS = ["process_start_to_job_s", "open_backend_s", "compile_prefetch_wait_s", "probe_s", "build_workload_s",
             "lever_and_sampler_s", "idle_window_s", "warmup_s", "lead_in_s"]
OPEN_PARTS = ["import_torch_s", "nvml_open_s", "gpu_lock_s", "cuda_init_s"]


def _card_job(tmp_path, monkeypatch, out: Path) -> dict:
    """One qwen-like tiny point measured on a fake NVML card with the native engine on CPU; its metadata."""
    from phase_energy.engines.native.runner import EngineWorkload
    from phase_energy.measure import backend, job, nvml
    from phase_energy.testing.fake_nvml import FakeNVML

    fake = FakeNVML()
    monkeypatch.setenv("PHASE_ENERGY_STATE_DIR", str(tmp_path))
    real_gpu = nvml.GPU
    monkeypatch.setattr(nvml, "GPU", lambda i: real_gpu(i, nvml=fake))
    monkeypatch.setattr(backend, "measure_bandwidth_and_matmul", lambda: {"bandwidth_bps": 1e12, "matmul_flops": 1e14})
    monkeypatch.setattr(job, "build_workload", lambda cfg, point, settings, be: EngineWorkload(
        point.arch, point.batch, point.context, settings.max_output, device="cpu", dtype=torch.float32,
        compile=False))
    cfg = validate_config({"backend": "nvml", "output_lengths": [8], "measurement": MEASUREMENT})
    assert job.run_job(cfg, GridPoint("tiny-gqa", 2, 16, "default"), out) == "nvml"
    return json.loads((out / "metadata.json").read_text())


def test_a_card_job_records_every_span_to_its_first_window(tmp_path, monkeypatch):
    """The job's spans, in order, add up to its time to the first window; the parts of each are recorded."""
    monkeypatch.setenv("PHASE_ENERGY_COMPILE_PREFETCH", "1")
    meta = _card_job(tmp_path, monkeypatch, tmp_path / "trace")
    parts = meta["job_parts"]
    assert list(parts) == JOB_PARTS
    assert all(v >= 0 for v in parts.values())
    # consecutive spans from one clock: nothing before the first window is left out
    assert sum(parts.values()) == pytest.approx(meta["time_to_first_window_s"], abs=1e-6)
    assert list(meta["open_backend_parts"]) == OPEN_PARTS
    assert sum(meta["open_backend_parts"].values()) <= parts["open_backend_s"]
    info = meta["engine_info"]
    assert set(info["build_parts"]) >= {"construct_s", "init_s", "caches_s"}
    assert list(info["warmup_parts"]) == ["fill_cache_s", "first_step_s", "graph_capture_s", "runs_s"]
    # the engine's warm-up parts lie inside the job's warm-up span
    assert sum(info["warmup_parts"].values()) <= parts["warmup_s"]
    # a native job on a card imported its compiler's modules ahead, and said so
    prefetch = meta["compile_prefetch"]
    assert prefetch["error"] is None and "torch._dynamo" in prefetch["modules"]


def test_gpu_job_time_prints_every_part_of_a_card_job(tmp_path, monkeypatch, capsys):
    """bench/gpu_job_time.py on a card job's trace: each span, its parts, the prefetch and nothing unaccounted."""
    from bench import gpu_job_time

    monkeypatch.setenv("PHASE_ENERGY_COMPILE_PREFETCH", "1")
    traces = tmp_path / "traces"
    _card_job(tmp_path, monkeypatch, traces / "engine~native/arch~tiny-gqa/bs~2/ctx~16/lever~default/rep~0")
    monkeypatch.setattr(sys, "argv", ["gpu_job_time.py", str(traces), "--out", str(tmp_path / "t.json")])
    gpu_job_time.main()
    printed = capsys.readouterr().out
    lines = [line.strip().split(":")[0] for line in printed.splitlines() if line.startswith("  ")]
    shown = lines[:len(lines) // 2]  # "all", then the same for the engine
    spans = [k for k in shown if "." not in k]
    assert spans == [*JOB_PARTS, "unaccounted_s"]
    assert [k for k in shown if k.startswith("open_backend.")] == [f"open_backend.{k}" for k in OPEN_PARTS]
    assert "warmup.runs_s" in shown and "prefetch.import_s" in shown
    # each part's own parts follow it
    assert shown.index("open_backend.import_torch_s") == shown.index("open_backend_s") + 1
    assert shown.index("warmup.fill_cache_s") == shown.index("warmup_s") + 1
    assert shown.index("prefetch.import_s") == shown.index("compile_prefetch_wait_s") + 1
    result = json.loads((tmp_path / "t.json").read_text())
    assert result["all"]["median_parts_s"]["unaccounted_s"] == 0.0
    # where the time went adds up to the job's time: the idle windows lie inside the time to the first window
    job = result["longest_jobs"][0]
    spent = {k: v for k, v in job["seconds"].items() if k != "idle_windows"}
    assert {"prefill_windows", "decode_windows", "before_first_window", "between_windows"} <= set(spent)
    assert sum(spent.values()) == pytest.approx(job["process_to_last_window_s"])
    assert result["all"]["pooled_seconds"]["decode_windows"] == round(job["seconds"]["decode_windows"], 1)


def test_a_failed_prefetch_is_logged_and_the_job_goes_on(tmp_path, monkeypatch, caplog):
    """A module that fails to import ends the prefetch with a warning and a record; the job is measured."""
    from phase_energy.engines import compiler

    monkeypatch.setenv("PHASE_ENERGY_COMPILE_PREFETCH", "1")
    (tmp_path / "pe_broken_compiler_module.py").write_text("raise RuntimeError('broken on purpose')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(compiler, "PREFETCH_MODULES", ("json", "pe_broken_compiler_module", "torch._dynamo"))
    with caplog.at_level(logging.WARNING, logger="phase_energy.engines.compiler"):
        meta = _card_job(tmp_path, monkeypatch, tmp_path / "trace")
    assert meta["status"] == "ok" and list(meta["job_parts"]) == JOB_PARTS
    prefetch = meta["compile_prefetch"]
    assert list(prefetch["modules"]) == ["json"]  # the failure ended it
    assert "pe_broken_compiler_module" in prefetch["error"] and "broken on purpose" in prefetch["error"]
    assert any("pe_broken_compiler_module" in r.getMessage() for r in caplog.records)


def test_a_hung_import_does_not_hold_the_job(tmp_path, monkeypatch):
    """An import that does not end within the wait's limit is left in the background and recorded as such."""
    import threading

    from phase_energy.engines import compiler

    release = threading.Event()
    (tmp_path / "pe_hanging_compiler_module.py").write_text(
        "import builtins\nbuiltins._pe_release.wait(30)\n")
    import builtins

    monkeypatch.setattr(builtins, "_pe_release", release, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    prefetch = compiler.CompilePrefetch(("json", "pe_hanging_compiler_module")).start()
    record = prefetch.wait(timeout_s=0.2)
    assert "still importing after 0 s" in record["error"] and record["modules"] == {"json": record["modules"]["json"]}
    release.set()  # the import ends; the thread with it
    prefetch._thread.join(30)
    assert not prefetch._thread.is_alive()


def test_the_prefetch_is_off_with_its_switch_and_names_a_bad_value(tmp_path, monkeypatch):
    """PHASE_ENERGY_COMPILE_PREFETCH=0: no prefetch, the same spans; any value but 0 or 1 is refused by name."""
    from phase_energy.engines.compiler import start_compile_prefetch

    monkeypatch.setenv("PHASE_ENERGY_COMPILE_PREFETCH", "0")
    meta = _card_job(tmp_path, monkeypatch, tmp_path / "trace")
    assert "compile_prefetch" not in meta and list(meta["job_parts"]) == JOB_PARTS
    monkeypatch.setenv("PHASE_ENERGY_COMPILE_PREFETCH", "yes")
    with pytest.raises(ValueError, match=r"PHASE_ENERGY_COMPILE_PREFETCH='yes' is not accepted.*0.*1"):
        start_compile_prefetch()


def test_the_prefetch_is_off_by_default(tmp_path, monkeypatch):
    """Unset: a card job imports the compiler when it compiles (the prefetch gained nothing on the H200)."""
    monkeypatch.delenv("PHASE_ENERGY_COMPILE_PREFETCH", raising=False)
    meta = _card_job(tmp_path, monkeypatch, tmp_path / "trace")
    assert "compile_prefetch" not in meta and list(meta["job_parts"]) == JOB_PARTS
    assert meta["job_parts"]["compile_prefetch_wait_s"] < 0.01  # nothing to wait for


def test_a_simulated_job_has_no_prefetch_and_no_parts(tmp_path):
    """The simulator's jobs keep their traces as they were: no thread, no wall-clock parts (virtual clock)."""
    from phase_energy.measure.job import run_job

    cfg = validate_config({"backend": "sim", "output_lengths": [8], "measurement": MEASUREMENT})
    out = tmp_path / "trace"
    assert run_job(cfg, GridPoint("tiny-gqa", 2, 16, "default"), out) == "sim"
    meta = json.loads((out / "metadata.json").read_text())
    assert not {"job_parts", "compile_prefetch", "open_backend_parts"} & set(meta)


DRIVER = textwrap.dedent('''
    import json, sys
    from phase_energy.config import validate_config
    from phase_energy.grid import GridPoint
    from phase_energy.measure import backend, job, nvml
    from phase_energy.testing.fake_nvml import FakeNVML

    assert "torch" not in sys.modules  # the prefetch and the job's main thread both import it
    fake = FakeNVML()
    real_gpu = nvml.GPU
    nvml.GPU = lambda i: real_gpu(i, nvml=fake)
    backend.measure_bandwidth_and_matmul = lambda: {"bandwidth_bps": 1e12, "matmul_flops": 1e14}

    def cpu_engine(cfg, point, settings, be):
        import torch
        from phase_energy.engines.native.runner import EngineWorkload
        return EngineWorkload(point.arch, point.batch, point.context, settings.max_output, device="cpu",
                              dtype=torch.float32, compile=False)

    job.build_workload = cpu_engine
    cfg = validate_config({"backend": "nvml", "output_lengths": [8], "measurement": json.loads(sys.argv[2])})
    job.run_job(cfg, GridPoint("tiny-gqa", 2, 16, "default"), sys.argv[1])
    # after the prefetch the main thread compiles: its own Dynamo setting holds, the result is right
    import torch
    torch._dynamo.config.recompile_limit = 64
    f = torch.compile(lambda x: torch.sin(x) * 2, backend="aot_eager", dynamic=False)
    x = torch.arange(6.0)
    print(json.dumps({"compiled_matches_eager": bool(torch.equal(f(x), torch.sin(x) * 2)),
                      "recompile_limit": torch._dynamo.config.recompile_limit}))
''')


def test_in_a_fresh_process_the_prefetch_imports_alongside_the_job_and_ends(tmp_path):
    """A fresh process (nothing imported yet): the prefetch thread and the job's main thread import torch at once.

    The job ends (no import deadlock; the timeout only stops a hung process), the prefetch imported every
    module of its list that is installed, and a compile in the main thread afterwards works.
    """
    from phase_energy.engines.compiler import PREFETCH_MODULES

    out = tmp_path / "trace"
    env = dict(os.environ, PHASE_ENERGY_STATE_DIR=str(tmp_path), PHASE_ENERGY_COMPILE_CACHE=str(tmp_path / "cc"),
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")]))
    env["PHASE_ENERGY_COMPILE_PREFETCH"] = "1"
    run = subprocess.run([sys.executable, "-c", DRIVER, str(out), json.dumps(MEASUREMENT)], env=env,
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == {"compiled_matches_eager": True,
                                                               "recompile_limit": 64}
    meta = json.loads((out / "metadata.json").read_text())
    prefetch = meta["compile_prefetch"]
    assert prefetch["error"] is None
    import importlib.util

    installed = [m for m in PREFETCH_MODULES if importlib.util.find_spec(m.partition(".")[0]) is not None]
    assert list(prefetch["modules"]) == installed
    assert all(v >= 0 for v in prefetch["modules"].values())
    assert sum(prefetch["modules"].values()) <= prefetch["import_s"]
    assert sum(meta["job_parts"].values()) == pytest.approx(meta["time_to_first_window_s"], abs=1e-6)
    assert "compile prefetch" not in run.stderr  # nothing warned


CUDA_WATCH = textwrap.dedent('''
    import importlib, json, sys
    import torch
    import torch.cuda as cuda
    from phase_energy.engines.compiler import PREFETCH_MODULES

    calls = []
    for name in ("_lazy_init", "init", "is_available", "device_count", "current_device", "get_device_properties",
                 "get_device_capability", "set_device", "synchronize"):
        def watched(*a, _real=getattr(cuda, name), _name=name, **k):
            calls.append(_name)
            return _real(*a, **k)
        setattr(cuda, name, watched)
    for m in PREFETCH_MODULES:
        if importlib.util.find_spec(m.partition(".")[0]) is not None:
            importlib.import_module(m)
    print(json.dumps(calls))
''')


def test_the_prefetch_imports_touch_no_cuda(tmp_path):
    """The prefetch may run before the job holds its GPU's lock: its imports must not start CUDA there.

    In a fresh process (the modules not yet imported), importing the prefetch's modules calls none of
    torch.cuda's functions that initialise or query the device (through the module's attributes; a CPU build
    of torch here, the GPU's build may differ).
    """
    env = dict(os.environ, PHASE_ENERGY_COMPILE_CACHE=str(tmp_path / "cc"),
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-c", CUDA_WATCH], env=env, capture_output=True, text=True, timeout=600,
                         check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == []


def test_window_flags_counts_a_flag_per_phase_and_the_cells_it_empties(tmp_path, monkeypatch):
    """bench/window_flags.py on a card job's trace: every window counted once per phase; a flag set on all of a
    phase's windows of the trace shows as a 100 % share and names the trace, one on none as 0 %."""
    import pandas as pd
    from bench import window_flags

    trace = tmp_path / "traces/engine~native/arch~tiny-gqa/bs~2/ctx~16/lever~default/rep~0"
    _card_job(tmp_path, monkeypatch, trace)
    w = pd.read_parquet(trace / "windows.parquet")
    w["flags"] = ["made_up" if ph == "prefill" else "" for ph in w["phase"]]
    w.to_parquet(trace / "windows.parquet")
    out = tmp_path / "flags.json"
    monkeypatch.setattr(sys, "argv", ["window_flags.py", str(tmp_path / "traces"), "--flag", "made_up",
                                      "--out", str(out)])
    window_flags.main()
    phases = json.loads(out.read_text())["phases"]
    assert {k: v["windows"] for k, v in phases.items()} == w["phase"].value_counts().to_dict()
    assert phases["prefill"]["flagged_share"] == 1.0 and phases["prefill"]["traces_with_every_window_flagged"] == [
        str(trace)]
    assert phases["decode"]["flagged_share"] == 0.0 and phases["decode"]["traces_with_every_window_flagged"] == []
    low, high = phases["prefill"]["widest_flagged_window"]["power_instant_w"]
    assert 0 < low <= high


def test_protocol_ab_compares_a_points_windows_and_times_between_labels(tmp_path, monkeypatch, capsys):
    """bench/protocol_ab.py on two runs of one card job (fake NVML, CPU engine): each label's medians of the
    unflagged windows and the job's times, and after / before as their ratio; a flagged window counts in
    neither median."""
    import shutil

    import pandas as pd
    from bench import protocol_ab

    point = "engine~native/arch~tiny-gqa/bs~2/ctx~16/lever~default/rep~0"
    _card_job(tmp_path, monkeypatch, tmp_path / "before" / point)
    w = pd.read_parquet(tmp_path / "before" / point / "windows.parquet")
    (dec,) = w.index[w["phase"] == "decode"]
    pre = w.index[w["phase"] == "prefill"]
    w.loc[[dec, *pre], "flags"] = ""  # a loaded test machine may flag the fake card's short windows
    w.to_parquet(tmp_path / "before" / point / "windows.parquet")
    shutil.copytree(tmp_path / "before" / point, tmp_path / "after" / point)  # the same job, one window changed
    w.loc[dec, "energy_j"] *= 1.1  # after: 10 % more energy per decode token
    bad = w.loc[[dec]].copy()
    bad["energy_j"] *= 100  # and a window far off, flagged: it must not move the median
    bad["flags"] = "counter_trapz_mismatch"
    pd.concat([w, bad], ignore_index=True).to_parquet(tmp_path / "after" / point / "windows.parquet")
    monkeypatch.setattr(sys, "argv", ["protocol_ab.py", f"before={tmp_path / 'before'}",
                                      f"after={tmp_path / 'after'}", "--out", str(tmp_path / "ab.json")])
    protocol_ab.main()
    assert "tiny-gqa:2x16" in capsys.readouterr().out
    (row,) = json.loads((tmp_path / "ab.json").read_text())["points"]
    for label in ("before", "after"):
        assert row[f"{label}.decode_windows"] == 1 and row[f"{label}.runs"] == [str(tmp_path / label)]
        assert 0 < row[f"{label}.share_in_windows"] < 1
    before = pd.read_parquet(tmp_path / "before" / point / "windows.parquet").loc[dec]
    assert row["before.decode_mj_per_token"] == pytest.approx(1e3 * before["energy_j"] / before["tokens"], abs=1e-4)
    assert row["after_over_before.decode_mj_per_token"] == pytest.approx(1.1, abs=1e-3)
    assert row["after_over_before.prefill_mj_per_token"] == 1.0
    with pytest.raises(SystemExit, match="no ok trace of a real card"):
        monkeypatch.setattr(sys, "argv", ["protocol_ab.py", f"before={tmp_path / 'nothing'}"])
        protocol_ab.main()
    with pytest.raises(SystemExit, match="not accepted"):
        monkeypatch.setattr(sys, "argv", ["protocol_ab.py", f"during={tmp_path / 'after'}"])
        protocol_ab.main()


def test_a_forked_job_writes_the_trace_a_fresh_process_writes(tmp_path):
    """bench/job_loop.py --fork: a job forked from a parent that imported torch is its own process with the
    same trace (the simulator, seeded: the windows are equal) and the same exit status as a new process."""
    import pandas as pd
    from bench.job_loop import preload, run_forked

    assert "torch" in preload(("torch", "no_such_module_here"))  # a module not installed is skipped
    env = dict(os.environ)
    argv = ["measure", "--config", "config/test.yaml", "--arch", "qwen3-4b", "--batch", "1", "--context", "512",
            "--lever", "default"]
    forked, fresh = tmp_path / "forked", tmp_path / "fresh"
    assert run_forked([*argv, "--out", str(forked)], env, tmp_path / "forked.log", 120.0) == 0
    subprocess.run([sys.executable, "-m", "phase_energy.cli", *argv, "--out", str(fresh)], env=env, check=True,
                   capture_output=True)
    a, b = pd.read_parquet(forked / "windows.parquet"), pd.read_parquet(fresh / "windows.parquet")
    pd.testing.assert_frame_equal(a, b)
    assert json.loads((forked / "status.json").read_text())["status"] == "ok"

    bad = run_forked(["measure", "--config", "config/test.yaml", "--arch", "no-such-arch", "--batch", "1",
                      "--context", "512", "--lever", "default", "--out", str(tmp_path / "bad")], env,
                     tmp_path / "bad.log", 60.0)
    assert bad != 0
    assert "no-such-arch" in (tmp_path / "bad.log").read_text()


def test_the_fork_parent_names_the_import_that_started_cuda(tmp_path):
    """No CUDA here: a module of this test stands in for fla.ops, whose import starts CUDA on a GPU node (it
    asks the device for its name). The parent stops and names it, not a job that would fail on the GPU."""
    (tmp_path / "starts_cuda.py").write_text("import torch\ntorch.cuda.is_initialized = lambda: True\n")
    code = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]\n"
            "from bench.job_loop import preload\n"
            "preload(('torch', 'starts_cuda', 'triton'))\n")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path), str(ROOT)], capture_output=True, text=True,
                         check=False, timeout=300)
    assert res.returncode != 0
    assert "importing starts_cuda initialised CUDA" in res.stderr and "before it: torch" in res.stderr, res.stderr


BYTECODE = textwrap.dedent('''
    import json, sys
    from phase_energy.engines.compiler import use_bytecode_cache

    folder = use_bytecode_cache()
    sys.path.insert(0, sys.argv[1])
    import pe_bytecode_probe
    print(json.dumps({"folder": folder, "prefix": sys.pycache_prefix, "dont_write": sys.dont_write_bytecode}))
''')


def _bytecode_run(tmp_path: Path, **env_changes: str | None) -> tuple[dict, Path, Path]:
    """A fresh process that calls use_bytecode_cache() and imports a module of its own; what it printed, the
    module's folder and the compile cache."""
    src, cache = tmp_path / "src", tmp_path / "cc"
    src.mkdir()
    (src / "pe_bytecode_probe.py").write_text("VALUE = 1\n")
    env = dict(os.environ, PHASE_ENERGY_COMPILE_CACHE=str(cache),
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    for k in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX", "PHASE_ENERGY_PYCACHE"):
        env.pop(k, None)
    for k, v in env_changes.items():
        if v is not None:
            env[k] = v
    run = subprocess.run([sys.executable, "-c", BYTECODE, str(src)], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1]), src, cache


def test_the_bytecode_cache_writes_into_the_compile_cache_only(tmp_path):
    """PYTHONDONTWRITEBYTECODE=1: a module imported afterwards has its .pyc under <cache>/pycache, none beside it."""
    out, src, cache = _bytecode_run(tmp_path, PYTHONDONTWRITEBYTECODE="1")
    assert out == {"folder": str(cache / "pycache"), "prefix": str(cache / "pycache"), "dont_write": False}
    assert [p.name for p in (cache / "pycache").rglob("pe_bytecode_probe*.pyc")] != []
    assert list(src.rglob("*.pyc")) == [] and not (src / "__pycache__").exists()


def test_the_bytecode_cache_is_off_with_its_switch(tmp_path):
    """PHASE_ENERGY_PYCACHE=0: the interpreter's setting holds; nothing is written, here or beside the module."""
    out, src, cache = _bytecode_run(tmp_path, PYTHONDONTWRITEBYTECODE="1", PHASE_ENERGY_PYCACHE="0")
    assert out == {"folder": None, "prefix": None, "dont_write": True}
    assert not (cache / "pycache").exists() and list(src.rglob("*.pyc")) == []


def test_the_bytecode_cache_is_a_no_op_where_bytecode_is_written(tmp_path):
    """Without PYTHONDONTWRITEBYTECODE the interpreter writes bytecode as it does; nothing is changed."""
    out, src, cache = _bytecode_run(tmp_path)
    assert out == {"folder": None, "prefix": None, "dont_write": False}
    assert not (cache / "pycache").exists()
    assert [p.name for p in (src / "__pycache__").glob("pe_bytecode_probe*.pyc")] != []


def test_the_bytecode_cache_names_a_bad_switch_value(monkeypatch, caplog):
    """PHASE_ENERGY_PYCACHE accepts 0 or 1; any other value is refused by name, in the function and the command."""
    from phase_energy.cli import main
    from phase_energy.engines.compiler import use_bytecode_cache

    monkeypatch.setenv("PHASE_ENERGY_PYCACHE", "yes")
    with pytest.raises(ValueError, match=r"PHASE_ENERGY_PYCACHE='yes' is not accepted.*0.*1"):
        use_bytecode_cache()
    assert main(["measure", "--config", "config/test.yaml", "--arch", "qwen3-4b", "--batch", "1", "--context",
                 "512", "--lever", "default", "--out", "/nonexistent/never-written"]) == 2
    assert any("PHASE_ENERGY_PYCACHE='yes'" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


def test_a_measure_command_caches_its_bytecode(tmp_path):
    """`phase-energy measure` (a simulated job) with PYTHONDONTWRITEBYTECODE=1 writes the bytecode of what it
    imports (pandas, the job's modules) under the compile cache's pycache folder and says so in its log."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PHASE_ENERGY_COMPILE_CACHE=str(tmp_path / "cc"),
               PHASE_ENERGY_STATE_DIR=str(tmp_path))
    for k in ("PYTHONPYCACHEPREFIX", "PHASE_ENERGY_PYCACHE"):
        env.pop(k, None)
    run = subprocess.run([sys.executable, "-m", "phase_energy.cli", "measure", "--config", "config/test.yaml",
                          "--arch", "qwen3-4b", "--batch", "1", "--context", "512", "--lever", "default",
                          "--out", str(tmp_path / "trace")], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads((tmp_path / "trace" / "status.json").read_text())["status"] == "ok"
    assert f"bytecode cache: {tmp_path / 'cc' / 'pycache'}" in run.stderr
    cache = tmp_path / "cc" / "pycache"
    written = [p.relative_to(cache).as_posix() for p in cache.rglob("*.pyc")]
    assert any("/pandas/" in p for p in written) and any("/phase_energy/measure/" in p for p in written)


def _recorded_trace(folder: Path, engine: str, windows: list[tuple[str, int, float, float]],
                    energy: dict[tuple[str, int], tuple[float, str]] | None = None) -> None:
    """A trace as a card job records it, but only the files and fields bench/gpu_job_time.py reads.

    ``energy``: (phase, trial) -> (joules per token, flags) of those windows (1000 tokens each); 1 J, no flag
    elsewhere.
    """
    import pandas as pd

    energy = energy or {}

    folder.mkdir(parents=True)
    (folder / "status.json").write_text(json.dumps({"status": "ok"}))
    (folder / "metadata.json").write_text(json.dumps({
        "backend": "nvml", "engine": engine, "arch": "tiny-gqa", "batch": 8, "context": 512,
        "time_to_first_window_s": 2.0, "gpu": {"uuid": "GPU-test"}}))
    rows = []
    for p, k, a, b in windows:
        j, flags = energy.get((p, k), (1.0, ""))
        rows.append({"phase": p, "trial": k, "start_s": a, "end_s": b, "duration_s": b - a, "tokens": 1000,
                     "energy_j": 1000 * j, "energy_trapz_j": 1000 * j * (1.01 if p == "fill" else 1.0),
                     "flags": flags, "power_mean_w": 1000 * j / (b - a) if b > a else float("nan"),
                     "sm_clock_mhz": 1600.0, "temperature_start_c": 45.0 if p == "fill" else 55.0})
    pd.DataFrame(rows).to_parquet(folder / "windows.parquet")


def test_vllm_fill_options_known_answers(tmp_path, monkeypatch):
    """bench/vllm_fill_options.py on a point whose time is known: 29 s from the process's start to its last
    window, 6 s in the windows the estimates use, two 10 s fills; a native trace and a vLLM trace without fill
    windows are left out."""
    from bench import vllm_fill_options

    traces = tmp_path / "traces"
    windows = [("idle", 0, 0.0, 1.0), ("prefill", 0, 2.0, 3.0), ("fill", 0, 3.0, 13.0), ("decode", 0, 14.0, 16.0),
               ("fill", 1, 16.0, 26.0), ("decode", 1, 27.0, 29.0)]
    # fills at 7.35 and 7.56 J per token, the prefill window at 7.0 (a flagged one at 9.0 is not compared)
    windows.insert(2, ("prefill", 1, 3.0, 3.0))
    energy = {("prefill", 0): (7.0, ""), ("prefill", 1): (9.0, "short_window"),
              ("fill", 0): (7.35, "temperature_drift"), ("fill", 1): (7.56, "")}
    _recorded_trace(traces / "a", "vllm 0.26.0", windows, energy)
    _recorded_trace(traces / "b", "native", windows)
    _recorded_trace(traces / "c", "vllm 0.26.0", [w for w in windows if w[0] != "fill"])
    monkeypatch.setattr(sys, "argv", ["vllm_fill_options.py", str(traces), "--out", str(tmp_path / "o.json")])
    vllm_fill_options.main()
    result = json.loads((tmp_path / "o.json").read_text())
    (point,) = result["points"]
    assert point["trace"].endswith("a") and point["seconds"] == 29.0 and point["used_s"] == 6.0
    assert point["now"] == round(6 / 29, 3) and point["fill_counted"] == round(26 / 29, 3)
    assert point["one_fill"] == round(6 / 19, 3) and point["one_fill_counted"] == round(16 / 19, 3)
    # every second outside the windows and fills taken out (3 s here: 1-2, 13-14 and 26-27 s)
    assert point["no_overhead"] == round(6 / 26, 3) and point["one_fill_no_overhead"] == round(6 / 16, 3)
    # 14.25 s more decode per trial: (6 + 2 x 14.25) / (29 + 2 x 14.25) = 0.6
    assert point["decode_s_for_60"] == 16.25
    assert result["all"]["decode_windows_factor_for_60_pooled"] == 8.1  # 4 s of decode windows, 8.125 times
    assert result["all"]["pooled"]["now"] == round(6 / 29, 3)
    assert result["all"]["pooled"]["no_overhead"] == round(6 / 26, 3)
    assert result["all"]["median"]["one_fill_no_overhead"] == round(6 / 16, 3)
    # the fills' median, 7.455 J per token, against the unflagged prefill window's 7.0; both fills above it
    assert point["fill_over_prefill"] == round(7.455 / 7.0, 3) and point["fill_above_every_prefill"] is True
    # by the trapezoid (1 % more on the fills here), and what else differs: 1000 tokens in 10 s against 1 s
    assert point["fill_over_prefill_trapz"] == round(7.455 * 1.01 / 7.0, 3)
    assert point["fill_rate_over_prefill"] == 0.1 and point["prefill_windows_compared"] == 1
    assert point["fill_temperature_start_c"] == 45.0 and point["prefill_temperature_start_c"] == 55.0
    against = result["all"]["fill_against_prefill"]
    assert {k: against[k] for k in ("points", "min_fill_s", "ratio_median", "ratio_range",
                                    "points_every_fill_above_every_prefill_window", "points_without_unflagged_prefill",
                                    "trapz_points_every_fill_above_every_prefill_window")} == {
        "points": 1, "min_fill_s": 3.0, "ratio_median": 1.065, "ratio_range": [1.065, 1.065],
        "points_every_fill_above_every_prefill_window": 1, "points_without_unflagged_prefill": 0,
        "trapz_points_every_fill_above_every_prefill_window": 1}
    # a fill below a prefill window at its point, and fills too short to compare
    _recorded_trace(traces / "d", "vllm 0.26.0", windows, {**energy, ("fill", 1): (6.9, "")})
    short = [(p, k, a, min(b, a + 2.0) if p == "fill" else b) for p, k, a, b in windows]
    _recorded_trace(traces / "e", "vllm 0.26.0", short, energy)
    vllm_fill_options.main()
    result = json.loads((tmp_path / "o.json").read_text())
    assert [p["fill_above_every_prefill"] for p in result["points"]] == [True, False, True]
    assert result["all"]["fill_against_prefill"]["points"] == 2  # e's fills last 2 s
    assert result["all"]["fill_against_prefill"]["points_every_fill_above_every_prefill_window"] == 1
    # a point whose every prefill window is flagged: counted apart, not compared
    _recorded_trace(traces / "f", "vllm 0.26.0", windows, {**energy, ("prefill", 0): (7.0, "counter_trapz_mismatch")})
    vllm_fill_options.main()
    result = json.loads((tmp_path / "o.json").read_text())
    assert result["all"]["fill_against_prefill"]["points"] == 2
    assert result["all"]["fill_against_prefill"]["points_without_unflagged_prefill"] == 1
