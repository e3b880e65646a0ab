"""A recording stand-in for vLLM's offline step API, running its steps on the simulated card.

vLLM cannot run on these CPUs, so the CPU tests drive :class:`phase_energy.engines.vllm.VllmWorkload` through
this stand-in instead. It schedules as vLLM 0.26's scheduler does (running requests first: one decode token
each, or the next chunk of an unfinished prefill; then waiting requests fill the step's leftover token
budget, at most ``max_num_seqs`` running; a request that no longer fits in the KV cache is preempted and
prefilled again), runs each step's FLOPs and bytes on a :class:`~phase_energy.measure.sim.SimGPU` so that windows
and energy come from the simulator's physics, and records every step (start, end, prefill and decode
tokens) so that tests can check what each window held.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from phase_energy.measure.sim import SimGPU, Work
from phase_energy.model.costmodel import CostModel
from phase_energy.model.presets import ArchConfig


@dataclass
class _Request:
    rid: str
    prompt_len: int
    max_tokens: int
    computed: int = 0  # tokens whose KV is in the cache
    generated: int = 0
    preemptions: int = 0

    @property
    def target(self) -> int:
        """Tokens to compute before the next sample: the prompt plus what was generated before a preemption."""
        return self.prompt_len + max(self.generated - 1, 0) if self.preemptions else self.prompt_len


@dataclass
class StepRecord:
    """What one step ran."""

    start_s: float
    end_s: float
    prefill_tokens: int
    decode_tokens: int
    requests: int


@dataclass
class FakeLLMEngine:
    """``add_request`` / ``step`` / ``abort_request`` / ``has_unfinished_requests`` as vLLM's LLMEngine."""

    gpu: SimGPU
    cfg: ArchConfig
    max_num_seqs: int
    max_num_batched_tokens: int
    kv_capacity_tokens: int | None = None
    async_scheduling: bool = False  # vLLM's default: a step launches a batch and returns the previous one's
    records: list[StepRecord] = field(default_factory=list)
    waiting: list[_Request] = field(default_factory=list)
    running: list[_Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cost = CostModel(self.cfg, engine="vllm")
        self._held: list[Any] = []  # asynchronous scheduling: the outputs of the batch still "in flight"

    def add_request(self, request_id: str, prompt: Any, params: Any) -> str:
        """Queue a request (prompt: ``{"prompt_token_ids": [...]}``)."""
        self.waiting.append(_Request(request_id, len(prompt["prompt_token_ids"]), params.max_tokens))
        return request_id

    def abort_request(self, request_ids: list[str]) -> None:
        """Drop requests wherever they are."""
        ids = set(request_ids)
        self.waiting = [r for r in self.waiting if r.rid not in ids]
        self.running = [r for r in self.running if r.rid not in ids]

    def has_unfinished_requests(self) -> bool:
        """Whether any request is waiting or running."""
        return bool(self.waiting or self.running)

    def _kv_used(self) -> int:
        return sum(r.computed for r in self.running)

    def step(self) -> list[Any]:
        """Run one batch; return its outputs, or (asynchronous scheduling) those of the batch before it."""
        outputs = self._run_batch()
        if not self.async_scheduling:
            return outputs
        held, self._held = self._held, outputs
        return held

    def _run_batch(self) -> list[Any]:
        """Schedule and run one batch on the simulated card; return outputs of requests that got tokens."""
        budget = self.max_num_batched_tokens
        plan: list[tuple[_Request, int]] = []

        def fits(n: int) -> bool:
            need = self._kv_used() + sum(k for _, k in plan) + n
            return self.kv_capacity_tokens is None or need <= self.kv_capacity_tokens

        def preempt(victim: _Request) -> None:
            nonlocal budget, plan
            self.running.remove(victim)
            victim.computed, victim.preemptions = 0, victim.preemptions + 1
            self.waiting.insert(0, victim)
            budget += sum(k for q, k in plan if q is victim)
            plan = [(q, k) for q, k in plan if q is not victim]

        for r in list(self.running):  # running first: a decode token or the next prefill chunk
            if r not in self.running:
                continue
            n = 1 if r.computed >= r.target else min(r.target - r.computed, budget)
            if n <= 0:
                continue
            while not fits(n) and self.running[-1] is not r:  # the newest running request gives way
                preempt(self.running[-1])
            if not fits(n):
                preempt(r)
                continue
            plan.append((r, n))
            budget -= n
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            r = self.waiting[0]
            n = min(r.target - r.computed, budget)
            if not fits(n):
                break
            self.waiting.pop(0)
            self.running.append(r)
            plan.append((r, n))
            budget -= n
        if not plan:
            return []
        prefill = sum(n for r, n in plan if r.computed < r.target)
        decoders = [r for r, n in plan if r.computed >= r.target]
        pos = float(np.mean([r.computed for r in decoders])) if decoders else 0.0
        flops = self.cost.decode_flops(len(decoders), int(pos)) if decoders else 0.0
        nbytes = self.cost.decode_bytes(len(decoders), int(pos)) if decoders else self.cost.weight_bytes
        if prefill:
            flops += self.cost.prefill_flops(1, prefill)
            nbytes += self.cost.prefill_bytes(1, prefill) - self.cost.weight_bytes
        t0 = self.gpu.t
        self.gpu.run(Work(np.array([flops]), np.array([nbytes]), rows=float(prefill + len(decoders)),
                          kernels=4 * len(self.cfg.layer_pattern)))
        self.records.append(StepRecord(t0, self.gpu.t, prefill, len(decoders), len(plan)))
        outputs = []
        for r, n in plan:
            r.computed += n
            if r.computed >= r.target:  # a sample: the prefill's last chunk or a decode step
                r.generated += 1
                done = r.generated >= r.max_tokens
                outputs.append(SimpleNamespace(request_id=r.rid, finished=done,
                                               outputs=[SimpleNamespace(token_ids=[7])]))
                if done:
                    self.running.remove(r)
        return outputs


class FakeVllmEngine:
    """What :class:`~phase_energy.engines.vllm.VllmWorkload` uses of a ``VllmEngine``, over a FakeLLMEngine."""

    def __init__(self, gpu: SimGPU, cfg: ArchConfig, max_num_seqs: int, max_model_len: int,
                 max_num_batched_tokens: int = 16384, kv_capacity_tokens: int | None = None,
                 async_scheduling: bool = False):
        self.cfg = cfg
        self.max_num_seqs, self.max_model_len = max_num_seqs, max_model_len
        self.async_scheduling = async_scheduling
        self.engine = FakeLLMEngine(gpu, cfg, max_num_seqs, max_num_batched_tokens, kv_capacity_tokens,
                                    async_scheduling)
        self.vllm_config = SimpleNamespace(scheduler_config=SimpleNamespace(
            max_num_batched_tokens=max_num_batched_tokens))
        self._capacity = kv_capacity_tokens

    def kv_capacity_tokens(self) -> float | None:
        """The stand-in's KV capacity (None: unbounded)."""
        return None if self._capacity is None else float(self._capacity)

    def request_params(self, max_tokens: int) -> Any:
        """Only the field the stand-in reads."""
        return SimpleNamespace(max_tokens=max_tokens)

    def prompt(self, ids: list[int]) -> Any:
        """The raw prompt form."""
        return {"prompt_token_ids": ids}

    def synchronize(self) -> None:
        """The simulated timeline is complete after every step."""

    def clock(self) -> float:
        """The simulated card's clock."""
        return self.engine.gpu.t

    def idle(self, seconds: float) -> None:
        """The simulated card idles."""
        self.engine.gpu.idle(seconds)

    def info(self) -> dict[str, Any]:
        """Marks traces from the stand-in."""
        return {"vllm_version": "stand-in (tests only)", "engine_start_s": 0.0}
