"""A measurement job on a real GPU: NVML sampler and windows, the lever applied and restored, the engine."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .config import GridPoint
from .levers import Applied, LeverControl
from .protocol import Settings, Window, Workload, run_protocol, summarise_windows
from .telemetry import GPU, NvmlMeter

log = logging.getLogger(__name__)
PROCESS_START = time.monotonic()


def measure_with_lever(gpu: GPU, lever: str, allow_gpu_settings: bool, workload: Workload, settings: Settings,
                       sync: Callable[[], None], journal_dir: Path | None = None
                       ) -> tuple[pd.DataFrame, pd.DataFrame, Applied, float]:
    """Apply the lever, sample, run the protocol, restore; return samples, windows, lever record, t(first window).

    The lever is restored whatever happens inside (exception, SIGTERM, SIGINT, exit); the sampler is
    stopped before the restore so its thread never outlives the job.
    """
    with LeverControl(gpu, lever, allow_gpu_settings, journal_dir=journal_dir) as applied:
        meter = NvmlMeter(gpu, settings.sampling_period_ms / 1000.0, sync, settings.min_counter_ticks,
                          settings.counter_period_ms / 1000.0).start()
        try:
            raw: list[Window] = run_protocol(meter, workload, settings)
        finally:
            samples = meter.stop()
        first = min((w.start_s for w in raw if w.phase != "idle"), default=float("nan"))
        t_first = meter.origin - PROCESS_START + first
    return samples, summarise_windows(samples, raw, settings), applied, t_first


def run_nvml_job(cfg: Mapping[str, Any], point: GridPoint, out: Path) -> None:
    """Measure one point on GPU 0 with the native engine and write its trace (backend nvml)."""
    import torch

    from .engine import EngineWorkload
    from .measure import _metadata, _settings
    from .telemetry import measure_bandwidth_and_matmul
    from .trace import utc_now, write_trace

    started = utc_now()
    gpu = GPU(0)
    desc = gpu.describe()
    desc.update(measure_bandwidth_and_matmul())
    workload = EngineWorkload(point.arch, point.batch, point.context, max(cfg["output_lengths"]),
                              seed=cfg["seed"])
    settings = _settings(cfg, None)
    lever, applied_by = point.lever, "nvml"
    if point.lever.startswith("smclock:"):
        settings.locked_sm_clock_mhz = int(point.lever.split(":")[1])  # flags a clamp or a missing lock
        if cfg["cluster"]["gpu_freq_for_smclock"]:
            lever, applied_by = "default", "slurm --gpu-freq"  # slurmstepd set it; we only record
    samples, windows, applied, t_first = measure_with_lever(
        gpu, lever, cfg["allow_gpu_settings"], workload, settings, torch.cuda.synchronize)
    enforced = {"power_limit_w": applied.power_limit_w, "locked_sm_clock_mhz": applied.locked_sm_clock_mhz,
                "applied_by": applied_by}
    meta = _metadata(cfg, point, "nvml", desc, enforced, started,
                     {"status": "ok", "time_to_first_window_s": t_first, "engine_info": workload.info()})
    write_trace(out, samples, windows, meta, {"status": "ok", "windows": len(windows)})
