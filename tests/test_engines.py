"""The engine axis: vLLM's model configs, the grid and trace layout, and the step-driven windows.

vLLM cannot run on these CPUs. Its workload is tested here through ``phase_energy.testing.fake_vllm``, a
recording stand-in for vLLM's step API that exists only for that reason; the real check is the H200 run
(bench/engine-compare-h200.json).
"""

import json

import pandas as pd
import pytest
import torch

from phase_energy.config import ConfigError, validate_config
from phase_energy.engines.vllm import DoesNotFit, VllmWorkload
from phase_energy.grid import GridPoint, expand_grid
from phase_energy.measure.job import point_skip_reason, run_job
from phase_energy.measure.layout import TraceLayoutError, check_layout, migrate_traces
from phase_energy.measure.protocol import Settings, forward_decode_plan, run_protocol
from phase_energy.measure.sim import SimGPU, SimMeter
from phase_energy.measure.summary import summarise_windows
from phase_energy.model.costmodel import CostModel
from phase_energy.model.hfconfig import hf_config, transformers_config, vllm_unsupported, write_model_folder
from phase_energy.model.presets import LARGE_PRESETS, PRESETS, get_preset
from phase_energy.testing.fake_vllm import FakeVllmEngine

from .conftest import EngineStarted


# ------------------------------------------------------------------------------------------ model configs
@pytest.mark.parametrize("arch", sorted({**PRESETS, **LARGE_PRESETS}))
def test_generated_config_builds_the_cost_models_parameter_count(arch):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = get_preset(arch)
    d = transformers_config(cfg)
    config = AutoConfig.for_model(d.pop("model_type"), **d)
    with torch.device("meta"):  # shapes only: no memory, no time
        model = AutoModelForCausalLM.from_config(config)
    n = sum(p.numel() for p in model.parameters())
    assert n == CostModel(cfg, engine="vllm").params, (arch, type(model).__name__)


def test_model_folder_holds_the_vllm_class_of_each_family(tmp_path):
    seen = {}
    for name, cfg in {**PRESETS, **LARGE_PRESETS}.items():
        folder = write_model_folder(cfg, tmp_path / name)
        written = json.loads((folder / "config.json").read_text())
        assert written == json.loads(json.dumps(hf_config(cfg)))
        seen[name] = written["architectures"][0]
        assert vllm_unsupported(cfg) is None or cfg.family == "minicpm3"
    # MiniCPM3 has a vLLM class, but vLLM 0.26 failed to start it on the H200: its points are skipped, saying so
    assert "FlashAttention 3" in vllm_unsupported(get_preset("minicpm3-4b"))
    assert seen == {"qwen3-4b": "Qwen3ForCausalLM", "minicpm3-4b": "MiniCPM3ForCausalLM",
                    "qwen3-4b-transmla": "DeepseekV2ForCausalLM", "qwen3.5-4b": "Qwen3_5ForConditionalGeneration",
                    "mamba2-2.7b": "Mamba2ForCausalLM", "nemotron-h-4b": "NemotronHForCausalLM",
                    "qwen3-32b": "Qwen3ForCausalLM", "qwen3-32b-transmla": "DeepseekV2ForCausalLM",
                    "qwen3.5-27b": "Qwen3_5ForConditionalGeneration", "nemotron-h-47b": "NemotronHForCausalLM"}
    rope = hf_config(get_preset("qwen3.5-4b"))["text_config"]["rope_parameters"]
    assert sum(rope["mrope_section"]) == 256 * 0.25 / 2  # vLLM asserts: half the rotary width
    assert hf_config(get_preset("tiny-gdn"))["text_config"]["rope_parameters"]["mrope_section"] == [1, 1, 0]
    transmla = hf_config(get_preset("qwen3-4b-transmla"))  # dense in every layer: no experts at all
    assert transmla["n_routed_experts"] == 0 and transmla["first_k_dense_replace"] == transmla["num_hidden_layers"]


def test_unsupported_shape_is_named():
    from dataclasses import replace

    bad = replace(get_preset("minicpm3-4b"), q_lora_rank=None)
    assert "q_lora_rank" in vllm_unsupported(bad)
    with pytest.raises(ValueError, match="q_lora_rank"):
        hf_config(bad)


