"""One decode step of a linear recurrence, updating the state in place (Gated DeltaNet and Mamba2).

The state S [B, HV, K, V] of each head is read once and written once per step:

    S <- exp(g) S                         (decay, one scalar per head)
    u  = beta (v - k^T S)   (delta rule)  or   u = v   (Mamba2 / simple GLA)
    S <- S + k u^T
    o  = q^T S

Gated DeltaNet (Qwen3.5) uses the delta rule with L2-normalised q, k and q scaled by K^-1/2; Mamba2 is the
plain form with q = C, k = B, v = dt x and g = dt A. q and k have G <= HV heads, each shared by HV / G
value heads, so grouped B/C (Mamba2) and GQA-style GDN keys are never repeated in memory. On CUDA one
Triton program updates a [K, BLOCK_V] slice of one head's state in registers; elsewhere plain PyTorch
does the same arithmetic. Both are wrapped in a custom op so that ``torch.compile`` keeps the decode
step in one graph around it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from phase_energy.engines import env_choice
from phase_energy.engines.native.attention import next_pow2

try:  # Triton ships with CUDA builds of torch
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU-only installs
    triton = None


def recurrent_step_reference(state: Tensor, q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor | None,
                             scale: float, l2norm: bool) -> Tensor:
    """The step in PyTorch: q, k [B, G, K], v [B, HV, V], g and beta [B, HV]; updates state, returns o fp32."""
    rep = v.shape[1] // q.shape[1]
    qf, kf = q.float(), k.float()
    if l2norm:
        qf = qf * torch.rsqrt(qf.pow(2).sum(-1, keepdim=True) + 1e-6)
        kf = kf * torch.rsqrt(kf.pow(2).sum(-1, keepdim=True) + 1e-6)
    qf = (qf * scale).repeat_interleave(rep, dim=1)
    kf = kf.repeat_interleave(rep, dim=1)
    s = state.float() * g.float().exp()[..., None, None]
    u = v.float()
    if beta is not None:
        u = (u - torch.einsum("bhkv,bhk->bhv", s, kf)) * beta.float()[..., None]
    s = s + kf[..., :, None] * u[..., None, :]
    state.copy_(s)
    return torch.einsum("bhkv,bhk->bhv", s, qf)


if triton is not None:

    @triton.jit
    def _step_kernel(S, Q, K, V, G, Beta, Out, DtBias, ALog, Dskip, HV, GROUP, KD, VD, scale,
                     stride_qb, stride_qh, stride_kb, stride_kh, stride_vb, stride_gb, stride_betab,
                     BLOCK_K: tl.constexpr, BLOCK_V: tl.constexpr, DELTA: tl.constexpr, L2NORM: tl.constexpr,
                     SPLIT_K: tl.constexpr = False, MAMBA2: tl.constexpr = False):
        pid_bh = tl.program_id(0)  # sequence x value head
        pid_v = tl.program_id(1)
        b = pid_bh // HV
        hv = pid_bh % HV
        hq = hv // GROUP  # the q/k head this value head reads (q and k may be strided views, e.g. Mamba2's B, C)
        # SPLIT_K: this program updates rows [pid_k * BLOCK_K, ...) of the state only and adds its part of
        # o = q^T S to Out (zeroed by the launch); only without the delta rule and the norms, which need all of k
        offs_k = tl.program_id(2) * BLOCK_K + tl.arange(0, BLOCK_K) if SPLIT_K else tl.arange(0, BLOCK_K)
        offs_v = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
        k_mask = offs_k < KD
        v_mask = offs_v < VD
        s_ptr = S + pid_bh.to(tl.int64) * KD * VD + offs_k[:, None] * VD + offs_v[None, :]
        s_mask = k_mask[:, None] & v_mask[None, :]
        s = tl.load(s_ptr, mask=s_mask, other=0.0).to(tl.float32)
        q = tl.load(Q + b.to(tl.int64) * stride_qb + hq * stride_qh + offs_k, mask=k_mask, other=0.0).to(tl.float32)
        k = tl.load(K + b.to(tl.int64) * stride_kb + hq * stride_kh + offs_k, mask=k_mask, other=0.0).to(tl.float32)
        if L2NORM:
            q = q / tl.sqrt(tl.sum(q * q) + 1e-6)
            k = k / tl.sqrt(tl.sum(k * k) + 1e-6)
        q = q * scale
        u = tl.load(V + b.to(tl.int64) * stride_vb + hv * VD + offs_v, mask=v_mask, other=0.0).to(tl.float32)
        g = tl.load(G + b.to(tl.int64) * stride_gb + hv).to(tl.float32)
        if MAMBA2:  # V is x and G the raw time step: dt = softplus(G + dt_bias), decay dt A, input dt x
            x = u
            dt = (g + tl.load(DtBias + hv).to(tl.float32)).to(tl.float64)  # one scalar: fp64 keeps small dt exact
            dt = tl.where(dt > 20.0, dt, tl.log(1.0 + tl.exp(tl.minimum(dt, 20.0)))).to(tl.float32)  # softplus
            u = x * dt
            g = -dt * tl.exp(tl.load(ALog + hv).to(tl.float32))
        s = s * tl.exp(g)
        if DELTA:
            u = (u - tl.sum(s * k[:, None], 0)) * tl.load(Beta + b.to(tl.int64) * stride_betab + hv).to(tl.float32)
        s = s + k[:, None] * u[None, :]
        o = tl.sum(s * q[:, None], 0)
        if MAMBA2:  # noqa: SIM102 (a compile-time branch around a run-time one) the skip term D x, once per output
            if tl.program_id(2) == 0:
                o += tl.load(Dskip + hv).to(tl.float32) * x
        if SPLIT_K:  # only the sum matters: no ordering between the programs' adds
            tl.atomic_add(Out + pid_bh * VD + offs_v, o, mask=v_mask, sem="relaxed")
        else:
            tl.store(Out + pid_bh * VD + offs_v, o, mask=v_mask)
        tl.store(s_ptr, s.to(S.dtype.element_ty), mask=s_mask)


def step_tiling(batch: int, split_ok: bool = False) -> tuple[int, int, int | None]:
    """(block_v, num_warps, block_k) of the state update at this batch; ``block_k`` None: all rows per program.

    From the H200 (bench/kernels-mamba2-h200.json, ``recurrent_speed``): at batch 32 and 128, 64-wide value
    blocks with 4 warps were the fastest or within 1 % of it for Mamba2-2.7B, Nemotron-H and Qwen3.5's
    Gated DeltaNet (Mamba2 at batch 128: 109 against 118 us per layer with 32-wide blocks). Where the rows
    may be split (``split_ok``: no delta rule, no norms, as in Mamba2 and Nemotron-H), 32 rows per program
    with 2 warps were faster still on card GPU-f019b024 (bench/h200-2026-12-02d/kernels.json, in a CUDA
    graph): Mamba2 21.5 against 24.9 us per layer at batch 32, 93.4 against 104.0 at 128; Nemotron-H 33.7
    against 40.1 and 129.5 against 146.2. Below batch 32 the 32-wide blocks stay, all rows per program: at
    batch 1 the kernel takes a few microseconds inside the step's graph, the micro-benchmark there timed its
    launches rather than the kernel, and batch 2-31 was not timed.
    """
    if batch < 32:
        return 32, 4, None
    return (64, 2, 32) if split_ok and recurrent_rows() == "split" else (64, 4, None)


RECURRENT_ROWS = ("split", "whole")


def recurrent_rows() -> str:
    """Whether the update may split the state's rows over programs (``PHASE_ENERGY_RECURRENT_ROWS``).

    ``split`` (the default): as :func:`step_tiling` says; ``whole``: every program takes all rows (the tiling
    before 2026-12-02d, kept for the whole step's before-and-after on a card).
    """
    return env_choice("PHASE_ENERGY_RECURRENT_ROWS", RECURRENT_ROWS, "split")


def launch_step_kernel(state: Tensor, q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor | None,
                       scale: float, l2norm: bool, block_v: int | None = None, num_warps: int | None = None,
                       block_k: int | None = None) -> Tensor:
    """The Triton kernel (any device Triton runs on); same arguments and result as the reference.

    ``block_v`` (a power of two, capped at the head's value size) and ``num_warps`` tile the state; by
    default the engine's tiling for the batch (:func:`step_tiling`; bench/gpu_run.py's ``recurrent_speed``
    step times the others). ``block_k`` (a power of two under the key size) also splits the state's rows
    over programs, smaller tiles and more of them (each adds its part of the output; not for the delta rule
    or the norms, which need every row); ``block_k`` at or above the key size keeps all rows in one program;
    by default the engine's choice (:func:`step_tiling`).
    """
    return _launch(state, q, k, v, g, beta, scale, l2norm, block_v, num_warps, block_k)


def launch_mamba2_step(state: Tensor, c: Tensor, b: Tensor, x: Tensor, dt: Tensor, dt_bias: Tensor, a_log: Tensor,
                       d: Tensor, block_v: int | None = None, num_warps: int | None = None,
                       block_k: int | None = None) -> Tensor:
    """Mamba2's decode step with its inputs in the kernel: y = C h + D x after h <- exp(dt A) h + B (dt x)^T.

    ``dt`` is the raw time step [B, H] (``dt = softplus(dt + dt_bias)``, ``A = -exp(a_log)``), ``x`` [B, H, P]
    the convolution's output; both may be strided views (their last dimension dense, x's heads P apart), as
    B and C [B, G, N]. What :func:`mamba2_step_reference` computes in five elementwise steps around the
    update, one kernel does.
    """
    bsz, h, _, p = state.shape
    if x.shape != (bsz, h, p) or dt.shape != (bsz, h) or any(t.shape != (h,) for t in (dt_bias, a_log, d)):
        raise ValueError(f"mamba2 step: state {tuple(state.shape)} needs x [{bsz}, {h}, {p}], dt [{bsz}, {h}] and "
                         f"dt_bias, a_log, d [{h}]; got x {tuple(x.shape)}, dt {tuple(dt.shape)}, dt_bias "
                         f"{tuple(dt_bias.shape)}, a_log {tuple(a_log.shape)}, d {tuple(d.shape)}")
    # the parameters go as they are (the kernel reads them in fp32): no cast kernels inside the step's graph
    return _launch(state, c, b, x, dt, None, 1.0, False, block_v, num_warps, block_k,
                   (dt_bias.contiguous(), a_log.contiguous(), d.contiguous()))


def _launch(state: Tensor, q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor | None, scale: float,
            l2norm: bool, block_v: int | None, num_warps: int | None, block_k: int | None,
            mamba2: tuple[Tensor, Tensor, Tensor] | None = None) -> Tensor:
    b, hv, kd, vd = state.shape
    if q.shape[0] != b or k.shape != q.shape or q.shape[-1] != kd or hv % q.shape[1] or v.shape != (b, hv, vd):
        raise ValueError(f"recurrent step: state {tuple(state.shape)} needs q, k [{b}, G, {kd}] (G dividing {hv}) "
                         f"and v [{b}, {hv}, {vd}]; got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    default_v, default_warps, default_k = step_tiling(b, beta is None and not l2norm)
    block_v, num_warps = block_v or default_v, num_warps or default_warps
    block_k = block_k or default_k
    split = block_k is not None and block_k < next_pow2(kd)
    if split and (beta is not None or l2norm):
        raise ValueError(f"block_k={block_k} splits the state's {kd} rows; the delta rule and l2norm need all of "
                         f"them (block_k=None or >= {next_pow2(kd)})")
    if block_k is not None and (block_k < 16 or block_k & (block_k - 1)):
        raise ValueError(f"block_k must be a power of two >= 16, got {block_k}")
    assert state.is_contiguous(), "the state is updated in place and must be contiguous"
    # the inputs go as they are, in their dtype (see _ANY_LAYOUT); only a layout the kernel cannot index is copied
    q, k, g = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, g))
    if v.stride(-1) != 1 or v.stride(1) != vd:
        v = v.contiguous()
    beta_t = g if beta is None else (beta if beta.stride(-1) == 1 else beta.contiguous())  # unused without DELTA
    dt_bias, a_log, d = mamba2 or (g, g, g)  # unused without MAMBA2
    o = (torch.zeros if split else torch.empty)(b, hv, vd, device=v.device, dtype=torch.float32)
    block_k = block_k if split and block_k is not None else next_pow2(kd)
    block_v = min(next_pow2(block_v), next_pow2(vd))
    grid = (b * hv, math.ceil(vd / block_v), math.ceil(kd / block_k))
    _step_kernel[grid](state, q, k, v, g, beta_t, o, dt_bias, a_log, d, hv, hv // q.shape[1], kd, vd, scale,
                       q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), g.stride(0), beta_t.stride(0),
                       BLOCK_K=block_k, BLOCK_V=block_v, DELTA=beta is not None, L2NORM=l2norm, SPLIT_K=split,
                       MAMBA2=mamba2 is not None, num_warps=num_warps)
    return o


# The ops take their inputs in whatever layout the compiled step has them. Their kernels read the per-step
# inputs (q, k, v, g, beta; Mamba2's B, C, x and dt; the convolution's x) through their batch and head strides
# and copy only what they cannot index (a last dimension that is not dense, v's heads not adjacent); the
# state, updated in place, must be contiguous (asserted). Without the tag Inductor gives a custom op the
# strides eager mode would, and on the GPU its GEMM outputs are padded (a row of Mamba2-2.7B's projection is
# 10,624 wide, not 10,576): every slice of a projection went through a copy kernel before the op, two per
# Mamba2 layer and three per Gated DeltaNet layer on the H200 (bench/h200-2026-12-02g/: the generated code of
# a Mamba2 layer shows its two, the profiles before and after the tag Gated DeltaNet's).
_ANY_LAYOUT = (torch.Tag.flexible_layout,)


@torch.library.custom_op("phase_energy::recurrent_step_", mutates_args=("state",), tags=_ANY_LAYOUT)
def recurrent_step_(state: Tensor, q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor | None,
                    scale: float, l2norm: bool) -> Tensor:
    """One step in place: q, k [B, G, K]; v [B, HV, V]; g, beta [B, HV]; state [B, HV, K, V] -> o [B, HV, V]."""
    if state.device.type == "cuda" and triton is not None:
        return launch_step_kernel(state, q, k, v, g, beta, scale, l2norm)
    return recurrent_step_reference(state, q, k, v, g, beta, scale, l2norm)


@recurrent_step_.register_fake
def _(state: Tensor, q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor | None,
      scale: float, l2norm: bool) -> Tensor:
    return v.new_empty(v.shape, dtype=torch.float32)


def mamba2_step_reference(state: Tensor, c: Tensor, b: Tensor, x: Tensor, dt: Tensor, dt_bias: Tensor,
                          a_log: Tensor, d: Tensor) -> Tensor:
    """Mamba2's decode step in PyTorch, as the mixer wrote it around :func:`recurrent_step_`: updates state."""
    dt = torch.nn.functional.softplus(dt.float() + dt_bias.float())  # [B, H]
    y = recurrent_step_reference(state, c, b, x.float() * dt[..., None], dt * -a_log.float().exp(), None, 1.0,
                                 False)
    return y + x.float() * d.float()[None, :, None]


