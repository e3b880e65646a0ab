import importlib.util
import json
import sys
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest

from phase_energy.config import validate_config
from phase_energy.grid import GridPoint
from phase_energy.measure.job import run_job
from phase_energy.measure.sim import REASON_SW_POWER_CAP, SimGPU, Work
from phase_energy.measure.sim_params import SimParams
from phase_energy.measure.sim_workload import SimWorkload
from phase_energy.measure.trace import read_trace
from phase_energy.model.presets import get_preset

from .conftest import ROOT


def _calibration():
    """bench/sim_calibration.py as a module (it reads the reference traces and simulates their points)."""
    if "sim_calibration" not in sys.modules:
        spec = importlib.util.spec_from_file_location("sim_calibration", ROOT / "bench/sim_calibration.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["sim_calibration"] = mod  # its dataclass needs the module registered
        spec.loader.exec_module(mod)
    return sys.modules["sim_calibration"]


def _decode_point(batch, context=2048, steps=20, arch="qwen3-4b", **params):
    gpu = SimGPU(SimParams(**params))
    w = SimWorkload(gpu, get_preset(arch), batch, context)
    t0, e0 = gpu.t, gpu.energy
    w.decode(context, steps)
    dt = gpu.t - t0
    tl = gpu.timeline()
    n = len(tl["dur"])
    return dt / steps * 1e3, (gpu.energy - e0) / dt, tl["reasons"][n - steps:], tl["clock"][n - steps:]


# ----------------------------------------------------------------------------- calibration
def test_committed_calibration_is_of_the_current_defaults():
    cal = json.loads((ROOT / "bench/sim-calibration.json").read_text())
    assert cal["params"] == json.loads(json.dumps(asdict(SimParams())))
    assert cal["points"] == 87
    for q in ("decode_step_ms", "decode_power_w", "prefill_power_w", "prefill_tokens_per_s"):
        assert set(cal["errors"][q]) == {"all", "gqa", "mla", "gdn", "mamba2"}
        assert {"median_abs", "max_abs", "bias", "n"} <= set(cal["errors"][q]["all"])
    if "fit" in cal:  # written by --fit: the defaults are as good as the fit
        assert cal["fit"]["defaults_match_fit"]
        assert cal["fit"]["cost_of_defaults"] <= 1.01 * cal["fit"]["cost_of_fit"]


def test_gqa_reference_points_within_their_calibrated_error():
    """Every Qwen3-4B point of the reference traces through the campaign's protocol on the simulator: the
    errors stay what the calibration reports, and the committed table is what the code gives now."""
    cal = _calibration()
    points = cal.load_points(cal.TRACES / "engine~native/arch~qwen3-4b")
    assert len(points) == 12
    committed = {r["point"].split("arch~qwen3-4b/")[-1]: r for r in
                 json.loads((ROOT / "bench/sim-calibration.json").read_text())["per_point"]
                 if "arch~qwen3-4b/" in r["point"]}
    err = {q: [] for q in cal.QUANTITIES}
    for p in points:
        sim = cal.simulate(SimParams(), p)
        for q in cal.QUANTITIES:
            err[q].append(sim[q] / p.measured[q] - 1)
            assert sim[q] == pytest.approx(committed[p.path][q]["sim"], rel=1e-3), (p.path, q)
    e = {q: np.abs(v) for q, v in err.items()}
    assert e["decode_step_ms"].max() < 0.10 and np.median(e["decode_step_ms"]) < 0.06
    assert e["decode_power_w"].max() < 0.17 and np.median(e["decode_power_w"]) < 0.05
    assert e["prefill_power_w"].max() < 0.25 and np.median(e["prefill_power_w"]) < 0.02
    assert np.median(e["prefill_tokens_per_s"]) < 0.10
    assert e["prefill_sm_clock_mhz"].max() < 0.08


def test_large_batch_decode_binds_the_700w_cap_and_small_batch_does_not():
    # reference traces, qwen3-4b context 512: batch 256 has the SW power-cap reason set, batch 32 does not
    _, p256, reasons256, clocks256 = _decode_point(256, context=512)
    assert (reasons256 & REASON_SW_POWER_CAP).any()
    assert clocks256.min() < 1980
    assert p256 <= 700 * 1.005
    _, _, reasons32, clocks32 = _decode_point(32, context=512)
    assert not (reasons32 & REASON_SW_POWER_CAP).any()
    assert clocks32.min() == 1980


# ----------------------------------------------------------------------------- GEMM rate
def test_gemm_rate_at_the_top_clock_is_the_measured_one_and_never_above_the_peak():
    p = SimParams()
    assert p.matmul_peak_flops == pytest.approx(989e12)
    gpu = SimGPU(p)
    n = 8192
    big = Work(np.array([2.0 * n**3]), np.array([3.0 * n * n * 2]), rows=n, kernels=1)
    t, _ = gpu._step(big, np.array([[1980.0]]), gpu.temperature)
    assert 770e12 <= 2.0 * n**3 / t[0, 0] <= 800e12
    assert 770e12 <= gpu.matmul_rate_measured() <= 800e12  # what the metadata records, as a real job does
    clocks = p.supported_clocks().astype(float)
    for rows in (1.0, 64.0, 8192.0, 1e9):
        t, _ = gpu._step(Work(np.array([1e15]), np.array([0.0]), rows=rows, kernels=0), clocks[None, :], 40.0)
        assert (1e15 / t <= p.matmul_peak_flops * clocks / 1980).all()
    sustained = SimGPU(p).matmul_load(8192, 4.0)  # at the 700 W limit the controller pulls the clock down
    assert sustained["capped"] == 1.0
    assert sustained["power_w"] == pytest.approx(700, rel=0.01)
    assert sustained["flops"] < 770e12
    assert 1500 <= sustained["sm_clock_mhz"] < 1980


# ----------------------------------------------------------------------------- power-cap hold
@pytest.mark.parametrize("hold", [0.0, 0.365, 1.0])
def test_cap_reason_holds_after_capped_work_then_clears(hold):
    gpu = SimGPU(SimParams(cap_hold_s=hold))
    w = SimWorkload(gpu, get_preset("qwen3-4b"), 32, 2048)
    w.prefill()  # at the limit
    t_end = gpu.t
    assert gpu.timeline()["reasons"][-1] & REASON_SW_POWER_CAP
    w.decode(2048, 400)  # ~2.7 s, under the limit
    tl = gpu.timeline()
    after = tl["start"] >= t_end
    assert not (tl["reasons"][after] & REASON_SW_POWER_CAP).any()
    assert (tl["clock"][after] == 1980).all()  # the clocks are not held, only the reason
    s = gpu.sample(0.01)
    t = s["t_s"].to_numpy()
    cap = (s["clock_reasons"].to_numpy() & REASON_SW_POWER_CAP) > 0
    assert cap[(t > t_end - 0.5) & (t < t_end)].all()
    assert cap[(t > t_end) & (t < t_end + hold - 0.01)].all()
    assert not cap[t > t_end + hold + 0.01].any()
    thr = s["thr_sw_power_s"].to_numpy()
    at_end = np.interp(t_end, t, thr)
    assert thr[-1] - at_end == pytest.approx(hold, abs=0.011)
    assert np.all(np.diff(thr) >= 0)
    # the counter advanced through the prefill itself too
    assert at_end >= 0.9 * tl["dur"][tl["start"] < t_end][-1]


def test_back_to_back_capped_work_counts_once():
    gpu = SimGPU()
    w = SimWorkload(gpu, get_preset("qwen3-4b"), 32, 2048)
    t0 = gpu.t
    w.prefill()
    w.prefill()
    spans = gpu.cap_intervals()
    assert len(spans[0]) == 1
    assert spans[1][0] - spans[0][0] == pytest.approx(gpu.t - t0 + gpu.p.cap_hold_s)


# ----------------------------------------------------------------------------- temperature
def test_power_rises_with_temperature_at_the_same_work():
    still = {"thermal_tau_s": 1e9}  # the temperature stays where it is set
    powers = []
    for temp in (40.0, 70.0):
        gpu = SimGPU(SimParams(**still))
        w = SimWorkload(gpu, get_preset("qwen3-4b"), 8, 2048)
        gpu.temperature = temp
        e0, t0 = gpu.energy, gpu.t
        w.decode(2048, 50)
        powers.append(((gpu.energy - e0) / (gpu.t - t0), gpu.t - t0))
    (p40, d40), (p70, d70) = powers
    p = SimParams()
    assert d40 == pytest.approx(d70)  # same work, same time (uncapped)
    assert p70 - p40 == pytest.approx(p.static_w * p.leakage_per_c * 30.0, rel=1e-6)
    assert p70 - p40 > 5.0
    # without the coefficient the temperature changes nothing
    flat = []
    for temp in (40.0, 70.0):
        gpu = SimGPU(SimParams(leakage_per_c=0.0, **still))
        gpu.temperature = temp
        e0, t0 = gpu.energy, gpu.t
        gpu.idle(1.0)
        flat.append((gpu.energy - e0) / (gpu.t - t0))
    assert flat[0] == pytest.approx(flat[1])


def test_a_hot_card_reaches_the_limit_at_a_lower_clock_and_warms_under_load():
    still = SimParams(thermal_tau_s=1e9)
    clocks = []
    for temp in (40.0, 90.0):
        gpu = SimGPU(still)
        gpu.temperature = temp
        clocks.append(gpu.matmul_load(8192, 0.5)["sm_clock_mhz"])
    assert clocks[1] < clocks[0]
    # the first-order model: from idle to a steady decode the card warms and its static power follows
    gpu = SimGPU()
    t_idle = gpu.temperature
    w = SimWorkload(gpu, get_preset("qwen3-4b"), 32, 2048)
    for _ in range(10):  # the same 20 positions again and again (~1.3 s)
        w.decode(2048, 20)
    tl = gpu.timeline()
    assert tl["temp"][-1] > t_idle + 8
    assert tl["power"][-1] - tl["power"][-200] > 3.0
    np.testing.assert_allclose(tl["dur"][-20:], tl["dur"][-200:-180])  # uncapped: the steps take as long
    # a capped prefill settles where the reference traces read it (55-64 C)
    for _ in range(4):
        w.prefill()
    assert 55 <= gpu.temperature <= 64


def test_lower_power_cap_lowers_clock_and_power_of_a_memory_bound_decode():
    gpu = SimGPU()
    gpu.set_power_limit_w(300)
    gpu.idle(gpu.p.clock_switch_latency_s)  # a changed setting reaches the clocks after this latency
    w = SimWorkload(gpu, get_preset("qwen3-4b"), 32, 2048)
    e0, t0 = gpu.energy, gpu.t
    w.decode(2048, 50)
    assert (gpu.energy - e0) / (gpu.t - t0) <= 301
    assert gpu.timeline()["clock"][-1] < 1980


def test_clock_lock_and_firmware_clamp():
    gpu = SimGPU(SimParams(firmware_clamp_mhz=1830))
    gpu.lock_sm_clock_mhz(1980)
    gpu.idle(gpu.p.clock_switch_latency_s)
    w = SimWorkload(gpu, get_preset("qwen3-4b"), 1, 2048)
    w.decode(2048, 10)
    assert gpu.timeline()["clock"][-1] == pytest.approx(1830, abs=15)
    with pytest.raises(ValueError, match="not supported"):
        gpu.lock_sm_clock_mhz(1981)


def test_a_changed_setting_reaches_the_clocks_after_the_switch_latency():
    gpu = SimGPU(SimParams(clock_switch_latency_s=0.03))
    w = SimWorkload(gpu, get_preset("qwen3-4b"), 8, 2048)
    gpu.lock_sm_clock_mhz(1410)
    t0 = gpu.t
    w.decode(2048, 40)
    tl = gpu.timeline()
    steps = slice(len(tl["dur"]) - 40, None)
    start, clock = tl["start"][steps] - t0, tl["clock"][steps]
    assert (clock[start < 0.03] == 1980).all() and (clock[start >= 0.03] == 1410).all()
    assert (start < 0.03).sum() >= 3  # several steps ran before the lock took effect
    gpu.reset_sm_clock()
    gpu.idle(0.01)
    assert gpu.clocks_mhz()[0] == 1410  # released 10 ms ago: still the lock's clock
    gpu.idle(0.03)
    assert gpu.clocks_mhz()[0] == 1980


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
    recorded = a["metadata"]["gpu"]["sim_params"]
    assert set(recorded) == set(asdict(SimParams()))  # every parameter, in the trace
    assert recorded["cap_hold_s"] == SimParams().cap_hold_s
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


def test_the_fast_paths_give_what_the_full_computation_gives():
    """The top clock tried first, and the counter read from the last piece: the same numbers as before."""
    gpu = SimGPU(seed=5)
    w = SimWorkload(gpu, get_preset("qwen3-4b"), 32, 2048)
    for work in (w.decode_work(2048, 64), w.prefill_work(4), w.decode_work(4096, 1)):
        for limit in (700.0, 450.0, 200.0):
            gpu.limit_w = limit
            fast = gpu._choose_clock(work)
            allowed = gpu.clocks[gpu.clocks <= gpu.max_clock + 1e-9].astype(float)
            t, p = gpu._step(work, allowed[None, :], np.full(len(work.flops), gpu.temperature))
            fits = p <= limit
            idx = np.where(fits.any(axis=1), fits.shape[1] - 1 - np.argmax(fits[:, ::-1], axis=1), 0)
            rows = np.arange(len(idx))
            np.testing.assert_array_equal(fast[0], t[rows, idx])
            np.testing.assert_array_equal(fast[2], allowed[idx])
            np.testing.assert_array_equal(fast[3], idx < len(allowed) - 1)
    gpu.limit_w = 700.0
    for k in range(40):
        gpu.run(Work(np.full(k % 7 + 1, 3e12), np.full(k % 7 + 1, 1e9), rows=32.0, kernels=40))
        gpu.idle(0.013 * (k % 3))
        assert gpu.counter_now() == gpu.counter_j(np.array([gpu.t]))[0]  # the whole timeline, the old way


def _reference_choice(gpu, work, temps):
    """Per step, one at a time: the highest clock whose power fits, as the simulator chose it before its caches.

    The step's time and power over the allowed clocks in the order the simulator sums them (static power
    first), then the clocks tried from the top down in Python; the lowest clock when none fits.
    """
    p = gpu.p
    allowed = gpu.clocks[gpu.clocks <= gpu.max_clock + 1e-9].astype(float)
    f = allowed[None, :]
    bandwidth = p.bandwidth_bps * p.stream_efficiency * np.minimum(1.0, (f / p.bw_knee_mhz) ** 0.7)
    gemm_rate = p.gemm_rate(f)
    kernel_s = p.kernel_time_fixed_s + p.kernel_time_clocked_s * p.sm_clock_max_mhz / f
    g = p.clock_scale(f)
    out = []
    for i in range(len(work.flops)):
        flops, nbytes = work.flops[i:i + 1, None], work.bytes[i:i + 1, None]
        small = work.rows / (work.rows + p.matmul_rows_half)
        t = np.maximum(nbytes / bandwidth, flops / (gemm_rate * small * work.efficiency)) + work.kernels * kernel_s
        if work.eager:
            t = np.maximum(t, work.kernels * p.prefill_kernel_time_s)
        u_mem = nbytes / t / p.bandwidth_bps
        u_cmp = flops / t / (gemm_rate * work.efficiency)
        power = (p.static_power(np.reshape(temps[i], (-1, 1))) + p.clock_tree_w * g
                 + u_mem * (p.memory_w + p.memory_sm_w * g) + u_cmp * p.compute_w * g)[0]
        j = next((j for j in range(len(allowed) - 1, -1, -1) if power[j] <= gpu.limit_w), 0)
        out.append((t[0, j], min(power[j], gpu.limit_w * 1.003), allowed[j], j < len(allowed) - 1))
    return [np.array(col) for col in zip(*out, strict=True)]


@pytest.mark.parametrize(("params", "limit"), [({}, 330.0), ({"memory_sm_w": -450.0}, 110.0)])
def test_capped_clock_choice_equals_the_per_step_choice_to_the_bit(params, limit):
    """Bisection, the last answer reused and the whole grid: each step's clock, time and power as chosen alone.

    With ``memory_sm_w`` negative the power rises, then falls with the clock: at 110 W the lowest clocks fit,
    the middle ones do not and the top ones do again. A bisection would stop below; the whole grid is used.
    """
    gpu = SimGPU(SimParams(**params), seed=3)
    w = SimWorkload(gpu, get_preset("qwen3-4b"), 128, 4096)
    work = w.decode_work(4096, 96)
    gpu.limit_w = limit
    rises = not params
    f = gpu.clocks.astype(float)[None, :]
    assert (gpu._highest_fitting(work, f, np.full(len(work.flops), 60.0)) is not None) == rises
    rng = np.random.default_rng(0)
    clocks = set()
    for base in (45.0, 61.0, 60.5, 75.0, 30.0):  # warmer and cooler than the answer before
        temps = base + np.cumsum(rng.uniform(0.0, 0.05, len(work.flops)))
        got = gpu._choose_clock(work, temps)
        want = _reference_choice(gpu, work, temps)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)
        clocks |= set(got[2].tolist())
    if rises:  # the limit binds, at more than one clock across the steps and temperatures
        assert len(clocks) > 1 and max(clocks) < gpu.p.sm_clock_max_mhz
    else:
        assert clocks == {gpu.p.sm_clock_max_mhz}
        return
    # a limit no clock fits (below the card's range, set directly): the lowest clock
    gpu.limit_w = 120.0
    temps = np.full(len(work.flops), 95.0)
    got = gpu._choose_clock(work, temps)
    for a, b in zip(got, _reference_choice(gpu, work, temps), strict=True):
        np.testing.assert_array_equal(a, b)
    assert (got[2] == gpu.p.sm_clock_min_mhz).all()


