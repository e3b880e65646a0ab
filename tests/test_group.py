"""Several points of one engine in one process (``phase-energy measure --points``).

No GPU here: the real-card path runs behind the fake NVML (``phase_energy.testing.fake_nvml``; NVML settings
cannot be touched on this machine), with the native engine on CPU. vLLM cannot run on these CPUs: its engine
start is the ``vllm_args`` stand-in of tests/conftest.py, which records the engine's arguments and stops there.
"""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from phase_energy.cli import main
from phase_energy.config import validate_config
from phase_energy.engines.vllm import VllmSettings, max_model_len
from phase_energy.grid import GridPoint
from phase_energy.measure import group, job
from phase_energy.measure.job import job_settings, run_job
from phase_energy.measure.protocol import forward_positions
from phase_energy.model.costmodel import cost_model
from phase_energy.model.presets import get_preset

from .conftest import EngineStarted

FAST = {"idle_s": 0.01, "warmup_runs": 1, "min_counter_ticks": 1, "prefill_trials": 1, "decode_trials": 1,
        "decode_windows": 1, "pause_s": 0.0, "lead_in_s": 0.0, "decode_lead_in_s": 0.0}


@pytest.fixture
def fake_card(tmp_path, monkeypatch):
    """The nvml backend on a fake NVML card (no GPU here), its probes and CUDA synchronisation left out."""
    from phase_energy.measure import backend, nvml
    from phase_energy.testing.fake_nvml import FakeNVML

    fake = FakeNVML()
    monkeypatch.setenv("PHASE_ENERGY_STATE_DIR", str(tmp_path / "state"))
    real_gpu = nvml.GPU
    monkeypatch.setattr(nvml, "GPU", lambda i: real_gpu(i, nvml=fake))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(backend, "measure_bandwidth_and_matmul", lambda: {"bandwidth_bps": 1e12, "matmul_flops": 1e14})
    return fake


def _points(arch, pairs, engine="native"):
    return [GridPoint(arch, b, c, "default", 0, engine) for b, c in pairs]


def test_one_vllm_engine_is_started_for_the_group_sized_for_all_its_points(fake_card, vllm_args, tmp_path):
    """One engine start for three points: max_num_seqs the largest batch, a CUDA graph per batch, the longest
    sequence any point needs. The stand-in stops at the start, so each point fails as its job would (log, no
    trace); the point that cannot fit is skipped with its record and does not size the engine."""
    cfg = validate_config({"engines": ["vllm"], "backend": "nvml", "output_lengths": [64], "measurement": FAST})
    points = _points("qwen3-4b", [(4, 512), (1, 2048), (8, 1024), (256, 131072)], engine="vllm")
    res = group.measure_group(cfg, points, tmp_path / "out", log_dir=tmp_path / "logs")
    assert len(vllm_args) == 1
    args = vllm_args[0]
    cost = cost_model(get_preset("qwen3-4b"), engine="vllm")
    chunk = VllmSettings.from_config(cfg["vllm"]).chunk_tokens
    want = max(max_model_len(p.context, forward_positions(job_settings(cfg, p), cost, p.batch, p.context), p.batch,
                             chunk) for p in points[:3])
    assert args["max_num_seqs"] == 8 and args["max_model_len"] == want
    assert args["compilation_config"]["cudagraph_capture_sizes"] == [1, 4, 8]
    big = points[3].path
    assert list(res.skipped) == [big] and res.skipped[big].startswith("memory:")
    assert json.loads((tmp_path / "out" / big / "status.json").read_text())["status"] == "skipped"
    assert sorted(res.failed) == sorted(p.path for p in points[:3]) and res.measured == []
    for p in points[:3]:
        assert not (tmp_path / "out" / p.path).exists()
        assert "EngineStarted" in (tmp_path / "logs" / f"{p.path}.log").read_text().splitlines()[-1]


