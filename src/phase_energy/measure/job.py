"""One measurement job: open the backend, build the engine, apply the lever, run the protocol, write the trace.

The same code runs on the simulated card and on a real one: :func:`~phase_energy.measure.backend.open_backend`
gives the device and its meter, :class:`~phase_energy.measure.levers.LeverControl` applies and restores the
lever through the device's setters (journalled only on a real card), the engine is the point's (native or
vLLM; on the simulator, its simulation).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from phase_energy.config import checkpoint_of, config_hash
from phase_energy.engines.compiler import start_compile_prefetch
from phase_energy.engines.vllm import DoesNotFit, VllmEngine, VllmSettings, VllmWorkload, max_model_len
from phase_energy.grid import PHASES, GridPoint
from phase_energy.measure.backend import Backend, open_backend, resolve_backend
from phase_energy.measure.levers import Applied, LeverControl, MultiLeverControl
from phase_energy.measure.phase_switch import PhaseSwitch
from phase_energy.measure.protocol import Settings, Window, Workload, forward_positions, run_protocol
from phase_energy.measure.summary import CLOCK_TOLERANCE, summarise_windows, summary_stamp
from phase_energy.measure.trace import SAMPLE_COLUMNS, WINDOW_COLUMNS, empty_frame, provenance, utc_now, write_trace
from phase_energy.model.checkpoint import vllm_cannot_load
from phase_energy.model.costmodel import cost_model
from phase_energy.model.hfconfig import vllm_unsupported
from phase_energy.model.presets import get_preset

log = logging.getLogger(__name__)
PROCESS_START = time.monotonic()


class JobParts:
    """Where a real card's job spends its time before its first window: consecutive spans, in seconds.

    Each :meth:`mark` closes the span from the mark before (or from ``origin``, the job module's import at the
    process start) to its time, so the spans add up to the last mark: the first window's start, which makes
    their sum the trace's ``time_to_first_window_s``. Its ``spans`` are the metadata's ``job_parts``.
    """

    def __init__(self, origin: float = PROCESS_START):
        self.spans: dict[str, float] = {}
        self._last = origin

    def mark(self, name: str, at: float | None = None) -> None:
        """Close the span ``name`` at ``at`` (time.monotonic(); default now)."""
        at = time.monotonic() if at is None else at
        self.spans[name] = at - self._last
        self._last = at

    def close(self, meter_origin: float, marks: Mapping[str, float], first_window_s: float) -> None:
        """The spans inside the protocol, from the meter's origin and the protocol's marks (meter time).

        ``lever_and_sampler_s`` (lever applied, sampler started), ``idle_window_s`` (the idle baseline, to the
        warm-up), ``warmup_s`` (the engine's warm-up: compile, capture, warm-up runs) and ``lead_in_s`` (the
        same work run before the first window opens, and its synchronisation).
        """
        self.mark("lever_and_sampler_s", meter_origin)
        if "warmup_start_s" in marks:
            self.mark("idle_window_s", meter_origin + marks["warmup_start_s"])
            self.mark("warmup_s", meter_origin + marks["warmup_end_s"])
        self.mark("lead_in_s", meter_origin + first_window_s)


def point_seed(cfg: Mapping[str, Any], point: GridPoint) -> int:
    """A seed per point, stable across runs and machines."""
    return (cfg["seed"] * 1_000_003 + zlib.crc32(point.path.encode())) % (2**32)


def job_settings(cfg: Mapping[str, Any], point: GridPoint) -> Settings:
    """The protocol's settings for a point: the config's ``measurement`` section, outputs and clock lock."""
    lever = point.setting
    return Settings.from_config(cfg["measurement"], max_output=max(cfg["output_lengths"]),
                                locked_sm_clock_mhz=lever.value if lever.kind == "smclock" else None)


def point_skip_reason(cfg: Mapping[str, Any], point: GridPoint, backend: str) -> str | None:
    """Why a point cannot run (engine support, memory budget, lever not permitted), or None when it can."""
    arch = get_preset(point.arch)
    if point.engine == "vllm":
        ckpt = checkpoint_of(cfg, point.arch)
        why = vllm_unsupported(arch, cfg["vllm"]["attention_backend"]) or \
            (vllm_cannot_load(ckpt.folder) if ckpt is not None else None)
        if why:
            return f"engine: {why}"
    if arch.gpus > 1 and point.engine != "vllm":
        return (f"engine: {point.arch} runs on gpus={arch.gpus} (tensor parallel) and the {point.engine} engine runs "
                "on one GPU; accepted: engine vllm for it")
    if arch.gpus > 1 and backend == "sim":
        return (f"backend: the simulator models one GPU and {point.arch} runs on gpus={arch.gpus}; accepted: "
                "backend nvml on a node with that many GPUs")
    model = cost_model(arch, engine=point.engine)  # per GPU on several
    positions = max(cfg["output_lengths"])
    if point.engine == "vllm":  # a serving engine's decode positions only move forward: lead-in and windows too
        positions = forward_positions(job_settings(cfg, point), model, point.batch, point.context)
    need = model.memory_bytes(point.batch, point.context, positions)
    budget = cfg["gpu"]["memory_budget_gb"] * 1e9
    if need > budget:
        per = f" per GPU of {arch.gpus}" if arch.gpus > 1 else ""
        return (
            f"memory: needs {need / 1e9:.1f} GB{per} (weights {model.model_bytes / arch.gpus / 1e9:.1f} GB + cache "
            f"and activations{model.layout_note}) > gpu.memory_budget_gb={cfg['gpu']['memory_budget_gb']}"
        )
    if backend == "nvml" and point.setting.kind != "default" and not cfg["allow_gpu_settings"] \
            and not slurm_sets_clock(cfg, point):
        return (
            f"lever not permitted: {point.lever!r} changes the GPU's settings and allow_gpu_settings is "
            "false; set allow_gpu_settings: true on a GPU you may reconfigure, or use backend: sim"
        )
    return None


def slurm_sets_clock(cfg: Mapping[str, Any], point: GridPoint) -> bool:
    """True when the cluster applies the point's SM clock (``sbatch --gpu-freq``) and the job only records it."""
    return point.setting.kind == "smclock" and bool(cfg["cluster"]["gpu_freq_for_smclock"])


