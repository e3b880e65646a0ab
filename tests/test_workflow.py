"""The real Snakemake workflow, end to end on the simulator (test config), plus lint and dry runs."""

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from matplotlib import image as mpimg

from phase_energy.report.catalog import FIGURES, figure_batches

from .conftest import copy_workflow, run_snakemake

pytestmark = pytest.mark.slow


def test_every_trace_is_complete_and_labelled_sim(sim_run):
    status = sorted(sim_run.glob("results/traces/**/status.json"))
    assert len(status) == 12  # 2 archs x 2 batches x 1 context x 3 levers
    for s in status:
        d = s.parent
        meta = json.loads((d / "metadata.json").read_text())
        assert meta["backend"] == "sim"
        assert meta["paradigm"] in ("gqa", "mamba2")
        assert json.loads(s.read_text())["status"] == "ok"
        w = pd.read_parquet(d / "windows.parquet")
        assert {"idle", "prefill", "decode"} <= set(w["phase"])
        assert len(pd.read_parquet(d / "samples.parquet")) > 100


def test_claims_table_has_every_claim_with_a_verdict(sim_run):
    c = pd.read_csv(sim_run / "results/claims.csv")
    assert list(c.columns[:5]) == ["id", "claim", "engine", "verdict", "evidence"]
    assert set(c["engine"]) == {"native"}
    assert c["id"].tolist() == [f"C{i}" for i in range(1, 12)] + ["S1", "S2", "K1", "K2", "K3", "P1"]
    assert set(c.loc[c["source"] == "project", "id"]) == {"P1"}  # this project's own finding, marked
    # simulated data: every verdict that rests on it says so in its own text (CLEAR is off: K1-K3 rest on none)
    sim = c[c["backend"] == "sim"]
    assert len(sim) == 14 and set(sim["verdict"]) <= {f"{v} (simulated)"
                                                      for v in ("reproduced", "not reproduced", "not testable")}
    assert set(c[c["backend"] == "none"]["verdict"]) == {"not testable"}
    # C4 needs smclock:1980, which the test grid lacks
    assert c.set_index("id").loc["C4", "verdict"] == "not testable (simulated)"


def test_every_figure_is_drawn_readable_and_marked_simulated(sim_run):
    for name in FIGURES:
        png = sim_run / "figures" / f"{name}.png"
        img = mpimg.imread(png)
        h, w = img.shape[:2]
        assert h >= 300 and w >= 600, name
        gray = img[..., :3].mean(axis=2)
        assert gray.std() > 0.02, f"{name} looks blank"
        assert (gray < 0.5).mean() > 0.001, f"{name} has almost no ink"
        svg = (sim_run / "figures" / f"{name}.svg").read_text()
        assert "<text" in svg, f"{name}: SVG text was converted to paths"
        assert "SIMULATED" in svg, name
    # figures with their data are drawn, the others are clear placeholders
    claims_svg = (sim_run / "figures" / "fig10_claims.svg").read_text()
    assert "C11" in claims_svg and "no data to draw" not in claims_svg
    assert "no data to draw" in (sim_run / "figures" / "fig06_dvfs_classes.svg").read_text()  # one lock only
    assert "no data to draw" not in (sim_run / "figures" / "fig09_cap_sweep.svg").read_text()
    assert "no data to draw" in (sim_run / "figures" / "fig11_sweetspot.svg").read_text()  # one context only


def test_nothing_left_to_do_after_a_complete_run(sim_run):
    res = run_snakemake(sim_run, "-n", "--cores", "1", "--configfile", "config/test.yaml")
    assert res.returncode == 0
    assert "Nothing to be done" in res.stdout + res.stderr


def test_report_builds_with_every_figure(sim_run):
    res = run_snakemake(sim_run, "--cores", "1", "--configfile", "config/test.yaml", "--report", "report.html")
    assert res.returncode == 0, res.stderr[-2000:]
    html = (sim_run / "report.html").read_text(errors="replace")
    assert len(html) > 50_000
    for name in FIGURES:
        assert name in html


