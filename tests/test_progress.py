"""The console of a run: progress of the points, skipped and failed ones, the summary (report/progress.py)."""

import json

import pytest
import yaml

from phase_energy.report.progress import (
    REPORT_ENV,
    RESULTS_ENV,
    Progress,
    duration,
    last_line,
    report_command,
    skip_kind,
)


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def _trace(root, name, status, reason="", backend="sim"):
    d = root / "results" / "traces" / "engine~native" / f"arch~{name}" / "bs~1" / "ctx~64" / "lever~default" / "rep~0"
    d.mkdir(parents=True)
    (d / "status.json").write_text(json.dumps({"status": status, "reason": reason}))
    (d / "metadata.json").write_text(json.dumps({"backend": backend}))
    return [str(d / "samples.parquet"), str(d / "status.json")]


def test_progress_counts_points_skips_and_time_left(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    clock = Clock()
    p = Progress(clock=clock, every_s=5.0, eta_after=1)
    banner = p.plan({"measure": 4, "energy": 1, "claims": 1, "total": 6})
    assert "4 measurement jobs" in banner and "2 analysis and figure jobs" in banner
    outs = [_trace(tmp_path, f"a{i}", "ok") for i in range(2)]
    outs.append(_trace(tmp_path, "a2", "skipped", "memory: needs 202.7 GB > gpu.memory_budget_gb=130"))
    for i, out in enumerate(outs):
        p.started(i, "measure", out, [f"logs/{i}.log"])
    clock.t += 2.0
    first = p.finished(0).splitlines()  # the backend, the first time it is seen; a new tenth: a line at once
    assert first == ["the jobs run on the SIMULATED backend (no GPU here): every result says so",
                     "measured 1/4 points, 0.5 per s, about 6 s left"]
    clock.t += 1.0
    assert p.finished(1) == "measured 2/4 points, 0.7 per s, about 3 s left"
    clock.t += 1.0
    line = p.finished(2)
    assert line == "measured 3/4 points (1 skipped), 0.8 per s, about 1 s left"
    assert p.skipped == {"memory": 1}
    fresh = Progress(clock=clock)  # by default no rate until a few points are done (workers start first)
    fresh.plan({"measure": 100})
    fresh.started(0, "measure", _trace(tmp_path, "b0", "ok", backend="nvml"), [])
    clock.t += 1.0
    assert fresh.finished(0).splitlines() == ["the jobs measure a real GPU (NVML)", "measured 1/100 points"]


def test_tables_and_figures_jobs_are_counted_once_the_measurements_are_done(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    clock = Clock()
    p = Progress(clock=clock)
    banner = p.plan({"measure": 1, "config_file": 1, "energy": 1, "figure_after_energy": 1, "all": 1, "total": 5})
    assert "then 2 analysis and figure jobs" in banner  # the target rule 'all' does no work of its own
    p.started(1, "config_file", ["results/config/measure.json"], [])
    clock.t += 0.5
    assert p.finished(1) is None  # the run's config parts: written before any measurement, not counted
    p.started(2, "measure", _trace(tmp_path, "a", "ok"), [])
    clock.t += 1.0
    p.finished(2)
    p.started(3, "energy", ["results/tables/windows.parquet"], [])
    clock.t += 7.2
    assert p.finished(3) == "tables and figures: 1/2 jobs done (energy, 7 s)"
    p.started(4, "figure_after_energy", ["figures/fig01.png"], [])
    clock.t += 65.0
    assert p.finished(4) == "tables and figures: 2/2 jobs done (figure_after_energy, 1 min 5 s)"
    p.started(5, "all", [], [])
    assert p.finished(5) is None
    cached = Progress(clock=clock)  # a run on cached traces measures nothing: every job is counted as it ends
    cached.plan({"config_file": 1, "energy": 1, "claims": 1, "all": 1})
    cached.started(1, "energy", ["results/tables/windows.parquet"], [])
    clock.t += 0.6
    assert cached.finished(1) == "tables and figures: 1/2 jobs done (energy, under 1 s)"


def test_the_target_rules_the_console_leaves_out_are_the_workflows_rules_without_outputs():
    """A target rule the console did not know would keep its count one short of the total."""
    import re
    from pathlib import Path

    from phase_energy.report.progress import TARGET_RULES

    root = Path(__file__).resolve().parents[1]
    targets = set()
    for f in [root / "Snakefile", *sorted((root / "workflow" / "rules").glob("*.smk"))]:
        for name, body in re.findall(r"^rule (\w+):\n((?:    .*\n|\n)+)", f.read_text(), re.M):
            if "output:" not in body:
                targets.add(name)
    assert targets == set(TARGET_RULES)


def test_a_failed_job_is_named_with_the_last_line_of_its_log(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "logs" / "m.log"
    log.parent.mkdir()
    log.write_text("INFO starting\nValueError: power limit 900 W outside 200-700 W\n\n")
    p = Progress(clock=Clock())
    p.plan({"measure": 1, "energy": 1})
    p.started(7, "measure", _trace(tmp_path, "x", "ok"), [str(log)])
    text = p.error(7)
    assert text.startswith("FAILED engine~native/arch~x/bs~1/ctx~64/lever~default/rep~0: ValueError: power limit")
    assert p.points_done == 1 and p.failed_points == 1
    p.started(8, "energy", ["results/tables/windows.parquet"], [])
    p.error(8, "energy", [str(tmp_path / "missing.log")])
    summary = p.summary()
    assert "points: 0 measured, 0 skipped, 1 failed; 1 other jobs failed" in summary
    assert "failed energy: (log unreadable" in summary


def test_summary_says_simulated_and_where_the_results_are(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = Progress(clock=Clock())
    p.plan({"measure": 2})
    p.started(1, "measure", _trace(tmp_path, "a", "ok"), [])
    p.started(2, "measure", _trace(tmp_path, "b", "skipped", "engine: vLLM has no Mamba2 model class"), [])
    p.finished(1)
    p.finished(2)
    (tmp_path / "figures").mkdir()
    s = p.summary()
    assert "points: 1 measured, 1 skipped (engine: 1), 0 failed" in s
    assert "SIMULATED" in s and "results: figures/; report: snakemake --cores 1 --report report.html" in s
    # a run with its own results folder, config file and values: its report is built with them again
    monkeypatch.setenv(RESULTS_ENV, "results-h200")  # as set_results_folder sets them
    monkeypatch.setenv(REPORT_ENV, report_command("results-h200", ["config/h200-reference.yaml"],
                                                  {"results": "results-h200", "batch_sizes": [1, 32]}))
    (tmp_path / "results-h200" / "tables").mkdir(parents=True)
    s = p.summary()
    assert "results: results-h200/tables/; report: snakemake --cores 1 --report results-h200/report.html " \
           "--configfile config/h200-reference.yaml --config results=results-h200 'batch_sizes=[1, 32]'" in s, s
    assert "(results-h200/tables/jobs.csv)" in s


def test_the_report_command_builds_the_report_of_the_run_that_printed_it(tmp_path):
    """The summary's report command, run as printed, passes the results folder's check of its run."""
    import shlex

    from phase_energy.config import check_run_identity, write_run_identity

    write_run_identity(tmp_path / "r", {"configfiles": ["config/test.yaml"], "traces": "t"})
    argv = shlex.split(report_command(str(tmp_path / "r"), ["config/test.yaml"], {"results": str(tmp_path / "r"),
                                                                                   "levers": ["default"]}))
    assert argv[:5] == ["snakemake", "--cores", "1", "--report", f"{tmp_path / 'r'}/report.html"]
    files = argv[argv.index("--configfile") + 1:argv.index("--config")]
    values = dict(a.split("=", 1) for a in argv[argv.index("--config") + 1:])
    check_run_identity(tmp_path / "r", {"configfiles": files, "traces": "t"})  # the same run: accepted
    assert yaml.safe_load(values["levers"]) == ["default"] and values["results"] == str(tmp_path / "r")


def test_the_report_commands_values_read_back_as_snakemake_read_them():
    """Snakemake reads a --config value as an int, a float, True/False, nothing (None), else YAML with every
    scalar a string: what the command writes comes back as the run's own values."""
    import shlex

    from snakemake.cli import parse_config

    given = {"allow_gpu_settings": True, "seed": 3, "throughput_loss_bound": 0.01, "traces": None,
             "results": "results x", "batch_sizes": ["1", "32"], "measurement": {"idle_s": "0.5"}}
    argv = shlex.split(report_command("results x", [], given))
    assert parse_config(argv[argv.index("--config") + 1:]) == given


def test_a_run_that_measures_nothing_says_so_not_zero_points(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = Progress(clock=Clock())
    p.plan({"energy": 1, "claims": 1})  # cached traces: no measurement job
    s = p.summary()
    assert "points: none measured in this run" in s and "results/tables/jobs.csv" in s and "0 measured" not in s


@pytest.mark.parametrize(("seconds", "text"), [(7.4, "7 s"), (95, "1 min 35 s"), (3725, "1 h 2 min")])
def test_durations_read_as_a_person_says_them(seconds, text):
    assert duration(seconds) == text


def test_helpers(tmp_path):
    assert skip_kind("memory: needs 1 GB") == "memory" and skip_kind("") == "unknown"
    assert last_line(tmp_path / "none.log").startswith("(log unreadable")
    (tmp_path / "e.log").write_text("")
    assert last_line(tmp_path / "e.log") == "(empty log)"


def test_the_banner_says_what_runs_and_what_is_skipped_by_kind():
    from phase_energy.report.progress import run_banner

    reasons = [None, "memory: needs 200 GB", "lever not permitted: 'powercap:300' ...", "memory: needs 150 GB", None]
    text = run_banner(5, "nvml", "a real GPU", reasons, "results/traces", "results/traces")
    assert text == ("phase-energy: backend nvml (a real GPU) - 2 of 5 points to measure, 3 skipped (memory: 2, "
                    "lever not permitted: 1); traces in results/traces")
    assert "skipped" not in run_banner(2, "sim", "set in the config", [None, None], "results/traces", "results/traces")
    # a run after another: it says what it finds, not what runs (a changed config measures every point again;
    # the measurement jobs Snakemake plans are counted in the line above it)
    again = run_banner(5, "nvml", "a real GPU", reasons, "results/traces", "results/traces", traced=4)
    assert again == ("phase-energy: backend nvml (a real GPU) - a grid of 5 points, 2 measured on it and 3 skipped "
                     "(memory: 2, lever not permitted: 1); 4 of their traces are in results/traces already (the "
                     "measurement jobs counted above are those that run now)")
    cached = run_banner(7, "sim", "x", [], "reference-data/h200-default/traces", "results/traces")
    assert cached == ("phase-energy: 7 points read from reference-data/h200-default/traces (cached traces); "
                      "nothing is measured")
