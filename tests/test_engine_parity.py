"""Our engine against the transformers reference of each architecture, same weights, on CPU.

The weights reach our engine through the one mapping of ``engines/native/hf.py``: from the reference's
``state_dict`` in memory, and from the folder transformers' own ``save_pretrained`` writes (config.json and
safetensors, read back memory-mapped into the fused layout).
"""

import inspect
from dataclasses import replace

import pytest
import torch

from phase_energy.engines.native.hf import build_from_checkpoint, load_from_hf
from phase_energy.engines.native.model import GatedDeltaNet
from phase_energy.engines.native.transformer import Transformer
from phase_energy.model.checkpoint import read_checkpoint
from phase_energy.model.presets import ALL_PRESETS, PRESETS, get_preset

transformers = pytest.importorskip("transformers")


def _qwen3(cfg):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    c = Qwen3Config(vocab_size=cfg.vocab, hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
                    num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                    num_key_value_heads=cfg.n_kv_heads, head_dim=cfg.head_dim, rms_norm_eps=cfg.rms_eps,
                    tie_word_embeddings=cfg.tie_embeddings,
                    rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta})
    return Qwen3ForCausalLM(c)


def _minicpm3(cfg):
    from transformers import MiniCPM3Config, MiniCPM3ForCausalLM

    c = MiniCPM3Config(vocab_size=cfg.vocab, hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
                       num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                       num_key_value_heads=cfg.n_heads, q_lora_rank=cfg.q_lora_rank,
                       kv_lora_rank=cfg.kv_lora_rank, qk_nope_head_dim=cfg.qk_nope_head_dim,
                       qk_rope_head_dim=cfg.qk_rope_head_dim, v_head_dim=cfg.v_head_dim, rms_norm_eps=cfg.rms_eps,
                       tie_word_embeddings=cfg.tie_embeddings, scale_emb=cfg.embed_scale,
                       scale_depth=cfg.residual_scale * cfg.n_layers**0.5,
                       dim_model_base=round(cfg.hidden / cfg.logits_divisor),
                       rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta})
    return MiniCPM3ForCausalLM(c)


def _qwen35(cfg):
    from transformers import Qwen3_5ForCausalLM, Qwen3_5TextConfig

    c = Qwen3_5TextConfig(vocab_size=cfg.vocab, hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
                          num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                          num_key_value_heads=cfg.n_kv_heads, head_dim=cfg.head_dim, rms_norm_eps=cfg.rms_eps,
                          tie_word_embeddings=cfg.tie_embeddings, linear_num_key_heads=cfg.lin_k_heads,
                          linear_key_head_dim=cfg.lin_k_dim, linear_num_value_heads=cfg.lin_v_heads,
                          linear_value_head_dim=cfg.lin_v_dim, linear_conv_kernel_dim=cfg.conv_kernel,
                          layer_types=["full_attention" if k == "A" else "linear_attention" for k in cfg.layer_pattern],
                          rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta,
                                           "partial_rotary_factor": cfg.partial_rotary,
                                           "mrope_section": [1, 1, 0]})
    return Qwen3_5ForCausalLM(c)


def _mamba2(cfg):
    from transformers import Mamba2Config, Mamba2ForCausalLM

    c = Mamba2Config(vocab_size=cfg.vocab, hidden_size=cfg.hidden, num_hidden_layers=cfg.n_layers,
                     state_size=cfg.ssm_state, head_dim=cfg.ssm_head_dim, num_heads=cfg.ssm_heads,
                     n_groups=cfg.ssm_groups, expand=cfg.d_inner // cfg.hidden, conv_kernel=cfg.conv_kernel,
                     chunk_size=cfg.ssm_chunk, layer_norm_epsilon=cfg.rms_eps, tie_word_embeddings=True,
                     use_bias=False, use_conv_bias=True, residual_in_fp32=False)
    return Mamba2ForCausalLM(c)