def test_a_point_the_shared_engine_cannot_hold_is_left_for_its_own_job(fake_card, tmp_path, monkeypatch):
    """On an engine shared by several points, a point its KV cache cannot hold by a little (4 %) gets no record
    (its own engine, without the other batches' CUDA graphs, may hold it): the group reports it as ``alone``;
    one short by twice the cache is skipped with its record, as its own job would be. On an engine of its own
    the first is skipped too. vLLM cannot run here: the started engine is a stand-in object, each point's
    workload the native engine on CPU, and the batch-8 and batch-16 points raise what vLLM's does when a
    point does not fit."""
    from phase_energy.engines.native.runner import EngineWorkload
    from phase_energy.engines.vllm import DoesNotFit

    def workload(cfg, engine, point, settings):
        if point.batch in (8, 16):
            need = {8: 104, 16: 200}[point.batch]
            raise DoesNotFit(f"memory: vLLM's KV cache holds 100 tokens, the point needs {need}", 100, need)
        return EngineWorkload(point.arch, point.batch, point.context, settings.max_output, device="cpu",
                              dtype=torch.float32, compile=False)

    monkeypatch.setattr(job, "vllm_engine", lambda cfg, points: object())
    monkeypatch.setattr(job, "vllm_workload", workload)
    cfg = validate_config({"engines": ["vllm"], "backend": "nvml", "output_lengths": [8], "measurement": FAST})
    points = _points("tiny-gqa", [(1, 16), (8, 16), (16, 16)], engine="vllm")
    res = group.measure_group(cfg, points, tmp_path / "shared")
    assert res.measured == [points[0].path] and list(res.skipped) == [points[2].path] and res.failed == {}
    assert list(res.alone) == [points[1].path] and res.alone[points[1].path].startswith("memory:")
    assert not (tmp_path / "shared" / points[1].path).exists()
    assert res.summary()["alone"] == res.alone
    own = group.measure_group(cfg, points[1:2], tmp_path / "own")  # an engine for this point alone
    assert own.alone == {} and list(own.skipped) == [points[1].path]
    assert json.loads((tmp_path / "own" / points[1].path / "status.json").read_text())["status"] == "skipped"


def test_vllm_is_not_started_when_the_time_left_cannot_cover_its_start(fake_card, vllm_args, tmp_path):
    cfg = validate_config({"engines": ["vllm"], "backend": "nvml", "output_lengths": [64], "measurement": FAST})
    points = _points("qwen3-4b", [(1, 512), (8, 512)], engine="vllm")
    res = group.measure_group(cfg, points, tmp_path, deadline=100.0, clock=lambda: 0.0)
    assert vllm_args == [] and res.not_started == [p.path for p in points]
    with pytest.raises(EngineStarted):  # with the time, it starts
        job.vllm_engine(cfg, points)


def test_the_time_to_start_vllm_is_the_presets_recorded_start(fake_card, vllm_args, tmp_path):
    """With 170 s left, the guess (120 s and a point's 40) would start vLLM; where the preset's traces recorded
    a 177 s start, the group leaves its points for a later run instead, and a trace that cannot be read or a
    start of another preset does not count. vLLM cannot run here (the ``vllm_args`` stand-in records each
    engine start and stops there, so the started group's point fails as its job would)."""
    cfg = validate_config({"engines": ["vllm"], "backend": "nvml", "output_lengths": [64], "measurement": FAST})
    points = _points("qwen3.5-4b", [(256, 512)], engine="vllm")
    out = tmp_path / "traces"
    done = out / "engine~vllm/arch~qwen3.5-4b/bs~1/ctx~512/lever~default/rep~0"
    other = out / "engine~vllm/arch~qwen3-4b/bs~1/ctx~512/lever~default/rep~0"
    damaged = out / "engine~vllm/arch~qwen3.5-4b/bs~8/ctx~512/lever~default/rep~0"
    endless = out / "engine~vllm/arch~qwen3.5-4b/bs~32/ctx~512/lever~default/rep~0"
    for folder, text in ((other, json.dumps({"engine_start_s": 300.0})), (damaged, '{"engine_start_s": 4'),
                         (endless, '{"engine_start_s": Infinity}')):
        folder.mkdir(parents=True)
        (folder / "metadata.json").write_text(text)
    assert group.vllm_start_estimate(out, "qwen3.5-4b") == (group.VLLM_START_S,
                                                            "a guess: no trace of it recorded one")
    res = group.measure_group(cfg, points, out, deadline=170.0, clock=lambda: 0.0)
    assert len(vllm_args) == 1 and res.not_started == []  # the guess: 170 s cover 120 s and a point
    done.mkdir(parents=True)  # a workflow job's own trace: the start in engine_info
    (done / "metadata.json").write_text(json.dumps({"engine_info": {"engine_start_s": 177.0}}))
    assert group.vllm_start_estimate(out, "qwen3.5-4b")[0] == 177.0
    res = group.measure_group(cfg, points, out, deadline=170.0, clock=lambda: 0.0)
    assert len(vllm_args) == 1 and res.not_started == [points[0].path] and res.failed == {}
    res = group.measure_group(cfg, points, out, deadline=230.0, clock=lambda: 0.0)
    assert len(vllm_args) == 2 and res.not_started == []  # with the recorded start's time, it starts


