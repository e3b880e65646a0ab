"""The engine's Triton kernels (decode attention, in-place recurrent step) in Triton's CPU interpreter.

The interpreter runs the same kernel source as the GPU on CPU tensors (conftest sets TRITON_INTERPRET);
it handles fp32 and fp16 (bf16 matmuls are checked on the GPU by bench/gpu_run.py).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

pytest.importorskip("triton")
if os.environ.get("TRITON_INTERPRET") != "1":  # pragma: no cover - a GPU developer's own setting
    pytest.skip("the kernel tests need TRITON_INTERPRET=1", allow_module_level=True)

from bench.kernels.gemv import gemv, gemv_reference  # an experimental kernel, kept with the benchmarks

from phase_energy.engines.native import attention
from phase_energy.engines.native.attention import (
    SplitConfig,
    decode_attention,
    decode_attention_reference,
    default_config,
    launch_split_kernel,
    wide_latent_two_loads,
)
from phase_energy.engines.native.recurrent import (
    conv_update_reference,
    launch_conv_update,
    launch_mamba2_step,
    launch_step_kernel,
    mamba2_step_reference,
    recurrent_step_,
    recurrent_step_reference,
    step_tiling,
)
from phase_energy.engines.native.transformer import Transformer, init_random_
from phase_energy.model.presets import get_preset


@pytest.mark.parametrize(("b", "h", "g", "dk", "dv", "s_max", "length", "splits", "dtype"), [
    (2, 2, 4, 32, 24, 300, 150, 3, torch.float32),  # GQA, keys beyond the length ignored
    (1, 1, 40, 72, 64, 200, 129, 0, torch.float16),  # MLA latent form: 40 heads over one shared cache
    (2, 1, 6, 48, 32, 130, 1, 4, torch.float32),  # one key: three splits have none
])
def test_split_attention_kernel_matches_masked_attention(b, h, g, dk, dv, s_max, length, splits, dtype):
    gen = torch.Generator().manual_seed(b * s_max + length)
    q, k, v = (torch.randn(*shape, generator=gen).to(dtype)
               for shape in ((b, h, g, dk), (b, h, s_max, dk), (b, h, s_max, dv)))
    n = torch.tensor(length)
    o, lse = launch_split_kernel(q, k, v, n, dk**-0.5, splits)
    assert o.shape[3] == lse.shape[3] > (1 if splits != 1 else 0)
    merged = (o * torch.softmax(lse, -1)[..., None]).sum(3)
    ref = decode_attention_reference(q, k, v, n, dk**-0.5).float()
    tol = 1e-4 if dtype == torch.float32 else 2e-3
    assert (merged - ref).abs().max().item() < tol
    # the keys past the length must not matter: scribble on them
    k[:, :, length:] = 1e4
    o2, _ = launch_split_kernel(q, k, v, n, dk**-0.5, splits)
    assert torch.equal(o, o2)


@pytest.mark.parametrize(("block_g", "block_n", "block_dk"), [(32, 32, 16), (64, 16, 64), (32, 32, 64)])
def test_split_attention_kernel_takes_other_tilings(block_g, block_n, block_dk):
    # MLA: 40 query heads over one latent cache; 16 heads per program read the cache 3 times, 64 once
    gen = torch.Generator().manual_seed(block_g)
    q = torch.randn(2, 1, 40, 40, generator=gen)
    cache = torch.randn(2, 1, 150, 40, generator=gen)
    n = torch.tensor(131)
    cfg = SplitConfig(block_g=block_g, block_n=block_n, block_dk=block_dk)
    o, lse = launch_split_kernel(q, cache, cache[..., :32], n, 40**-0.5, 3, cfg)
    merged = (o * torch.softmax(lse, -1)[..., None]).sum(3)
    ref = decode_attention_reference(q, cache, cache[..., :32], n, 40**-0.5).float()
    assert (merged - ref).abs().max().item() < 1e-4
    with pytest.raises(ValueError, match="block_g must be a power of two >= 16, got 24"):
        SplitConfig(block_g=24)


@pytest.mark.parametrize(("g", "dk", "dv", "block_g", "block_n", "dtype"), [
    (40, 40, 32, 32, 32, torch.float32),  # MiniCPM3-like: a latent and a narrow RoPE part, 40 heads
    (32, 72, 64, 16, 16, torch.float16),  # TransMLA-like proportions (512 + 64) at a small size, half precision
    (8, 32, 32, 16, 64, torch.float32),  # V is all of K: the RoPE load is masked to nothing
])
def test_one_load_split_kernel_reads_the_latent_once_and_matches(g, dk, dv, block_g, block_n, dtype):
    """one_load: V taken from the same tile as K; the same result as the masked reference, and as the chunked path."""
    gen = torch.Generator().manual_seed(g * dk + dv)
    q = torch.randn(3, 1, g, dk, generator=gen).to(dtype)
    cache = torch.randn(3, 1, 170, dk, generator=gen).to(dtype)
    n = torch.tensor(133)
    cfg = SplitConfig(block_g=block_g, block_n=block_n, one_load=True)
    o, lse = launch_split_kernel(q, cache, cache[..., :dv], n, dk**-0.5, 3, cfg)
    merged = (o * torch.softmax(lse, -1)[..., None]).sum(3)
    ref = decode_attention_reference(q, cache, cache[..., :dv], n, dk**-0.5).float()
    tol = 1e-4 if dtype == torch.float32 else 3e-3
    assert (merged - ref).abs().max().item() < tol
    chunked, _ = launch_split_kernel(q, cache, cache[..., :dv], n, dk**-0.5, 3,
                                     SplitConfig(block_g=block_g, block_n=block_n, block_dk=16))
    assert (o - chunked).abs().max().item() < tol
    # keys past the length must not matter
    cache[:, :, 133:] = 1e4
    o2, _ = launch_split_kernel(q, cache, cache[..., :dv], n, dk**-0.5, 3, cfg)
    assert torch.equal(o, o2)


def test_one_load_refuses_a_v_that_is_not_the_latent_prefix():
    """A separate V (GQA's own value cache) or a V from K's other columns cannot take the one-load path."""
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(1, 1, 16, 40, generator=gen)
    cache = torch.randn(1, 1, 64, 40, generator=gen)
    cfg = SplitConfig(one_load=True)
    for v in (cache[..., :32].clone(), cache[..., 8:40], cache.view(torch.int32)[..., :32]):
        with pytest.raises(ValueError, match=r"one_load reads V from K's first columns: v must be a view of k's"):
            launch_split_kernel(q, cache, v, torch.tensor(64), 40**-0.5, 1, cfg)


def test_default_wide_latent_tiling_loads_the_latent_once_and_falls_back_for_a_v_of_its_own(monkeypatch):
    """From batch 32 a 576-wide latent takes the one-load path by default; a separate V takes two loads."""
    gen = torch.Generator().manual_seed(2)
    b, s_max = 32, 48
    q = torch.randn(b, 1, 32, 576, generator=gen)
    cache = torch.randn(b, 1, s_max, 576, generator=gen)
    length = torch.tensor(40)
    assert default_config(b, 1, 32, 576, 512, s_max).one_load
    real, launched = attention._split_kernel, []

    class Recorder:  # the real kernel, noting which path each launch asked for
        def __getitem__(self, grid):
            def launch(*args, **kw):
                launched.append(kw["ONE_LOAD"])
                return real[grid](*args, **kw)
            return launch

    monkeypatch.setattr(attention, "_split_kernel", Recorder())
    monkeypatch.setattr(attention, "TWO_LOAD_FALLBACKS", [])
    for v in (cache[..., :512], cache[..., :512].clone()):  # the latent's prefix view, then a V of its own
        o, _ = launch_split_kernel(q, cache, v, length, 576**-0.5, 1)
        ref = decode_attention_reference(q, cache, v, length, 576**-0.5)
        torch.testing.assert_close(o[..., 0, :], ref.float(), atol=2e-4, rtol=2e-4)
    assert launched == [True, False]  # one load for the latent's view, two for the copy
    fallbacks = attention.TWO_LOAD_FALLBACKS
    assert fallbacks == [(b, 1, s_max, 512)]  # and the fallback is on record


def test_split_tiling_reads_mla_latents_fewer_times_where_the_grid_stays_full():
    # MiniCPM3 (40 heads over a 288-wide latent), TransMLA (32 over 576), Qwen3 GQA (4 per KV head)
    s_max = 2048 + 257
    assert default_config(32, 1, 40, 288, 256, s_max).block_g == 32  # two reads of the cache instead of three
    assert default_config(1, 1, 40, 288, 256, s_max).block_g == 16  # batch 1: 72 programs at 32 heads, 108 at 16
    wide = default_config(1, 1, 32, 576, 512, s_max)
    assert (wide.block_g, wide.block_n, wide.num_stages) == (32, 64, 2)
    assert not wide.one_load  # batch 1: the one-load path was not faster there
    # from batch 32 the 576-wide latent is loaded once for both products (the H200 sweep's winner at 32 and 128)
    one = SplitConfig(block_g=32, block_n=64, block_dk=64, num_warps=4, num_stages=2, one_load=True)
    assert default_config(32, 1, 32, 576, 512, s_max) == default_config(128, 1, 32, 576, 512, s_max) == one
    assert not default_config(31, 1, 32, 576, 512, s_max).one_load
    # without the one-load path, batch 128 and more keep the two-load sweep's winner there
    assert wide_latent_two_loads(128, 576) == SplitConfig(block_g=32, block_n=32, block_dk=64, num_warps=4,
                                                          num_stages=2)
    assert wide_latent_two_loads(127, 576) == wide_latent_two_loads(32, 576) == wide
    assert default_config(32, 8, 4, 128, 128, s_max) == SplitConfig(block_n=64, block_dk=128, num_warps=4)


_HUGE_CACHE = textwrap.dedent("""
    import torch
    from phase_energy.engines.native.attention import decode_attention_reference, launch_split_kernel
    sb, s, d = 2**30 + 64, 64, 16  # batch stride: sequence 2 starts past element 2**31
    store = torch.empty(2 * sb + s * d, dtype=torch.float16)  # 4 GB of address space, a few pages touched
    k = store.as_strided((3, 1, s, d), (sb, s * d, d, 1))
    gen = torch.Generator().manual_seed(0)
    k.copy_(torch.randn(3, 1, s, d, generator=gen))
    q = torch.randn(3, 1, 4, d, generator=gen).half()
    v = torch.randn(3, 1, s, d, generator=gen).half()
    n = torch.tensor(s)
    o, lse = launch_split_kernel(q, k, v, n, d**-0.5, 2)
    merged = (o * torch.softmax(lse, -1)[..., None]).sum(3)
    ref = decode_attention_reference(q, k.contiguous(), v, n, d**-0.5).float()
    print((merged - ref).abs().max().item())
""")


def test_split_attention_kernel_addresses_caches_past_2_31_elements():
    # A KV cache of batch 256 x 10,240 positions x 1,024 values per layer holds 2.7e9 elements; with 32-bit
    # offsets the last sequences wrapped around (an illegal address on the H200, a crash here).
    # A subprocess, so that a regression fails this test instead of killing the test run.
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, "-c", _HUGE_CACHE], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, f"kernel crashed (rc {r.returncode}): {r.stderr[-2000:]}"
    assert float(r.stdout.strip().splitlines()[-1]) < 2e-3


def test_decode_attention_op_off_cuda_is_exact():
    gen = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(2, 2, 3, 16, generator=gen), torch.randn(2, 2, 40, 16, generator=gen), \
        torch.randn(2, 2, 40, 8, generator=gen)
    n = torch.tensor(17)
    assert torch.allclose(decode_attention(q, k, v, n, 0.25), decode_attention_reference(q, k, v, n, 0.25),
                          atol=1e-6)


@pytest.mark.parametrize(("b", "groups", "hv", "kd", "vd", "delta", "state_dtype"), [
    (2, 2, 4, 16, 24, True, torch.float32),  # Gated DeltaNet, two value heads per key head
    (3, 1, 4, 32, 16, False, torch.float32),  # Mamba2, one group of B/C shared by all heads
    (1, 2, 8, 128, 64, False, torch.bfloat16),  # Nemotron-H style bf16 state, 128-wide state
    (2, 4, 4, 20, 40, True, torch.float32),  # widths that are not powers of two
])
def test_recurrent_kernel_updates_state_in_place_like_the_reference(b, groups, hv, kd, vd, delta, state_dtype):
    gen = torch.Generator().manual_seed(kd + vd)
    state = torch.randn(b, hv, kd, vd, generator=gen).to(state_dtype)
    q, k = torch.randn(b, groups, kd, generator=gen), torch.randn(b, groups, kd, generator=gen)
    v = torch.randn(b, hv, vd, generator=gen)
    g = -torch.rand(b, hv, generator=gen)
    beta = torch.rand(b, hv, generator=gen) if delta else None
    s_ref, s_ker = state.clone(), state.clone()
    ptr = s_ker.data_ptr()
    o_ref = recurrent_step_reference(s_ref, q, k, v, g, beta, kd**-0.5, delta)
    o_ker = launch_step_kernel(s_ker, q, k, v, g, beta, kd**-0.5, delta)
    assert s_ker.data_ptr() == ptr and not torch.equal(s_ker, state)
    tol = 1e-4 if state_dtype == torch.float32 else 3e-2
    assert (o_ker - o_ref).abs().max().item() < tol * max(1.0, o_ref.abs().max().item())
    assert (s_ker.float() - s_ref.float()).abs().max().item() < tol * max(1.0, s_ref.abs().max().item())


def test_recurrent_kernel_reads_slices_of_a_projection_as_they_are(monkeypatch):
    """Gated DeltaNet's inputs as the compiled step hands them over on the GPU: q, k, v, g and beta slices of
    one wider row (a GEMM's output with its row padded; the padding NaN, so a wrong stride shows), beta in
    half precision: the kernel reads them through their strides, with no copy and no cast before it."""
    gen = torch.Generator().manual_seed(23)
    b, groups, hv, kd, vd = 3, 2, 4, 16, 8
    widths = [groups * kd, groups * kd, hv * vd, hv, hv]
    row = torch.full((b, sum(widths) + 24), float("nan"))  # 24 columns of padding at the end of each row
    row[:, :sum(widths)] = torch.randn(b, sum(widths), generator=gen)
    row[:, sum(widths[:3]):sum(widths[:4])] = -row[:, sum(widths[:3]):sum(widths[:4])].abs()  # g: log decay
    q, k, v, g, beta_raw = row[:, :sum(widths)].split(widths, dim=-1)
    q, k, v = q.view(b, groups, kd), k.view(b, groups, kd), v.view(b, hv, vd)
    beta = torch.full((b, hv + 5), float("nan"), dtype=torch.float16)[:, :hv]  # batch stride hv + 5
    beta.copy_(beta_raw.sigmoid())
    assert not any(t.is_contiguous() for t in (q, k, v, g, beta))
    state = torch.randn(b, hv, kd, vd, generator=gen)
    s_ref, s_ker = state.clone(), state.clone()
    o_ref = recurrent_step_reference(s_ref, q.contiguous(), k.contiguous(), v.contiguous(), g.contiguous(),
                                     beta.float().contiguous(), kd**-0.5, True)
    copied = []  # the tensors the launch copies or casts
    contiguous, to_float = torch.Tensor.contiguous, torch.Tensor.float
    monkeypatch.setattr(torch.Tensor, "contiguous", lambda t, *a, **kw: copied.append(t) or contiguous(t, *a, **kw))
    monkeypatch.setattr(torch.Tensor, "float", lambda t, *a, **kw: copied.append(t) or to_float(t, *a, **kw))
    o_ker = launch_step_kernel(s_ker, q, k, v, g, beta, kd**-0.5, True)
    monkeypatch.undo()
    assert not any(t is u for t in copied for u in (q, k, v, g, beta)), "an input was copied before the kernel"
    torch.testing.assert_close(o_ker, o_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s_ker, s_ref, rtol=1e-4, atol=1e-4)


def test_recurrent_kernel_copies_what_it_cannot_index():
    """A layout the kernel cannot read by strides (v's heads not adjacent, g and beta with a strided last
    dimension, q with a strided last dimension) is copied first: the step is the reference's either way."""
    gen = torch.Generator().manual_seed(29)
    b, groups, hv, kd, vd = 2, 2, 4, 16, 8
    v = torch.randn(hv, b, vd, generator=gen).transpose(0, 1)  # [B, HV, V], heads b * vd apart
    g = (-torch.rand(b, 2 * hv, generator=gen))[:, ::2]  # last stride 2
    beta = torch.rand(b, 2 * hv, generator=gen)[:, 1::2]
    q = torch.randn(b, groups, 2 * kd, generator=gen)[..., ::2]
    k = torch.randn(b, groups, kd, generator=gen)
    assert v.stride(1) != vd and g.stride(-1) == beta.stride(-1) == q.stride(-1) == 2
    state = torch.randn(b, hv, kd, vd, generator=gen)
    s_ref, s_ker = state.clone(), state.clone()
    o_ref = recurrent_step_reference(s_ref, q.contiguous(), k, v.contiguous(), g.contiguous(), beta.contiguous(),
                                     kd**-0.5, True)
    o_ker = launch_step_kernel(s_ker, q, k, v, g, beta, kd**-0.5, True)
    torch.testing.assert_close(o_ker, o_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s_ker, s_ref, rtol=1e-4, atol=1e-4)


def test_the_recurrent_ops_take_any_layout_from_the_compiler():
    """Inductor would otherwise copy each strided input to eager's strides before the op (on the GPU, where
    it pads GEMM outputs): a copy kernel per input and layer."""
    for op in (torch.ops.phase_energy.recurrent_step_, torch.ops.phase_energy.mamba2_step_,
               torch.ops.phase_energy.conv_update_):
        assert torch.Tag.flexible_layout in op.default.tags, op


def test_recurrent_reference_is_the_delta_rule_and_the_ssm_step():
    """One hand-sized step: decay, delta update and read-out of a 1-head, 2x2 state."""
    s = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    q, k = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[0.0, 1.0]]])
    v, g, beta = torch.tensor([[[10.0, 20.0]]]), torch.log(torch.tensor([[0.5]])), torch.tensor([[0.5]])
    ssm = s.clone()
    o = recurrent_step_reference(ssm, q, k, v, g, None, 1.0, False)
    # decayed S = [[.5, 1], [1.5, 2]]; + k v^T adds [10, 20] to row 1; o = row 0
    assert torch.equal(ssm, torch.tensor([[[[0.5, 1.0], [11.5, 22.0]]]]))
    assert torch.equal(o, torch.tensor([[[0.5, 1.0]]]))
    dr = s.clone()
    recurrent_step_reference(dr, q, k, v, g, beta, 1.0, False)
    # delta rule: u = beta (v - k^T S) = 0.5 ([10, 20] - [1.5, 2]) = [4.25, 9]
    assert torch.equal(dr, torch.tensor([[[[0.5, 1.0], [5.75, 11.0]]]]))