def test_vllm_cache_layout_in_the_cost_model():
    mcp = get_preset("minicpm3-4b")
    native, vllm = CostModel(mcp), CostModel(mcp, engine="vllm")
    assert native.kv_bytes_per_token == (256 + 32) * 2 * 62  # the compressed latent and the rope key
    assert vllm.kv_bytes_per_token == 2 * 40 * (64 + 32) * 2 * 62  # full heads, values padded to 96
    assert vllm.decode_bytes(32, 2048) > 5 * native.decode_bytes(32, 2048)
    q = get_preset("qwen3-4b")
    assert CostModel(q, engine="vllm").decode_bytes(8, 100) == CostModel(q).decode_bytes(8, 100)
    t = get_preset("qwen3-4b-transmla")  # vLLM's DeepSeek layers norm the latent: one 512-wide norm a layer
    assert CostModel(t, engine="vllm").params - CostModel(t).params == 512 * 36


# ------------------------------------------------------------------------------------------ grid and layout
def test_engines_are_a_grid_axis_in_the_trace_path():
    cfg = validate_config({"engines": ["native", "vllm"], "architectures": ["qwen3-4b"], "batch_sizes": [1],
                           "contexts": [512]})
    points = list(expand_grid(cfg))
    assert [p.path for p in points] == [f"engine~{e}/arch~qwen3-4b/bs~1/ctx~512/lever~default/rep~0"
                                        for e in ("native", "vllm")]
    for p in points:
        assert GridPoint.from_path(f"results/traces/{p.path}") == p
    assert validate_config({})["engines"] == ["native"]


@pytest.mark.parametrize("override,words", [
    ({"engine": "native"}, ["'engine'", "engines: [native]", "vllm"]),
    ({"engines": ["tensorrt"]}, ["engines[0]", "tensorrt", "'vllm'"]),
    ({"engines": []}, ["engines", "at least 1"]),
    ({"engines": ["vllm", "vllm"]}, ["engines", "without repeated"]),
    ({"vllm": {"gpu_memory_utilization": 1.5}}, ["vllm.gpu_memory_utilization", "1.5", "<= 0.98"]),
])
def test_bad_engine_settings_are_named(override, words):
    with pytest.raises(ConfigError) as e:
        validate_config(override)
    for w in words:
        assert w in str(e.value), str(e.value)


def test_vllm_points_that_do_not_fit_get_the_layout_in_the_reason(monkeypatch):
    from phase_energy.model import hfconfig

    cfg = validate_config({"engines": ["native", "vllm"], "output_lengths": [256]})
    p = GridPoint("minicpm3-4b", 128, 2048, "default", engine="vllm")
    assert "FlashAttention 3" in point_skip_reason(cfg, p, "nvml")  # vLLM 0.26's known failure comes first
    monkeypatch.delitem(hfconfig.VLLM_KNOWN_FAILURES, "minicpm3")  # a vLLM that starts it: the memory check
    why = point_skip_reason(cfg, p, "nvml")
    assert why.startswith("memory:") and "full heads" in why
    assert point_skip_reason(cfg, GridPoint("minicpm3-4b", 128, 2048, "default"), "nvml") is None


def _legacy_point(root, arch="qwen3-4b"):
    d = root / f"arch~{arch}/bs~1/ctx~64/lever~default/rep~0"
    d.mkdir(parents=True)
    (d / "status.json").write_text('{"status": "ok"}')
    return d


def test_legacy_traces_are_refused_then_migrated(tmp_path):
    _legacy_point(tmp_path, "qwen3-4b")
    _legacy_point(tmp_path, "mamba2-2.7b")
    with pytest.raises(TraceLayoutError, match="phase-energy migrate-traces"):
        check_layout(tmp_path)
    moved = migrate_traces(tmp_path)
    assert sorted(str(p) for p in moved) == [f"arch~{a}/bs~1/ctx~64/lever~default/rep~0"
                                             for a in ("mamba2-2.7b", "qwen3-4b")]
    assert (tmp_path / "engine~native/arch~qwen3-4b/bs~1/ctx~64/lever~default/rep~0/status.json").exists()
    check_layout(tmp_path)  # the new layout passes
    _legacy_point(tmp_path, "qwen3-4b")  # a point in both layouts is never overwritten
    with pytest.raises(FileExistsError, match="merge"):
        migrate_traces(tmp_path)


