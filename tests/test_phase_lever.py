"""Phase levers (one setting for prefill, another for decode): parsing, folder names, config checks, the
switch through the lever control on a fake NVML (a real card's settings must not change here), and the
switch windows of a job on the simulator."""

import re

import pandas as pd
import pytest

from phase_energy.config import ConfigError, validate_config
from phase_energy.grid import GridPoint, Lever, LeverError
from phase_energy.measure.backend import nvml_backend
from phase_energy.measure.job import measure_with_lever, point_skip_reason, run_job
from phase_energy.measure.levers import LeverControl, LeverNotPermitted, journal_path
from phase_energy.measure.nvml import GPU
from phase_energy.measure.phase_switch import settled
from phase_energy.measure.protocol import Settings
from phase_energy.testing.fake_nvml import FakeNVML
from tests.test_levers_faults import SETTINGS, StubWorkload

PHASE_LEVERS = ["phase:prefill=default,decode=smclock:1410", "phase:prefill=smclock:1980,decode=smclock:990",
                "phase:prefill=powercap:700,decode=powercap:300", "phase:prefill=powercap:500,decode=smclock:1200",
                "phase:prefill=smclock:1410,decode=default"]


@pytest.mark.parametrize("text", PHASE_LEVERS)
def test_phase_lever_round_trips_through_its_text_its_slug_and_its_folder(text):
    lever = Lever.parse(text)
    assert lever.kind == "phase" and str(lever) == text
    assert Lever.from_slug(lever.slug) == lever
    assert re.fullmatch(r"[A-Za-z0-9._-]+", lever.slug)  # safe in a file name, no ':' '=' ',' '~' '/'
    assert re.fullmatch(GridPoint.WILDCARDS["lever"], lever.slug)
    point = GridPoint("qwen3-4b", 8, 256, text)
    assert GridPoint.from_path(f"results/traces/{point.path}") == point
    assert lever.for_phase("prefill") == Lever.parse(text.split(",")[0].split("=", 1)[1])
    assert lever.for_phase("decode") == Lever.parse(text.split(",")[1].split("=", 1)[1])


def test_static_levers_keep_their_slugs_and_match_no_phase_pattern():
    for text, slug in [("default", "default"), ("powercap:400", "powercap-400"), ("smclock:1410", "smclock-1410")]:
        assert Lever.parse(text).slug == slug and Lever.from_slug(slug) == Lever.parse(text)
        assert Lever.parse(text).for_phase("decode") == Lever.parse(text)
    assert not re.fullmatch(GridPoint.WILDCARDS["lever"], "phase_prefill.default_decode.turbo-9")


@pytest.mark.parametrize("text,says", [
    ("phase:prefill=default", "names no decode lever"),
    ("phase:prefill=smclock:1410,decode=smclock:1410", "static lever 'smclock:1410'"),
    ("phase:prefill=default,decode=phase:prefill=default", "is a phase lever itself"),
    ("phase:prefill=default,decode=smclock:fast", "the decode lever 'smclock:fast' is not accepted"),
    ("phase:prefill=default,warmup=smclock:1410", "part 'warmup=smclock:1410'"),
    ("phase:prefill=default,prefill=smclock:1410", "each once"),
    ("phase:decode", "part 'decode'"),
])
def test_bad_phase_levers_name_the_value_and_what_is_accepted(text, says):
    with pytest.raises(LeverError) as e:
        Lever.parse(text)
    assert says in str(e.value) and text in str(e.value)


def test_config_spells_a_phase_lever_one_way_and_checks_each_phase_against_the_card():
    cfg = validate_config({"levers": ["default", "phase:decode=smclock:01410,prefill=default"]})
    assert cfg["levers"][1] == "phase:prefill=default,decode=smclock:1410"
    with pytest.raises(ConfigError) as e:
        validate_config({"levers": ["phase:prefill=default,decode=smclock:5000"]})
    assert "levers[0]" in str(e.value) and "decode lever smclock:5000" in str(e.value) and "1980" in str(e.value)
    with pytest.raises(ConfigError) as e:
        validate_config({"levers": ["phase:prefill=powercap:900,decode=default"]})
    assert "prefill lever powercap:900" in str(e.value) and "700" in str(e.value)
    with pytest.raises(ConfigError, match="repeats levers"):
        validate_config({"levers": ["phase:prefill=default,decode=smclock:1410",
                                    "phase:decode=smclock:1410,prefill=default"]})


def test_a_phase_lever_on_a_real_card_needs_allow_gpu_settings():
    cfg = validate_config({"levers": ["phase:prefill=default,decode=smclock:1410"], "architectures": ["qwen3-4b"]})
    point = next(iter([GridPoint("qwen3-4b", 1, 512, cfg["levers"][0])]))
    assert "lever not permitted" in point_skip_reason(cfg, point, "nvml")
    assert point_skip_reason({**cfg, "allow_gpu_settings": True}, point, "nvml") is None
    with pytest.raises(LeverNotPermitted):
        LeverControl(GPU(0, nvml=FakeNVML()), cfg["levers"][0], allow_gpu_settings=False).apply()


@pytest.mark.parametrize("readings,new,old,expected", [
    ([1980, 1980, 1410], "smclock:1410", "default", True),  # reached the lock
    ([1980, 1980, 1430], "smclock:1410", "default", True),  # within 2 %
    ([1980, 1980, 1450], "smclock:1410", "default", False),  # 2.8 % off
    ([1980, 1700], "smclock:1410", "default", False),  # on its way
    ([1410, 1410], "default", "smclock:1410", False),  # still at the old lock
    ([1410, 1850], "default", "smclock:1410", True),  # left it
    ([1980], "powercap:300", "default", False),  # one reading: no agreement yet
    ([1980, 1650, 1640], "powercap:300", "default", True),  # two in a row agree
    ([1980, 1650, 1500], "powercap:300", "default", False),
])
def test_settling_known_answers(readings, new, old, expected):
    assert settled([float(r) for r in readings], Lever.parse(new), Lever.parse(old)) is expected