@pytest.mark.parametrize("arch", ["tiny-gqa", "tiny-mla", "tiny-gdn", "tiny-mamba2", "tiny-nemotron"])
def test_decode_step_is_one_graph_for_torch_compile(arch):
    """The custom ops keep dynamo from breaking the step (a break costs un-fused kernels at every layer)."""
    cfg = get_preset(arch)
    model = init_random_(Transformer(cfg), 0).fuse()
    model.setup_caches(2, 24)
    model.prefill(torch.randint(0, cfg.vocab, (2, 8)))
    explain = torch._dynamo.explain(model.decode_step)(torch.zeros(2, 1, dtype=torch.long), torch.tensor(8))
    assert explain.graph_break_count == 0, explain.break_reasons
    assert explain.graph_count == 1


def test_custom_op_mutates_the_cache_state():
    state = torch.zeros(1, 2, 3, 4)
    o = recurrent_step_(state, torch.ones(1, 1, 3), torch.ones(1, 1, 3), torch.ones(1, 2, 4),
                        torch.zeros(1, 2), None, 1.0, False)
    assert torch.equal(state, torch.ones(1, 2, 3, 4)) and torch.equal(o, torch.full((1, 2, 4), 3.0))


@pytest.mark.parametrize(("m", "n", "k", "split_k", "dtype", "with_residual"), [
    (1, 40, 300, 1, torch.float32, False),  # one row, ragged N and K
    (3, 37, 1000, 3, torch.float16, True),  # split K: partial sums added, residual after them
    (8, 50, 260, 2, torch.float32, True),  # 8 rows padded to 16: the tensor-core path
    (16, 64, 512, 1, torch.float16, True),  # residual in the epilogue
])
def test_gemv_kernel_matches_the_matmul(m, n, k, split_k, dtype, with_residual):
    gen = torch.Generator().manual_seed(m * n + k)
    x, w = torch.randn(m, k, generator=gen).to(dtype), torch.randn(n, k, generator=gen).to(dtype)
    r = torch.randn(m, n, generator=gen).to(dtype) if with_residual else None
    y = gemv(x, w, r, block_n=16, block_k=128, split_k=split_k)
    ref = gemv_reference(x, w, r).float()
    assert y.shape == (m, n) and y.dtype == dtype
    tol = 1e-4 if dtype == torch.float32 else 2e-3
    assert ((y.float() - ref).abs() <= tol * (1 + ref.abs())).all()
    w[:, :] = 0  # W is really read: a zero matrix leaves only the residual
    expect = torch.zeros(m, n, dtype=dtype) if r is None else r
    assert torch.equal(gemv(x, w, r, block_n=16, block_k=128, split_k=split_k), expect)


