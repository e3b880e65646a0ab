"""The whole decoder: blocks from the preset's layer pattern, static caches, prefill and decode."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from phase_energy.engines.native.model import (
    MLP,
    Attention,
    GatedDeltaNet,
    Mamba2Mixer,
    MLAttention,
    RMSNorm,
    rope_table,
)
from phase_energy.model.presets import ArchConfig


class Block(nn.Module):
    """One block of the pattern: norm + mixer (+ norm + MLP), residuals around each."""

    def __init__(self, cfg: ArchConfig, kind: str):
        super().__init__()
        zc = cfg.paradigm == "gdn"  # Qwen3.5 uses zero-centred (1 + w) norms
        self.kind = kind
        self.input_layernorm = RMSNorm(cfg.hidden, cfg.rms_eps, zc)
        self.mixer: nn.Module | None
        if kind == "A":
            self.mixer = MLAttention(cfg) if cfg.paradigm == "mla" else Attention(cfg, zc)
        elif kind == "*":
            self.mixer = Attention(cfg, zc, use_rope=False)
        elif kind == "G":
            self.mixer = GatedDeltaNet(cfg)
        elif kind == "M":
            self.mixer = Mamba2Mixer(cfg)
        else:
            self.mixer = None
        has_mlp = kind in ("A", "G") and cfg.intermediate > 0
        if kind == "-":
            self.mlp: MLP | None = MLP(cfg)
            self.post_attention_layernorm = None
        elif has_mlp:
            self.mlp = MLP(cfg)
            self.post_attention_layernorm = RMSNorm(cfg.hidden, cfg.rms_eps, zc)
        else:
            self.mlp = None
            self.post_attention_layernorm = None
        self.residual_scale = cfg.residual_scale

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], pos: Tensor | None, seq_slice: slice) -> Tensor:
        h = self.input_layernorm(x)
        if self.mixer is not None:
            x = x + self.mixer(h, rope, pos, seq_slice) * self.residual_scale
            if self.mlp is not None and self.post_attention_layernorm is not None:
                x = x + self.mlp(self.post_attention_layernorm(x)) * self.residual_scale
        elif self.mlp is not None:
            x = x + self.mlp(h) * self.residual_scale
        return x


class Transformer(nn.Module):
    """Embedding, blocks, final norm and head; ``setup_caches`` before ``prefill``/``decode_step``."""

    def __init__(self, cfg: ArchConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab, cfg.hidden)
        self.layers = nn.ModuleList(Block(cfg, k) for k in cfg.layer_pattern)
        self.norm = RMSNorm(cfg.hidden, cfg.rms_eps, cfg.paradigm == "gdn")
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.hidden, cfg.vocab, bias=False)
        if cfg.paradigm == "mla":
            self.rope_dim, theta = cfg.qk_rope_head_dim, cfg.rope_theta
        else:
            self.rope_dim, theta = int(cfg.head_dim * cfg.partial_rotary) or 2, cfg.rope_theta
        self.theta = theta
        self.cos: Tensor | None = None
        self.sin: Tensor | None = None
        self.max_len = 0
        # decode_step calls each block through this when set (the runner's per-block compiled forward, one
        # compiled graph shared by every block of a kind); None calls the blocks directly
        self.decode_block: Callable[..., Tensor] | None = None

    def setup_caches(self, batch: int, max_len: int) -> None:
        """Allocate every static cache once (KV, latent, conv and recurrent state)."""
        p = self.embed_tokens.weight
        for blk in self.layers:
            mixer = blk.mixer
            if mixer is not None:
                mixer.setup_cache(batch, max_len, p.dtype, p.device)  # type: ignore[union-attr,operator]
        self.cos, self.sin = rope_table(self.rope_dim, self.theta, max_len, p.device)
        self.max_len = max_len

    def cache_tensors(self) -> list[Tensor]:
        """Every static cache tensor (sequences along dim 0): KV, latent, conv and recurrent state."""
        out = []
        for blk in self.layers:
            for name in ("k_cache", "v_cache", "kv_cache", "state", "conv_state"):
                t = getattr(blk.mixer, name, None)
                if isinstance(t, Tensor):
                    out.append(t)
        return out

    def replicate_cache_rows(self, filled: int) -> None:
        """Copy cache rows ``[0, filled)`` over the remaining rows of every cache."""
        for t in self.cache_tensors():
            replicate_rows_(t, filled)

    def fuse(self) -> Transformer:
        """Fuse projections that read the same input (q/k/v, gate/up, GDN's four inputs) into single GEMMs."""
        for blk in self.layers:
            for mod in (blk.mixer, blk.mlp):
                if isinstance(mod, Attention | MLP | GatedDeltaNet):
                    mod.fuse()
        return self

    def _head(self, x: Tensor) -> Tensor:
        x = self.norm(x) / self.cfg.logits_divisor
        w = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return x @ w.t()

    def _embed(self, tokens: Tensor) -> Tensor:
        return self.embed_tokens(tokens) * self.cfg.embed_scale

    @torch.no_grad()
    def prefill(self, tokens: Tensor, seq_slice: slice | None = None, all_logits: bool = False) -> Tensor:
        """Prefill tokens [b, T] into cache rows ``seq_slice``; logits of the last (or every) position."""
        assert self.cos is not None and self.sin is not None, "call setup_caches first"
        b, t = tokens.shape
        sl = seq_slice or slice(0, b)
        rope = (self.cos[:t], self.sin[:t])
        x = self._embed(tokens)
        for blk in self.layers:
            x = blk(x, rope, None, sl)
        return self._head(x if all_logits else x[:, -1:])

    @torch.no_grad()
    def decode_step(self, tokens: Tensor, pos: Tensor) -> Tensor:
        """One decode step for every row: tokens [B, 1] at cache position ``pos`` (0-d device tensor)."""
        assert self.cos is not None and self.sin is not None, "call setup_caches first"
        rope = (self.cos.index_select(0, pos.view(1)), self.sin.index_select(0, pos.view(1)))
        x = self._embed(tokens)
        for blk in self.layers:
            x = blk(x, rope, pos, slice(None)) if self.decode_block is None else \
                self.decode_block(blk, x, rope, pos, slice(None))
        return self._head(x)


@torch.no_grad()
def replicate_rows_(t: Tensor, filled: int) -> Tensor:
    """Copy rows ``[0, filled)`` of ``t`` over its remaining rows, cyclically, in place (doubling copies)."""
    i = filled
    while i < t.shape[0]:
        k = min(i, t.shape[0] - i)
        t[i:i + k].copy_(t[:k])
        i += k
    return t


WEIGHT_INITS = ("normal", "heavy-tailed", "trained-like", "uniform-1e-3")


def _heavy_tailed_(p: Tensor, gen: torch.Generator, outlier_columns: bool = False) -> None:
    """Entries with the statistics of trained weights, scaled to variance 1/fan_in.

    Student-t with 5 degrees of freedom (kurtosis 9 against a normal's 3, as trained LLM weights have tails) times a
    log-normal scale per output row (sigma 0.5: rows of a trained matrix differ in norm), normalised so the
    mean square stays 1/fan_in. ``outlier_columns`` (the ``trained-like`` init) adds a log-normal scale per
    input channel (sigma 0.3) and makes 1 % of the input channels 4x larger: trained LLMs carry a few hidden
    channels of outsized magnitude, and the weights that read and write them are outsized too.
    """
    z = torch.empty_like(p, dtype=torch.float32).normal_(generator=gen)
    chi2 = torch.zeros_like(z)
    for _ in range(5):
        chi2.add_(torch.empty_like(z).normal_(generator=gen).square_())
    t = z / torch.sqrt(chi2 / 5.0)
    t /= t.square().mean().sqrt()
    rows = torch.empty(p.shape[0], *([1] * (p.dim() - 1)), device=p.device).normal_(generator=gen).mul_(0.5).exp_()
    rows /= rows.square().mean().sqrt()
    t = t * rows
    if outlier_columns and p.dim() == 2:
        cols = torch.empty(p.shape[-1], device=p.device).normal_(generator=gen).mul_(0.3).exp_()
        pick = torch.randperm(p.shape[-1], generator=gen, device=p.device)[:max(1, p.shape[-1] // 100)]
        cols[pick] *= 4.0
        t = t * cols
        t /= t.square().mean().sqrt()
    p.copy_((t / math.sqrt(p.shape[-1])).to(p.dtype))


def init_random_(model: Transformer, seed: int, init: str = "normal") -> Transformer:
    """Random weights from a fixed seed, in place on the model's device (seconds, not minutes).

    ``init``: ``normal`` (N(0, 1/fan_in), the default), ``heavy-tailed`` (Student-t values, per-row scales, see
    :func:`_heavy_tailed_`), ``trained-like`` (that, with per-input-channel scales and outlier channels) or
    ``uniform-1e-3`` (every floating tensor uniform in +-1e-3, as vLLM's dummy weights; norms included).
    """
    if init not in WEIGHT_INITS:
        raise ValueError(f"weight init {init!r} is not known; accepted: {', '.join(WEIGHT_INITS)}")
    gen = torch.Generator(device=model.embed_tokens.weight.device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if init == "uniform-1e-3":
                p.uniform_(-1e-3, 1e-3, generator=gen)
            elif p.dim() >= 2:
                if init in ("heavy-tailed", "trained-like"):
                    _heavy_tailed_(p, gen, outlier_columns=init == "trained-like")
                else:
                    p.normal_(0.0, 1.0 / math.sqrt(p.shape[-1]), generator=gen)
            elif name.endswith("dt_bias"):
                p.uniform_(-4.0, -2.0, generator=gen)
            elif name.endswith("bias"):  # conv biases: every parameter must come from the seed
                p.uniform_(-0.1, 0.1, generator=gen)
    return model