CLOCK_STEP_MHZ = 15  # the SM clocks an H100/H200 supports lie 15 MHz apart; SLURM rounds a request up to one


def check_slurm_clock(point: GridPoint, windows: pd.DataFrame, per_gpu: pd.DataFrame | None = None) -> None:
    """Raise if the clock SLURM was to lock did not hold: the windows' SM clock above the point's lock.

    A lock caps the clock; a clock above it (by more than the 2 % tolerance and the one step SLURM may round
    a request up) means nothing set it (the job did not run as a SLURM step with ``--gpu-freq``: a campaign's
    group, a local run), and the trace would be an unlocked one under the point's name. With several GPUs
    (``per_gpu``), each GPU's clock.
    """
    lock = point.setting.value
    table = windows if per_gpu is None else per_gpu
    measured = table[table["phase"].isin(("prefill", "decode"))]
    if lock is None or measured.empty:
        return
    by_gpu = measured.groupby("gpu")["sm_clock_mhz"].median() if "gpu" in measured else \
        pd.Series([measured["sm_clock_mhz"].median()])
    if by_gpu.isna().any():
        log.warning("%s: the SM clock was not read in its windows; SLURM's lock cannot be checked", point.lever)
    sm = float(by_gpu.max())
    if sm > lock * (1 + CLOCK_TOLERANCE) + CLOCK_STEP_MHZ:
        raise RuntimeError(
            f"{point.lever}: cluster.gpu_freq_for_smclock says SLURM locks this clock (sbatch --gpu-freq), but the "
            f"SM clock ran at {sm:.0f} MHz, above the {lock} MHz lock: nothing locked it. Measure this point as a "
            "SLURM job (snakemake --profile profiles/slurm), or set cluster.gpu_freq_for_smclock: false with "
            "allow_gpu_settings: true to lock it here; no trace was written")