@pytest.mark.parametrize(("m", "prologue", "prefetch", "block_k"), [
    (1, "rmsnorm", False, 128),  # one row: the norm's 1/rms from the whole row, then the tiles
    (3, "rmsnorm", True, 64),  # first W tile read before the loop
    (2, "silu_mul", True, 128),
    (32, "silu_mul", False, 64),  # 32 rows: tensor cores
    (20, "rmsnorm", True, 128),  # 20 rows padded to 32
])
def test_gemv_prologues_match_the_unfused_ops(m, prologue, prefetch, block_k):
    n, k = 48, 300
    gen = torch.Generator().manual_seed(m + k)
    x = torch.randn(m, 2 * k if prologue == "silu_mul" else k, generator=gen)
    w, r = torch.randn(n, k, generator=gen), torch.randn(m, n, generator=gen)
    nw = torch.rand(k, generator=gen) if prologue == "rmsnorm" else None
    offset = 1.0 if prologue == "rmsnorm" and m == 3 else 0.0  # zero-centred (1 + w) norm
    kw = dict(prologue=prologue, norm_weight=nw, eps=1e-5, norm_offset=offset)
    y = gemv(x, w, r, block_n=16, block_k=block_k, prefetch=prefetch, **kw)
    ref = gemv_reference(x, w, r, **kw)
    # the unfused ops as the engine runs them, in fp32
    if prologue == "rmsnorm":
        h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * (offset + nw)
    else:
        h = torch.nn.functional.silu(x[:, :k]) * x[:, k:]
    assert torch.allclose(ref, h @ w.t() + r, rtol=1e-5, atol=1e-4)
    assert y.shape == (m, n) and torch.allclose(y, ref, rtol=1e-4, atol=1e-3)
    out = torch.empty(m, n)
    gemv(x, w, r, block_n=16, block_k=block_k, prefetch=prefetch, out=out, **kw)
    assert torch.equal(out, y)  # written in place, as a captured step needs


