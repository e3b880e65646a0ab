"""The measurement protocol of one job (docs/protocol.md), shared by every backend.

A backend provides a :class:`Meter` (clock, energy counter, samples) and a :class:`Workload` (the engine or
its simulation). The protocol decides what runs inside which window; the window summary (trapezoid
cross-check, throttle times, clocks, validity flags) is computed from the samples by
:mod:`~phase_energy.measure.summary`, identically for real and simulated traces.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from phase_energy.config import schema_defaults
from phase_energy.model.costmodel import CostModel, prefill_group

log = logging.getLogger(__name__)



class Meter(Protocol):
    """Clock, energy counter and sampler of one GPU (real or simulated)."""

    def now(self) -> float:
        """Seconds since the job's time origin."""
        ...

    def read_energy_j(self) -> float:
        """The energy counter (J since the origin), read after the device is synchronised."""
        ...

    def samples(self) -> pd.DataFrame:
        """The samples table so far."""
        ...


class SampledMeter(Protocol):
    """A :class:`Meter` that samples from ``start`` to ``stop``."""

    def now(self) -> float:
        """Seconds since the meter's origin."""
        ...

    def read_energy_j(self) -> float:
        """The energy counter in J since the origin."""
        ...

    def samples(self) -> pd.DataFrame:
        """The samples so far."""
        ...

    def stop(self) -> pd.DataFrame:
        """Stop sampling; return the samples table."""
        ...


class Synchronizes(Protocol):
    """Anything whose device work can be waited for (a workload, CLEAR's components)."""

    def synchronize(self) -> None:
        """Wait until the device has finished all queued work."""
        ...


class Workload(Protocol):
    """The work one job runs: a model at one batch and context (real engine or simulation).

    ``rewinds`` tells how decode positions work. A static-cache engine (the native one) can run the steps at
    the same positions again (``decode(position, steps)`` rewrites the cache there). A serving engine (vLLM)
    cannot: after ``fill_cache`` its requests only move forward, one position per step, until ``end_decode``.
    """

    batch: int
    context: int
    rewinds: bool
    max_position: int  # the last cache position a decode step may reach

    def warmup(self, runs: int, prefill_sequences: int | None = None) -> tuple[float, float | None]:
        """Compile, capture and run untimed; return estimated (prefill s of ``prefill_sequences``, decode step s).

        A forward-only workload may return ``None`` for the decode step: the protocol then times it in the first
        decode trial's lead-in, which spares the warm-up a whole-batch prefill of its own.
        """
        ...

    def prefill(self, sequences: int | None = None) -> None:
        """Prefill ``context`` tokens for the first ``sequences`` (default: all ``batch``) into the cache."""
        ...

    def fill_cache(self, sequences: int) -> None:
        """Make every one of the ``batch`` sequences ready to decode from position ``context`` (see measures_fill)."""
        ...

    def decode(self, position: int, steps: int) -> None:
        """Run ``steps`` decode steps starting at cache position ``position``."""
        ...

    def end_decode(self) -> None:
        """Release what ``fill_cache`` started (a serving engine's requests); nothing for a static cache."""
        ...

    def idle(self, seconds: float) -> None:
        """Leave the GPU idle (context open) for ``seconds``."""
        ...

    def synchronize(self) -> None:
        """Wait until the device has finished all queued work."""
        ...

    def irregular_steps(self) -> int:
        """Steps so far that did not advance every sequence by one token (preemption); 0 for a static cache."""
        ...

    def decoded_tokens(self) -> int:
        """Tokens produced by decode steps so far (batch x steps unless a step left sequences out)."""
        ...

    def next_position(self) -> int:
        """Where the next decode step of the slowest sequence is (a forward-only engine, after fill_cache)."""
        ...


def prefill_unit(workload: Any) -> int:
    """Sequences the engine prefills in one piece of the same shape (``prefill_unit`` where it has one, else 1).

    A lead-in shorter than a whole measured prefill runs whole pieces of this many sequences, so the card runs
    the kernels of the window's own shapes before it opens.
    """
    return max(1, int(getattr(workload, "prefill_unit", 1) or 1))


