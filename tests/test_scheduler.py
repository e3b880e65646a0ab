"""The workflow's scheduler plugin (``--scheduler phase-energy``): run by the real Snakemake, and called directly.

The direct calls use the plugin interface's own test doubles (``snakemake_interface_scheduler_plugins.tests``:
its harness and ``DummyJob``), because Snakemake's job objects exist only inside a built DAG. Only they can
show that the plugin itself chose: a plugin that returned None would make Snakemake fall back to its greedy
scheduler, and the runs above would still pass.
"""

import logging
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

from snakemake_interface_scheduler_plugins.tests import DummyJob, TestSchedulerBase

from snakemake_scheduler_plugin_phase_energy import Scheduler

from .conftest import ROOT, run_snakemake

# each job writes its start and end times; priorities and core counts differ
SNAKEFILE = """
import time

JOBS = {"low": (0, 1), "high": (9, 2), "mid_a": (5, 1), "mid_b": (5, 1), "top_one": (20, 1)}

rule all:
    input:
        expand("done/{name}", name=JOBS),

rule job:
    output:
        "done/{name}",
    priority: lambda wildcards: JOBS[wildcards.name][0]
    threads: lambda wildcards: JOBS[wildcards.name][1]
    run:
        start = time.time()
        time.sleep(0.4)
        Path(output[0]).write_text(f"{start} {time.time()} {threads}")
"""


def _spans(wd: Path) -> dict[str, tuple[float, float, int]]:
    out = {}
    for f in (wd / "done").iterdir():
        start, end, threads = f.read_text().split()
        out[f.name] = (float(start), float(end), int(threads))
    return out


def _run(tmp_path: Path, cores: int) -> dict[str, tuple[float, float, int]]:
    wd = tmp_path / f"cores{cores}"
    wd.mkdir()
    (wd / "Snakefile").write_text("from pathlib import Path\n" + SNAKEFILE)
    res = run_snakemake(wd, "--cores", str(cores), "--scheduler", "phase-energy", "--force-use-threads",
                        "--max-jobs-per-second", "1000", "-q")
    assert res.returncode == 0, res.stderr[-3000:]
    return _spans(wd)


def test_one_core_runs_the_jobs_by_priority(tmp_path):
    spans = _run(tmp_path, 1)
    order = sorted(spans, key=lambda n: spans[n][0])
    # the two-thread job is scaled down to the one core Snakemake has; ties keep their relative order free
    assert order[0] == "top_one" and order[1] == "high" and set(order[2:4]) == {"mid_a", "mid_b"}
    assert order[4] == "low"
    for a, b in pairwise(order):  # one at a time
        assert spans[a][1] <= spans[b][0] + 1e-3


def test_jobs_never_take_more_cores_than_there_are(tmp_path):
    spans = _run(tmp_path, 2)
    events = sorted({t for s, e, _ in spans.values() for t in (s, e)})
    for t0, t1 in pairwise(events):
        mid = (t0 + t1) / 2
        busy = sum(n for s, e, n in spans.values() if s < mid < e)
        assert busy <= 2, (mid, spans)
    # the first round: the top job, then the next by priority that fits in the core left (not the two-core
    # job, not the lowest); later rounds start as single cores free up, so the two-core job runs alone
    first = sorted(spans, key=lambda n: spans[n][0])[:2]
    assert first[0] == "top_one" or spans[first[1]][0] - spans[first[0]][0] < 0.05
    assert "top_one" in first and set(first) - {"top_one"} <= {"mid_a", "mid_b"}
    high_s, high_e, _ = spans["high"]
    assert not any(s < high_e and e > high_s for n, (s, e, _) in spans.items() if n != "high")


def test_the_local_profile_uses_it_and_snakemake_finds_it():
    import yaml
    from snakemake_interface_scheduler_plugins.registry import SchedulerPluginRegistry

    profile = yaml.safe_load((ROOT / "profiles/default/config.yaml").read_text())
    assert profile["scheduler"] == "phase-energy" and "phase-energy" in SchedulerPluginRegistry().plugins


class TestTheInterfaceHarness(TestSchedulerBase):
    """The scheduler plugin interface's own test (selects within resources, over its dummy DAG)."""

    __test__ = True

    def get_scheduler_cls(self):
        return Scheduler

    def get_scheduler_settings(self):
        return None