def test_gemv_rejects_what_it_cannot_do():
    with pytest.raises(ValueError, match="at most 64 rows, got 65"):
        gemv(torch.zeros(65, 8), torch.zeros(4, 8))
    with pytest.raises(ValueError, match="residual must be"):
        gemv(torch.zeros(2, 8), torch.zeros(4, 8), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="unknown prologue 'gelu'; accepted: none, rmsnorm, silu_mul"):
        gemv(torch.zeros(2, 8), torch.zeros(4, 8), prologue="gelu")
    with pytest.raises(ValueError, match=r"norm_weight of shape \(8,\)"):
        gemv(torch.zeros(2, 8), torch.zeros(4, 8), prologue="rmsnorm")
    with pytest.raises(ValueError, match=r"\[M, 2K\] for silu_mul"):
        gemv(torch.zeros(2, 8), torch.zeros(4, 8), prologue="silu_mul")
    with pytest.raises(ValueError, match="even width, got 9"):
        gemv(torch.zeros(2, 9), torch.zeros(4, 4), prologue="silu_mul")
    with pytest.raises(ValueError, match=r"out must be \[M, N\] = \[2, 4\]"):
        gemv(torch.zeros(2, 8), torch.zeros(4, 8), out=torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"pdl .* needs a CUDA device, got cpu"):
        gemv(torch.zeros(2, 8), torch.zeros(4, 8), pdl=True)