def _nemotron_h(cfg):
    from transformers import NemotronHConfig, NemotronHForCausalLM

    kinds = {"M": "linear_attention", "*": "full_attention", "-": "mlp"}
    c = NemotronHConfig(vocab_size=cfg.vocab, hidden_size=cfg.hidden,
                        layers_block_type=[kinds[k] for k in cfg.layer_pattern],
                        num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads, head_dim=cfg.head_dim,
                        intermediate_size=cfg.intermediate, ssm_state_size=cfg.ssm_state, mamba_num_heads=cfg.ssm_heads,
                        mamba_head_dim=cfg.ssm_head_dim, n_groups=cfg.ssm_groups, conv_kernel=cfg.conv_kernel,
                        chunk_size=cfg.ssm_chunk, layer_norm_epsilon=cfg.rms_eps, tie_word_embeddings=False,
                        expand=cfg.d_inner // cfg.hidden, use_mamba_kernels=False)
    return NemotronHForCausalLM(c)


def _deepseek_v2(cfg):
    from transformers import DeepseekV2Config, DeepseekV2ForCausalLM

    c = DeepseekV2Config(vocab_size=cfg.vocab, hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
                         num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                         num_key_value_heads=cfg.n_heads, q_lora_rank=cfg.q_lora_rank, kv_lora_rank=cfg.kv_lora_rank,
                         qk_nope_head_dim=cfg.qk_nope_head_dim, qk_rope_head_dim=cfg.qk_rope_head_dim,
                         v_head_dim=cfg.v_head_dim, rms_norm_eps=cfg.rms_eps, tie_word_embeddings=cfg.tie_embeddings,
                         n_routed_experts=0, n_shared_experts=0, first_k_dense_replace=cfg.n_layers,
                         rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta})
    return DeepseekV2ForCausalLM(c)


# TransMLA's family (DeepSeek-V2 layout, interleaved RoPE) at test size; transformers norms the latent
TINY_DEEPSEEK = replace(PRESETS["qwen3-4b-transmla"], name="tiny-deepseek", n_layers=2, hidden=64, intermediate=128,
                        n_heads=4, n_kv_heads=4, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8,
                        v_head_dim=16, vocab=128, kv_norm=True, layer_pattern="", tiny=True)
REFERENCES = {"tiny-nemotron": _nemotron_h, "tiny-gqa": _qwen3, "tiny-mla": _minicpm3, "tiny-gdn": _qwen35,
              "tiny-mamba2": _mamba2, "tiny-deepseek": _deepseek_v2}


def _arch(name):
    return TINY_DEEPSEEK if name == "tiny-deepseek" else get_preset(name)


def _perturb(model, seed):
    """Move norms, biases and gates off their init values so that parity tests cover them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=g))


def _cache_kwargs(ref, out, position):
    """The previous output's cache under the name this transformers version takes (5.24 calls it ``cache``)."""
    if "cache" in inspect.signature(ref.forward).parameters:
        return {"cache": out.cache}
    if hasattr(out, "cache_params"):  # Mamba2 kept its own cache object before 5.24
        return {"cache_params": out.cache_params, "cache_position": torch.tensor([position])}
    return {"past_key_values": out.past_key_values}


def _logits(model, prompt, follow):
    """Logits of the prompt's every position, then of each of the follow tokens decoded one by one."""
    batch, ctx = prompt.shape
    model.setup_caches(batch, ctx + follow.shape[1] + 4)
    with torch.no_grad():
        out = [model.prefill(prompt, all_logits=True)]
        out += [model.decode_step(follow[:, i:i + 1], torch.tensor(ctx + i)) for i in range(follow.shape[1])]
    return out


def _reference_logits(ref, prompt, follow):
    ctx = prompt.shape[1]
    with torch.no_grad():
        out = ref(input_ids=prompt, use_cache=True)
        logits = [out.logits]
        for i in range(follow.shape[1]):
            out = ref(input_ids=follow[:, i:i + 1], use_cache=True, **_cache_kwargs(ref, out, ctx + i))
            logits.append(out.logits)
    return logits