class _Job(DummyJob):
    def __init__(self, name: str, priority: int = 0, **resources: int) -> None:
        super().__init__(input=[], output=[], resources={"_cores": 1, "_nodes": 1, "_job_count": 1, **resources})
        self.name, self._priority = name, priority

    @property
    def priority(self) -> int:
        return self._priority

    def __repr__(self) -> str:
        return self.name


def _select(jobs, **available):
    chosen = Scheduler(None, None, logging.getLogger("test")).select_jobs(jobs, jobs, available, defaultdict(int))
    assert chosen is not None  # never the fallback to greedy
    return [j.name for j in chosen]


def test_selects_by_priority_and_takes_the_next_that_fits():
    jobs = [_Job("a", 0), _Job("b", 5, _cores=2), _Job("c", 5), _Job("d", 9)]
    # d first; b needs two cores where one is left, c fits; a would not fit after c
    assert _select(jobs, _cores=2) == ["d", "c"]
    assert _select(jobs, _cores=10) == ["d", "b", "c", "a"]  # ties keep the order given
    assert _select([_Job("x"), _Job("y")], _cores=1) == ["x"]


def test_a_job_slot_a_rate_limit_or_a_gpu_ends_the_selection():
    jobs = [_Job(n, gpu=1) for n in "abcd"]
    big = 2**63 - 1  # Snakemake's "unlimited"
    assert _select(jobs, _cores=big, _nodes=2, _job_count=big, gpu=4) == ["a", "b"]  # a cluster's job slots
    assert _select(jobs, _cores=big, _nodes=big, _job_count=3, gpu=4) == ["a", "b", "c"]  # the rate limiter
    assert _select(jobs, _cores=4, _nodes=big, _job_count=big, gpu=1) == ["a"]  # one GPU
    assert _select(jobs, _cores=4, _nodes=big, _job_count=big, gpu=0) == []  # none: nothing starts
    assert _select([_Job("s", mem_mb=100)], _cores=1, gpu=1) == ["s"]  # a resource not limited here


def test_string_or_missing_limits_do_not_block():
    assert _select([_Job("a", partition=1)], _cores=1, partition="gpu") == ["a"]


def _job_records(folder: Path, jobs: list[tuple[str, int, float, float]]) -> Path:
    """Snakemake's per-output records (``.snakemake/metadata``) of jobs given as (rule, job hash, start, end)."""
    import json

    meta = folder / ".snakemake" / "metadata"
    meta.mkdir(parents=True)
    for i, (rule, h, start, end) in enumerate(jobs):
        (meta / f"record-{i}").write_text(json.dumps({"rule": rule, "job_hash": h, "starttime": start,
                                                      "endtime": end}))
    return folder


def test_the_main_job_benchmark_splits_snakemakes_time_before_and_between_measurements(tmp_path):
    """bench/sim_default_grid.py's split of Snakemake's own time up to the last measurement, on known records:
    one job after another (one core), then overlapping jobs (two cores), where only the time no measure job
    spans counts and there is no gap per job."""
    from bench.sim_default_grid import measurement_gaps

    # a job with two outputs has two records; the energy job's is not a measurement
    one_core = _job_records(tmp_path / "one", [("measure", 1, 10.0, 11.0), ("measure", 1, 10.0, 11.02),
                                               ("measure", 2, 11.52, 12.0), ("measure", 3, 12.1, 13.0),
                                               ("energy", 4, 13.5, 20.0)])
    gaps = measurement_gaps(one_core, t0=8.0)
    assert gaps["before_first_measurement_s"] == 2.0
    assert gaps["between_measurements_s"] == 0.6  # 11.02 to 11.52, 12.0 to 12.1
    assert gaps["per_gap_ms"] == 300.0  # the median of 500 and 100 ms
    two_cores = _job_records(tmp_path / "two", [("measure", 1, 10.0, 12.0), ("measure", 2, 11.0, 13.0),
                                                ("measure", 3, 14.0, 15.0), ("measure", 4, 14.2, 14.5)])
    gaps = measurement_gaps(two_cores, t0=9.5)
    assert gaps == {"before_first_measurement_s": 0.5, "between_measurements_s": 1.0, "per_gap_ms": None}
    assert measurement_gaps(_job_records(tmp_path / "none", [("energy", 1, 1.0, 2.0)]), t0=0.0) == {}
