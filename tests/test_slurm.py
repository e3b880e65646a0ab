"""The cluster path against a real SLURM on localhost (installed and started by the test, stopped by pid).

Run with `pytest -m slurm` (CI does). Needs root and Debian's package archive the first time.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from phase_energy.testing.local_slurm import LocalSlurm

from .conftest import ROOT, copy_workflow

pytestmark = [pytest.mark.slurm, pytest.mark.skipif(os.geteuid() != 0, reason="starts SLURM daemons as root")]


@pytest.fixture(scope="module")
def slurm():
    root = Path(tempfile.mkdtemp(prefix="phase-energy-slurm-"))  # outside pytest's 0700 folders: slurm must read it
    cluster = LocalSlurm(root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def _test_profile(wd, partition, **overrides):
    """The shipped profile with the site placeholders filled in for the local cluster."""
    prof = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    prof["default-resources"].update(slurm_partition=partition, mem_mb=300)
    prof["default-resources"].pop("slurm_account")
    prof["set-resources"]["measure"].update(slurm_partition=partition, mem_mb=300, cpus_per_task=1, gpu=1)
    prof.update({"slurm-no-account": True, "slurm-status-command": "squeue",
                 "slurm-init-seconds-before-status-checks": 6, "latency-wait": 5, **overrides})
    d = wd / "profiles" / "slurm-test"
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.yaml").write_text(yaml.safe_dump(prof))
    return d


def _snakemake(wd, env, *args, timeout=480):
    cmd = ["timeout", "-s", "KILL", str(timeout), sys.executable, "-m", "snakemake", *args]
    return subprocess.run(cmd, cwd=wd, env=env, capture_output=True, text=True, check=False)


def test_test_config_through_sbatch_equals_the_local_run(slurm, sim_run, tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    prof = _test_profile(wd, slurm.partition)
    res = _snakemake(wd, slurm.env, "--profile", str(prof), "--configfile", "config/test.yaml")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:] + slurm.logs()
    # every measurement job went through sbatch: one SLURM log per job, named by its SLURM job id
    logs = sorted((wd / "logs/slurm/rule_measure").rglob("*.log"))
    assert len(logs) == 12, logs
    assert all(re.fullmatch(r"\d+\.log", p.name) for p in logs)
    # the analysis and figures went through sbatch too, as one group job
    group_logs = list((wd / "logs/slurm").glob("group_analysis*/*.log"))
    assert len(group_logs) == 1 and re.fullmatch(r"\d+\.log", group_logs[0].name)
    assert "Submitted batch job" in res.stderr + res.stdout or "SLURM jobid" in res.stderr + res.stdout
    # the same seed gives the same traces as the local run
    for status in (sim_run / "results/traces").rglob("status.json"):
        rel = status.parent.relative_to(sim_run)
        a = pd.read_parquet(sim_run / rel / "windows.parquet")
        b = pd.read_parquet(wd / rel / "windows.parquet")
        pd.testing.assert_frame_equal(a, b)
    assert (wd / "results/claims.csv").read_text() == (sim_run / "results/claims.csv").read_text()


def test_scancel_leaves_nothing_complete_and_the_rerun_does_only_the_missing_point(slurm, tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    prof = _test_profile(wd, slurm.partition, retries=0)  # the profile's retries would resubmit the cancelled job
    cfg = yaml.safe_load((ROOT / "config/test.yaml").read_text())
    cfg.update(architectures=["qwen3-4b"], levers=["default"])
    cfg["sim"] = {"wall_delay_s": 8}
    (wd / "config/cancel.yaml").write_text(yaml.safe_dump(cfg))
    targets = [f"results/traces/engine~native/arch~qwen3-4b/bs~{b}/ctx~256/lever~default/rep~0/status.json"
               for b in (1, 8)]
    args = [*targets, "--profile", str(prof), "--configfile", "config/cancel.yaml"]  # --configfile takes several
    proc = subprocess.Popen(["timeout", "-s", "KILL", "300", sys.executable, "-m", "snakemake", *args], cwd=wd,
                            env=slurm.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    job = None
    for _ in range(120):
        q = subprocess.run(["squeue", "-h", "-o", "%i %T %k %j"], env=slurm.env, capture_output=True, text=True)
        running = [line.split() for line in q.stdout.splitlines() if " RUNNING " in line]
        if running:
            job = running[0][0]
            break
        time.sleep(0.5)
    assert job, "no job started"
    time.sleep(3)
    subprocess.run(["scancel", job], env=slurm.env, check=True)
    out, _ = proc.communicate(timeout=300)
    status = sorted(p.relative_to(wd) for p in (wd / "results/traces").rglob("status.json"))
    assert len(status) == 1, (status, out[-3000:])  # the cancelled point left no complete output
    dry = _snakemake(wd, slurm.env, *targets, "-n", "--cores", "1", "--configfile", "config/cancel.yaml")
    assert re.search(r"^measure\s+1$", dry.stdout, re.M), dry.stdout[-2000:]
    res = _snakemake(wd, slurm.env, *args)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert len(list((wd / "results/traces").rglob("status.json"))) == 2
