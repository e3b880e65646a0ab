"""A lean decoder for the four paradigms (gpt-fast style): one module per block kind, static caches.

Shapes are in comments: B batch, T tokens, H heads, D head dim, S cache length. Prefill and decode are
separate calls; decode writes the cache in place at ``input_pos`` (a device tensor), so its shapes never
change and a step can be captured in a CUDA graph. GDN and Mamba2 prefill use flash-linear-attention's
chunked Triton kernels on CUDA; their decode is one in-place step (``recurrent.py``); plain PyTorch
elsewhere.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from phase_energy.engines import env_choice
from phase_energy.engines.native.attention import decode_attention
from phase_energy.engines.native.recurrent import conv_update_, mamba2_step_, recurrent_step_
from phase_energy.model.presets import ArchConfig


def _has_fla(x: Tensor) -> bool:
    if x.device.type != "cuda":
        return False
    try:
        import fla  # noqa: F401
    except ImportError:
        return False
    return True


class RMSNorm(nn.Module):
    """RMSNorm in fp32; ``zero_centered`` scales by (1 + w) as Qwen3.5 does."""

    def __init__(self, dim: int, eps: float, zero_centered: bool = False):
        super().__init__()
        self.eps = eps
        self.zero_centered = zero_centered
        self.weight = nn.Parameter(torch.zeros(dim) if zero_centered else torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.zero_centered:
            return (h * (1.0 + self.weight.float())).type_as(x)
        return self.weight * h.type_as(x)


def rope_table(dim: int, theta: float, max_len: int, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """cos/sin of rotate-half RoPE for positions 0..max_len-1: two [S, dim] fp32 tensors."""
    inv = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float, device=device) / dim))
    freqs = torch.arange(max_len, dtype=torch.float, device=device)[:, None] * inv[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the first cos.shape[-1] dims of x [B, H, T, D] with cos/sin [T, d] (or [B, 1, T, d])."""
    d = cos.shape[-1]
    xr, xp = x[..., :d], x[..., d:]
    x1, x2 = xr[..., : d // 2], xr[..., d // 2 :]
    rot = torch.cat([-x2, x1], dim=-1)
    out = (xr.float() * cos + rot.float() * sin).type_as(x)
    return torch.cat([out, xp], dim=-1) if xp.shape[-1] else out


class MLP(nn.Module):
    """SwiGLU (gate, up, down) or squared-ReLU (up, down)."""

    def __init__(self, cfg: ArchConfig):
        super().__init__()
        self.kind = cfg.mlp_kind
        if self.kind == "swiglu":
            self.gate_proj = nn.Linear(cfg.hidden, cfg.intermediate, bias=False)
        self.up_proj = nn.Linear(cfg.hidden, cfg.intermediate, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate, cfg.hidden, bias=False)

        self.w13: Tensor | None = None  # gate and up in one GEMM, after fuse()

    def fuse(self) -> None:
        """Concatenate gate and up projections into one weight (one GEMM per step instead of two)."""
        if self.kind == "swiglu":
            self.w13 = torch.cat([self.gate_proj.weight, self.up_proj.weight]).detach()
            del self.gate_proj, self.up_proj

    def forward(self, x: Tensor) -> Tensor:
        if self.w13 is not None:
            gate, up = F.linear(x, self.w13).chunk(2, dim=-1)
            return self.down_proj(F.silu(gate) * up)
        if self.kind == "swiglu":
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(F.relu(self.up_proj(x)).square())


def _attend(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """Causal attention of q [B, H, T, D] over k, v [B, Hkv, T, D] (prefill)."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=k.shape[1] != q.shape[1])


class Attention(nn.Module):
    """GQA with optional QK-norm, partial RoPE and a sigmoid output gate (Qwen3, Qwen3.5, Nemotron-H)."""

    def __init__(self, cfg: ArchConfig, zero_centered: bool, use_rope: bool = True):
        super().__init__()
        self.cfg = cfg
        h, n, nkv, d = cfg.hidden, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.gate = cfg.attn_output_gate
        self.q_proj = nn.Linear(h, n * d * (2 if self.gate else 1), bias=False)
        self.k_proj = nn.Linear(h, nkv * d, bias=False)
        self.v_proj = nn.Linear(h, nkv * d, bias=False)
        self.o_proj = nn.Linear(n * d, h, bias=False)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(d, cfg.rms_eps, zero_centered)
            self.k_norm = RMSNorm(d, cfg.rms_eps, zero_centered)
        self.use_rope = use_rope
        self.k_cache: Tensor | None = None
        self.v_cache: Tensor | None = None
        self.wqkv: Tensor | None = None  # q, k, v in one GEMM, after fuse()

    def fuse(self) -> None:
        """Concatenate the q, k and v projections into one weight."""
        self.wqkv = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight]).detach()
        self.split = [self.q_proj.weight.shape[0], self.k_proj.weight.shape[0], self.v_proj.weight.shape[0]]
        del self.q_proj, self.k_proj, self.v_proj

    def setup_cache(self, batch: int, max_len: int, dtype: torch.dtype, device: torch.device) -> None:
        shape = (batch, self.cfg.n_kv_heads, max_len, self.cfg.head_dim)  # [B, Hkv, S, D]
        self.k_cache = torch.zeros(shape, dtype=dtype, device=device)
        self.v_cache = torch.zeros(shape, dtype=dtype, device=device)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], pos: Tensor | None, seq_slice: slice) -> Tensor:
        b, t, _ = x.shape
        d = self.cfg.head_dim
        if self.wqkv is not None:
            q, k, v = F.linear(x, self.wqkv).split(self.split, dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        gate = None
        if self.gate:
            q, gate = q.view(b, t, -1, 2 * d).chunk(2, dim=-1)
            gate = gate.reshape(b, t, -1)
        q = q.reshape(b, t, -1, d)
        k = k.view(b, t, -1, d)
        v = v.view(b, t, -1, d).transpose(1, 2)  # [B, Hkv, T, D]
        if self.cfg.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        if self.use_rope:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        assert self.k_cache is not None and self.v_cache is not None, "call setup_caches first"
        if pos is None:  # prefill: write positions 0..t-1 of these sequences
            self.k_cache[seq_slice, :, :t] = k
            self.v_cache[seq_slice, :, :t] = v
            o = _attend(q, k, v, d**-0.5)
        else:
            self.k_cache.index_copy_(2, pos.view(1), k)
            self.v_cache.index_copy_(2, pos.view(1), v)
            hkv = self.cfg.n_kv_heads
            og = decode_attention(q.reshape(b, hkv, -1, d), self.k_cache, self.v_cache, pos + 1, d**-0.5)
            o = og.reshape(b, -1, 1, d)  # [B, H, 1, D]
        o = o.transpose(1, 2).reshape(b, t, -1)
        if gate is not None:
            o = o * torch.sigmoid(gate)
        return self.o_proj(o)


class MLAttention(nn.Module):
    """Multi-head latent attention: expanded for prefill, absorbed over the latent cache for decode."""

    def __init__(self, cfg: ArchConfig):
        super().__init__()
        self.cfg = cfg
        h, n = cfg.hidden, cfg.n_heads
        self.qk_dim = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim
        if cfg.q_lora_rank:
            self.q_a_proj = nn.Linear(h, cfg.q_lora_rank, bias=False)
            self.q_a_layernorm = RMSNorm(cfg.q_lora_rank, cfg.rms_eps)
            self.q_b_proj = nn.Linear(cfg.q_lora_rank, n * self.qk_dim, bias=False)
        else:
            self.q_proj = nn.Linear(h, n * self.qk_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(h, cfg.kv_lora_rank + cfg.qk_rope_head_dim, bias=False)
        self.kv_a_layernorm = RMSNorm(cfg.kv_lora_rank, cfg.rms_eps) if cfg.kv_norm else nn.Identity()
        self.kv_b_proj = nn.Linear(cfg.kv_lora_rank, n * (cfg.qk_nope_head_dim + cfg.v_head_dim), bias=False)
        self.o_proj = nn.Linear(n * cfg.v_head_dim, h, bias=False)
        self.scale = self.qk_dim**-0.5
        self.kv_cache: Tensor | None = None  # [B, S, kv_lora + rope]: latent, then the rope key

    def setup_cache(self, batch: int, max_len: int, dtype: torch.dtype, device: torch.device) -> None:
        width = self.cfg.kv_lora_rank + self.cfg.qk_rope_head_dim
        self.kv_cache = torch.zeros(batch, max_len, width, dtype=dtype, device=device)

    def _q(self, x: Tensor) -> Tensor:
        if self.cfg.q_lora_rank:
            return self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        return self.q_proj(x)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], pos: Tensor | None, seq_slice: slice) -> Tensor:
        c = self.cfg
        b, t, _ = x.shape
        nope, rd, r = c.qk_nope_head_dim, c.qk_rope_head_dim, c.kv_lora_rank
        q = self._q(x).view(b, t, c.n_heads, self.qk_dim).transpose(1, 2)  # [B, H, T, nope+rope]
        q_nope, q_rot = q.split([nope, rd], dim=-1)
        kv = self.kv_a_proj_with_mqa(x)
        latent, k_rot = kv.split([r, rd], dim=-1)
        latent = self.kv_a_layernorm(latent)  # [B, T, r]
        q_rot = apply_rope(q_rot, *rope)
        k_rot = apply_rope(k_rot[:, None], *rope)[:, 0]  # [B, T, rope]
        assert self.kv_cache is not None, "call setup_caches first"
        wkv = self.kv_b_proj.weight.view(c.n_heads, nope + c.v_head_dim, r)
        if pos is None:
            self.kv_cache[seq_slice, :t] = torch.cat([latent, k_rot], dim=-1)
            kvx = self.kv_b_proj(latent).view(b, t, c.n_heads, nope + c.v_head_dim).transpose(1, 2)
            k_nope, v = kvx.split([nope, c.v_head_dim], dim=-1)
            k = torch.cat([k_nope, k_rot[:, None].expand(-1, c.n_heads, -1, -1)], dim=-1)
            o = F.scaled_dot_product_attention(torch.cat([q_nope, q_rot], -1), k, v, is_causal=True,
                                               scale=self.scale)
        else:
            self.kv_cache.index_copy_(1, pos.view(1), torch.cat([latent, k_rot], dim=-1))
            w_uk, w_uv = wkv[:, :nope], wkv[:, nope:]  # [H, nope, r], [H, v, r]
            q_lat = torch.einsum("bhtn,hnr->bhtr", q_nope, w_uk)  # absorbed query [B, H, 1, r]
            qk = torch.cat([q_lat, q_rot], dim=-1).transpose(1, 2)  # [B, 1, H, r + rope]: one shared KV head
            cache = self.kv_cache[:, None]  # [B, 1, S, r + rope]
            o_lat = decode_attention(qk, cache, cache[..., :r], pos + 1, self.scale)  # [B, 1, H, r]
            o = torch.einsum("bhtr,hvr->bhtv", o_lat.transpose(1, 2), w_uv)
        return self.o_proj(o.transpose(1, 2).reshape(b, t, -1))


def _causal_conv(x: Tensor, weight: Tensor, bias: Tensor | None, state: Tensor, seq_slice: slice | None,
                 decode: bool) -> Tensor:
    """Depthwise causal conv + SiLU over x [B, C, T]; keeps the last k-1 inputs in state [B, C, k-1]."""
    k = weight.shape[-1]
    if decode:
        full = torch.cat([state, x], dim=-1)  # [B, C, k]
        state.copy_(full[:, :, 1:])
        out = (full * weight[None, :, :]).sum(-1, keepdim=True)
        if bias is not None:
            out = out + bias[None, :, None]
    else:
        pad = F.pad(x, (k - 1, 0))
        state[seq_slice] = pad[:, :, -(k - 1):]
        out = F.conv1d(pad, weight[:, None, :], bias, groups=x.shape[1])
    return F.silu(out)


class GatedDeltaNet(nn.Module):
    """Qwen3.5 Gated DeltaNet mixer: conv over q,k,v, delta rule with decay, gated RMSNorm output."""

    def __init__(self, cfg: ArchConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.kd, self.vd = cfg.lin_k_heads * cfg.lin_k_dim, cfg.lin_v_heads * cfg.lin_v_dim
        self.conv_dim = 2 * self.kd + self.vd
        self.in_proj_qkv = nn.Linear(h, self.conv_dim, bias=False)
        self.in_proj_z = nn.Linear(h, self.vd, bias=False)
        self.in_proj_b = nn.Linear(h, cfg.lin_v_heads, bias=False)
        self.in_proj_a = nn.Linear(h, cfg.lin_v_heads, bias=False)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, cfg.conv_kernel, groups=self.conv_dim, bias=False)
        self.dt_bias = nn.Parameter(torch.ones(cfg.lin_v_heads))
        self.A_log = nn.Parameter(torch.log(torch.linspace(1.0, 16.0, cfg.lin_v_heads)))
        self.norm = RMSNorm(cfg.lin_v_dim, cfg.rms_eps)
        self.out_proj = nn.Linear(self.vd, h, bias=False)
        self.state: Tensor | None = None  # [B, HV, K, V] fp32
        self.conv_state: Tensor | None = None  # [B, C, k-1]
        self.w_in: Tensor | None = None  # the four input projections in one GEMM, after fuse()
        self.in_split = [self.conv_dim, self.vd, cfg.lin_v_heads, cfg.lin_v_heads]

    def fuse(self) -> None:
        """Concatenate the qkv, z, b and a projections (they read the same input) into one weight."""
        self.w_in = torch.cat([self.in_proj_qkv.weight, self.in_proj_z.weight, self.in_proj_b.weight,
                               self.in_proj_a.weight]).detach()
        del self.in_proj_qkv, self.in_proj_z, self.in_proj_b, self.in_proj_a

    def _project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The inputs of ``x``: qkv (before the convolution), z, b and a; one GEMM when fused, four otherwise."""
        if self.w_in is not None:
            qkv, z, b, a = F.linear(x, self.w_in).split(self.in_split, dim=-1)
            return qkv, z, b, a
        return self.in_proj_qkv(x), self.in_proj_z(x), self.in_proj_b(x), self.in_proj_a(x)

    def setup_cache(self, batch: int, max_len: int, dtype: torch.dtype, device: torch.device) -> None:
        c = self.cfg
        self.state = torch.zeros(batch, c.lin_v_heads, c.lin_k_dim, c.lin_v_dim, dtype=torch.float32, device=device)
        self.conv_state = torch.zeros(batch, self.conv_dim, c.conv_kernel - 1, dtype=dtype, device=device)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], pos: Tensor | None, seq_slice: slice) -> Tensor:
        c = self.cfg
        b, t, _ = x.shape
        assert self.state is not None and self.conv_state is not None, "call setup_caches first"
        decode = pos is not None
        qkv_in, z_in, b_in, a_in = self._project(x)
        if decode:  # the convolution's step as one op (one kernel on CUDA), its state shifted in place
            qkv = conv_update_(qkv_in[:, 0], self.conv_state, self.conv1d.weight[:, 0], None)[:, None]
        else:
            qkv = _causal_conv(qkv_in.transpose(1, 2), self.conv1d.weight[:, 0], None, self.conv_state,
                               seq_slice, decode).transpose(1, 2)
        q, k, v = qkv.split([self.kd, self.kd, self.vd], dim=-1)
        q = q.reshape(b, t, c.lin_k_heads, c.lin_k_dim)
        k = k.reshape(b, t, c.lin_k_heads, c.lin_k_dim)
        v = v.reshape(b, t, c.lin_v_heads, c.lin_v_dim)
        beta = b_in.sigmoid()  # [B, T, HV]
        g = -self.A_log.float().exp() * F.softplus(a_in.float() + self.dt_bias)  # log decay
        if decode:  # one step, the state updated in place
            o = recurrent_step_(self.state, q[:, 0], k[:, 0], v[:, 0], g[:, 0], beta[:, 0], c.lin_k_dim**-0.5,
                                True)[:, None].type_as(v)
        else:
            o, final = gated_delta_rule(q, k, v, g, beta)
            self.state[seq_slice] = final
        z = z_in.reshape(-1, c.lin_v_dim)
        o = self.norm(o.reshape(-1, c.lin_v_dim)) * F.silu(z.float()).type_as(x)
        return self.out_proj(o.reshape(b, t, -1))


