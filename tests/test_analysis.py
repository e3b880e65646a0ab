import numpy as np
import pandas as pd
import pytest

from phase_energy.analysis import (
    bootstrap_ci,
    classify_curve,
    clock_policy,
    dominance_table,
    first_crossing,
    nondominated,
    pareto_table,
    request_energy_curve,
    trial_table,
)
from phase_energy.protocol import Settings, Window, counter_ticks, summarise_window, tick_aligned_energy


def test_nondominated_known_frontier():
    # throughput up, energy down is better; C is dominated by B, E by D
    tp = np.array([100, 200, 150, 300, 250])
    en = np.array([1.0, 1.5, 2.0, 3.0, 3.5])
    assert nondominated(tp, en).tolist() == [True, True, False, True, False]


def test_pareto_probability_reflects_noise():
    rows = []
    rng = np.random.default_rng(0)
    for lever, tp, e in [("default", 95, 1.0), ("smclock:1410", 100, 0.8), ("powercap:300", 60, 0.79)]:
        for _trial in range(10):
            rows.append({"engine": "native", "arch": "a", "paradigm": "gqa", "batch": 1, "context": 512,
                         "phase": "decode",
                         "lever": lever, "tokens_per_s": tp + rng.normal(0, 0.5),
                         "j_per_token": e + rng.normal(0, 0.005)})
    p = pareto_table(pd.DataFrame(rows), 200).set_index("lever")
    assert p.loc["default", "frontier_probability"] < 0.1  # clearly dominated by the lock
    assert p.loc["smclock:1410", "frontier_probability"] > 0.9
    assert not p.loc["default", "on_frontier"]
    dom = dominance_table(p.reset_index())
    assert bool(dom.iloc[0]["lock_dominates_caps"]) is False  # the cap has lower energy


def test_lock_that_beats_every_cap_is_found():
    p = pd.DataFrame({"engine": "native", "arch": "a", "paradigm": "gqa", "batch": 1, "context": 1,
                      "lever": ["powercap:300", "powercap:500", "smclock:1200", "smclock:1980"],
                      "lever_kind": ["powercap", "powercap", "smclock", "smclock"],
                      "tokens_per_s": [90, 100, 101, 99], "j_per_token": [1.0, 1.2, 0.9, 1.1]})
    d = dominance_table(p).iloc[0]
    assert d["lock_dominates_caps"] and d["dominating_locks"] == "smclock:1200"


def test_flat_curve_is_classed_flat_and_others_by_shape():
    clocks = np.array([800, 1200, 1600, 1980])
    assert classify_curve(clocks, [1.0, 1.005, 0.998, 1.0], [1.0, 1.0, 1.0, 1.0], 0.03, 0.05) == "flat"
    assert classify_curve(clocks, [1.0, 0.8, 0.9, 1.0], [0.5, 0.8, 0.95, 1.0], 0.03, 0.05) == "interior-optimum"
    assert classify_curve(clocks, [0.7, 0.8, 0.9, 1.0], [0.98, 0.99, 1, 1], 0.03, 0.05) == "lower-clock-saves"
    assert classify_curve(clocks, [1.4, 1.2, 1.1, 1.0], [0.4, 0.6, 0.8, 1], 0.03, 0.05) == "higher-clock-saves"


def test_crossover_at_a_known_point():
    x = np.array([1, 10, 100, 1000, 10000], dtype=float)
    # energy difference that changes sign at exactly 100 * sqrt(10) in log space
    diff = np.log10(x) - 2.5
    assert first_crossing(x, diff, log_x=True) == pytest.approx(10**2.5, rel=1e-9)
    assert first_crossing(x, np.ones(5), log_x=True) is None


def test_request_energy_integrates_piecewise_decode():
    w = pd.DataFrame({"context_start": [1000, 1100], "context_end": [1100, 1200], "j_per_token": [1.0, 2.0]})
    pre, dec = request_energy_curve(0.5, 1000, w, np.array([50, 100, 150, 200]))
    assert pre.tolist() == [500.0] * 4
    assert dec.tolist() == [50.0, 100.0, 200.0, 300.0]


def test_request_energy_interpolates_sampled_windows():
    # windows of 10 steps at offsets 0 and 990: J/token 1 at centre 5, 3 at centre 995 -> linear in between
    w = pd.DataFrame({"context_start": [2000, 2990], "context_end": [2010, 3000], "j_per_token": [1.0, 3.0]})
    _, dec = request_energy_curve(0.0, 2000, w, np.array([5, 500, 1000]))
    assert dec[0] == pytest.approx(5.0)  # constant before the first centre
    slope = 2.0 / 990
    exact_500 = 5 + sum(1 + slope * (k + 0.5 - 5) for k in range(5, 500))
    assert dec[1] == pytest.approx(exact_500)
    assert dec[2] == pytest.approx(exact_500 + sum(min(3.0, 1 + slope * (k + 0.5 - 5)) for k in range(500, 1000)))