# ------------------------------------------------------------------------------------------ forward-only decode
def test_forward_plan_known_answers():
    # spans at offsets 0 and 224; windows of 100 steps; 50 lead-in steps before the first only
    assert forward_decode_plan([(0, 32), (224, 32)], 100, 50, 10_000) == [(50, 50, 100), (74, 224, 100)]
    # windows longer than the gap run back to back
    assert forward_decode_plan([(0, 32), (100, 32)], 300, 50, 10_000) == [(50, 50, 300), (0, 350, 300)]
    # short of positions: the lead-in gives way, then the window shortens, then windows are left out
    assert forward_decode_plan([(0, 32)], 100, 50, 120) == [(20, 20, 100)]
    # the second window's span starts at 224, past the last position (180): it is left out
    assert forward_decode_plan([(0, 32), (224, 32)], 100, 50, 180) == [(50, 50, 100)]


def _vllm_run(tmp_path, capacity=None, report_capacity=True, batch=8, async_scheduling=False, step_timing=None,
              monkeypatch=None, positions=1000):
    if step_timing is not None:
        monkeypatch.setenv("PHASE_ENERGY_VLLM_STEP_TIMING", step_timing)
    gpu = SimGPU(seed=0)
    engine = FakeVllmEngine(gpu, get_preset("qwen3-4b"), max_num_seqs=batch, max_model_len=2048,
                            max_num_batched_tokens=1024, kv_capacity_tokens=capacity,
                            async_scheduling=async_scheduling)
    if not report_capacity:  # the engine does not say how much it holds: preemption shows in the steps
        engine._capacity = None
    s = Settings(idle_s=0.5, warmup_runs=1, min_counter_ticks=5, prefill_trials=2, decode_trials=2,
                 decode_windows=2, decode_window_steps=32, max_output=256, pause_s=0.1)
    w = VllmWorkload(engine, batch=batch, context=256, max_output=256, seed=0, positions=positions)
    meter = SimMeter(gpu, 0.01)
    raw = run_protocol(meter, w, s)
    windows = summarise_windows(meter.samples(), raw, s)
    steps = pd.DataFrame([r.__dict__ for r in engine.engine.records])
    return raw, windows, steps, w


def _inside(steps, w):
    return steps[(steps["start_s"] >= w.start_s - 1e-12) & (steps["end_s"] <= w.end_s + 1e-12)]


@pytest.mark.parametrize("step_timing", ["lead-in", "warm-up"])
@pytest.mark.parametrize("async_scheduling", [False, True], ids=["one batch per step", "asynchronous"])
def test_vllm_windows_hold_only_their_phase(tmp_path, async_scheduling, step_timing, monkeypatch):
    raw, windows, steps, w = _vllm_run(tmp_path, async_scheduling=async_scheduling, step_timing=step_timing,
                                       monkeypatch=monkeypatch)
    dec = [r for r in raw if r.phase == "decode"]
    pre = [r for r in raw if r.phase == "prefill"]
    assert len(dec) == 4 and len(pre) == 2
    for r in dec:  # every step inside a decode window decodes the whole batch and prefills nothing
        inside = _inside(steps, r)
        assert len(inside) == r.steps and (inside["prefill_tokens"] == 0).all()
        assert (inside["decode_tokens"] == 8).all() and r.tokens == 8 * r.steps
        assert r.end_s - r.start_s >= 0.5 * 0.999  # at least min_counter_ticks counter periods
    for r in pre:  # and a prefill window holds prefill steps only, of whole prompts
        inside = _inside(steps, r)
        assert (inside["decode_tokens"] == 0).all() and inside["prefill_tokens"].sum() == r.tokens
        assert r.tokens % 256 == 0
    for trial in (0, 1):  # positions only move forward inside a trial and stay within the budget
        t = sorted((r for r in dec if r.trial == trial), key=lambda r: r.context_start)
        assert t[0].context_start > 256 and t[0].context_end <= t[1].context_start <= t[1].context_end <= 1256
    assert (windows[windows["phase"] == "decode"]["flags"] == "").all()
    assert w.info()["irregular_steps"] == 0


def _fills(steps):
    """Start times of the steps that began a whole-batch prefill (a step prefilling after a decode-free gap)."""
    pre = steps["prefill_tokens"] > 0
    return steps[pre & ~pre.shift(fill_value=False)]["start_s"].tolist()


