"""What a person running the workflow sees: points done, skipped and why, time left, table and figure jobs, a summary.

:class:`Progress` follows the jobs Snakemake starts, finishes and loses, and reads each finished
measurement's ``status.json``; the logger plugin (``snakemake --logger phase-energy``, on in the local
profile) feeds it Snakemake's log events and prints what it returns. Standard library only: Snakemake
imports the plugin whenever it starts.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

MEASURE_RULES = ("measure", "clear_measure")
TARGET_RULES = ("all", "traces", "figures")  # the workflow's targets: no outputs, no work of their own
SETUP_RULES = ("config_file",)  # each run's config parts, written before any measurement
ETA_AFTER = 5  # points done before a rate and a time left are given
BACKEND_NEWS = {"sim": "the jobs run on the SIMULATED backend (no GPU here): every result says so",
                "nvml": "the jobs measure a real GPU (NVML)"}
RESULTS_ENV = "PHASE_ENERGY_RESULTS"  # the run's results folder, set by the workflow while it parses
REPORT_ENV = "PHASE_ENERGY_REPORT"  # the command that builds the run's report, set with it


def set_results_folder(results: str, report: str | None = None) -> None:
    """Tell the console where this run's results go and how its report is built (the workflow, as it parses)."""
    os.environ[RESULTS_ENV] = results
    os.environ[REPORT_ENV] = report or report_command(results)


def report_command(results: str, configfiles: Iterable[str] = (), overrides: Mapping[str, object] | None = None
                   ) -> str:
    """The command that builds a run's HTML report: the run's config files and ``--config`` values again.

    A results folder belongs to one run's config files and traces (``run.json``), so the report of a run
    with its own needs them said again; its report goes into its results folder.
    """
    import shlex

    out = "report.html" if results == "results" else f"{results}/report.html"
    argv = ["snakemake", "--cores", "1", "--report", out]
    if configfiles:
        argv += ["--configfile", *configfiles]
    if overrides:
        argv += ["--config", *(f"{k}={_config_value(v)}" for k, v in overrides.items())]
    return shlex.join(argv)


def _config_value(value: object) -> str:
    """A ``--config`` value written so that Snakemake reads it back as it was.

    A number, True/False, nothing for None, a string as it is, a list or mapping in YAML's flow style (JSON
    is YAML).
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) else json.dumps(value)


def _results() -> str:
    """The run's results folder (config key ``results``), as the workflow set it."""
    return os.environ.get(RESULTS_ENV, "results").rstrip("/") or "results"


def analysis_outputs() -> tuple[str, ...]:
    """Where this run's tables, claims and figures go (config key ``results``)."""
    results = _results()
    figures = "figures/" if results == "results" else f"{results}/figures/"
    return f"{results}/tables/", f"{results}/claims.csv", figures


def duration(seconds: float) -> str:
    """``95`` -> ``1 min 35 s``; ``7`` -> ``7 s``."""
    s = round(max(seconds, 0.0))
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s} s"
    h, m = divmod(m, 60)
    return f"{h} h {m} min"


def skip_kind(reason: str) -> str:
    """The kind of a skip reason: the words before its first colon (``memory``, ``engine``, ...)."""
    return reason.split(":", 1)[0].strip() or "unknown"


def _counted(rule: str) -> bool:
    """Whether a rule's jobs are the analysis and figure jobs the console counts."""
    return rule not in MEASURE_RULES and rule not in TARGET_RULES and rule not in SETUP_RULES


