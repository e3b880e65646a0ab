import numpy as np
import pandas as pd
import pytest

from phase_energy.analysis.crossover import crossing_with_ci, first_crossing, first_crossings, request_energy_curve
from phase_energy.analysis.dvfs import _best_lock, _best_locks, classify_curve, classify_curves, clock_policy
from phase_energy.analysis.energy import summarise_trials, trial_table
from phase_energy.analysis.pareto import dominance_table, nondominated, pareto_table
from phase_energy.analysis.stats import hierarchical_means
from phase_energy.measure.protocol import Settings, Window
from phase_energy.measure.summary import SampleArrays, counter_ticks, summarise_window, tick_aligned_energy


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
                         "lever": lever, "job": lever, "tokens_per_s": tp + rng.normal(0, 0.5),
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


def test_curves_are_classed_at_once_as_each_alone():
    """The bootstrap classes every resample at once; each row gets the class it gets alone, NaN as Python's min."""
    e = [[1.0, 1.005, 0.998, 1.0], [1.0, 0.8, 0.9, 1.0], [0.7, 0.8, 0.9, 1.0], [1.4, 1.2, 1.1, 1.0],
         [1.0, 0.8, 0.9, np.nan],  # min(first, NaN) is first: the interior beats it
         [np.nan, 0.8, 0.9, 1.0]]  # min(NaN, last) is NaN: nothing beats it, and neither end the other
    t = [[1.0, 1.0, 1.0, 1.0], [0.5, 0.8, 0.95, 1.0], [0.98, 0.99, 1, 1], [0.4, 0.6, 0.8, 1], [0.5, 0.8, 0.95, 1.0],
         [0.5, 0.8, 0.95, 1.0]]
    classes = classify_curves(np.array(e), np.array(t), 0.03, 0.05)
    assert classes == ["flat", "interior-optimum", "lower-clock-saves", "higher-clock-saves", "interior-optimum",
                       "flat"]
    assert classes == [classify_curve(np.arange(4), a, b, 0.03, 0.05) for a, b in zip(e, t, strict=True)]
    with pytest.raises(ValueError):  # no energy at all: no class
        classify_curves(np.full((2, 4), np.nan), np.ones((2, 4)), 0.03, 0.05)


def test_the_lock_is_chosen_in_every_resample_at_once_as_in_each_alone():
    rng = np.random.default_rng(3)
    boot = np.round(rng.normal(1.0, 0.05, size=(400, 5, 3)), 2)  # rounded: ties between locks occur
    boot[:, :, 2] *= 500
    boot[:50, 1:, 1] = 0.5  # no lock within the throughput bound: the default is kept
    boot[50:60, 2, 0] = np.nan  # a lock without an energy: taken one by one
    boot[60:70, 0, 2] = np.nan  # the default's power unknown
    want = np.array([_best_lock(b, 0, [1, 2, 3, 4], 0.05)[1:4:2] for b in boot])
    got = _best_locks(boot, 0, [1, 2, 3, 4], 0.05)
    np.testing.assert_array_equal(got, want)
    assert (got[:50] == 0).all() and (got[:, 0] > 0).any() and np.isnan(got[60:70, 1]).any()


def _first_crossing_per_row(x, diff, log_x):
    """The crossing as the code before the batched one found it, a row at a time (the oracle of the test below)."""
    s = np.sign(diff)
    idx = np.flatnonzero((s[:-1] != s[1:]) & (s[:-1] != 0))
    if len(idx) == 0:
        return None
    i = int(idx[0])
    xa, xb = (np.log(x[i]), np.log(x[i + 1])) if log_x else (x[i], x[i + 1])
    xc = xa + (xb - xa) * diff[i] / (diff[i] - diff[i + 1])
    return float(np.exp(xc) if log_x else xc)


