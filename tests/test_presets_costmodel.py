import pytest

from phase_energy.model.costmodel import CostModel
from phase_energy.model.presets import ALL_PRESETS, PRESETS, get_preset

# Published totals quoted in docs/architectures.md
PUBLISHED = {
    "qwen3-4b": (4_022_468_096, 147_456, 0),
    "minicpm3-4b": (4_073_875_968, 35_712, 0),
    "qwen3-4b-transmla": (4_226_537_984, 41_472, 0),
    "qwen3.5-4b": (4_205_751_296, 32_768, 51_511_296),
    "mamba2-2.7b": (2_702_599_680, 0, None),
    "nemotron-h-4b": (4_489_223_040, 16_384, None),
}


@pytest.mark.parametrize("name", PUBLISHED)
def test_parameter_and_cache_counts_match_published_shapes(name):
    params, kv, state = PUBLISHED[name]
    m = CostModel(PRESETS[name])
    assert m.params == params
    assert m.kv_bytes_per_token == kv
    if state is not None:
        assert m.state_bytes_per_sequence == state


def test_weight_bytes_match_reference_table():
    assert CostModel(PRESETS["qwen3-4b"]).weight_bytes == pytest.approx(8.045e9, rel=1e-3)
    assert CostModel(PRESETS["nemotron-h-4b"]).weight_bytes == pytest.approx(8.173e9, rel=1e-3)
    assert CostModel(PRESETS["mamba2-2.7b"]).weight_bytes == pytest.approx(5.405e9, rel=1e-3)
    # Mamba2 state in bf16: 86.0 MB per sequence
    assert CostModel(PRESETS["mamba2-2.7b"]).state_bytes_per_sequence == pytest.approx(86.0e6, rel=2e-3)


def test_every_preset_has_paradigm_sources_and_consistent_pattern():
    for name, cfg in ALL_PRESETS.items():
        assert cfg.paradigm in ("gqa", "mla", "gdn", "mamba2"), name
        assert cfg.sources, name
        assert len(cfg.layer_pattern) == cfg.n_layers, name


def test_decode_bytes_grow_with_context_only_for_attention():
    gqa = CostModel(PRESETS["qwen3-4b"])
    mamba = CostModel(PRESETS["mamba2-2.7b"])
    assert gqa.decode_bytes(8, 4096) - gqa.decode_bytes(8, 2048) == 8 * 2048 * 147_456
    assert mamba.decode_bytes(8, 4096) == mamba.decode_bytes(8, 2048)


def test_prefill_flops_quadratic_term_for_attention():
    m = CostModel(PRESETS["qwen3-4b"])
    head = 2 * m.embedding_params  # logits of the last token only
    per_token = m.linear_flops_per_token - head

    def attention(c):
        return m.prefill_flops(1, c) - c * per_token - head

    assert attention(2000) / attention(1000) == pytest.approx(2001 * 2000 / (1001 * 1000), rel=1e-9)


def test_unknown_preset_lists_valid_names():
    with pytest.raises(KeyError) as e:
        get_preset("qwen-7b")
    assert "qwen-7b" in str(e.value) and "qwen3-4b" in str(e.value) and "mamba2-2.7b" in str(e.value)
