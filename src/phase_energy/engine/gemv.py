"""Skinny matmul for decode: y [M, N] = x [M, K] @ W[N, K]^T (+ residual) with M of a few rows.

At batch 1-16 a decode step is a stream of weight matrices through a few rows of activations, so its
speed is the rate at which W is read. cuBLAS streamed Qwen3-4B's weights at ~3.1 TB/s on the H200 at
batch 1 against 4.26 TB/s for a plain copy (docs/benchmarks.md). This kernel reads W once, in
[BLOCK_N, BLOCK_K] tiles, keeps the x rows in registers and accumulates in fp32; with ``split_k`` > 1 the
K dimension is divided among programs (more programs for short N) and the partial sums are added after.
The residual, when given, is added in the epilogue (one kernel instead of two).

The engine does not use it: on the H200 (``bench/gpu_run.py --steps gemv``,
bench/engine-h200-2026-11-24b/gemv.json) it summed to 3.51 ms of matmuls per Qwen3-4B decode step at one
row against cuBLAS's 3.55 ms, and was slower at 4-16 rows; both lose the time in a fixed per-matrix ramp-up,
not in the tiling. It stays as the measured baseline for a fused GEMV (norm in the prologue, overlap with
the next matrix) and for re-measurement on other cards.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .attention import next_pow2

try:  # Triton ships with CUDA builds of torch
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU-only installs
    triton = None


def gemv_reference(x: Tensor, w: Tensor, residual: Tensor | None = None) -> Tensor:
    """fp32 x @ w^T (+ residual), cast to x's dtype."""
    y = x.float() @ w.float().t()
    if residual is not None:
        y = y + residual.float()
    return y.to(x.dtype)


if triton is not None:

    @triton.jit
    def _gemv_kernel(X, W, Y, R, M, N, K, k_per_split, sxm, swn, sys_, sym, srm,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     HAS_RESIDUAL: tl.constexpr, USE_DOT: tl.constexpr):
        pid_n = tl.program_id(0)
        pid_k = tl.program_id(1)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_m = tl.arange(0, BLOCK_M)
        n_mask = offs_n < N
        m_mask = offs_m < M
        k_start = pid_k * k_per_split
        k_end = tl.minimum(k_start + k_per_split, K)
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        w_rows = W + offs_n.to(tl.int64)[:, None] * swn  # 64-bit: the LM head alone has 3.9e8 elements
        for k0 in range(k_start, k_end, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_mask = offs_k < k_end
            w = tl.load(w_rows + offs_k[None, :], mask=n_mask[:, None] & k_mask[None, :], other=0.0)
            if USE_DOT:  # 16 rows (padded): tensor cores
                x = tl.load(X + offs_m[:, None] * sxm + offs_k[None, :], mask=m_mask[:, None] & k_mask[None, :],
                            other=0.0)
                acc += tl.dot(x, tl.trans(w))
            else:  # 1-4 rows: one multiply-reduce per row on the CUDA cores
                for m in tl.static_range(BLOCK_M):
                    x = tl.load(X + tl.minimum(m, M - 1) * sxm + offs_k, mask=k_mask, other=0.0)  # rows >= M: unused
                    part = tl.sum(w.to(tl.float32) * x.to(tl.float32)[None, :], 1)
                    acc += tl.where(offs_m[:, None] == m, part[None, :], 0.0)
        if HAS_RESIDUAL:
            r = tl.load(R + offs_m[:, None] * srm + offs_n[None, :], mask=m_mask[:, None] & n_mask[None, :],
                        other=0.0)
            acc += r.to(tl.float32)
        tl.store(Y + pid_k * sys_ + offs_m[:, None] * sym + offs_n[None, :], acc,
                 mask=m_mask[:, None] & n_mask[None, :])


def gemv(x: Tensor, w: Tensor, residual: Tensor | None = None, block_n: int = 16, block_k: int = 512,
         split_k: int = 1, num_warps: int = 4, num_stages: int = 3) -> Tensor:
    """The product x [M, K] @ w [N, K]^T (+ residual [M, N]) as [M, N] in x's dtype, M <= 16.

    Runs on any device Triton runs on (on CPU in its interpreter).
    """
    if triton is None:  # pragma: no cover - CPU-only installs
        raise RuntimeError("gemv needs Triton (pip install triton)")
    m, k = x.shape
    n = w.shape[0]
    if residual is not None and (residual.shape != (m, n) or residual.stride(1) != 1):
        raise ValueError(f"residual must be [M, N] = [{m}, {n}] with contiguous rows, got {tuple(residual.shape)}")
    if m > 16:
        raise ValueError(f"gemv is for at most 16 rows, got {m}: use torch.matmul")
    if w.shape[1] != k or w.stride(1) != 1 or x.stride(1) != 1:
        raise ValueError(f"need x [M, K] and w [N, K] with contiguous rows; got {tuple(x.shape)}, {tuple(w.shape)}")
    split_k = max(1, min(split_k, math.ceil(k / block_k)))
    k_per_split = math.ceil(math.ceil(k / split_k) / block_k) * block_k
    split_k = math.ceil(k / k_per_split)
    # one split: the kernel stores y in x's dtype (one kernel); more: fp32 partial sums, added after
    partial = torch.empty(split_k, m, n, device=x.device, dtype=x.dtype if split_k == 1 else torch.float32)
    epilogue = residual if split_k == 1 else None  # split sums get the residual after they are added
    r = partial if epilogue is None else epilogue
    block_m = next_pow2(m) if m <= 4 else 16
    grid = (math.ceil(n / block_n), split_k)
    _gemv_kernel[grid](x, w, partial, r, m, n, k, k_per_split, x.stride(0), w.stride(0), partial.stride(0),
                       partial.stride(1), r.stride(-2), BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
                       HAS_RESIDUAL=epilogue is not None, USE_DOT=block_m == 16, num_warps=num_warps,
                       num_stages=num_stages)
    if split_k == 1:
        return partial[0]
    y = partial.sum(0)
    return (y if residual is None else y + residual.float()).to(x.dtype)
