"""Jobs on several GPUs (tensor parallel): presets, the per-GPU cost model, config checks, and the telemetry and
levers of a job on two GPUs.

Several GPUs cannot run here: the two-GPU job runs against ``phase_energy.testing.fake_nvml`` with two cards
(power drawn by a stand-in workload, in real time), and vLLM's ``LLM`` is a recording stand-in module (vLLM
cannot start on these CPUs). Everything else is the real code.
"""

import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from phase_energy.config import ConfigError, validate_config
from phase_energy.grid import GridPoint
from phase_energy.measure.backend import nvml_backend, open_backend
from phase_energy.measure.job import measure_on_gpus, point_skip_reason
from phase_energy.measure.levers import LeverError, journal_path
from phase_energy.measure.multigpu import MultiMeter, job_summary_rows, multi_summary_stamp
from phase_energy.measure.nvml import GPU
from phase_energy.measure.protocol import Settings, Window
from phase_energy.measure.trace import GPU_WINDOW_COLUMNS, MULTI_SAMPLE_COLUMNS, read_trace, write_trace
from phase_energy.model.costmodel import CostModel, SplitCostModel, cost_model
from phase_energy.model.presets import LARGE_PRESETS, PRESETS, get_preset, tensor_parallel_problem
from phase_energy.testing.fake_nvml import FakeNVML

from .conftest import EngineStarted


# ------------------------------------------------------------------------------------------ presets, cost
def test_larger_presets_cover_every_paradigm_on_two_gpus():
    assert {c.paradigm for c in LARGE_PRESETS.values()} == {"gqa", "mla", "gdn", "mamba2"}
    for name, cfg in LARGE_PRESETS.items():
        assert cfg.gpus == 2 and cfg.sources, name
        assert len(cfg.layer_pattern) == cfg.n_layers, name
        assert tensor_parallel_problem(cfg) is None, name
        assert 25e9 < CostModel(cfg).params < 50e9, name
    assert all(c.gpus == 1 for c in PRESETS.values())


def test_qwen3_32b_has_its_published_parameter_count():
    # Qwen3-32B's model card: 32.8B parameters (untied head)
    assert CostModel(get_preset("qwen3-32b")).params == pytest.approx(32.8e9, rel=2e-3)


def test_split_cost_model_streams_a_share_of_weights_and_cache_per_gpu():
    gqa = get_preset("qwen3-32b")
    whole, split = CostModel(gqa, engine="vllm"), cost_model(gqa, engine="vllm")
    assert isinstance(split, SplitCostModel)
    # 8 KV heads over 2 GPUs: each holds 4, half of the cache
    assert split.kv_bytes_per_token_per_gpu * 2 == whole.kv_bytes_per_token
    b, pos = 32, 2048
    assert split.decode_bytes(b, pos) == pytest.approx(whole.decode_bytes(b, pos) / 2)
    assert split.decode_flops(b, pos) == whole.decode_flops(b, pos)  # the floor is bytes per GPU, FLOPs whole
    # the MLA latent is not split by heads: every GPU keeps the whole cache
    mla = cost_model(get_preset("qwen3-32b-transmla"), engine="vllm")
    assert mla.kv_bytes_per_token_per_gpu == mla.kv_bytes_per_token
    assert mla.decode_bytes(b, pos) > CostModel(get_preset("qwen3-32b-transmla"), "vllm").decode_bytes(b, pos) / 2
    # KV heads fewer than the GPUs are replicated: 2 KV heads on 4 GPUs keep one each
    few = SplitCostModel(replace(get_preset("tiny-gqa"), gpus=4))
    assert few.kv_bytes_per_token_per_gpu == few.kv_bytes_per_token // 2
    # memory per GPU: under half the whole model's at a small batch, the budget check uses it
    assert split.memory_bytes(1, 2048, 2048) < whole.memory_bytes(1, 2048, 2048) * 0.6


def test_one_gpu_keeps_the_plain_cost_model():
    m = cost_model(get_preset("qwen3-4b"))
    assert type(m) is CostModel
    assert m.decode_bytes(8, 1024) == CostModel(get_preset("qwen3-4b")).decode_bytes(8, 1024)


def test_a_split_that_does_not_divide_the_heads_is_named():
    why = tensor_parallel_problem(get_preset("qwen3-32b"), 3)
    assert "64 attention heads" in why and "gpus=3" in why and "divisor of 64" in why
    why = tensor_parallel_problem(get_preset("qwen3.5-27b"), 16)  # 24 attention heads
    assert "24 attention heads" in why


