"""The phase policy's arithmetic on tables whose answer is known: request energy and latency of a lever pair,
switches per batch under chunked prefill, the best pair within the latency bound, and where it stops paying."""

import numpy as np
import pandas as pd
import pytest

from phase_energy.analysis.phase_policy import (
    lever_rates,
    lever_resamples,
    pair_table,
    phase_policy_tables,
    policy_table,
    saving_intervals,
    switch_costs,
    switches_per_batch,
)

KEY = {"engine": "native", "arch": "qwen3-4b", "paradigm": "gqa", "batch": 2, "context": 100}
# (lever, phase) -> (J/token, tokens/s)
RATES = {("default", "prefill"): (0.02, 10_000.0), ("default", "decode"): (0.5, 100.0),
         ("smclock:1410", "prefill"): (0.018, 5_000.0), ("smclock:1410", "decode"): (0.3, 99.5)}


def _rates(rates=RATES):
    return pd.DataFrame([{**KEY, "lever": lv, "phase": ph, "j_per_token": j, "tokens_per_s": t}
                         for (lv, ph), (j, t) in rates.items()])


def _costs(extra_j, extra_s):
    return pd.DataFrame([{**KEY, "lever": "phase:x", "job": "j", "to_phase": "decode", "extra_j": extra_j,
                          "extra_s": extra_s}])


def test_switches_per_batch():
    assert switches_per_batch(64, 0.0, same=False) == 2  # into decode and back
    assert switches_per_batch(64, 0.5, same=False) == 2 * (1 + 64 * 0.25)
    assert switches_per_batch(64, 0.3, same=True) == 0
    assert switches_per_batch(64, 1.0, same=False) == 0  # every step carries prefill: decode's lever never holds


def test_request_energy_and_latency_of_a_pair_by_hand():
    pairs = pair_table(_rates(), _costs(1.0, 0.01), [10], [0.0], latency_bound=0.01)
    row = pairs[(pairs["prefill_lever"] == "default") & (pairs["decode_lever"] == "smclock:1410")].iloc[0]
    # energy per request: 100 x 0.02 + 10 x 0.3 + 2 switches x 1 J / batch 2
    assert row["request_j"] == pytest.approx(2.0 + 3.0 + 1.0)
    # latency: batch x context / prefill rate + 10 steps x batch / decode rate + 2 x 10 ms
    assert row["request_s"] == pytest.approx(2 * 100 / 10_000 + 10 * 2 / 99.5 + 0.02)
    base = 2 * 100 / 10_000 + 10 * 2 / 100
    assert row["latency_change"] == pytest.approx(row["request_s"] / base - 1)
    assert row["within_bound"] == (row["latency_change"] <= 0.01)
    static = pairs[(pairs["prefill_lever"] == "smclock:1410") & (pairs["decode_lever"] == "smclock:1410")].iloc[0]
    assert static["switches"] == 0 and static["request_j"] == pytest.approx(1.8 + 3.0)


def test_the_policy_pays_when_the_switch_is_cheap_and_not_when_it_is_dear():
    # prefill under the lock is slow (half the rate, +9 % latency): only a pair keeps prefill at the default
    cheap = policy_table(pair_table(_rates(), _costs(0.1, 0.0), [10], [0.0], 0.05), _costs(0.1, 0.0)).iloc[0]
    assert (cheap["prefill_lever"], cheap["decode_lever"]) == ("default", "smclock:1410")
    assert cheap["pays"] and cheap["saving_vs_default"] == pytest.approx(1 - (2 + 3 + 0.1) / (2 + 5))
    assert cheap["best_static_lever"] == "default"  # the static lock breaks the bound (prefill 25 % slower)
    dear = policy_table(pair_table(_rates(), _costs(2.5, 0.0), [10], [0.0], 0.05), _costs(2.5, 0.0)).iloc[0]
    # 2 x 2.5 J / 2 = 2.5 J of switches eats the 2 J the decode lock saves
    assert not dear["pays"] and dear["prefill_lever"] == dear["decode_lever"] == "default"
    assert dear["saving_vs_default"] == 0


def test_a_switch_is_never_counted_as_a_gain():
    gain = policy_table(pair_table(_rates(), _costs(-5.0, -0.1), [10], [0.0], 0.05), _costs(-5.0, -0.1)).iloc[0]
    assert gain["switch_j"] == 0 and gain["switch_s"] == 0
    assert gain["request_j"] == pytest.approx(2 + 3)


def test_the_policy_stops_paying_as_more_steps_carry_prefill():
    mixes = [0.0, 0.02, 0.2, 0.5, 1.0]
    pol = policy_table(pair_table(_rates(), _costs(1.0, 0.0), [64], mixes, 0.01), _costs(1.0, 0.0))
    pays = pol.set_index("mix_share")["pays"]
    # 2 (1 + 64 m (1 - m)) switches per batch at 1 J each against a decode saving of 64 x 0.2 J x (1 - m):
    # 34 J per request at the default; the pair 22.2 J at m = 0, 23.7 J at 0.02, 35.0 J at 0.2
    assert pays[0.0] and pays[0.02] and not pays[0.2] and not pays[0.5] and not pays[1.0]
    saving = pol.set_index("mix_share")["saving_vs_default"]
    assert saving[0.0] == pytest.approx(1 - 22.2 / 34) and saving[0.0] > saving[0.02] > saving[0.2] == 0