def _fail_batch_3(monkeypatch, message):
    """Native workloads on CPU, except that building the batch-3 point raises ``message``."""
    from phase_energy.engines.native.runner import EngineWorkload

    def build(cfg, point, settings, backend):
        if point.batch == 3:
            raise RuntimeError(message)
        return EngineWorkload(point.arch, point.batch, point.context, settings.max_output, device="cpu",
                              dtype=torch.float32, compile=False)

    monkeypatch.setattr(job, "build_workload", build)


def test_native_group_end_to_end_keeps_going_past_a_failed_point(fake_card, tmp_path, monkeypatch, capsys):
    """``phase-energy measure --points`` on the native engine (CPU) behind the fake NVML: every point gets its
    trace, skipped record or failed job's log. The failure is injected (a card's fault cannot happen here)."""
    _fail_batch_3(monkeypatch, "Triton compilation failed: out of resource: shared memory")
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"backend": "nvml", "output_lengths": [8], "measurement": FAST}))
    out, logs = tmp_path / "out", tmp_path / "logs"
    rc = main(["measure", "--config", str(config), "--arch", "tiny-gqa", "--lever", "default",
               "--points", "2x16,3x16,4x16,256x4000000", "--out-root", str(out), "--log-dir", str(logs)])
    assert rc == 1  # a point failed
    done = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ok, failed, big = (f"engine~native/arch~tiny-gqa/bs~{b}/lever~default/rep~0" for b in ("2/ctx~16", "3/ctx~16",
                                                                                            "256/ctx~4000000"))
    ok4 = ok.replace("bs~2", "bs~4")
    assert done["measured"] == [ok, ok4] and list(done["failed"]) == [failed] and list(done["skipped"]) == [big]
    for p in (ok, ok4):
        meta = json.loads((out / p / "metadata.json").read_text())
        assert meta["status"] == "ok" and meta["backend"] == "nvml"
        assert meta["measured_in_group"] == ["2x16", "3x16", "4x16", "256x4000000"]
        assert "engine_shared_by_points" not in meta  # each native point builds its own engine
        w = pd.read_parquet(out / p / "windows.parquet")
        assert set(w["phase"]) >= {"prefill", "decode"}
        assert (logs / f"{p}.log").exists()
    assert not (out / failed).exists()
    assert "out of resource" in (logs / f"{failed}.log").read_text()
    assert json.loads((out / big / "status.json").read_text())["status"] == "skipped"
    assert fake_card.cards[0].locked is None  # nothing left set on the card


def test_a_cuda_error_stops_the_group_and_leaves_the_rest_to_jobs_of_their_own(fake_card, tmp_path, monkeypatch):
    """A CUDA error is sticky in its process: the points after it are not started there but left for jobs of
    their own (``alone``, which a campaign gives to the workflow in the same run), rather than each failing the
    same way. The error is injected (a card's fault cannot happen here)."""
    _fail_batch_3(monkeypatch, "CUDA error: an illegal memory access was encountered")
    # and freeing the cached memory after it raises the same error, as on a card (a stand-in: no CUDA here)
    def free_gpu_cache():
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(group, "free_gpu_cache", free_gpu_cache)
    cfg = validate_config({"backend": "nvml", "output_lengths": [8], "measurement": FAST})
    points = _points("tiny-gqa", [(2, 16), (3, 16), (4, 16)])
    res = group.measure_group(cfg, points, tmp_path / "out")
    assert res.measured == [points[0].path] and list(res.failed) == [points[1].path]
    assert res.not_started == [] and not (tmp_path / "out" / points[2].path).exists()
    assert res.alone == {points[2].path: f"{points[1].path} left the GPU unusable in its group's process"}
    assert group.leaves_device_broken(RuntimeError("CUDA error: misaligned address"))
    assert not group.leaves_device_broken(RuntimeError("out of resource: shared memory"))


