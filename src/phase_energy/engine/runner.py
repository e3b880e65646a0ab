"""The engine as a measurement workload: random weights on the GPU, static caches, CUDA-graph decode.

Decode steps are captured per KV-length bucket (attention reads the cache up to the bucket's end, masked
past the current position), so each replay is one graph launch with no host work; the next token is
chosen greedily inside the graph and fed to the following step. Nothing synchronises inside a measured
window: the protocol synchronises at the window's ends only.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import torch

from ..costmodel import CostModel
from ..presets import get_preset
from .transformer import Transformer, init_random_

log = logging.getLogger(__name__)

BUCKET = 256  # KV-length granularity of the captured decode graphs
PREFILL_TOKENS_PER_CHUNK = 16384  # sequences are prefilled in groups of about this many tokens


def set_triton_cache(path: str | None = None) -> None:
    """One Triton cache directory for all jobs of a run (compiled kernels are reused across jobs)."""
    os.environ.setdefault("TRITON_CACHE_DIR", path or os.path.abspath(".triton-cache"))


class EngineWorkload:
    """Prefill and decode of one preset at one batch and context on one GPU (``Workload`` protocol)."""

    def __init__(self, arch: str, batch: int, context: int, max_output: int, seed: int = 0,
                 device: str = "cuda", dtype: torch.dtype = torch.bfloat16, use_graphs: bool = True):
        set_triton_cache()
        t0 = time.monotonic()
        self.cfg = get_preset(arch)
        self.cost = CostModel(self.cfg)
        self.batch, self.context, self.max_output = batch, context, max_output
        self.device = torch.device(device)
        self.use_graphs = use_graphs and self.device.type == "cuda"
        with torch.device(self.device):
            self.model = Transformer(self.cfg).to(dtype)
        init_random_(self.model, seed)
        self.max_len = context + max_output + 1
        self.model.setup_caches(batch, self.max_len)
        gen = torch.Generator(device=self.device).manual_seed(seed + 1)
        self.prompt = torch.randint(0, self.cfg.vocab, (batch, context), device=self.device, generator=gen)
        self.tokens = torch.zeros(batch, 1, dtype=torch.long, device=self.device)
        self.pos = torch.zeros((), dtype=torch.long, device=self.device)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.build_s = time.monotonic() - t0
        self.capture_s = 0.0

    def _bucket(self, position: int) -> int:
        return min(self.max_len, (position // BUCKET + 1) * BUCKET)

    def _step(self, kv_len: int) -> None:
        logits = self.model.decode_step(self.tokens, self.pos, kv_len)
        self.tokens.copy_(logits[:, -1].argmax(-1, keepdim=True))
        self.pos.add_(1)

    def _capture(self, kv_len: int) -> None:
        saved = self.pos.clone()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(2):
                self._step(kv_len)
                self.pos.copy_(saved)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            self._step(kv_len)
        self.pos.copy_(saved)
        self.graphs[kv_len] = g

    def prefill(self) -> None:
        """Prefill the prompt of every sequence, in groups that bound activation memory."""
        per = max(1, PREFILL_TOKENS_PER_CHUNK // self.context)
        for i in range(0, self.batch, per):
            sl = slice(i, min(self.batch, i + per))
            logits = self.model.prefill(self.prompt[sl], sl)
            self.tokens[sl] = logits[:, -1].argmax(-1, keepdim=True)

    def decode(self, position: int, steps: int) -> None:
        """``steps`` decode steps from cache position ``position`` (graph replays, no host sync)."""
        self.pos.fill_(position)
        for p in range(position, position + steps):
            kv = self._bucket(p)
            if self.use_graphs:
                self.graphs[kv].replay()
            else:
                self._step(kv)

    def warmup(self, runs: int) -> tuple[float, float]:
        """Compile Triton kernels, capture every graph the decode will need, then time prefill and a step."""
        t0 = time.monotonic()
        self.prefill()
        if self.use_graphs:
            for kv in sorted({self._bucket(p) for p in range(self.context, self.max_len - 1)}):
                self._capture(kv)
        self.synchronize()
        self.capture_s = time.monotonic() - t0
        t_prefill = t_step = 0.0
        for _ in range(max(runs, 1)):
            t1 = time.perf_counter()
            self.prefill()
            self.synchronize()
            t_prefill = time.perf_counter() - t1
            t1 = time.perf_counter()
            self.decode(self.context, 16)
            self.synchronize()
            t_step = (time.perf_counter() - t1) / 16
        return t_prefill, t_step

    def idle(self, seconds: float) -> None:
        """Leave the GPU idle with the context open."""
        time.sleep(seconds)

    def synchronize(self) -> None:
        """Wait for the device."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def info(self) -> dict[str, Any]:
        """Facts for the trace metadata: timings of construction, capture, graph count."""
        return {"build_s": self.build_s, "capture_s": self.capture_s, "graphs": len(self.graphs),
                "bucket": BUCKET, "weight_bytes": self.cost.weight_bytes}