def test_temperature_follows_the_first_order_recurrence_segment_by_segment():
    """The card's temperature per segment, recomputed with numpy scalars one segment at a time."""
    gpu = SimGPU(seed=2)
    t0 = gpu.temperature
    n0 = len(gpu.timeline()["dur"])
    w = SimWorkload(gpu, get_preset("minicpm3-4b"), 64, 2048)
    w.prefill()
    w.decode(2048, 200)
    gpu.idle(0.3)
    tl = gpu.timeline()
    dur, power = tl["dur"][n0:], tl["power"][n0:]
    a = 1.0 - np.exp(-dur / gpu.p.thermal_tau_s)
    target = gpu.p.ambient_c + gpu.p.thermal_resistance_c_per_w * power
    cur, want = np.float64(tl["temp"][n0 - 1]), []
    for i in range(len(dur)):
        cur = cur + a[i] * (target[i] - cur)
        want.append(cur)
    np.testing.assert_array_equal(tl["temp"][n0:], np.array(want))
    assert gpu.temperature == want[-1] and want[-1] > t0


def test_dropping_the_step_cache_changes_no_trace(tmp_path, monkeypatch):
    """The cached terms of repeated work give the traces that computing them every time gives."""
    import phase_energy.measure.sim as sim

    cfg = _sim_cfg()
    p = GridPoint("qwen3-4b", 32, 1024, "powercap:300")
    run_job(cfg, p, tmp_path / "cached")
    monkeypatch.setattr(sim, "WORK_CACHE_BYTES", 0)  # every entry dropped as soon as the next one comes
    run_job(cfg, p, tmp_path / "uncached")
    a, b = read_trace(tmp_path / "cached"), read_trace(tmp_path / "uncached")
    assert (a["samples"]["clock_reasons"] & REASON_SW_POWER_CAP).any()  # the cap binds
    pd.testing.assert_frame_equal(a["samples"], b["samples"], check_exact=True)
    pd.testing.assert_frame_equal(a["windows"], b["windows"], check_exact=True)