def measures_fill(workload: Any) -> bool:
    """Whether the cache fill before each decode trial is measured as a ``fill`` window of its own.

    Where the fill is the whole batch's prefill as the engine serves it (``fill_is_prefill``: a serving engine
    adds the batch's requests and steps until each has its first token), its energy is a measurement of that
    prefill; where it is not (the native engine prefills one group and copies its rows), it stays unmeasured.
    The work is the same either way: the window only reads the counter around it.
    """
    return bool(getattr(workload, "fill_is_prefill", False))


def refills(workload: Any, s: Settings, trial: int, switching: bool) -> bool:
    """Whether decode trial ``trial`` fills the cache first (outside every window).

    A serving engine's requests end with their trial, so each trial fills (its ``fill`` window). A static
    cache (the native engine, ``rewinds``) needs no refill for its bytes: its prompts are the same each
    time, so a refill writes the keys and values the first fill wrote, and the decode windows only rewrite
    their own positions; a recurrent state goes on from where the last window left it, as it already does
    from one repetition of a window to the next. ``measurement.refill_static_cache: false`` therefore fills
    only before the first trial. It is not the default: on an H200 the later trials' decode windows then
    measured 0.3-1.0 % less energy per token than with their refill (which runs at the power limit just
    before the lead-in; whether that is the cause was not measured), where the first trial's moved by -0.5
    to +0.7 % (docs/benchmarks.md). With a phase lever every
    trial fills whatever the setting (there the trial is a request: prefill, switch, decode). A trial that
    does not fill still waits ``decode_lead_in_s`` of decode steps before its first window.
    """
    return trial == 0 or not workload.rewinds or s.refill_static_cache or switching


def prefill_lead_in(lead_in_s: float, t_prefill: float, n_seq: int, unit: int = 1) -> tuple[int, int]:
    """(prefills, sequences each) to run before a prefill window: at least ``lead_in_s`` of the same work.

    Where one measured prefill (``n_seq`` sequences, ``t_prefill`` s) lasts longer than the lead-in, the lead-in
    is one prefill of the fewest whole pieces of ``unit`` sequences that last ``lead_in_s`` (at most ``n_seq``
    sequences), not a whole measured prefill: at batch 32 x 2048 on the H200 a whole one is 1.5 s where the
    lead-in asks 0.3 s. Otherwise whole measured prefills, as many as it takes.
    """
    if lead_in_s <= 0 or n_seq < 1:
        return 0, 0
    t = max(t_prefill, 1e-9)
    if t <= lead_in_s:
        return math.ceil(lead_in_s / t), n_seq
    unit = max(1, min(unit, n_seq))
    pieces = math.ceil(math.ceil(n_seq * lead_in_s / t - 1e-9) / unit)  # 1e-9: no piece for a rounding error
    return 1, min(n_seq, pieces * unit)


class Switch(Protocol):
    """A phase lever's switch at the phase boundary (:class:`~phase_energy.measure.phase_switch.PhaseSwitch`)."""

    def window(self, meter: Meter, workload: Workload, phase: str, trial: int, run_unit: Any) -> Window:
        """Switch to ``phase``'s setting while its work runs unit by unit; the switch's window."""
        ...


@dataclass
class Window:
    """One measured window before its summary from the samples."""

    phase: str
    trial: int
    start_s: float
    end_s: float
    energy_j: float
    tokens: int
    repetitions: int = 1
    steps: int = 1
    context_start: int = 0
    context_end: int = 0
    extra_flags: str = ""  # flags the workload raised (e.g. irregular_steps), added to the summary's


_M = schema_defaults("measurement")  # the defaults are the config schema's, written nowhere else


