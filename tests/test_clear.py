"""CLEAR: repetition logic, energy per call, coverage and the K claims (simulator, fake NVML, CPU engine)."""

import math
import time
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from phase_energy.analysis.claims import k1, k2, k3
from phase_energy.analysis.clear import summarise_components
from phase_energy.engines.native.components import EngineComponents
from phase_energy.measure.clear import ClearSettings, component_table, repetitions, run_clear
from phase_energy.measure.nvml import GPU, NvmlMeter
from phase_energy.model.costmodel import MODEL, CostModel, components_of
from phase_energy.model.presets import ALL_PRESETS, get_preset
from phase_energy.testing.fake_nvml import FakeNVML

from .conftest import copy_workflow, run_snakemake


def test_repetitions_span_the_requested_ticks():
    s = ClearSettings(min_ticks=50, counter_period_ms=100)
    assert repetitions(1e-3, s) == 5100  # 5 s of 1 ms calls, and a 2 % margin
    assert repetitions(3e-6, s) == math.ceil(5.1 / 3e-6)
    assert repetitions(7.0, s) == 1  # one call already spans the window
    assert repetitions(0.3, ClearSettings(min_ticks=10, counter_period_ms=20)) == 1
    with pytest.raises(ValueError, match="positive"):
        repetitions(0.0, s)


@pytest.mark.parametrize("arch", sorted(a for a in ALL_PRESETS))
@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_components_times_counts_add_up_to_the_model_flops(arch, phase):
    cfg = get_preset(arch)
    cost = CostModel(cfg)
    b, ctx = 4, 1024
    total = sum(cost.component_cost(c.name, phase, b, ctx)[0] * c.count
                for c in components_of(cfg) if c.name not in ("embedding", "norm", MODEL))
    whole = cost.prefill_flops(b, ctx) if phase == "prefill" else cost.decode_flops(b, ctx)
    assert total == pytest.approx(whole, rel=1e-9)


def test_component_counts_follow_the_layer_pattern():
    by = {c.name: c.count for c in components_of(get_preset("qwen3.5-4b"))}
    pat = get_preset("qwen3.5-4b").layer_pattern
    assert by["attention"] == pat.count("A") and by["gdn"] == pat.count("G") and by["mlp"] == len(pat)
    assert by["norm"] == 2 * len(pat)
    nem = {c.name: c.count for c in components_of(get_preset("nemotron-h-4b"))}
    p = get_preset("nemotron-h-4b").layer_pattern
    assert nem["mamba2"] == p.count("M") and nem["attention"] == p.count("*") and nem["mlp"] == p.count("-")
    assert nem["norm"] == len(p) and "gdn" not in nem


class TimedComponents:
    """Components on the fake card with known duration and power: energy per call is known."""

    CALL: ClassVar[dict[str, tuple[float, float]]] = {
        "embedding": (0.0004, 50.0), "norm": (0.0006, 80.0), "attention": (0.002, 300.0),
        "mlp": (0.002, 400.0), "head": (0.001, 200.0), MODEL: (0.003, 350.0)}

    def __init__(self, fake):
        self.fake, self.cfg, self.batch, self.context = fake, get_preset("tiny-gqa"), 1, 16
        self.calls = {k: 0 for k in self.CALL}

    def sequences(self, phase):
        return 1

    def prepare(self, phase):
        pass

    def run(self, unit, calls):
        dur, watts = self.CALL[unit]
        self.calls[unit] += calls
        self.fake.cards[0].set_load(watts)
        end = time.monotonic() + dur * calls
        while time.monotonic() < end:
            time.sleep(0.0005)
        self.fake.cards[0].set_load(0.0)

    def synchronize(self):
        pass

    def idle(self, seconds):
        time.sleep(seconds)


