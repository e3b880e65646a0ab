"""vLLM as a measurement workload: the same protocol, windows cut from the engine's own step API.

vLLM runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) with asynchronous scheduling off, so one
``step()`` schedules and executes one batch and returns once its tokens are on the host: a window opened
before a step and closed after another holds exactly the GPU work of the steps in between. Weights are
vLLM's dummy weights (uniform +-1e-3) from a folder holding only the preset's ``config.json``; prompts are
distinct random token ids; prefix caching is off; sampling is greedy with ``ignore_eos``; CUDA graphs are
captured for the measured batch sizes.

With asynchronous scheduling (vLLM's default, ``vllm.async_scheduling``) a ``step()`` launches the next batch
and returns the previous one's tokens: a window then holds the GPU work of the batches launched inside it
(the device is synchronised at both ends), which is as many batches as steps were called, and token counts
lag one step behind the launches; positions account for the batch in flight.

A serving engine cannot rewind its requests, so decode positions only move forward (``rewinds = False``):
``fill_cache`` adds one request per sequence and steps until each has its first token (the batch's prefill,
measured as a ``fill`` window that no estimate uses); every later step is a decode step of all of them, and
the protocol cuts its windows out of those steps. A step that does not advance every sequence by one token
(a preemption, a request that ended) is counted and flags its window ``irregular_steps``.

vLLM is an optional extra (``pip install 'phase-energy[vllm]'``); nothing here imports it before a workload
is built.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from phase_energy.config import schema_defaults
from phase_energy.engines import env_choice
from phase_energy.model.checkpoint import Checkpoint, weights_label
from phase_energy.model.hfconfig import VLLM_ARCHITECTURES, write_model_folder
from phase_energy.model.presets import ArchConfig, get_preset

log = logging.getLogger(__name__)

# set before vllm is imported: the engine core in this process, no usage reports, no network
VLLM_ENVIRONMENT = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_NO_USAGE_STATS": "1",
    "VLLM_DO_NOT_TRACK": "1",
    # the FlashInfer sampler is an optional package; greedy sampling never uses it
    "VLLM_USE_FLASHINFER_SAMPLER": "0",
    "HF_HUB_OFFLINE": "1",
}
MAX_IDLE_STEPS = 10_000  # steps without progress before a phase is declared stuck


class VllmUnavailable(RuntimeError):
    """vLLM is not installed (or not importable) where the job runs."""


class DoesNotFit(RuntimeError):
    """The engine's KV cache cannot hold the point's sequences; the message says how much is missing.

    ``capacity`` and ``need``: the tokens the cache holds and the tokens the point needs, where known.
    """

    def __init__(self, message: str, capacity: float | None = None, need: int | None = None):
        super().__init__(message)
        self.capacity, self.need = capacity, need


_V = schema_defaults("vllm")  # the defaults are the config schema's, written nowhere else
# Tokens per engine step assumed when the config leaves the prefill chunk to vLLM (null): a small chunk means
# more steps of prefill skew, so the sequence limit sized from it is on the safe side.
ASSUMED_CHUNK_TOKENS = 8192


@dataclass(frozen=True)
class VllmSettings:
    """The config's ``vllm:`` section."""

    gpu_memory_utilization: float = _V["gpu_memory_utilization"]
    max_num_batched_tokens: int | None = _V["max_num_batched_tokens"]
    compilation_mode: int = _V["compilation_mode"]
    async_scheduling: bool = _V["async_scheduling"]
    attention_backend: str | None = _V["attention_backend"]

    @property
    def chunk_tokens(self) -> int:
        """Tokens one engine step may schedule (the prefill chunk) as sizing assumes it."""
        return self.max_num_batched_tokens or ASSUMED_CHUNK_TOKENS

    @classmethod
    def from_config(cls, section: dict[str, Any] | None) -> VllmSettings:
        """From the validated config's ``vllm`` mapping."""
        known = {k: v for k, v in (section or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)


def prefill_skew_steps(batch: int, context: int, chunk_tokens: int) -> int:
    """Steps by which requests that finished their prefill early may run ahead of the last one."""
    return math.ceil(batch * context / max(chunk_tokens, 1)) + 2


def max_model_len(context: int, positions: int, batch: int, chunk_tokens: int) -> int:
    """The engine's sequence limit for a point: prompt, decode positions and the prefill skew."""
    return context + positions + prefill_skew_steps(batch, context, chunk_tokens) + 2


STEP_TIMINGS = ("lead-in", "warm-up")


def decode_step_timing() -> str:
    """Where the decode step that sizes the windows is timed (``PHASE_ENERGY_VLLM_STEP_TIMING``).

    "lead-in" (the default): in the first decode trial's lead-in. "warm-up": in a decode trial of the warm-up
    of its own, which prefills the whole batch once more (how points were measured up to 2026-12-02; kept
    for the before-and-after on a card).
    """
    return env_choice("PHASE_ENERGY_VLLM_STEP_TIMING", STEP_TIMINGS, "lead-in")


def _register_missing_configs() -> None:
    """Give transformers a config class for MiniCPM3 when its version has none (vLLM needs only the fields)."""
    from transformers import AutoConfig, PretrainedConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if "minicpm3" in CONFIG_MAPPING:
        return

    class MiniCPM3Config(PretrainedConfig):  # only carries the config.json's keys
        model_type = "minicpm3"

    AutoConfig.register("minicpm3", MiniCPM3Config)


class VllmEngine:
    """One vLLM engine for one preset; workloads of any batch up to ``max_num_seqs`` run on it."""

    def __init__(self, arch: str | ArchConfig, max_num_seqs: int, max_model_len: int, capture_sizes: list[int],
                 settings: VllmSettings | None = None, seed: int = 0, folder: str | Path | None = None,
                 checkpoint: Checkpoint | None = None):
        for k, v in VLLM_ENVIRONMENT.items():
            os.environ.setdefault(k, v)
        try:
            import vllm
            from vllm import LLM
        except ImportError as e:
            raise VllmUnavailable(f"engine vllm needs vLLM 0.26: pip install 'phase-energy[vllm]' ({e})") from e
        self.cfg = checkpoint.arch if checkpoint is not None else arch if isinstance(arch, ArchConfig) \
            else get_preset(arch)
        self.checkpoint = checkpoint
        self.settings = settings or VllmSettings()
        self.version = vllm.__version__
        self.max_num_seqs, self.max_model_len = max_num_seqs, max_model_len
        if checkpoint is not None:  # the checkpoint's own folder, its weights loaded by vLLM (load_format auto)
            self.folder, load_format = checkpoint.folder, "auto"
            self.weights: dict[str, Any] = checkpoint.metadata()
        else:  # a folder with the preset's config.json only: vLLM's dummy weights
            self.folder = write_model_folder(self.cfg,
                                             folder or tempfile.mkdtemp(prefix=f"phase-energy-{self.cfg.name}-"))
            load_format, self.weights = "dummy", {"source": "random", "init": "dummy"}
        s = self.settings
        sizes = sorted(set(capture_sizes))
        compilation: dict[str, Any] = {"mode": s.compilation_mode, "cudagraph_capture_sizes": sizes}
        kwargs: dict[str, Any] = dict(
            model=str(self.folder), load_format=load_format, skip_tokenizer_init=True, dtype="bfloat16", seed=seed,
            max_model_len=max_model_len, max_num_seqs=max_num_seqs, enable_prefix_caching=False,
            enable_chunked_prefill=True, gpu_memory_utilization=s.gpu_memory_utilization,
            async_scheduling=s.async_scheduling, disable_log_stats=True, generation_config="vllm",
            compilation_config=compilation)
        if self.cfg.gpus > 1:  # the preset's GPUs, tensor parallel (one GPU: vLLM's default, left unset)
            kwargs["tensor_parallel_size"] = self.cfg.gpus
        if s.attention_backend is not None:  # vLLM's choice unless the config names one
            kwargs["attention_backend"] = s.attention_backend
        if s.max_num_batched_tokens is not None:
            kwargs["max_num_batched_tokens"] = max(s.max_num_batched_tokens, max_num_seqs, *sizes)
        if self.cfg.family == "qwen3_5":  # the multimodal class without its vision tower; FlashInfer is optional
            kwargs.update(language_model_only=True, gdn_prefill_backend="triton")
        _register_missing_configs()
        log.info("vllm %s: starting %s (%s) for up to %d sequences of %d tokens", self.version, self.cfg.name,
                 VLLM_ARCHITECTURES[self.cfg.family], max_num_seqs, max_model_len)
        t0 = time.monotonic()
        self.llm = LLM(**kwargs)
        self.start_s = time.monotonic() - t0
        self.engine = self.llm.llm_engine
        self.async_scheduling = bool(self.engine.vllm_config.scheduler_config.async_scheduling)
        log.info("vllm engine started in %.1f s", self.start_s)

    def synchronize(self) -> None:
        """Wait until the device has finished all queued work."""
        import torch

        torch.cuda.synchronize()

    def clock(self) -> float:
        """Seconds on the clock the workload times its warm-up with."""
        return time.perf_counter()

    def idle(self, seconds: float) -> None:
        """Leave the GPU idle with the engine up."""
        time.sleep(seconds)

    def request_params(self, max_tokens: int) -> Any:
        """Sampling of a measured request: greedy, past any end-of-sequence token, new tokens per step."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(temperature=0.0, ignore_eos=True, max_tokens=max_tokens, detokenize=False,
                              output_kind=RequestOutputKind.DELTA)

    def prompt(self, ids: list[int]) -> Any:
        """A prompt of token ids as the engine takes it."""
        try:
            from vllm.inputs import tokens_input
        except ImportError:  # older spelling
            return {"prompt_token_ids": ids}
        return tokens_input(ids)

    @property
    def vllm_config(self) -> Any:
        """The engine's resolved configuration."""
        return self.engine.vllm_config

    def kv_capacity_tokens(self) -> float | None:
        """Tokens of context the KV cache holds over all sequences (None when vLLM does not say)."""
        cc = self.vllm_config.cache_config
        if cc.kv_cache_max_concurrency is not None:
            return float(cc.kv_cache_max_concurrency) * self.max_model_len
        return float(cc.kv_cache_size_tokens) if cc.kv_cache_size_tokens is not None else None

    def attention_backends(self) -> list[str]:
        """Names of the attention (and state) backends the layers use."""
        ctx = self.vllm_config.compilation_config.static_forward_context
        names = set()
        for layer in ctx.values():
            get = getattr(layer, "get_attn_backend", None)
            if get is not None:
                try:
                    names.add(get().get_name())
                except Exception as e:  # a layer kind without a backend name: record that, do not fail
                    names.add(f"unknown ({type(e).__name__})")
        return sorted(names)

    def info(self) -> dict[str, Any]:
        """Facts for the trace metadata: version, backends, compilation and CUDA-graph settings, start time."""
        vc = self.vllm_config
        cc = vc.compilation_config
        return {
            "vllm_version": self.version, "model_class": VLLM_ARCHITECTURES[self.cfg.family],
            "engine_start_s": self.start_s, "attention_backends": self.attention_backends(),
            "compilation_mode": str(cc.mode), "cudagraph_mode": str(cc.cudagraph_mode),
            "cudagraph_capture_sizes": list(cc.cudagraph_capture_sizes or []),
            "compilation_time_s": float(cc.compilation_time or 0.0),
            "async_scheduling": bool(vc.scheduler_config.async_scheduling),
            "max_num_seqs": vc.scheduler_config.max_num_seqs,
            "max_num_batched_tokens": vc.scheduler_config.max_num_batched_tokens,
            "max_model_len": vc.model_config.max_model_len,
            "use_mla": bool(getattr(vc.model_config, "use_mla", False)),
            "use_v2_model_runner": bool(getattr(vc, "use_v2_model_runner", False)),
            "block_size": vc.cache_config.block_size, "kv_capacity_tokens": self.kv_capacity_tokens(),
            "prefix_caching": bool(vc.cache_config.enable_prefix_caching),
            "weights": "dummy (vLLM: uniform +-1e-3)" if self.checkpoint is None else weights_label(self.weights),
        }


class VllmWorkload:
    """Prefill and decode of one preset at one batch and context through a :class:`VllmEngine`."""

    rewinds = False
    # fill_cache is the batch's prefill as the engine serves it (its requests added, stepped to their first
    # tokens): the protocol measures it as a ``fill`` window (protocol.measures_fill)
    fill_is_prefill = True

    def __init__(self, engine: VllmEngine, batch: int, context: int, max_output: int, seed: int = 0,
                 positions: int | None = None):
        self.vllm = engine
        self.engine = engine.engine
        self.cfg = engine.cfg
        self.batch, self.context, self.max_output = batch, context, max_output
        if batch > engine.max_num_seqs:
            raise ValueError(f"batch {batch} exceeds the engine's max_num_seqs {engine.max_num_seqs}")
        chunk = engine.vllm_config.scheduler_config.max_num_batched_tokens
        # requests that finish their prefill early decode while later ones still prefill: they run ahead
        self.skew_bound = prefill_skew_steps(batch, context, chunk)
        self.prefill_unit = max(1, chunk // max(context, 1))  # whole prompts one engine step's chunk holds
        positions = positions if positions is not None else max_output
        self.max_position = min(engine.max_model_len - 2 - self.skew_bound, context + positions)
        if self.max_position < context:
            raise ValueError(f"max_model_len {engine.max_model_len} leaves no decode position after context "
                             f"{context} (prefill skew {self.skew_bound} steps)")
        capacity = engine.kv_capacity_tokens()
        need = batch * (self.max_position + 1 + self.skew_bound)
        if capacity is not None and self.cfg.paradigm != "mamba2" and capacity < need:
            raise DoesNotFit(f"memory: vLLM's KV cache holds {capacity:.0f} tokens, the point needs {need} "
                             f"({batch} sequences x {self.max_position + 1 + self.skew_bound} positions)",
                             capacity=capacity, need=need)
        rng = np.random.default_rng(seed + 1)
        # distinct prompts, made once, outside every window (prefix caching is off, so reuse hits no cache)
        self._prompts = [p.tolist() for p in rng.integers(0, self.cfg.vocab, size=(batch, context), dtype=np.int64)]
        self._next_prompt = 0
        self._serial = 0
        self._open: dict[str, int] = {}  # decode requests -> tokens generated
        self._position: int | None = None
        self._irregular = 0
        self._decoded = 0
        self.skew_seen = 0
        self.step_timing = decode_step_timing()

    # ------------------------------------------------------------------ requests
    def _add(self, max_tokens: int) -> str:
        self._serial += 1
        rid = f"r{self._serial}"
        ids = self._prompts[self._next_prompt % len(self._prompts)]
        self._next_prompt += 1
        self.engine.add_request(rid, self.vllm.prompt(ids), self.vllm.request_params(max_tokens))
        return rid

    def _step(self) -> tuple[dict[str, int], set[str]]:
        """One engine step: new tokens per request id, and the ids that finished."""
        tokens, finished = {}, set()
        for o in self.engine.step():
            tokens[o.request_id] = len(o.outputs[0].token_ids) if o.outputs else 0
            if o.finished:
                finished.add(o.request_id)
        return tokens, finished

    # ------------------------------------------------------------------ Workload protocol
    def prefill(self, sequences: int | None = None) -> None:
        """Prefill ``sequences`` new prompts (default: the batch) to their first token; they end there."""
        n = self.batch if sequences is None else min(sequences, self.batch)
        pending = {self._add(max_tokens=1) for _ in range(n)}
        idle = 0
        while pending:
            tokens, done = self._step()
            idle = 0 if tokens or done else idle + 1
            if idle > MAX_IDLE_STEPS:
                raise RuntimeError(f"vllm prefill: {len(pending)} requests made no progress in {idle} steps")
            pending -= done

    def fill_cache(self, sequences: int) -> None:
        """Start one request per sequence and step until each has its first token (the whole batch's prefill)."""
        if self._open:
            raise RuntimeError("vllm: a decode trial is open; end_decode() first")
        max_tokens = self.max_position - self.context + 2 + self.skew_bound
        self._open = {self._add(max_tokens=max_tokens): 0 for _ in range(self.batch)}
        idle = 0
        while min(self._open.values()) == 0:
            tokens, done = self._step()
            if done & set(self._open):
                raise RuntimeError(f"vllm: requests {sorted(done & set(self._open))[:4]} ended during the prefill "
                                   "of a decode trial")
            for rid, n in tokens.items():
                if rid in self._open:
                    self._open[rid] += n
            idle = 0 if tokens else idle + 1
            if idle > MAX_IDLE_STEPS:
                raise RuntimeError("vllm: the decode trial's prefill made no progress")
        gen = list(self._open.values())
        self.skew_seen = max(self.skew_seen, max(gen) - min(gen))
        # with asynchronous scheduling the step that returned the last first token launched one more batch:
        # the slowest sequence's position ``context`` is in flight, the next step decodes the one after it
        self._position = self.context + min(gen) - 1 + (1 if self.vllm.async_scheduling else 0)

    def decode(self, position: int, steps: int) -> None:
        """``steps`` decode steps of every open request, from the slowest one's ``position``."""
        if self._position is None:
            raise RuntimeError("vllm decode: no decode trial is open (fill_cache first)")
        if position != self._position:
            raise ValueError(f"vllm decode: position {position} requested, the requests are at {self._position}; "
                             "positions only move forward")
        if position + steps - 1 > self.max_position:
            raise ValueError(f"vllm decode: position {position + steps - 1} passes max_position {self.max_position}")
        for _ in range(steps):
            tokens, done = self._step()
            advanced = [tokens.get(rid, 0) for rid in self._open]
            if any(n != 1 for n in advanced) or done & set(self._open):
                self._irregular += 1
            for rid, n in zip(list(self._open), advanced, strict=True):
                self._open[rid] += n
            self._decoded += sum(advanced)
        self._position = position + steps

    def end_decode(self) -> None:
        """Abort the trial's requests and let the engine drain."""
        if self._open:
            self.engine.abort_request(list(self._open))
        self._open = {}
        self._position = None
        for _ in range(MAX_IDLE_STEPS):
            if not self.engine.has_unfinished_requests():
                return
            self.engine.step()
        raise RuntimeError("vllm: requests still unfinished after the trial was aborted")

    def warmup(self, runs: int, prefill_sequences: int | None = None) -> tuple[float, float | None]:
        """Untimed prefills, and with ``step_timing`` "warm-up" one short decode trial.

        Returns (prefill s of ``prefill_sequences``, decode step s); the step is ``None`` with "lead-in": the
        protocol times it in the first decode trial's lead-in, so the warm-up needs no whole-batch prefill.
        """
        t_prefill = 0.0
        for _ in range(max(runs, 1)):
            t0 = self.vllm.clock()
            self.prefill(prefill_sequences)
            self.synchronize()
            t_prefill = self.vllm.clock() - t0
        if self.step_timing == "lead-in":
            return t_prefill, None
        self.fill_cache(self.batch)
        pos = self.context if self._position is None else self._position
        warm = max(0, min(2, self.max_position - pos))
        if warm:
            self.decode(pos, warm)  # the decode graph's first replays, untimed
            pos += warm
        n = max(1, min(16, self.max_position - pos + 1))
        self.synchronize()
        t0 = self.vllm.clock()
        self.decode(pos, n)
        self.synchronize()
        t_step = (self.vllm.clock() - t0) / n
        self.end_decode()
        return t_prefill, t_step

    def idle(self, seconds: float) -> None:
        """Leave the GPU idle with the engine up."""
        self.vllm.idle(seconds)

    def synchronize(self) -> None:
        """Wait for the device (a step already waits for its tokens; vLLM may queue small kernels after)."""
        self.vllm.synchronize()

    def irregular_steps(self) -> int:
        """Decode steps so far that did not give every open request exactly one token."""
        return self._irregular

    def next_position(self) -> int:
        """The slowest open request's next decode position."""
        if self._position is None:
            raise RuntimeError("vllm: no decode trial is open (fill_cache first)")
        return self._position

    def decoded_tokens(self) -> int:
        """Tokens the decode steps gave the open requests so far."""
        return self._decoded

    def info(self) -> dict[str, Any]:
        """Facts for the trace metadata."""
        return {**self.vllm.info(), "prefill_skew_steps_max": self.skew_seen, "irregular_steps": self._irregular,
                "max_position": self.max_position, "decode_step_timing": self.step_timing}