@dataclass
class Settings:
    """Measurement settings (config ``measurement:``) plus the parts of the point the protocol needs."""

    warmup_runs: int = _M["warmup_runs"]
    idle_s: float = _M["idle_s"]
    min_counter_ticks: int = _M["min_counter_ticks"]
    counter_period_ms: float = _M["counter_period_ms"]
    sampling_period_ms: float = _M["sampling_period_ms"]
    prefill_trials: int = _M["prefill_trials"]
    decode_trials: int = _M["decode_trials"]
    decode_windows: int = _M["decode_windows"]
    pause_s: float = _M["pause_s"]
    lead_in_s: float = _M["lead_in_s"]
    decode_lead_in_s: float = _M["decode_lead_in_s"]
    refill_static_cache: bool = _M["refill_static_cache"]
    prefill_max_tokens: int | None = _M["prefill_max_tokens"]
    decode_window_steps: int | None = _M["decode_window_steps"]
    switch_timeout_s: float = _M["switch_timeout_s"]
    max_output: int = max(schema_defaults("output_lengths"))
    locked_sm_clock_mhz: int | None = None

    @classmethod
    def from_config(cls, measurement: Mapping[str, Any], **kw: Any) -> Settings:
        """Build from the config's ``measurement`` section."""
        known = {k: v for k, v in measurement.items() if k in cls.__dataclass_fields__}
        return cls(**known, **kw)

    @property
    def min_window_s(self) -> float:
        """Shortest window that spans the minimum number of counter ticks."""
        return self.min_counter_ticks * self.counter_period_ms / 1000.0

    def prefill_sequences(self, batch: int, context: int) -> int:
        """Sequences one measured prefill processes.

        The whole batch, or as many whole prompts as fit in ``prefill_max_tokens`` (at least one).
        Production servers bound the tokens of a prefill step the same way (chunked prefill), so the energy
        per prefill token is that of a full batch's prefill.
        """
        if self.prefill_max_tokens is None:
            return batch
        return prefill_group(batch, context, self.prefill_max_tokens)


FASTEST_COPY_BPS = 4.8e12  # H200 datasheet bandwidth: no decode step is faster than its bytes over this


def forward_positions(s: Settings, cost: CostModel, batch: int, context: int) -> int:
    """Decode positions a forward-only decode trial may use after the context.

    The outputs, plus the lead-in and the windows' minimum length in steps: they last a fixed time, so they
    take the most positions where steps are fastest, and no step is faster than its bytes at the card's
    datasheet bandwidth (a quarter more for the windows' rounding).
    """
    extra_s = s.decode_lead_in_s + 1.25 * len(decode_spans(s)) * s.min_window_s
    floor_s = cost.decode_bytes(batch, context) / FASTEST_COPY_BPS
    return s.max_output + math.ceil(extra_s / max(floor_s, 1e-6))


def decode_spans(s: Settings) -> list[tuple[int, int]]:
    """(offset from the context, steps) of each decode window of a trial.

    Without ``decode_window_steps`` the windows tile ``[0, max_output)``; with it, windows of that many steps
    sit at evenly spaced positions from the first to the last output token (the analysis interpolates the
    energy per token between them), so long outputs cost no more to measure than short ones.
    """
    n_win = max(1, min(s.decode_windows, s.max_output))
    if s.decode_window_steps is None or s.decode_window_steps * n_win >= s.max_output:
        bounds = np.linspace(0, s.max_output, n_win + 1).round().astype(int)
        return [(int(a), int(b - a)) for a, b in itertools.pairwise(bounds) if b > a]
    steps = s.decode_window_steps
    starts = np.linspace(0, s.max_output - steps, n_win).round().astype(int)
    return [(int(a), steps) for a in starts]


def measured_span(meter: Meter, workload: Synchronizes, fn: Any) -> tuple[float, float, float]:
    """Run ``fn`` between two synchronised counter reads; return (start, end, energy)."""
    workload.synchronize()
    t0, e0 = meter.now(), meter.read_energy_j()
    fn()
    workload.synchronize()
    t1, e1 = meter.now(), meter.read_energy_j()
    return t0, t1, e1 - e0


MAX_FILL_ROUNDS = 4


