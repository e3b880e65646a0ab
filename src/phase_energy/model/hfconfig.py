"""Hugging Face ``config.json`` of a preset, so that other engines (vLLM) and transformers build its shapes.

A folder holding only this file is what vLLM loads with ``load_format="dummy"`` (random weights, no
tokenizer): both engines then run the same shapes. Each family writes the keys its transformers config
class reads and the ones vLLM's model class reads (docs/engines.md lists the differences that remain).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from phase_energy.model.presets import ArchConfig

# vLLM's model class per family (vLLM 0.26 registry names)
VLLM_ARCHITECTURES: dict[str, str] = {
    "qwen3": "Qwen3ForCausalLM",
    "minicpm3": "MiniCPM3ForCausalLM",
    "deepseek_v2": "DeepseekV2ForCausalLM",
    # vLLM registers no text-only Qwen3.5 class: the multimodal one runs with language_model_only=True
    "qwen3_5": "Qwen3_5ForConditionalGeneration",
    "mamba2": "Mamba2ForCausalLM",
    "nemotron_h": "NemotronHForCausalLM",
}
MAX_POSITIONS = 262144  # position limit written into configs; the engines' own limit is set per job


def _rope(cfg: ArchConfig) -> dict[str, Any]:
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.partial_rotary != 1.0:
        rope["partial_rotary_factor"] = cfg.partial_rotary
    return rope


def _common(cfg: ArchConfig) -> dict[str, Any]:
    return {"vocab_size": cfg.vocab, "hidden_size": cfg.hidden, "num_hidden_layers": cfg.n_layers,
            "tie_word_embeddings": cfg.tie_embeddings, "max_position_embeddings": MAX_POSITIONS,
            "torch_dtype": "bfloat16", "dtype": "bfloat16", "hidden_act": "silu", "use_cache": True}


def _qwen3(cfg: ArchConfig) -> dict[str, Any]:
    return {"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], **_common(cfg),
            "intermediate_size": cfg.intermediate, "num_attention_heads": cfg.n_heads,
            "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim, "rms_norm_eps": cfg.rms_eps,
            "attention_bias": False, "rope_theta": cfg.rope_theta, "rope_parameters": _rope(cfg)}


def _minicpm3(cfg: ArchConfig) -> dict[str, Any]:
    if not cfg.q_lora_rank:
        raise ValueError(f"{cfg.name}: MiniCPM3 needs a q_lora_rank (vLLM's MiniCPM3 reads it unconditionally)")
    return {"model_type": "minicpm3", "architectures": ["MiniCPM3ForCausalLM"], **_common(cfg),
            "intermediate_size": cfg.intermediate, "num_attention_heads": cfg.n_heads,
            "num_key_value_heads": cfg.n_heads, "q_lora_rank": cfg.q_lora_rank, "kv_lora_rank": cfg.kv_lora_rank,
            "qk_nope_head_dim": cfg.qk_nope_head_dim, "qk_rope_head_dim": cfg.qk_rope_head_dim,
            "v_head_dim": cfg.v_head_dim, "rms_norm_eps": cfg.rms_eps, "scale_emb": cfg.embed_scale,
            "scale_depth": cfg.residual_scale * cfg.n_layers**0.5,
            "dim_model_base": round(cfg.hidden / cfg.logits_divisor), "rope_theta": cfg.rope_theta,
            "rope_parameters": _rope(cfg), "attention_bias": False}


def _deepseek_v2(cfg: ArchConfig) -> dict[str, Any]:
    # every layer dense: no experts (vLLM then sees no MoE) and the first dense layers are all layers
    return {"model_type": "deepseek_v2", "architectures": ["DeepseekV2ForCausalLM"], **_common(cfg),
            "intermediate_size": cfg.intermediate, "moe_intermediate_size": cfg.intermediate,
            "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_heads,
            "q_lora_rank": cfg.q_lora_rank, "kv_lora_rank": cfg.kv_lora_rank,
            "qk_nope_head_dim": cfg.qk_nope_head_dim, "qk_rope_head_dim": cfg.qk_rope_head_dim,
            "v_head_dim": cfg.v_head_dim, "rms_norm_eps": cfg.rms_eps, "n_routed_experts": 0,
            "n_shared_experts": 0, "first_k_dense_replace": cfg.n_layers, "moe_layer_freq": 1,
            "rope_theta": cfg.rope_theta, "rope_parameters": _rope(cfg), "rope_scaling": None,
            "attention_bias": False}


def _mrope_section(cfg: ArchConfig) -> list[int]:
    """Qwen3.5's split of the rotary half-dimensions over (time, height, width); text uses one position for all.

    vLLM checks that the sections add up to half the rotary width (head_dim x partial_rotary / 2).
    """
    h = int(cfg.head_dim * cfg.partial_rotary) // 2
    return [h // 3 + (h % 3 > 0), h // 3 + (h % 3 > 1), h // 3]


def _qwen3_5_text(cfg: ArchConfig) -> dict[str, Any]:
    return {"model_type": "qwen3_5_text", **_common(cfg), "intermediate_size": cfg.intermediate,
            "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim,
            "rms_norm_eps": cfg.rms_eps, "attn_output_gate": cfg.attn_output_gate,
            "linear_num_key_heads": cfg.lin_k_heads, "linear_key_head_dim": cfg.lin_k_dim,
            "linear_num_value_heads": cfg.lin_v_heads, "linear_value_head_dim": cfg.lin_v_dim,
            "linear_conv_kernel_dim": cfg.conv_kernel,
            "layer_types": ["full_attention" if k == "A" else "linear_attention" for k in cfg.layer_pattern],
            "partial_rotary_factor": cfg.partial_rotary, "rope_theta": cfg.rope_theta,
            "rope_parameters": {**_rope(cfg), "mrope_section": _mrope_section(cfg), "mrope_interleaved": True},
            # the recurrent state in fp32, as the preset (and the Qwen3.5 configs) have it
            "mamba_ssm_dtype": "float32" if cfg.state_dtype_bytes == 4 else "bfloat16"}


def _qwen3_5(cfg: ArchConfig) -> dict[str, Any]:
    text = _qwen3_5_text(cfg)
    return {"model_type": "qwen3_5", "architectures": ["Qwen3_5ForConditionalGeneration"],
            "text_config": text, "tie_word_embeddings": cfg.tie_embeddings, "torch_dtype": "bfloat16",
            # a small vision tower: vLLM runs with language_model_only=True and never builds it
            "vision_config": {"model_type": "qwen3_5", "depth": 1, "hidden_size": 64, "intermediate_size": 128,
                              "num_heads": 2, "out_hidden_size": cfg.hidden}}


def _mamba2(cfg: ArchConfig) -> dict[str, Any]:
    return {"model_type": "mamba2", "architectures": ["Mamba2ForCausalLM"], **_common(cfg),
            "state_size": cfg.ssm_state, "head_dim": cfg.ssm_head_dim, "num_heads": cfg.ssm_heads,
            "n_groups": cfg.ssm_groups, "expand": cfg.d_inner // cfg.hidden, "conv_kernel": cfg.conv_kernel,
            "chunk_size": cfg.ssm_chunk, "layer_norm_epsilon": cfg.rms_eps, "use_bias": False,
            "use_conv_bias": True, "residual_in_fp32": False, "rms_norm": True, "norm_before_gate": False}


def _nemotron_h(cfg: ArchConfig) -> dict[str, Any]:
    # transformers reads the layer kinds from the pattern string and the mamba_* names; vLLM reads its own names
    return {"model_type": "nemotron_h", "architectures": ["NemotronHForCausalLM"], **_common(cfg),
            "hybrid_override_pattern": cfg.layer_pattern, "intermediate_size": cfg.intermediate,
            "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim,
            "mlp_hidden_act": "relu2", "attention_bias": False, "mlp_bias": False, "use_bias": False,
            "layer_norm_epsilon": cfg.rms_eps, "residual_in_fp32": False,
            "ssm_state_size": cfg.ssm_state, "mamba_num_heads": cfg.ssm_heads, "mamba_head_dim": cfg.ssm_head_dim,
            "n_groups": cfg.ssm_groups, "conv_kernel": cfg.conv_kernel, "chunk_size": cfg.ssm_chunk,
            "expand": max(1, round(cfg.d_inner / cfg.hidden)),  # unused: the mixer is heads x head_dim wide
            "use_conv_bias": True, "mamba_hidden_act": "silu", "n_routed_experts": 0, "num_nextn_predict_layers": 0,
            # the SSM state in the preset's dtype (vLLM defaults to fp32 for this family otherwise)
            "mamba_ssm_cache_dtype": "float32" if cfg.state_dtype_bytes == 4 else "bfloat16"}


BUILDERS = {"qwen3": _qwen3, "minicpm3": _minicpm3, "deepseek_v2": _deepseek_v2, "qwen3_5": _qwen3_5,
            "mamba2": _mamba2, "nemotron_h": _nemotron_h}


def hf_config(cfg: ArchConfig) -> dict[str, Any]:
    """The ``config.json`` content of a preset (family layout, the preset's shapes)."""
    try:
        build = BUILDERS[cfg.family]
    except KeyError:
        raise ValueError(f"{cfg.name}: no config.json for family {cfg.family!r}; accepted: "
                         f"{', '.join(BUILDERS)}") from None
    return build(cfg)


def transformers_config(cfg: ArchConfig) -> dict[str, Any]:
    """The config a transformers causal-LM class takes (Qwen3.5: the text model only)."""
    return _qwen3_5_text(cfg) | {"architectures": ["Qwen3_5ForCausalLM"]} if cfg.family == "qwen3_5" \
        else hf_config(cfg)


def write_model_folder(cfg: ArchConfig, folder: str | Path) -> Path:
    """A model folder holding only ``config.json`` (what vLLM needs for dummy weights); returns it."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(hf_config(cfg), indent=1))
    return out


# families vLLM 0.26 has a class for but failed to run on the H200, with what was seen (2026-12-01, default
# settings, CUDA graphs on): such a point gets a ``skipped`` record instead of a failed job
# family -> (what fails, the attention backends it fails with: None is vLLM's own choice)
VLLM_KNOWN_FAILURES: dict[str, tuple[str, frozenset[str | None]]] = {
    "minicpm3": ("vLLM 0.26 fails starting MiniCPM3 on the H200: FlashAttention 3 raises 'scheduler_metadata must "
                 "have shape (metadata_size)' while capturing CUDA graphs (head size 96; seen 2026-12-01); "
                 "with vllm.attention_backend: TRITON_ATTN it ran on the H200 (2026-12-02)",
                 frozenset({None, "FLASH_ATTN"})),
}


def vllm_unsupported(cfg: ArchConfig, attention_backend: str | None = None) -> str | None:
    """Why vLLM 0.26 cannot run a preset's shapes with ``attention_backend`` (None: vLLM's choice), or None."""
    if cfg.family not in VLLM_ARCHITECTURES:
        return f"vLLM has no model class for family {cfg.family!r} ({cfg.name})"
    if cfg.family == "minicpm3" and not cfg.q_lora_rank:
        return f"vLLM's MiniCPM3 needs a q_lora_rank ({cfg.name} has none)"
    why, backends = VLLM_KNOWN_FAILURES.get(cfg.family, (None, frozenset()))
    return why if attention_backend in backends else None