# ------------------------------------------------------------------------------------------ config, points
def test_native_engine_alone_refuses_a_multi_gpu_architecture():
    with pytest.raises(ConfigError) as e:
        validate_config({"architectures": ["qwen3-32b"], "engines": ["native"]})
    msg = str(e.value)
    assert "architectures[0]" in msg and "'qwen3-32b'" in msg and "gpus=2" in msg and "vllm" in msg
    with pytest.raises(ConfigError, match=r"clear\.architectures"):
        validate_config({"clear": {"architectures": ["qwen3-32b"]}})
    cfg = validate_config({"architectures": ["qwen3-4b", "qwen3-32b"], "engines": ["native", "vllm"]})
    # a mixed grid: the native points of the two-GPU model are skipped with their reason, vLLM's run
    why = point_skip_reason(cfg, GridPoint("qwen3-32b", 1, 512, "default", engine="native"), "nvml")
    assert "gpus=2" in why and "engine vllm" in why
    assert point_skip_reason(cfg, GridPoint("qwen3-32b", 1, 512, "default", engine="vllm"), "nvml") is None
    why = point_skip_reason(cfg, GridPoint("qwen3-32b", 1, 512, "default", engine="vllm"), "sim")
    assert "simulator models one GPU" in why
    with pytest.raises(ValueError, match="gpus=2"), open_backend(cfg, "sim", 0, gpus=2):
        pass


def test_memory_budget_is_checked_per_gpu():
    cfg = validate_config({"architectures": ["nemotron-h-47b"], "engines": ["vllm"], "gpu": {"memory_budget_gb": 80}})
    # 94 GB of weights fit on two GPUs of 80 GB each at batch 1, not on one
    assert point_skip_reason(cfg, GridPoint("nemotron-h-47b", 1, 512, "default", engine="vllm"), "nvml") is None
    why = point_skip_reason(cfg, GridPoint("nemotron-h-47b", 256, 8192, "default", engine="vllm"), "nvml")
    assert "per GPU of 2" in why


def test_vllm_gets_the_presets_gpus_as_tensor_parallel_size(vllm_args, tmp_path):
    """vLLM cannot start here: a stand-in ``vllm`` module records the engine's arguments."""
    from phase_energy.engines.vllm import VllmEngine

    for arch in ("tiny-gqa-tp2", "tiny-gqa"):
        with pytest.raises(EngineStarted):
            VllmEngine(arch, max_num_seqs=4, max_model_len=64, capture_sizes=[4], folder=tmp_path / arch)
    assert vllm_args[0]["tensor_parallel_size"] == 2
    assert "tensor_parallel_size" not in vllm_args[1]  # one GPU: the arguments as before


# ------------------------------------------------------------------------------------------ a two-GPU job
LOADS_W = (300.0, 100.0)  # GPU 0 draws more than GPU 1 (idle 122 W each)


class TwoGpuWorkload:
    """A real-time stand-in: prefill and decode draw LOADS_W on the two fake cards while they run."""

    batch, context, rewinds, max_position = 1, 16, True, 64

    def __init__(self, fake, journal_dir=None):
        self.fake, self.journal_dir, self.seen = fake, journal_dir, []

    def _work(self, seconds):
        for card, w in zip(self.fake.cards, LOADS_W, strict=True):
            card.set_load(w)
        self.seen.append([(c.power_limit_mw, c.locked) for c in self.fake.cards])
        time.sleep(seconds)
        for card in self.fake.cards:
            card.set_load(0.0)

    def warmup(self, runs, prefill_sequences=None):
        return 0.01, 0.002

    def fill_cache(self, sequences):
        pass

    def prefill(self, sequences=None):
        self._work(0.01)

    def decode(self, position, steps):
        self._work(0.002 * steps)

    def end_decode(self):
        pass

    def irregular_steps(self):
        return 0

    def decoded_tokens(self):
        return 0

    def next_position(self):
        return self.context

    def idle(self, seconds):
        time.sleep(seconds)

    def synchronize(self):
        pass


SETTINGS = dict(idle_s=0.2, warmup_runs=1, min_counter_ticks=5, counter_period_ms=20, sampling_period_ms=5,
                prefill_trials=2, decode_trials=1, decode_windows=2, pause_s=0.0, lead_in_s=0.0, max_output=8,
                decode_lead_in_s=0.0)


def two_gpus():
    fake = FakeNVML(n_gpus=2)
    cards = [GPU(i, nvml=fake) for i in range(2)]
    return fake, nvml_backend(cards[0], lambda: None, cards)


