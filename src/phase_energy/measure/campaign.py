"""A measurement campaign in time-limited runs that resume where the last one stopped.

Each run measures the points still missing, in a chosen order, and stops cleanly before its time is up;
finished traces are copied into a reference-data folder.

Every run is the workflow itself (``snakemake --cores 1 --resources gpu=1 ... traces``) for the points not
measured in groups (below); this module only seeds the run's measured traces (``<results>/traces``,
``results`` the config's folder) with what the reference folder already holds (so those points are not
measured again), runs the chunks in order until the time budget is spent, and copies back every point whose
``status.json`` exists (a trace is complete once its status is written).

With ``group_engines`` (the CLI's ``--group-engines``, ``native,vllm`` by default, ``none`` for no groups),
the missing points of those engines are measured in groups instead: one ``phase-energy measure --points ...``
process per lever and repetition, and for vLLM per preset (:mod:`phase_energy.measure.group`: one vLLM engine
for a preset's points, instead of one engine start per point; one import of torch and its compiler for all
native points), with the time left as its limit, into the same measured folder and logs; the other points go
through the workflow as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phase_energy.grid import ENGINES, GridPoint

log = logging.getLogger(__name__)

POINT_GLOB = GridPoint.GLOB


def measured_folder(cfg: dict) -> Path:
    """Where the workflow measures traces for ``cfg``: ``<results>/traces``."""
    return Path(cfg["results"].rstrip("/")) / "traces"


def measure_logs(cfg: dict) -> Path:
    """The measure rule's logs for ``cfg``, one per point."""
    from phase_energy.config import logs_folder

    return Path(logs_folder(cfg["results"])) / "measure"


def point_dirs(root: Path) -> list[Path]:
    """Point folders under ``root`` (relative) whose trace is complete (status.json written)."""
    if not root.is_dir():
        return []
    return sorted(p.parent.relative_to(root) for p in root.glob(f"{POINT_GLOB}/status.json"))


def copy_points(src: Path, dst: Path) -> list[Path]:
    """Copy complete points of ``src`` that ``dst`` lacks; return the points copied."""
    have = set(point_dirs(dst))
    copied = []
    for p in point_dirs(src):
        if p in have:
            continue
        target = dst / p
        tmp = target.with_name(target.name + ".part")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src / p, tmp)
        tmp.rename(target)
        copied.append(p)
    return copied


def without_trace(since: float, measured: Path, logs: Path) -> dict[str, str]:
    """Points whose job wrote its log after ``since`` but left no trace: point -> last line of its log."""
    out = {}
    for path in sorted(logs.glob(f"{POINT_GLOB}.log")):
        if path.stat().st_mtime < since:
            continue
        point = str(path.relative_to(logs).with_suffix(""))
        if (measured / point / "status.json").exists():
            continue
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        out[point] = lines[-1][:300] if lines else "(empty log)"
    return out


@dataclass
class CampaignRun:
    """What one run did."""

    chunks_done: list[str] = field(default_factory=list)
    chunks_failed: list[str] = field(default_factory=list)
    stopped_in: str | None = None
    new_points: list[str] = field(default_factory=list)
    failed_points: dict[str, str] = field(default_factory=dict)  # point -> last line of its log
    interrupted: str | None = None  # the point the time limit stopped
    seconds: float = 0.0
    groups: list[dict] = field(default_factory=list)  # each group process: its points and exit status


def chunk_config(configfile: str, chunk: str) -> dict:
    """The validated config of one chunk: the config file with the chunk's ``key=value`` overrides."""
    import yaml

    from phase_energy.config import validate_config

    raw = yaml.safe_load(Path(configfile).read_text()) or {}
    try:
        items = shlex.split(chunk)
    except ValueError as e:  # an unbalanced quote
        raise ValueError(f"campaign chunk {chunk!r}: {e}; each override is key=value, one quoted where its value "
                         "holds spaces (e.g. \"'measurement={pause_s: 0.5}'\")") from None
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"campaign chunk {chunk!r}: {item!r} is not key=value (e.g. 'contexts=[2048]')")
        try:
            raw[key] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ValueError(f"campaign chunk {chunk!r}: the value of {key!r} is not valid YAML "
                             f"({getattr(e, 'problem', None) or e}): {value!r}; e.g. 'contexts=[512,2048]'") from None
    return validate_config(raw)