def test_step_timed_in_the_lead_in_spares_the_warm_ups_whole_batch_prefill(tmp_path, monkeypatch):
    """Timed in the first decode trial's lead-in, the step needs no warm-up decode trial: one whole-batch
    prefill (batch x context tokens) less, and every decode window still follows at least decode_lead_in_s of
    decode steps after its trial's prefill, sized from a step time within 5 % of the steps the windows ran."""
    runs = {m: _vllm_run(tmp_path, step_timing=m, monkeypatch=monkeypatch) for m in ("lead-in", "warm-up")}
    tokens = {m: int(r[2]["prefill_tokens"].sum()) for m, r in runs.items()}
    assert tokens["warm-up"] - tokens["lead-in"] == 8 * 256
    raw, _, steps, w = runs["lead-in"]
    assert w.info()["decode_step_timing"] == "lead-in" and runs["warm-up"][3].info()["decode_step_timing"] == "warm-up"
    for r in (r for r in raw if r.phase == "decode"):
        before = steps[steps["end_s"] <= r.start_s + 1e-12]
        last_fill = before[before["prefill_tokens"] > 0]["end_s"].max()
        lead = before[before["start_s"] >= last_fill - 1e-12]
        assert (lead["prefill_tokens"] == 0).all()
        if r.context_start == min(x.context_start for x in raw if x.phase == "decode" and x.trial == r.trial):
            assert r.start_s - last_fill >= 1.0 * 0.999  # decode_lead_in_s of decode steps before the first
    dec = [r for r in raw if r.phase == "decode"]
    per_step = sum(r.end_s - r.start_s for r in dec) / sum(r.steps for r in dec)
    first = dec[0]
    assert first.end_s - first.start_s == pytest.approx(max(0.5, 32 * per_step), rel=0.05)


@pytest.mark.parametrize("async_scheduling", [False, True], ids=["one batch per step", "asynchronous"])
@pytest.mark.parametrize("step_timing", ["lead-in", "warm-up"])
def test_the_batchs_fill_is_a_window_and_the_other_windows_stay_as_they_were(tmp_path, monkeypatch, step_timing,
                                                                              async_scheduling):
    """Each decode trial's fill (the whole batch prefilled to its first tokens) is a ``fill`` window of its own:
    it holds exactly the fill's steps (all batch x context prompt tokens, the early requests' decode tokens
    besides, and with asynchronous scheduling the one whole-batch decode step in flight when the last first
    token came), between the trial's last earlier window and its decode lead-in. Measured or not, the engine
    runs the same steps, and the prefill and decode windows hold the same steps and tokens."""
    kw = {"step_timing": step_timing, "monkeypatch": monkeypatch, "async_scheduling": async_scheduling}
    raw, windows, steps, _ = _vllm_run(tmp_path, **kw)
    monkeypatch.setattr(VllmWorkload, "fill_is_prefill", False)
    raw0, _, steps0, _ = _vllm_run(tmp_path, **kw)
    fills = [r for r in raw if r.phase == "fill"]
    assert [r.trial for r in fills] == [0, 1] and not [r for r in raw0 if r.phase == "fill"]
    for r in fills:
        inside = _inside(steps, r)
        assert inside["prefill_tokens"].sum() == 8 * 256  # the whole batch's prompts, each once
        after = steps[steps["start_s"] >= r.end_s - 1e-12]
        assert after["prefill_tokens"].iloc[0] == 0  # the window ends with the fill's last prefill step
        whole_batch_decode = (inside["prefill_tokens"] == 0) & (inside["decode_tokens"] == 8)
        assert whole_batch_decode.sum() == (1 if async_scheduling else 0)
        dec = [x for x in raw if x.phase == "decode" and x.trial == r.trial]
        last_prefill = inside[inside["prefill_tokens"] > 0]["end_s"].max()
        assert all(x.start_s - last_prefill >= 1.0 * 0.999 for x in dec)  # the decode lead-in still follows it
        assert all(x.end_s <= r.start_s for x in raw if x.phase == "prefill")
    assert steps[["prefill_tokens", "decode_tokens"]].equals(steps0[["prefill_tokens", "decode_tokens"]])
    keys = [(r.phase, r.trial, r.tokens, r.steps, r.repetitions, r.context_start, r.context_end) for r in raw0]
    assert [(r.phase, r.trial, r.tokens, r.steps, r.repetitions, r.context_start, r.context_end)
            for r in raw if r.phase != "fill"] == keys
    for a, b in zip([r for r in raw if r.phase != "fill"], raw0, strict=True):
        assert a.end_s - a.start_s == pytest.approx(b.end_s - b.start_s, rel=0.02)
    assert (windows[windows["phase"] == "fill"]["energy_j"] > 0).all()