def test_two_gpu_job_samples_each_gpu_and_sums_window_energy(tmp_path):
    fake, backend = two_gpus()
    s = Settings(**SETTINGS)
    samples, windows, per_gpu, applied, _ = measure_on_gpus(backend, "powercap:250", True, TwoGpuWorkload(fake),
                                                            s, journal_dir=tmp_path)
    assert set(samples["gpu"]) == {0, 1} and list(samples.columns) == list(MULTI_SAMPLE_COLUMNS)
    assert list(per_gpu.columns) == list(GPU_WINDOW_COLUMNS) and len(per_gpu) == 2 * len(windows)
    g0, g1 = (per_gpu[per_gpu["gpu"] == g].reset_index(drop=True) for g in (0, 1))
    # the job's window energy is the sum over the GPUs, window by window
    np.testing.assert_allclose(windows["energy_j"], g0["energy_j"] + g1["energy_j"], rtol=1e-9)
    np.testing.assert_allclose(windows["energy_trapz_j"], g0["energy_trapz_j"] + g1["energy_trapz_j"], rtol=1e-9)
    # each GPU's own power: the cap holds GPU 0 at 250 W; GPU 1 draws 222 W below it; idle 122 W each
    work = windows["phase"] != "idle"
    np.testing.assert_allclose((g0["energy_j"] / g0["duration_s"])[work], 250.0, rtol=0.1)
    assert ((g1["energy_j"] / g1["duration_s"])[work] < 235.0).all()
    idle = windows["phase"] == "idle"
    np.testing.assert_allclose(windows.loc[idle, "power_mean_w"], 2 * 122.0, rtol=0.05)
    # throttle reasons per GPU: only GPU 0 ran into its cap; the job's row takes the most affected GPU
    assert (g0.loc[work, "thr_sw_power_s"] > 0).all() and (g1["thr_sw_power_s"] == 0).all()
    np.testing.assert_allclose(windows["thr_sw_power_s"], g0["thr_sw_power_s"])
    assert [a.power_limit_w for a in applied] == [250.0, 250.0]


def test_lever_is_set_on_every_gpu_with_a_journal_each_and_restored_on_all(tmp_path):
    fake, backend = two_gpus()
    before = [fake.settings(i) for i in range(2)]
    workload = TwoGpuWorkload(fake)
    uuids = [c.uuid for c in fake.cards]

    original = workload._work

    def work_and_look(seconds):
        workload.journals = [journal_path(u, tmp_path).exists() for u in uuids]
        original(seconds)

    workload._work = work_and_look
    measure_on_gpus(backend, "smclock:1410", True, workload, Settings(**SETTINGS), journal_dir=tmp_path)
    assert all(seen == [(700_000, (1410, 1410))] * 2 for seen in workload.seen)  # both locked while it ran
    assert workload.journals == [True, True]  # one journal per GPU, named by its UUID
    assert [fake.settings(i) for i in range(2)] == before
    assert not any(journal_path(u, tmp_path).exists() for u in uuids)


def test_a_gpu_that_refuses_the_lever_leaves_every_gpu_as_it_was(tmp_path):
    fake, backend = two_gpus()
    fake.cards[1].root = False  # the second GPU refuses settings
    before = [fake.settings(i) for i in range(2)]
    with pytest.raises(LeverError, match="could not be applied"):
        measure_on_gpus(backend, "powercap:300", True, TwoGpuWorkload(fake), Settings(**SETTINGS),
                        journal_dir=tmp_path)
    assert [fake.settings(i) for i in range(2)] == before
    assert not list(tmp_path.glob("*.json"))


def _two_gpu_default_job(tmp_path):
    """A job at the default lever on the fake NVML's two cards: the cards, its settings, samples, windows,
    per-GPU windows and the metadata its trace records."""
    fake, backend = two_gpus()
    s = Settings(**SETTINGS)
    samples, windows, per_gpu, _, _ = measure_on_gpus(backend, "default", False, TwoGpuWorkload(fake), s,
                                                      journal_dir=tmp_path)
    meta = {"format_version": 1, "arch": "tiny-gqa-tp2", "paradigm": "gqa", "batch": 1, "context": 16,
            "max_output": 8, "lever_requested": "default", "lever_enforced": {}, "backend": "nvml",
            "engine": "vllm", "gpu": backend.describe(), "versions": {}, "git_commit": None, "config_hash": "x",
            "started_at": "", "finished_at": "", "seed": 0, "gpus": 2}
    return fake, s, samples, windows, per_gpu, meta