def test_regenerate_from_cached_traces_schedules_no_measurement(sim_run, tmp_path):
    wd = copy_workflow(tmp_path / "fresh")
    shutil.copytree(sim_run / "results/traces", wd / "cached-traces")
    args = ["--cores", "1", "--configfile", "config/test.yaml", "--config", "traces=cached-traces"]
    dry = run_snakemake(wd, "-n", *args)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert not re.search(r"^measure\s+\d+", dry.stdout, re.M)
    assert re.search(r"^energy\s+1", dry.stdout, re.M)
    res = run_snakemake(wd, *args)
    assert res.returncode == 0, res.stderr[-2000:]
    a = pd.read_csv(sim_run / "results/tables/phase_energy.csv")
    b = pd.read_csv(wd / "results/tables/phase_energy.csv")
    np.testing.assert_allclose(a["j_per_token"], b["j_per_token"])
    # a grid without a GQA model: the ratios to GQA are empty and the claims that need them say so
    res = run_snakemake(wd, *args, "architectures=[mamba2-2.7b]", "results=results-no-gqa")
    assert res.returncode == 0, res.stderr[-2000:]
    req = pd.read_parquet(wd / "results-no-gqa/tables/request_energy.parquet")
    assert len(req) and req["ratio_vs_gqa"].isna().all()
    claims = pd.read_csv(wd / "results-no-gqa/claims.csv").set_index("id")
    assert claims.loc["C9", "verdict"] == "not testable (simulated)" and "GQA" in claims.loc["C9", "reason"]


def test_a_results_folder_belongs_to_one_config(sim_run):
    """Another config's run would replace this one's claims and figures: refused, naming both and the way out."""
    ident = json.loads((sim_run / "results/run.json").read_text())
    assert ident == {"configfiles": ["config/config.yaml", "config/test.yaml"], "traces": "results/traces"}
    other = ["-n", "--cores", "1", "--configfile", "config/sweetspot-test.yaml"]
    res = run_snakemake(sim_run, *other)
    assert res.returncode != 0
    msg = " ".join((res.stdout + res.stderr).split())
    assert "results/ holds the outputs of another run (config files config/config.yaml, config/test.yaml" in msg
    assert "--config results=results-sweetspot-test" in msg
    res = run_snakemake(sim_run, *other, "--config", "results=results-sweetspot-test")
    assert res.returncode == 0, res.stderr[-2000:]
    assert re.search(r"^measure\s+\d+", res.stdout, re.M)  # its own folder: its own traces, measured there
    assert not (sim_run / "results-sweetspot-test").exists()  # a dry run writes nothing


def test_figures_target_redraws_only_plots(sim_run):
    for f in (sim_run / "figures").glob("fig0*.png"):
        f.unlink()
    res = run_snakemake(sim_run, "-n", "figures", "--cores", "1", "--configfile", "config/test.yaml")
    assert res.returncode == 0
    jobs = re.findall(r"^(\S+)\s+(\d+)$", res.stdout, re.M)
    names = {j for j, _ in jobs if j not in ("job", "total")}
    assert names and all(n.startswith("figure_") or n == "figures" for n in names), names


def test_dry_run_of_the_paper_grid_lists_one_job_per_point(tmp_path):
    wd = copy_workflow(tmp_path)
    res = run_snakemake(wd, "-n", "--cores", "1", "--resources", "gpu=1", "--quiet", "rules")
    assert res.returncode == 0, res.stderr[-2000:]
    m = re.search(r"^measure\s+(\d+)$", res.stdout, re.M)
    assert m and int(m.group(1)) == 4 * 6 * 5 * 14


def test_a_dry_run_writes_nothing(tmp_path):
    """Parsing and planning leave the folder as it was: the config parts are written by a rule, when it runs."""
    wd = copy_workflow(tmp_path)
    before = {p for p in wd.rglob("*") if ".snakemake" not in p.parts}
    res = run_snakemake(wd, "-n", "--cores", "1", "--configfile", "config/test.yaml")
    assert res.returncode == 0, res.stderr[-2000:]
    assert re.search(r"^config_file\s+2$", res.stdout, re.M)  # the measurement and analysis parts (CLEAR off)
    assert {p for p in wd.rglob("*") if ".snakemake" not in p.parts} == before


