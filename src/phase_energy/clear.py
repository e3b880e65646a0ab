"""CLEAR: component-level energy by repeated sampling (paper.md, last section; docs/clear.md).

A component of the model (the embedding, one hidden-width norm, one layer's attention or mixer, one layer's
MLP, the head) runs back to back ``N`` times on cached inputs between two synchronised counter reads; ``N``
is chosen so that the window spans at least ``min_ticks`` ticks of the ~100 ms energy counter, so a
component that takes microseconds is still measured. ``K`` trials with pauses give the spread. The whole
model runs the same way, so the components scaled by their counts can be set against it (coverage).

Backends: the native engine's own modules on a GPU (each component's calls captured in a CUDA graph, so
the GPU is not left waiting on the host between calls of a few microseconds), or the simulated card (the
cost model's FLOPs and bytes of each component through the simulator's physics; ``backend: sim``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd

from .costmodel import CostModel, prefill_group
from .presets import ArchConfig, get_preset
from .protocol import Meter, Settings, Window, summarise_windows
from .trace import SAMPLE_COLUMNS, read_table

log = logging.getLogger(__name__)

PHASES = ("prefill", "decode")
MODEL = "model"  # the whole model, measured the same way as its components
COMPONENTS = ("embedding", "norm", "attention", "gdn", "mamba2", "mlp", "head")
REPETITION_MARGIN = 0.02  # calls a little faster in the window than when timed still span the ticks
WINDOW_RETRIES = 3  # a window shorter than min_ticks periods is run again with calls timed over it


@dataclass(frozen=True)
class Component:
    """One measured unit: a component (or the whole model) and how many of it the model holds."""

    name: str
    count: int
    kind: str | None = None  # the pattern character of the block it is taken from


def components_of(cfg: ArchConfig) -> list[Component]:
    """The components of an architecture with their counts in the whole model, then the model itself.

    Norms are the hidden-width RMSNorms of the blocks (one before each mixer or MLP); the final norm is
    part of the head. Norms inside a mixer (QK-norm, gated output norm) belong to that mixer.
    """
    pat = cfg.layer_pattern
    mixer_and_mlp = [k for k in pat if k in "AG" and cfg.intermediate > 0]
    mlp_blocks = [k for k in pat if k == "-"] + mixer_and_mlp
    out = [Component("embedding", 1), Component("norm", len(pat) + len(mixer_and_mlp))]
    n_attn = pat.count("A") + pat.count("*")
    if n_attn:
        out.append(Component("attention", n_attn, "A" if "A" in pat else "*"))
    if "G" in pat:
        out.append(Component("gdn", pat.count("G"), "G"))
    if "M" in pat:
        out.append(Component("mamba2", pat.count("M"), "M"))
    if mlp_blocks:
        out.append(Component("mlp", len(mlp_blocks), mlp_blocks[0]))
    out += [Component("head", 1), Component(MODEL, 1)]
    return out


@dataclass
class ClearSettings:
    """Config ``clear:`` (repetition and trials), plus the counter period of ``measurement:``."""

    trials: int = 5
    min_ticks: int = 50
    pause_s: float = 1.0
    lead_in_s: float = 0.3
    probe_s: float = 0.05
    idle_s: float = 2.0
    counter_period_ms: float = 100.0
    sampling_period_ms: float = 10.0

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ClearSettings:
        """From a validated config."""
        c, m = cfg["clear"], cfg["measurement"]
        return cls(trials=c["trials"], min_ticks=c["min_ticks"], pause_s=c["pause_s"], lead_in_s=m["lead_in_s"],
                   idle_s=m["idle_s"], counter_period_ms=m["counter_period_ms"],
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


def time_call(meter: Meter, wl: ComponentWorkload, unit: str, probe_s: float) -> float:
    """Seconds of one call of ``unit``: doubling runs until one lasts ``probe_s``."""
    n = 1
    while True:
        wl.synchronize()
        t0 = meter.now()
        wl.run(unit, n)
        wl.synchronize()
        dt = meter.now() - t0
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
        wl.synchronize()
        t0, e0 = meter.now(), meter.read_energy_j()
        wl.idle(s.idle_s)
        t1, e1 = meter.now(), meter.read_energy_j()
        out.append(ClearWindow(Window("idle", 0, t0, t1, e1 - e0, tokens=0, steps=0), "idle", 0, 0, 0.0))
    units = components_of(wl.cfg)
    for phase in PHASES:
        wl.prepare(phase)
        n_seq = wl.sequences(phase)
        tokens = n_seq * (wl.context if phase == "prefill" else 1)
        for comp in units:
            call_s = time_call(meter, wl, comp.name, s.probe_s)
            lead = math.ceil(s.lead_in_s / call_s) if s.lead_in_s > 0 else 0
            if lead:  # steady power and clocks when the window opens; its timing refines the probe's
                wl.synchronize()
                t0 = meter.now()
                wl.run(comp.name, lead)
                wl.synchronize()
                call_s = max(meter.now() - t0, 1e-12) / lead
            n = repetitions(call_s, s)
            for k in range(s.trials):
                for _ in range(WINDOW_RETRIES + 1):
                    wl.synchronize()
                    t0, e0 = meter.now(), meter.read_energy_j()
                    wl.run(comp.name, n)
                    wl.synchronize()
                    t1, e1 = meter.now(), meter.read_energy_j()
                    if t1 - t0 >= s.window_s:
                        break
                    # the calls ran faster than timed (a slow probe): time them again over this window
                    call_s = max(t1 - t0, 1e-12) / n
                    n = repetitions(call_s, s)
                w = Window(phase, k, t0, t1, e1 - e0, tokens=tokens * n, repetitions=n, steps=1,
                           context_start=wl.context, context_end=wl.context + (phase == "decode"))
                out.append(ClearWindow(w, comp.name, comp.count, n, call_s))
                if s.pause_s > 0 and k < s.trials - 1:
                    wl.idle(s.pause_s)
            say(f"{wl.cfg.name} b{wl.batch} {phase} {comp.name}: {call_s * 1e6:.1f} us/call, {n} calls x "
                f"{s.trials} trials")
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
        seqs = w.window.tokens // w.calls // (context if w.window.phase == "prefill" else 1)
        if w.unit == MODEL:
            fl = cost.prefill_flops(seqs, context) if w.window.phase == "prefill" else cost.decode_flops(seqs, context)
            by = cost.prefill_bytes(seqs, context) if w.window.phase == "prefill" else cost.decode_bytes(seqs, context)
        else:
            fl, by = cost.component_cost(w.unit, w.window.phase, seqs, context)
        dyn = (r["power_mean_w"] - idle_w) * r["duration_s"] / w.calls
        rows.append({"arch": cfg.name, "paradigm": cfg.paradigm, "batch": batch, "context": context,
                     "phase": w.window.phase, "component": w.unit, "count": w.count, "trial": w.window.trial,
                     "calls": w.calls, "sequences": seqs, "call_s_probe": w.call_s_probe,
                     "duration_s": r["duration_s"], "energy_j": r["energy_j"],
                     "energy_per_call_j": r["energy_j"] / w.calls, "power_mean_w": r["power_mean_w"],
                     "idle_power_w": idle_w, "energy_dynamic_per_call_j": dyn,
                     "counter_ticks": r["counter_ticks"], "flops_per_call": fl, "bytes_per_call": by,
                     "flags": r["flags"], "backend": backend})
    return pd.DataFrame(rows, columns=COMPONENT_COLUMNS)


# ----------------------------------------------------------------------------- analysis
GROUP = ["arch", "paradigm", "batch", "context", "phase"]


def summarise_components(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per component: energy per call, spreads, scaled energy, energy per FLOP; and coverage.

    With several jobs (``clear.repetitions``) each value is the mean over jobs of the job's mean over its
    trials. ``cv`` is the spread between back-to-back trials of a job (coefficient of variation, ddof 1,
    averaged over jobs); ``job_cv`` the spread between jobs (their means' coefficient of variation; NaN with
    one job), which is what a rerun shows (K2). Coverage is the sum over components of (energy per call x
    count) over the whole model's energy per call in the same phase (K1); ``coverage_dynamic`` does the same
    above the idle power.
    """
    if df.empty:
        return pd.DataFrame(), pd.DataFrame()
    if "job" not in df:
        df = df.assign(job="job")
    per_job = df.groupby([*GROUP, "component", "job"], sort=False).agg(
        job_energy=("energy_per_call_j", "mean"), job_sd=("energy_per_call_j", "std")).reset_index()
    per_job["job_cv"] = per_job["job_sd"] / per_job["job_energy"]
    spread = per_job.groupby([*GROUP, "component"], sort=False).agg(
        jobs=("job", "nunique"), energy_of_jobs=("job_energy", "mean"), job_sd=("job_energy", "std"),
        cv=("job_cv", "mean")).reset_index()
    spread["job_cv"] = (spread["job_sd"] / spread["energy_of_jobs"]).where(spread["jobs"] > 1)
    g = df.groupby([*GROUP, "component"], sort=False)
    comp = g.agg(count=("count", "first"), trials=("trial", "nunique"), calls=("calls", "median"),
                 energy_per_call_j=("energy_per_call_j", "mean"), sd=("energy_per_call_j", "std"),
                 energy_dynamic_per_call_j=("energy_dynamic_per_call_j", "mean"),
                 power_mean_w=("power_mean_w", "mean"), duration_s=("duration_s", "mean"),
                 counter_ticks=("counter_ticks", "min"), flops_per_call=("flops_per_call", "first"),
                 bytes_per_call=("bytes_per_call", "first"), sequences=("sequences", "first"),
                 backend=("backend", "first"),
                 flagged=("flags", lambda f: int((f.fillna("") != "").sum()))).reset_index()
    comp = comp.merge(spread[[*GROUP, "component", "jobs", "energy_of_jobs", "cv", "job_cv"]],
                      on=[*GROUP, "component"], how="left")
    comp["energy_per_call_j"] = comp.pop("energy_of_jobs")  # the mean of the jobs' means
    comp["scaled_j"] = comp["energy_per_call_j"] * comp["count"]
    comp["scaled_dynamic_j"] = comp["energy_dynamic_per_call_j"] * comp["count"]
    comp["j_per_flop"] = comp["energy_per_call_j"] / comp["flops_per_call"].where(comp["flops_per_call"] > 0)
    comp["dynamic_j_per_flop"] = comp["energy_dynamic_per_call_j"] / comp["flops_per_call"].where(
        comp["flops_per_call"] > 0)
    comp = comp.drop(columns="sd")
    rows = []
    for key, grp in comp.groupby(GROUP, sort=False):
        model = grp[grp["component"] == MODEL]
        parts = grp[grp["component"] != MODEL]
        if model.empty or parts.empty:
            continue
        m = model.iloc[0]
        rows.append({**dict(zip(GROUP, key, strict=True)),
                     "model_j": m["energy_per_call_j"], "components_j": parts["scaled_j"].sum(),
                     "coverage": parts["scaled_j"].sum() / m["energy_per_call_j"],
                     "coverage_dynamic": parts["scaled_dynamic_j"].sum() / m["energy_dynamic_per_call_j"],
                     "max_cv": grp["cv"].max(), "model_cv": m["cv"], "backend": m["backend"]})
    return comp, pd.DataFrame(rows)


