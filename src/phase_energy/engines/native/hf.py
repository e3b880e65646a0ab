"""Hugging Face weights in the native engine: one mapping from a checkpoint's tensor names to our layout.

The same mapping serves the parity tests (a transformers model's ``state_dict`` in memory) and a checkpoint
folder (safetensors, memory-mapped, each tensor read straight onto the engine's device and copied into its
place, fused or not: q/k/v rows of ``wqkv``, gate/up rows of ``w13``, a Gated DeltaNet's four inputs rows
of ``w_in``). Every tensor of the model must be filled exactly once with the shape it expects; anything
missing, left over or of another shape is an error that names it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from phase_energy.engines.native.model import MLP, Attention, GatedDeltaNet
from phase_energy.engines.native.transformer import Transformer
from phase_energy.model.presets import ArchConfig

RENAMES: list[tuple[str, str]] = [  # applied in order, each at most once
    (r"^(model\.language_model|backbone|model)\.", ""),
    (r"^embeddings\.", "embed_tokens."),
    (r"^norm_f\.", "norm."),
    (r"^layers\.(\d+)\.norm\.", r"layers.\1.input_layernorm."),
    (r"^layers\.(\d+)\.mixer\.norm\.weight$", r"layers.\1.mixer.norm"),
    (r"^layers\.(\d+)\.(self_attn|linear_attn)\.", r"layers.\1.mixer."),
]
# parts of a checkpoint the engine does not build: Qwen3.5's vision tower, multi-token-prediction layers
SKIPPED = re.compile(r"^(model\.visual|visual|mtp|model\.mtp)\.")
FUSED = {"q_proj": 0, "k_proj": 1, "v_proj": 2, "gate_proj": 0, "up_proj": 1,
         "in_proj_qkv": 0, "in_proj_z": 1, "in_proj_b": 2, "in_proj_a": 3}


class WeightsError(KeyError):
    """Checkpoint tensors that do not line up with the model; the message names them."""

    def __str__(self) -> str:  # KeyError quotes its message
        return str(self.args[0])


def hf_to_ours(name: str, cfg: ArchConfig) -> str | None:
    """Our (unfused) parameter name for a checkpoint tensor's name, or None for one the engine does not use.

    Nemotron-H keeps an MLP-only block's MLP under ``mixer``; ours is ``mlp``. A tied head is the embedding.
    """
    if SKIPPED.match(name) or (cfg.tie_embeddings and name == "lm_head.weight"):
        return None
    for pat, rep in RENAMES:
        name = re.sub(pat, rep, name)
    m = re.match(r"layers\.(\d+)\.mixer\.(.*)", name)
    if m and int(m.group(1)) < len(cfg.layer_pattern) and cfg.layer_pattern[int(m.group(1))] == "-":
        name = f"layers.{m.group(1)}.mlp.{m.group(2)}"
    return name


def _interleaved_to_half(w: Tensor, start: int, width: int, period: int) -> Tensor:
    """Rows ``start:start+width`` of every ``period`` rows from pairs (x0, x1), (x2, x3) to halves (x0, x2 | x1, x3)."""
    v = w.reshape(-1, period, *w.shape[1:])
    perm = torch.cat([torch.arange(0, width, 2), torch.arange(1, width, 2)]) + start
    v = v.clone()
    v[:, start:start + width] = v[:, perm]
    return v.reshape(w.shape)


def to_our_values(cfg: ArchConfig, ours: str, t: Tensor) -> Tensor:
    """A tensor's values in our layout: DeepSeek-V2 rotates interleaved pairs, our RoPE rotates halves.

    The rope rows of the query and of the shared rope key are permuted alike, so every score is the same.
    """
    if cfg.family != "deepseek_v2":
        return t
    rd, qk = cfg.qk_rope_head_dim, cfg.qk_nope_head_dim + cfg.qk_rope_head_dim
    if ours.endswith(("mixer.q_proj.weight", "mixer.q_b_proj.weight")):
        return _interleaved_to_half(t, cfg.qk_nope_head_dim, rd, qk)
    if ours.endswith("mixer.kv_a_proj_with_mqa.weight"):
        return _interleaved_to_half(t, cfg.kv_lora_rank, rd, t.shape[0])
    return t


def expected_shapes(cfg: ArchConfig) -> dict[str, torch.Size]:
    """Every parameter of the unfused model and its shape (a model on the meta device: no memory)."""
    with torch.device("meta"):
        return {n: p.shape for n, p in Transformer(cfg).named_parameters()}


def weight_slot(model: Transformer, name: str) -> Tensor:
    """The tensor our parameter ``name`` lives in: the parameter, or its rows of a fused weight."""
    prefix, _, attr = name.rpartition(".")
    owner, _, proj = prefix.rpartition(".")
    if attr == "weight" and proj in FUSED and owner:
        mod = model.get_submodule(owner)
        if isinstance(mod, Attention) and mod.wqkv is not None:
            i = FUSED[proj]
            start = sum(mod.split[:i])
            return mod.wqkv[start:start + mod.split[i]]
        if isinstance(mod, MLP) and mod.w13 is not None:
            half = mod.w13.shape[0] // 2
            return mod.w13[FUSED[proj] * half:(FUSED[proj] + 1) * half]
        if isinstance(mod, GatedDeltaNet) and mod.w_in is not None:
            i = FUSED[proj]
            start = sum(mod.in_split[:i])
            return mod.w_in[start:start + mod.in_split[i]]
    return model.get_parameter(name).data


def load_weights(model: Transformer, tensors: Iterable[tuple[str, Callable[[], Tensor]]]) -> int:
    """Copy checkpoint tensors (name, reader) into the model, fused or not; returns the tensors copied.

    A reader is called only for a tensor the engine uses, so a memory-mapped file is read once, tensor by
    tensor, onto the device it was opened for.
    """
    cfg = model.cfg
    shapes = expected_shapes(cfg)
    filled: dict[str, str] = {}
    unexpected: list[str] = []
    with torch.no_grad():
        for hf_name, read in tensors:
            ours = hf_to_ours(hf_name, cfg)
            if ours is None:
                continue
            if ours not in shapes:
                unexpected.append(hf_name)
                continue
            if ours in filled:
                raise WeightsError(f"tensor {hf_name!r} fills {ours!r}, which {filled[ours]!r} filled already")
            t = read()
            if t.shape != shapes[ours]:
                raise WeightsError(f"tensor {hf_name!r} has shape {list(t.shape)}; the model's {ours!r} expects "
                                   f"{list(shapes[ours])} (does config.json describe these weights?)")
            weight_slot(model, ours).copy_(to_our_values(cfg, ours, t))
            filled[ours] = hf_name
    missing = sorted(set(shapes) - set(filled))
    if missing or unexpected:
        raise WeightsError(f"weights do not line up with {cfg.name} ({cfg.family}): missing {missing[:8]}"
                           f"{' ...' if len(missing) > 8 else ''} ({len(missing)}), unexpected {unexpected[:8]}"
                           f"{' ...' if len(unexpected) > 8 else ''} ({len(unexpected)})")
    return len(filled)


def load_from_hf(model: Transformer, hf_state: Mapping[str, Tensor]) -> int:
    """Copy a transformers model's ``state_dict`` into ours (the parity tests)."""
    def reader(v: Tensor) -> Callable[[], Tensor]:
        return lambda: v

    return load_weights(model, ((k, reader(v)) for k, v in hf_state.items()))


