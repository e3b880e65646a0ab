"""Architecture cost model: parameters, bytes and FLOPs per prefill token and per decode step.

One model serves the engine (roofline accounting), the simulator (timing) and the analysis (roofline
floor). Conventions follow docs/architectures.md: bf16 weights (2 B), the input embedding excluded from
the bytes a decode step reads (one row is gathered), a tied head counted once.

FLOPs count a multiply-add as 2. Attention FLOPs are the score and value products; the causal prefill
of ``S`` tokens does ``S * (S + 1) / 2`` query-key pairs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

from phase_energy.model.presets import ArchConfig

WEIGHT_BYTES = 2  # bf16
ACT_BYTES = 2
PREFILL_TOKENS_PER_CHUNK = 16384  # the engine prefills sequences in groups of about this many tokens


@dataclass(frozen=True)
class LayerParams:
    """Parameter counts of one block of each kind (weights of matmuls and of norms)."""

    attention: int  # attention projections + norms inside the attention
    attention_matmul: int
    mlp: int
    gdn: int
    gdn_matmul: int
    mamba: int
    mamba_matmul: int


def served_shape(cfg: ArchConfig, engine: str) -> ArchConfig:
    """The shape an engine actually runs for a preset (vLLM's DeepSeek-V2 layers always norm the latent)."""
    if engine == "vllm" and cfg.family == "deepseek_v2" and not cfg.kv_norm:
        return replace(cfg, kv_norm=True)
    return cfg


# Engines that store a paradigm's cache differently from this project's engine (docs/engines.md):
# vLLM 0.26 runs MiniCPM3 as multi-head attention over the expanded keys and values (values padded to the
# key head size), not with the compressed latent cache.
MLA_AS_HEADS = {("vllm", "minicpm3")}


class CostModel:
    """FLOPs, bytes and memory of one architecture as an engine runs it, as functions of batch and context."""

    def __init__(self, cfg: ArchConfig, engine: str = "native"):
        self.engine = engine
        self.cfg = served_shape(cfg, engine)
        self.mla_as_heads = (engine, cfg.family) in MLA_AS_HEADS and cfg.paradigm == "mla"
        self.layers = self._layer_params()

    @functools.cached_property  # a pure function of the shape: computed once per model
    def layout_note(self) -> str:
        """A few words on an engine-specific cache layout, for messages ('' when the layout is ours)."""
        if self.mla_as_heads:
            kib = self.kv_bytes_per_token // 1024
            return f"; {self.engine} stores this MLA model's cache as full heads, {kib} KiB/token"
        return ""

    # ----------------------------------------------------------------- parameters
    def _layer_params(self) -> LayerParams:
        c = self.cfg
        h = c.hidden
        if c.paradigm == "mla":
            n = c.n_heads
            qk = c.qk_nope_head_dim + c.qk_rope_head_dim
            if c.q_lora_rank:
                q = h * c.q_lora_rank + c.q_lora_rank * n * qk
                q_norm = c.q_lora_rank
            else:
                q = h * n * qk
                q_norm = 0
            kv_a = h * (c.kv_lora_rank + c.qk_rope_head_dim)
            kv_b = c.kv_lora_rank * n * (c.qk_nope_head_dim + c.v_head_dim)
            o = n * c.v_head_dim * h
            attn_mm = q + kv_a + kv_b + o
            attn = attn_mm + q_norm + (c.kv_lora_rank if c.kv_norm else 0)
        elif c.n_heads:
            q_out = c.n_heads * c.head_dim * (2 if c.attn_output_gate else 1)
            attn_mm = h * q_out + 2 * h * c.n_kv_heads * c.head_dim + c.n_heads * c.head_dim * h
            attn = attn_mm + (2 * c.head_dim if c.qk_norm else 0)
        else:
            attn_mm = attn = 0
        mlp = (3 if c.mlp_kind == "swiglu" else 2) * h * c.intermediate
        if c.lin_v_heads:
            kd = c.lin_k_heads * c.lin_k_dim
            vd = c.lin_v_heads * c.lin_v_dim
            gdn_mm = h * (2 * kd + vd) + h * vd + 2 * h * c.lin_v_heads + vd * h
            conv = (2 * kd + vd) * c.conv_kernel
            gdn = gdn_mm + conv + 2 * c.lin_v_heads + c.lin_v_dim
        else:
            gdn_mm = gdn = 0
        if c.ssm_heads:
            di = c.d_inner
            gs = c.ssm_groups * c.ssm_state
            conv_dim = di + 2 * gs
            mamba_mm = h * (2 * di + 2 * gs + c.ssm_heads) + di * h
            mamba = mamba_mm + conv_dim * c.conv_kernel + conv_dim + 3 * c.ssm_heads + di
        else:
            mamba_mm = mamba = 0
        return LayerParams(attn, attn_mm, mlp, gdn, gdn_mm, mamba, mamba_mm)

    def _block_params(self, kind: str) -> tuple[int, int]:
        """(all params, matmul params) of one block of a pattern character, with its norms."""
        lp, h = self.layers, self.cfg.hidden
        if kind == "A":
            return lp.attention + lp.mlp + 2 * h, lp.attention_matmul + lp.mlp
        if kind == "G":
            return lp.gdn + lp.mlp + 2 * h, lp.gdn_matmul + lp.mlp
        if kind == "M":
            return lp.mamba + h, lp.mamba_matmul
        if kind == "*":
            return lp.attention + h, lp.attention_matmul
        if kind == "-":
            return lp.mlp + h, lp.mlp
        raise ValueError(f"unknown layer kind {kind!r} in pattern; accepted: A G M * -")

    @functools.cached_property
    def embedding_params(self) -> int:
        """Input embedding table."""
        return self.cfg.vocab * self.cfg.hidden

    @functools.cached_property
    def decoder_params(self) -> int:
        """All block parameters (no embedding, no head, no final norm)."""
        return sum(self._block_params(k)[0] for k in self.cfg.layer_pattern)

    @functools.cached_property
    def decoder_matmul_params(self) -> int:
        """Block parameters that take part in a matmul (no norms, convs or per-head scalars)."""
        return sum(self._block_params(k)[1] for k in self.cfg.layer_pattern)

    @functools.cached_property
    def params(self) -> int:
        """Unique parameters (a tied head counted once)."""
        head = 0 if self.cfg.tie_embeddings else self.embedding_params
        return self.embedding_params + self.decoder_params + self.cfg.hidden + head

    @functools.cached_property
    def weight_bytes(self) -> int:
        """Bytes of weights one decode step reads: blocks, final norm and head (bf16)."""
        return WEIGHT_BYTES * (self.decoder_params + self.cfg.hidden + self.embedding_params)

    @functools.cached_property
    def model_bytes(self) -> int:
        """Bytes the weights occupy in memory."""
        return WEIGHT_BYTES * self.params

    # ----------------------------------------------------------------- cache and state
    @functools.cached_property
    def n_attention_layers(self) -> int:
        """Blocks that hold a KV cache."""
        return self.cfg.count("A") + self.cfg.count("*")

    @functools.cached_property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes per token over all attention layers (MLA: latent + rope key)."""
        c = self.cfg
        if self.mla_as_heads:  # keys and values per head, values padded to the key head size
            per_layer = 2 * c.n_heads * (c.qk_nope_head_dim + c.qk_rope_head_dim) * ACT_BYTES
        elif c.paradigm == "mla":
            per_layer = (c.kv_lora_rank + c.qk_rope_head_dim) * ACT_BYTES
        else:
            per_layer = 2 * c.n_kv_heads * c.head_dim * ACT_BYTES
        return per_layer * self.n_attention_layers

    @functools.cached_property
    def state_bytes_per_sequence(self) -> int:
        """Fixed recurrent state (GDN or Mamba2 SSM state + conv state) per sequence."""
        c = self.cfg
        total = 0
        if c.count("G"):
            s = c.lin_v_heads * c.lin_k_dim * c.lin_v_dim * c.state_dtype_bytes
            conv = (2 * c.lin_k_heads * c.lin_k_dim + c.lin_v_heads * c.lin_v_dim) * (c.conv_kernel - 1)
            total += c.count("G") * (s + conv * ACT_BYTES)
        if c.count("M"):
            s = c.ssm_heads * c.ssm_head_dim * c.ssm_state * c.state_dtype_bytes
            conv = (c.d_inner + 2 * c.ssm_groups * c.ssm_state) * (c.conv_kernel - 1)
            total += c.count("M") * (s + conv * ACT_BYTES)
        return total

    def cache_bytes(self, batch: int, max_tokens: int) -> int:
        """Static cache allocated for ``batch`` sequences of up to ``max_tokens`` tokens."""
        return batch * (max_tokens * self.kv_bytes_per_token + self.state_bytes_per_sequence)

    def memory_bytes(self, batch: int, context: int, max_output: int) -> int:
        """Device memory a job needs: weights, cache, activations of one prefill group and logits (estimate)."""
        c = self.cfg
        tokens = prefill_group(batch, context) * context
        widest = max(c.intermediate * 2, c.hidden * 4, c.n_heads * max(c.head_dim, 1) * 3, 1)
        activations = tokens * widest * ACT_BYTES * 2
        logits = batch * c.vocab * 4
        return self.model_bytes + self.cache_bytes(batch, context + max_output) + activations + logits

    # ----------------------------------------------------------------- FLOPs
    def _attention_flops_per_pair(self, absorbed: bool) -> int:
        """FLOPs of one query-key pair summed over heads and attention layers."""
        c = self.cfg
        if self.mla_as_heads:  # plain attention over expanded heads of the key head size
            per_head = 4 * (c.qk_nope_head_dim + c.qk_rope_head_dim)
        elif c.paradigm == "mla":
            if absorbed:  # scores over latent+rope, values in the latent space
                per_head = 2 * (c.kv_lora_rank + c.qk_rope_head_dim) + 2 * c.kv_lora_rank
            else:
                per_head = 2 * (c.qk_nope_head_dim + c.qk_rope_head_dim) + 2 * c.v_head_dim
        else:
            per_head = 4 * c.head_dim
        return per_head * c.n_heads * self.n_attention_layers

    def _recurrent_flops_per_token(self) -> int:
        """FLOPs of the state update and read-out per token (GDN delta rule, Mamba2 SSD)."""
        c = self.cfg
        total = 0
        if c.count("G"):  # decay, k^T S, rank-1 update, q S: ~4 products of d_k x d_v per head
            total += c.count("G") * 8 * c.lin_v_heads * c.lin_k_dim * c.lin_v_dim
        if c.count("M"):  # decay + B x update + C read-out
            total += c.count("M") * 6 * c.ssm_heads * c.ssm_head_dim * c.ssm_state
        return total

    def _mla_absorb_flops_per_token(self) -> int:
        """Extra matmuls of absorbed MLA decode (q_nope into latent, latent out to v), per token."""
        c = self.cfg
        if c.paradigm != "mla" or self.mla_as_heads:
            return 0
        per_layer = 2 * c.n_heads * c.kv_lora_rank * (c.qk_nope_head_dim + c.v_head_dim)
        # the absorbed form replaces the kv_b expansion of the new token's cache entry
        return per_layer * self.n_attention_layers

    @functools.cached_property
    def linear_flops_per_token(self) -> int:
        """Matmul FLOPs per token through blocks and head (2 x matmul params)."""
        return 2 * (self.decoder_matmul_params + self.embedding_params)

    def prefill_flops(self, batch: int, context: int) -> float:
        """FLOPs of a prefill of ``context`` tokens for ``batch`` sequences (logits of the last token only)."""
        pairs = context * (context + 1) / 2
        head = 2 * self.embedding_params
        per_seq = (
            context * (self.linear_flops_per_token - head + self._recurrent_flops_per_token())
            + head
            + pairs * self._attention_flops_per_pair(absorbed=False)
        )
        return batch * per_seq

    def decode_flops(self, batch: int, position: int) -> float:
        """FLOPs of one decode step at context ``position`` (tokens already in the cache)."""
        per_seq = (
            self.linear_flops_per_token
            + self._recurrent_flops_per_token()
            + self._mla_absorb_flops_per_token()
            + (position + 1) * self._attention_flops_per_pair(absorbed=True)
        )
        return batch * per_seq

    # ----------------------------------------------------------------- components (CLEAR)
    def component_cost(self, name: str, phase: str, sequences: int, context: int) -> tuple[float, float]:
        """(FLOPs, bytes) of one instance of a model component (CLEAR), for ``sequences`` at ``context``.

        Components: ``embedding``, ``norm`` (one hidden-width RMSNorm), ``attention``, ``gdn``, ``mamba2``
        (one layer's mixer), ``mlp`` (one layer's), ``head`` (final norm and logits of the last position).
        Prefill runs ``context`` tokens per sequence, decode one token at cache position ``context``.
        Matmul, attention and state FLOPs follow the whole-model counts, so that the components times
        their counts add up to :meth:`prefill_flops` / :meth:`decode_flops`; norms count 4 FLOPs per
        element, the embedding (a gather) none.
        """
        if phase not in ("prefill", "decode"):
            raise ValueError(f"phase {phase!r}: accepted prefill, decode")
        c, lp, h = self.cfg, self.layers, self.cfg.hidden
        decode = phase == "decode"
        t = sequences * (1 if decode else context)  # tokens through the component
        act = 2.0 * t * h * ACT_BYTES  # hidden states read and written
        if name == "embedding":
            return 0.0, act
        if name == "norm":
            return 4.0 * t * h, act + h * WEIGHT_BYTES
        if name == "head":
            return 2.0 * sequences * self.embedding_params, WEIGHT_BYTES * (self.embedding_params + h)
        if name == "mlp":
            return 2.0 * t * lp.mlp, WEIGHT_BYTES * lp.mlp + act
        if name == "attention":
            n = self.n_attention_layers
            if not n:
                raise ValueError(f"{c.name} has no attention layers")
            kv = sequences * self.kv_bytes_per_token / n  # per token of one layer
            if decode:
                flops = ((context + 1) * self._attention_flops_per_pair(absorbed=True)
                         + self._mla_absorb_flops_per_token()) / n * sequences
                kv_bytes = kv * (context + 1)
            else:
                flops = sequences * context * (context + 1) / 2 * self._attention_flops_per_pair(absorbed=False) / n
                kv_bytes = kv * context
            return 2.0 * t * lp.attention_matmul + flops, WEIGHT_BYTES * lp.attention + kv_bytes + act
        if name in ("gdn", "mamba2"):
            kind = "G" if name == "gdn" else "M"
            if not c.count(kind):
                raise ValueError(f"{c.name} has no {name} layers")
            mm = lp.gdn_matmul if kind == "G" else lp.mamba_matmul
            params = lp.gdn if kind == "G" else lp.mamba
            if kind == "G":
                rec = 8 * c.lin_v_heads * c.lin_k_dim * c.lin_v_dim
                state = c.lin_v_heads * c.lin_k_dim * c.lin_v_dim * c.state_dtype_bytes
            else:
                rec = 6 * c.ssm_heads * c.ssm_head_dim * c.ssm_state
                state = c.ssm_heads * c.ssm_head_dim * c.ssm_state * c.state_dtype_bytes
            state_bytes = sequences * state * (2 if decode else 1)  # decode reads and writes it
            return 2.0 * t * mm + t * rec, WEIGHT_BYTES * params + state_bytes + act
        raise ValueError(f"unknown component {name!r}; accepted: embedding, norm, attention, gdn, mamba2, mlp, head")

    # ----------------------------------------------------------------- bytes
    def prefill_bytes(self, batch: int, context: int) -> float:
        """Bytes moved by a prefill: weights once, cache and state written, activations streamed."""
        act = batch * context * self.cfg.hidden * ACT_BYTES * 12 * len(self.cfg.layer_pattern)
        return (
            self.weight_bytes
            + batch * context * self.kv_bytes_per_token
            + batch * self.state_bytes_per_sequence
            + act
        )

    def decode_bytes(self, batch: int, position: int) -> float:
        """Bytes moved by one decode step: weights, KV read (+1 token written), state read and written."""
        return (
            self.weight_bytes
            + batch * (position + 1) * self.kv_bytes_per_token
            + batch * 2 * self.state_bytes_per_sequence
        )

    def summary(self) -> dict[str, float | int | str]:
        """Headline numbers of the preset (for docs and metadata)."""
        return {
            "arch": self.cfg.name,
            "engine": self.engine,
            "paradigm": self.cfg.paradigm,
            "params": self.params,
            "weight_bytes": self.weight_bytes,
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "state_bytes_per_sequence": self.state_bytes_per_sequence,
        }


class SplitCostModel(CostModel):
    """The cost model of one GPU of a tensor-parallel job (``cfg.gpus`` GPUs): bytes and memory per GPU.

    Each GPU holds ``1/gpus`` of the weights (heads, MLP columns and the vocabulary split; the few norm
    weights every GPU keeps are counted once, under 0.01 % of the bytes) and of the recurrent state (heads
    split), and the KV cache of its own KV heads: ``max(1, kv_heads / gpus)`` heads per GPU, so KV heads
    fewer than the GPUs are replicated. An MLA latent cache is not split by heads: every GPU holds all of it.
    The bandwidth floor of a step is these bytes over one GPU's bandwidth (all GPUs stream at once). FLOPs
    stay the whole model's (:meth:`prefill_flops`, :meth:`decode_flops`); prefill activations are counted
    whole on each GPU (tensor parallelism keeps the full hidden state on every GPU).
    """

    def __init__(self, cfg: ArchConfig, engine: str = "native"):
        super().__init__(cfg, engine)
        self.gpus = cfg.gpus

    @functools.cached_property
    def kv_bytes_per_token_per_gpu(self) -> int:
        """KV-cache bytes per token one GPU holds."""
        c = self.cfg
        if c.paradigm == "mla" and not self.mla_as_heads:
            return self.kv_bytes_per_token  # the latent is shared by all heads: every GPU keeps it whole
        heads = c.n_heads if self.mla_as_heads else c.n_kv_heads
        if not heads:
            return 0
        return self.kv_bytes_per_token // heads * max(1, heads // self.gpus)

    def cache_bytes(self, batch: int, max_tokens: int) -> int:
        """Static cache one GPU holds for ``batch`` sequences of up to ``max_tokens`` tokens."""
        return batch * (max_tokens * self.kv_bytes_per_token_per_gpu + self.state_bytes_per_sequence // self.gpus)

    def memory_bytes(self, batch: int, context: int, max_output: int) -> int:
        """Device memory one GPU needs: its share of weights and cache, whole activations, its logits."""
        cache = self.cache_bytes(batch, context + max_output)  # this GPU's share
        logits = batch * self.cfg.vocab * 4
        activations = super().memory_bytes(batch, context, max_output) - self.model_bytes - cache - logits
        return self.model_bytes // self.gpus + cache + activations + logits // self.gpus

    def prefill_bytes(self, batch: int, context: int) -> float:
        """Bytes one GPU moves in a prefill."""
        act = batch * context * self.cfg.hidden * ACT_BYTES * 12 * len(self.cfg.layer_pattern)
        return (self.weight_bytes / self.gpus + batch * context * self.kv_bytes_per_token_per_gpu
                + batch * self.state_bytes_per_sequence / self.gpus + act)

    def decode_bytes(self, batch: int, position: int) -> float:
        """Bytes one GPU moves in one decode step (the step's bandwidth floor is these over one GPU's rate)."""
        return (self.weight_bytes / self.gpus + batch * (position + 1) * self.kv_bytes_per_token_per_gpu
                + batch * 2 * self.state_bytes_per_sequence / self.gpus)

    def summary(self) -> dict[str, float | int | str]:
        """Headline numbers, with the GPUs and the bytes per GPU."""
        return {**super().summary(), "gpus": self.gpus, "kv_bytes_per_token_per_gpu": self.kv_bytes_per_token_per_gpu}


def cost_model(cfg: ArchConfig, engine: str = "native") -> CostModel:
    """The cost model of one GPU of a job: :class:`CostModel` on one GPU, :class:`SplitCostModel` on several."""
    return SplitCostModel(cfg, engine) if cfg.gpus > 1 else CostModel(cfg, engine)


def prefill_group(batch: int, context: int, tokens: int | None = None) -> int:
    """Whole prompts (at least one, at most the batch) that fit in ``tokens``; by default the engine's group."""
    budget = PREFILL_TOKENS_PER_CHUNK if tokens is None else tokens
    return max(1, min(batch, budget // max(context, 1)))


# ----------------------------------------------------------------------------- components (CLEAR)
MODEL = "model"  # the whole model, measured the same way as its components
COMPONENTS = ("embedding", "norm", "attention", "gdn", "mamba2", "mlp", "head")


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