def stage_clear(cfg: Mapping[str, Any], outdir: Path) -> None:
    """Analysis stage: component summary and coverage from the CLEAR traces (empty tables when off)."""
    root = Path(cfg["clear"]["traces"])
    frames = []
    for arch in cfg["clear"]["architectures"]:
        for b in cfg["clear"]["batch_sizes"]:
            for rep in range(cfg["clear"]["repetitions"]):
                job = root / f"arch~{arch}" / f"bs~{b}" / f"rep~{rep}"
                df = read_table(job, "components.parquet")
                if df.empty:
                    log.warning("CLEAR: no components table for %s batch %d repetition %d under %s", arch, b, rep,
                                root)
                frames.append(df.assign(job=str(job)))
    data = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) \
        else pd.DataFrame(columns=COMPONENT_COLUMNS)
    comp, cov = summarise_components(data)
    outdir.mkdir(parents=True, exist_ok=True)
    comp.to_csv(outdir / "clear_components.csv", index=False)
    cov.to_csv(outdir / "clear_coverage.csv", index=False)


# ----------------------------------------------------------------------------- backends
class SimComponents:
    """The components on the simulated card: each call is the cost model's FLOPs and bytes of it."""

    KERNELS: ClassVar[dict[str, int]] = {"embedding": 1, "norm": 2, "attention": 8, "gdn": 14, "mamba2": 10,
                                         "mlp": 3, "head": 3}

    def __init__(self, gpu: Any, cfg: ArchConfig, batch: int, context: int):
        from .sim import SimWorkload

        self.gpu, self.cfg, self.batch, self.context = gpu, cfg, batch, context
        self.cost = CostModel(cfg)
        self._whole = SimWorkload(gpu, cfg, batch, context)
        self.phase = "prefill"

    def sequences(self, phase: str) -> int:
        """Prefill: one group of prompts (as the engine prefills); decode: the whole batch."""
        return prefill_group(self.batch, self.context) if phase == "prefill" else self.batch

    def prepare(self, phase: str) -> None:
        """Nothing to cache on the simulator; remembers the phase."""
        self.phase = phase

    def run(self, unit: str, calls: int) -> None:
        """``calls`` identical calls as one span of work (same time and power as calls one by one)."""
        from .sim import Work

        n = self.sequences(self.phase)
        prefill = self.phase == "prefill"
        if unit == MODEL:
            w = self._whole._prefill_work(n) if prefill else self._whole._decode_work(self.context, 1)
            flops, nbytes, kernels = float(w.flops[0]), float(w.bytes[0]), w.kernels
        else:
            flops, nbytes = self.cost.component_cost(unit, self.phase, n, self.context)
            kernels = self.KERNELS[unit]
        rows = float(n * self.context if prefill else n)
        eff = self.gpu.p.prefill_efficiency if prefill else 1.0
        self.gpu.run(Work(np.array([flops * calls]), np.array([nbytes * calls]), rows=rows,
                          kernels=kernels * calls, efficiency=eff))

    def synchronize(self) -> None:
        """The simulated timeline is always complete."""

    def idle(self, seconds: float) -> None:
        """Idle the simulated card."""
        self.gpu.idle(seconds)