# ----------------------------------------------------------------------------- prefill lead-in
def test_prefill_lead_in_known_answers():
    from phase_energy.measure.protocol import prefill_lead_in

    # H200, qwen3-4b 32 x 2048: a measured prefill lasts 1.47 s, the lead-in asks 0.3 s: one piece of 8 prompts
    assert prefill_lead_in(0.3, 1.47, 32, 8) == (1, 8)
    assert prefill_lead_in(0.3, 1.47, 32, 1) == (1, 7)  # 6.5 prompts' worth, rounded up to whole prompts
    assert prefill_lead_in(0.3, 3.0, 32, 5) == (1, 5)  # less than a piece: one whole piece
    assert prefill_lead_in(0.3, 0.31, 32, 8) == (1, 32)  # nearly the whole prefill: all of it, never more
    assert prefill_lead_in(0.3, 0.1, 4, 1) == (3, 4)  # shorter than the lead-in: whole prefills, as before
    assert prefill_lead_in(0.3, 0.3, 4, 4) == (1, 4)
    assert prefill_lead_in(0.0, 1.47, 32, 8) == (0, 0)


class _RecordingWorkload(SimWorkload):
    """The simulated engine, noting each prefill's sequences and simulated start and end."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.prefills: list[tuple[int, float, float]] = []

    def prefill(self, sequences=None):
        t0 = self.gpu.t
        super().prefill(sequences)
        self.prefills.append((min(sequences or self.batch, self.batch), t0, self.gpu.t))


@pytest.mark.parametrize(("batch", "lead_in_s", "lead_seq"), [(32, 0.3, 8), (32, 0.0, 0), (2, 5.0, 2)])
def test_prefill_window_follows_a_lead_in_of_its_own_work(batch, lead_in_s, lead_seq):
    from phase_energy.measure.protocol import Settings, run_protocol
    from phase_energy.measure.sim import SimMeter

    gpu = SimGPU(seed=0)
    w = _RecordingWorkload(gpu, get_preset("qwen3-4b"), batch, 2048)
    s = Settings(idle_s=0.2, warmup_runs=1, prefill_trials=3, decode_trials=1, decode_windows=1, max_output=8,
                 pause_s=0.2, lead_in_s=lead_in_s, prefill_max_tokens=65536)
    raw = run_protocol(SimMeter(gpu, 0.01), w, s)
    pre = [r for r in raw if r.phase == "prefill"]
    assert len(pre) == 3
    whole = pre[0].end_s - pre[0].start_s
    for r in pre:
        inside = [p for p in w.prefills if p[1] >= r.start_s - 1e-9 and p[2] <= r.end_s + 1e-9]
        assert all(p[0] == batch for p in inside) and r.tokens == batch * 2048 * len(inside)
        # the lead-in: the prefills that run back to back up to the window's opening
        chain, t = [], r.start_s
        for p in sorted((p for p in w.prefills if p[2] <= r.start_s + 1e-9), key=lambda p: -p[2]):
            if t - p[2] > 1e-3:
                break
            chain.append(p)
            t = p[1]
        if lead_seq == 0:
            assert not chain
            continue
        assert {p[0] for p in chain} == {lead_seq}  # the same work, of the lead-in's sequences
        assert r.start_s - chain[-1][1] >= lead_in_s * 0.99  # lasting at least the lead-in
        if batch == 32:  # one piece, far shorter than a whole measured prefill (1.6 s in the simulator)
            assert len(chain) == 1 and chain[0][2] - chain[0][1] < 0.5 * whole


class _FillRecordingWorkload(SimWorkload):
    """The simulated engine, recording when each cache fill and each decode call ran (the simulator's clock)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.fills, self.decodes = [], []

    def fill_cache(self, sequences):
        t0 = self.gpu.t
        super().fill_cache(sequences)
        self.fills.append((t0, self.gpu.t))

    def decode(self, position, steps):
        t0 = self.gpu.t
        super().decode(position, steps)
        self.decodes.append((t0, self.gpu.t))


@pytest.mark.parametrize(("engine", "refill", "fills"), [("native", False, 1), ("native", True, 3),
                                                         ("vllm", False, 3)])
def test_a_static_cache_is_filled_once_and_every_trial_still_has_its_decode_lead_in(engine, refill, fills):
    """With measurement.refill_static_cache: false the native engine's later decode trials decode the cache the
    first trial filled (a refill would write the same prompts' keys and values); true (the default) fills it
    for every trial, and a serving engine's requests always need their own fill. Either way every trial's
    first decode window follows decode_lead_in_s of decode steps, and every trial has its windows."""
    from phase_energy.measure.protocol import Settings, run_protocol
    from phase_energy.measure.sim import SimMeter

    gpu = SimGPU(seed=0)
    w = _FillRecordingWorkload(gpu, get_preset("qwen3-4b"), 32, 2048, engine=engine)
    s = Settings(idle_s=0.2, warmup_runs=1, prefill_trials=1, decode_trials=3, decode_windows=2, max_output=64,
                 decode_window_steps=8, pause_s=0.2, refill_static_cache=refill, prefill_max_tokens=65536)
    raw = run_protocol(SimMeter(gpu, 0.01), w, s)
    assert len(w.fills) == fills
    dec = [r for r in raw if r.phase == "decode"]
    assert sorted({r.trial for r in dec}) == [0, 1, 2] and len(dec) == 6
    for trial in range(3):
        first = min((r for r in dec if r.trial == trial), key=lambda r: r.start_s)
        # the decode steps that ran back to back up to the window's opening: at least the decode lead-in
        t = first.start_s
        for d0, d1 in sorted((d for d in w.decodes if d[1] <= first.start_s + 1e-9), key=lambda d: -d[1]):
            if t - d1 > 1e-3:
                break
            t = d0
        assert first.start_s - t >= s.decode_lead_in_s * 0.99
    if engine == "native" and not refill:  # nothing fills between the first trial's windows and the later ones
        assert all(f[0] < min(r.start_s for r in dec) for f in w.fills)


def test_a_phase_lever_refills_the_static_cache_for_every_trial():
    """With a phase lever each decode trial is a request (prefill, switch to the decode setting, decode, switch
    back): its fill stays, whatever refill_static_cache says."""
    from phase_energy.measure.protocol import Settings, refills

    w = SimWorkload(SimGPU(seed=0), get_preset("qwen3-4b"), 8, 512)
    assert Settings().refill_static_cache  # every trial fills by default
    s = Settings(refill_static_cache=False)
    assert [refills(w, s, t, switching=False) for t in range(3)] == [True, False, False]
    assert [refills(w, s, t, switching=True) for t in range(3)] == [True, True, True]
