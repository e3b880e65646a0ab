"""A local Hugging Face checkpoint (``config.json`` + safetensors) as an architecture of the grid.

The shapes come from the checkpoint's ``config.json`` (the inverse of :mod:`phase_energy.model.hfconfig`):
checked against the preset of the same name where there is one, or taken as they are for a name of the
user's (any model of a supported family: Qwen3-8B gets its own grid). Nothing is downloaded: the folder
must hold the files. Reading the weights themselves is the engine's business
(:mod:`phase_energy.engines.native.hf`); this module reads only ``config.json`` and the safetensors headers
(for the weight index's hash), so that validation at DAG time costs milliseconds and imports no torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phase_energy.model.presets import ArchConfig

RANDOM = "random"
INDEX = "model.safetensors.index.json"
ARCH_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-]*$")  # the trace folder's arch~ wildcard
# model_type in config.json -> the family whose layout the native engine and vLLM build
MODEL_TYPES = {"qwen3": "qwen3", "minicpm3": "minicpm3", "deepseek_v2": "deepseek_v2", "qwen3_5": "qwen3_5",
               "qwen3_5_text": "qwen3_5", "mamba2": "mamba2", "nemotron_h": "nemotron_h"}
# ArchConfig fields a preset is compared on: the ones a config.json carries (derived fields follow), less the
# run-time choices the checkpoint's config.json makes (scan chunk, recurrent-state dtype), which it keeps
NOT_COMPARED = {"name", "sources", "tiny", "full_attention_interval", "ssm_chunk", "state_dtype_bytes"}
LAYER_KINDS = {"M": "M", "mamba": "M", "linear_attention": "M", "*": "*", "attention": "*",
               "full_attention": "*", "-": "-", "mlp": "-"}


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be used; the message names the folder, the field and what is accepted."""


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint folder, the architecture its ``config.json`` describes and the hashes a trace records."""

    folder: Path
    arch: ArchConfig
    config_sha256: str
    index_sha256: str
    files: tuple[str, ...]  # safetensors files, relative to the folder

    def metadata(self) -> dict[str, Any]:
        """The trace's ``weights`` record (folder name only: paths differ between machines)."""
        return {"source": "checkpoint", "folder": self.folder.name, "config_sha256": self.config_sha256,
                "index_sha256": self.index_sha256, "files": len(self.files)}


def weights_label(weights: dict[str, Any]) -> str:
    """A trace's ``weights`` record as tables and figures show it: ``random (normal)``, ``checkpoint Qwen3-4B``."""
    if weights.get("source") == "checkpoint":
        return f"checkpoint {weights.get('folder')}"
    return f"{weights.get('source', 'random')} ({weights.get('init', 'normal')})"


def _rope_theta(c: dict[str, Any]) -> float:
    rope = c.get("rope_parameters") or {}
    scaling = c.get("rope_scaling") or {}
    kinds = {rope.get("rope_type"), scaling.get("rope_type"), scaling.get("type")} - {None, "default"}
    if kinds:
        kind = sorted(str(k) for k in kinds)[0]
        raise CheckpointError(f"rope_type {kind!r} (rope_scaling / rope_parameters) is not implemented by the "
                              "native engine; accepted: 'default' (no scaling)")
    return float(c.get("rope_theta") or rope.get("rope_theta") or 10000.0)  # transformers' default


def _need(c: dict[str, Any], key: str) -> Any:
    if key not in c or c[key] is None:
        raise CheckpointError(f"config.json has no {key!r}, which model_type {c.get('model_type')!r} needs")
    return c[key]


