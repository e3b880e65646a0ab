"""Real checkpoints: the config key ``weights``, checkpoint folders written by transformers' own
``save_pretrained`` (random values, the real file format), the native engine and vLLM pointed at them, and
the trace's record of which weights were used. Parity of each family's logits is in test_engine_parity.py.
"""

import hashlib
import json
from dataclasses import replace

import pytest
import torch

from phase_energy.config import ConfigError, checkpoint_of, validate_config
from phase_energy.engines.native.hf import WeightsError, build_from_checkpoint
from phase_energy.grid import GridPoint, expand_grid
from phase_energy.measure.job import run_job
from phase_energy.measure.trace import read_trace
from phase_energy.model.checkpoint import CheckpointError, read_checkpoint
from phase_energy.model.costmodel import CostModel
from phase_energy.model.hfconfig import transformers_config
from phase_energy.model.presets import get_preset

from .conftest import EngineStarted

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")


def save_model(cfg, folder, seed=0):
    """A transformers model of these shapes, random values, saved as its checkpoint folder; returns the model."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    d = transformers_config(cfg)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(d.pop("model_type"), **d)).float().eval()
    model.save_pretrained(folder, safe_serialization=True)
    return model


# a Qwen3 of shapes no preset has: the user names it and gets its grid
WIDER = replace(get_preset("tiny-gqa"), name="my-qwen3", hidden=96, intermediate=160, n_heads=6, n_kv_heads=3,
                n_layers=3, layer_pattern="")


@pytest.fixture(scope="module")
def wider(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt") / "My-Qwen3"
    return folder, save_model(WIDER, folder)


def test_random_is_the_default_and_a_checkpoint_names_a_new_architecture(wider, tmp_path):
    folder, ref = wider
    assert validate_config({})["weights"] == {}
    cfg = validate_config({"architectures": ["tiny-gqa", "my-qwen3"], "weights": {"my-qwen3": str(folder)},
                           "batch_sizes": [2], "contexts": [16], "backend": "sim"})
    assert checkpoint_of(cfg, "tiny-gqa") is None
    arch = get_preset("my-qwen3")  # registered by the validation, for every stage of this process
    assert (arch.hidden, arch.n_layers, arch.n_heads, arch.family) == (96, 3, 6, "qwen3")
    assert CostModel(arch).params == sum(p.numel() for p in ref.parameters())
    assert [p.arch for p in expand_grid(cfg)] == ["tiny-gqa", "my-qwen3"]
    # the trace records the checkpoint: folder name, config.json's hash, the weight index's hash
    point = GridPoint("my-qwen3", 2, 16, "default")
    run_job(cfg, point, tmp_path / point.path)
    meta = read_trace(tmp_path / point.path)["metadata"]
    w = meta["weights"]
    assert w["source"] == "checkpoint" and w["folder"] == "My-Qwen3"
    assert w["config_sha256"] == hashlib.sha256((folder / "config.json").read_bytes()).hexdigest()
    assert len(w["index_sha256"]) == 64 and meta["arch"] == "my-qwen3"
    other = GridPoint("tiny-gqa", 2, 16, "default")
    run_job(cfg, other, tmp_path / other.path)
    assert read_trace(tmp_path / other.path)["metadata"]["weights"] == {"source": "random", "init": "normal"}


def test_the_weight_index_hash_follows_the_tensors(wider, tmp_path):
    folder, ref = wider
    a = read_checkpoint(folder, "my-qwen3")
    assert a.index_sha256 == read_checkpoint(folder, "my-qwen3").index_sha256
    state = {k: v.clone() for k, v in ref.state_dict().items() if k != "lm_head.weight"}
    state.pop("model.layers.2.mlp.down_proj.weight")
    (tmp_path / "config.json").write_bytes((folder / "config.json").read_bytes())
    safetensors_torch.save_file(state, tmp_path / "model.safetensors")
    assert read_checkpoint(tmp_path, "my-qwen3").index_sha256 != a.index_sha256


def test_engine_workload_decodes_the_checkpoint_like_transformers(wider, tmp_path):
    from phase_energy.engines.native.runner import EngineWorkload

    folder, ref = wider
    ckpt = read_checkpoint(folder, "my-qwen3")
    w = EngineWorkload("my-qwen3", batch=2, context=10, max_output=4, device="cpu", dtype=torch.float32,
                       compile=False, checkpoint=ckpt)
    assert w.info()["weights"] == "checkpoint My-Qwen3" and w.weights["source"] == "checkpoint"
    w.prefill()
    with torch.no_grad():
        expect = ref(input_ids=w.prompt).logits[:, -1].argmax(-1, keepdim=True)
    assert torch.equal(w.tokens, expect)


def _write(folder, config=None, weights=True):
    folder.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (folder / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    if weights:
        safetensors_torch.save_file({"x": torch.zeros(2)}, folder / "model.safetensors")
    return folder


def _qwen3_config(**over):
    d = transformers_config(get_preset("tiny-gqa"))
    d.update(over)
    return d


@pytest.mark.parametrize("name, make, words", [
    ("tiny-gqa", lambda p: p / "nowhere", "no such folder"),
    ("tiny-gqa", lambda p: _write(p / "c"), "no config.json"),
    ("tiny-gqa", lambda p: _write(p / "c", "{not json"), "config.json is not JSON"),
    ("tiny-gqa", lambda p: _write(p / "c", _qwen3_config(model_type="llama")),
     "model_type 'llama' is not supported; accepted: deepseek_v2, mamba2, minicpm3"),
    ("tiny-gqa", lambda p: _write(p / "c", _qwen3_config(hidden_size=96)),
     "config.json hidden_size gives hidden=96, preset 'tiny-gqa' has 64"),
    ("tiny-gqa", lambda p: _write(p / "c", _qwen3_config(num_key_value_heads=4)),
     "num_key_value_heads gives n_kv_heads=4, preset 'tiny-gqa' has 2"),
    ("tiny-mamba2", lambda p: _write(p / "c", _qwen3_config()), "family 'qwen3'; preset 'tiny-mamba2' is family"),
    ("tiny-gqa", lambda p: _write(p / "c", _qwen3_config(), weights=False), ".bin weights are not read"),
    ("tiny-gqa", lambda p: _write(p / "c", _qwen3_config(rope_scaling={"rope_type": "yarn", "factor": 4.0})),
     "rope_type 'yarn'"),
    ("tiny-gqa", lambda p: _write(p / "c", _qwen3_config(attention_bias=True)), "biases"),
    ("Big_Model", lambda p: _write(p / "c", _qwen3_config()), "cannot name a trace folder"),
])
def test_a_bad_checkpoint_is_named_at_validation(tmp_path, name, make, words):
    folder = make(tmp_path)
    with pytest.raises(ConfigError) as e:
        validate_config({"architectures": [name], "weights": {name: str(folder)}})
    assert f"'weights.{name}'" in str(e.value) and words in str(e.value), str(e.value)


def test_names_without_shapes_are_refused():
    with pytest.raises(ConfigError, match=r"'architectures\[0\]': value 'qwen3-8b' is not a known preset.*weights: "
                                          r"\{qwen3-8b: /path/to/checkpoint\}"):
        validate_config({"architectures": ["qwen3-8b"]})
    with pytest.raises(ConfigError, match=r"'weights.qwen3-8b': value 'random' needs a preset's shapes"):
        validate_config({"weights": {"qwen3-8b": "random"}})
    assert validate_config({"weights": {"qwen3-4b": "random"}})["weights"] == {"qwen3-4b": "random"}


def test_a_checkpoint_no_architecture_names_is_refused(tmp_path):
    folder = _write(tmp_path / "c", _qwen3_config())
    # a misspelt name: an architecture of its own, never measured; the preset runs on random weights
    with pytest.raises(ConfigError, match=r"'weights.tinygqa': 'tinygqa' is an architecture of its own .* no "
                                          r"architectures or clear.architectures entry names.*tiny-gqa"):
        validate_config({"architectures": ["tiny-gqa"], "weights": {"tinygqa": str(folder)}})
    assert validate_config({"architectures": ["tinygqa"], "weights": {"tinygqa": str(folder)}})["weights"]
    # a preset's checkpoint may wait for a run whose grid names the preset (a chunk of a campaign)
    assert validate_config({"architectures": ["qwen3-4b"], "weights": {"tiny-gqa": str(folder)}})["weights"]
    # a measurement job's part of the config (MEASURE_KEYS) has the weights and no grid: accepted
    assert validate_config({"backend": "sim", "weights": {"tinygqa": str(folder)}})["weights"]


def _broken(folder, tmp_path, edit):
    out = tmp_path / "broken"
    out.mkdir()
    (out / "config.json").write_bytes((folder / "config.json").read_bytes())
    from safetensors.torch import load_file

    state = load_file(folder / "model.safetensors")
    edit(state)
    safetensors_torch.save_file(state, out / "model.safetensors")
    return read_checkpoint(out, "my-qwen3")


@pytest.mark.parametrize("edit, words", [
    (lambda s: s.pop("model.layers.1.mlp.down_proj.weight"), "missing ['layers.1.mlp.down_proj.weight'] (1)"),
    (lambda s: s.update({"model.layers.1.mlp.extra.weight": torch.zeros(2)}),
     "unexpected ['model.layers.1.mlp.extra.weight'] (1)"),
    (lambda s: s.update({"model.layers.0.self_attn.k_proj.weight": torch.zeros(96, 48)}),
     "'model.layers.0.self_attn.k_proj.weight' has shape [96, 48]; the model's 'layers.0.mixer.k_proj.weight' "
     "expects [48, 96]"),
])
def test_tensors_that_do_not_line_up_are_named(wider, tmp_path, edit, words):
    ckpt = _broken(wider[0], tmp_path, edit)
    with pytest.raises(WeightsError) as e:
        build_from_checkpoint(ckpt.arch, ckpt.folder, ckpt.files, "cpu", torch.float32)
    assert words in str(e.value), str(e.value)


def test_a_truncated_file_is_refused(wider, tmp_path):
    out = tmp_path / "t"
    out.mkdir()
    (out / "config.json").write_bytes((wider[0] / "config.json").read_bytes())
    (out / "model.safetensors").write_bytes(b"\x10\x00")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a safetensors file"):
        read_checkpoint(out, "my-qwen3")


def test_vllm_gets_the_checkpoint_folder_with_load_format_auto(wider, tmp_path, vllm_args):
    """vLLM cannot be installed on these CPUs: a stand-in ``vllm`` module records what its ``LLM`` is given."""
    from phase_energy.engines.vllm import VllmEngine

    ckpt = read_checkpoint(wider[0], "my-qwen3")
    with pytest.raises(EngineStarted):
        VllmEngine("my-qwen3", max_num_seqs=2, max_model_len=64, capture_sizes=[2], checkpoint=ckpt)
    assert vllm_args[-1]["model"] == str(wider[0]) and vllm_args[-1]["load_format"] == "auto"
    with pytest.raises(EngineStarted):
        VllmEngine("tiny-gqa", max_num_seqs=2, max_model_len=64, capture_sizes=[2], folder=tmp_path / "dummy")
    assert vllm_args[-1]["model"] == str(tmp_path / "dummy") and vllm_args[-1]["load_format"] == "dummy"
    assert json.loads((tmp_path / "dummy" / "config.json").read_text())["hidden_size"] == 64


# ------------------------------------------------------------------- random weights with trained statistics
def _stats(init):
    from phase_energy.engines.native.transformer import _heavy_tailed_

    gen = torch.Generator().manual_seed(0)
    w = torch.empty(512, 2048)
    if init == "normal":
        w.normal_(0.0, 2048**-0.5, generator=gen)
    else:
        _heavy_tailed_(w, gen, outlier_columns=init == "trained-like")
    kurtosis = (w.pow(4).mean() / w.pow(2).mean().square()).item()
    cols = w.norm(dim=0)
    return w.square().mean().item() * 2048, kurtosis, (cols.max() / cols.median()).item()


def test_trained_like_weights_have_heavy_tails_and_outlier_channels_at_the_same_mean_square():
    ms_n, kurt_n, col_n = _stats("normal")
    ms_h, kurt_h, col_h = _stats("heavy-tailed")
    ms_t, kurt_t, col_t = _stats("trained-like")
    for ms in (ms_n, ms_h, ms_t):  # the same energy per weight: only the distribution differs
        assert ms == pytest.approx(1.0, rel=0.02)
    assert kurt_n == pytest.approx(3.0, abs=0.1) and kurt_h > 6 and kurt_t > 6
    assert col_n < 1.2 and col_h < 2.5 and col_t > 4  # a few input channels stand out only in trained-like


def test_weight_inits_are_selectable_by_name():
    from phase_energy.engines.native.transformer import WEIGHT_INITS, Transformer, init_random_

    assert "trained-like" in WEIGHT_INITS
    cfg = get_preset("tiny-gqa")
    a = init_random_(Transformer(cfg), 0, "trained-like").layers[0].mlp.down_proj.weight
    b = init_random_(Transformer(cfg), 0, "heavy-tailed").layers[0].mlp.down_proj.weight
    assert not torch.equal(a, b)
    with pytest.raises(ValueError, match="weight init 'trained' is not known; accepted: normal, heavy-tailed, "
                                         "trained-like, uniform-1e-3"):
        init_random_(Transformer(cfg), 0, "trained")


def test_the_random_vs_trained_config_runs_a_preset_next_to_its_checkpoint(tmp_path):
    """Validation reads config.json and the safetensors headers only: Qwen3-4B's config.json stands in."""
    from pathlib import Path

    import yaml

    from phase_energy.model.hfconfig import hf_config

    raw = yaml.safe_load((Path(__file__).parents[1] / "config/random-vs-trained.yaml").read_text())
    folder = _write(tmp_path / "Qwen3-4B", hf_config(get_preset("qwen3-4b")))
    raw["weights"] = {"qwen3-4b-trained": str(folder)}
    cfg = validate_config(raw)
    trained, preset = get_preset("qwen3-4b-trained"), get_preset("qwen3-4b")
    assert CostModel(trained).weight_bytes == CostModel(preset).weight_bytes
    assert {p.arch for p in expand_grid(cfg)} == {"qwen3-4b", "qwen3-4b-trained"}


def test_vllm_points_of_a_text_only_qwen35_checkpoint_are_skipped_saying_why(tmp_path):
    """vLLM registers Qwen3.5 only as its multimodal class: a text-only checkpoint gets a skip record, not a crash."""
    from phase_energy.measure.job import point_skip_reason

    folder = tmp_path / "Qwen3.5-Text"
    save_model(get_preset("tiny-gdn"), folder)
    assert json.loads((folder / "config.json").read_text())["model_type"] == "qwen3_5_text"
    cfg = validate_config({"architectures": ["tiny-gdn"], "weights": {"tiny-gdn": str(folder)}, "batch_sizes": [1],
                           "contexts": [16], "engines": ["native", "vllm"]})
    why = point_skip_reason(cfg, GridPoint("tiny-gdn", 1, 16, "default", engine="vllm"), "nvml")
    assert why.startswith("engine: vLLM 0.26 has no text-only Qwen3.5 class") and "Qwen3.5-Text" in why
    assert point_skip_reason(cfg, GridPoint("tiny-gdn", 1, 16, "default", engine="native"), "nvml") is None