def run_banner(points: int, backend: str, why: str, reasons: Iterable[str | None], traces: str,
               measured: str, traced: int = 0) -> str:
    """The line a run prints when it starts: what it will do, with which backend, and what it skips.

    ``reasons`` holds each grid point's skip reason (None for a point that runs). Cached traces (``traces`` is
    not the ``measured`` folder) are read, never measured. ``traced``: the points whose trace is there
    already (an earlier run's), which this run keeps.
    """
    if traces != measured:
        return f"phase-energy: {points} points read from {traces} (cached traces); nothing is measured"
    kinds = Counter(skip_kind(r) for r in reasons if r)
    skipped = sum(kinds.values())
    why_skipped = " (" + ", ".join(f"{k}: {n}" for k, n in kinds.most_common()) + ")" if skipped else ""
    if traced:  # what runs now is Snakemake's to say (the jobs counted above): a changed config measures again
        return (f"phase-energy: backend {backend} ({why}) - a grid of {points} points, {points - skipped} measured "
                f"on it and {skipped} skipped{why_skipped}; {traced} of their traces are in {measured} already "
                "(the measurement jobs counted above are those that run now)")
    text = f"phase-energy: backend {backend} ({why}) - {points - skipped} of {points} points to measure"
    if skipped:
        text += f", {skipped} skipped{why_skipped}"
    return text + f"; traces in {measured}"


def last_line(path: str | Path) -> str:
    """The last non-empty line of a log file (what a failed job said last), or why there is none."""
    try:
        lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError as e:
        return f"(log unreadable: {e.strerror or e})"
    return lines[-1][:300] if lines else "(empty log)"


@dataclass
class _Job:
    rule: str
    output: list[str]
    log: list[str]
    started: float