@pytest.mark.parametrize("async_scheduling", [False, True], ids=["one batch per step", "asynchronous"])
def test_a_timed_lead_in_short_of_positions_gives_way_to_the_windows(tmp_path, monkeypatch, async_scheduling):
    """500 positions after the context hold the two windows' 0.5 s each but not a whole 1 s lead-in as well:
    the lead-in stops early, the windows keep their positions, and no step passes the last position (the
    workload raises if one would), with a batch in flight or without."""
    raw, _, steps, w = _vllm_run(tmp_path, step_timing="lead-in", monkeypatch=monkeypatch, positions=500,
                                 async_scheduling=async_scheduling)
    dec = sorted((r for r in raw if r.phase == "decode" and r.trial == 0), key=lambda r: r.context_start)
    assert len(dec) == 2 and dec[-1].context_end <= w.max_position + 1
    before = steps[steps["end_s"] <= dec[0].start_s + 1e-12]
    last_fill = before[before["prefill_tokens"] > 0]["end_s"].max()
    assert 0.2 < dec[0].start_s - last_fill < 1.0  # a lead-in, cut short
    assert all(r.end_s - r.start_s >= 0.5 * 0.95 for r in dec)


def test_timed_lead_in_known_answers():
    """A stand-in whose steps take 10 ms: the lead-in runs 1 s of them after two untimed steps and gives 10 ms;
    short of positions it stops at the last one, or where the windows' reserve begins; with fewer than three
    positions it says so."""
    from phase_energy.measure.protocol import timed_lead_in

    class Steps:
        t, position = 0.0, 100

        def now(self):
            return self.t

        def synchronize(self):
            pass

        def next_position(self):
            return self.position

        def decode(self, position, steps):
            assert position == self.position
            self.position += steps
            self.t += 0.01 * steps

    w = Steps()
    ran, t_step = timed_lead_in(w, w, 1.0, 10_000)
    assert t_step == pytest.approx(0.01) and 102 <= ran <= 104 and w.position == 100 + ran
    w = Steps()
    assert timed_lead_in(w, w, 1.0, 50)[0] == 50 and w.position == 150
    w = Steps()  # 0.5 s of the 100 positions stay free for the windows: 50 steps at 10 ms
    assert timed_lead_in(w, w, 1.0, 100, reserve_s=0.5) == (50, pytest.approx(0.01))
    with pytest.raises(ValueError, match="needs at least 3 decode positions, 2 are left"):
        timed_lead_in(Steps(), Steps(), 1.0, 2)


def test_a_bad_step_timing_is_named(monkeypatch):
    from phase_energy.engines.vllm import decode_step_timing

    monkeypatch.setenv("PHASE_ENERGY_VLLM_STEP_TIMING", "later")
    with pytest.raises(ValueError, match="'later' is not accepted; expected one of lead-in, warm-up"):
        decode_step_timing()


def test_vllm_preemption_flags_the_window_and_counts_real_tokens(tmp_path):
    raw, windows, steps, _ = _vllm_run(tmp_path, capacity=6500, report_capacity=False)
    dec = windows[windows["phase"] == "decode"]
    assert dec["flags"].str.contains("irregular_steps").any()
    for r in (r for r in raw if r.phase == "decode"):
        assert r.tokens == _inside(steps, r)["decode_tokens"].sum()  # what was produced, not batch x steps


def test_vllm_point_that_does_not_fit_says_by_how_much(tmp_path):
    with pytest.raises(DoesNotFit, match=r"memory: vLLM's KV cache holds 6500 tokens, the point needs \d+"):
        _vllm_run(tmp_path, capacity=6500)


def test_simulated_vllm_job_decodes_forward_and_says_so(tmp_path):
    cfg = validate_config({"engines": ["vllm"], "backend": "sim", "output_lengths": [64],
                           "measurement": {"idle_s": 0.5, "min_counter_ticks": 3, "prefill_trials": 2,
                                           "decode_trials": 2, "decode_windows": 2, "pause_s": 0.1}})
    p = GridPoint("qwen3-4b", 8, 256, "default", engine="vllm")
    run_job(cfg, p, tmp_path)
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["engine"] == "vllm" and meta["backend"] == "sim" and meta["cost"]["engine"] == "vllm"
    w = pd.read_parquet(tmp_path / "windows.parquet")
    dec = w[w["phase"] == "decode"].sort_values(["trial", "context_start"])
    assert (dec["repetitions"] == 1).all() and (dec["steps"] > 64).all()  # consecutive steps, not repeats
    assert (dec["context_start"] > 256).all()  # after the lead-in
    fill = w[w["phase"] == "fill"]  # each decode trial's whole-batch prefill, measured
    assert list(fill["trial"]) == [0, 1] and (fill["tokens"] == 8 * 256).all()