def test_crossings_of_many_curves_at_once_equal_each_alone():
    x = np.array([1, 10, 100, 1000, 10000])
    rng = np.random.default_rng(0)
    diffs = np.vstack([np.log10(x) - rng.uniform(0.5, 3.5, size=(50, 1)), np.ones((3, 5)), -np.ones((2, 5)),
                       [[0.0, 0.0, 1.0, -1.0, 2.0]], [[1.0, np.nan, -1.0, -2.0, -3.0]], [[np.nan] * 5]])
    for log_x in (True, False):
        at, found = first_crossings(x, diffs, log_x=log_x)
        want = [_first_crossing_per_row(x, d, log_x) for d in diffs]
        assert found.tolist() == [w is not None for w in want]
        np.testing.assert_array_equal(at[found], np.array([w for w in want if w is not None], dtype=float))
        assert [first_crossing(x, d, log_x=log_x) for d in diffs[:56]] == want[:56]
    assert np.isnan(first_crossing(x, diffs[56], log_x=True))  # a NaN next to a value: a crossing, not found


def test_a_resample_with_a_nan_curve_makes_the_crossover_interval_nan_and_one_point_has_none():
    rows = np.array([[1.0, 0.5, -1.0, -2.0, -3.0]] * 8 + [[1.0, np.nan, -1.0, -2.0, -3.0]] * 2)
    x = np.array([1.0, 10, 100, 1000, 10000])
    got = crossing_with_ci(x, rows)
    assert np.isnan(got["ci_low"]) and np.isnan(got["ci_high"]) and got["share_none"] == 0.0
    clean = crossing_with_ci(x, rows[:8])
    assert clean["ci_low"] == pytest.approx(clean["crossover"]) and clean["share_none"] == 0.0
    one = crossing_with_ci(np.array([1.0]), np.ones((4, 1)))  # an output grid of one length: nothing crosses
    assert one["crossover"] is None and one["ci_low"] is None and one["share_none"] == 1.0


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
    from phase_energy.measure.protocol import decode_spans

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
                     "duration_s": 10.0, "thr_sw_power_s": 2.5, "thr_sw_power_steady_s": 1.8,
                     "cap_hold_excluded_s": 1.0, "thr_hw_thermal_s": 0.0, "bytes": 1e12,
                     "flops": 1e12, "_clock_t": 19800.0, "sm_clock_mhz": 1980.0, "bandwidth_bps": 4e12,
                     "matmul_flops": 6e14, "idle_power_w": 5.0, "flags": ""})
    return pd.DataFrame(rows)


def test_cap_binding_share_is_measured():
    t = trial_table(_trials_with_cap_share())
    assert t["sw_power_cap_share"].tolist() == pytest.approx([0.25, 0.25, 0.25])
    assert t["sw_power_cap_share_steady"].tolist() == pytest.approx([0.2, 0.2, 0.2])  # 1.8 s of 9 s
    assert t["j_per_token"].iloc[0] == pytest.approx(1.0)
    assert t["floor_fraction"].iloc[0] == pytest.approx(1e12 / 10 / 4e12)


def test_a_job_without_a_counted_idle_window_has_no_above_idle_energy():
    w = _trials_with_cap_share()
    w["job"] = ["j", "j", "k"]
    w.loc[w["job"] == "k", ["idle_power_w", "energy_above_idle_j"]] = np.nan  # k's idle windows all excluded
    t = trial_table(w).set_index(["job", "trial"])
    assert t.loc[("j", 0), "j_per_token_above_idle"] == pytest.approx(0.5)
    assert np.isnan(t.loc[("k", 2), "energy_above_idle_j"])  # was 0.0: the sum of no number
    assert np.isnan(t.loc[("k", 2), "j_per_token_above_idle"])