@dataclass
class Progress:
    """Counts of the run's measurement points and jobs, fed with Snakemake's job events."""

    clock: Callable[[], float] = time.monotonic
    every_s: float = 5.0  # at most one progress line this often (and one per 10 % of the points)
    eta_after: int = ETA_AFTER
    planned: Counter[str] = field(default_factory=Counter)
    running: dict[int, _Job] = field(default_factory=dict)
    measured: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (job, last log line)
    failed_points: int = 0
    done_rules: Counter[str] = field(default_factory=Counter)
    backends: set[str] = field(default_factory=set)
    t0: float | None = None
    first_measure: float | None = None
    _last_line: float = -1e9
    _last_decile: int = 0

    @property
    def points(self) -> int:
        """Measurement jobs of the run (points and CLEAR jobs)."""
        return sum(self.planned[r] for r in MEASURE_RULES)

    @property
    def other_jobs(self) -> int:
        """The run's analysis and figure jobs (every job but the measurements, the config parts and the targets)."""
        return sum(n for r, n in self.planned.items() if _counted(r))

    @property
    def points_done(self) -> int:
        """Measurement jobs ended so far (measured, skipped or failed)."""
        return self.measured + sum(self.skipped.values()) + self.failed_points

    def plan(self, counts: Mapping[str, int]) -> str:
        """The run's jobs per rule (Snakemake's job stats); a one-line banner."""
        self.planned = Counter({k: int(v) for k, v in counts.items() if k != "total"})
        self.t0 = self.clock()
        return (f"phase-energy: {self.points} measurement jobs to run, then {self.other_jobs} analysis and figure "
                "jobs; progress every few seconds, a summary at the end")

    def started(self, jobid: int, rule: str, output: Iterable[str], log: Iterable[str]) -> None:
        """A job started."""
        now = self.clock()
        if self.t0 is None:
            self.t0 = now
        if rule in MEASURE_RULES and self.first_measure is None:
            self.first_measure = now
        self.running[jobid] = _Job(rule, list(output), list(log), now)

    def _point_of(self, job: _Job) -> str:
        status = next((o for o in job.output if o.endswith("status.json")), job.output[0] if job.output else "?")
        parts = [p for p in Path(status).parent.parts if "~" in p]
        return "/".join(parts) if parts else status

    def finished(self, jobid: int) -> str | None:
        """A job ended well; a progress line when one is due."""
        job = self.running.pop(jobid, None)
        if job is None:
            return None
        self.done_rules[job.rule] += 1
        if job.rule not in MEASURE_RULES:
            return self._table_line(job)
        status_file = next((o for o in job.output if o.endswith("status.json")), None)
        status: dict = {}
        news = ""
        if status_file:
            try:
                status = json.loads(Path(status_file).read_text())
                backend = str(json.loads((Path(status_file).parent / "metadata.json").read_text()).get("backend"))
                if backend not in self.backends:
                    self.backends.add(backend)
                    news = BACKEND_NEWS.get(backend, f"the jobs run on the {backend} backend") + "\n"
            except (OSError, ValueError):
                status = {}
        if status.get("status") == "skipped":
            self.skipped[skip_kind(str(status.get("reason", "")))] += 1
        else:
            self.measured += 1
        line = self.progress_line()
        return news + line if line else news.strip() or None

    def _table_line(self, job: _Job) -> str | None:
        """``tables and figures: 4/11 jobs done (pareto, 2 s)`` for a job that ends after every measurement."""
        if not _counted(job.rule) or self.points_done < self.points:
            return None
        done = sum(n for r, n in self.done_rules.items() if _counted(r))
        took = self.clock() - job.started
        return (f"tables and figures: {done}/{self.other_jobs} jobs done "
                f"({job.rule}, {duration(took) if took >= 1 else 'under 1 s'})")

    def error(self, jobid: int, rule: str | None = None, log: Iterable[str] = ()) -> str:
        """A job failed; a line naming it and the last line of its log."""
        job = self.running.pop(jobid, None)
        logs = list(log) or (job.log if job else [])
        name = self._point_of(job) if job and job.rule in MEASURE_RULES else (job.rule if job else rule or "?")
        said = last_line(logs[0]) if logs else "(no log)"
        self.failed.append((name, said))
        if job is not None and job.rule in MEASURE_RULES:
            self.failed_points += 1
        return f"FAILED {name}: {said}" + (f"  (log: {logs[0]})" if logs else "")

    def progress_line(self, force: bool = False) -> str | None:
        """``measured 420/1680 points (24 skipped), 9.8 per s, about 2 min left`` when one is due."""
        total, done = self.points, self.points_done
        if not total:
            return None
        now = self.clock()
        decile = 10 * done // total
        if not force and now - self._last_line < self.every_s and decile == self._last_decile and done < total:
            return None
        self._last_line, self._last_decile = now, decile
        skipped = sum(self.skipped.values())
        text = f"measured {done}/{total} points" + (f" ({skipped} skipped)" if skipped else "")
        if self.failed:
            text += f", {len(self.failed)} failed"
        start = self.first_measure if self.first_measure is not None else now
        if done >= max(self.eta_after, total // 100) and now > start:  # the first jobs start workers: no rate yet
            rate = done / (now - start)
            text += f", {rate:.1f} per s"
            if done < total:
                text += f", about {duration((total - done) / rate)} left"
        return text

    def summary(self) -> str:
        """The end of the run on one screen: points measured, skipped and why, failed, where results are."""
        lines = ["", "phase-energy summary" + (f" ({duration(self.clock() - self.t0)})" if self.t0 else "")]
        kinds = ", ".join(f"{k}: {n}" for k, n in self.skipped.most_common())
        skipped = sum(self.skipped.values())
        other = len(self.failed) - self.failed_points
        if self.points:
            lines.append(f"  points: {self.measured} measured, {skipped} skipped" + (f" ({kinds})" if kinds else "")
                         + f", {self.failed_points} failed" + (f"; {other} other jobs failed" if other else ""))
        else:  # cached traces, or every trace there already: what each point holds is in the jobs table
            lines.append("  points: none measured in this run (its traces were there already); each point's "
                         f"status: {analysis_outputs()[0]}jobs.csv" + (f"; {other} jobs failed" if other else ""))
        if "sim" in self.backends:
            lines.append("  backend: SIMULATED (no GPU measured; tables, verdicts and figures say so)")
        for name, said in self.failed[:5]:
            lines.append(f"  failed {name}: {said}")
        if len(self.failed) > 5:
            from phase_energy.config import logs_folder

            results = _results()
            lines.append(f"  ... and {len(self.failed) - 5} more failures ({logs_folder(results)}/)")
        if skipped:
            lines.append("  skipped points have a status record with the reason "
                         f"({analysis_outputs()[0]}jobs.csv)")
        made = [o for o in analysis_outputs() if Path(o.rstrip("/")).exists()]
        if made:
            lines.append("  results: " + ", ".join(made) + "; report: "
                         + (os.environ.get(REPORT_ENV) or report_command(_results())))
        return "\n".join(lines)