@pytest.mark.parametrize("args,words", [
    (["--points", "8x", "--out-root", "o"], "'8x' is not accepted; expected BATCHxCONTEXT or ARCH:BATCHxCONTEXT"),
    (["--points", "qwen3-4b:8", "--out-root", "o"], "'qwen3-4b:8' is not accepted"),
    (["--points", "1x64,1x64", "--out-root", "o"], "given twice"),
    (["--points", "1x64,qwen3-4b:1x64", "--out-root", "o"], "given twice"),
    (["--points", " :1x64", "--out-root", "o"], "nothing before ':'"),
    (["--engine", "vllm", "--points", "1x64,mamba2-2.7b:1x64", "--out-root", "o"], "a group is one arch"),
    (["--points", "1x64"], "--out-root"),
    (["--points", "1x64", "--out-root", "o", "--batch", "1"], "not --batch"),
    (["--batch", "1", "--context", "64"], "--out"),
])
def test_bad_measure_arguments_are_named(tmp_path, args, words, caplog):
    config = tmp_path / "c.yaml"
    config.write_text("backend: sim\n")
    assert main(["measure", "--config", str(config), "--arch", "qwen3-4b", "--lever", "default", *args]) == 2
    assert words in caplog.text


@pytest.mark.parametrize("args,rc,words", [
    (["measure", "--arch", "qwen3-4b", "--lever", "default", "--batch", "0", "--context", "64", "--out", "t"], 2,
     "argument --batch: '0' is not accepted; expected an integer >= 1"),
    (["measure", "--arch", "qwen3-4b", "--lever", "default", "--batch", "1", "--context", "-4", "--out", "t"], 2,
     "argument --context: '-4' is not accepted"),
    (["measure", "--arch", "qwen3-4b", "--lever", "turbo", "--batch", "1", "--context", "64", "--out", "t"], 2,
     "argument --lever: lever 'turbo' is not accepted; expected 'default'"),
    (["measure", "--arch", "qwen3-4b", "--lever", "default", "--batch", "1", "--context", "64", "--out", "afile"],
     2, "--out 'afile' is a file; accepted: a folder"),
    # in the grammar but outside the (simulated) card's range: found when the job applies it, said in one line
    (["measure", "--arch", "qwen3-4b", "--lever", "powercap:5", "--batch", "1", "--context", "64", "--out", "t"],
     1, "phase-energy measure: lever powercap:5: 5 W is outside this GPU's power-limit range; accepted: 200-700 W"),
    (["figure", "fig99_nope", "--out", "x"], 2, "'fig99_nope' not accepted; accepted: fig00_headline"),
    (["analyse", "energy", "--traces", "no-such-folder"], 2, "'no-such-folder' lacks the parts ['engine'"),
    (["campaign", "--configfile", "no-such.yaml", "--into", "into"], 2, "no such file"),
    (["campaign", "--configfile", "c.yaml", "--into", "into", "--time-limit-s", "-5"], 2,
     "'-5' is not accepted; expected a positive number of seconds"),
    (["migrate-traces", "no-such-folder"], 1, "traces folder 'no-such-folder' does not exist"),
])
def test_bad_command_lines_are_named_without_a_traceback(tmp_path, monkeypatch, capsys, caplog, args, rc, words):
    monkeypatch.chdir(tmp_path)
    Path("c.yaml").write_text("backend: sim\n")
    Path("afile").write_text("")
    config = [] if args[0] in ("campaign", "migrate-traces") else ["--config", "c.yaml"]
    try:
        got = main([*args[:2], *config, *args[2:]] if args[0] == "analyse" else [args[0], *config, *args[1:]])
    except SystemExit as e:  # argparse: the message on stderr
        got = e.code
    said = caplog.text + capsys.readouterr().err
    assert got == rc and words in said and "Traceback" not in said, said
    assert not Path("into").exists() and not Path("t").exists()  # refused before anything was written