@pytest.mark.parametrize(("block_v", "num_warps"), [(16, 2), (64, 8), (128, 4)])
def test_recurrent_kernel_gives_the_same_step_for_every_tiling(block_v, num_warps):
    """The tilings bench/gpu_run.py times: each covers the whole state (block_v capped at the head's width)."""
    gen = torch.Generator().manual_seed(7)
    state = torch.randn(2, 4, 32, 48, generator=gen)
    q, k = torch.randn(2, 1, 32, generator=gen), torch.randn(2, 1, 32, generator=gen)
    v, g = torch.randn(2, 4, 48, generator=gen), -torch.rand(2, 4, generator=gen)
    s_default, s_tiled = state.clone(), state.clone()
    o_default = launch_step_kernel(s_default, q, k, v, g, None, 1.0, False)
    o_tiled = launch_step_kernel(s_tiled, q, k, v, g, None, 1.0, False, block_v, num_warps)
    torch.testing.assert_close(o_tiled, o_default, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s_tiled, s_default, rtol=1e-5, atol=1e-5)
    assert not torch.equal(s_tiled, state)


def test_recurrent_kernel_reads_strided_q_and_k_without_a_copy(monkeypatch):
    """Mamba2's B and C are slices of the convolution's output: the kernel reads them through their strides."""
    gen = torch.Generator().manual_seed(5)
    conv_out = torch.randn(3, 2 * 2 * 16 + 7, generator=gen)  # [B, C(2 groups x 16) + B(2 x 16) + 7 others]
    c = conv_out[:, :32].view(3, 2, 16)
    b = conv_out[:, 32:64].view(3, 2, 16)
    assert not c.is_contiguous() and c.stride() == (71, 16, 1)
    state = torch.randn(3, 4, 16, 8, generator=gen)
    v, g = torch.randn(3, 4, 8, generator=gen), -torch.rand(3, 4, generator=gen)
    s_ker, s_ref = state.clone(), state.clone()
    copied = []  # the tensors the launch makes contiguous copies of
    contiguous = torch.Tensor.contiguous
    monkeypatch.setattr(torch.Tensor, "contiguous", lambda t, *a, **k: copied.append(t) or contiguous(t, *a, **k))
    o_ker = launch_step_kernel(s_ker, c, b, v, g, None, 0.25, False)
    monkeypatch.undo()
    assert not any(t is c or t is b for t in copied)  # B and C went to the kernel as they are
    o_ref = recurrent_step_reference(s_ref, c, b, v, g, None, 0.25, False)
    torch.testing.assert_close(o_ker, o_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s_ker, s_ref, rtol=1e-5, atol=1e-5)