def test_switching_goes_through_the_lever_control_and_the_card_ends_as_it_was(tmp_path):
    """Fake NVML: the only way to watch a real card's settings change here without changing one."""
    fake = FakeNVML()
    gpu = GPU(0, nvml=fake)
    before = fake.settings()
    control = LeverControl(gpu, "phase:prefill=powercap:500,decode=smclock:1200", True, journal_dir=tmp_path)
    with control as applied:
        assert fake.settings() == (500_000, None) and applied.previous == {"power_limit_w": 700.0,
                                                                              "sm_clock_locked": True}
        assert journal_path(gpu.uuid(), tmp_path).exists()
        control.switch("decode")  # the cap goes back to the limit found at the start, the clock is locked
        assert fake.settings() == (700_000, (1200, 1200))
        control.switch("decode")  # the same setting: nothing to do
        control.switch("prefill")
        assert fake.settings() == (500_000, None)
        control.switch("decode")
    assert fake.settings() == before
    assert not journal_path(gpu.uuid(), tmp_path).exists()


def test_switch_windows_on_a_fake_card_last_until_its_clock_follows(tmp_path):
    """Fake NVML with a 30 ms switch latency: each switch window spans it, and the card is restored."""
    fake = FakeNVML(switch_latency_s=0.03)
    gpu = GPU(0, nvml=fake)
    before = fake.settings()
    settings = Settings(**{**SETTINGS, "switch_timeout_s": 0.5})
    _, windows, _, _ = measure_with_lever(nvml_backend(gpu, lambda: None),
                                          "phase:prefill=default,decode=smclock:1410", True, StubWorkload(fake),
                                          settings, journal_dir=tmp_path)
    sw = windows[windows["phase"].str.startswith("switch_")]
    assert sorted(sw["phase"]) == ["switch_decode"] * 2 + ["switch_prefill"] * 2  # two decode trials
    assert (sw["duration_s"] >= 0.03).all() and (sw["duration_s"] < 0.5).all()
    assert not sw["flags"].str.contains("switch_not_settled").any()
    assert fake.settings() == before


def _sim_cfg(latency, levers):
    return validate_config({
        "architectures": ["qwen3-4b"], "batch_sizes": [8], "contexts": [256], "output_lengths": [32, 64],
        "levers": levers, "backend": "sim", "sim": {"clock_switch_latency_s": latency},
        "measurement": {"warmup_runs": 1, "idle_s": 0.5, "min_counter_ticks": 3, "prefill_trials": 2,
                        "decode_trials": 2, "decode_windows": 2, "pause_s": 0.1}})


@pytest.mark.parametrize("latency", [0.0, 0.05, 0.2])
def test_simulated_switch_latency_is_what_the_job_measures(tmp_path, latency):
    lever = "phase:prefill=default,decode=smclock:1410"
    cfg = _sim_cfg(latency, [lever])
    run_job(cfg, GridPoint("qwen3-4b", 8, 256, lever), tmp_path)
    w = pd.read_parquet(tmp_path / "windows.parquet")
    to_decode = w[w["phase"] == "switch_decode"]
    decode = w[w["phase"] == "decode"]
    step = (decode["duration_s"] / (decode["steps"] * decode["repetitions"])).median()
    assert len(to_decode) == 2 and len(w[w["phase"] == "switch_prefill"]) == 2
    # the step under way when the change lands ends at the old clock; the next one reports the new clock
    assert (to_decode["duration_s"] >= latency).all()
    assert (to_decode["duration_s"] <= latency + 2 * step).all()
    assert (decode["sm_clock_mhz"].round() == 1410).all()  # the decode windows run under the decode lock
    assert (w[w["phase"] == "prefill"]["sm_clock_mhz"] > 1500).all()  # prefill at the default


def test_a_switch_whose_unit_of_work_outlasts_the_timeout_still_settles(tmp_path):
    """A prefill at batch 32 x 2048 takes about 2 s on the simulated card, twice the 1 s timeout: the switches
    back to the prefill setting settle: a released lock on the second prefill (the first ran under the lock to its
    end), default -> power limit on the third (two readings after the change must agree)."""
    for lever in ("phase:prefill=default,decode=smclock:1410", "phase:prefill=powercap:400,decode=default"):
        cfg = validate_config({
            "architectures": ["qwen3-4b"], "batch_sizes": [32], "contexts": [2048], "output_lengths": [32],
            "levers": [lever], "backend": "sim",
            "measurement": {"warmup_runs": 1, "idle_s": 0.2, "min_counter_ticks": 3, "prefill_trials": 1,
                            "decode_trials": 2, "decode_windows": 1, "pause_s": 0.1, "switch_timeout_s": 1.0}})
        out = tmp_path / lever.replace(":", "_").replace(",", "_").replace("=", "-")
        run_job(cfg, GridPoint("qwen3-4b", 32, 2048, lever), out)
        w = pd.read_parquet(out / "windows.parquet")
        back = w[w["phase"] == "switch_prefill"]
        prefill_s = w[w["phase"] == "prefill"]["duration_s"].median() / w[w["phase"] == "prefill"]["repetitions"].max()
        assert len(back) == 2 and (back["duration_s"] > 1.0).all() and prefill_s > 1.0
        assert not back["flags"].str.contains("switch_not_settled").any(), (lever, back[["duration_s", "flags"]])
        # the first prefill still ran under the decode setting
        assert (back["repetitions"] == (2 if "smclock" in lever else 3)).all()