def test_sampled_decode_spans_reach_the_last_output():
    from phase_energy.protocol import decode_spans

    assert decode_spans(Settings(decode_windows=3, max_output=2048, decode_window_steps=32)) == [
        (0, 32), (1008, 32), (2016, 32)]
    # without the option (or when the windows would cover everything) they tile the range
    assert decode_spans(Settings(decode_windows=4, max_output=100)) == [(0, 25), (25, 25), (50, 25), (75, 25)]
    assert decode_spans(Settings(decode_windows=4, max_output=100, decode_window_steps=30)) == [
        (0, 25), (25, 25), (50, 25), (75, 25)]


def _trials_with_cap_share():
    rows = []
    for trial in range(3):
        rows.append({"engine": "native", "arch": "a", "paradigm": "gqa", "batch": 1, "context": 1,
                     "lever": "default", "rep": 0,
                     "backend": "sim", "job": "j", "lever_kind": "default", "lever_value": np.nan,
                     "power_limit_w": 700.0, "locked_sm_clock_mhz": np.nan, "phase": "decode", "trial": trial,
                     "energy_j": 100.0, "energy_above_idle_j": 50.0, "energy_trapz_j": 100.0, "tokens": 100,
                     "duration_s": 10.0, "thr_sw_power_s": 2.5, "thr_hw_thermal_s": 0.0, "bytes": 1e12,
                     "flops": 1e12, "_clock_t": 19800.0, "sm_clock_mhz": 1980.0, "bandwidth_bps": 4e12,
                     "matmul_flops": 6e14, "idle_power_w": 5.0, "flags": ""})
    return pd.DataFrame(rows)


def test_cap_binding_share_is_measured():
    t = trial_table(_trials_with_cap_share())
    assert t["sw_power_cap_share"].tolist() == pytest.approx([0.25, 0.25, 0.25])
    assert t["j_per_token"].iloc[0] == pytest.approx(1.0)
    assert t["floor_fraction"].iloc[0] == pytest.approx(1e12 / 10 / 4e12)


def test_clock_policy_respects_the_throughput_bound():
    s = pd.DataFrame({"engine": "native", "arch": "a", "paradigm": "gqa", "batch": 1, "context": 1, "phase": "decode",
                      "lever": ["default", "smclock:1200", "smclock:1600"],
                      "lever_kind": ["default", "smclock", "smclock"], "lever_value": [np.nan, 1200, 1600],
                      "tokens_per_s": [100.0, 95.0, 99.5], "j_per_token": [1.0, 0.6, 0.8],
                      "power_mean_w": [400.0, 230.0, 320.0]})
    p = clock_policy(s, 0.01).iloc[0]
    assert p["best_clock_mhz"] == 1600  # 1200 saves more but loses 5 %
    assert p["energy_saving"] == pytest.approx(0.2)


def test_bootstrap_ci_brackets_the_mean_and_handles_degenerate_samples():
    lo, hi = bootstrap_ci(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 500)
    assert lo < 3.0 < hi
    assert bootstrap_ci(np.array([2.0]), 100) == (2.0, 2.0)


def _samples(t, power, counter):
    n = len(t)
    z = np.zeros(n)
    return pd.DataFrame({"t_s": t, "power_t_s": t, "energy_j": counter, "power_instant_w": power, "power_avg_w": power,
                         "sm_clock_mhz": np.full(n, 1500.0), "mem_clock_mhz": z, "clock_reasons": z.astype(int),
                         "thr_sw_power_s": np.linspace(0, 1, n), "thr_sw_thermal_s": z, "thr_hw_thermal_s": z,
                         "thr_hw_power_brake_s": z, "thr_board_limit_s": z, "thr_reliability_s": z,
                         "temperature_c": np.full(n, 50.0), "utilization_pct": z,
                         "n_processes": np.ones(n, dtype=int), "gap": np.zeros(n, dtype=bool)})


def test_window_summary_tick_alignment_and_flags():
    t = np.arange(0, 5, 0.01)
    power = np.full(len(t), 400.0)
    counter = np.floor(t / 0.1) * 0.1 * 400.0  # ticks every 100 ms
    s = _samples(t, power, counter)
    ticks = counter_ticks(s)
    assert tick_aligned_energy(ticks, 1.03, 3.03) == pytest.approx(800.0, rel=0.01)
    settings = Settings(min_counter_ticks=10, locked_sm_clock_mhz=1980)
    row = summarise_window(s, Window("decode", 0, 1.03, 3.03, energy_j=760.0, tokens=10), settings)
    assert row["energy_j"] == pytest.approx(800.0, rel=0.01)
    assert row["energy_trapz_j"] == pytest.approx(800.0, rel=0.01)
    assert row["thr_sw_power_s"] == pytest.approx(2.0 / 4.99, rel=0.01)
    assert "clock_below_lock" in row["flags"] and "short_window" not in row["flags"]
    short = summarise_window(s, Window("prefill", 0, 1.0, 1.35, energy_j=140.0, tokens=1), settings)
    assert "short_window" in short["flags"]
