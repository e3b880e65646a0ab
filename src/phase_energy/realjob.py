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
                       sync: Callable[[], None], journal_dir: Path | None = None, origin: float = PROCESS_START
                       ) -> tuple[pd.DataFrame, pd.DataFrame, Applied, float]:
    """Apply the lever, sample, run the protocol, restore; return samples, windows, lever record, t(first window).

    The lever is restored whatever happens inside (exception, SIGTERM, SIGINT, exit); the sampler is
    stopped before the restore so its thread never outlives the job. ``t(first window)`` counts from
    ``origin`` (the process start for a job).
    """
    with LeverControl(gpu, lever, allow_gpu_settings, journal_dir=journal_dir) as applied:
        meter = NvmlMeter(gpu, settings.sampling_period_ms / 1000.0, sync, settings.min_counter_ticks,
                          settings.counter_period_ms / 1000.0).start()
        try:
            raw: list[Window] = run_protocol(meter, workload, settings)
        finally:
            samples = meter.stop()
        first = min((w.start_s for w in raw if w.phase != "idle"), default=float("nan"))
        t_first = meter.origin - origin + first
    return samples, summarise_windows(samples, raw, settings), applied, t_first


def vllm_workload(cfg: Mapping[str, Any], point: GridPoint, settings: Settings) -> Workload:
    """A vLLM engine sized for one point (its batch, its positions) and the point's workload on it."""
    from .costmodel import CostModel
    from .engine.vllm import VllmEngine, VllmSettings, VllmWorkload, max_model_len
    from .presets import get_preset
    from .protocol import forward_positions

    vs = VllmSettings.from_config(cfg["vllm"])
    positions = forward_positions(settings, CostModel(get_preset(point.arch), engine="vllm"), point.batch,
                                  point.context)
    chunk = vs.max_num_batched_tokens or 16384
    engine = VllmEngine(point.arch, max_num_seqs=point.batch,
                        max_model_len=max_model_len(point.context, positions, point.batch, chunk),
                        capture_sizes=[point.batch], settings=vs, seed=cfg["seed"])
    return VllmWorkload(engine, point.batch, point.context, settings.max_output, seed=cfg["seed"],
                        positions=positions)


def build_workload(cfg: Mapping[str, Any], point: GridPoint, settings: Settings) -> Workload:
    """The point's engine, built on GPU 0 (vLLM raises DoesNotFit when its KV cache is too small)."""
    if point.engine == "vllm":
        return vllm_workload(cfg, point, settings)
    from .engine import EngineWorkload

    return EngineWorkload(point.arch, point.batch, point.context, settings.max_output, seed=cfg["seed"])


def measure_point(cfg: Mapping[str, Any], point: GridPoint, out: Path, gpu: GPU, desc: Mapping[str, Any],
                  workload: Workload, settings: Settings, started: str, origin: float = PROCESS_START,
                  extra: Mapping[str, Any] | None = None) -> None:
    """Run the protocol of one point on a built workload and write its trace (backend nvml)."""
    import torch

    from .measure import _metadata
    from .trace import write_trace

    lever, applied_by = point.lever, "nvml"
    if point.lever.startswith("smclock:") and cfg["cluster"]["gpu_freq_for_smclock"]:
        lever, applied_by = "default", "slurm --gpu-freq"  # slurmstepd set it; we only record
    samples, windows, applied, t_first = measure_with_lever(
        gpu, lever, cfg["allow_gpu_settings"], workload, settings, torch.cuda.synchronize, origin=origin)
    enforced = {"power_limit_w": applied.power_limit_w, "locked_sm_clock_mhz": applied.locked_sm_clock_mhz,
                "applied_by": applied_by}
    info = workload.info() if hasattr(workload, "info") else {}
    meta = _metadata(cfg, point, "nvml", desc, enforced, started,
                     {"status": "ok", "time_to_first_window_s": t_first, "engine_info": info, **(extra or {})})
    write_trace(out, samples, windows, meta, {"status": "ok", "windows": len(windows)})


def describe_gpu(gpu: GPU) -> dict[str, Any]:
    """The GPU block of the metadata, with the copy bandwidth and matmul rate measured now."""
    import torch

    from .telemetry import measure_bandwidth_and_matmul

    desc = gpu.describe()
    desc.update(measure_bandwidth_and_matmul())
    torch.cuda.empty_cache()  # give the probes' memory back before an engine sizes itself from what is free
    return desc


def run_nvml_job(cfg: Mapping[str, Any], point: GridPoint, out: Path) -> None:
    """Measure one point on GPU 0 with its engine and write its trace (backend nvml).

    The job holds the GPU's lock (:mod:`phase_energy.gpulock`) from before its first probe to its end: a
    second measurement job on the same GPU waits or is refused, whatever Snakemake's resources said.
    """
    from .gpulock import gpu_lock

    gpu = GPU(0)
    with gpu_lock(gpu, job=str(out)):
        _run_nvml_job(cfg, point, out, gpu)


def _run_nvml_job(cfg: Mapping[str, Any], point: GridPoint, out: Path, gpu: GPU) -> None:
    from .measure import _settings, write_skipped
    from .trace import utc_now

    started = utc_now()
    desc = describe_gpu(gpu)
    settings = _settings(cfg, int(point.lever.split(":")[1]) if point.lever.startswith("smclock:") else None)
    try:
        workload = build_workload(cfg, point, settings)
    except Exception as e:
        from .engine.vllm import DoesNotFit

        if isinstance(e, DoesNotFit):  # the engine started but cannot hold the point: a record, not a failure
            write_skipped(cfg, point, out, "nvml", str(e))
            return
        raise
    measure_point(cfg, point, out, gpu, desc, workload, settings, started)
