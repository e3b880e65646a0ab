"""Skinny matmul for decode: y [M, N] = x [M, K] @ W[N, K]^T (+ residual) with M of a few rows.

At batch 1-16 a decode step is a stream of weight matrices through a few rows of activations, so its
speed is the rate at which W is read. cuBLAS streamed Qwen3-4B's weights at ~3.1 TB/s on the H200 at
batch 1 against 4.26 TB/s for a plain copy (docs/benchmarks.md). This kernel reads W once, in
[BLOCK_N, BLOCK_K] tiles, keeps the x rows in registers and accumulates in fp32; with ``split_k`` > 1 the
K dimension is divided among programs (more programs for short N) and the partial sums are added after.
The residual, when given, is added in the epilogue (one kernel instead of two).

A prologue folds the RMSNorm before a projection, or the SwiGLU gate before the down projection, into the
kernel, and ``pdl`` launches it with programmatic dependent launch (the next matrix's programs start while
the last one drains; ``prefetch`` reads their first W tile before they wait).

It lives with the benchmarks, not in the engine, which does not use it: on the H200 (``bench/gpu_run.py --steps gemv``,
bench/engine-h200-2026-11-24b/gemv.json) it summed to 3.51 ms of matmuls per Qwen3-4B decode step at one
row against cuBLAS's 3.55 ms, and was slower at 4-16 rows; both lose the time in a fixed per-matrix
ramp-up, not in the tiling. As a whole captured chain with the fused prologues (``--steps chain``,
bench/engine-h200-2026-11-24c/) it took 3.55 ms against 3.01 ms for cuBLAS with Inductor's fused norms,
and PDL made it slower (4.0-4.1 ms). It stays as the measured baseline and for re-measurement on other cards.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from phase_energy.engines.native.attention import next_pow2

try:  # Triton ships with CUDA builds of torch
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU-only installs
    triton = None


PROLOGUES = ("none", "rmsnorm", "silu_mul")


def gemv_reference(x: Tensor, w: Tensor, residual: Tensor | None = None, prologue: str = "none",
                   norm_weight: Tensor | None = None, eps: float = 1e-6, norm_offset: float = 0.0) -> Tensor:
    """fp32 prologue(x) @ w^T (+ residual), cast to x's dtype.

    ``rmsnorm``: x / rms(x) * (norm_offset + norm_weight); ``silu_mul``: x holds [gate | up] and the input is
    silu(gate) * up.
    """
    xf = x.float()
    if prologue == "rmsnorm":
        assert norm_weight is not None
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * (norm_offset + norm_weight.float())
    elif prologue == "silu_mul":
        gate, up = xf.chunk(2, dim=-1)
        xf = torch.nn.functional.silu(gate) * up
    y = xf @ w.float().t()
    if residual is not None:
        y = y + residual.float()
    return y.to(x.dtype)


if triton is not None:

    @triton.jit
    def _load_x(X, NW, rstd, offs_m, offs_k, m_mask, k_mask, K, sxm, norm_offset, PROLOGUE: tl.constexpr):
        """The [BLOCK_M, BLOCK_K] input tile in fp32 after the prologue."""
        mask = m_mask[:, None] & k_mask[None, :]
        x = tl.load(X + offs_m[:, None] * sxm + offs_k[None, :], mask=mask, other=0.0).to(tl.float32)
        if PROLOGUE == 1:  # RMSNorm: rows scaled by 1/rms, columns by the norm weight
            nw = tl.load(NW + offs_k, mask=k_mask, other=0.0).to(tl.float32)
            x = x * rstd[:, None] * (norm_offset + nw)[None, :]
        elif PROLOGUE == 2:  # SwiGLU: X is [gate | up], K wide each
            up = tl.load(X + offs_m[:, None] * sxm + K + offs_k[None, :], mask=mask, other=0.0).to(tl.float32)
            x = x / (1.0 + tl.exp(-x)) * up
        return x

    @triton.jit
    def _accumulate(acc, w, X, NW, rstd, offs_m, offs_k, m_mask, k_mask, K, sxm, norm_offset,
                    BLOCK_M: tl.constexpr, PROLOGUE: tl.constexpr, USE_DOT: tl.constexpr):
        x = _load_x(X, NW, rstd, offs_m, offs_k, m_mask, k_mask, K, sxm, norm_offset, PROLOGUE)
        if USE_DOT:  # 16+ rows (padded): tensor cores
            acc += tl.dot(x.to(w.dtype), tl.trans(w))
        else:  # 1-4 rows: one multiply-reduce per row on the CUDA cores
            for m in tl.static_range(BLOCK_M):
                xm = tl.sum(tl.where(offs_m[:, None] == m, x, 0.0), 0)
                part = tl.sum(w.to(tl.float32) * xm[None, :], 1)
                acc += tl.where(offs_m[:, None] == m, part[None, :], 0.0)
        return acc

    @triton.jit
    def _gemv_kernel(X, W, Y, R, NW, M, N, K, k_per_split, sxm, swn, sys_, sym, srm, eps, norm_offset,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     HAS_RESIDUAL: tl.constexpr, USE_DOT: tl.constexpr, PROLOGUE: tl.constexpr,
                     USE_GDC: tl.constexpr, PREFETCH: tl.constexpr):
        pid_n = tl.program_id(0)
        pid_k = tl.program_id(1)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_m = tl.arange(0, BLOCK_M)
        n_mask = offs_n < N
        m_mask = offs_m < M
        k_start = pid_k * k_per_split
        k_end = tl.minimum(k_start + k_per_split, K)
        w_rows = W + offs_n.to(tl.int64)[:, None] * swn  # 64-bit: the LM head alone has 3.9e8 elements
        offs_k = k_start + tl.arange(0, BLOCK_K)
        if PREFETCH:  # W does not depend on the kernel before: its first tile is read before waiting for it
            w_first = tl.load(w_rows + offs_k[None, :], mask=n_mask[:, None] & (offs_k < k_end)[None, :], other=0.0)
        if USE_GDC:  # programmatic dependent launch: let the next kernel start, wait for the previous one
            tl.extra.cuda.gdc_launch_dependents()
            tl.extra.cuda.gdc_wait()
        rstd = tl.full([BLOCK_M], 1.0, tl.float32)
        if PROLOGUE == 1:  # every program reads its rows whole for their norm (a few KB, from L2)
            ss = tl.zeros([BLOCK_M], dtype=tl.float32)
            for k0 in range(0, K, BLOCK_K):
                ok = k0 + tl.arange(0, BLOCK_K)
                xk = tl.load(X + offs_m[:, None] * sxm + ok[None, :], mask=m_mask[:, None] & (ok < K)[None, :],
                             other=0.0).to(tl.float32)
                ss += tl.sum(xk * xk, 1)
            rstd = tl.rsqrt(ss / K + eps)
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        k_loop = k_start
        if PREFETCH:
            acc = _accumulate(acc, w_first, X, NW, rstd, offs_m, offs_k, m_mask, offs_k < k_end, K, sxm,
                              norm_offset, BLOCK_M, PROLOGUE, USE_DOT)
            k_loop = k_start + BLOCK_K
        for k0 in range(k_loop, k_end, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_mask = offs_k < k_end
            w = tl.load(w_rows + offs_k[None, :], mask=n_mask[:, None] & k_mask[None, :], other=0.0)
            acc = _accumulate(acc, w, X, NW, rstd, offs_m, offs_k, m_mask, k_mask, K, sxm, norm_offset,
                              BLOCK_M, PROLOGUE, USE_DOT)
        if HAS_RESIDUAL:
            r = tl.load(R + offs_m[:, None] * srm + offs_n[None, :], mask=m_mask[:, None] & n_mask[None, :],
                        other=0.0)
            acc += r.to(tl.float32)
        tl.store(Y + pid_k * sys_ + offs_m[:, None] * sym + offs_n[None, :], acc,
                 mask=m_mask[:, None] & n_mask[None, :])


MAX_ROWS = 64


def gemv(x: Tensor, w: Tensor, residual: Tensor | None = None, block_n: int = 16, block_k: int = 512,
         split_k: int = 1, num_warps: int = 4, num_stages: int = 3, prologue: str = "none",
         norm_weight: Tensor | None = None, eps: float = 1e-6, norm_offset: float = 0.0, pdl: bool = False,
         prefetch: bool = False, out: Tensor | None = None) -> Tensor:
    """The product prologue(x) [M, K] @ w [N, K]^T (+ residual [M, N]) as [M, N] in x's dtype, M <= 64.

    ``prologue`` (see ``gemv_reference``) folds the RMSNorm before a projection, or the SwiGLU gate before
    the down projection, into the matmul: one kernel instead of two or three. ``pdl`` launches it with
    programmatic dependent launch (Hopper and later): it starts while the kernel before it drains and
    waits for that kernel's results before reading x; with ``prefetch`` its first W tile is read before
    the wait. Runs on any device Triton runs on (on CPU in its interpreter, without ``pdl``).
    """
    if triton is None:  # pragma: no cover - CPU-only installs
        raise RuntimeError("gemv needs Triton (pip install triton)")
    if prologue not in PROLOGUES:
        raise ValueError(f"unknown prologue {prologue!r}; accepted: {', '.join(PROLOGUES)}")
    m, kx = x.shape
    k = kx // 2 if prologue == "silu_mul" else kx
    n = w.shape[0]
    if residual is not None and (residual.shape != (m, n) or residual.stride(1) != 1):
        raise ValueError(f"residual must be [M, N] = [{m}, {n}] with contiguous rows, got {tuple(residual.shape)}")
    if m > MAX_ROWS:
        raise ValueError(f"gemv is for at most {MAX_ROWS} rows, got {m}: use torch.matmul")
    if w.shape[1] != k or w.stride(1) != 1 or x.stride(1) != 1:
        raise ValueError(f"need x [M, K] ([M, 2K] for silu_mul) and w [N, K] with contiguous rows; got "
                         f"{tuple(x.shape)}, {tuple(w.shape)}")
    if prologue == "silu_mul" and kx % 2:
        raise ValueError(f"the silu_mul prologue needs x = [gate | up] of even width, got {kx}")
    if out is not None and (out.shape != (m, n) or out.dtype != x.dtype or out.stride(1) != 1):
        raise ValueError(f"out must be [M, N] = [{m}, {n}] of {x.dtype} with contiguous rows, got "
                         f"{tuple(out.shape)} of {out.dtype}")
    if pdl and x.device.type != "cuda":
        raise ValueError(f"pdl (programmatic dependent launch) needs a CUDA device, got {x.device.type}")
    if prologue == "rmsnorm" and (norm_weight is None or norm_weight.shape != (k,)):
        raise ValueError(f"the rmsnorm prologue needs norm_weight of shape ({k},)")
    if prologue == "rmsnorm" and split_k > 1:
        raise ValueError("the rmsnorm prologue needs split_k=1 (every program normalises whole rows)")
    split_k = max(1, min(split_k, math.ceil(k / block_k)))
    k_per_split = math.ceil(math.ceil(k / split_k) / block_k) * block_k
    split_k = math.ceil(k / k_per_split)
    if split_k > 1 and out is not None:
        raise ValueError("out= needs split_k=1")
    # one split: the kernel stores y in x's dtype (one kernel); more: fp32 partial sums, added after
    if split_k == 1:
        partial = (out if out is not None else torch.empty(m, n, device=x.device, dtype=x.dtype)).unsqueeze(0)
    else:
        partial = torch.empty(split_k, m, n, device=x.device, dtype=torch.float32)
    epilogue = residual if split_k == 1 else None  # split sums get the residual after they are added
    r = partial if epilogue is None else epilogue
    nw = norm_weight if norm_weight is not None else x
    block_m = next_pow2(m) if m <= 4 else max(16, next_pow2(m))
    grid = (math.ceil(n / block_n), split_k)
    launch = {"launch_pdl": True} if pdl else {}
    _gemv_kernel[grid](x, w, partial, r, nw, m, n, k, k_per_split, x.stride(0), w.stride(0), partial.stride(0),
                       partial.stride(1), r.stride(-2), eps, norm_offset, BLOCK_M=block_m, BLOCK_N=block_n,
                       BLOCK_K=block_k, HAS_RESIDUAL=epilogue is not None, USE_DOT=block_m >= 16,
                       PROLOGUE=PROLOGUES.index(prologue), USE_GDC=pdl, PREFETCH=prefetch, num_warps=num_warps,
                       num_stages=num_stages, **launch)
    if split_k == 1:
        return partial[0]
    y = partial.sum(0)
    return (y if residual is None else y + residual.float()).to(x.dtype)
