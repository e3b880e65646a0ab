"""Decode attention over a static cache up to a device-side length (flash-decoding, split over the keys).

One query token per sequence; the heads that share a KV head (GQA, or all heads in MLA's latent form)
are processed together so that the cache is read once. The length comes from a device tensor, so the
captured decode step reads only the filled part of the cache and never syncs with the host. On CPU a
plain masked attention does the same arithmetic.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor

log = logging.getLogger(__name__)

try:  # Triton ships with CUDA builds of torch
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU-only installs
    triton = None


def _masked_scores(q: Tensor, k: Tensor, length: Tensor, scale: float) -> Tensor:
    """Scaled scores [B, Hkv, G, S] in fp32, -inf at keys >= length."""
    s = torch.einsum("bhgd,bhsd->bhgs", q.float(), k.float()) * scale
    return s.masked_fill(~(torch.arange(k.shape[2], device=q.device) < length), float("-inf"))


def decode_attention_reference(q: Tensor, k: Tensor, v: Tensor, length: Tensor, scale: float) -> Tensor:
    """Masked attention: q [B, Hkv, G, Dk] over keys < length of k, v [B, Hkv, S, D*] -> [B, Hkv, G, Dv]."""
    s = _masked_scores(q, k, length, scale)
    return torch.einsum("bhgs,bhsd->bhgd", torch.softmax(s, dim=-1), v.float()).to(q.dtype)


if triton is not None:

    @triton.jit
    def _qk_part(qbase, kbase, offs_g, g_mask, offs_n, n_mask, offs_d, d_mask, sqg, sqd, sks, skd):
        """Scores from the key columns ``offs_d``: q [G, d] against k [d, N], both loaded masked."""
        q = tl.load(qbase + offs_g[:, None] * sqg + offs_d[None, :] * sqd,
                    mask=g_mask[:, None] & d_mask[None, :], other=0.0)
        k = tl.load(kbase + offs_n[None, :] * sks + offs_d[:, None] * skd,
                    mask=n_mask[None, :] & d_mask[:, None], other=0.0)
        return tl.dot(q, k)

    @triton.jit
    def _split_kernel(Q, K, V, Out, L, length_ptr,
                      sqb, sqh, sqg, sqd, skb, skh, sks, skd, svb, svh, svs, svd,
                      sob, soh, sog, sos, sod, slb, slh, slg, sls,
                      H, G, DK, DV, split_len, scale,
                      BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DK: tl.constexpr,
                      DK_CHUNKS: tl.constexpr, BLOCK_DV: tl.constexpr, ONE_LOAD: tl.constexpr,
                      BLOCK_TAIL: tl.constexpr):
        pid_bh = tl.program_id(0)
        pid_g = tl.program_id(1)
        pid_s = tl.program_id(2)
        b = (pid_bh // H).to(tl.int64)  # 64-bit offsets: a cache of batch 256 x 10K positions x 1K > 2**31
        h = pid_bh % H
        length = tl.load(length_ptr)
        start = pid_s * split_len
        end = tl.minimum(start + split_len, length)
        offs_g = pid_g * BLOCK_G + tl.arange(0, BLOCK_G)
        g_mask = offs_g < G
        offs_dv = tl.arange(0, BLOCK_DV)
        dv_mask = offs_dv < DV
        m_i = tl.full([BLOCK_G], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_G], dtype=tl.float32)
        acc = tl.zeros([BLOCK_G, BLOCK_DV], dtype=tl.float32)
        qbase = Q + b * sqb + h * sqh
        kbase = K + b * skb + h * skh
        vbase = V + b * svb + h * svh
        for n0 in range(start, end, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            n_mask = offs_n < end
            if ONE_LOAD:
                # V is the first DV columns of K (MLA's latent): one load of the tile serves both products,
                # the key's remaining columns (the RoPE part) come in a narrow second load
                v = tl.load(kbase + offs_n[:, None] * sks + offs_dv[None, :] * skd,
                            mask=n_mask[:, None] & dv_mask[None, :], other=0.0)
                q = tl.load(qbase + offs_g[:, None] * sqg + offs_dv[None, :] * sqd,
                            mask=g_mask[:, None] & dv_mask[None, :], other=0.0)
                offs_t = DV + tl.arange(0, BLOCK_TAIL)
                s = tl.dot(q, tl.trans(v)) + _qk_part(qbase, kbase, offs_g, g_mask, offs_n, n_mask, offs_t,
                                                      offs_t < DK, sqg, sqd, sks, skd)
            else:
                s = tl.zeros([BLOCK_G, BLOCK_N], dtype=tl.float32)
                for c in tl.static_range(DK_CHUNKS):
                    offs_d = c * BLOCK_DK + tl.arange(0, BLOCK_DK)
                    s += _qk_part(qbase, kbase, offs_g, g_mask, offs_n, n_mask, offs_d, offs_d < DK,
                                  sqg, sqd, sks, skd)
                v = tl.load(vbase + offs_n[:, None] * svs + offs_dv[None, :] * svd,
                            mask=n_mask[:, None] & dv_mask[None, :], other=0.0)
            s = tl.where(n_mask[None, :], s * scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            p = tl.exp(s - m_new[:, None])
            alpha = tl.exp(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        has = l_i > 0
        out = tl.where(has[:, None], acc / tl.where(has, l_i, 1.0)[:, None], 0.0)
        lse = tl.where(has, m_i + tl.log(tl.where(has, l_i, 1.0)), float("-inf"))
        tl.store(Out + b * sob + h * soh + offs_g[:, None] * sog + pid_s * sos + offs_dv[None, :] * sod, out,
                 mask=g_mask[:, None] & dv_mask[None, :])
        tl.store(L + b * slb + h * slh + offs_g * slg + pid_s * sls, lse, mask=g_mask)


def next_pow2(x: int) -> int:
    """The smallest power of two >= x (1 for x <= 1): Triton block sizes."""
    return 1 << max(0, math.ceil(math.log2(max(x, 1))))


def num_splits_for(batch: int, kv_heads: int, groups: int, max_len: int, sms: int = 132, block_g: int = 16) -> int:
    """Splits over the keys so that the grid has a few programs per SM (fixed per captured graph)."""
    blocks = batch * kv_heads * math.ceil(groups / block_g)
    want = max(1, (4 * sms) // max(blocks, 1))
    return int(min(want, max(1, max_len // 64)))


@dataclass(frozen=True)
class SplitConfig:
    """Tiling of the split kernel: query heads and keys per program step, the K chunk, warps, stages.

    Each program reads its split of the cache once for ``block_g`` query heads (16: one tensor-core
    tile), so with G query heads per KV head the cache is read ceil(G / block_g) times.
    """

    block_g: int = 16
    block_n: int = 64
    block_dk: int = 128
    num_warps: int = 4
    num_stages: int = 2
    # V is the first Dv columns of K (MLA's latent cache, passed as a view): each key tile is loaded once for
    # both products instead of K in block_dk chunks and V again (block_dk is then unused). The default for
    # wide latents from batch 32 (default_config); bench/gpu_run.py's mla_attn step times it.
    one_load: bool = False

    def __post_init__(self) -> None:
        for name in ("block_g", "block_n", "block_dk"):
            value = getattr(self, name)
            if value < 16 or value & (value - 1):
                raise ValueError(f"{name} must be a power of two >= 16, got {value}")


def default_config(batch: int, kv_heads: int, groups: int, dk: int, dv: int, s_max: int,
                   sms: int = 132) -> SplitConfig:
    """The tiling for these shapes (GQA: 4-8 heads 128-256 wide; MLA: 32-40 heads over a 288 or 576 wide latent).

    MLA takes 32 heads per program, so its latent cache is read once or twice instead of two or three
    times; the choice comes from a sweep on the H200 (bench/engine-h200-2026-11-24b): 3.4-3.7x faster for
    a 576-wide latent at batch 32-128, 1.2-1.6x for 288; for the 576-wide latent at batch 128 and more, 32
    keys per block in 64-wide chunks with 4 warps (162 against 211 us per layer; batch 33-127 was not swept
    and keeps the batch-32 tiling: the two-load path's choice since). For the 288-wide latent at batch 1
    the 16-head tiling stays (more programs: 24 against 42 us). From batch 32 a 576-wide latent takes the
    one-load path, 64 keys per block with 4 warps (bench/h200-2026-12-02c, one card: 54 against 70 us per
    layer at batch 32, 131 against 163 at batch 128; at batch 1 unresolved, 26 us against the default's 41
    timed first and 23 timed last, so batches under 32, not swept, keep the tilings of
    :func:`wide_latent_two_loads`). The one-load path needs V to be a view of K's first columns; where it
    is not, :func:`launch_split_kernel` takes the two-load tiling instead and notes it.
    """
    block_dv = next_pow2(dv)
    if block_dv > 256:  # wide latents (TransMLA): 32 heads, two stages fit in shared memory
        if batch >= 32:  # each latent tile loaded once for both products (V is K's first dv columns)
            return SplitConfig(block_g=32, block_n=64, block_dk=min(64, next_pow2(dk)), num_warps=4, num_stages=2,
                               one_load=True)
        return wide_latent_two_loads(batch, dk)
    if groups > 16:
        wide = SplitConfig(block_g=32, block_n=64, block_dk=min(128, next_pow2(dk)), num_warps=4, num_stages=2)
        splits = _plan(batch, kv_heads, groups, s_max, 0, wide)[0]
        if batch * kv_heads * math.ceil(groups / wide.block_g) * splits >= 2 * sms:  # the grid it would launch
            return wide
    return SplitConfig(block_n=64, block_dk=min(128, next_pow2(dk)), num_warps=4 if block_dv <= 128 else 8)


def wide_latent_two_loads(batch: int, dk: int) -> SplitConfig:
    """A wide latent's tiling that loads K in chunks and V again (any V; the sweep's winners before one-load)."""
    if batch >= 128:  # the sweep's batch-128 winner: 162 us per layer against 211 with the batch-32 tiling
        return SplitConfig(block_g=32, block_n=32, block_dk=min(64, next_pow2(dk)), num_warps=4, num_stages=2)
    return SplitConfig(block_g=32, block_n=64, block_dk=min(128, next_pow2(dk)), num_warps=8, num_stages=2)


def _plan(batch: int, kv_heads: int, groups: int, s_max: int, num_splits: int,
          cfg: SplitConfig) -> tuple[int, int]:
    """(splits, keys per split) of the split kernel for these shapes."""
    splits = num_splits or num_splits_for(batch, kv_heads, groups, s_max, block_g=cfg.block_g)
    split_len = math.ceil(math.ceil(s_max / splits) / cfg.block_n) * cfg.block_n
    return math.ceil(s_max / split_len), split_len


def is_prefix_view(v: Tensor, k: Tensor) -> bool:
    """Whether v is k's first v.shape[-1] columns (one storage, the same strides): MLA's latent cache."""
    return (v.data_ptr() == k.data_ptr() and v.dtype == k.dtype and v.stride() == k.stride()
            and v.shape[:-1] == k.shape[:-1] and v.shape[-1] <= k.shape[-1])


TWO_LOAD_FALLBACKS: list[tuple[int, ...]] = []  # V shapes the one-load default fell back for


def _uses_kernel(q: Tensor) -> bool:
    return q.device.type == "cuda" and triton is not None


def launch_split_kernel(q: Tensor, k: Tensor, v: Tensor, length: Tensor, scale: float,
                        num_splits: int = 0, config: SplitConfig | None = None) -> tuple[Tensor, Tensor]:
    """The Triton kernel: per-split outputs o [B, Hkv, G, splits, Dv] and log-sum-exps [B, Hkv, G, splits]."""
    b, h, g, dk = q.shape
    s_max, dv = k.shape[2], v.shape[3]
    cfg = config or default_config(b, h, g, dk, dv, s_max)
    if cfg.one_load and not is_prefix_view(v, k) and config is None:  # the default, a wide V of its own
        if not TWO_LOAD_FALLBACKS:
            log.warning("decode attention: V (%s) is not a view of K's first %d columns; the one-load tiling "
                        "falls back to two loads (the first of such calls is logged)", tuple(v.shape), dv)
        TWO_LOAD_FALLBACKS.append(tuple(v.shape))
        cfg = wide_latent_two_loads(b, dk)
    elif cfg.one_load and not is_prefix_view(v, k):  # asked for by the caller: a mistake
        raise ValueError(f"one_load reads V from K's first columns: v must be a view of k's first {dv} of {dk} "
                         f"columns (same storage and strides); got v strides {tuple(v.stride())} at offset "
                         f"{v.data_ptr() - k.data_ptr()} bytes, k strides {tuple(k.stride())}")
    splits, split_len = _plan(b, h, g, s_max, num_splits, cfg)
    o = torch.empty(b, h, g, splits, dv, device=q.device, dtype=torch.float32)
    lse = torch.empty(b, h, g, splits, device=q.device, dtype=torch.float32)
    grid = (b * h, math.ceil(g / cfg.block_g), splits)
    _split_kernel[grid](q, k, v, o, lse, length,
                        *q.stride(), *k.stride(), *v.stride(), *o.stride(), *lse.stride(),
                        h, g, dk, dv, split_len, scale,
                        BLOCK_G=cfg.block_g, BLOCK_N=cfg.block_n, BLOCK_DK=cfg.block_dk,
                        DK_CHUNKS=math.ceil(dk / cfg.block_dk), BLOCK_DV=next_pow2(dv),
                        ONE_LOAD=cfg.one_load, BLOCK_TAIL=max(16, next_pow2(dk - dv)),
                        num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return o, lse


@torch.library.custom_op("phase_energy::decode_attention_splits", mutates_args=())
def decode_attention_splits(q: Tensor, k: Tensor, v: Tensor, length: Tensor, scale: float,
                            num_splits: int) -> tuple[Tensor, Tensor]:
    """Per-split outputs and log-sum-exps (one split, exact, where the kernel does not run)."""
    if _uses_kernel(q):
        return launch_split_kernel(q, k, v, length, scale, num_splits)
    s = _masked_scores(q, k, length, scale)
    o = torch.einsum("bhgs,bhsd->bhgd", torch.softmax(s, dim=-1), v.float())
    return o[:, :, :, None], torch.logsumexp(s, dim=-1)[..., None]


@decode_attention_splits.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, length: Tensor, scale: float, num_splits: int) -> tuple[Tensor, Tensor]:
    b, h, g, _ = q.shape
    if not _uses_kernel(q):
        splits = 1
    else:
        splits = _plan(b, h, g, k.shape[2], num_splits, default_config(b, h, g, q.shape[3], v.shape[3], k.shape[2]))[0]
    return (q.new_empty(b, h, g, splits, v.shape[3], dtype=torch.float32),
            q.new_empty(b, h, g, splits, dtype=torch.float32))


def decode_attention(q: Tensor, k: Tensor, v: Tensor, length: Tensor, scale: float,
                     num_splits: int | None = None) -> Tensor:
    """Attention of q [B, Hkv, G, Dk] over caches k, v [B, Hkv, S, D*] up to length (0-d device tensor).

    The splits are merged by their log-sum-exps in PyTorch, where ``torch.compile`` fuses the merge with
    what follows; the kernel is a custom op, so the compiled decode step stays one graph.
    """
    o, lse = decode_attention_splits(q, k, v, length, scale, num_splits or 0)
    w = torch.softmax(lse, dim=-1)  # splits with no keys have lse = -inf and weight 0
    return (o * w[..., None]).sum(dim=3).to(q.dtype)