def load_safetensors(model: Transformer, folder: str | Path, files: Iterable[str],
                     device: torch.device | str | None = None) -> int:
    """Copy a checkpoint's safetensors files into the model, memory-mapped, each tensor read onto ``device``."""
    from safetensors import SafetensorError, safe_open

    dev = str(device or model.embed_tokens.weight.device)
    with ExitStack() as stack:
        handles = []
        for f in files:
            try:
                handles.append(stack.enter_context(safe_open(str(Path(folder) / f), framework="pt", device=dev)))
            except (SafetensorError, OSError) as e:
                raise WeightsError(f"{f}: cannot be read as safetensors ({e})") from None
        def reader(h: Any, k: str) -> Callable[[], Tensor]:
            return lambda: h.get_tensor(k)

        keys = [(h, k) for h in handles for k in h.keys()]  # noqa: SIM118 - a safetensors handle is not iterable
        return load_weights(model, ((k, reader(h, k)) for h, k in keys))


def build_from_checkpoint(cfg: ArchConfig, folder: str | Path, files: Iterable[str], device: torch.device | str,
                          dtype: torch.dtype) -> Transformer:
    """The engine's model with a checkpoint's weights: built without values, fused, then filled on ``device``."""
    with torch.device("meta"):
        model = Transformer(cfg).to(dtype)
    model = model.to_empty(device=device)
    model.fuse()
    load_safetensors(model, folder, files, device)
    return model