def test_two_gpu_trace_is_written_read_and_summarised_again_the_same(tmp_path):
    fake, s, samples, windows, per_gpu, meta = _two_gpu_default_job(tmp_path)
    assert [g["uuid"] for g in meta["gpu"]["gpus"]] == [c.uuid for c in fake.cards]
    with pytest.raises(ValueError, match="gpu_windows"):
        write_trace(tmp_path / "t", samples, windows, meta, {"status": "ok"})
    write_trace(tmp_path / "t", samples, windows, meta,
                {"status": "ok", "windows": len(windows), "summary": multi_summary_stamp(s)}, gpu_windows=per_gpu)
    back = read_trace(tmp_path / "t")
    pd.testing.assert_frame_equal(back["windows"], windows)
    assert (tmp_path / "t" / "gpu_windows.parquet").exists()
    raw = [Window(r.phase, int(r.trial), float(r.start_s), float(r.end_s), float(r.energy_counter_raw_j),
                  int(r.tokens), int(r.repetitions), int(r.steps), int(r.context_start), int(r.context_end))
           for r in back["windows"].itertuples(index=False)]
    again = pd.DataFrame(job_summary_rows(back["samples"], raw, s))
    np.testing.assert_allclose(again["energy_j"], windows["energy_j"], rtol=1e-12)
    assert list(again["flags"]) == list(windows["flags"])


def test_multi_meter_sums_the_counters_on_one_clock():
    fake, backend = two_gpus()
    meter = backend.meter(0.005)
    assert isinstance(meter, MultiMeter)
    for card, w in zip(fake.cards, LOADS_W, strict=True):
        card.set_load(w)
    time.sleep(0.2)
    per = meter.read_energy_by_gpu_j()
    total = meter.read_energy_j()
    samples = meter.stop()
    assert per[0] > per[1] > 0 and total == pytest.approx(sum(per), rel=0.02)
    assert samples.groupby("gpu")["t_s"].min().max() < 0.1  # both samplers on the shared origin


def test_a_multi_gpu_trace_names_every_card_it_ran_on():
    """The analysis's card of a job (phase_energy's ``cards``) is each of its cards, not the first one only."""
    from phase_energy.measure.trace import gpu_uuid_of

    two = {"backend": "nvml", "gpu": {"uuid": "GPU-A", "gpus": [{"uuid": "GPU-A"}, {"uuid": "GPU-B"}]}}
    assert gpu_uuid_of(two) == "GPU-A,GPU-B"
    assert gpu_uuid_of({"backend": "nvml", "gpu": {"uuid": "GPU-A"}}) == "GPU-A"
    assert gpu_uuid_of({"backend": "nvml", "gpu": {}}) == ""  # a trace from before cards were recorded
    assert gpu_uuid_of({"backend": "sim", "gpu": {"uuid": "GPU-sim"}}) == ""


def test_power_timeline_draws_each_gpu_of_a_two_gpu_job(tmp_path):
    """The power timeline of a job on two GPUs: one power and one clock line per GPU, each that GPU's own
    samples, no line of their mean and no band over them (the fake NVML's two cards draw different power)."""
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    from phase_energy.report.figures import fig01_power_timeline

    _, s, samples, windows, per_gpu, meta = _two_gpu_default_job(tmp_path)
    write_trace(tmp_path / "traces" / "t", samples, windows, meta,
                {"status": "ok", "windows": len(windows), "summary": multi_summary_stamp(s)}, gpu_windows=per_gpu)
    fig, _ = fig01_power_timeline({}, tmp_path / "traces")
    try:
        power_ax, clock_ax = fig.axes
        power = [ln for ln in power_ax.get_lines() if len(ln.get_xdata()) > 2]
        clock = [ln for ln in clock_ax.get_lines() if len(ln.get_xdata()) > 2]
        assert len(power) == len(clock) == 2
        for g, (p, c) in enumerate(zip(power, clock, strict=True)):
            own = samples[samples["gpu"] == g].sort_values("t_s")
            np.testing.assert_array_equal(np.asarray(p.get_ydata(), float), own["power_instant_w"].to_numpy(float))
            np.testing.assert_array_equal(np.asarray(c.get_ydata(), float), own["sm_clock_mhz"].to_numpy(float))
        assert abs(np.mean(power[0].get_ydata()) - np.mean(power[1].get_ydata())) > 5  # two cards, two lines
        assert not [c for c in power_ax.collections if isinstance(c, PolyCollection)]
        legend = [t.get_text() for t in power_ax.get_legend().get_texts()]
        assert legend.count("instant power, each GPU") == 1 and legend.count("SM clock, each GPU (right axis)") == 1
    finally:
        plt.close(fig)