def test_recurrent_tiling_widens_from_batch_32():
    """64-wide value blocks where the H200 timed them fastest (batch 32 and 128), 32-wide below; from batch 32
    a plain update (Mamba2's) splits its rows 32 per program, the delta rule keeps them in one."""
    assert step_tiling(1) == (32, 4, None) and step_tiling(31, split_ok=True) == (32, 4, None)
    assert step_tiling(32) == (64, 4, None) and step_tiling(128) == (64, 4, None)
    assert step_tiling(32, split_ok=True) == (64, 2, 32) == step_tiling(128, split_ok=True)
    gen = torch.Generator().manual_seed(3)
    state = torch.randn(32, 2, 64, 128, generator=gen)  # batch 32: the wide default, two value blocks per head
    q, k = torch.randn(32, 1, 64, generator=gen), torch.randn(32, 1, 64, generator=gen)
    v, g = torch.randn(32, 2, 128, generator=gen), -torch.rand(32, 2, generator=gen)
    s_default, s_narrow = state.clone(), state.clone()
    o_default = launch_step_kernel(s_default, q, k, v, g, None, 1.0, False)  # 64-wide, rows split in two
    o_narrow = launch_step_kernel(s_narrow, q, k, v, g, None, 1.0, False, 32, 4, 64)  # 32-wide, all rows
    torch.testing.assert_close(o_default, o_narrow, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s_default, s_narrow, rtol=1e-5, atol=1e-5)
    beta = torch.rand(32, 2, generator=gen)  # the delta rule with the norms at batch 32: all rows, no error
    assert launch_step_kernel(state.clone(), q, k, v, g, beta, 1.0, True).shape == (32, 2, 128)


def test_recurrent_rows_switch_keeps_the_whole_rows_and_names_a_bad_value(monkeypatch):
    monkeypatch.setenv("PHASE_ENERGY_RECURRENT_ROWS", "whole")
    assert step_tiling(32, split_ok=True) == (64, 4, None)
    monkeypatch.setenv("PHASE_ENERGY_RECURRENT_ROWS", "halves")
    with pytest.raises(ValueError, match="'halves' is not accepted; expected one of split, whole"):
        step_tiling(32, split_ok=True)


@pytest.mark.parametrize(("block_k", "block_v"), [(16, 64), (32, 32), (64, 16)])
def test_recurrent_kernel_split_over_state_rows_gives_the_same_step(block_k, block_v):
    """block_k: smaller tiles, each adding its part of the output (Mamba2's plain update, B and C strided)."""
    gen = torch.Generator().manual_seed(11)
    conv_out = torch.randn(3, 2 * 128 + 5, generator=gen)
    c, b = conv_out[:, :128].view(3, 1, 128), conv_out[:, 128:256].view(3, 1, 128)  # one group, 128-wide state
    state = torch.randn(3, 4, 128, 64, generator=gen).to(torch.bfloat16)
    v, g = torch.randn(3, 4, 64, generator=gen), -torch.rand(3, 4, generator=gen)
    s_split, s_whole = state.clone(), state.clone()
    o_split = launch_step_kernel(s_split, c, b, v, g, None, 1.0, False, block_v, 4, block_k)
    o_whole = launch_step_kernel(s_whole, c, b, v, g, None, 1.0, False, 64, 4)
    torch.testing.assert_close(o_split, o_whole, rtol=1e-4, atol=1e-4)
    assert torch.equal(s_split, s_whole)  # every row written once, by the program that owns it
    assert not torch.equal(s_split, state)