def _l2norm(x: Tensor, eps: float = 1e-6) -> Tensor:
    """X / sqrt(sum x^2 + eps) over the last dim (fla's convention)."""
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + eps)


def gated_delta_rule(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    """Gated delta rule from a zero state (prefill) over q, k [B, T, H, K], v [B, T, HV, V]; o and the final state."""
    if _has_fla(q):
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule

        fn = fused_recurrent_gated_delta_rule if q.shape[1] == 1 else chunk_gated_delta_rule
        o, final = fn(q, k, v, g=g.float(), beta=beta, initial_state=None,
                      output_final_state=True, use_qk_l2norm_in_kernel=True)
        return o, final
    hv, kdim = v.shape[2], q.shape[-1]
    rep = hv // q.shape[2]
    qf = _l2norm(q.float()).repeat_interleave(rep, dim=2) / math.sqrt(kdim)
    kf = _l2norm(k.float()).repeat_interleave(rep, dim=2)
    vf, bf, gf = v.float(), beta.float(), g.float()
    b, t = q.shape[:2]
    s = torch.zeros(b, hv, kdim, v.shape[-1], device=q.device)
    out = torch.empty_like(vf)
    for i in range(t):  # [B, HV, K, V]
        s = s * gf[:, i].exp()[..., None, None]
        mem = torch.einsum("bhkv,bhk->bhv", s, kf[:, i])
        delta = (vf[:, i] - mem) * bf[:, i, :, None]
        s = s + kf[:, i, :, :, None] * delta[:, :, None, :]
        out[:, i] = torch.einsum("bhkv,bhk->bhv", s, qf[:, i])
    return out.type_as(v), s


MAMBA2_STEP_MODES = ("separate", "fused")


def mamba2_step_mode() -> str:
    """How a Mamba2 decode step runs its inputs (``PHASE_ENERGY_MAMBA2_STEP``).

    ``fused`` (the default): the convolution's step as one kernel and the time step, decay, input and skip
    term inside the update kernel (two kernels instead of about eight per layer); ``separate``: those as
    compiled elementwise kernels around the update. On card GPU-f019b024 (bench/h200-2026-12-02d/) the fused
    Mamba2-2.7B step took 4.95 ms at batch 32 x 8192 against 5.38-5.39 ms separate (before and after), at
    0.069 against 0.070 J/token; 10.51 against 10.80 ms at 128 x 2048.
    """
    return env_choice("PHASE_ENERGY_MAMBA2_STEP", MAMBA2_STEP_MODES, "fused")


class Mamba2Mixer(nn.Module):
    """Mamba2 (SSD) mixer: in_proj -> conv(x, B, C) -> selective scan -> gated group RMSNorm -> out_proj."""

    def __init__(self, cfg: ArchConfig):
        super().__init__()
        self.cfg = cfg
        di, gs = cfg.d_inner, cfg.ssm_groups * cfg.ssm_state
        self.conv_dim = di + 2 * gs
        self.in_proj = nn.Linear(cfg.hidden, 2 * di + 2 * gs + cfg.ssm_heads, bias=False)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, cfg.conv_kernel, groups=self.conv_dim, bias=True)
        self.dt_bias = nn.Parameter(torch.zeros(cfg.ssm_heads))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, cfg.ssm_heads + 1, dtype=torch.float)))
        self.D = nn.Parameter(torch.ones(cfg.ssm_heads))
        self.norm = nn.Parameter(torch.ones(di))
        self.out_proj = nn.Linear(di, cfg.hidden, bias=False)
        self.state: Tensor | None = None  # [B, H, N, P] (fla layout: K = state, V = head dim)
        self.conv_state: Tensor | None = None
        self.fused_step = mamba2_step_mode() == "fused"

    def setup_cache(self, batch: int, max_len: int, dtype: torch.dtype, device: torch.device) -> None:
        c = self.cfg
        sdtype = torch.float32 if c.state_dtype_bytes == 4 else dtype
        self.state = torch.zeros(batch, c.ssm_heads, c.ssm_state, c.ssm_head_dim, dtype=sdtype, device=device)
        self.conv_state = torch.zeros(batch, self.conv_dim, c.conv_kernel - 1, dtype=dtype, device=device)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], pos: Tensor | None, seq_slice: slice) -> Tensor:
        c = self.cfg
        b, t, _ = x.shape
        di, gs, nh = c.d_inner, c.ssm_groups * c.ssm_state, c.ssm_heads
        assert self.state is not None and self.conv_state is not None, "call setup_caches first"
        decode = pos is not None
        z, xbc, dt = self.in_proj(x).split([di, self.conv_dim, nh], dim=-1)
        if decode and self.fused_step:  # the convolution's step in one kernel, its state shifted in place
            xbc = conv_update_(xbc[:, 0], self.conv_state, self.conv1d.weight[:, 0], self.conv1d.bias)[:, None]
        else:
            xbc = _causal_conv(xbc.transpose(1, 2), self.conv1d.weight[:, 0], self.conv1d.bias, self.conv_state,
                               seq_slice, decode).transpose(1, 2)
        xs, bm, cm = xbc.split([di, gs, gs], dim=-1)
        xs = xs.reshape(b, t, nh, c.ssm_head_dim)
        bm = bm.reshape(b, t, c.ssm_groups, c.ssm_state)  # [B, T, G, N]
        cm = cm.reshape(b, t, c.ssm_groups, c.ssm_state)
        if decode and self.fused_step:  # the time step, decay, input and skip term inside the update kernel
            y = mamba2_step_(self.state, cm[:, 0], bm[:, 0], xs[:, 0], dt[:, 0], self.dt_bias, self.A_log,
                             self.D)[:, None]
        else:
            dt = F.softplus(dt.float() + self.dt_bias.float())  # [B, T, H]
            a = -self.A_log.float().exp()
            if decode:  # h <- exp(dt A) h + B (dt x)^T, y = C h: one step, the state updated in place
                y = recurrent_step_(self.state, cm[:, 0], bm[:, 0], (xs[:, 0].float() * dt[:, 0, :, None]),
                                    dt[:, 0] * a, None, 1.0, False)[:, None]
            else:
                rep = nh // c.ssm_groups
                y, final = ssd_scan(xs, dt, a, bm.repeat_interleave(rep, dim=2), cm.repeat_interleave(rep, dim=2))
                self.state[seq_slice] = final.to(self.state.dtype)
            y = y + xs.float() * self.D.float()[None, None, :, None]
        y = y.reshape(b, t, di) * F.silu(z.float())
        g = y.view(b, t, c.ssm_groups, di // c.ssm_groups)
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + c.rms_eps)
        y = self.norm * g.view(b, t, di).type_as(x)
        return self.out_proj(y)