def filled_window(meter: Meter, workload: Synchronizes, run: Any, unit_s: float, min_s: float,
                  first_units: int | None = None) -> tuple[float, float, float, int]:
    """A window of whole work units (``run(k)`` runs k of them) that lasts at least ``min_s``.

    The units the estimate ``unit_s`` predicts (or ``first_units``) run first; when the window is still short
    (the clocks were slower than at warm-up, say) more units follow, sized from the time measured so far, up to
    ``MAX_FILL_ROUNDS`` rounds. The device is synchronised only between rounds. Returns (start, end, energy,
    units); a window still short after the last round is kept and flagged ``short_window`` by its summary.
    """
    workload.synchronize()
    t0, e0 = meter.now(), meter.read_energy_j()
    units = 0
    want = first_units or max(1, math.ceil(min_s / max(unit_s, 1e-9)))
    for _ in range(MAX_FILL_ROUNDS):
        run(want)
        units += want
        workload.synchronize()
        elapsed = meter.now() - t0
        if elapsed >= min_s:
            break
        per = elapsed / units
        want = max(1, math.ceil((min_s - elapsed) / max(per, 1e-9) * 1.05))
    t1, e1 = meter.now(), meter.read_energy_j()
    return t0, t1, e1 - e0, units


def forward_decode_plan(spans: list[tuple[int, int]], window_steps: int, lead_steps: int, max_steps: int
                        ) -> list[tuple[int, int, int]]:
    """(lead-in steps, window start offset, window steps) of each decode window of a forward-only engine.

    Positions only move forward: each window starts at its span's offset from the context, or later when the
    previous window ends later; the first one also waits for its lead-in (``lead_steps`` decode steps right
    before it, after the cache-filling prefill); later ones follow decode steps already. A window lasts
    ``window_steps`` steps (or its span, if longer). Nothing passes ``max_steps`` positions after
    the context: a window that would is shortened, and one that cannot start is left out.
    """
    plan: list[tuple[int, int, int]] = []
    pos = 0
    for offset, steps in spans:
        want = max(steps, window_steps)
        start = max(offset, pos + (lead_steps if not plan else 0))
        if start + want > max_steps:  # short of positions: the lead-in gives way first, then the window
            start = max(offset, pos, min(start, max_steps - want))
        n = min(want, max_steps - start)
        if n < 1:
            break
        plan.append((start - pos, start, n))
        pos = start + n
    return plan


def _prefill_windows(meter: Meter, workload: Workload, s: Settings, n_seq: int, t_prefill: float
                     ) -> list[Window]:
    ctx = workload.context
    windows = []
    lead, lead_seq = prefill_lead_in(s.lead_in_s, t_prefill, n_seq, prefill_unit(workload))

    def _prefill(k: int) -> None:
        for _ in range(k):
            workload.prefill(n_seq)

    for trial in range(s.prefill_trials):
        for _ in range(lead):  # the same work first, so power and clocks are steady when the window opens
            workload.prefill(lead_seq)
        t0, t1, e, reps = filled_window(meter, workload, _prefill, t_prefill, s.min_window_s)
        windows.append(Window("prefill", trial, t0, t1, e, tokens=n_seq * ctx * reps, repetitions=reps,
                              steps=1, context_start=0, context_end=ctx))
        log.info("prefill trial %d/%d: %d repetitions of %d sequences, %.2f s", trial + 1, s.prefill_trials, reps,
                 n_seq, t1 - t0)
        if s.pause_s:
            workload.idle(s.pause_s)
    return windows


def _decode_trial_rewinding(meter: Meter, workload: Workload, s: Settings, trial: int, t_step: float | None
                            ) -> tuple[list[Window], float]:
    """Windows at fixed positions, repeated in place until each lasts long enough (static cache)."""
    b, ctx = workload.batch, workload.context
    if t_step is None:
        raise ValueError("a rewinding workload's warm-up must time its decode step")
    windows = []
    for i, (offset, steps) in enumerate(decode_spans(s)):
        start = ctx + offset
        rep_s = max(steps * t_step, 1e-9)
        # steady state at the window's own positions before it opens; after the cache-filling prefill the
        # firmware keeps its power-cap state for a while, so the first window waits longer
        lead_s = s.decode_lead_in_s if i == 0 else s.lead_in_s
        for _ in range(math.ceil(lead_s / rep_s) if lead_s > 0 else 0):
            workload.decode(start, steps)

        def _decode(k: int, start: int = start, steps: int = steps) -> None:
            for _ in range(k):  # the same positions again: the static cache is rewritten
                workload.decode(start, steps)
        t0, t1, e, reps = filled_window(meter, workload, _decode, rep_s, s.min_window_s)
        windows.append(Window("decode", trial, t0, t1, e, tokens=b * steps * reps, repetitions=reps,
                              steps=steps, context_start=start, context_end=start + steps))
    return windows, t_step


