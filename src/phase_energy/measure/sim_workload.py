"""Simulated workloads: an engine's prefill and decode, and CLEAR's components, as work on a :class:`SimGPU`.

The work of each call is the cost model's FLOPs, bytes and kernel count (:mod:`phase_energy.model.costmodel`);
the card (:mod:`phase_energy.measure.sim`) turns it into time, power and sensor readings.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from phase_energy.measure.sim import SimGPU, Work
from phase_energy.model.costmodel import MODEL, CostModel, prefill_group
from phase_energy.model.presets import ArchConfig

DECODE_WORKS_KEPT = 64  # decode works kept for their positions (a forward-only engine's positions never repeat)


class SimWorkload:
    """An engine's prefill and decode of one architecture, run on a :class:`SimGPU`.

    Both engines share the physics (FLOPs, bytes and kernels of the cost model, with each engine's cache
    layout); they differ in how a decode trial runs. The native engine rewinds its static cache and fills
    it by copying prefilled rows; a serving engine (``vllm``) prefills every sequence and its positions only
    move forward. The simulator does not model vLLM's own kernels: simulated vllm and native points differ
    only by the cache layout and these protocol differences.
    """

    def __init__(self, gpu: SimGPU, cfg: ArchConfig, batch: int, context: int, engine: str = "native",
                 max_position: int | None = None):
        self.gpu = gpu
        self.cfg = cfg
        self.cost = CostModel(cfg, engine=engine)
        self.batch = batch
        self.context = context
        self.engine = engine
        self.rewinds = engine == "native"
        self.fill_is_prefill = not self.rewinds  # a serving engine's fill is the batch's prefill: measured
        self.prefill_unit = prefill_group(batch, context)  # prompts the engine prefills in one piece
        self.max_position = max_position if max_position is not None else context + 1_000_000
        self._position: int | None = None  # forward-only: the next decode position of the open requests
        self._decoded = 0
        self._decode_works: dict[tuple[int, int], Work] = {}
        kpb = gpu.p.kernels_per_block
        extra = gpu.p.kernels_mla_extra if cfg.paradigm == "mla" else 0
        self.kernels = sum(kpb[k] + (extra if k == "A" else 0) for k in cfg.layer_pattern) + gpu.p.kernels_head

    def decode_work(self, position: int, steps: int) -> Work:
        """The work of ``steps`` decode steps from ``position`` (FLOPs and bytes per step).

        The same positions again give the same object (a window's repetitions): the card computes the
        terms of a work it has seen once.
        """
        work = self._decode_works.get((position, steps))
        if work is None:
            if len(self._decode_works) >= DECODE_WORKS_KEPT:
                self._decode_works.clear()
            work = self._decode_works[position, steps] = self._new_decode_work(position, steps)
        return work

    def _new_decode_work(self, position: int, steps: int) -> Work:
        pos = position + np.arange(steps)
        flops = np.array([self.cost.decode_flops(self.batch, int(p)) for p in (pos[0], pos[-1])])
        nbytes = np.array([self.cost.decode_bytes(self.batch, int(p)) for p in (pos[0], pos[-1])])
        # both are affine in the position: interpolate instead of evaluating every step
        frac = (pos - pos[0]) / max(pos[-1] - pos[0], 1)
        return Work(flops[0] + frac * (flops[1] - flops[0]), nbytes[0] + frac * (nbytes[1] - nbytes[0]),
                    rows=float(self.batch), kernels=self.kernels)

    def prefill_work(self, sequences: int) -> Work:
        """The work of one prefill of ``sequences`` prompts (issued kernel by kernel)."""
        return Work(np.array([self.cost.prefill_flops(sequences, self.context)]),
                    np.array([self.cost.prefill_bytes(sequences, self.context)]),
                    rows=float(sequences * self.context), kernels=self.kernels,
                    efficiency=self.gpu.p.prefill_efficiency, eager=True)

    def warmup(self, runs: int, prefill_sequences: int | None = None) -> tuple[float, float]:
        """Simulated compilation and capture (low power), then untimed runs."""
        self.gpu.idle(2.0)
        t_prefill = 0.0
        for _ in range(max(runs, 1)):
            t_prefill = self.gpu.run(self.prefill_work(prefill_sequences or self.batch))
        t_step = self.gpu.run(self.decode_work(self.context, 8)) / 8
        return t_prefill, t_step

    def prefill(self, sequences: int | None = None) -> None:
        """Prefill the context for the first ``sequences`` (default: the whole batch)."""
        self.gpu.run(self.prefill_work(min(sequences or self.batch, self.batch)))

    def fill_cache(self, sequences: int) -> None:
        """As the engine does it.

        Native: prefill one group of prompts, then copy its cache rows over the rest (read + write). A
        serving engine prefills every sequence, in groups of the prefill chunk.
        """
        if not self.rewinds:
            for start in range(0, self.batch, prefill_group(self.batch, self.context)):
                self.prefill(min(prefill_group(self.batch, self.context), self.batch - start))
            self._position = self.context
            return
        n = min(sequences, prefill_group(self.batch, self.context))
        self.prefill(n)
        if n < self.batch:
            copy = 2.0 * self.cost.cache_bytes(self.batch - n, self.context)
            self.gpu.run(Work(np.array([0.0]), np.array([copy]), rows=1.0, kernels=len(self.cfg.layer_pattern)))

    def decode(self, position: int, steps: int) -> None:
        """Decode ``steps`` tokens from ``position`` (forward-only: the requests' current position)."""
        if not self.rewinds:
            if self._position != position:
                raise ValueError(f"{self.engine} decode: position {position} requested, the requests are at "
                                 f"{self._position}; positions only move forward")
            if position + steps - 1 > self.max_position:
                raise ValueError(f"decode to position {position + steps - 1} passes max_position {self.max_position}")
            self._position = position + steps
        self._decoded += self.batch * steps
        self.gpu.run(self.decode_work(position, steps))

    def end_decode(self) -> None:
        """Close the decode trial (forward-only: the requests end)."""
        self._position = None

    def irregular_steps(self) -> int:
        """The simulation never preempts."""
        return 0

    def next_position(self) -> int:
        """The next decode position (forward-only: of the open requests)."""
        return self.context if self._position is None else self._position

    def decoded_tokens(self) -> int:
        """Tokens of the decode steps so far."""
        return self._decoded

    def idle(self, seconds: float) -> None:
        """Idle the simulated card."""
        self.gpu.idle(seconds)

    def synchronize(self) -> None:
        """Nothing to wait for: the timeline is already complete."""


class SimComponents:
    """CLEAR's components on the simulated card: each call is the cost model's FLOPs and bytes of it.

    A :class:`~phase_energy.measure.clear.ComponentWorkload`; the whole model's call is the engine's own
    prefill or decode step (:class:`SimWorkload`).
    """

    KERNELS: ClassVar[dict[str, int]] = {"embedding": 1, "norm": 2, "attention": 8, "gdn": 14, "mamba2": 10,
                                         "mlp": 3, "head": 3}

    def __init__(self, gpu: SimGPU, cfg: ArchConfig, batch: int, context: int):
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
        n = self.sequences(self.phase)
        prefill = self.phase == "prefill"
        if unit == MODEL:
            w = self._whole.prefill_work(n) if prefill else self._whole.decode_work(self.context, 1)
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

    def info(self) -> dict[str, Any]:
        """Nothing to add to the metadata."""
        return {}
