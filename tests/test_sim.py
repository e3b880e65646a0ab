import numpy as np
import pandas as pd
import pytest

from phase_energy.config import GridPoint, validate_config
from phase_energy.measure import run_job
from phase_energy.presets import get_preset
from phase_energy.sim import REASON_SW_POWER_CAP, SimGPU, SimParams, SimWorkload
from phase_energy.trace import read_trace

# h200-measurements.md: Qwen3-4B-shaped decode, whole step in one CUDA graph, context 2048
MEASURED = {1: (3.74, 396), 8: (4.34, 441), 32: (6.01, 556), 64: (8.17, 656), 128: (12.83, 696)}


def _decode_point(batch, context=2048, steps=20, **params):
    gpu = SimGPU(SimParams(**params))
    w = SimWorkload(gpu, get_preset("qwen3-4b"), batch, context)
    t0, e0 = gpu.t, gpu.energy
    w.decode(context, steps)
    dt = gpu.t - t0
    tl = gpu.timeline()
    n = len(tl["dur"])
    return dt / steps * 1e3, (gpu.energy - e0) / dt, tl["reasons"][n - steps:], tl["clock"][n - steps:]


@pytest.mark.parametrize("batch", sorted(MEASURED))
def test_calibrated_to_h200_decode_within_10_percent(batch):
    step_ms, power_w, _, _ = _decode_point(batch)
    ms, pw = MEASURED[batch]
    assert step_ms == pytest.approx(ms, rel=0.10)
    assert power_w == pytest.approx(pw, rel=0.10)


def test_batch_128_binds_the_700w_cap_and_lower_batches_do_not():
    _, p128, reasons128, clocks128 = _decode_point(128)
    assert (reasons128 & REASON_SW_POWER_CAP).any()
    assert clocks128.min() < 1980
    assert p128 <= 700 * 1.005
    _, _, reasons32, clocks32 = _decode_point(32)
    assert not (reasons32 & REASON_SW_POWER_CAP).any()
    assert clocks32.min() == 1980


def test_matmul_load_sits_at_the_cap_with_clocks_pulled_down():
    r = SimGPU().matmul_load(8192, 8.0)
    assert r["power_w"] == pytest.approx(700, rel=0.02)
    assert r["capped"] == 1.0
    assert 1000 <= r["sm_clock_mhz"] <= 1600
    assert r["flops"] == pytest.approx(653e12, rel=0.15)


def test_lower_power_cap_lowers_clock_and_power_of_a_memory_bound_decode():
    gpu = SimGPU()
    gpu.set_power_limit(300)
    w = SimWorkload(gpu, get_preset("qwen3-4b"), 32, 2048)
    e0, t0 = gpu.energy, gpu.t
    w.decode(2048, 50)
    assert (gpu.energy - e0) / (gpu.t - t0) <= 301
    assert gpu.timeline()["clock"][-1] < 1980


def test_clock_lock_and_firmware_clamp():
    gpu = SimGPU(SimParams(firmware_clamp_mhz=1830))
    gpu.lock_sm_clock(1980)
    w = SimWorkload(gpu, get_preset("qwen3-4b"), 1, 2048)
    w.decode(2048, 10)
    assert gpu.timeline()["clock"][-1] == pytest.approx(1830, abs=15)
    with pytest.raises(ValueError, match="not supported"):
        gpu.lock_sm_clock(1981)


def test_energy_counter_ticks_every_100_ms():
    gpu = SimGPU(seed=3)
    gpu.idle(3.0)
    s = gpu.sample(0.01)
    changes = s["t_s"][s["energy_j"].diff().fillna(0) != 0].to_numpy()
    assert np.median(np.diff(changes)) == pytest.approx(0.1, abs=0.011)


def _sim_cfg(**kw):
    base = {"architectures": ["qwen3-4b"], "backend": "sim", "output_lengths": [64],
            "measurement": {"idle_s": 0.5, "warmup_runs": 1, "min_counter_ticks": 3, "prefill_trials": 2,
                            "decode_trials": 2, "decode_windows": 2, "pause_s": 0.1}}
    base.update(kw)
    return validate_config(base)


def test_same_seed_gives_identical_traces_and_labels_them_sim(tmp_path):
    cfg = _sim_cfg()
    p = GridPoint("qwen3-4b", 8, 512, "default")
    run_job(cfg, p, tmp_path / "a")
    run_job(cfg, p, tmp_path / "b")
    a, b = read_trace(tmp_path / "a"), read_trace(tmp_path / "b")
    pd.testing.assert_frame_equal(a["samples"], b["samples"])
    pd.testing.assert_frame_equal(a["windows"], b["windows"])
    assert a["metadata"]["backend"] == "sim" and a["metadata"]["paradigm"] == "gqa"
    run_job(_sim_cfg(seed=1), p, tmp_path / "c")
    assert not read_trace(tmp_path / "c")["samples"]["power_instant_w"].equals(a["samples"]["power_instant_w"])


def test_protocol_windows_span_minimum_ticks_and_cover_the_output(tmp_path):
    cfg = _sim_cfg(output_lengths=[64, 200])
    run_job(cfg, GridPoint("qwen3-4b", 1, 512, "default"), tmp_path)
    w = read_trace(tmp_path)["windows"]
    assert set(w["phase"]) == {"idle", "prefill", "decode"}
    work = w[w["phase"] != "idle"]
    assert (work["duration_s"] >= 0.3 * 0.999).all()
    assert (work["counter_ticks"] >= 3).all()
    dec = w[(w["phase"] == "decode") & (w["trial"] == 0)]
    assert dec["context_start"].min() == 512 and dec["context_end"].max() == 512 + 200
    assert (dec["tokens"] == dec["steps"] * dec["repetitions"]).all()


def test_backend_auto_without_gpu_falls_back_to_sim_loudly(tmp_path, caplog):
    cfg = _sim_cfg(backend="auto")
    with caplog.at_level("WARNING"):
        backend = run_job(cfg, GridPoint("qwen3-4b", 1, 512, "default"), tmp_path)
    assert backend == "sim"
    assert "SIMULATED" in caplog.text
    assert read_trace(tmp_path)["metadata"]["backend"] == "sim"