def test_fill_windows_enter_no_estimate(tmp_path):
    """A simulated vLLM point's fill windows are in its trace and in no trial and no derivation's view of the
    windows: they change no estimate."""
    from phase_energy.analysis.energy import add_window_metrics, trial_table
    from phase_energy.analysis.stages import reads
    from phase_energy.measure.trace import collect_windows

    cfg = validate_config({"engines": ["vllm"], "backend": "sim", "output_lengths": [64],
                           "measurement": {"idle_s": 0.5, "min_counter_ticks": 3, "prefill_trials": 2,
                                           "decode_trials": 2, "decode_windows": 2, "pause_s": 0.1}})
    p = GridPoint("qwen3-4b", 8, 256, "default", engine="vllm")
    run_job(cfg, p, tmp_path / p.path)
    windows, _ = collect_windows([tmp_path / p.path])
    w = add_window_metrics(windows, ("short_window",))
    assert (w["phase"] == "fill").sum() == 2
    assert set(trial_table(w)["phase"]) == {"prefill", "decode"}
    _, view = reads("crossover", trial_table(w), w)
    assert view is not None and set(view["phase"]) == {"prefill", "decode"}


def test_a_window_that_ends_short_is_filled_up_to_its_minimum():
    """The card runs slower than at warm-up (clocks still ramping): the first round of repetitions ends
    short of min_counter_ticks periods, more rounds follow until the window is long enough."""
    from phase_energy.measure.protocol import filled_window

    class Clock:
        t = 0.0

        def now(self):
            return self.t

        def read_energy_j(self):
            return 300.0 * self.t

    class Slow:
        calls = 0

        def synchronize(self):
            pass

    clock, work = Clock(), Slow()

    def run(k):  # each unit takes 2x the warm-up's estimate of 0.01 s
        work.calls += k
        clock.t += 0.02 * k

    t0, t1, e, units = filled_window(clock, work, run, unit_s=0.01, min_s=1.0)
    assert t1 - t0 >= 1.0 and units == work.calls and units >= 50
    assert e == pytest.approx(300.0 * (t1 - t0))


def test_another_attention_backend_lifts_a_known_failure_and_reaches_the_engine(vllm_args, tmp_path):
    """MiniCPM3 fails under vLLM's own choice (FlashAttention 3) on the H200: skipped with the way out; with
    vllm.attention_backend named, the point runs and the engine is asked for that backend (vLLM cannot start
    here: a stand-in ``vllm`` module records the engine's arguments)."""
    from phase_energy.engines.vllm import VllmEngine, VllmSettings

    arch = get_preset("minicpm3-4b")
    assert "TRITON_ATTN" in vllm_unsupported(arch) and "TRITON_ATTN" in vllm_unsupported(arch, "FLASH_ATTN")
    assert vllm_unsupported(arch, "TRITON_ATTN") is None
    point = GridPoint("minicpm3-4b", 1, 2048, "default", engine="vllm")
    default = validate_config({"engines": ["vllm"]})
    assert point_skip_reason(default, point, "nvml").startswith("engine: vLLM 0.26 fails starting MiniCPM3")
    triton = validate_config({"engines": ["vllm"], "vllm": {"attention_backend": "TRITON_ATTN"}})
    assert point_skip_reason(triton, point, "nvml") is None
    with pytest.raises(ConfigError, match="attention_backend"):
        validate_config({"vllm": {"attention_backend": "FA4"}})
    for settings in (VllmSettings.from_config(triton["vllm"]), VllmSettings.from_config(default["vllm"])):
        with pytest.raises(EngineStarted):
            VllmEngine("tiny-gqa", max_num_seqs=2, max_model_len=64, capture_sizes=[2], settings=settings,
                       folder=tmp_path / str(len(vllm_args)))
    assert vllm_args[0]["attention_backend"] == "TRITON_ATTN" and "attention_backend" not in vllm_args[1]