def test_switch_cost_is_beyond_the_steady_cost_of_its_tokens():
    trials = pd.DataFrame([{"job": "j", "phase": "decode", "energy_j": 30.0, "tokens": 100, "duration_s": 1.0},
                           {"job": "j", "phase": "prefill", "energy_j": 10.0, "tokens": 1000, "duration_s": 0.1}])
    windows = pd.DataFrame([
        {**KEY, "lever": "phase:x", "job": "j", "phase": "switch_decode", "energy_j": 0.0, "energy_trapz_j": 4.0,
         "counter_ticks": 0, "tokens": 10, "duration_s": 0.12},  # under a tick: the trapezoid counts
        {**KEY, "lever": "phase:x", "job": "j", "phase": "switch_prefill", "energy_j": 5.0, "energy_trapz_j": 9.0,
         "counter_ticks": 3, "tokens": 400, "duration_s": 0.05},
        {**KEY, "lever": "phase:x", "job": "j", "phase": "decode", "energy_j": 5.0, "energy_trapz_j": 5.0,
         "counter_ticks": 3, "tokens": 10, "duration_s": 0.1}])
    c = switch_costs(windows, trials).set_index("to_phase")
    assert c.loc["decode", "extra_j"] == pytest.approx(4.0 - 10 * 0.3)
    assert c.loc["decode", "extra_s"] == pytest.approx(0.12 - 10 * 0.01)
    assert c.loc["prefill", "extra_j"] == pytest.approx(5.0 - 400 * 0.01)
    assert c.loc["prefill", "extra_s"] == pytest.approx(0.05 - 400 * 0.0001)


def test_every_pair_row_is_the_request_formula_to_the_last_bit():
    """pair_table computes all pairs of a point at once; each row must equal _request for that pair exactly."""
    from phase_energy.analysis.phase_policy import GROUP, _request

    levers = ["default", "powercap:400", "smclock:1410"]
    rows = []
    for i, lever in enumerate(levers):
        for phase, j, tps in (("prefill", 0.031 + 0.003 * i, 9000.0 - 700 * i),
                              ("decode", 0.9 - 0.11 * i, 250.0 - 30 * i)):
            rows.append({"engine": "native", "arch": "qwen3-4b", "paradigm": "gqa", "batch": 8, "context": 512,
                         "lever": lever, "phase": phase, "j_per_token": j, "tokens_per_s": tps})
    rates = pd.DataFrame(rows)
    costs = pd.DataFrame([{**{k: rates.iloc[0][k] for k in GROUP}, "lever": "phase", "job": "j", "to_phase": "decode",
                           "extra_j": 0.7, "extra_s": 0.004}])
    pairs = pair_table(rates, costs, [128, 1024], [0.0, 0.1, 1.0], 0.01)
    assert len(pairs) == 2 * 3 * len(levers) ** 2
    r = rates.set_index(["lever", "phase"])[["j_per_token", "tokens_per_s"]]
    for row in pairs.itertuples():
        s, energy, latency = _request(r, row.prefill_lever, row.decode_lever, row.output_length, row.mix_share,
                                      8.0, 512.0, 0.7, 0.004)
        assert (row.switches, row.request_j, row.request_s) == (s, energy, latency)


def _trials(rates=RATES, trials=5, jobs=1, noise=0.0, seed=0):
    """Phase trials around ``rates``: each (lever, phase) measured by ``jobs`` jobs of ``trials`` trials, every
    value times (1 + noise x a standard normal)."""
    rng = np.random.default_rng(seed)
    rows = []
    for (lv, ph), (j, t) in rates.items():
        for job in range(jobs):
            for k in range(trials):
                f = 1 + noise * rng.standard_normal(2)
                rows.append({**KEY, "lever": lv, "lever_kind": lv.split(":")[0], "phase": ph, "job": f"{lv}/{job}",
                             "trial": k, "j_per_token": j * f[0], "tokens_per_s": t * f[1]})
    return pd.DataFrame(rows)


def _intervals(trials, run_sd, costs=None, n=400):
    costs = _costs(0.1, 0.0) if costs is None else costs
    policy = policy_table(pair_table(lever_rates(trials), costs, [10], [0.0], 0.05), costs)
    ci = saving_intervals(policy, lever_resamples(trials, n, run_sd, seed=1), costs)
    return pd.concat([policy.drop(columns=ci.columns), ci], axis=1).iloc[0]