def run_points(cfg: dict, measured: set[Path]) -> list[GridPoint]:
    """The points one run measures: of each grid point, the lowest repetition not measured yet.

    Repetitions of a point thus land in different runs (other machines, other cards, another time), so
    that they show the spread a rerun shows, not that of back-to-back jobs.
    """
    from phase_energy.grid import expand_grid

    points, seen = [], set()
    for p in expand_grid(cfg):
        key = (p.engine, p.arch, p.batch, p.context, p.lever)
        if key in seen or Path(p.path) in measured:
            continue
        seen.add(key)  # the lowest missing repetition of this point, and no other in this run
        points.append(p)
    return points


def run_targets(cfg: dict, measured: set[Path]) -> list[str]:
    """The workflow targets (status files) of :func:`run_points`."""
    return [f"{measured_folder(cfg)}/{p.path}/status.json" for p in run_points(cfg, measured)]


def groups_of(points: list[GridPoint], engines: Sequence[str]) -> dict[tuple[str, str, str, int], list[GridPoint]]:
    """The points of ``engines``, by (engine, arch, lever, rep): each group one process, in the grid's order.

    A vLLM group is one preset (one engine serves it); the native engine builds each point's own, so its
    group holds every preset (arch ``""`` in the key) and the process imports torch and the compiler once.
    """
    out: dict[tuple[str, str, str, int], list[GridPoint]] = {}
    for p in points:
        if p.engine in engines:
            out.setdefault((p.engine, "" if p.engine == "native" else p.arch, p.lever, p.rep), []).append(p)
    return out


def group_config_file(cfg: dict) -> Path:
    """The measurement part of a chunk's config, as the workflow gives its jobs, for a group's process."""
    import json

    from phase_energy.config import MEASURE_KEYS, config_hash

    part = {k: cfg[k] for k in MEASURE_KEYS}
    path = Path(cfg["results"].rstrip("/")) / "campaign" / f"measure-{config_hash(part)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(part, indent=1, sort_keys=True))
    return path


def group_cmd(config: Path, points: list[GridPoint], measured: Path, logs: Path, time_limit_s: float) -> list[str]:
    """The ``phase-energy measure --points`` process of one group."""
    from phase_energy.measure.group import labels

    p = points[0]
    return [sys.executable, "-m", "phase_energy.cli", "measure", "--config", str(config), "--engine", p.engine,
            "--arch", p.arch, "--lever", p.lever, "--rep", str(p.rep),
            "--points", ",".join(labels(points)), "--out-root", str(measured),
            "--log-dir", str(logs), "--time-limit-s", f"{time_limit_s:.0f}"]


def snakemake_cmd(configfile: str, chunk: str, extra: list[str], targets: list[str]) -> list[str]:
    """The workflow run of one chunk: only the given measurement jobs, measured locally (``<results>/traces``)."""
    cfg = ["traces=results/traces", *shlex.split(chunk)]
    return [sys.executable, "-m", "snakemake", *targets, "--cores", "1", "--resources", "gpu=1",
            "--rerun-triggers", "mtime", "--keep-going", *extra, "--configfile", configfile, "--config", *cfg]