def _assert_same(ours, ref, tol):
    torch.testing.assert_close(ours[0], ref[0], rtol=tol, atol=tol, msg=lambda m: f"prefill: {m}")
    for i in range(1, len(ref)):
        torch.testing.assert_close(ours[i], ref[i], rtol=tol, atol=tol, msg=lambda m, i=i: f"decode step {i}: {m}")


@pytest.mark.parametrize("arch", sorted(REFERENCES))
def test_prefill_and_16_decode_steps_match_transformers(arch, tmp_path):
    """The reference's weights, in memory (unfused) and from its save_pretrained folder (fused), give its logits."""
    torch.manual_seed(0)
    cfg = _arch(arch)
    ref = REFERENCES[arch](cfg).float().eval()
    _perturb(ref, 1)
    batch, ctx, steps = 2, 12, 16
    prompt = torch.randint(0, cfg.vocab, (batch, ctx))
    follow = torch.randint(0, cfg.vocab, (batch, steps))
    ref_logits = _reference_logits(ref, prompt, follow)

    ours = Transformer(cfg).float().eval()
    assert load_from_hf(ours, ref.state_dict()) > 0
    unfused = _logits(ours, prompt, follow)
    _assert_same(unfused, ref_logits, 1e-4)
    # the fused projections (one GEMM for q/k/v, for gate/up, for a Gated DeltaNet's four inputs) compute the same
    _assert_same(_logits(ours.fuse(), prompt, follow), unfused, 1e-5)
    gdn = [m for m in ours.modules() if isinstance(m, GatedDeltaNet)]
    assert all(m.w_in is not None and not hasattr(m, "in_proj_z") for m in gdn)  # the fused path ran

    # the checkpoint transformers writes: its config.json gives the preset's shapes, its safetensors our weights
    ref.save_pretrained(tmp_path, safe_serialization=True)
    ckpt = read_checkpoint(tmp_path, arch, ALL_PRESETS.get(arch))
    assert ckpt.arch.layer_pattern == cfg.layer_pattern and ckpt.arch.family == cfg.family
    loaded = build_from_checkpoint(ckpt.arch, tmp_path, ckpt.files, "cpu", torch.float32).eval()
    assert all(getattr(blk.mixer, "wqkv", None) is not None for blk in loaded.layers if blk.kind in "*" or
               (blk.kind == "A" and cfg.paradigm == "gqa"))
    _assert_same(_logits(loaded, prompt, follow), ref_logits, 1e-4)


@pytest.mark.parametrize("arch", ["tiny-gqa", "tiny-mla", "tiny-gdn", "tiny-nemotron"])
def test_engine_workload_runs_the_protocol_through_fake_nvml(tmp_path, arch, monkeypatch):
    from phase_energy.engines.native.runner import EngineWorkload
    from phase_energy.measure.backend import nvml_backend
    from phase_energy.measure.job import measure_with_lever
    from phase_energy.measure.nvml import GPU
    from phase_energy.measure.protocol import Settings
    from phase_energy.testing.fake_nvml import FakeNVML

    w = EngineWorkload(arch, batch=3, context=24, max_output=12, device="cpu", dtype=torch.float32)
    s = Settings(idle_s=0.01, warmup_runs=1, min_counter_ticks=1, counter_period_ms=5, sampling_period_ms=2,
                 prefill_trials=2, decode_trials=2, decode_windows=2, pause_s=0.0, max_output=12)
    _, windows, _, t_first = measure_with_lever(nvml_backend(GPU(0, nvml=FakeNVML()), lambda: None), "default",
                                                False, w, s, journal_dir=tmp_path)
    dec = windows[windows["phase"] == "decode"]
    assert dec["context_start"].min() == 24 and dec["context_end"].max() == 36
    assert (windows[windows["phase"] == "prefill"]["tokens"] % (3 * 24) == 0).all()
    assert t_first > 0
    # prefill of the same prompt in groups gives the same next tokens as one big prefill
    w2 = EngineWorkload(arch, batch=3, context=24, max_output=12, device="cpu", dtype=torch.float32)
    import phase_energy.model.costmodel

    with monkeypatch.context() as m:
        m.setattr(phase_energy.model.costmodel, "PREFILL_TOKENS_PER_CHUNK", 24)  # one sequence per group
        w2.prefill()
    w.prefill()
    assert torch.equal(w.tokens, w2.tokens)


