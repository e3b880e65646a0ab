"""The decode step compiled per block: one compiled graph per kind of block, the same logits as eager (CPU)."""

import pytest
import torch

from phase_energy.engines.native.transformer import Block, Transformer, init_random_
from phase_energy.model.presets import get_preset


def _model(cfg, prompt):
    m = Transformer(cfg).float()
    init_random_(m, seed=3)
    m.fuse()
    m.setup_caches(prompt.shape[0], prompt.shape[1] + 8)
    m.prefill(prompt)
    return m


def test_per_block_compile_shares_one_graph_per_block_kind_and_matches_eager():
    from torch._dynamo.utils import counters

    cfg = get_preset("tiny-nemotron")  # Mamba2, MLP-only and attention blocks: three kinds, four blocks
    kinds = set(cfg.layer_pattern)
    assert len(kinds) < cfg.n_layers  # a kind repeats, so sharing is tested
    prompt = torch.randint(0, cfg.vocab, (2, 12), generator=torch.Generator().manual_seed(0))
    eager, compiled = _model(cfg, prompt), _model(cfg, prompt)
    torch._dynamo.reset()
    counters.clear()
    compiled.decode_block = torch.compile(Block.forward, dynamic=False)
    tokens = torch.zeros(2, 1, dtype=torch.long)
    with torch.no_grad():
        for step in range(3):  # recurrent state and caches advance: each step checks the one before
            pos = torch.tensor(prompt.shape[1] + step)
            want, got = eager.decode_step(tokens, pos), compiled.decode_step(tokens, pos)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
            tokens = want[:, -1].argmax(-1, keepdim=True)
    assert counters["stats"]["unique_graphs"] == len(kinds)


def test_unknown_compile_scope_is_named(monkeypatch):
    import pytest

    from phase_energy.engines.native.runner import EngineWorkload

    monkeypatch.setenv("PHASE_ENERGY_COMPILE_SCOPE", "layers")
    with pytest.raises(ValueError, match=r"'layers' is not accepted.*step, block"):
        EngineWorkload("tiny-gqa", 1, 8, 4, device="cpu")


def test_the_build_records_each_part_and_they_add_up_to_the_build():
    from phase_energy.engines.native.runner import EngineWorkload

    w = EngineWorkload("tiny-gqa", 2, 8, 4, device="cpu", compile=False)
    parts = w.info()["build_parts"]
    assert list(parts) == ["construct_s", "init_s", "fuse_s", "caches_s", "compile_setup_s"]
    assert all(v >= 0 for v in parts.values())
    # every part lies inside the build, and the parts leave out only the set-up before the first
    assert sum(parts.values()) <= w.build_s


def test_the_warm_up_times_the_prefill_from_one_piece_of_each_shape():
    """The warm-up's prefill time comes from one group of prompts and the smaller rest (the two shapes a
    measured prefill runs), scaled by how often each runs, not from a whole measured prefill (CPU engine)."""
    from phase_energy.engines.native.runner import EngineWorkload

    w = EngineWorkload("tiny-gqa", 10, 2048, 4, device="cpu", compile=False, dtype=torch.float32)
    assert w.prefill_unit == 8  # 16384 tokens' worth of 2048-token prompts
    sizes = []
    real = w._prefill_fn

    def spy(tokens, sl):
        sizes.append(tokens.shape[0])
        return real(tokens, sl)
    w._prefill_fn = spy
    for n, want in ((10, [8, 2]), (8, [8]), (3, [3])):
        sizes.clear()
        assert w._timed_prefill(n) > 0
        assert sizes == want
    sizes.clear()
    w.prefill(10)  # what it stands for: one group and the rest
    assert sizes == [8, 2]


def test_the_timed_prefill_counts_each_piece_as_often_as_the_prefill_runs_it(monkeypatch):
    """Known answer on a clock that a prefill advances by one second per prompt (a stand-in for the card's
    time, which varies on this machine): the pieces' times scaled by how often each runs make the whole."""
    from phase_energy.engines.native import runner
    from phase_energy.engines.native.runner import EngineWorkload

    w = EngineWorkload("tiny-gqa", 20, 2048, 4, device="cpu", compile=False, dtype=torch.float32)
    clock = [0.0]
    real = w._prefill_fn

    def prefill(tokens, sl):
        clock[0] += tokens.shape[0]
        return real(tokens, sl)
    w._prefill_fn = prefill
    monkeypatch.setattr(runner.time, "perf_counter", lambda: clock[0])
    for n in (20, 16, 8, 5):  # two groups and a rest of 4; two groups; one group; a rest alone
        assert w._timed_prefill(n) == pytest.approx(n)
    assert w._timed_prefill(50) == pytest.approx(20)  # never more than the batch