class EngineComponents:
    """The native engine's own modules as components, on cached inputs (CUDA graphs on a GPU)."""

    MIN_GRAPH_S = 200e-6  # calls per graph so that a replay's launch costs little against its work

    def __init__(self, arch: str, batch: int, context: int, seed: int = 0, device: str = "cuda"):
        import torch

        from .engine.runner import set_compile_caches
        from .engine.transformer import Transformer, init_random_

        set_compile_caches()
        self.torch = torch
        self.cfg = get_preset(arch)
        self.batch, self.context = batch, context
        self.device = torch.device(device)
        with torch.device(self.device):
            self.model = Transformer(self.cfg).to(torch.bfloat16)
        init_random_(self.model, seed)
        self.model.fuse()
        self.model.setup_caches(batch, context + 2)
        gen = torch.Generator(device=self.device).manual_seed(seed + 1)
        self.prompt = torch.randint(0, self.cfg.vocab, (batch, context), device=self.device, generator=gen)
        self.fns: dict[str, Callable[[], Any]] = {}
        self.graphs: dict[str, tuple[Any, int]] = {}
        self.graph_failures: dict[str, str] = {}

    def sequences(self, phase: str) -> int:
        """Prefill: one group of prompts (as the engine prefills); decode: the whole batch."""
        return prefill_group(self.batch, self.context) if phase == "prefill" else self.batch

    def _block(self, kind: str | None) -> Any:
        return next(b for b in self.model.layers if b.kind == kind)

    def prepare(self, phase: str) -> None:
        """Inputs of every component from the model's own embedding and norm; calls captured on CUDA."""
        torch, m = self.torch, self.model
        self.graphs.clear()
        n = self.sequences(phase)
        with torch.no_grad():
            if phase == "prefill":
                tokens = self.prompt[:n]
                sl: slice = slice(0, n)
                assert m.cos is not None and m.sin is not None
                rope = (m.cos[: self.context], m.sin[: self.context])
                pos = None
            else:
                g = prefill_group(self.batch, self.context)
                m.prefill(self.prompt[:g], slice(0, g))
                m.replicate_cache_rows(g)
                tokens = self.prompt[:, -1:].contiguous()
                sl = slice(None)
                pos = torch.tensor(self.context, device=self.device)
                assert m.cos is not None and m.sin is not None
                rope = (m.cos.index_select(0, pos.view(1)), m.sin.index_select(0, pos.view(1)))
            x = m._embed(tokens)
        first: Any = m.layers[0]
        fns: dict[str, Callable[[], Any]] = {
            "embedding": lambda: m._embed(tokens),
            "norm": lambda: first.input_layernorm(x),
            "head": lambda: m._head(x[:, -1:]),
        }
        for comp in components_of(self.cfg):
            if comp.name in ("attention", "gdn", "mamba2"):
                blk = self._block(comp.kind)
                fns[comp.name] = self._bind(blk.mixer, blk.input_layernorm(x), rope, pos, sl)
            elif comp.name == "mlp":
                blk = self._block(comp.kind)
                fns["mlp"] = self._bind(blk.mlp, (blk.post_attention_layernorm or blk.input_layernorm)(x))
        if phase == "prefill":
            fns[MODEL] = self._bind(m.prefill, tokens, sl)
        else:
            fns[MODEL] = self._bind(m.decode_step, tokens, pos)
        self.fns = {k: self._no_grad(f) for k, f in fns.items()}
        if self.device.type == "cuda":
            for unit in list(self.fns):
                self._capture(unit)

    @staticmethod
    def _bind(fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
        return lambda: fn(*args)

    def _no_grad(self, f: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with self.torch.no_grad():
                return f()
        return run

    def _capture(self, unit: str) -> None:
        """A CUDA graph of ``inner`` back-to-back calls, ``inner`` sized so a replay lasts MIN_GRAPH_S."""
        torch = self.torch
        f = self.fns[unit]
        try:
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):  # warm-up (Triton autotuning) outside the capture
                for _ in range(3):
                    f()
            torch.cuda.current_stream().wait_stream(s)
            inner = 1
            for _ in range(2):
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    for _ in range(inner):
                        f()
                g.replay()
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(20):
                    g.replay()
                torch.cuda.synchronize()
                per_call = (time.perf_counter() - t0) / 20 / inner
                want = min(256, max(1, math.ceil(self.MIN_GRAPH_S / max(per_call, 1e-9))))
                if want <= inner:
                    break
                inner = want
            self.graphs[unit] = (g, inner)
        except Exception as e:  # a component that cannot be captured runs eagerly (recorded)
            self.graph_failures[unit] = f"{type(e).__name__}: {e}"[:300]
            log.warning("CLEAR: %s runs eagerly (capture failed: %s)", unit, self.graph_failures[unit])
            torch.cuda.synchronize()

    def run(self, unit: str, calls: int) -> None:
        """``calls`` calls: whole graph replays, then single eager calls for the remainder."""
        if unit in self.graphs:
            g, inner = self.graphs[unit]
            for _ in range(calls // inner):
                g.replay()
            calls %= inner
        f = self.fns[unit]
        for _ in range(calls):
            f()

    def synchronize(self) -> None:
        """Wait for the device."""
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def idle(self, seconds: float) -> None:
        """Leave the device idle."""
        time.sleep(seconds)


# ----------------------------------------------------------------------------- jobs
def run_clear_job(cfg: Mapping[str, Any], arch: str, batch: int, out: Path, backend: str, rep: int = 0) -> None:
    """Measure the components of one architecture at one batch (both phases) into ``out``."""
    from .config import GridPoint
    from .measure import point_seed
    from .trace import conform, provenance, utc_now, write_files

    s = ClearSettings.from_config(cfg)
    context = cfg["clear"]["context"]
    started = utc_now()
    preset = get_preset(arch)
    extra: dict[str, Any] = {}
    if backend == "sim":
        from .sim import SimGPU, SimMeter, SimParams

        params = SimParams(power_noise=cfg["sim"]["noise"], counter_period_s=s.counter_period_ms / 1000.0)
        gpu = SimGPU(params, seed=point_seed(cfg, GridPoint(arch, batch, context, "default", rep)))
        meter: Any = SimMeter(gpu, s.sampling_period_ms / 1000.0)
        wl: Any = SimComponents(gpu, preset, batch, context)
        windows = run_clear(meter, wl, s)
        samples = meter.samples()
        desc = gpu.describe()
    else:
        import torch

        from .gpulock import gpu_lock
        from .levers import LeverControl
        from .telemetry import GPU, NvmlMeter

        gpu_n = GPU(0)
        # one measurement job per GPU (phase_energy.gpulock); the default lever only: LeverControl records the
        # settings as found and changes nothing
        with gpu_lock(gpu_n, job=str(out)), LeverControl(gpu_n, "default", cfg["allow_gpu_settings"]):
            desc = gpu_n.describe()
            wl = EngineComponents(arch, batch, context, seed=cfg["seed"])
            meter = NvmlMeter(gpu_n, s.sampling_period_ms / 1000.0, torch.cuda.synchronize, s.min_ticks,
                              s.counter_period_ms / 1000.0).start()
            try:
                windows = run_clear(meter, wl, s)
            finally:
                samples = meter.stop()
        extra = {"graph_failures": wl.graph_failures,
                 "graph_calls": {k: v[1] for k, v in wl.graphs.items()}}
    table = component_table(samples, windows, s, preset, batch, context, backend)
    prov = provenance()
    meta = {"study": "clear", "arch": arch, "paradigm": preset.paradigm, "batch": batch, "rep": rep,
            "context": context,
            "backend": backend, "lever": "default", "gpu": desc, "settings": asdict(s),
            "components": [asdict(c) for c in components_of(preset)], "versions": prov["versions"],
            "git_commit": prov["git_commit"], "host": prov["host"], "started_at": started,
            "finished_at": utc_now(), **extra}
    write_files(out, {"samples": conform(samples, SAMPLE_COLUMNS), "components": table}, meta,
                {"status": "ok", "windows": len(table)})