def test_prefill_unit_is_whole_prompts_of_the_engines_chunk():
    """A vLLM workload's lead-in piece: the whole prompts one engine step's chunk holds (at least one)."""
    from phase_energy.measure.protocol import prefill_unit

    gpu = SimGPU(seed=0)
    engine = FakeVllmEngine(gpu, get_preset("qwen3-4b"), max_num_seqs=8, max_model_len=4096,
                            max_num_batched_tokens=1024)
    assert VllmWorkload(engine, batch=8, context=256, max_output=16, seed=0).prefill_unit == 4
    assert VllmWorkload(engine, batch=8, context=2048, max_output=16, seed=0).prefill_unit == 1  # chunked prompt
    assert prefill_unit(object()) == 1  # an engine that names none: one prompt


@pytest.mark.parametrize("async_scheduling", [False, True], ids=["one batch per step", "asynchronous"])
def test_vllm_profile_runs_its_steps_within_the_points_positions(tmp_path, monkeypatch, async_scheduling):
    """bench/gpu_run.py's vllm_profile over the recording stand-in of vLLM's step API (vLLM cannot run on these
    CPUs; the profiler finds no CUDA kernels here, which the row says): per batch one decode trial's requests,
    warm, timed and profiled steps all inside the point's positions, the trial ended; one preset per run."""
    import sys
    from pathlib import Path

    import phase_energy.measure.job as job

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.gpu_run import profile_vllm_decode

    started = []

    def stand_in(cfg, points):
        started.append([p.batch for p in points])
        return FakeVllmEngine(SimGPU(seed=0), get_preset(points[0].arch), max_num_seqs=max(p.batch for p in points),
                              max_model_len=4096, max_num_batched_tokens=1024, async_scheduling=async_scheduling)
    monkeypatch.setattr(job, "vllm_engine", stand_in)
    results: dict = {}
    profile_vllm_decode([("qwen3-4b", 8), ("qwen3-4b", 16)], 256, results, tmp_path)
    assert started == [[8, 16]]  # one engine for the preset's batches
    rows = results["vllm_profile"]
    assert [(r["batch"], r.get("error")) for r in rows] == [(8, None), (16, None)]
    assert all(r["step_us"] > 0 and r["graph_kernels_not_traced"] for r in rows)
    for r in rows:  # every step gave each of the batch's requests one token
        assert r["irregular_steps"] == 0 and r["decoded_tokens"] == r["batch"] * (4 + 2 * r["profiled_steps"])
    assert json.loads((tmp_path / "engine.json").read_text())["vllm_profile"][1]["batch"] == 16
    with pytest.raises(ValueError, match="one preset per run"):
        profile_vllm_decode([("qwen3-4b", 8), ("mamba2-2.7b", 8)], 256, {}, tmp_path)
    # a point's own context: one engine for both, each point filled to its own context
    started.clear()
    results = {}
    profile_vllm_decode([("qwen3-4b", 8), ("qwen3-4b", 16)], 256, results, tmp_path, contexts={1: 512})
    assert started == [[8, 16]]
    assert [(r["batch"], r["context"], r.get("error")) for r in results["vllm_profile"]] == [(8, 256, None),
                                                                                          (16, 512, None)]


def test_gpu_run_points_take_a_context_for_vllm_profile_only(tmp_path, monkeypatch):
    """``--points``: arch:batch or arch:batch:context; a bad item is named with the forms accepted, and a
    point's own context is refused for the steps that read --context only."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    monkeypatch.syspath_prepend(str(root))
    from bench.gpu_run import parse_points

    assert parse_points("qwen3.5-4b:32:8192,qwen3.5-4b:256:512,qwen3-4b:8") == (
        [("qwen3.5-4b", 32), ("qwen3.5-4b", 256), ("qwen3-4b", 8)], {0: 8192, 1: 512})
    for bad in ("qwen3-4b", "qwen3-4b:0", "qwen3-4b:32:x", "qwen3-4b:32:8192:1", ":32", "qwen3-4b:3\u00b2"):
        with pytest.raises(ValueError, match=f"{bad!r} is not arch:batch or arch:batch:context"):
            parse_points(bad)
    res = subprocess.run([sys.executable, "bench/gpu_run.py", "--out", str(tmp_path / "out"), "--steps", "profile",
                          "--points", "qwen3-4b:32:8192"], cwd=root, capture_output=True, text=True)
    assert res.returncode == 2 and "read by the vllm_profile step only, not by profile" in res.stderr
    assert not (tmp_path / "out").exists()  # refused before anything is written
