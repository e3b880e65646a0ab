"""CLEAR: component-level energy by repeated sampling (docs/clear.md).

A component of the model (the embedding, one hidden-width norm, one layer's attention or mixer, one layer's
MLP, the head) runs back to back ``N`` times on cached inputs inside one window of the measurement
protocol (:func:`~phase_energy.measure.protocol.filled_window`); ``N`` is chosen so that the window spans
at least ``min_ticks`` ticks of the ~100 ms energy counter, so a component that takes microseconds is
still measured. ``K`` trials with pauses give the spread. The whole model runs the same way, so the
components scaled by their counts can be set against it (coverage).

A CLEAR job opens its backend like a measurement job (:func:`~phase_energy.measure.backend.open_backend`):
the components are the native engine's own modules on a GPU
(:class:`~phase_energy.engines.native.components.EngineComponents`) or the cost model's FLOPs and bytes of
each on the simulated card (:class:`~phase_energy.measure.sim_workload.SimComponents`, ``backend: sim``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from phase_energy.config import config_hash, schema_defaults
from phase_energy.grid import ClearPoint
from phase_energy.measure.backend import Backend, open_backend, resolve_backend
from phase_energy.measure.job import point_seed
from phase_energy.measure.levers import LeverControl
from phase_energy.measure.protocol import Meter, Settings, Window, filled_window, measured_span
from phase_energy.measure.summary import summarise_windows
from phase_energy.measure.trace import SAMPLE_COLUMNS, conform, provenance, utc_now, validate_metadata, write_files
from phase_energy.model.costmodel import MODEL, CostModel, components_of
from phase_energy.model.presets import ArchConfig, get_preset

log = logging.getLogger(__name__)

PHASES = ("prefill", "decode")
REPETITION_MARGIN = 0.02  # calls a little faster in the window than when timed still span the ticks
_C, _M = schema_defaults("clear"), schema_defaults("measurement")  # the defaults are the schema's


@dataclass
class ClearSettings:
    """Config ``clear:`` (repetition and trials), plus the idle, lead-in and counter of ``measurement:``."""

    trials: int = _C["trials"]
    min_ticks: int = _C["min_ticks"]
    pause_s: float = _C["pause_s"]
    probe_s: float = _C["probe_s"]
    lead_in_s: float = _M["lead_in_s"]
    idle_s: float = _M["idle_s"]
    counter_period_ms: float = _M["counter_period_ms"]
    sampling_period_ms: float = _M["sampling_period_ms"]

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ClearSettings:
        """From a validated config."""
        c, m = cfg["clear"], cfg["measurement"]
        return cls(trials=c["trials"], min_ticks=c["min_ticks"], pause_s=c["pause_s"], probe_s=c["probe_s"],
                   lead_in_s=m["lead_in_s"], idle_s=m["idle_s"], counter_period_ms=m["counter_period_ms"],
                   sampling_period_ms=m["sampling_period_ms"])

    @property
    def window_s(self) -> float:
        """Shortest window: ``min_ticks`` counter periods."""
        return self.min_ticks * self.counter_period_ms / 1000.0

    def protocol_settings(self) -> Settings:
        """Settings of the window summary (flags a window with fewer ticks than asked)."""
        return Settings(min_counter_ticks=self.min_ticks, counter_period_ms=self.counter_period_ms,
                        sampling_period_ms=self.sampling_period_ms)


def repetitions(call_s: float, s: ClearSettings) -> int:
    """Calls in one window: enough back-to-back calls of ``call_s`` seconds to span ``min_ticks`` ticks."""
    if not call_s > 0:
        raise ValueError(f"call time must be positive, got {call_s!r}")
    return max(1, math.ceil(s.window_s * (1 + REPETITION_MARGIN) / call_s))


class ComponentWorkload(Protocol):
    """Components of one architecture at one batch and context, callable in isolation."""

    cfg: ArchConfig
    batch: int
    context: int

    def sequences(self, phase: str) -> int:
        """Sequences one call processes in ``phase``."""
        ...

    def prepare(self, phase: str) -> None:
        """Cache the inputs of every component for ``phase`` (and capture their calls)."""
        ...

    def run(self, unit: str, calls: int) -> None:
        """``calls`` calls of ``unit`` back to back, without waiting for the device."""
        ...

    def synchronize(self) -> None:
        """Wait for the device."""
        ...

    def idle(self, seconds: float) -> None:
        """Leave the device idle."""
        ...

    def info(self) -> dict[str, Any]:
        """Facts for the metadata (how the calls ran)."""
        ...


def time_call(meter: Meter, wl: ComponentWorkload, unit: str, probe_s: float) -> float:
    """Seconds of one call of ``unit``: doubling runs until one lasts ``probe_s``."""
    n = 1
    while True:
        t0, t1, _ = measured_span(meter, wl, lambda n=n: wl.run(unit, n))
        dt = t1 - t0
        if dt >= probe_s or n >= 1 << 24:
            return max(dt, 1e-12) / n
        n = max(2 * n, math.ceil(n * probe_s / dt)) if dt > 0 else 2 * n


@dataclass
class ClearWindow:
    """A measured window of one unit and the facts needed to turn it into energy per call."""

    window: Window
    unit: str
    count: int
    calls: int
    call_s_probe: float


def run_clear(meter: Meter, wl: ComponentWorkload, s: ClearSettings,
              progress: Callable[[str], None] | None = None) -> list[ClearWindow]:
    """Idle baseline, then per phase and unit: probe, lead-in, ``trials`` windows of ``N`` calls each."""
    say = progress or log.info
    out: list[ClearWindow] = []
    if s.idle_s > 0:
        t0, t1, e = measured_span(meter, wl, lambda: wl.idle(s.idle_s))
        out.append(ClearWindow(Window("idle", 0, t0, t1, e, tokens=0, steps=0), "idle", 0, 0, 0.0))
    for phase in PHASES:
        wl.prepare(phase)
        tokens = wl.sequences(phase) * (wl.context if phase == "prefill" else 1)
        for comp in components_of(wl.cfg):
            def calls(k: int, unit: str = comp.name) -> None:
                wl.run(unit, k)

            call_s = time_call(meter, wl, comp.name, s.probe_s)
            lead = math.ceil(s.lead_in_s / call_s) if s.lead_in_s > 0 else 0
            if lead:  # steady power and clocks when the window opens; its timing refines the probe's
                t0, t1, _ = measured_span(meter, wl, lambda lead=lead: calls(lead))
                call_s = max(t1 - t0, 1e-12) / lead
            for k in range(s.trials):
                # a window still short after the planned calls (they ran faster than timed) gets more calls,
                # and the trials after it are planned from the time measured in it
                planned = repetitions(call_s, s)
                t0, t1, e, n = filled_window(meter, wl, calls, call_s, s.window_s, planned)
                w = Window(phase, k, t0, t1, e, tokens=tokens * n, repetitions=n, steps=1,
                           context_start=wl.context, context_end=wl.context + (phase == "decode"))
                out.append(ClearWindow(w, comp.name, comp.count, n, call_s))
                if n > planned:
                    call_s = max(t1 - t0, 1e-12) / n
                if s.pause_s > 0 and k < s.trials - 1:
                    wl.idle(s.pause_s)
            say(f"{wl.cfg.name} b{wl.batch} {phase} {comp.name}: {call_s * 1e6:.1f} us/call, "
                f"{out[-1].calls} calls x {s.trials} trials")
        if s.pause_s > 0:
            wl.idle(s.pause_s)
    return out


COMPONENT_COLUMNS = ["arch", "paradigm", "batch", "context", "phase", "component", "count", "trial", "calls",
                     "sequences", "call_s_probe", "duration_s", "energy_j", "energy_per_call_j", "power_mean_w",
                     "idle_power_w", "energy_dynamic_per_call_j", "counter_ticks", "flops_per_call",
                     "bytes_per_call", "flags", "backend"]


def component_table(samples: pd.DataFrame, windows: list[ClearWindow], s: ClearSettings, cfg: ArchConfig,
                    batch: int, context: int, backend: str) -> pd.DataFrame:
    """One row per window: tick-aligned energy (protocol summary), energy per call, cost of one call."""
    summary = summarise_windows(samples, [w.window for w in windows], s.protocol_settings())
    cost = CostModel(cfg)
    idle = summary[summary["phase"] == "idle"]
    idle_w = float(idle["power_mean_w"].mean()) if len(idle) else float("nan")
    rows = []
    for w, r in zip(windows, summary.to_dict("records"), strict=True):
        if w.unit == "idle":
            continue
        phase = w.window.phase
        seqs = w.window.tokens // w.calls // (context if phase == "prefill" else 1)
        if w.unit == MODEL:
            fl = cost.prefill_flops(seqs, context) if phase == "prefill" else cost.decode_flops(seqs, context)
            by = cost.prefill_bytes(seqs, context) if phase == "prefill" else cost.decode_bytes(seqs, context)
        else:
            fl, by = cost.component_cost(w.unit, phase, seqs, context)
        dyn = (r["power_mean_w"] - idle_w) * r["duration_s"] / w.calls
        rows.append({"arch": cfg.name, "paradigm": cfg.paradigm, "batch": batch, "context": context,
                     "phase": phase, "component": w.unit, "count": w.count, "trial": w.window.trial,
                     "calls": w.calls, "sequences": seqs, "call_s_probe": w.call_s_probe,
                     "duration_s": r["duration_s"], "energy_j": r["energy_j"],
                     "energy_per_call_j": r["energy_j"] / w.calls, "power_mean_w": r["power_mean_w"],
                     "idle_power_w": idle_w, "energy_dynamic_per_call_j": dyn,
                     "counter_ticks": r["counter_ticks"], "flops_per_call": fl, "bytes_per_call": by,
                     "flags": r["flags"], "backend": backend})
    return pd.DataFrame(rows, columns=COMPONENT_COLUMNS)


def component_workload(backend: Backend, point: ClearPoint, context: int, seed: int) -> ComponentWorkload:
    """The point's components on the backend: the cost model's on ``sim``, the native engine's on a GPU."""
    if backend.simulated:
        from phase_energy.measure.sim_workload import SimComponents

        return SimComponents(backend.device, get_preset(point.arch), point.batch, context)
    from phase_energy.engines.native.components import EngineComponents

    return EngineComponents(point.arch, point.batch, context, seed=seed)


