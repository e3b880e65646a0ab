import pytest
import yaml

from phase_energy.config import ConfigError, validate_config
from phase_energy.grid import GridPoint, Lever, expand_grid
from phase_energy.measure.job import point_skip_reason
from phase_energy.model.presets import get_preset

from .conftest import ROOT, copy_workflow, run_snakemake

# (override, words the message must contain: key, value, what is accepted)
BAD = [
    ({"architectures": ["gpt-5"]}, ["architectures[0]", "gpt-5", "qwen3-4b"]),
    ({"levers": ["smclock:fast"]}, ["levers[0]", "smclock:fast", "smclock:<MHz>"]),
    ({"levers": ["powercap:900"]}, ["levers[0]", "powercap:900", "700"]),
    ({"levers": ["powercap:100"]}, ["levers[0]", "powercap:100", "200"]),
    ({"levers": ["smclock:2500"]}, ["levers[0]", "smclock:2500", "1980"]),
    ({"levers": ["turbo"]}, ["levers[0]", "turbo", "powercap"]),
    ({"batch_sizes": [1, -4]}, ["batch_sizes[1]", "-4", ">= 1"]),
    ({"batch_sizes": []}, ["batch_sizes", "[]", "at least 1"]),
    ({"architectures": []}, ["architectures", "[]", "at least 1"]),
    ({"contexts": ["long"]}, ["contexts[0]", "long", "integer"]),
    ({"contexts": [0]}, ["contexts[0]", "0", ">= 1"]),
    ({"output_lengths": [128, 128]}, ["output_lengths", "128", "without repeated"]),
    ({"repetitions": 0}, ["repetitions", "0", ">= 1"]),
    ({"repetitions": "three"}, ["repetitions", "three", "integer"]),
    ({"backend": "cuda"}, ["backend", "cuda", "'sim'"]),
    ({"engines": ["tensorrt"]}, ["engines[0]", "tensorrt", "'native'"]),
    ({"allow_gpu_settings": "yes"}, ["allow_gpu_settings", "yes", "boolean"]),
    ({"batch_size": [8]}, ["batch_size", "unknown key", "batch_sizes"]),
    ({"measurement": {"window": 3}}, ["measurement.window", "unknown key", "min_counter_ticks"]),
    ({"measurement": {"sampling_period_ms": 0}}, ["measurement.sampling_period_ms", "0", "> 0"]),
    ({"gpu": {"power_limit_min_w": 800}}, ["gpu.power_limit_min_w", "800", "min <= max"]),
    ({"analysis": {"throughput_loss_bound": 2}}, ["analysis.throughput_loss_bound", "2", "<= 1"]),
]


@pytest.mark.parametrize("override,words", BAD, ids=[str(b[0]) for b in BAD])
def test_malformed_config_names_key_value_and_accepted(override, words):
    with pytest.raises(ConfigError) as e:
        validate_config(override)
    msg = str(e.value)
    for w in words:
        assert w in msg, f"{w!r} missing from: {msg}"


def test_defaults_are_filled_from_schema():
    cfg = validate_config({})
    assert cfg["allow_gpu_settings"] is False
    assert cfg["measurement"]["sampling_period_ms"] == 10
    assert cfg["levers"] == ["default"]


def test_run_to_run_default_is_the_measured_spread():
    """The intervals' run-to-run spread is what bench/run_to_run.py measured (rounded to 0.1 %), not a guess."""
    import json

    measured = json.loads((ROOT / "bench/run-to-run.json").read_text())["run_to_run_sd"]
    assert validate_config({})["analysis"]["run_to_run_sd"] == pytest.approx(measured, abs=0.0005)