def _lever_trials(levers, jobs=("j",), trials=4, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for lever, tps, jpt, watts in levers:
        kind = lever.split(":")[0]
        for job in jobs:
            for trial in range(trials):
                f = 1 + rng.normal(0, noise)
                rows.append({"engine": "native", "arch": "a", "paradigm": "gqa", "batch": 1, "context": 1,
                             "phase": "decode", "lever": lever, "lever_kind": kind, "rep": 0, "backend": "sim",
                             "lever_value": float(lever.split(":")[1]) if ":" in lever else np.nan,
                             "job": f"{job}-{lever}", "trial": trial, "tokens_per_s": tps, "j_per_token": jpt * f,
                             "power_mean_w": watts * f})
    return pd.DataFrame(rows)


def test_clock_policy_respects_the_throughput_bound():
    t = _lever_trials([("default", 100.0, 1.0, 400.0), ("smclock:1200", 95.0, 0.6, 230.0),
                       ("smclock:1600", 99.5, 0.8, 320.0)])
    p = clock_policy(t, 0.01, 200).iloc[0]
    assert p["best_clock_mhz"] == 1600  # 1200 saves more but loses 5 %
    assert p["energy_saving"] == pytest.approx(0.2)
    assert p["energy_saving_ci_low"] == pytest.approx(0.2) and p["power_saved_w"] == pytest.approx(80.0)


def test_clock_policy_saving_is_not_the_winners_curse():
    """Ten locks with the same true energy as the default: the lowest of their noisy estimates looks like a
    saving of several percent; chosen on half the trials and measured on the other half it averages out."""
    locks = [(f"smclock:{1000 + 50 * k}", 100.0, 1.0, 400.0) for k in range(10)]
    naive, crossed = [], []
    for seed in range(8):
        t = _lever_trials([("default", 100.0, 1.0, 400.0), *locks], trials=4, noise=0.03, seed=seed)
        means = t.groupby("lever")["j_per_token"].mean()
        naive.append(1 - means.drop("default").min() / means["default"])
        crossed.append(clock_policy(t, 0.01, 100).iloc[0]["energy_saving"])
    assert np.mean(naive) > 0.02 and np.mean(crossed) < np.mean(naive) / 2


def test_intervals_contain_the_spread_between_jobs():
    rng = np.random.default_rng(0)
    # two jobs of one point, 5 % apart, each with tight trials: a trials-only interval would exclude one
    groups = [np.array([[1.00 + rng.normal(0, 0.002)] for _ in range(5)]),
              np.array([[1.05 + rng.normal(0, 0.002)] for _ in range(5)])]
    boot = hierarchical_means(groups, 2000, rng)[:, 0]
    lo, hi = np.percentile(boot, [2.5, 97.5])
    assert lo <= 1.002 and hi >= 1.048
    # one job: its trials only, widened by the run-to-run spread
    one = hierarchical_means(groups[:1], 4000, rng, run_sd=0.03)[:, 0]
    lo1, hi1 = np.percentile(one, [2.5, 97.5])
    assert lo1 < 0.96 and hi1 > 1.04
    tight = np.percentile(hierarchical_means(groups[:1], 2000, rng)[:, 0], [2.5, 97.5])
    assert tight[1] - tight[0] < 0.01


def _slot_means(groups, n, rng, run_sd=0.0):
    """The resampling as :func:`hierarchical_means` documents it, for any number of jobs: jobs drawn into
    slots, each slot's trials drawn, the slots averaged (the reference its one-job shortcut must equal)."""
    n_jobs = len(groups)
    pick = rng.integers(0, n_jobs, size=(n, n_jobs))
    slot_means = np.empty((n, n_jobs, groups[0].shape[1]))
    for j, v in enumerate(groups):
        draws = v[rng.integers(0, len(v), size=(n, n_jobs, len(v)))].mean(axis=2)
        slot_means[pick == j] = draws[pick == j]
    out = slot_means.mean(axis=1)
    return out * (1.0 + rng.normal(0.0, run_sd, size=(n, 1))) if n_jobs == 1 and run_sd > 0 else out


@pytest.mark.parametrize("trials, cols, run_sd", [(1, 1, 0.0), (3, 2, 0.0), (5, 6, 0.02), (4, 3, 0.0)])
def test_resamples_of_a_one_job_point_are_those_of_the_slot_means_to_the_bit(trials, cols, run_sd):
    """A point with one job takes a shortcut (its one slot is its resampled mean); the numbers, and the
    random draws left for what comes after, are those of the general resampling."""
    v = np.random.default_rng(1).normal(1.0, 0.1, size=(trials, cols))
    v[0, 0] = np.nan if cols > 2 else v[0, 0]  # a NaN stays where it falls
    a, b = np.random.default_rng(7), np.random.default_rng(7)
    got, want = hierarchical_means([v], 500, a, run_sd), _slot_means([v], 500, b, run_sd)
    assert got.shape == want.shape == (500, cols)
    np.testing.assert_array_equal(got, want)
    assert a.random() == b.random()  # the same draws consumed
    two = [v, v + 1.0]  # and with two jobs the same code as ever
    np.testing.assert_array_equal(hierarchical_means(two, 300, np.random.default_rng(3), run_sd),
                                  _slot_means(two, 300, np.random.default_rng(3), run_sd))


def test_summary_uses_one_statistic_and_names_its_basis():
    t = _lever_trials([("default", 100.0, 1.0, 400.0)], jobs=("a", "b"), trials=5)
    t.loc[t["job"].str.startswith("b"), "j_per_token"] = 1.2
    t.loc[t["job"].str.startswith("b") & (t["trial"] == 0), "j_per_token"] = 1.6  # a job with more spread
    for c in ("j_per_token_above_idle", "sm_clock_mhz", "sw_power_cap_share", "sw_power_cap_share_steady",
              "floor_fraction", "compute_fraction", "idle_power_w", "trapz_mismatch"):
        t[c] = 0.0
    t["power_limit_w"], t["locked_sm_clock_mhz"], t["flags"] = 700.0, np.nan, ""
    s = summarise_trials(t, 500, run_sd=0.03).iloc[0]
    assert s["jobs"] == 2 and s["interval_basis"] == "2 jobs"
    assert s["j_per_token"] == pytest.approx((1.0 + (1.2 * 4 + 1.6) / 5) / 2)  # mean of the jobs' means
    assert s["j_per_token_ci_low"] < s["j_per_token"] < s["j_per_token_ci_high"]
    one = summarise_trials(t[t["job"].str.startswith("a")], 500, run_sd=0.03).iloc[0]
    assert one["jobs"] == 1 and "run-to-run spread (3.0%)" in one["interval_basis"]


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


def test_window_polls_found_by_bisection_equal_those_found_by_a_mask():
    """Polls in time order are sliced by bisection; a table out of order falls back to masks: the same rows."""
    rng = np.random.default_rng(3)
    t = np.arange(0, 3, 0.01)
    power = 300.0 + 50.0 * rng.random(len(t))
    t[100:103] = t[100]  # polls that share a time
    s = _samples(t, power, np.cumsum(power) * 0.01)
    s.loc[rng.random(len(t)) < 0.05, "gap"] = True
    s.loc[40:60, "n_processes"] = 2
    assert SampleArrays(s).sorted and not SampleArrays(s.iloc[::-1]).sorted
    masked = SampleArrays(s)
    masked.sorted = masked.power_sorted = False  # the fallback, on the same polls
    settings = Settings(min_counter_ticks=3)
    for start, end in [(0.0, 3.0), (0.305, 0.555), (0.4, 0.4), (1.0, 1.0), (2.995, 4.0), (-1.0, -0.5),
                       (0.3, float("nan")), (float("nan"), 0.3)]:  # a damaged trace's window: no poll inside
        w = Window("decode", 0, start, end, energy_j=100.0, tokens=5)
        a = summarise_window(SampleArrays(s), w, settings, counter_ticks(s))
        b = summarise_window(masked, w, settings, counter_ticks(s))
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]), k  # equal to the bit (NaN alike)
    assert "other_processes" in summarise_window(SampleArrays(s), Window("decode", 0, 0.3, 0.7, 1.0, 1), settings,
                                                 counter_ticks(s))["flags"]