def test_a_group_given_no_time_left_starts_no_point_and_says_so(tmp_path, capsys):
    """A campaign passes the seconds left to a group, which may be none or fewer (its last group near the
    limit): every point is reported not started, and the group ends well, as a group that ran out of time."""
    config = tmp_path / "c.yaml"
    config.write_text("backend: sim\n")
    rc = main(["measure", "--config", str(config), "--arch", "qwen3-4b", "--lever", "default", "--points",
               "1x64,2x64", "--out-root", str(tmp_path / "o"), "--time-limit-s", "-3"])
    done = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and len(done["not_started"]) == 2 and not done["measured"]


def test_only_this_packages_own_file_errors_lose_their_traceback(tmp_path):
    from phase_energy.cli import _said_to_user
    from phase_energy.measure.layout import migrate_traces

    with pytest.raises(FileNotFoundError) as ours:
        migrate_traces(tmp_path / "none")  # raised with a message for the user
    with pytest.raises(FileNotFoundError) as theirs:
        (tmp_path / "none.txt").open()  # raised by the standard library, as a bug or a library would
    assert _said_to_user(ours.value) and not _said_to_user(theirs.value)
    assert not _said_to_user(ValueError("a bug")) and not _said_to_user(KeyError("x"))


def test_a_group_is_one_engine_lever_and_repetition_and_for_vllm_one_preset():
    with pytest.raises(ValueError, match="a group is one arch"):  # one vLLM engine serves one preset
        group.check_group(_points("qwen3-4b", [(1, 64)], "vllm") + _points("mamba2-2.7b", [(1, 64)], "vllm"))
    # each native point builds its own engine: several presets share the process
    group.check_group(_points("qwen3-4b", [(1, 64)]) + _points("mamba2-2.7b", [(1, 64)]))
    with pytest.raises(ValueError, match="a group is one engine"):
        group.check_group(_points("qwen3-4b", [(1, 64)]) + _points("qwen3-4b", [(2, 64)], "vllm"))
    two_reps = [GridPoint("qwen3-4b", 1, 64, "default", rep) for rep in (0, 1)]
    with pytest.raises(ValueError, match="a group is one rep"):
        group.check_group(two_reps)
    group.check_group(two_reps, reps=True)  # a before-and-after on one engine may hold repetitions
    with pytest.raises(ValueError, match="names a point twice"):
        group.check_group(two_reps + two_reps[:1], reps=True)


def test_the_deadline_stops_before_a_point_that_would_not_end_in_time(tmp_path):
    """The group's clock is a counter (no timed test): each reading is 10 s after the last, so a point takes
    10 s. The first point's guess is 5 s; the deadline at 25 s leaves room for two points, not for a third."""
    cfg = validate_config({"backend": "sim", "output_lengths": [32], "measurement": FAST})
    ticks = iter(range(0, 1000, 10))
    points = _points("qwen3-4b", [(1, 64), (2, 64), (4, 64)])
    res = group.measure_group(cfg, points, tmp_path, deadline=25.0, clock=lambda: float(next(ticks)),
                              first_point_s=5.0)
    assert res.measured == [p.path for p in points[:2]] and res.not_started == [points[2].path]
    assert not (tmp_path / points[2].path).exists()


def test_a_new_presets_first_point_needs_the_first_points_guess(tmp_path):
    """In a native group of two presets a point takes 10 s (the counter clock) and the first point's guess is
    30 s: after two qwen3-4b points 30 s are left, enough for a third point of qwen3-4b (10 s) but not for
    mamba2-2.7b's first, which compiles its own blocks (30 s, with the margin 36)."""
    cfg = validate_config({"backend": "sim", "output_lengths": [32], "measurement": FAST})
    for second, started in (("qwen3-4b", 3), ("mamba2-2.7b", 2)):
        ticks = iter(range(0, 1000, 10))
        points = _points("qwen3-4b", [(1, 64), (2, 64)]) + _points(second, [(4, 64)])
        res = group.measure_group(cfg, points, tmp_path / second, deadline=50.0,
                                  clock=lambda ticks=ticks: float(next(ticks)), first_point_s=30.0)
        assert res.measured == [p.path for p in points[:started]]
        assert res.not_started == [p.path for p in points[started:]]