def test_saving_intervals_collapse_without_spread_and_hold_the_estimate_with_it():
    exact = _intervals(_trials(), run_sd=0.0)  # every trial the same, one job, no run-to-run spread: no spread
    assert exact["saving_vs_default_lo"] == pytest.approx(exact["saving_vs_default"], abs=1e-12)
    assert exact["saving_vs_default_hi"] == pytest.approx(exact["saving_vs_default"], abs=1e-12)
    noisy = _intervals(_trials(noise=0.02), run_sd=0.0)
    assert noisy["saving_vs_default_lo"] < noisy["saving_vs_default"] < noisy["saving_vs_default_hi"]
    wider = _intervals(_trials(noise=0.02), run_sd=0.05)  # one job per lever: widened by the run-to-run spread
    assert (wider["saving_vs_default_hi"] - wider["saving_vs_default_lo"]
            > 2 * (noisy["saving_vs_default_hi"] - noisy["saving_vs_default_lo"]))
    # several jobs per lever: their spread is drawn from, the run-to-run spread is not added
    jobs = _intervals(_trials(noise=0.02, jobs=3), run_sd=0.5)
    assert jobs["saving_vs_default_hi"] - jobs["saving_vs_default_lo"] < 0.2


def test_saving_intervals_contain_the_true_saving_as_often_as_they_say():
    """Known answer: trials drawn around exact rates (8 % noise, 5 trials, one job per lever). Over 40 draws the
    chosen pair's 95 % interval holds that pair's saving computed from the exact rates nearly every time, and a
    2 % saving (inside the noise) gets an interval through zero while a 40 % one does not."""
    small = {**RATES, ("smclock:1410", "decode"): (0.485, 99.9), ("smclock:1410", "prefill"): (0.02, 10_000.0)}
    costs = _costs(0.0, 0.0)
    exact = pair_table(_rates(small), costs, [10], [0.0], 0.05).set_index(["prefill_lever", "decode_lever"])
    held = through_zero = 0
    for seed in range(40):
        r = _intervals(_trials(small, noise=0.08, seed=seed), run_sd=0.0, costs=costs, n=300)
        truth = 1 - exact.loc[(r["prefill_lever"], r["decode_lever"]), "request_j"] / exact.loc[
            ("default", "default"), "request_j"]
        held += r["saving_vs_default_lo"] - 1e-12 <= truth <= r["saving_vs_default_hi"] + 1e-12
        through_zero += r["saving_vs_default_lo"] <= 0 <= r["saving_vs_default_hi"]
    assert held >= 34  # 95 % nominal; a pair chosen on the same noise is optimistic now and then
    assert through_zero >= 20
    big = {**small, ("smclock:1410", "decode"): (0.3, 99.9)}
    kept = _intervals(_trials(big, noise=0.08), run_sd=0.0, costs=costs)
    assert kept["decode_lever"] == "smclock:1410" and kept["saving_vs_default_lo"] > 0.2


def test_static_saving_intervals_line_up_with_their_own_points_end_to_end():
    """Two points whose best static lever is the lock and whose best pair keeps prefill at the default: through
    phase_policy_tables with resamples, each row's collapsed interval (no spread) is its own static saving."""
    rates = {("default", "prefill"): (0.020, 10_000.0), ("default", "decode"): (0.5, 100.0),
             ("smclock:1410", "prefill"): (0.024, 9_990.0), ("smclock:1410", "decode"): (0.3, 99.9)}
    other = {k: (j * 2, t) for k, (j, t) in rates.items()}  # another point, every J/token doubled
    trials = pd.concat([_trials(rates), _trials(other).assign(batch=4)], ignore_index=True)
    windows = pd.DataFrame({"phase": pd.Series([], dtype=str)})
    _, policy = phase_policy_tables(windows, trials, [10], [0.0], 0.05, n_resamples=200, run_sd=0.0, seed=3)
    assert list(policy["batch"]) == [2, 4]
    for r in policy.itertuples():
        assert (r.prefill_lever, r.decode_lever, r.best_static_lever) == ("default", "smclock:1410", "smclock:1410")
        assert r.saving_vs_static > 0.02
        assert r.saving_vs_static_lo == pytest.approx(r.saving_vs_static, abs=1e-12)
        assert r.saving_vs_static_hi == pytest.approx(r.saving_vs_static, abs=1e-12)
        assert r.saving_vs_default_lo == pytest.approx(r.saving_vs_default, abs=1e-12)
    # the second point's energies are twice the first's at every lever: the same savings
    assert policy["saving_vs_static"].iloc[0] == pytest.approx(policy["saving_vs_static"].iloc[1])
    # with spread, P1's reading of the same tables: the interval is there and holds the estimate
    _, noisy = phase_policy_tables(windows, _trials(rates, noise=0.02), [10], [0.0], 0.05, n_resamples=200,
                                   run_sd=0.034, seed=3)
    r = noisy.iloc[0]
    assert r.saving_vs_static_lo < r.saving_vs_static < r.saving_vs_static_hi
