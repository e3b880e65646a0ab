"""Snakemake logger plugin ``phase-energy``: a console a person can follow (``snakemake --logger phase-energy``).

Instead of a block of text per job, the console shows a banner, a line of progress every few seconds
(points measured of the total, skipped, failed, the rate and the time left), then a line for each table and
figure job as it ends (done of the total, how long it took), each failure with the last line of its log,
Snakemake's warnings and errors, and a summary at the end. The local profile turns it on.
The counting lives in :mod:`phase_energy.report.progress`; this module only adapts Snakemake's events.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.common import LogEvent

from phase_energy.report.progress import Progress

# Snakemake's own lines that a per-job console repeats thousands of times
QUIET = ("Select jobs to execute", "Execute ", "Waiting for", "Using shell", "Provided cores",
         "Rules claiming more threads", "Assuming unrestricted shared filesystem", "Building DAG",
         "Job stats:", "Complete log", "Finished jobid")


class LogHandler(LogHandlerBase):
    """Writes the console (stderr; stdout for a dry run, as Snakemake does); job events go to a :class:`Progress`."""

    def __post_init__(self) -> None:
        self.progress = Progress()
        self.stream = sys.stdout if self.common_settings.stdout else sys.stderr  # a dry run prints to stdout
        self.summarised = False
        self.measured_all = False

    # the plugin interface's declarations
    @property
    def writes_to_stream(self) -> bool:
        """It is the console."""
        return True

    @property
    def writes_to_file(self) -> bool:
        """No file of its own (Snakemake still writes its log under .snakemake/log)."""
        return False

    @property
    def has_filter(self) -> bool:
        """It decides itself what to show."""
        return True

    @property
    def has_formatter(self) -> bool:
        """It formats itself."""
        return True

    @property
    def needs_rulegraph(self) -> bool:
        """No rule graph needed."""
        return False

    def say(self, text: str | None) -> None:
        """Print a line (or nothing)."""
        if text:
            print(text, file=self.stream, flush=True)

    def emit(self, record: logging.LogRecord) -> None:
        """One of Snakemake's log records."""
        event: Any = getattr(record, "event", None)
        p = self.progress
        if event == LogEvent.RUN_INFO:
            self.say(record.getMessage())  # the table of jobs per rule
            stats = getattr(record, "stats", {}) or {}
            if not self.common_settings.dryrun:
                self.say(p.plan(stats))
        elif event == LogEvent.JOB_INFO:
            p.started(int(record.jobid), str(record.rule_name), record.output or [], record.log or [])  # type: ignore[attr-defined]
        elif event == LogEvent.JOB_FINISHED:
            self.say(p.finished(int(record.job_id)))  # type: ignore[attr-defined]
            if p.points and p.points_done == p.points and not self.measured_all:
                self.measured_all = True
                self.say("measurements done; now the tables, the claims and the figures")
        elif event == LogEvent.JOB_ERROR:
            self.say(p.error(int(record.jobid), str(record.rule_name), record.log or []))  # type: ignore[attr-defined]
        elif event in (LogEvent.PROGRESS, LogEvent.SHELLCMD, LogEvent.JOB_STARTED, LogEvent.DEBUG_DAG,
                       LogEvent.RULEGRAPH, LogEvent.GROUP_INFO, LogEvent.RESOURCES_INFO,
                       LogEvent.WORKFLOW_STARTED):
            if event == LogEvent.PROGRESS and record.done == record.total:  # type: ignore[attr-defined]
                self.finish()
        elif record.levelno >= logging.WARNING:
            self.say(record.getMessage())
        elif event is None:
            message = record.getMessage()
            if message and not message.lstrip().startswith(QUIET):
                self.say(message)

    def finish(self) -> None:
        """The summary, once."""
        if not self.summarised and not self.common_settings.dryrun and self.progress.t0 is not None:
            self.summarised = True
            self.say(self.progress.summary())

    def close(self) -> None:
        """At the end of the run: the summary if the last job did not bring it (a failed run)."""
        self.finish()
        super().close()