def test_recurrent_kernel_refuses_to_split_the_rows_the_delta_rule_needs():
    state = torch.zeros(1, 2, 32, 16)
    q = k = torch.randn(1, 1, 32)
    v, g, beta = torch.randn(1, 2, 16), -torch.rand(1, 2), torch.rand(1, 2)
    with pytest.raises(ValueError, match=r"block_k=16 splits the state's 32 rows; the delta rule and l2norm"):
        launch_step_kernel(state, q, k, v, g, beta, 1.0, True, 16, 4, 16)
    with pytest.raises(ValueError, match="block_k must be a power of two >= 16, got 24"):
        launch_step_kernel(state, q, k, v, g, None, 1.0, False, 16, 4, 24)
    o = launch_step_kernel(state.clone(), q, k, v, g, beta, 1.0, True, 16, 4, 32)  # all rows: accepted
    assert o.shape == (1, 2, 16)


@pytest.mark.parametrize(("groups", "block_k", "sdtype"), [(1, None, torch.float32), (2, 32, torch.float32),
                                                       (2, None, torch.bfloat16)])
def test_mamba2_step_with_its_inputs_in_the_kernel_matches_the_mixers_arithmetic(groups, block_k, sdtype):
    """softplus(dt + bias), the decay, dt x and the skip D x inside the kernel, from strided views of the
    projection's and the convolution's outputs, give the mixer's step: one or two groups of B and C, two
    value blocks per head, the state's rows in one or two programs, bf16 state, a large dt (softplus's
    linear branch) and a very negative one."""
    gen = torch.Generator().manual_seed(13 + groups)
    bsz, h, p, n = 3, 4, 64, 64
    proj = torch.randn(bsz, 2 * h * p + h + 5, generator=gen) * 3  # [..., x (h x p), dt (h), ...] of one row
    proj[0, 2 * h * p], proj[1, 2 * h * p + 1] = 25.0, -40.0  # past softplus's threshold; exp(dt) ~ 1e-8
    conv = torch.randn(bsz, h * p + 2 * groups * n + 3, generator=gen)  # [x, B, C, ...]
    x = conv[:, : h * p].view(bsz, h, p)
    gn = groups * n
    bm, cm = conv[:, h * p : h * p + gn].view(bsz, groups, n), conv[:, h * p + gn : h * p + 2 * gn].view(bsz, groups, n)
    dt = proj[:, 2 * h * p : 2 * h * p + h]
    assert not x.is_contiguous() and not dt.is_contiguous()
    dt_bias, a_log, d = torch.randn(h, generator=gen), torch.randn(h, generator=gen), torch.randn(h, generator=gen)
    dt_bias[1] = 23.0  # with dt -40: softplus(-17) ~ 4e-8
    state = torch.randn(bsz, h, n, p, generator=gen).to(sdtype)
    s_ker, s_ref = state.clone(), state.float().clone()  # the reference updates an fp32 copy
    y_ker = launch_mamba2_step(s_ker, cm, bm, x, dt, dt_bias, a_log, d, 32, None, block_k)
    y_ref = mamba2_step_reference(s_ref, cm, bm, x, dt, dt_bias, a_log, d)
    tol = 1e-4 if sdtype == torch.float32 else 2e-2
    torch.testing.assert_close(y_ker, y_ref, rtol=tol, atol=tol)
    torch.testing.assert_close(s_ker.float(), s_ref, rtol=tol, atol=tol)
    assert not torch.equal(s_ker, state)


def test_the_fused_ops_fake_shapes_and_schemas_hold():
    """torch.compile sees the ops through their fake implementations: shapes, dtypes and mutation as run."""
    from phase_energy.engines.native.recurrent import conv_update_, mamba2_step_

    gen = torch.Generator().manual_seed(19)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2, 40, generator=gen).to(dtype)
        torch.library.opcheck(conv_update_, (x, torch.randn(2, 40, 3, generator=gen).to(dtype),
                                             torch.randn(40, 4, generator=gen).to(dtype), None))
        c, b = (torch.randn(2, 1, 8, generator=gen).to(dtype) for _ in range(2))
        xs, dt = torch.randn(2, 4, 16, generator=gen).to(dtype), torch.randn(2, 4, generator=gen).to(dtype)
        params = tuple(torch.randn(4, generator=gen).to(dtype) for _ in range(3))
        torch.library.opcheck(mamba2_step_, (torch.randn(2, 4, 8, 16, generator=gen).to(dtype), c, b, xs, dt,
                                             *params))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_conv_update_kernel_is_the_short_convolutions_step(dtype):
    """One kernel for the depthwise causal convolution's decode step + SiLU, x a strided slice of the
    projection's output; the state shifted by one tap, the new input last (bf16: summed in fp32)."""
    gen = torch.Generator().manual_seed(17)
    proj = torch.randn(3, 300 + 7, generator=gen).to(dtype)
    x = proj[:, 5:305]
    state = torch.randn(3, 300, 3, generator=gen).to(dtype)
    w, b = torch.randn(300, 4, generator=gen).to(dtype), torch.randn(300, generator=gen).to(dtype)
    for bias in (b, None):
        s_ker, s_ref = state.clone(), state.float().clone()
        out = launch_conv_update(x, s_ker, w, bias, block_c=128)
        ref = conv_update_reference(x.float(), s_ref, w.float(), None if bias is None else bias.float())
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        torch.testing.assert_close(out.float(), ref, rtol=tol, atol=tol)
        assert torch.equal(s_ker[..., :2], state[..., 1:]) and torch.equal(s_ker[..., 2], x)