def metadata(cfg: Mapping[str, Any], point: GridPoint, backend: str, gpu: Mapping[str, Any],
             enforced: Mapping[str, Any], started: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The trace's metadata.json (validated against the metadata schema when written)."""
    arch = get_preset(point.arch)
    prov = provenance()
    ckpt = checkpoint_of(cfg, point.arch)
    weights = ckpt.metadata() if ckpt is not None else \
        {"source": "random", "init": "normal" if point.engine == "native" else "dummy"}
    return {
        "format_version": 1,
        "arch": point.arch,
        "paradigm": arch.paradigm,
        "batch": point.batch,
        "context": point.context,
        "max_output": max(cfg["output_lengths"]),
        "rep": point.rep,
        "lever_requested": point.lever,
        "lever_enforced": dict(enforced),
        "backend": backend,
        "engine": point.engine,
        "gpu": dict(gpu),
        "cost": cost_model(arch, engine=point.engine).summary(),
        "versions": prov["versions"],
        "git_commit": prov["git_commit"],
        "host": prov["host"],
        "config_hash": config_hash(cfg),
        "started_at": started,
        "finished_at": utc_now(),
        "seed": cfg["seed"],
        "weights": weights,
        "measurement": dict(cfg["measurement"]),  # the protocol's settings, defaults filled in
        **({"gpus": arch.gpus} if arch.gpus > 1 else {}),  # a one-GPU trace's metadata stays as it was
        **(extra or {}),
    }


def write_skipped(cfg: Mapping[str, Any], point: GridPoint, out_dir: Path, backend: str, reason: str) -> None:
    """A status record (and empty tables) for a point that cannot run, so downstream sees the whole grid."""
    log.warning("skipping %s: %s", point.path, reason)
    meta = metadata(cfg, point, backend, {"name": "not measured"},
                    {"power_limit_w": None, "locked_sm_clock_mhz": None}, utc_now(), {"status": "skipped"})
    write_trace(out_dir, empty_frame(SAMPLE_COLUMNS), empty_frame(WINDOW_COLUMNS), meta,
                {"status": "skipped", "reason": reason})


def _vllm_positions(point: GridPoint, settings: Settings) -> int:
    """The cache positions the protocol steps ``point`` through on vLLM."""
    return forward_positions(settings, cost_model(get_preset(point.arch), engine="vllm"), point.batch, point.context)


def vllm_engine(cfg: Mapping[str, Any], points: list[GridPoint]) -> VllmEngine:
    """One vLLM engine for ``points`` of one preset (a job's: its one point).

    Sized for all of them: the largest ``max_model_len`` any needs, each batch captured, ``max_num_seqs`` the
    largest batch.
    """
    vs = VllmSettings.from_config(cfg["vllm"])
    mml = max(max_model_len(p.context, _vllm_positions(p, job_settings(cfg, p)), p.batch, vs.chunk_tokens)
              for p in points)
    return VllmEngine(points[0].arch, max_num_seqs=max(p.batch for p in points), max_model_len=mml,
                      capture_sizes=[p.batch for p in points], settings=vs, seed=cfg["seed"],
                      checkpoint=checkpoint_of(cfg, points[0].arch))


def vllm_workload(cfg: Mapping[str, Any], engine: VllmEngine, point: GridPoint, settings: Settings) -> VllmWorkload:
    """``point`` on a started vLLM engine (raises :class:`DoesNotFit` when its KV cache cannot hold it)."""
    return VllmWorkload(engine, point.batch, point.context, settings.max_output, seed=cfg["seed"],
                        positions=_vllm_positions(point, settings))


def build_workload(cfg: Mapping[str, Any], point: GridPoint, settings: Settings, backend: Backend) -> Workload:
    """The point's engine on the backend: its simulation on ``sim``, the native or vLLM engine on GPU 0.

    vLLM raises :class:`~phase_energy.engines.vllm.DoesNotFit` when its KV cache cannot hold the point.
    """
    if backend.simulated:
        from phase_energy.measure.sim_workload import SimWorkload

        return SimWorkload(backend.device, get_preset(point.arch), point.batch, point.context, engine=point.engine)
    if point.engine == "vllm":
        return vllm_workload(cfg, vllm_engine(cfg, [point]), point, settings)
    from phase_energy.engines.native.runner import EngineWorkload

    return EngineWorkload(point.arch, point.batch, point.context, settings.max_output, seed=cfg["seed"],
                          checkpoint=checkpoint_of(cfg, point.arch))


def _first_window(meter: Any, raw: list[Window], origin: float, simulated: bool, parts: JobParts | None,
                  marks: Mapping[str, float]) -> float:
    """t(first window) from ``origin`` (NaN on the simulated card, whose clock is virtual); closes ``parts``."""
    first = min((w.start_s for w in raw if w.phase != "idle"), default=float("nan"))
    if simulated:
        return float("nan")
    meter_origin = getattr(meter, "origin", origin)
    if parts is not None and first == first:
        parts.close(meter_origin, marks, first)
    return meter_origin - origin + first


def measure_with_lever(backend: Backend, lever: str, allow_gpu_settings: bool, workload: Workload,
                       settings: Settings, journal_dir: Path | None = None, origin: float = PROCESS_START,
                       parts: JobParts | None = None) -> tuple[pd.DataFrame, pd.DataFrame, Applied, float]:
    """Apply the lever, sample, run the protocol, restore; return samples, windows, lever record, t(first window).

    One GPU only; a job on several goes through :func:`measure_on_gpus`.

    The lever is restored whatever happens inside (exception, SIGTERM, SIGINT, exit); the sampler is
    stopped before the restore so its thread never outlives the job. ``t(first window)`` counts from
    ``origin`` (the process start for a job) on a real card; on the simulated one it is NaN (its clock is
    virtual). ``parts`` (a real card's job) gets the spans from here to the first window.
    """
    control = LeverControl(backend.device, lever, allow_gpu_settings, journal_dir=journal_dir)
    marks: dict[str, float] = {}
    with control as applied:
        meter = backend.meter(settings.sampling_period_ms / 1000.0)
        # a phase lever switches its setting at each phase boundary through the same control
        switch = PhaseSwitch(control, backend.device, settings.switch_timeout_s) \
            if control.lever.kind == "phase" else None
        try:
            raw: list[Window] = run_protocol(meter, workload, settings, switch,
                                             marks=marks if parts is not None else None)
        finally:
            samples = meter.stop()
        t_first = _first_window(meter, raw, origin, backend.simulated, parts, marks)
    return samples, summarise_windows(samples, raw, settings), applied, t_first


def measure_on_gpus(backend: Backend, lever: str, allow_gpu_settings: bool, workload: Workload,
                    settings: Settings, journal_dir: Path | None = None, origin: float = PROCESS_START,
                    parts: JobParts | None = None
                    ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None, list[Applied], float]:
    """:func:`measure_with_lever` on the backend's GPUs, one or several.

    Returns samples, the job's windows, the per-GPU windows (None on one GPU), each GPU's lever record and
    t(first window). On several GPUs the lever is applied to each, with a journal each, and restored on all.
    """
    if backend.gpus == 1:
        samples, windows, applied, t_first = measure_with_lever(backend, lever, allow_gpu_settings, workload,
                                                                settings, journal_dir, origin, parts)
        return samples, windows, None, [applied], t_first
    from phase_energy.measure.multigpu import summarise_multi

    if lever.startswith("phase:"):
        raise ValueError(f"lever {lever!r}: a phase lever runs on one GPU; a point on {backend.gpus} GPUs accepts "
                         "default, powercap:<W> or smclock:<MHz>")
    marks: dict[str, float] = {}
    with MultiLeverControl(backend.devices, lever, allow_gpu_settings, journal_dir=journal_dir) as applied_all:
        meter = backend.meter(settings.sampling_period_ms / 1000.0)
        try:
            raw: list[Window] = run_protocol(meter, workload, settings, marks=marks if parts is not None else None)
        finally:
            samples = meter.stop()
        t_first = _first_window(meter, raw, origin, backend.simulated, parts, marks)
    windows, per_gpu = summarise_multi(samples, raw, settings)
    return samples, windows, per_gpu, applied_all, t_first


def measure_point(cfg: Mapping[str, Any], point: GridPoint, out: Path, backend: Backend, workload: Workload,
                  settings: Settings, gpu: Mapping[str, Any], started: str, origin: float = PROCESS_START,
                  extra: Mapping[str, Any] | None = None, parts: JobParts | None = None) -> None:
    """Run the protocol of one point on a built workload and write its trace.

    ``parts`` (a real card's job): the spans so far; the protocol's are added and the whole goes to the
    metadata as ``job_parts``.
    """
    lever, applied_by = point.lever, backend.name
    if not backend.simulated and slurm_sets_clock(cfg, point):
        lever, applied_by = "default", "slurm --gpu-freq"  # slurmstepd set it; we only record
    allow = backend.simulated or cfg["allow_gpu_settings"]  # a simulated card may always be reconfigured
    samples, windows, per_gpu, applied_all, t_first = measure_on_gpus(backend, lever, allow, workload, settings,
                                                                      origin=origin, parts=parts)
    if applied_by == "slurm --gpu-freq":
        check_slurm_clock(point, windows, per_gpu)
    if parts is not None:
        extra = {**(extra or {}), "job_parts": parts.spans}
    applied = applied_all[0]
    enforced: dict[str, Any] = {"power_limit_w": applied.power_limit_w,
                                "locked_sm_clock_mhz": applied.locked_sm_clock_mhz,
                                "applied_by": applied_by}
    if point.setting.kind == "phase":  # no one lock holds throughout: each phase's setting instead
        enforced.update(locked_sm_clock_mhz=None, phases={p: str(point.setting.for_phase(p)) for p in PHASES})
    if len(applied_all) > 1:  # every GPU's own record
        enforced["per_gpu"] = [{"power_limit_w": a.power_limit_w, "locked_sm_clock_mhz": a.locked_sm_clock_mhz}
                               for a in applied_all]
    info = workload.info() if hasattr(workload, "info") else {}
    backend.hold()
    own = getattr(workload, "weights", None)  # the engine's own record (a bench's weight init, say)
    meta = metadata(cfg, point, backend.name, gpu, enforced, started,
                    {"status": "ok", "time_to_first_window_s": None if t_first != t_first else t_first,
                     "engine_info": info, **({"weights": own} if isinstance(own, dict) else {}), **(extra or {})})
    if per_gpu is None:
        write_trace(out, samples, windows, meta, {"status": "ok", "windows": len(windows),
                                                  "summary": summary_stamp(settings)})
        return
    from phase_energy.measure.multigpu import multi_summary_stamp

    write_trace(out, samples, windows, meta, {"status": "ok", "windows": len(windows), "gpus": backend.gpus,
                                              "summary": multi_summary_stamp(settings)}, gpu_windows=per_gpu)


def run_job(cfg: Mapping[str, Any], point: GridPoint, out_dir: str | Path) -> str:
    """Measure one grid point into ``out_dir``; return the backend used.

    A real GPU's job holds the GPU's lock (:mod:`phase_energy.measure.gpulock`) from before its first probe
    to its end: a second measurement job on the same GPU waits or is refused, whatever Snakemake's resources
    said.
    """
    out = Path(out_dir)
    name = resolve_backend(cfg["backend"])
    reason = point_skip_reason(cfg, point, name)
    if reason:
        write_skipped(cfg, point, out, name, reason)
        return name
    # where a job's time goes before its first window (a real card's job; the simulator's clock is virtual)
    parts = JobParts()
    parts.mark("process_start_to_job_s")
    t0 = time.monotonic()
    # the native engine compiles its decode step: its compiler's modules are imported while the GPU opens
    prefetch = start_compile_prefetch() if name == "nvml" and point.engine == "native" else None
    try:
        with open_backend(cfg, name, point_seed(cfg, point), job=str(out), gpus=get_preset(point.arch).gpus) as backend:
            started = utc_now()
            parts.mark("open_backend_s")
            # the prefetch ends before the probe: nothing imports while the card's bandwidth is timed
            extra: dict[str, Any] = {"compile_prefetch": prefetch.wait()} if prefetch is not None else {}
            parts.mark("compile_prefetch_wait_s")
            gpu = backend.describe(probe=True)
            settings = job_settings(cfg, point)
            parts.mark("probe_s")
            try:
                workload = build_workload(cfg, point, settings, backend)
            except DoesNotFit as e:  # the engine started but cannot hold the point: a record, not a failure
                write_skipped(cfg, point, out, name, str(e))
                return name
            parts.mark("build_workload_s")
            if backend.open_parts:
                extra["open_backend_parts"] = backend.open_parts
            measure_point(cfg, point, out, backend, workload, settings, gpu, started, extra=extra or None,
                          parts=None if backend.simulated else parts)
    except BaseException:
        # a job that fails (no NVML, the GPU's lock refused, ...) leaves no thread importing behind: an import
        # cut off by the interpreter's exit can end the process with another error than the job's own
        if prefetch is not None:
            prefetch.wait()
        raise
    log.info("job %s done in %.1f s (%s)", point.path, time.monotonic() - t0, name)
    return name


# ----------------------------------------------------------------------------- in the workflow's process
_LOG_LOCK = threading.Lock()
_LOG_SAVED = (logging.NOTSET, True)  # the package logger's level and propagation while any job logs
_LOG_JOBS = 0  # jobs logging now


@contextmanager
def job_log(path: str | Path) -> Iterator[None]:
    """Send the package's log records of the calling thread to ``path`` (a job inside the workflow's process).

    The workflow runs simulated jobs in threads of its own process; each job's records go to its own log
    file, and none to the workflow's console. When the last job running ends, the package's logger is as it
    was before the first (its level, and its records passed on to the process's own handlers).
    """
    global _LOG_JOBS, _LOG_SAVED
    me = threading.get_ident()
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(lambda record: record.thread == me)
    pkg = logging.getLogger("phase_energy")
    with _LOG_LOCK:
        if _LOG_JOBS == 0:
            _LOG_SAVED = (pkg.level, pkg.propagate)
            pkg.setLevel(logging.INFO)
            pkg.propagate = False
        _LOG_JOBS += 1
        pkg.addHandler(handler)
    try:
        yield
    finally:
        with _LOG_LOCK:
            pkg.removeHandler(handler)
            _LOG_JOBS -= 1
            if _LOG_JOBS == 0:
                pkg.setLevel(_LOG_SAVED[0])
                pkg.propagate = _LOG_SAVED[1]
        handler.close()


@functools.cache
def _config_from(path: str, mtime_ns: int) -> dict[str, Any]:
    from phase_energy.config import load_config

    return load_config(path)


def run_job_in_process(config_path: str | Path, point: GridPoint, out_dir: str | Path, log_path: str | Path) -> str:
    """:func:`run_job` for a rule that runs inside the workflow's process: config read once, its own log.

    For simulated jobs only (the workflow decides): a real GPU's job keeps its own process, so that a
    lever's restore on a signal and the GPU's lock belong to that job alone.
    """
    p = Path(config_path)
    cfg = _config_from(str(p.resolve()), p.stat().st_mtime_ns)
    with job_log(log_path):
        try:
            return run_job(cfg, point, out_dir)
        except Exception:
            log.exception("job %s failed", point.path)
            raise
