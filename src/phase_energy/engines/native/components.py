"""The native engine's own modules as CLEAR components, on cached inputs (CUDA graphs on a GPU).

A :class:`~phase_energy.measure.clear.ComponentWorkload`: each component (the embedding, one block's norm,
mixer or MLP, the head) and the whole model run in isolation, their calls captured in CUDA graphs of
several calls each, so that the GPU is not left waiting on the host between calls of a few microseconds.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import torch

from phase_energy.engines.compiler import set_compile_caches
from phase_energy.engines.native.runner import capture_graph
from phase_energy.engines.native.transformer import Transformer, init_random_
from phase_energy.model.costmodel import MODEL, components_of, prefill_group
from phase_energy.model.presets import get_preset

log = logging.getLogger(__name__)


class EngineComponents:
    """The native engine's own modules as components, on cached inputs."""

    MIN_GRAPH_S = 200e-6  # calls per graph so that a replay's launch costs little against its work

    def __init__(self, arch: str, batch: int, context: int, seed: int = 0, device: str = "cuda"):
        set_compile_caches()
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
        m = self.model
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

    @staticmethod
    def _no_grad(f: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with torch.no_grad():
                return f()
        return run

    def _capture(self, unit: str) -> None:
        """A CUDA graph of ``inner`` back-to-back calls, ``inner`` sized so a replay lasts MIN_GRAPH_S."""
        f = self.fns[unit]
        try:
            inner, warm = 1, 3
            for _ in range(2):
                g = capture_graph(f, inner, warm)
                warm = 0
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
            torch.cuda.synchronize()

    def idle(self, seconds: float) -> None:
        """Leave the device idle."""
        time.sleep(seconds)

    def info(self) -> dict[str, Any]:
        """Facts for the trace metadata: which components run from graphs, and how many calls each holds."""
        return {"graph_failures": self.graph_failures, "graph_calls": {k: v[1] for k, v in self.graphs.items()}}