def test_default_config_is_the_paper_grid():
    cfg = validate_config(yaml.safe_load((ROOT / "config/config.yaml").read_text()))
    assert cfg["allow_gpu_settings"] is False
    paradigms = {get_preset(a).paradigm for a in cfg["architectures"]}
    assert paradigms == {"gqa", "mla", "gdn", "mamba2"}
    caps = [Lever.parse(x).value for x in cfg["levers"] if x.startswith("powercap")]
    clocks = [Lever.parse(x).value for x in cfg["levers"] if x.startswith("smclock")]
    assert min(caps) == 200 and max(caps) == 700
    assert min(clocks) <= 810 and max(clocks) == 1980
    assert min(cfg["batch_sizes"]) == 1 and max(cfg["batch_sizes"]) == 256
    assert min(cfg["contexts"]) == 512 and max(cfg["contexts"]) == 8192


def test_grid_paths_roundtrip_through_wildcards():
    cfg = validate_config({"architectures": ["qwen3-4b"], "levers": ["default", "powercap:400", "smclock:1410"],
                           "repetitions": 2})
    points = list(expand_grid(cfg))
    assert len(points) == 6 * 5 * 3 * 2
    p = points[7]
    parts = dict(part.split("~") for part in p.path.split("/"))
    back = GridPoint.from_wildcards({"engine": parts["engine"], "arch": parts["arch"], "bs": parts["bs"],
                                     "ctx": parts["ctx"], "lever": parts["lever"], "rep": parts["rep"]})
    assert back == p


def test_points_that_cannot_run_get_a_reason():
    cfg = validate_config({"gpu": {"memory_budget_gb": 20}, "levers": ["default", "powercap:300"]})
    big = GridPoint("qwen3-4b", 256, 8192, "default")
    assert "memory" in point_skip_reason(cfg, big, "sim")
    small = GridPoint("qwen3-4b", 1, 512, "default")
    assert point_skip_reason(cfg, small, "sim") is None
    capped = GridPoint("qwen3-4b", 1, 512, "powercap:300")
    assert "allow_gpu_settings" in point_skip_reason(cfg, capped, "nvml")
    assert point_skip_reason(cfg, capped, "sim") is None


def test_snakemake_stops_before_any_job_on_a_bad_config(tmp_path):
    wd = copy_workflow(tmp_path)
    res = run_snakemake(wd, "-n", "--cores", "1", "--config", "levers=[smclock:fast]", "backend=sim")
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "smclock:fast" in out and "levers" in out
    assert "rule measure" not in out


def test_command_line_strings_are_read_as_the_schema_types():
    cfg = validate_config({"batch_sizes": ["1", "32"], "allow_gpu_settings": "false", "repetitions": "2",
                           "measurement": {"idle_s": "1.5"}, "cluster": {"gpu_freq_for_smclock": "true"}})
    assert cfg["batch_sizes"] == [1, 32] and cfg["allow_gpu_settings"] is False and cfg["repetitions"] == 2
    assert cfg["measurement"]["idle_s"] == 1.5 and cfg["cluster"]["gpu_freq_for_smclock"] is True
    with pytest.raises(ConfigError, match="batch_sizes"):
        validate_config({"batch_sizes": ["many"]})


def test_settings_take_their_defaults_from_the_schema_alone():
    """The schema is the one place a default is written: every settings class agrees with a default config."""
    from phase_energy.config import schema_defaults
    from phase_energy.engines.vllm import VllmSettings
    from phase_energy.measure.clear import ClearSettings
    from phase_energy.measure.protocol import Settings

    cfg = validate_config({})
    assert schema_defaults() == cfg
    assert Settings() == Settings.from_config(cfg["measurement"], max_output=max(cfg["output_lengths"]))
    assert ClearSettings() == ClearSettings.from_config(cfg)
    assert VllmSettings() == VllmSettings.from_config(cfg["vllm"])
    # a changed default in the schema reaches the settings (they read it; nothing else holds a copy)
    assert Settings().decode_lead_in_s == cfg["measurement"]["decode_lead_in_s"]
    assert ClearSettings().probe_s == cfg["clear"]["probe_s"]