UNTIMED_LEAD_STEPS = 2  # a timed lead-in's first steps: the decode graph's first replays, not timed


def timed_lead_in(meter: Meter, workload: Workload, lead_s: float, max_steps: int, reserve_s: float = 0.0
                  ) -> tuple[int, float]:
    """Decode steps for at least ``lead_s`` from the next position; return (steps run, seconds per step).

    The first decode trial's lead-in when the warm-up did not time a decode step: the card runs the window's
    own steps just as long as a lead-in counted from a timed step would, and the steps after the first
    ``UNTIMED_LEAD_STEPS`` give the step time the windows are sized with. Of the ``max_steps`` positions it
    leaves ``reserve_s`` worth at the pace so far (the windows'): short of positions, the lead-in gives way.
    """
    if max_steps < UNTIMED_LEAD_STEPS + 1:
        raise ValueError(f"a timed lead-in needs at least {UNTIMED_LEAD_STEPS + 1} decode positions, "
                         f"{max_steps} are left")
    pos = workload.next_position()
    workload.decode(pos, UNTIMED_LEAD_STEPS)
    pos += UNTIMED_LEAD_STEPS
    workload.synchronize()
    t0 = meter.now()
    timed, chunk, cap = 0, 1, max_steps - UNTIMED_LEAD_STEPS
    while True:
        workload.decode(pos, chunk)
        pos, timed = pos + chunk, timed + chunk
        workload.synchronize()
        elapsed = meter.now() - t0
        pace = elapsed / timed
        cap = min(cap, max_steps - UNTIMED_LEAD_STEPS - math.ceil(reserve_s / max(pace, 1e-9) - 1e-6))
        if elapsed >= lead_s or timed >= cap:
            return UNTIMED_LEAD_STEPS + timed, pace
        # the next chunk: what is left of the lead-in at the pace so far, at most twice the steps run
        chunk = min(cap - timed, 2 * timed, math.ceil((lead_s - elapsed) / max(pace, 1e-9)))


def _decode_trial_forward(meter: Meter, workload: Workload, s: Settings, trial: int, t_step: float | None
                          ) -> tuple[list[Window], float]:
    """Windows of consecutive steps whose positions only move forward (a serving engine's requests).

    Without ``t_step`` (the warm-up did not time a decode step) the lead-in times it; returns the windows and
    the step time the trial used.
    """
    ctx = workload.context
    windows = []
    max_steps = workload.max_position - ctx + 1
    timed = t_step is None
    if t_step is None:  # from the next position (one on when a batch is in flight); the windows' stay free
        reserve_s = len(decode_spans(s)) * s.min_window_s
        left = max_steps - (workload.next_position() - ctx)
        ran, t_step = timed_lead_in(meter, workload, s.decode_lead_in_s, left, reserve_s)
        log.info("decode step %.5f s, timed in the lead-in (%d steps)", t_step, ran)
    n_min = math.ceil(s.min_window_s / max(t_step, 1e-9))
    lead = math.ceil(s.decode_lead_in_s / max(t_step, 1e-9)) if s.decode_lead_in_s > 0 else 0
    pos = workload.next_position()  # the context, or one step on when a batch was already in flight
    if timed:  # the lead-in ran: the plan starts where it ended, its positions used
        lead = pos - ctx
    for _, offset, n in forward_decode_plan(decode_spans(s), n_min, lead, max_steps):
        # the plan assumed each earlier window ran n steps; one that was filled up to its minimum ran more
        start = max(ctx + offset, pos)
        if start > pos:
            workload.decode(pos, start - pos)  # the lead-in, or the positions up to the window's own
        done = 0
        irregular, tokens0 = workload.irregular_steps(), workload.decoded_tokens()

        def _decode(k: int, start: int = start) -> None:
            nonlocal done
            k = min(k, max_steps - (start - ctx) - done)  # never past the last position
            if k > 0:
                workload.decode(start + done, k)
                done += k
        t0, t1, e, _ = filled_window(meter, workload, _decode, t_step, max(s.min_window_s, n * t_step * 0.999))
        w = Window("decode", trial, t0, t1, e, tokens=workload.decoded_tokens() - tokens0, repetitions=1,
                   steps=done, context_start=start, context_end=start + done)
        if workload.irregular_steps() > irregular:
            w.extra_flags = "irregular_steps"
        windows.append(w)
        pos = start + done
    return windows, t_step