def _fields(c: dict[str, Any]) -> tuple[str, dict[str, tuple[str, Any]]]:
    """The family and ``{ArchConfig field: (config.json key, value)}`` of a config.json."""
    mt = c.get("model_type")
    if mt not in MODEL_TYPES:
        raise CheckpointError(f"model_type {mt!r} is not supported; accepted: {', '.join(sorted(MODEL_TYPES))}")
    family = MODEL_TYPES[mt]
    if family == "qwen3_5" and "text_config" in c:  # the multimodal checkpoint: the language model's config
        c = {**c["text_config"], "tie_word_embeddings": c.get("tie_word_embeddings",
                                                                 c["text_config"].get("tie_word_embeddings"))}
    f: dict[str, tuple[str, Any]] = {}

    def take(field: str, key: str, default: Any = ..., cast: Any = None) -> Any:
        v = _need(c, key) if default is ... else c.get(key, default)
        v = cast(v) if cast is not None and v is not None else v
        f[field] = (key, v)
        return v

    take("vocab", "vocab_size", cast=int)
    take("hidden", "hidden_size", cast=int)
    take("tie_embeddings", "tie_word_embeddings", False, bool)
    if c.get("attention_bias") or c.get("mlp_bias") or c.get("use_bias"):
        raise CheckpointError("config.json asks for biases in linear layers (attention_bias / mlp_bias / "
                              "use_bias); the native engine builds them without; accepted: false")
    if family in ("qwen3", "minicpm3", "deepseek_v2", "qwen3_5"):
        n = take("n_layers", "num_hidden_layers", cast=int)
        take("intermediate", "intermediate_size", cast=int)
        heads = take("n_heads", "num_attention_heads", cast=int)
        take("rms_eps", "rms_norm_eps", 1e-6, float)
        f["rope_theta"] = ("rope_theta", _rope_theta(c))
    if family in ("qwen3", "qwen3_5"):
        take("n_kv_heads", "num_key_value_heads", cast=int)
        take("head_dim", "head_dim", c["hidden_size"] // heads, int)
        f["qk_norm"] = ("model_type", True)
    if family == "qwen3_5":
        rope = c.get("rope_parameters") or {}
        f["partial_rotary"] = ("partial_rotary_factor",
                               float(c.get("partial_rotary_factor", rope.get("partial_rotary_factor", 0.25))))
        take("attn_output_gate", "attn_output_gate", True, bool)
        take("lin_k_heads", "linear_num_key_heads", cast=int)
        take("lin_k_dim", "linear_key_head_dim", cast=int)
        take("lin_v_heads", "linear_num_value_heads", cast=int)
        take("lin_v_dim", "linear_value_head_dim", cast=int)
        take("conv_kernel", "linear_conv_kernel_dim", 4, int)
        types = _need(c, "layer_types")
        if len(types) != n or not set(types) <= {"full_attention", "linear_attention"}:
            raise CheckpointError(f"config.json layer_types {types!r}: expected {n} entries of 'full_attention' "
                                  "or 'linear_attention'")
        f["layer_pattern"] = ("layer_types", "".join("A" if t == "full_attention" else "G" for t in types))
        f["state_dtype_bytes"] = ("mamba_ssm_dtype", 2 if c.get("mamba_ssm_dtype") == "bfloat16" else 4)
    if family in ("minicpm3", "deepseek_v2"):
        f["n_kv_heads"] = ("num_attention_heads", heads)  # MLA: every head reads the latent
        take("q_lora_rank", "q_lora_rank", None)
        take("kv_lora_rank", "kv_lora_rank", cast=int)
        take("qk_nope_head_dim", "qk_nope_head_dim", cast=int)
        take("qk_rope_head_dim", "qk_rope_head_dim", cast=int)
        take("v_head_dim", "v_head_dim", cast=int)
    if family == "minicpm3":
        take("embed_scale", "scale_emb", 1.0, float)
        f["residual_scale"] = ("scale_depth", float(c.get("scale_depth", 1.0)) / n**0.5)
        f["logits_divisor"] = ("dim_model_base", c["hidden_size"] / float(c.get("dim_model_base", c["hidden_size"])))
    if family == "deepseek_v2":
        experts = c.get("n_routed_experts") or 0
        if experts and int(c.get("first_k_dense_replace", 0)) < n:
            raise CheckpointError(f"config.json n_routed_experts={experts} with first_k_dense_replace="
                                  f"{c.get('first_k_dense_replace')} < {n} layers: mixture-of-experts layers are "
                                  "not supported; accepted: dense layers only (n_routed_experts 0)")
    if family in ("mamba2", "nemotron_h"):
        take("rms_eps", "layer_norm_epsilon", 1e-5, float)
        take("conv_kernel", "conv_kernel", 4, int)
        take("ssm_groups", "n_groups", 1, int)
        take("ssm_chunk", "chunk_size", 256, int)
        if c.get("use_conv_bias") is False:
            raise CheckpointError("config.json use_conv_bias=false; the native engine's conv has a bias; "
                                  "accepted: true")
    if family == "mamba2":
        n = take("n_layers", "num_hidden_layers", cast=int)
        take("ssm_state", "state_size", cast=int)
        take("ssm_head_dim", "head_dim", cast=int)
        take("ssm_heads", "num_heads", cast=int)
        f["state_dtype_bytes"] = ("model_type", 2)
        f["intermediate"] = ("model_type", 0)
    if family == "nemotron_h":
        raw = c.get("hybrid_override_pattern") or c.get("layers_block_type") or _need(c, "hybrid_override_pattern")
        kinds = list(raw) if isinstance(raw, str) else raw
        bad = [k for k in kinds if k not in LAYER_KINDS]
        if bad:
            raise CheckpointError(f"config.json layer kind {bad[0]!r} (hybrid_override_pattern / layers_block_type) "
                                  f"is not supported; accepted: {', '.join(sorted(LAYER_KINDS))}")
        pattern = "".join(LAYER_KINDS[k] for k in kinds)
        f["layer_pattern"] = ("hybrid_override_pattern", pattern)
        f["n_layers"] = ("hybrid_override_pattern", len(pattern))
        take("intermediate", "intermediate_size", cast=int)
        take("n_heads", "num_attention_heads", cast=int)
        take("n_kv_heads", "num_key_value_heads", cast=int)
        take("head_dim", "head_dim", c.get("attention_head_dim", c["hidden_size"] // c["num_attention_heads"]), int)
        take("ssm_state", "ssm_state_size", cast=int)
        take("ssm_heads", "mamba_num_heads", cast=int)
        take("ssm_head_dim", "mamba_head_dim", cast=int)
        f["state_dtype_bytes"] = ("mamba_ssm_cache_dtype", 4 if c.get("mamba_ssm_cache_dtype") == "float32" else 2)
        f["mlp_kind"] = ("mlp_hidden_act", "relu2")
        if c.get("mlp_hidden_act", "relu2") != "relu2":
            raise CheckpointError(f"config.json mlp_hidden_act={c['mlp_hidden_act']!r}; accepted: 'relu2'")
    return family, f


PARADIGMS = {"qwen3": "gqa", "minicpm3": "mla", "deepseek_v2": "mla", "qwen3_5": "gdn", "mamba2": "mamba2",
             "nemotron_h": "mamba2"}


def arch_from_hf_config(name: str, config: dict[str, Any]) -> tuple[ArchConfig, dict[str, str]]:
    """The architecture a ``config.json`` describes, and the config.json key each field came from."""
    family, f = _fields(config)
    values = {k: v for k, (_, v) in f.items()}
    if "layer_pattern" not in values and PARADIGMS[family] in ("gqa", "mla"):
        values["layer_pattern"] = "A" * values["n_layers"]
    if family == "deepseek_v2":
        values["kv_norm"] = True  # transformers' and vLLM's DeepSeek-V2 norm the latent in every layer
    try:
        arch = ArchConfig(name=name, family=family, paradigm=PARADIGMS[family],  # type: ignore[arg-type]
                          sources=(f"checkpoint config.json (model_type {config.get('model_type')})",), **values)
    except TypeError as e:  # pragma: no cover - a field table out of step with ArchConfig
        raise CheckpointError(f"config.json of model_type {config.get('model_type')!r}: {e}") from None
    return arch, {k: key for k, (key, _) in f.items()}


def vllm_cannot_load(folder: Path) -> str | None:
    """Why vLLM 0.26 cannot serve this checkpoint folder, or None.

    vLLM registers Qwen3.5 only as its multimodal class: a text-only Qwen3.5 checkpoint (``model_type``
    ``qwen3_5_text``, saved from ``Qwen3_5ForCausalLM``) has no class to load into there.
    """
    try:
        model_type = json.loads((Path(folder) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        return None  # the checkpoint's own validation names what is wrong with it
    if model_type == "qwen3_5_text":
        return (f"vLLM 0.26 has no text-only Qwen3.5 class for checkpoint {Path(folder).name} (model_type "
                "qwen3_5_text); accepted: the multimodal Qwen3.5 checkpoint (model_type qwen3_5), or engine native")
    return None


def compare_to_preset(arch: ArchConfig, preset: ArchConfig, keys: dict[str, str]) -> None:
    """Raise naming the first field where a checkpoint's shapes differ from the preset of the same name."""
    if arch.family != preset.family:
        raise CheckpointError(f"model_type family {arch.family!r}; preset {preset.name!r} is family "
                              f"{preset.family!r} (use another architecture name for a model of another family)")
    for field in dataclasses.fields(ArchConfig):
        if field.name in NOT_COMPARED or (field.name not in keys and field.name != "layer_pattern"):
            continue
        ours, theirs = getattr(preset, field.name), getattr(arch, field.name)
        same = abs(ours - theirs) <= 1e-9 * max(abs(ours), 1) if isinstance(ours, float) else ours == theirs
        if not same:
            key = keys.get(field.name, field.name)
            raise CheckpointError(f"config.json {key} gives {field.name}={theirs!r}, preset {preset.name!r} has "
                                  f"{ours!r}; point the preset at a checkpoint of its shapes, or give the "
                                  "checkpoint an architecture name of its own (its shapes are then taken as they are)")


def _safetensors_header(path: Path) -> bytes:
    """The JSON header of a safetensors file (tensor names, dtypes, shapes, offsets)."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path.name}: not a safetensors file (shorter than its 8-byte header length)")
        (n,) = struct.unpack("<Q", head)
        if n > 100_000_000:
            raise CheckpointError(f"{path.name}: not a safetensors file (header length {n})")
        text = fh.read(n)
    try:
        json.loads(text)
    except ValueError:
        raise CheckpointError(f"{path.name}: not a safetensors file (its header is not JSON)") from None
    return text


def weight_files(folder: Path) -> tuple[list[str], str]:
    """The safetensors files of a folder and the sha256 of its weight index.

    With ``model.safetensors.index.json`` the index is that file (its hash covers every tensor's name and
    file); without, the headers of the files (names, dtypes, shapes, offsets) in name order.
    """
    index = folder / INDEX
    if index.exists():
        raw = index.read_bytes()
        try:
            files = sorted(set(json.loads(raw)["weight_map"].values()))
        except (ValueError, KeyError, AttributeError):
            raise CheckpointError(f"{INDEX}: not a weight index (expected a JSON object with 'weight_map')") from None
        missing = [f for f in files if not (folder / f).exists()]
        if missing:
            raise CheckpointError(f"{INDEX} names {missing[0]!r}, which the folder lacks ({len(missing)} missing)")
        return files, hashlib.sha256(raw).hexdigest()
    files = sorted(p.name for p in folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError("no *.safetensors file and no model.safetensors.index.json; accepted: a Hugging "
                              "Face folder saved with safetensors (save_pretrained's default); .bin weights are "
                              "not read")
    h = hashlib.sha256()
    for name in files:
        h.update(name.encode() + b"\0" + _safetensors_header(folder / name))
    return files, h.hexdigest()


def read_checkpoint(folder: str | Path, name: str, preset: ArchConfig | None = None) -> Checkpoint:
    """Read and check a checkpoint folder for architecture ``name`` (against ``preset`` when it has one)."""
    path = Path(folder).expanduser()
    try:
        if not path.is_dir():
            raise CheckpointError("no such folder; accepted: 'random' or a local folder holding config.json and "
                                  "*.safetensors (nothing is downloaded)")
        if not ARCH_NAME.match(name):
            raise CheckpointError(f"architecture name {name!r} cannot name a trace folder; accepted: lower-case "
                                  "letters, digits, '.' and '-', starting with a letter or digit")
        try:
            raw = (path / "config.json").read_bytes()
        except OSError:
            raise CheckpointError("no config.json in the folder") from None
        try:
            config = json.loads(raw)
        except ValueError as e:
            raise CheckpointError(f"config.json is not JSON ({e})") from None
        if not isinstance(config, dict):
            raise CheckpointError("config.json is not a JSON object")
        arch, keys = arch_from_hf_config(name, config)
        if preset is not None:
            compare_to_preset(arch, preset, keys)
        files, index_hash = weight_files(path)
    except CheckpointError as e:
        raise CheckpointError(f"weights of {name!r} ({path}): {e}") from None
    return Checkpoint(path, arch, hashlib.sha256(raw).hexdigest(), index_hash, tuple(files))