def test_lint_is_clean(tmp_path):
    wd = copy_workflow(tmp_path)
    res = run_snakemake(wd, "--lint")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def test_one_architecture_default_lever_only_runs_every_rule(tmp_path):
    """The smallest grid (nothing to compare, no levers) still goes through every rule and says why."""
    wd = copy_workflow(tmp_path)
    res = run_snakemake(wd, "--cores", "2", "--configfile", "config/test.yaml", "--config", "architectures=[qwen3-4b]",
                        "levers=[default]", "batch_sizes=[1]")
    assert res.returncode == 0, res.stderr[-3000:]
    claims = pd.read_csv(wd / "results/claims.csv").set_index("id")
    assert claims.loc["C6", "verdict"].startswith("not testable")
    assert claims.loc["C10", "verdict"].startswith("not testable")
    assert "no data to draw" in (wd / "figures/fig04_pareto.svg").read_text()
    # a trace measured again redraws the figure that reads a trace (fig01), whose job does not list the traces
    # as inputs: it draws the energy table, which the energy job makes from every trace
    (wd / "results/traces/engine~native/arch~qwen3-4b/bs~1/ctx~256/lever~default/rep~0/status.json").unlink()
    dry = run_snakemake(wd, "-n", "--cores", "1", "--configfile", "config/test.yaml", "--config",
                        "architectures=[qwen3-4b]", "levers=[default]", "batch_sizes=[1]")
    assert dry.returncode == 0, dry.stderr[-3000:]
    jobs = dict(re.findall(r"^(\S+)\s+(\d+)$", dry.stdout, re.M))
    (fig01_job,) = [f"figure_{j}" for j, names in figure_batches().items() if "fig01_power_timeline" in names]
    assert jobs.get("measure") == "1" and jobs.get("energy") == "1" and jobs.get(fig01_job) == "1", jobs


def test_slurm_profile_groups_every_analysis_rule(tmp_path):
    """A rule left out of the SLURM group would split the group job (snakemake refuses such a DAG)."""
    import yaml

    wd = copy_workflow(tmp_path / "wf")
    res = run_snakemake(wd, "--list-rules", "--configfile", "config/test.yaml")
    assert res.returncode == 0, res.stderr[-2000:]
    rules = {line.split()[0] for line in res.stdout.splitlines() if line.strip()}
    groups = yaml.safe_load((wd / "profiles/slurm/config.yaml").read_text())["groups"]
    analysis_rules = rules - {"all", "measure", "clear_measure", "traces", "figures", "config_file"}
    assert analysis_rules and analysis_rules <= set(groups), analysis_rules - set(groups)


def test_simulated_jobs_ran_in_the_workflow_process_as_the_cli_would(sim_run, tmp_path):
    """In-process jobs write what `phase-energy measure` writes, and each keeps its own log."""
    from phase_energy.cli import main
    from phase_energy.measure.trace import read_trace

    point = "engine~native/arch~qwen3-4b/bs~8/ctx~256/lever~powercap-300/rep~0"
    log = (sim_run / "logs" / "measure" / f"{point}.log").read_text()
    assert f"job {point} done" in log and "arch~mamba2" not in log  # its own records, none of another job's
    config = next((sim_run / "results" / "config").glob("measure-*.json"))
    assert main(["measure", "--config", str(config), "--arch", "qwen3-4b", "--batch", "8", "--context", "256",
                 "--lever", "powercap:300", "--out", str(tmp_path / "cli")]) == 0
    a, b = read_trace(sim_run / "results" / "traces" / point), read_trace(tmp_path / "cli")
    pd.testing.assert_frame_equal(a["samples"], b["samples"])
    pd.testing.assert_frame_equal(a["windows"], b["windows"])
    assert a["status"]["summary"] == b["status"]["summary"]


def _sweetspot_argv(run, out):
    """`phase-energy analyse sweetspot` on a finished run's request energy, its tables written under ``out``."""
    from phase_energy.analysis.tables import TABLES

    config = next((run / "results" / "config").glob("analysis-*.json"))
    return ["analyse", "sweetspot", "--config", str(config),
            "--in", f"request_energy={run / 'results' / TABLES['request_energy'].path}",
            "--out", f"sweetspot_cells={out / 'cells.parquet'}", "--out", f"sweetspot_fit={out / 'fit.csv'}"]