def test_counter_ticks_leave_out_failed_polls_and_missing_counters_from_a_frame_or_its_arrays():
    """The ticks are those of the polls that read the counter: a poll flagged as a gap, or whose counter is
    NaN, is left out (as if it had never happened), whether the samples come as a table (of which only these
    three columns are needed) or as its arrays."""
    rng = np.random.default_rng(5)
    t = np.arange(0, 4, 0.01)
    power = 300.0 + 50.0 * rng.random(len(t))
    counter = np.floor(np.cumsum(power) * 0.01 / 30.0) * 30.0  # a coarse counter: ticks every ~100 ms
    s = _samples(t, power, counter)
    s.loc[rng.random(len(t)) < 0.1, "gap"] = True
    s.loc[rng.random(len(t)) < 0.05, "energy_j"] = np.nan
    s.loc[s["gap"], "energy_j"] = counter[s["gap"].to_numpy()] + 1e6  # a gap's value would move every tick
    kept = s[~s["gap"] & s["energy_j"].notna()].assign(gap=False).reset_index(drop=True)
    for got in (counter_ticks(s), counter_ticks(SampleArrays(s)), counter_ticks(s[["t_s", "energy_j", "gap"]])):
        want = counter_ticks(kept)
        assert len(want[0]) > 20
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_tick_timing_survives_a_stalled_sampler():
    """The sampler stalls for 300 ms: the counter's new value covers three ticks, the last one 50 ms before
    the poll that sees it. Timing that tick at the middle of the stall (the old rule) overstates the
    window's power by 10 %; on the counter's grid it is exact."""
    polls = np.arange(0.0, 3.0, 0.01)
    polls = polls[(polls < 1.0) | (polls > 1.3)]
    phase, period, watts = 0.048, 0.1, 125.0
    counter = np.floor((polls - phase) / period).clip(min=-1) * period * watts + phase * watts
    counter[polls < phase] = 0.0
    s = _samples(polls, np.full(len(polls), watts), counter)
    tick_t, _ = counter_ticks(s)
    after_stall = tick_t[(tick_t > 0.99) & (tick_t < 1.31)]
    assert after_stall == pytest.approx([1.248], abs=0.006)  # the last tick of the stall, on the grid (half a poll)
    assert tick_aligned_energy(counter_ticks(s), 0.01, 1.26) == pytest.approx(watts * 1.25, rel=0.005)
    # the midpoint of the stall would have put that tick at ~1.15 s: mean power 10 % too high
    midpoint = (0.99 + 1.31) / 2
    assert (1.248 - 0.048) / (midpoint - 0.048) > 1.08


