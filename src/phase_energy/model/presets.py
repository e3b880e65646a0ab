"""Architecture presets: published shapes of ~4B models of four attention paradigms, and larger ones (27-47B).

Only shapes matter: models are built with random weights unless the config's ``weights`` names a checkpoint
(model/checkpoint.py). A preset's ``gpus`` is the number of GPUs one job runs it on (tensor parallel; vLLM
only): 1 for the ~4B set, 2 for the larger set. Each preset names its paradigm and the place its values were
read (see docs/architectures.md for the full provenance and caveats).

Layer kinds used in ``layer_pattern`` (one character per block, Nemotron-H style):
``A`` attention (GQA or MLA, with its MLP in the same block), ``G`` Gated DeltaNet mixer + MLP,
``M`` Mamba2 mixer (no MLP), ``*`` attention alone (no MLP), ``-`` MLP alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

Paradigm = Literal["gqa", "mla", "gdn", "mamba2"]
PARADIGMS: tuple[Paradigm, ...] = ("gqa", "mla", "gdn", "mamba2")


@dataclass(frozen=True)
class ArchConfig:
    """Shape of one model. Derived fields are filled in ``__post_init__``."""

    name: str
    paradigm: Paradigm
    n_layers: int
    hidden: int
    vocab: int
    tie_embeddings: bool
    # the Hugging Face model family whose layout the shape follows (config.json generation, checkpoints)
    family: Literal["qwen3", "minicpm3", "deepseek_v2", "qwen3_5", "mamba2", "nemotron_h"] = "qwen3"
    intermediate: int = 0  # MLP width; 0 = no MLP
    mlp_kind: Literal["swiglu", "relu2"] = "swiglu"
    # attention (GQA / gated full attention / Nemotron attention)
    n_heads: int = 0
    n_kv_heads: int = 0
    head_dim: int = 0
    qk_norm: bool = False
    attn_output_gate: bool = False
    rope_theta: float = 1e6
    partial_rotary: float = 1.0
    # MLA
    q_lora_rank: int | None = None
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    kv_norm: bool = True
    # Gated DeltaNet
    lin_k_heads: int = 0
    lin_k_dim: int = 0
    lin_v_heads: int = 0
    lin_v_dim: int = 0
    conv_kernel: int = 4
    full_attention_interval: int = 0
    # Mamba2
    ssm_state: int = 0
    ssm_head_dim: int = 0
    ssm_heads: int = 0
    ssm_groups: int = 1
    ssm_chunk: int = 256
    # recurrent-state dtype bytes (fp32 for GDN per the Qwen3.5 configs, bf16 for mamba_ssm)
    state_dtype_bytes: int = 4
    rms_eps: float = 1e-6
    # muP-style scalars (MiniCPM3): embedding x embed_scale, residual branches x residual_scale,
    # hidden states / logits_divisor before the head
    embed_scale: float = 1.0
    residual_scale: float = 1.0
    logits_divisor: float = 1.0
    layer_pattern: str = ""
    sources: tuple[str, ...] = field(default_factory=tuple)
    tiny: bool = False
    # GPUs one job runs the model on, tensor parallel (vLLM's tensor_parallel_size); 1 = one GPU
    gpus: int = 1

    def __post_init__(self) -> None:
        if self.layer_pattern:
            return
        if self.paradigm in ("gqa", "mla"):
            pattern = "A" * self.n_layers
        elif self.paradigm == "gdn":
            k = self.full_attention_interval or self.n_layers + 1
            pattern = "".join("A" if (i + 1) % k == 0 else "G" for i in range(self.n_layers))
        else:
            pattern = "M" * self.n_layers
        object.__setattr__(self, "layer_pattern", pattern)

    @property
    def d_inner(self) -> int:
        """Mamba2 inner width (heads x head_dim)."""
        return self.ssm_heads * self.ssm_head_dim

    def count(self, kind: str) -> int:
        """Number of blocks of one kind in the layer pattern."""
        return self.layer_pattern.count(kind)


def _p(**kw: object) -> ArchConfig:
    return ArchConfig(**kw)  # type: ignore[arg-type]


PRESETS: dict[str, ArchConfig] = {
    "qwen3-4b": _p(
        name="qwen3-4b", family="qwen3", paradigm="gqa", n_layers=36, hidden=2560, intermediate=9728, n_heads=32,
        n_kv_heads=8, head_dim=128, vocab=151936, tie_embeddings=True, qk_norm=True, rope_theta=1e6,
        sources=("Qwen3-4B config.json (transformers 4.51.0), mlc-llm model_preset.py @79d603f0",),
    ),
    "minicpm3-4b": _p(
        name="minicpm3-4b", family="minicpm3", paradigm="mla", n_layers=62, hidden=2560, intermediate=6400, n_heads=40,
        n_kv_heads=40, vocab=73448, tie_embeddings=True, q_lora_rank=768, kv_lora_rank=256,
        qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64, kv_norm=True, rope_theta=1e4,
        rms_eps=1e-5, embed_scale=12.0, residual_scale=1.4 / 62**0.5, logits_divisor=2560 / 256,
        sources=("MiniCPM3Config (openbmb/MiniCPM3-4B@75f9f10 via optimum-habana)", "vllm minicpm3.py"),
    ),
    "qwen3-4b-transmla": _p(
        name="qwen3-4b-transmla", family="deepseek_v2", paradigm="mla", n_layers=36, hidden=2560, intermediate=9728,
        n_heads=32, n_kv_heads=32, vocab=151936, tie_embeddings=True, q_lora_rank=None,
        kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128, kv_norm=False,
        rope_theta=1e6,
        sources=("TransMLA defaults (fxmeng/TransMLA @9c0d2545) applied to Qwen3-4B; hypothetical",),
    ),
    "qwen3.5-4b": _p(
        name="qwen3.5-4b", family="qwen3_5", paradigm="gdn", n_layers=32, hidden=2560, intermediate=9216, n_heads=16,
        n_kv_heads=4, head_dim=256, qk_norm=True, attn_output_gate=True, rope_theta=1e7,
        partial_rotary=0.25, lin_k_heads=16, lin_k_dim=128, lin_v_heads=32, lin_v_dim=128,
        conv_kernel=4, full_attention_interval=4, vocab=248320, tie_embeddings=True,
        state_dtype_bytes=4,
        sources=("THUDM/slime scripts/models/qwen3.5-4B.sh @624b824a", "Qwen3.5-4B config fixtures"),
    ),
    "mamba2-2.7b": _p(
        name="mamba2-2.7b", family="mamba2", paradigm="mamba2", n_layers=64, hidden=2560, intermediate=0,
        ssm_state=128, ssm_head_dim=64, ssm_heads=80, ssm_groups=1, ssm_chunk=256, conv_kernel=4,
        vocab=50288, tie_embeddings=True, state_dtype_bytes=2, rms_eps=1e-5,
        sources=("state-spaces/mamba mamba2.py defaults @e9594ce1", "mamba2-2.7b config.json"),
    ),
    "nemotron-h-4b": _p(
        name="nemotron-h-4b", family="nemotron_h", paradigm="mamba2", n_layers=52, hidden=3072, intermediate=12288,
        mlp_kind="relu2", n_heads=32, n_kv_heads=8, head_dim=128, ssm_state=128, ssm_head_dim=64,
        ssm_heads=112, ssm_groups=8, ssm_chunk=128, conv_kernel=4, vocab=131072,
        tie_embeddings=False, state_dtype_bytes=2, rms_eps=1e-5,
        layer_pattern="M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-",
        sources=("Megatron-Bridge NemotronHModelProvider4B", "Nemotron-H-8B HF config (family values)"),
    ),
}

# Larger models of each paradigm, served tensor parallel on two GPUs (bf16 weights of 54-94 GB; one H200's
# 141 GB would leave little room for the cache). Published config values; docs/architectures.md.
LARGE_PRESETS: dict[str, ArchConfig] = {
    "qwen3-32b": _p(
        name="qwen3-32b", family="qwen3", paradigm="gqa", n_layers=64, hidden=5120, intermediate=25600, n_heads=64,
        n_kv_heads=8, head_dim=128, vocab=151936, tie_embeddings=False, qk_norm=True, rope_theta=1e6, gpus=2,
        sources=("Qwen/Qwen3-32B config.json (transformers 4.51.0)",),
    ),
    "qwen3-32b-transmla": _p(
        name="qwen3-32b-transmla", family="deepseek_v2", paradigm="mla", n_layers=64, hidden=5120,
        intermediate=25600, n_heads=64, n_kv_heads=64, vocab=151936, tie_embeddings=False, q_lora_rank=None,
        kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128, kv_norm=False,
        rope_theta=1e6, gpus=2,
        sources=("TransMLA defaults (fxmeng/TransMLA @9c0d2545) applied to Qwen3-32B; hypothetical",),
    ),
    "qwen3.5-27b": _p(
        name="qwen3.5-27b", family="qwen3_5", paradigm="gdn", n_layers=64, hidden=5120, intermediate=17408,
        n_heads=24, n_kv_heads=4, head_dim=256, qk_norm=True, attn_output_gate=True, rope_theta=1e7,
        partial_rotary=0.25, lin_k_heads=16, lin_k_dim=128, lin_v_heads=48, lin_v_dim=128,
        conv_kernel=4, full_attention_interval=4, vocab=248320, tie_embeddings=False,
        state_dtype_bytes=4, gpus=2,
        sources=("THUDM/slime scripts/models/qwen3.5-27B.sh", "Qwen3.5-27B config.json text_config (as quoted by "
                 "third-party config fixtures: linear heads 16 / 48 of 128)"),
    ),
    "nemotron-h-47b": _p(
        name="nemotron-h-47b", family="nemotron_h", paradigm="mamba2", n_layers=98, hidden=8192, intermediate=30720,
        mlp_kind="relu2", n_heads=64, n_kv_heads=8, head_dim=128, ssm_state=256, ssm_head_dim=64,
        ssm_heads=256, ssm_groups=8, ssm_chunk=128, conv_kernel=4, vocab=131072,
        tie_embeddings=False, state_dtype_bytes=2, rms_eps=1e-5, gpus=2,
        layer_pattern="M-M-M-M-M-M-M-M-M*-M-M-M-M-M-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-M-M---MM---M-M*-M-M-M-M-M-",
        sources=("Megatron-Bridge NemotronHModelProvider47B (and its NemotronHModelProvider defaults)",),
    ),
}

# Tiny presets with the same structure, for CPU tests and CI.
TINY_PRESETS: dict[str, ArchConfig] = {
    "tiny-gqa": replace(
        PRESETS["qwen3-4b"], name="tiny-gqa", n_layers=2, hidden=64, intermediate=128, n_heads=4,
        n_kv_heads=2, head_dim=16, vocab=128, layer_pattern="", tiny=True, sources=("tiny test shape",),
    ),
    "tiny-mla": replace(
        PRESETS["minicpm3-4b"], name="tiny-mla", n_layers=2, hidden=64, intermediate=128, n_heads=4,
        n_kv_heads=4, q_lora_rank=32, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8,
        v_head_dim=16, vocab=128, layer_pattern="", tiny=True, residual_scale=1.4 / 2**0.5,
        logits_divisor=64 / 32, sources=("tiny test shape",),
    ),
    "tiny-gdn": replace(
        PRESETS["qwen3.5-4b"], name="tiny-gdn", n_layers=4, hidden=64, intermediate=128, n_heads=4,
        n_kv_heads=2, head_dim=16, lin_k_heads=2, lin_k_dim=16, lin_v_heads=4, lin_v_dim=16,
        vocab=128, layer_pattern="", tiny=True, sources=("tiny test shape",),
    ),
    "tiny-mamba2": replace(
        PRESETS["mamba2-2.7b"], name="tiny-mamba2", n_layers=2, hidden=64, ssm_state=16,
        ssm_head_dim=16, ssm_heads=8, ssm_chunk=16, vocab=128, layer_pattern="", tiny=True,
        sources=("tiny test shape",),
    ),
    "tiny-nemotron": replace(
        PRESETS["nemotron-h-4b"], name="tiny-nemotron", n_layers=4, hidden=64, intermediate=128,
        n_heads=4, n_kv_heads=2, head_dim=16, ssm_state=16, ssm_head_dim=16, ssm_heads=8,
        ssm_groups=2, ssm_chunk=16, vocab=128, layer_pattern="M-*-", tiny=True,
        sources=("tiny test shape",),
    ),
    "tiny-gqa-tp2": replace(
        PRESETS["qwen3-4b"], name="tiny-gqa-tp2", n_layers=2, hidden=64, intermediate=128, n_heads=4,
        n_kv_heads=2, head_dim=16, vocab=128, layer_pattern="", tiny=True, gpus=2,
        sources=("tiny test shape, two GPUs",),
    ),
}

ALL_PRESETS: dict[str, ArchConfig] = {**PRESETS, **LARGE_PRESETS, **TINY_PRESETS}
# architectures named by a checkpoint's config.json (config key ``weights``), registered in this process
# when the config is validated (phase_energy.config)
CHECKPOINT_ARCHS: dict[str, ArchConfig] = {}


def register_arch(cfg: ArchConfig) -> None:
    """Make an architecture read from a checkpoint findable by :func:`get_preset` (presets keep their name)."""
    if cfg.name not in ALL_PRESETS:
        CHECKPOINT_ARCHS[cfg.name] = cfg


def tensor_parallel_problem(cfg: ArchConfig, gpus: int | None = None) -> str | None:
    """Why ``gpus`` GPUs (default: the preset's) cannot split the model's heads evenly, or None.

    vLLM splits attention heads, KV heads (or replicates them when there are fewer than GPUs), GDN and Mamba2
    heads and Mamba2 groups over the GPUs: each count must divide evenly.
    """
    n = cfg.gpus if gpus is None else gpus
    if n < 1:
        return f"{cfg.name}: gpus={n}; accepted: an integer >= 1"
    if n == 1:
        return None
    counts = {"attention heads": cfg.n_heads, "GDN key heads": cfg.lin_k_heads, "GDN value heads": cfg.lin_v_heads,
              "Mamba2 heads": cfg.ssm_heads, "Mamba2 groups": cfg.ssm_groups if cfg.ssm_heads else 0}
    for what, count in counts.items():
        if count and count % n:
            return f"{cfg.name}: {count} {what} do not split over gpus={n}; accepted: a divisor of {count}"
    kv = cfg.n_kv_heads if cfg.paradigm != "mla" else 0
    if kv and kv % n and n % kv:
        return f"{cfg.name}: {kv} KV heads neither split over nor replicate onto gpus={n}"
    return None


def get_preset(name: str) -> ArchConfig:
    """Look a preset (or a registered checkpoint's architecture) up by exact name; the error lists the valid names."""
    try:
        return ALL_PRESETS[name] if name in ALL_PRESETS else CHECKPOINT_ARCHS[name]
    except KeyError:
        raise KeyError(
            f"unknown architecture {name!r}; accepted: {', '.join(sorted(ALL_PRESETS))}, or a name of your own "
            "with a checkpoint folder under the config key weights"
        ) from None