@pytest.fixture
def fresh_pool(monkeypatch):
    """The workers' pool of this test alone (its processes ended afterwards)."""
    from phase_energy.measure import workers

    monkeypatch.setattr(workers, "_POOL", None)
    yield
    if workers._POOL is not None:
        workers._POOL.close()


@pytest.mark.parametrize("cores", [1, 2])
def test_an_analysis_job_runs_in_the_workflow_process_as_the_cli_would(sim_run, tmp_path, cores, fresh_pool):
    """With one core in this thread, with more in a worker: the tables the command line writes, the records
    in the job's log."""
    import subprocess
    import sys

    from phase_energy.measure.workers import run_command

    run_command(_sweetspot_argv(sim_run, tmp_path / "job"), tmp_path / "job.log", cores, tmp_path / "workers")
    cli = subprocess.run([sys.executable, "-m", "phase_energy.cli", *_sweetspot_argv(sim_run, tmp_path / "cli")],
                         check=True, capture_output=True, text=True)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "job/cells.parquet"),
                                  pd.read_parquet(tmp_path / "cli/cells.parquet"))
    assert (tmp_path / "job/fit.csv").read_text() == (tmp_path / "cli/fit.csv").read_text()

    def records(text):  # the records without their times
        return [line.split(" ", 2)[2] for line in text.splitlines() if " phase_energy" in line]

    assert records(cli.stderr) and records((tmp_path / "job.log").read_text()) == records(cli.stderr)
    assert (tmp_path / "workers").exists() == (cores > 1)


@pytest.mark.parametrize("cores", [1, 2])
def test_a_failed_analysis_job_names_its_log_and_the_log_says_why(sim_run, tmp_path, cores, fresh_pool):
    from phase_energy.measure.workers import WorkerError, run_command

    argv = _sweetspot_argv(sim_run, tmp_path / "job")
    argv[argv.index("--in") + 1] = f"request_energy={tmp_path / 'absent.parquet'}"
    with pytest.raises(WorkerError, match=r"job\.log") as err:
        run_command(argv, tmp_path / "job.log", cores, tmp_path / "workers")
    assert "absent.parquet" in str(err.value)
    assert "absent.parquet" in (tmp_path / "job.log").read_text()


def test_only_analysis_and_figure_commands_run_in_the_workflow_process(tmp_path):
    from phase_energy.cli import CommandError, run_in_process

    with pytest.raises(CommandError, match="accepted: analyse, figure"):
        run_in_process(["measure", "--config", "x.yaml", "--lever", "default"], tmp_path / "job.log")
    with pytest.raises(CommandError, match="bad arguments"):
        run_in_process(["analyse"], tmp_path / "job.log")
    assert "bad arguments" in (tmp_path / "job.log").read_text()


def test_the_console_shows_progress_and_a_summary(sim_run):
    console = (sim_run / "console.txt").read_text()
    assert "phase-energy: backend sim (set in the config) - 12 of 12 points to measure; traces in results/traces" \
        in console  # the banner, once, before the jobs
    assert "phase-energy: 12 measurement jobs to run" in console
    assert "measured 12/12 points" in console and "measurements done" in console
    # after the measurements, each table and figure job as it ends; the last one completes the count
    counts = re.findall(r"^tables and figures: (\d+)/(\d+) jobs done \(\w+, ", console, re.M)
    assert counts and counts[-1][0] == counts[-1][1] and int(counts[-1][1]) >= 10
    assert console.index("measurements done") < console.index("tables and figures:")
    assert "points: 12 measured, 0 skipped, 0 failed" in console and "SIMULATED" in console
    assert "Finished jobid" not in console  # no block per job


def test_a_second_run_says_its_traces_are_there_already(sim_run):
    (sim_run / "figures" / "fig10_claims.png").unlink()  # something to do: this run draws it again
    res = run_snakemake(sim_run, "--cores", "1", "--configfile", "config/test.yaml")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "a grid of 12 points, 12 measured on it and 0 skipped; 12 of their traces are in results/traces already" \
        in res.stderr
    assert "to measure" not in res.stderr and "phase-energy: 0 measurement jobs to run" in res.stderr
