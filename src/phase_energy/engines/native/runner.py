"""The engine as a measurement workload: random or checkpoint weights on the GPU, static caches, CUDA-graph decode.

The decode step is captured once in a CUDA graph (attention reads the cache up to a device-side length,
so the shapes never change); each replay is one launch with no host work; the next token is chosen
greedily inside the graph and fed to the following step. Nothing synchronises inside a measured
window: the protocol synchronises at the window's ends only.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import torch

import phase_energy.engines.native.attention as attention
import phase_energy.engines.native.recurrent as recurrent
from phase_energy.engines import env_choice
from phase_energy.engines.compiler import set_compile_caches
from phase_energy.engines.native.hf import build_from_checkpoint
from phase_energy.engines.native.transformer import Block, Transformer, init_random_, replicate_rows_
from phase_energy.model.checkpoint import Checkpoint, weights_label
from phase_energy.model.costmodel import CostModel, prefill_group
from phase_energy.model.presets import get_preset

log = logging.getLogger(__name__)
COMPILE_SCOPES = ("step", "block")


def capture_graph(fn: Callable[[], Any], calls: int = 1, warm: int = 2,
                  reset: Callable[[], Any] | None = None) -> torch.cuda.CUDAGraph:
    """A CUDA graph of ``calls`` back-to-back calls of ``fn``.

    ``warm`` calls run first on a side stream, so that Triton's autotuning and lazy initialisation happen
    outside the capture; ``reset`` (if given) runs after each of them and after the capture (the decode step
    puts its position back).
    """
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(warm):
            fn()
            if reset is not None:
                reset()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(calls):
            fn()
    if reset is not None:
        reset()
    return g


class EngineWorkload:
    """Prefill and decode of one preset at one batch and context on one GPU (``Workload`` protocol).

    The cache is static, so decode steps can run at the same positions again (``rewinds``).
    """

    rewinds = True

    def __init__(self, arch: str, batch: int, context: int, max_output: int, seed: int = 0,
                 device: str = "cuda", dtype: torch.dtype = torch.bfloat16, use_graphs: bool = True,
                 compile: bool = True, weight_init: str = "normal", checkpoint: Checkpoint | None = None):
        set_compile_caches()
        if compile and torch.device(device).type == "cuda":
            # compiled as in a process of its own (from the disk caches): the graphs of the engines built
            # before this one in the process (a group's earlier points, of any preset) are dropped before this
            # one's memory is taken, so that a group never reaches Dynamo's recompile limit, past which the
            # block would run eagerly
            torch._dynamo.reset()
        t0 = time.monotonic()
        self.cfg = checkpoint.arch if checkpoint is not None else get_preset(arch)
        self.cost = CostModel(self.cfg)
        self.batch, self.context, self.max_output = batch, context, max_output
        self.prefill_unit = prefill_group(batch, context)  # prompts one prefill call of the model takes
        self.device = torch.device(device)
        self.use_graphs = use_graphs and self.device.type == "cuda"
        self.checkpoint = checkpoint
        # seconds of each part of the build, the device synchronised at each boundary (metadata: build_parts)
        self.build_parts: dict[str, float] = {}
        mark = self._part_timer(t0)
        if checkpoint is not None:  # memory-mapped safetensors straight into the fused weights on the device
            self.model = build_from_checkpoint(self.cfg, checkpoint.folder, checkpoint.files, self.device, dtype)
            self.weights: dict[str, Any] = checkpoint.metadata()
            mark("load_s")
        else:
            with torch.device(self.device):
                self.model = Transformer(self.cfg).to(dtype)
            mark("construct_s")
            init_random_(self.model, seed, weight_init)
            mark("init_s")
            self.model.fuse()
            mark("fuse_s")
            self.weights = {"source": "random", "init": weight_init}
        self.weight_init = weight_init
        self.max_len = context + max_output + 1
        self.max_position = self.max_len - 1
        self.model.setup_caches(batch, self.max_len)
        mark("caches_s")
        gen = torch.Generator(device=self.device).manual_seed(seed + 1)
        self.prompt = torch.randint(0, self.cfg.vocab, (batch, context), device=self.device, generator=gen)
        self.tokens = torch.zeros(batch, 1, dtype=torch.long, device=self.device)
        self.pos = torch.zeros((), dtype=torch.long, device=self.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self._decoded = 0
        # torch.compile fuses the step's elementwise work (norms, RoPE, gates, residuals) into few kernels;
        # the CUDA graph is captured by us around the compiled step
        self.compiled = compile and self.device.type == "cuda"
        # PHASE_ENERGY_COMPILE_MODE picks an Inductor mode (e.g. max-autotune-no-cudagraphs: Triton GEMM
        # templates tuned per shape; slower to start); the graph stays ours
        self.compile_mode = os.environ.get("PHASE_ENERGY_COMPILE_MODE") or None
        # PHASE_ENERGY_COMPILE_SCOPE: ``block`` (the default) compiles one block's forward, shared by every
        # block of a kind (one compile per kind instead of the whole unrolled stack; fusion stops at block
        # boundaries); ``step`` compiles the whole decode step as one graph. On the H200 (Qwen3-4B, batch 32)
        # the first compiled step took 10.7 s per block against 61.4 s per step, at the same step time
        self.compile_scope = env_choice("PHASE_ENERGY_COMPILE_SCOPE", COMPILE_SCOPES, "block")
        self._decode_fn = self.model.decode_step
        if self.compiled and self.compile_scope == "step":
            self._decode_fn = torch.compile(self.model.decode_step, dynamic=False, mode=self.compile_mode)
        elif self.compiled:
            # one code object serves every kind of block (a graph per kind and shape): leave room above
            # Dynamo's default of 8 graphs per code
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
            self.model.decode_block = torch.compile(Block.forward, dynamic=False, mode=self.compile_mode)
        self._prefill_fn = self.model.prefill  # compute-bound GEMMs: eager is close to compiled, and starts sooner
        mark("compile_setup_s")
        self.compile_error: str | None = None
        self.build_s = time.monotonic() - t0
        self.capture_s = 0.0
        self.warmup_parts: dict[str, float] = {}

    def _part_timer(self, t0: float) -> Callable[[str], None]:
        """A function that records the seconds since the last mark (or ``t0``) under a name in ``build_parts``."""
        last = [t0]

        def mark(name: str) -> None:
            self.synchronize()
            now = time.monotonic()
            self.build_parts[name] = now - last[0]
            last[0] = now

        return mark

    def _step(self) -> None:
        logits = self._decode_fn(self.tokens, self.pos)
        self.tokens.copy_(logits[:, -1].argmax(-1, keepdim=True))
        self.pos.add_(1)

    def _capture(self) -> None:
        self.pos.fill_(self.context)
        self.graph = capture_graph(self._step, reset=lambda: self.pos.fill_(self.context))

    def prefill(self, sequences: int | None = None) -> None:
        """Prefill the prompts of the first ``sequences`` (default all), in groups that bound activation memory."""
        n = self.batch if sequences is None else min(sequences, self.batch)
        per = prefill_group(self.batch, self.context)
        for i in range(0, n, per):
            sl = slice(i, min(n, i + per))
            logits = self._prefill_fn(self.prompt[sl], sl)
            self.tokens[sl] = logits[:, -1].argmax(-1, keepdim=True)

    def fill_cache(self, sequences: int) -> None:
        """Fill every row's cache for decode.

        Prefills at most one group of prompts (and at most ``sequences``) and copies their rows over the
        rest: decode reads the same bytes whatever the rows hold.
        """
        n = min(sequences, prefill_group(self.batch, self.context))
        self.prefill(n)
        if n < self.batch:
            self.model.replicate_cache_rows(n)
            replicate_rows_(self.tokens, n)

    def decode(self, position: int, steps: int) -> None:
        """``steps`` decode steps from cache position ``position`` (graph replays, no host sync)."""
        self.pos.fill_(position)
        self._decoded += self.batch * steps
        for _ in range(steps):
            if self.graph is not None:
                self.graph.replay()
            else:
                self._step()

    def end_decode(self) -> None:
        """Nothing to release: the static cache stays."""

    def irregular_steps(self) -> int:
        """Every captured step advances every row: none is irregular."""
        return 0

    def next_position(self) -> int:
        """The first decode position (the static cache can decode at any position up to max_position)."""
        return self.context

    def decoded_tokens(self) -> int:
        """Tokens of the decode steps so far (every step advances every row)."""
        return self._decoded

    def warmup(self, runs: int, prefill_sequences: int | None = None) -> tuple[float, float]:
        """Compile Triton kernels, capture every graph the decode will need, then time prefill and a step."""
        t0 = time.monotonic()
        self.fill_cache(self.batch if prefill_sequences is None else prefill_sequences)
        self.synchronize()
        t1 = time.monotonic()
        try:
            self.pos.fill_(self.context)
            self._step()
        except Exception as e:  # a compiler failure must not lose the job: fall back to eager
            if not self.compiled:
                raise
            self.compile_error = f"{type(e).__name__}: {e}"[:500]
            log.warning("torch.compile failed (%s); running eager", self.compile_error)
            self.compiled = False
            self._decode_fn = self.model.decode_step
            self.model.decode_block = None
        self.synchronize()
        t2 = time.monotonic()
        if self.use_graphs:
            self._capture()
        self.synchronize()
        self.capture_s = time.monotonic() - t0
        self.warmup_parts = {"fill_cache_s": t1 - t0, "first_step_s": t2 - t1,
                             "graph_capture_s": self.capture_s - (t2 - t0)}
        t_runs = time.monotonic()
        t_prefill = t_step = 0.0
        for _ in range(max(runs, 1)):
            t_prefill = self._timed_prefill(self.batch if prefill_sequences is None else prefill_sequences)
            n = min(16, self.max_output)
            t1 = time.perf_counter()
            self.decode(self.context, n)
            self.synchronize()
            t_step = (time.perf_counter() - t1) / n
        # the warm-up runs (config measurement.warmup_runs): the prefill's pieces and decode steps each, which
        # time them
        self.warmup_parts["runs_s"] = time.monotonic() - t_runs
        return t_prefill, t_step

    def _timed_prefill(self, sequences: int) -> float:
        """Seconds a prefill of ``sequences`` prompts takes, from one piece of each shape it runs.

        A prefill runs whole groups of ``prefill_unit`` prompts and at most one smaller group (the rest):
        each shape is run and timed once, and the whole is the group's time times the number of groups plus
        the rest's. The warm-up so runs every kernel shape of the measured prefill without a whole measured
        prefill (1.5 s at batch 32 x 2048 on the H200, of which the group of 8 prompts is a quarter). The
        windows are sized from this time and lengthened where it fell short (``filled_window``).
        """
        n = min(sequences, self.batch)
        groups, rest = divmod(n, self.prefill_unit)
        total = 0.0
        for size, count in ((self.prefill_unit, groups), (rest, 1)):
            if size and count:
                t1 = time.perf_counter()
                self.prefill(size)
                self.synchronize()
                total += (time.perf_counter() - t1) * count
        return total

    def idle(self, seconds: float) -> None:
        """Leave the GPU idle with the context open."""
        time.sleep(seconds)

    def synchronize(self) -> None:
        """Wait for the device."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def info(self) -> dict[str, Any]:
        """Facts for the trace metadata: timings of construction, capture, graph count."""
        return {"build_s": self.build_s, "build_parts": self.build_parts, "capture_s": self.capture_s,
                "graph": self.graph is not None,
                "compiled": self.compiled, "compile_mode": self.compile_mode, "compile_scope": self.compile_scope,
                "compile_error": self.compile_error, "warmup_parts": self.warmup_parts,
                # the warm-up's prefill time: from one piece of each shape (since 2026-12-02; a whole prefill before)
                "warmup_prefill_timing": "pieces",
                # decode attention calls whose one-load default fell back to two loads (V not the latent's view)
                "attention_two_load_fallbacks": len(attention.TWO_LOAD_FALLBACKS),
                # how a Mamba2 layer's decode step ran its inputs (PHASE_ENERGY_MAMBA2_STEP), where it has one
                "mamba2_step": next((("fused" if m.fused_step else "separate") for m in self.model.modules()
                                     if hasattr(m, "fused_step")), None),
                # the state update's (block_v, num_warps, block_k) at this batch for a plain (Mamba2) update
                "recurrent_step_tiling": list(recurrent.step_tiling(self.batch, split_ok=True))
                if self.cfg.paradigm == "mamba2" else None,
                "weights": weights_label(self.weights),
                "weight_bytes": self.cost.weight_bytes}