def test_fake_nvml_windows_span_the_ticks_and_divide_by_the_calls():
    fake = FakeNVML()
    gpu = GPU(0, nvml=fake)
    s = ClearSettings(trials=2, min_ticks=20, counter_period_ms=10, pause_s=0.01, lead_in_s=0.05, probe_s=0.01,
                      idle_s=0.2, sampling_period_ms=2)
    wl = TimedComponents(fake)
    meter = NvmlMeter(gpu, 0.002).start()
    try:
        windows = run_clear(meter, wl, s, progress=lambda _: None)
    finally:
        samples = meter.stop()
    tab = component_table(samples, windows, s, wl.cfg, 1, 16, "nvml")
    assert set(tab["component"]) == set(TimedComponents.CALL) and set(tab["phase"]) == {"prefill", "decode"}
    assert (tab.groupby(["phase", "component"])["trial"].nunique() == s.trials).all()
    assert (tab["duration_s"] >= s.window_s * 0.97).all()  # every window spans min_ticks counter periods
    idle_w = fake.cards[0].idle_w
    for r in tab.itertuples():
        dur, watts = TimedComponents.CALL[r.component]
        # the planned calls, or more when the window was still short after them (a loaded machine ran them
        # faster than the probe timed); never fewer
        assert r.calls >= repetitions(r.call_s_probe, s)
        assert r.call_s_probe == pytest.approx(dur, rel=0.25)
        # energy per call = window energy / calls = (idle + load) x call time
        assert r.energy_per_call_j == pytest.approx((idle_w + watts) * r.duration_s / r.calls, rel=0.05)
        # above idle: the measured idle power subtracted; off by no more than the total may be (5 % of it)
        total = (idle_w + watts) * r.duration_s / r.calls
        assert r.energy_dynamic_per_call_j == pytest.approx(watts * r.duration_s / r.calls, abs=0.05 * total)
    assert not [c for c in fake.calls if "Set" in c or "Reset" in c]


class VirtualClock:
    """Meter and workload on one virtual clock: the first ``slow_calls`` take ``slow_s`` each, the rest ``fast_s``."""

    def __init__(self, slow_s, fast_s, slow_calls):
        self.t, self.slow_s, self.fast_s, self.left = 0.0, slow_s, fast_s, slow_calls
        self.cfg, self.batch, self.context = get_preset("tiny-gqa"), 1, 16
        self.windows: list[tuple[str, int]] = []

    def now(self):
        return self.t

    def read_energy_j(self):
        return 100.0 * self.t

    def samples(self):
        return pd.DataFrame()

    def sequences(self, phase):
        return 1

    def prepare(self, phase):
        pass

    def run(self, unit, calls):
        slow = min(calls, self.left)
        self.left -= slow
        self.t += slow * self.slow_s + (calls - slow) * self.fast_s
        self.windows.append((unit, calls))

    def synchronize(self):
        pass

    def idle(self, seconds):
        self.t += seconds


def test_a_short_window_gets_more_calls_and_the_next_trials_use_its_timing():
    # probe and lead-in time a call at 2 ms; in the windows it takes 1 ms: N from the probe spans half the ticks
    s = ClearSettings(trials=2, min_ticks=8, counter_period_ms=10, pause_s=0.0, lead_in_s=0.05, probe_s=0.01,
                      idle_s=0.0, sampling_period_ms=2)
    # the first unit's probe (1 + 5 calls) and lead-in (25 calls) run slow, then every call is fast
    clock = VirtualClock(slow_s=0.002, fast_s=0.001, slow_calls=1 + 5 + 25)
    units = len(components_of(clock.cfg))
    out = run_clear(clock, clock, s, progress=lambda _: None)
    first = [w for w in out if w.unit == components_of(clock.cfg)[0].name]
    assert len(out) == 2 * units * s.trials
    for w in out:
        assert w.window.end_s - w.window.start_s >= s.window_s  # every window spans min_ticks periods
        assert w.window.tokens == w.calls * clock.sequences("") * (clock.context if w.window.phase == "prefill"
                                                                    else 1)
    # the first window: N from the 2 ms probe ran in half the time, so as many calls again filled it
    planned = repetitions(0.002, s)
    assert first[0].call_s_probe == pytest.approx(0.002) and first[0].calls == 2 * planned
    # the next trial is planned from the time measured in that window: N fits at once
    assert first[1].call_s_probe == pytest.approx(0.001) and first[1].calls == repetitions(0.001, s)


def _synthetic(coverage, cvs, scale=1.0):
    rows = []
    parts = {"norm": (0.01, 4), "attention": (0.2, 2), "mlp": (0.3, 2)}
    model = sum(e * n for e, n in parts.values()) / coverage
    for trial, cv in enumerate(cvs):
        f = (1 + cv) * scale
        for name, (e, n) in [*parts.items(), (MODEL, (model, 1))]:
            rows.append({"arch": "tiny-gqa", "paradigm": "gqa", "batch": 1, "context": 16, "phase": "decode",
                         "component": name, "count": n, "trial": trial, "calls": 100, "sequences": 1,
                         "call_s_probe": 1e-3, "duration_s": 1.0, "energy_j": e * f * 100,
                         "energy_per_call_j": e * f, "power_mean_w": 300.0, "idle_power_w": 100.0,
                         "energy_dynamic_per_call_j": e * f * 2 / 3, "counter_ticks": 10,
                         "flops_per_call": {"norm": 1e6, "attention": 1e9, "mlp": 3e9, MODEL: 1e10}[name],
                         "bytes_per_call": 1e6, "flags": "", "backend": "nvml"})
    return pd.DataFrame(rows)