def test_prefill_token_bound_and_cache_fill(tmp_path, monkeypatch):
    """prefill_max_tokens bounds each measured prefill to whole prompts; decode caches are filled by copying."""
    import phase_energy.model.costmodel
    from phase_energy.engines.native.runner import EngineWorkload
    from phase_energy.measure.backend import nvml_backend
    from phase_energy.measure.job import measure_with_lever
    from phase_energy.measure.nvml import GPU
    from phase_energy.measure.protocol import Settings
    from phase_energy.testing.fake_nvml import FakeNVML

    monkeypatch.setattr(phase_energy.model.costmodel, "PREFILL_TOKENS_PER_CHUNK", 48)  # groups of two prompts
    w = EngineWorkload("tiny-gdn", batch=5, context=24, max_output=8, device="cpu", dtype=torch.float32)
    s = Settings(idle_s=0.0, warmup_runs=1, min_counter_ticks=1, counter_period_ms=5, sampling_period_ms=2,
                 prefill_trials=2, decode_trials=1, decode_windows=1, pause_s=0.0, max_output=8,
                 prefill_max_tokens=80)
    assert s.prefill_sequences(5, 24) == 3 and s.prefill_sequences(5, 100) == 1
    _, windows, _, _ = measure_with_lever(nvml_backend(GPU(0, nvml=FakeNVML()), lambda: None), "default", False,
                                          w, s, journal_dir=tmp_path)
    pre = windows[windows["phase"] == "prefill"]
    assert ((pre["tokens"] / pre["repetitions"]) == 3 * 24).all()
    # fill_cache: two prompts prefilled (one group), their rows copied cyclically over rows 2-4
    w.fill_cache(5)
    for t in w.model.cache_tensors():
        assert torch.equal(t[2], t[0]) and torch.equal(t[3], t[1]) and torch.equal(t[4], t[0])
        assert not torch.equal(t[0], t[1])
    assert torch.equal(w.tokens[2:4], w.tokens[0:2])


def test_mamba2_fused_step_mode_decodes_as_the_separate_one(monkeypatch):
    """PHASE_ENERGY_MAMBA2_STEP=fused: the mixer hands the raw time step, x and D to one step op; the decode
    gives the same states and tokens as the separate elementwise steps (here through the op's PyTorch path;
    the kernel itself is checked against it in test_kernels.py)."""
    from phase_energy.engines.native.runner import EngineWorkload

    def run(mode):
        monkeypatch.setenv("PHASE_ENERGY_MAMBA2_STEP", mode)
        w = EngineWorkload("tiny-mamba2", batch=3, context=16, max_output=8, seed=4, device="cpu",
                           dtype=torch.float32)
        w.fill_cache(3)
        w.decode(16, 6)
        mixers = [m for m in w.model.modules() if type(m).__name__ == "Mamba2Mixer"]
        assert mixers and all(m.fused_step == (mode == "fused") for m in mixers)
        assert w.info()["mamba2_step"] == mode  # the trace's engine_info says which ran
        return w.tokens.clone(), [m.state.clone() for m in mixers]

    tok_sep, st_sep = run("separate")
    tok_fused, st_fused = run("fused")
    assert torch.equal(tok_sep, tok_fused)
    for a, b in zip(st_sep, st_fused, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    monkeypatch.setenv("PHASE_ENERGY_MAMBA2_STEP", "fast")
    with pytest.raises(ValueError, match="PHASE_ENERGY_MAMBA2_STEP='fast' is not accepted; expected one of separate"):
        EngineWorkload("tiny-mamba2", batch=1, context=8, max_output=4, device="cpu", dtype=torch.float32)