def ssd_scan(x: Tensor, dt: Tensor, a: Tensor, bm: Tensor, cm: Tensor) -> tuple[Tensor, Tensor]:
    """Mamba2 scan from a zero state (prefill): h = exp(dt a) h + dt B x^T, y = C h; x [B,T,H,P], B/C [B,T,H,N]."""
    b, t, h, p = x.shape
    if t > 1 and _has_fla(x):
        from fla.ops.simple_gla import chunk_simple_gla

        v = (x.float() * dt[..., None]).to(x.dtype)
        o, final = chunk_simple_gla(cm.to(x.dtype), bm.to(x.dtype), v, g=(dt * a).float(), scale=1.0,
                                    initial_state=None, output_final_state=True)
        return o.float(), final
    s = torch.zeros(b, h, bm.shape[-1], p, device=x.device)
    out = torch.empty(b, t, h, p, device=x.device)
    xf, bf, cf = x.float(), bm.float(), cm.float()
    for i in range(t):  # [B, H, N, P]
        dx = (dt[:, i, :, None] * xf[:, i])[:, :, None, :]  # [B, H, 1, P]
        s = s * torch.exp(dt[:, i] * a)[..., None, None] + bf[:, i, :, :, None] * dx
        out[:, i] = torch.einsum("bhnp,bhn->bhp", s, cf[:, i])
    return out, s