def run_protocol(meter: Meter, workload: Workload, s: Settings, switch: Switch | None = None,
                 marks: dict[str, float] | None = None) -> list[Window]:
    """Idle baseline, warm-up, prefill trials and decode trials; return the raw windows.

    A decode trial's cache fill is a ``fill`` window where :func:`measures_fill` says so (a serving engine's
    whole-batch prefill); the prefill and decode windows are the same with it or without.

    With ``switch`` (a phase lever), each decode trial switches to the decode setting after its cache-filling
    prefill and back to the prefill setting after its decode windows, each switch a window of its own.
    With ``marks``, the meter's time at the warm-up's start and end goes there (``warmup_start_s``,
    ``warmup_end_s``): where a job's time goes before its first window.
    """
    windows: list[Window] = []
    b, ctx = workload.batch, workload.context

    if s.idle_s > 0:
        t0, t1, e = measured_span(meter, workload, lambda: workload.idle(s.idle_s))
        windows.append(Window("idle", 0, t0, t1, e, tokens=0, repetitions=1, steps=0))

    n_seq = s.prefill_sequences(b, ctx)
    if marks is not None:
        marks["warmup_start_s"] = meter.now()
    t_prefill, t_step = workload.warmup(s.warmup_runs, n_seq)
    if marks is not None:
        marks["warmup_end_s"] = meter.now()
    log.info("warm-up done: prefill %.4f s (%d of %d sequences), decode step %s", t_prefill, n_seq, b,
             "timed in the first decode trial's lead-in" if t_step is None else f"{t_step:.5f} s")
    windows += _prefill_windows(meter, workload, s, n_seq, t_prefill)

    def decode_step() -> int:
        before = workload.decoded_tokens()
        workload.decode(ctx if workload.rewinds else workload.next_position(), 1)
        return workload.decoded_tokens() - before

    def prefill_once() -> int:
        workload.prefill(n_seq)
        return n_seq * ctx

    trial_fn = _decode_trial_rewinding if workload.rewinds else _decode_trial_forward
    for trial in range(s.decode_trials):
        if measures_fill(workload):  # the batch's prefill as the engine serves it: a window of its own
            t0, t1, e = measured_span(meter, workload, lambda: workload.fill_cache(n_seq))
            windows.append(Window("fill", trial, t0, t1, e, tokens=b * ctx, repetitions=1, steps=1,
                                  context_start=0, context_end=ctx))
        elif refills(workload, s, trial, switch is not None):
            workload.fill_cache(n_seq)  # outside every window
        try:
            if switch is not None:  # the phase boundary: decode starts under its own setting
                windows.append(switch.window(meter, workload, "decode", trial, decode_step))
            new, t_step = trial_fn(meter, workload, s, trial, t_step)
        finally:
            workload.end_decode()
        windows += new
        log.info("decode trial %d/%d done (%d windows)", trial + 1, s.decode_trials, len(new))
        if s.pause_s:
            workload.idle(s.pause_s)
        if switch is not None:  # and back: the next request's prefill
            windows.append(switch.window(meter, workload, "prefill", trial, prefill_once))
    return windows