def test_profiled_kernels_fall_in_their_class():
    """Kernel names as the H200 profiles recorded them (native, bench/h200-2026-12-02e/kernels-*.json) and as
    vLLM 0.26 names its kernels: each in its class, FlashAttention's CUTLASS kernels as attention, not gemm;
    the per-step table sums each class."""
    from bench.kernel_classes import kernel_class, kernel_table

    known = {"_split_kernel": "attention", "_step_kernel": "recurrent",
             "void cutlass::device_kernel<flash::enable_sm90_or_later<flash::FlashAttnFwdSm90<": "attention",
             "kernel_unified_attention": "attention", "_fwd_grouped_kernel_stage1": "attention",
             "_selective_scan_update_kernel": "recurrent",
             "_causal_conv1d_update_kernel": "convolution", "_conv_update_kernel": "convolution",
             "nvjet_sm90_tst_192x32_64x7_4x1_v_bz_TNT": "gemm",
             "void cublasLt::splitKreduce_kernel<32, 16, int, float, __nv_bfloat16": "gemm",
             "triton_red_fused__to_copy_add_mean_mul_pow_rsqrt_0": "fused (inductor)",
             "triton_per_fused_decode_attention_splits_3": "fused (inductor)",
             "triton_poi_fused__unsafe_view_conv_update__select_1": "fused (inductor)",
             "fused_recurrent_gated_delta_rule_fwd_kernel": "recurrent", "layer_norm_fwd_kernel": "norm",
             "_layer_norm_fwd_1pass_kernel": "norm", "l2norm_fwd_kernel1": "norm",
             "_causal_conv1d_fwd_kernel": "convolution", "concat_and_cache_mla_kernel": "cache write",
             "reshape_and_cache_flash_kernel": "cache write", "reduce_segments": "attention",
             "Memcpy DtoH (Device -> Pinned)": "copy",
             "void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>": "other"}
    assert {name: kernel_class(name) for name in known} == known
    kernels, by_class = kernel_table([("_step_kernel", 64, 6400.0), ("nvjet_sm90_a", 32, 320.0),
                                      ("nvjet_sm90_b", 32, 160.0), ("idle", 1, 0.0)], steps=32)
    assert [k["name"] for k in kernels] == ["_step_kernel", "nvjet_sm90_a", "nvjet_sm90_b"]  # longest first
    assert by_class == {"recurrent": {"us_per_step": 200.0, "calls_per_step": 2.0},
                        "gemm": {"us_per_step": 15.0, "calls_per_step": 2.0}}


def test_mla_split_sweep_times_each_split_count_and_checks_its_result(tmp_path, monkeypatch):
    """bench/gpu_run.py's ``--mla-sweep splits`` on the interpreter (a GPU times it; here the same code runs
    the kernel at every split count, merges the splits as the engine does, eagerly where a GPU compiles the
    merge, and checks the result against the masked reference): one row per split count actually launched,
    the planner's marked, the partials' size growing with the count."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    import bench.gpu_run as gpu_run

    monkeypatch.setattr(gpu_run, "MLA_ARCHS", ("minicpm3-4b",))
    monkeypatch.setattr(gpu_run, "MLA_SPLIT_SHAPES", ((1, 16),))
    monkeypatch.setattr(gpu_run, "MLA_SPLIT_COUNTS", (2, 3, 4))  # 4 is rounded to 3 (whole key blocks)
    results: dict = {}
    gpu_run.mla_split_sweep(results, tmp_path)
    rows = results["mla_splits"]
    assert [r.get("error") for r in rows] == [None] * len(rows)
    counts = [r["splits"] for r in rows]
    assert len(counts) == len(set(counts)) and {2, 3} <= set(counts)  # each count launched once
    assert sum(r["planned"] for r in rows) == 1
    assert all(r["max_abs_diff"] < 5e-3 and r["kernel_us"] > 0 and r["both_us"] > 0 for r in rows)
    c = get_preset("minicpm3-4b")
    for r in rows:  # the partial outputs and log-sum-exps the kernel wrote: batch x heads x splits x (latent + 1)
        assert r["partials_mb"] == 1 * c.n_heads * r["splits"] * (c.kv_lora_rank + 1) * 4 / 1e6
    assert json.loads((tmp_path / "engine.json").read_text())["mla_splits"][0]["arch"] == "minicpm3-4b"