def _stop(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGINT first (snakemake stops its running jobs and marks them incomplete), then SIGKILL."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _wait_or_stop(proc: subprocess.Popen, timeout_s: float, what: str) -> bool:
    """Wait for ``proc`` at most ``timeout_s`` (1 s at least); past it stop it. Whether it was stopped."""
    try:
        proc.wait(max(timeout_s, 1.0))
        return False
    except subprocess.TimeoutExpired:
        log.warning("campaign: time is up inside %s; stopping it", what)
        _stop(proc, 15.0)
        return True


def run_groups(out: CampaignRun, groups: dict[tuple[str, str, str, int], list[GridPoint]], cfg: dict,
               measured: Path, into: Path, deadline: float) -> tuple[bool, bool, bool]:
    """Each group in a process of its own, within the time left; copy its points back.

    Returns (ok, time up, a group stopped from outside: its running point was interrupted). The points a
    group leaves for jobs of their own (``alone``: its shared engine cannot hold them, an earlier point left
    the GPU unusable in its process, or the process ended before reporting) are in its record, for the
    workflow.

    A group stops itself before a point it cannot finish in time (its ``--time-limit-s``); past the time left
    it is stopped as the workflow is.
    """
    import json

    config = group_config_file(cfg)
    logs = measure_logs(cfg)
    ok = True
    for (engine, arch, _, rep), points in groups.items():
        left = deadline - time.monotonic()
        presets = arch or "+".join(dict.fromkeys(p.arch for p in points))  # a native group's presets
        if len(presets) > 120:  # a file name stays short
            presets = f"{len(set(p.arch for p in points))}-presets"
        name = f"engine~{engine}-arch~{presets}-lever~{points[0].setting.slug}-rep~{rep}"
        summary = logs.parent / "campaign" / f"{name}.json"
        summary.parent.mkdir(parents=True, exist_ok=True)
        cmd = group_cmd(config, points, measured, logs, left - 20.0)
        log.info("campaign: group %s (%.0f s left): %d points in one process", name, left, len(points))
        with open(summary, "w") as fout, open(summary.with_suffix(".log"), "w") as ferr:
            proc = subprocess.Popen(cmd, stdout=fout, stderr=ferr, start_new_session=True)
            try:
                stopped = _wait_or_stop(proc, left - 10.0, f"group {name}")
            finally:
                out.new_points += [str(p) for p in copy_points(measured, into)]
        lines = summary.read_text().splitlines() if summary.exists() else []  # vLLM may print there too
        done: dict[str, Any] = next((json.loads(ln) for ln in reversed(lines) if ln.startswith('{"measured"')), {})
        # no summary line: the process itself ended early (an error before or around its points, not one
        # point's failure, which it reports and exits 1 for)
        crashed = not stopped and not done and proc.returncode != 0
        record = {"group": name, "points": [p.path for p in points], "returncode": proc.returncode,
                  "crashed": crashed, **{k: done.get(k) for k in ("not_started", "alone", "engine_start_s")}}
        if crashed:  # its points without a trace are not lost for this run: each gets a job of its own
            with contextlib.suppress(ProcessLookupError, PermissionError):  # and what it started (vLLM's
                os.killpg(proc.pid, signal.SIGKILL)  # engine process, say) lets go of the GPU first
            record["alone"] = {p.path: f"its group {name} ended before reporting its points" for p in points
                               if not (measured / p.path / "status.json").exists()}
        out.groups.append(record)
        if crashed or proc.returncode not in (0, 1):  # 1 with a summary: a point failed (its log says why)
            log.error("campaign: group %s ended with exit status %s%s (see %s)", name, proc.returncode,
                      " before reporting its points" if crashed else "", summary.with_suffix(".log"))
        ok = ok and proc.returncode == 0
        if stopped or done.get("not_started"):  # stopped, or stopped itself before the time limit
            return ok, True, stopped
    return ok, False, False


def run(configfile: str, chunks: list[str], into: Path, time_limit_s: float, min_chunk_s: float = 30.0,
        extra: list[str] | None = None, group_engines: Sequence[str] = ()) -> CampaignRun:
    """Seed, run the chunks in order within ``time_limit_s``, copy finished points into ``into``.

    The missing points of ``group_engines`` are measured in groups (one process per lever and repetition, and
    for vLLM per preset) before the chunk's workflow run measures the others.
    """
    from phase_energy.measure.job import slurm_sets_clock

    bad = [e for e in group_engines if e not in ENGINES]
    if bad:
        raise ValueError(f"campaign: group engines {bad} are not accepted; accepted: {', '.join(ENGINES)}")
    t0 = time.monotonic()
    wall0 = time.time() - 1.0  # log mtimes are wall-clock (1 s slack for coarse file-system stamps)
    into.mkdir(parents=True, exist_ok=True)
    log.info("campaign: %d points already in %s", len(point_dirs(into)), into)
    out = CampaignRun()
    folders: dict[Path, Path] = {}  # measured traces -> their logs, of every chunk that ran
    killed = False  # a group or workflow run stopped from outside at the time limit (its running point interrupted)
    since = wall0  # when the last group or workflow run started (wall-clock, as log times)
    waiting: set[str] = set()  # points their group left for a job of their own, not yet given to the workflow
    # every chunk's overrides checked before anything runs, not hours later
    configs = [chunk_config(configfile, chunk) for chunk in chunks or [""]]
    for chunk, cfg in zip(chunks or [""], configs, strict=True):
        left = time_limit_s - (time.monotonic() - t0)
        if left < min_chunk_s:
            out.stopped_in = chunk
            log.info("campaign: %.0f s left, stopping before chunk %r", left, chunk)
            break
        measured = measured_folder(cfg)
        if measured not in folders:  # seed it: points the reference folder holds are not measured again
            measured.mkdir(parents=True, exist_ok=True)
            copy_points(into, measured)
            folders[measured] = measure_logs(cfg)
        points = run_points(cfg, set(point_dirs(into)))
        # a clock that SLURM is to lock (sbatch --gpu-freq) is set for a workflow job only, never in a group
        groups = groups_of([p for p in points if not slurm_sets_clock(cfg, p)], group_engines)
        grouped = {p.path for ps in groups.values() for p in ps}
        groups_ok = True
        if groups:
            ran = len(out.groups)
            since = time.time() - 1.0  # a point this stops from outside has a newer log
            groups_ok, time_up, killed = run_groups(out, groups, cfg, measured, into, t0 + time_limit_s)
            # a point its group left (its shared engine could not hold it, the GPU or the process broke) is
            # measured as a job of its own
            alone = {path for g in out.groups[ran:] for path in (g.get("alone") or {})}
            waiting |= alone
            if time_up:
                out.stopped_in = chunk
                break
            if alone:
                log.info("campaign: %d points left by their groups go to jobs of their own: %s", len(alone),
                         ", ".join(sorted(alone)))
            points = [p for p in points if p.path not in grouped or p.path in alone]
        if not points:
            log.info("campaign: chunk %r has nothing left for the workflow", chunk)
            (out.chunks_done if groups_ok else out.chunks_failed).append(chunk)
            continue
        targets = [f"{measured}/{p.path}/status.json" for p in points]
        left = time_limit_s - (time.monotonic() - t0)
        if left < min_chunk_s:  # the points left by their groups wait for a later run (they have not failed)
            out.stopped_in = chunk
            log.info("campaign: %.0f s left, stopping before the workflow's %d points of chunk %r", left,
                     len(points), chunk)
            break
        cmd = snakemake_cmd(configfile, chunk, extra or [], targets)
        log.info("campaign: chunk %r (%.0f s left): %d points, %s ...", chunk, left, len(targets), " ".join(cmd[:8]))
        since = time.time() - 1.0
        proc = subprocess.Popen(cmd, start_new_session=True)
        waiting -= {p.path for p in points}
        try:
            killed = _wait_or_stop(proc, left - 20.0, f"chunk {chunk!r} (the workflow)")
        finally:
            out.new_points += [str(p) for p in copy_points(measured, into)]
        if killed:
            out.stopped_in = chunk
            break
        if proc.returncode == 0 and groups_ok:
            out.chunks_done.append(chunk)
        elif proc.returncode == 0:
            out.chunks_failed.append(chunk)
        else:
            log.error("campaign: chunk %r ended with exit status %d (see the snakemake log)", chunk, proc.returncode)
            out.chunks_failed.append(chunk)
    latest: dict[str, float] = {}  # point -> its log's time
    for measured, logs in folders.items():
        # a point left by its group whose own job did not run yet has not failed: a later run measures it
        failed = {k: v for k, v in without_trace(wall0, measured, logs).items() if k not in waiting}
        out.failed_points.update(failed)
        latest.update({p: (logs / f"{p}.log").stat().st_mtime for p in failed})
    # the job the time limit stopped is the newest log of the process stopped (a group that stopped itself for
    # time interrupted none); a point that failed before that process started is not it
    stopped_ones = [p for p in out.failed_points if latest[p] >= since]
    if killed and stopped_ones:
        newest = max(stopped_ones, key=latest.__getitem__)
        out.interrupted = newest
        del out.failed_points[newest]
    for point, last in out.failed_points.items():
        log.error("campaign: %s failed and left no trace; its log ends: %s", point, last)
    if waiting:
        log.info("campaign: left by their groups for jobs of their own, in a later run: %s",
                 ", ".join(sorted(waiting)))
    out.seconds = time.monotonic() - t0
    log.info("campaign: %d new points in %.0f s; chunks done: %s", len(out.new_points), out.seconds,
             out.chunks_done)
    return out