def test_coverage_spread_and_energy_per_flop_known_answers():
    comp, cov = summarise_components(_synthetic(0.8, [-0.05, 0.0, 0.05]))
    assert cov.loc[0, "coverage"] == pytest.approx(0.8)
    assert cov.loc[0, "coverage_dynamic"] == pytest.approx(0.8)
    att = comp.set_index("component").loc["attention"]
    assert att["cv"] == pytest.approx(np.std([0.95, 1.0, 1.05], ddof=1))
    assert att["scaled_j"] == pytest.approx(0.4) and att["j_per_flop"] == pytest.approx(0.2 / 1e9)
    t = {"clear_components": comp, "clear_coverage": cov}
    assert k1(t, {})[0] == "not reproduced" and "80%" in k1(t, {})[1]
    assert k2(t, {})[0] == "not testable"  # one job: the trials' spread is not what a rerun shows
    assert k3(t, {})[0] == "reproduced"  # 0.2 J / 1 GFLOP against the MLP's 0.3 J / 3 GFLOP
    comp2, cov2 = summarise_components(_synthetic(0.95, [-0.2, 0.0, 0.2]))
    t2 = {"clear_components": comp2, "clear_coverage": cov2}
    assert k1(t2, {})[0] == "reproduced"
    # two jobs: K2 judges the spread between their means (2 % here, 30 % in the second case)
    for spread, verdict in ((0.02, "reproduced"), (0.30, "not reproduced")):
        jobs = pd.concat([_synthetic(0.95, [-0.01, 0.0, 0.01]).assign(job="a"),
                          _synthetic(0.95, [-0.01, 0.0, 0.01], scale=1 + spread).assign(job="b")])
        comp3, cov3 = summarise_components(jobs)
        att3 = comp3.set_index("component").loc["attention"]
        assert att3["jobs"] == 2 and att3["job_cv"] == pytest.approx(np.std([1.0, 1 + spread], ddof=1)
                                                                     / (1 + spread / 2), rel=1e-6)
        assert k2({"clear_components": comp3, "clear_coverage": cov3}, {})[0] == verdict
    empty = {"clear_components": pd.DataFrame(), "clear_coverage": pd.DataFrame()}
    assert {k1(empty, {})[0], k2(empty, {})[0], k3(empty, {})[0]} == {"not testable"}


@pytest.mark.parametrize("arch", ["tiny-gqa", "tiny-mla", "tiny-gdn", "tiny-mamba2", "tiny-nemotron"])
def test_engine_components_run_in_isolation_on_cpu(arch):
    """The engine's own modules, on cached inputs: each unit runs and returns what the model computes."""
    wl = EngineComponents(arch, 2, 32, device="cpu")
    for phase in ("prefill", "decode"):
        wl.prepare(phase)
        units = {c.name for c in components_of(wl.cfg)}
        assert set(wl.fns) == units
        for u in units:
            wl.run(u, 2)
        out = wl.fns["embedding"]()
        assert out.shape[-1] == wl.cfg.hidden and out.shape[0] == wl.sequences(phase)
        logits = wl.fns[MODEL]()
        assert logits.shape[-1] == wl.cfg.vocab and bool(logits.isfinite().all())


def test_clear_workflow_on_the_simulator(tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    res = run_snakemake(wd, "--cores", "2", "--configfile", "config/clear-test.yaml", "--", "results/claims.csv",
                        "figures/fig13_clear.svg")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    comp = pd.read_csv(wd / "results/tables/clear_components.csv")
    assert set(comp["backend"]) == {"sim"} and set(comp["arch"]) == {"qwen3-4b", "qwen3.5-4b"}
    assert (comp["counter_ticks"] >= 10).all()
    cov = pd.read_csv(wd / "results/tables/clear_coverage.csv")
    assert len(cov) == 2 * 2 * 2 and cov["coverage"].between(0.5, 1.5).all()
    claims = pd.read_csv(wd / "results/claims.csv").set_index("id")
    assert claims.loc["K1", "backend"] == "sim" and claims.loc["K1", "verdict"] != "not testable"
    assert "SIMULATED" in (wd / "figures/fig13_clear.svg").read_text()
    assert '"backend": "sim"' in (wd / "results/clear/arch~qwen3-4b/bs~1/rep~0/metadata.json").read_text()