def test_tick_timing_without_a_grid_to_fit_keeps_the_midpoints():
    """Three well-timed ticks close together and two after long stalls: the well-timed ones fall on one point
    of the counter's grid, so no grid can be fitted (a least-squares fit over one point failed the job); the
    midpoints of every change are kept."""
    polls = np.array([0.0, 0.004, 0.008, 0.012, 0.016, 10.0, 20.0])
    counter = np.array([0.0, 1.0, 2.0, 3.0, 3.0, 4.0, 5.0])
    s = _samples(polls, np.full(len(polls), 100.0), counter)
    tick_t, tick_e = counter_ticks(s)
    assert tick_t == pytest.approx([0.002, 0.006, 0.010, 5.008, 15.0])
    assert list(tick_e) == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_stored_summaries_are_used_only_when_this_code_and_these_settings_made_them(tmp_path):
    """A stamped trace keeps its summary (the same as deriving it again); a stale stamp is derived again."""
    from phase_energy.analysis.energy import rederive_windows
    from phase_energy.config import validate_config
    from phase_energy.grid import GridPoint
    from phase_energy.measure.job import run_job
    from phase_energy.measure.trace import collect_windows

    cfg = validate_config({"backend": "sim", "output_lengths": [32], "measurement": {
        "idle_s": 0.3, "warmup_runs": 1, "prefill_trials": 2, "decode_trials": 2, "decode_windows": 2,
        "min_counter_ticks": 3, "pause_s": 0.0}})
    dirs = []
    for lever in ("default", "smclock:1410"):
        p = GridPoint("qwen3-4b", 4, 256, lever)
        run_job(cfg, p, tmp_path / p.path)
        dirs.append(tmp_path / p.path)
    windows, _ = collect_windows(dirs)
    assert windows["summary_stamp"].notna().all()
    kept = rederive_windows(windows, cfg)
    again = rederive_windows(windows.assign(summary_stamp=None), cfg)  # no stamp: every job from its samples
    pd.testing.assert_frame_equal(kept, again)
    assert "summary_stamp" not in kept
    # other settings in the analysis (more ticks asked of a window): the stamp no longer matches
    strict = validate_config({**cfg, "measurement": {**cfg["measurement"], "min_counter_ticks": 10_000}})
    flagged = rederive_windows(windows, strict)
    assert flagged["flags"].str.contains("short_window").all()
    assert not kept["flags"].str.contains("short_window").any()
