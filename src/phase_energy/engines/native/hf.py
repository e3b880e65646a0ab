"""Load a transformers reference model's weights into ours (for the parity tests)."""

from __future__ import annotations

import re

from torch import Tensor, nn

RENAMES: list[tuple[str, str]] = [  # applied in order, each at most once
    (r"^(model\.language_model|backbone|model)\.", ""),
    (r"^embeddings\.", "embed_tokens."),
    (r"^norm_f\.", "norm."),
    (r"^layers\.(\d+)\.norm\.", r"layers.\1.input_layernorm."),
    (r"^layers\.(\d+)\.mixer\.norm\.weight$", r"layers.\1.mixer.norm"),
    (r"^layers\.(\d+)\.(self_attn|linear_attn)\.", r"layers.\1.mixer."),
]


def hf_to_ours(name: str) -> str:
    """Our parameter name for a transformers parameter name (Qwen3, MiniCPM3, Qwen3.5, Mamba2, Nemotron-H)."""
    for pat, rep in RENAMES:
        name = re.sub(pat, rep, name)
    return name


def load_from_hf(ours: nn.Module, hf_state: dict[str, Tensor], tied: bool, pattern: str = "") -> None:
    """Copy every reference weight into our model; fail on anything missing or left over.

    ``pattern`` is the preset's layer pattern: Nemotron-H keeps an MLP-only block's MLP under ``mixer``.
    """
    mapped = {}
    for k, v in hf_state.items():
        if tied and k == "lm_head.weight":
            continue
        name = hf_to_ours(k)
        m = re.match(r"layers\.(\d+)\.mixer\.(.*)", name)
        if m and pattern and pattern[int(m.group(1))] == "-":
            name = f"layers.{m.group(1)}.mlp.{m.group(2)}"
        mapped[name] = v
    missing, unexpected = ours.load_state_dict(mapped, strict=False)
    if missing or unexpected:
        raise KeyError(f"weights do not line up: missing {missing[:8]}, unexpected {unexpected[:8]}")
