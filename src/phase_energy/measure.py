"""One measurement job: resolve the backend, apply the lever, run the protocol, write the trace."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import GridPoint, Lever, config_hash, point_skip_reason
from .costmodel import CostModel
from .presets import get_preset
from .protocol import Settings, run_protocol, summarise_windows
from .sim import SimGPU, SimMeter, SimParams, SimWorkload
from .trace import SAMPLE_COLUMNS, WINDOW_COLUMNS, empty_frame, provenance, utc_now, write_trace

log = logging.getLogger(__name__)


def nvidia_gpu_visible() -> bool:
    """True when NVML initialises and reports at least one device (never changes any setting)."""
    try:
        import pynvml
    except ImportError:
        return False
    try:
        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetCount() > 0
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # any NVML failure means: no usable GPU here
        return False


def resolve_backend(requested: str) -> str:
    """``auto`` becomes ``nvml`` when an NVIDIA GPU is visible, else ``sim`` (said loudly in the log)."""
    if requested != "auto":
        return requested
    if nvidia_gpu_visible():
        log.warning("backend auto: an NVIDIA GPU is visible, measuring it through NVML")
        return "nvml"
    log.warning("backend auto: NO NVIDIA GPU visible -- using the SIMULATED backend; traces say backend: sim")
    return "sim"


def _metadata(cfg: Mapping[str, Any], point: GridPoint, backend: str, gpu: Mapping[str, Any],
              enforced: Mapping[str, Any], started: str, extra: Mapping[str, Any] | None = None
              ) -> dict[str, Any]:
    arch = get_preset(point.arch)
    prov = provenance()
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
        "cost": CostModel(arch, engine=point.engine).summary(),
        "versions": prov["versions"],
        "git_commit": prov["git_commit"],
        "host": prov["host"],
        "config_hash": config_hash(cfg),
        "started_at": started,
        "finished_at": utc_now(),
        "seed": cfg["seed"],
        **(extra or {}),
    }


def _settings(cfg: Mapping[str, Any], locked: int | None) -> Settings:
    return Settings.from_config(cfg["measurement"], max_output=max(cfg["output_lengths"]),
                                locked_sm_clock_mhz=locked)


def write_skipped(cfg: Mapping[str, Any], point: GridPoint, out_dir: Path, backend: str, reason: str) -> None:
    """A status record (and empty tables) for a point that cannot run, so downstream sees the whole grid."""
    log.warning("skipping %s: %s", point.path, reason)
    gpu = {"name": "not measured"}
    meta = _metadata(cfg, point, backend, gpu, {"power_limit_w": None, "locked_sm_clock_mhz": None},
                     utc_now(), {"status": "skipped"})
    write_trace(out_dir, empty_frame(SAMPLE_COLUMNS), empty_frame(WINDOW_COLUMNS), meta,
                {"status": "skipped", "reason": reason})


def point_seed(cfg: Mapping[str, Any], point: GridPoint) -> int:
    """A seed per point, stable across runs and machines."""
    import zlib

    return (cfg["seed"] * 1_000_003 + zlib.crc32(point.path.encode())) % (2**32)


def run_sim_job(cfg: Mapping[str, Any], point: GridPoint, out_dir: Path) -> None:
    """Run the protocol on the simulated card and write a trace labelled ``backend: sim``."""
    started = utc_now()
    params = SimParams(firmware_clamp_mhz=cfg["sim"]["firmware_clamp_mhz"], power_noise=cfg["sim"]["noise"],
                       counter_period_s=cfg["measurement"]["counter_period_ms"] / 1000.0)
    gpu = SimGPU(params, seed=point_seed(cfg, point))
    lever = Lever.parse(point.lever)
    if lever.kind == "powercap":
        gpu.set_power_limit(float(lever.value))  # type: ignore[arg-type]
    elif lever.kind == "smclock":
        gpu.lock_sm_clock(int(lever.value))  # type: ignore[arg-type]
    settings = _settings(cfg, gpu.locked_clock)
    workload = SimWorkload(gpu, get_preset(point.arch), point.batch, point.context, engine=point.engine)
    meter = SimMeter(gpu, cfg["measurement"]["sampling_period_ms"] / 1000.0)
    raw = run_protocol(meter, workload, settings)
    if cfg["sim"]["wall_delay_s"]:
        log.info("sim.wall_delay_s: holding the job for %.1f s of real time", cfg["sim"]["wall_delay_s"])
        time.sleep(cfg["sim"]["wall_delay_s"])
    samples = meter.samples()
    windows = summarise_windows(samples, raw, settings)
    enforced = {"power_limit_w": gpu.power_limit_w, "locked_sm_clock_mhz": gpu.locked_clock}
    meta = _metadata(cfg, point, "sim", gpu.describe(), enforced, started,
                     {"status": "ok", "time_to_first_window_s": None})
    write_trace(out_dir, samples, windows, meta, {"status": "ok", "windows": len(windows)})


def run_job(cfg: Mapping[str, Any], point: GridPoint, out_dir: str | Path) -> str:
    """Measure one grid point into ``out_dir``; return the backend used."""
    out = Path(out_dir)
    backend = resolve_backend(cfg["backend"])
    reason = point_skip_reason(cfg, point, backend)
    if reason:
        write_skipped(cfg, point, out, backend, reason)
        return backend
    t0 = time.monotonic()
    if backend == "sim":
        run_sim_job(cfg, point, out)
    else:
        from .realjob import run_nvml_job

        run_nvml_job(cfg, point, out)
    log.info("job %s done in %.1f s (%s)", point.path, time.monotonic() - t0, backend)
    return backend