def test_a_simulated_group_point_is_the_trace_its_job_writes(tmp_path):
    """On the simulator each point of a group gets its own card, seeded as its job's: the same windows."""
    cfg = validate_config({"engines": ["vllm"], "backend": "sim", "output_lengths": [64], "measurement": FAST})
    points = _points("qwen3-4b", [(1, 256), (8, 256)], engine="vllm")
    group.measure_group(cfg, points, tmp_path / "group")
    run_job(cfg, points[1], tmp_path / "job")
    a = pd.read_parquet(tmp_path / "group" / points[1].path / "windows.parquet")
    b = pd.read_parquet(tmp_path / "job" / "windows.parquet")
    pd.testing.assert_frame_equal(a, b)


def test_points_may_name_their_preset():
    assert group.parse_arch_points("32x2048,mamba2-2.7b:1x512", "qwen3-4b") == [("qwen3-4b", 32, 2048),
                                                                              ("mamba2-2.7b", 1, 512)]
    assert group.parse_arch_points("tiny-gqa:2x16", None) == [("tiny-gqa", 2, 16)]
    with pytest.raises(ValueError, match="'2x16' names no preset; give --arch or write ARCH:2x16"):
        group.parse_arch_points("tiny-gqa:1x16,2x16", None)
    assert group.parse_arch_points(" tiny-gqa : 2x16", None) == [("tiny-gqa", 2, 16)]


def test_a_native_group_measures_several_presets_in_one_process(tmp_path, caplog):
    """``measure --points`` without --arch, each item naming its preset (simulator): every point gets its trace
    under its own preset's path, and each records the whole group, presets named."""
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"backend": "sim", "output_lengths": [8], "measurement": FAST}))
    out = tmp_path / "out"
    assert main(["measure", "--config", str(config), "--lever", "default", "--points",
                 "qwen3-4b:2x64,mamba2-2.7b:1x64,qwen3-4b:1x64", "--out-root", str(out)]) == 0
    want = ["qwen3-4b:2x64", "mamba2-2.7b:1x64", "qwen3-4b:1x64"]
    for item in want:
        arch, _, shape = item.partition(":")
        b, c = shape.split("x")
        trace = out / GridPoint(arch, int(b), int(c), "default").path
        assert json.loads((trace / "status.json").read_text())["status"] == "ok"
        meta = json.loads((trace / "metadata.json").read_text())
        assert meta["arch"] == arch and meta["measured_in_group"] == want
        assert meta["measurement"]["refill_static_cache"] is True and meta["measurement"]["idle_s"] == 0.01
    assert main(["measure", "--config", str(config), "--lever", "default", "--batch", "1", "--context", "64",
                 "--out", str(tmp_path / "one")]) == 2
    assert "one point takes --arch" in caplog.text


def test_a_clock_slurm_was_to_lock_that_did_not_hold_fails_the_job(fake_card, tmp_path, monkeypatch):
    """``cluster.gpu_freq_for_smclock``: SLURM locks the clock and the job only records it. Where nothing locked
    it (a campaign's group or a local run; the fake card runs at its top clock), the job fails and says so
    instead of writing an unlocked trace under the lock's name; locked as SLURM would (the fake card's lock
    set beforehand), it measures and records SLURM as what applied it. NVML settings cannot be touched here."""
    _fail_batch_3(monkeypatch, "not used: batch 2 only")  # native workloads on CPU
    cfg = validate_config({"backend": "nvml", "output_lengths": [8], "measurement": FAST,
                           "cluster": {"gpu_freq_for_smclock": True}})
    point = GridPoint("tiny-gqa", 2, 16, "smclock:1410", 0, "native")
    with pytest.raises(RuntimeError, match=r"SM clock ran at \d+ MHz, above the 1410 MHz lock: nothing locked it"):
        run_job(cfg, point, tmp_path / "unlocked")
    assert not (tmp_path / "unlocked" / "status.json").exists()
    fake_card.cards[0].locked = (1410, 1410)  # what slurmstepd's --gpu-freq does before the job starts
    run_job(cfg, point, tmp_path / "locked")
    meta = json.loads((tmp_path / "locked" / "metadata.json").read_text())
    assert meta["lever_enforced"]["applied_by"] == "slurm --gpu-freq"
    assert fake_card.cards[0].locked == (1410, 1410)  # the job left SLURM's lock alone
    # a request between two supported clocks: SLURM rounds it up to the next one, which is not a failure
    run_job(cfg, GridPoint("tiny-gqa", 2, 16, "smclock:1400", 0, "native"), tmp_path / "rounded")
    assert (tmp_path / "rounded" / "status.json").exists()