@torch.library.custom_op("phase_energy::mamba2_step_", mutates_args=("state",), tags=_ANY_LAYOUT)
def mamba2_step_(state: Tensor, c: Tensor, b: Tensor, x: Tensor, dt: Tensor, dt_bias: Tensor, a_log: Tensor,
                 d: Tensor) -> Tensor:
    """Mamba2's step in place from its raw inputs: c, b [B, G, N]; x [B, H, P]; dt [B, H] -> y [B, H, P] fp32."""
    if state.device.type == "cuda" and triton is not None:
        return launch_mamba2_step(state, c, b, x, dt, dt_bias, a_log, d)
    return mamba2_step_reference(state, c, b, x, dt, dt_bias, a_log, d)


@mamba2_step_.register_fake
def _(state: Tensor, c: Tensor, b: Tensor, x: Tensor, dt: Tensor, dt_bias: Tensor, a_log: Tensor,
      d: Tensor) -> Tensor:
    return x.new_empty(x.shape, dtype=torch.float32)


# ----------------------------------------------------------------------------- the short convolution's step
def conv_update_reference(x: Tensor, state: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """One decode step of the depthwise causal convolution + SiLU: x [B, C], state [B, C, k-1] (shifted in place)."""
    full = torch.cat([state, x[..., None]], dim=-1)  # [B, C, k]
    state.copy_(full[..., 1:])
    out = (full * weight[None]).sum(-1)
    if bias is not None:
        out = out + bias[None]
    return torch.nn.functional.silu(out).to(x.dtype)


if triton is not None:

    @triton.jit
    def _conv_update_kernel(X, State, W, Bias, Out, C, stride_xb, KM1: tl.constexpr, BLOCK_C: tl.constexpr,
                            HAS_BIAS: tl.constexpr):
        b = tl.program_id(0).to(tl.int64)
        offs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        mask = offs < C
        x = tl.load(X + b * stride_xb + offs, mask=mask, other=0.0).to(tl.float32)
        acc = x * tl.load(W + offs * (KM1 + 1) + KM1, mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            acc += tl.load(Bias + offs, mask=mask, other=0.0).to(tl.float32)
        st = State + b * C * KM1 + offs * KM1
        for j in tl.static_range(KM1):  # the older inputs, oldest first; each moves one tap back
            s = tl.load(st + j, mask=mask, other=0.0)
            acc += s.to(tl.float32) * tl.load(W + offs * (KM1 + 1) + j, mask=mask, other=0.0).to(tl.float32)
            if j > 0:
                tl.store(st + j - 1, s, mask=mask)
        tl.store(st + KM1 - 1, x.to(State.dtype.element_ty), mask=mask)
        tl.store(Out + b * C + offs, (acc * tl.sigmoid(acc)).to(Out.dtype.element_ty), mask=mask)


def launch_conv_update(x: Tensor, state: Tensor, weight: Tensor, bias: Tensor | None, block_c: int = 256) -> Tensor:
    """The Triton kernel: the reference's step in one kernel (x may be a strided view, its channels dense)."""
    bsz, c, km1 = state.shape
    if km1 < 1 or x.shape != (bsz, c) or weight.shape != (c, km1 + 1) or (bias is not None and bias.shape != (c,)):
        raise ValueError(f"conv update: state {tuple(state.shape)} (at least one older input) needs x [{bsz}, {c}], "
                         f"weight [{c}, {km1 + 1}] and bias [{c}]; got x {tuple(x.shape)}, weight "
                         f"{tuple(weight.shape)}, bias {None if bias is None else tuple(bias.shape)}")
    assert state.is_contiguous(), "the convolution's state is shifted in place and must be contiguous"
    if x.stride(-1) != 1:
        x = x.contiguous()
    weight = weight.contiguous()
    out = torch.empty(bsz, c, device=x.device, dtype=x.dtype)
    _conv_update_kernel[(bsz, math.ceil(c / block_c))](x, state, weight, bias if bias is not None else weight, out,
                                                        c, x.stride(0), KM1=km1, BLOCK_C=block_c,
                                                        HAS_BIAS=bias is not None)
    return out


@torch.library.custom_op("phase_energy::conv_update_", mutates_args=("state",), tags=_ANY_LAYOUT)
def conv_update_(x: Tensor, state: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The short convolution's decode step: x [B, C] -> silu(conv) [B, C]; state [B, C, k-1] shifted in place."""
    if state.device.type == "cuda" and triton is not None:
        return launch_conv_update(x, state, weight, bias)
    return conv_update_reference(x, state, weight, bias)


@conv_update_.register_fake
def _(x: Tensor, state: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return x.new_empty(x.shape[0], state.shape[1])