def run_clear_job(cfg: Mapping[str, Any], point: ClearPoint, out: Path) -> None:
    """Measure the components of one architecture at one batch (both phases) into ``out``.

    The default lever only: :class:`~phase_energy.measure.levers.LeverControl` records the settings as found
    and changes nothing.
    """
    s = ClearSettings.from_config(cfg)
    context = cfg["clear"]["context"]
    preset = get_preset(point.arch)
    name = resolve_backend(cfg["backend"])
    started = utc_now()
    with open_backend(cfg, name, point_seed(cfg, point.as_grid_point(context)), job=str(out)) as backend, \
            LeverControl(backend.device, "default", allow_gpu_settings=False):
        gpu = backend.describe()
        wl = component_workload(backend, point, context, cfg["seed"])
        meter = backend.meter(s.sampling_period_ms / 1000.0)
        try:
            windows = run_clear(meter, wl, s)
        finally:
            samples = meter.stop()
    table = component_table(samples, windows, s, preset, point.batch, context, name)
    prov = provenance()
    meta = {"study": "clear", "format_version": 1, "arch": point.arch, "paradigm": preset.paradigm,
            "batch": point.batch, "rep": point.rep, "context": context, "backend": name, "lever": "default",
            "gpu": gpu, "settings": asdict(s), "components": [asdict(c) for c in components_of(preset)],
            "engine_info": wl.info(), "versions": prov["versions"], "git_commit": prov["git_commit"],
            "host": prov["host"], "config_hash": config_hash(cfg), "started_at": started,
            "finished_at": utc_now(), "seed": cfg["seed"]}
    validate_metadata(meta, "clear-metadata")
    write_files(out, {"samples": conform(samples, SAMPLE_COLUMNS), "components": table}, meta,
                {"status": "ok", "windows": len(table)})
