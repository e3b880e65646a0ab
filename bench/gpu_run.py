"""One GPU session: ceilings, engine checks and speed, a real trace, sampler overhead (default lever only).

Run on a GPU node from the repository root (docs/benchmarks.md has the exact command):

    PYTHONPATH=src python bench/gpu_run.py --out OUTDIR

It never changes a GPU setting: every measurement runs at the card's settings as found. Results are
written after each step, so a run cut short still leaves what it measured.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

T_START = time.monotonic()
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench.kernels

from bench.kernel_classes import kernel_class, kernel_table  # noqa: E402
from phase_energy.config import validate_config  # noqa: E402
from phase_energy.engines.native.runner import EngineWorkload  # noqa: E402
from phase_energy.measure.backend import measure_bandwidth_and_matmul  # noqa: E402
from phase_energy.measure.nvml import GPU, Sampler  # noqa: E402
from phase_energy.measure.protocol import Settings  # noqa: E402
from phase_energy.model.costmodel import CostModel  # noqa: E402
from phase_energy.model.presets import PRESETS, get_preset  # noqa: E402

log = logging.getLogger("gpu_run")
# in the order they run
STEPS = ("attn", "fla", "recurrent", "recurrent_speed", "gemv", "mla_attn", "chain", "profile", "vllm_profile", "trace",
         "overhead", "engine")


def save(out: Path, name: str, obj: object) -> None:
    (out / name).write_text(json.dumps(obj, indent=1, default=str))


def check_fla_against_torch(results: dict) -> None:
    """The CUDA path (fla kernels) against the plain-PyTorch path on GPU, fp32, tiny shapes."""
    import phase_energy.engines.native.model as m
    from phase_energy.engines.native.transformer import Transformer, init_random_

    rows = []
    for arch in ("tiny-gdn", "tiny-mamba2", "tiny-nemotron"):
        cfg = get_preset(arch)
        with torch.device("cuda"):
            model = Transformer(cfg).float()
        init_random_(model, 0)
        prompt = torch.randint(0, cfg.vocab, (2, 64), device="cuda")
        follow = torch.randint(0, cfg.vocab, (2, 8), device="cuda")
        outs = {}
        for use_fla in (True, False):
            orig = m._has_fla
            if not use_fla:
                m._has_fla = lambda x: False  # type: ignore[assignment]
            model.setup_caches(2, 80)
            logits = [model.prefill(prompt, all_logits=True)]
            for i in range(8):
                logits.append(model.decode_step(follow[:, i:i + 1], torch.tensor(64 + i, device="cuda")))
            outs[use_fla] = torch.cat([x.reshape(-1) for x in logits])
            m._has_fla = orig
        err = (outs[True] - outs[False]).abs().max().item()
        scale = outs[False].abs().max().item()
        rows.append({"arch": arch, "max_abs_diff": err, "max_abs": scale, "ok": err <= 2e-2 * max(scale, 1)})
    results["fla_vs_torch"] = rows


def check_attention_kernel(results: dict) -> None:
    """The Triton split-K decode attention against a plain masked attention, GQA and MLA shapes."""
    from phase_energy.engines.native.attention import decode_attention, decode_attention_reference

    rows = []
    for name, (b, h, g, dk, dv, s_max, length) in {
        "gqa-qwen3": (3, 8, 4, 128, 128, 3000, 2500), "gqa-b1": (1, 8, 4, 128, 128, 2300, 7),
        "mla-minicpm3": (2, 1, 40, 288, 256, 2100, 2049), "mla-transmla": (2, 1, 32, 576, 512, 1500, 1000),
        "gated-qwen3.5": (4, 4, 4, 256, 256, 2400, 2100),
        "mla-transmla-b128": (128, 1, 32, 576, 512, 2100, 2049),  # the split kernel's batch-128 tiling
    }.items():
        try:
            q = torch.randn(b, h, g, dk, device="cuda", dtype=torch.bfloat16)
            k = torch.randn(b, h, s_max, dk, device="cuda", dtype=torch.bfloat16)
            v = torch.randn(b, h, s_max, dv, device="cuda", dtype=torch.bfloat16)
            n = torch.tensor(length, device="cuda")
            out = decode_attention(q, k, v, n, dk**-0.5).float()
            ref = decode_attention_reference(q, k, v, n, dk**-0.5).float()
            err = (out - ref).abs().max().item()
            rows.append({"case": name, "max_abs_diff": err, "ok": err < 2e-2})
        except Exception as e:
            rows.append({"case": name, "error": f"{type(e).__name__}: {e}"[:300]})
    # the one-load path (V from the key tile) on MLA latents, bf16 on the GPU
    from phase_energy.engines.native.attention import SplitConfig, launch_split_kernel

    for name, (b, g, dk, dv) in {"mla-transmla-one-load": (32, 32, 576, 512),
                                  "mla-minicpm3-one-load": (8, 40, 288, 256)}.items():
        try:
            q = torch.randn(b, 1, g, dk, device="cuda", dtype=torch.bfloat16)
            cache = torch.randn(b, 1, 2100, dk, device="cuda", dtype=torch.bfloat16)
            n = torch.tensor(2049, device="cuda")
            cfg = SplitConfig(block_g=32, block_n=32, num_warps=8, one_load=True)
            o, lse = launch_split_kernel(q, cache, cache[..., :dv], n, dk**-0.5, 0, cfg)
            out = (o * torch.softmax(lse, -1)[..., None]).sum(3)
            err = (out - decode_attention_reference(q, cache, cache[..., :dv], n, dk**-0.5).float()).abs().max().item()
            rows.append({"case": name, "max_abs_diff": err, "ok": err < 2e-2})
        except Exception as e:
            rows.append({"case": name, "error": f"{type(e).__name__}: {e}"[:300]})
    results["attention_kernel"] = rows


def check_recurrent_kernel(results: dict) -> None:
    """The in-place Triton decode step of GDN and Mamba2 against the PyTorch step, GPU shapes, bf16/fp32 state."""
    from phase_energy.engines.native.recurrent import launch_step_kernel, recurrent_step_reference

    rows = []
    # batch 32 and 128 take the wide tiling (step_tiling); "strided" reads q and k as views of one wider row,
    # as the engine passes Mamba2's B and C from the convolution's output
    for name, (b, g, hv, kd, vd, delta, sdt, strided) in {
        "gdn-qwen3.5": (4, 16, 32, 128, 128, True, torch.float32, False),
        "gdn-qwen3.5-b32-strided": (32, 16, 32, 128, 128, True, torch.float32, True),
        "mamba2-2.7b": (3, 1, 80, 128, 64, False, torch.float32, False),
        "mamba2-2.7b-b128-strided": (128, 1, 80, 128, 64, False, torch.float32, True),
        "nemotron-h-4b": (2, 8, 112, 128, 64, False, torch.bfloat16, False),
        "nemotron-h-4b-b32-strided": (32, 8, 112, 128, 64, False, torch.bfloat16, True),
    }.items():
        try:
            st = torch.randn(b, hv, kd, vd, device="cuda").to(sdt)
            if strided:
                row = torch.randn(b, 3 * g * kd + 64, device="cuda", dtype=torch.bfloat16)
                q, k = (row[:, 64 + i * g * kd:64 + (i + 1) * g * kd].view(b, g, kd) for i in range(2))
            else:
                q, k = (torch.randn(b, g, kd, device="cuda", dtype=torch.bfloat16) for _ in range(2))
            v = torch.randn(b, hv, vd, device="cuda", dtype=torch.bfloat16)
            gg = -torch.rand(b, hv, device="cuda")
            beta = torch.rand(b, hv, device="cuda") if delta else None
            s1, s2 = st.clone(), st.clone()
            ref = recurrent_step_reference(s1, q, k, v, gg, beta, kd**-0.5, delta)
            out = launch_step_kernel(s2, q, k, v, gg, beta, kd**-0.5, delta)
            err = (out - ref).abs().max().item()
            serr = (s1.float() - s2.float()).abs().max().item()
            tol = 2e-2 if sdt == torch.bfloat16 else 1e-3
            rows.append({"case": name, "max_abs_diff": err, "state_max_abs_diff": serr,
                         "ok": err < tol * max(1.0, ref.abs().max().item()) and serr < tol * 4})
        except Exception as e:
            rows.append({"case": name, "error": f"{type(e).__name__}: {e}"[:300]})
    rows += _check_fused_mamba2()
    results["recurrent_kernel"] = rows


def _check_fused_mamba2() -> list[dict]:
    """The kernels behind PHASE_ENERGY_MAMBA2_STEP=fused and the split update against PyTorch, on the GPU.

    Mamba2-2.7B's and Nemotron-H's shapes at batch 32 and 128, bf16 state as the engine keeps it, inputs as
    strided views of one projection row and one convolution row; the update also with its rows split over
    programs (block_k 32).
    """
    from phase_energy.engines.native.recurrent import (
        conv_update_reference,
        launch_conv_update,
        launch_mamba2_step,
        mamba2_step_reference,
    )

    rows = []
    for name, (b, g, h, n, p) in {"mamba2-2.7b-b32": (32, 1, 80, 128, 64), "mamba2-2.7b-b128": (128, 1, 80, 128, 64),
                                  "nemotron-h-4b-b32": (32, 8, 112, 128, 64)}.items():
        for block_k in (n, 32):  # all rows in one program, then split
            case = f"fused-{name}" + (f"-split{block_k}" if block_k < n else "")
            try:
                conv = torch.randn(b, h * p + 2 * g * n + 64, device="cuda", dtype=torch.bfloat16)
                x = conv[:, : h * p].view(b, h, p)
                bm = conv[:, h * p: h * p + g * n].view(b, g, n)
                cm = conv[:, h * p + g * n: h * p + 2 * g * n].view(b, g, n)
                dt = (torch.randn(b, h + 8, device="cuda", dtype=torch.bfloat16) * 3)[:, :h]
                params = [torch.randn(h, device="cuda", dtype=torch.bfloat16) for _ in range(3)]
                st = torch.randn(b, h, n, p, device="cuda").to(torch.bfloat16)
                s1, s2 = st.float(), st.clone()
                ref = mamba2_step_reference(s1, cm, bm, x, dt, *params)
                out = launch_mamba2_step(s2, cm, bm, x, dt, *params, block_k=block_k)
                err = (out - ref).abs().max().item()
                serr = (s1 - s2.float()).abs().max().item()
                rows.append({"case": case, "max_abs_diff": err, "state_max_abs_diff": serr,  # bf16: 2 ulps
                             "ok": err < 2e-2 * max(1.0, ref.abs().max().item())
                             and serr < 1.6e-2 * max(1.0, s1.abs().max().item())})
            except Exception as e:
                rows.append({"case": case, "error": f"{type(e).__name__}: {e}"[:300]})
        case = f"conv-update-{name}"
        try:
            c = h * p + 2 * g * n
            row = torch.randn(b, 2 * h * p + 2 * g * n + h, device="cuda", dtype=torch.bfloat16)
            xin = row[:, h * p: h * p + c]  # the projection's x, B, C part
            st = torch.randn(b, c, 3, device="cuda").to(torch.bfloat16)
            w, bias = torch.randn(c, 4, device="cuda").to(torch.bfloat16), torch.randn(c, device="cuda")
            s1, s2 = st.float(), st.clone()
            ref = conv_update_reference(xin.float(), s1, w.float(), bias)
            out = launch_conv_update(xin, s2, w, bias.to(torch.bfloat16))
            err = (out.float() - ref).abs().max().item()
            rows.append({"case": case, "max_abs_diff": err, "state_max_abs_diff": (s1 - s2.float()).abs().max().item(),
                         "ok": err < 5e-2 * max(1.0, ref.abs().max().item()) and torch.equal(s2[..., 2], xin)})
        except Exception as e:
            rows.append({"case": case, "error": f"{type(e).__name__}: {e}"[:300]})
    return rows


def _event_us(call: Callable[[], object], n: int, warm: int = 5) -> float:
    """Microseconds per call of ``n`` back-to-back calls, by CUDA events, after ``warm`` calls."""
    for _ in range(warm):
        call()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(n):
        call()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / n


def _graph_us(call: Callable[[], object], n: int, warm: int = 5) -> float:
    """Microseconds per call of ``n`` calls captured in one CUDA graph and replayed: kernel time without the
    host's launch overhead (which, for a state update of tens of microseconds, is as long as the kernel)."""
    for _ in range(warm):
        call()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(n):
            call()
    g.replay()  # once untimed
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    g.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / n


def recurrent_speed(results: dict, out: Path) -> None:
    """The recurrent decode step's time per tiling at the presets' shapes, against the copy bandwidth.

    Each row: microseconds per step of one layer's state update (CUDA events over 200 back-to-back calls)
    and the rate at which it moves the state (read once, written once) and its inputs. The engine's tiling
    was ``step_tiling(batch)`` (64-wide from batch 32, 32-wide below; 32 everywhere before 2026-12-02; from
    2026-12-02d the rows split over programs where they may be), timed here with all rows in one program
    (``block_k`` = the key size); the others say whether the Mamba2 decode gap to vLLM lies in this kernel.
    With ``--recurrent-sweep split`` (a shorter sweep): all rows against the state's rows split over programs
    (``block_k``: smaller tiles, more programs, each adding its part of the output), Mamba2 and Nemotron-H at
    batch 32 and 128,
    every tiling timed as 200 calls in one CUDA graph (the engine's way: no launch overhead in the figure).
    """
    from phase_energy.engines.native.recurrent import launch_step_kernel, step_tiling

    rows = []
    cases = {
        "mamba2-2.7b": (1, 80, 128, 64, False, torch.bfloat16),
        "nemotron-h-4b": (8, 112, 128, 64, False, torch.bfloat16),
        "gdn-qwen3.5-4b": (16, 32, 128, 128, True, torch.float32),
    }
    if RECURRENT_SWEEP == "split":  # the engine's tiling against the state's rows split over programs
        cases = {n: c for n, c in cases.items() if not c[4]}
    for name, (g, hv, kd, vd, delta, sdt) in cases.items():
        for b in (32, 128) if RECURRENT_SWEEP == "split" else (1, 32, 128):
            st = torch.zeros(b, hv, kd, vd, device="cuda", dtype=sdt)
            q, k = (torch.randn(b, g, kd, device="cuda", dtype=torch.bfloat16) for _ in range(2))
            v = torch.randn(b, hv, vd, device="cuda", dtype=torch.bfloat16)
            gg = -torch.rand(b, hv, device="cuda")
            beta = torch.rand(b, hv, device="cuda") if delta else None
            moved = 2 * st.numel() * st.element_size() + sum(t.numel() * t.element_size() for t in (q, k, v))
            if RECURRENT_SWEEP == "split":  # (block_v, num_warps, block_k); kd: all rows in one program
                tilings = [(*step_tiling(b)[:2], kd)] + [(bv, w, bk) for bk in (16, 32, 64) for bv in (32, 64)
                                                         for w in (2, 4)]
            else:
                tilings = [(bv, w, kd) for bv in (16, 32, 64, 128) if bv <= vd for w in (2, 4, 8)]
            for block_v, warps, block_k in tilings:
                if block_v <= vd:
                    row = {"case": name, "batch": b, "block_v": block_v, "num_warps": warps, "block_k": block_k}
                    try:
                        timer = _graph_us if RECURRENT_SWEEP == "split" else _event_us  # split: in a graph
                        us = timer(functools.partial(launch_step_kernel, st, q, k, v, gg, beta, kd**-0.5,
                                                     delta, block_v, warps, block_k), 200)
                        row.update(us=us, gbps=moved / us / 1e3)
                    except Exception as e:
                        row["error"] = f"{type(e).__name__}: {e}"[:300]
                    rows.append(row)
            log.info("recurrent %s b%d: best %s", name, b, min(
                (r for r in rows if r["case"] == name and r["batch"] == b and "us" in r),
                key=lambda r: r["us"], default=None))
    results["recurrent_speed"] = rows
    save(out, "engine.json", results)


def gemv_speed(results: dict, out: Path) -> None:
    """The skinny-matmul kernel (engine/gemv.py) against torch.matmul on Qwen3-4B's decode matmuls, M rows.

    Every W is read from HBM (do_bench clears the L2 between runs); TB/s = W bytes / kernel time. The
    per-step line adds the layers' matmuls and the LM head as a decode step runs them.
    """
    import itertools

    from triton.testing import do_bench

    from bench.kernels.gemv import gemv

    c = get_preset("qwen3-4b")
    q_out = c.n_heads * c.head_dim
    shapes = {"qkv": (q_out + 2 * c.n_kv_heads * c.head_dim, c.hidden), "o": (c.hidden, q_out),
              "gate_up": (2 * c.intermediate, c.hidden), "down": (c.hidden, c.intermediate),
              "lm_head": (c.vocab, c.hidden)}
    configs = [dict(block_n=bn, block_k=bk, split_k=sk, num_warps=nw)
               for bn, bk, sk, nw in itertools.product((16, 32, 64), (256, 512), (1, 2, 4), (4, 8))]
    rows = []
    for m in (1, 4, 8, 16):
        for name, (n, k) in shapes.items():
            w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k**0.5
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            ref = (x.float() @ w.float().t())
            t_mm = do_bench(lambda: x @ w.t(), warmup=5, rep=40) * 1e-3  # noqa: B023
            best: dict = {"s": float("inf")}
            for cfg in configs:
                try:
                    err = (gemv(x, w, **cfg).float() - ref).abs().max().item()
                    t = do_bench(lambda: gemv(x, w, **cfg), warmup=5, rep=40) * 1e-3  # noqa: B023
                except Exception as e:  # a config the compiler rejects (shared memory)
                    log.info("gemv %s m=%d %s: %s", name, m, cfg, str(e)[:120])
                    continue
                if t < best["s"]:
                    best = {"s": t, "cfg": cfg, "max_abs_diff": err}
            nbytes = n * k * 2
            rows.append({"m": m, "matmul": name, "n": n, "k": k, "weight_mb": nbytes / 1e6,
                         "torch_us": t_mm * 1e6, "torch_tbps": nbytes / t_mm / 1e12,
                         "gemv_us": best["s"] * 1e6, "gemv_tbps": nbytes / best["s"] / 1e12,
                         "gemv_config": best.get("cfg"), "gemv_max_abs_diff": best.get("max_abs_diff"),
                         "ref_max_abs": ref.abs().max().item()})
            log.info("gemv %s", rows[-1])
            save(out, "engine.json", {**results, "gemv": rows})
    step = {}
    for m in (1, 4, 8, 16):
        r = {x["matmul"]: x for x in rows if x["m"] == m}

        def step_us(us) -> float:  # every layer's four matmuls, then the LM head
            return c.n_layers * sum(us(r[n]) for n in ("qkv", "o", "gate_up", "down")) + us(r["lm_head"])  # noqa: B023

        step[m] = {"torch_us": step_us(lambda x: x["torch_us"]), "gemv_us": step_us(lambda x: x["gemv_us"]),
                   "best_of_both_us": step_us(lambda x: min(x["torch_us"], x["gemv_us"]))}
    results["gemv"] = rows
    results["gemv_step"] = step


def chain_speed(results: dict, out: Path, rows: tuple[int, ...] = (1, 32)) -> None:
    """Qwen3-4B's decode matmuls in order, data-dependent, as one captured step: the overlap of matrices.

    Each of the 36 layers: qkv of RMSNorm(h), h += o(q part), gate/up of RMSNorm(h), h += down(SiLU(gate) *
    up); then the head of the final norm (no attention: the chain isolates the weight stream). ``torch``:
    Inductor-fused norms and gates around cuBLAS, as the engine runs them. ``fused``: one GEMV kernel per
    matrix with the norm or gate in its prologue and the residual in its epilogue (engine/gemv.py); ``pdl``
    adds programmatic dependent launch, ``pdl_prefetch`` reads each program's first W tile before waiting.
    TB/s = weight bytes / step time; every step reads all 8 GB from HBM.
    """
    import itertools

    import torch.nn.functional as F

    from bench.kernels.gemv import gemv

    c = get_preset("qwen3-4b")
    hid, q_out, kv_out, inter = c.hidden, c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim, c.intermediate
    gen = torch.Generator(device="cuda").manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, device="cuda", dtype=torch.bfloat16, generator=gen) / shape[-1] ** 0.5

    layers = [(rand(q_out + 2 * kv_out, hid), rand(hid, q_out), rand(2 * inter, hid), rand(hid, inter),
               1 + 0.1 * rand(1, hid)[0], 1 + 0.1 * rand(1, hid)[0]) for _ in range(c.n_layers)]
    head, norm_f = rand(c.vocab, hid), 1 + 0.1 * rand(1, hid)[0]
    nbytes = sum(t.numel() * 2 for lay in layers for t in lay[:4]) + head.numel() * 2
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    bw = results["ceilings"]["bandwidth_bps"]

    def rms(x, w):
        return w * (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6)).type_as(x)

    def torch_layer(h, wqkv, wo, wgu, wd, n1, n2):
        qkv = F.linear(rms(h, n1), wqkv)
        h = h + F.linear(qkv[:, :q_out], wo)
        gate, up = F.linear(rms(h, n2), wgu).chunk(2, dim=-1)
        return h + F.linear(F.silu(gate) * up, wd)

    layer_c = torch.compile(torch_layer, dynamic=False)

    def timed(fn, h0):
        """Capture fn (reads h0), replay: (us per step, logits)."""
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            fn(h0)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            logits = fn(h0)
        for _ in range(3):
            g.replay()
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        for _ in range(20):
            g.replay()
        e1.record()
        torch.cuda.synchronize()
        return e0.elapsed_time(e1) / 20 * 1e3, logits.float().clone()

    def rates(us):
        return {"us": us, "tbps": nbytes / us / 1e6, "fraction_of_copy": nbytes / us / 1e-6 / bw}

    def block_n(n, m, min_programs):
        choices = (64, 32, 16) if m >= 16 else (32, 16, 8, 4)
        return next((b for b in choices if -(-n // b) >= min_programs), choices[-1])

    chain = []
    for m in rows:
        h0 = torch.randn(m, hid, device="cuda", dtype=torch.bfloat16, generator=gen)

        def torch_step(h0):
            h = h0
            for lay in layers:
                h = layer_c(h, *lay)
            return F.linear(rms(h, norm_f), head)

        t_torch, ref = timed(torch_step, h0)
        scale = ref.abs().max().item()
        chain.append({"m": m, "variant": "torch", **rates(t_torch)})
        log.info("chain %s", chain[-1])
        h = torch.empty(m, hid, device="cuda", dtype=torch.bfloat16)
        qkv = torch.empty(m, q_out + 2 * kv_out, device="cuda", dtype=torch.bfloat16)
        gu = torch.empty(m, 2 * inter, device="cuda", dtype=torch.bfloat16)
        logits = torch.empty(m, c.vocab, device="cuda", dtype=torch.bfloat16)

        def fused_step(h0, cfg, pdl, prefetch):
            kw = dict(block_k=cfg["block_k"], num_warps=cfg["num_warps"], pdl=pdl, prefetch=prefetch)
            bn = {n: block_n(n, m, cfg["min_programs"]) for n in (hid, q_out + 2 * kv_out, 2 * inter, c.vocab)}  # noqa: B023
            h.copy_(h0)  # noqa: B023
            for wqkv, wo, wgu, wd, n1, n2 in layers:
                gemv(h, wqkv, prologue="rmsnorm", norm_weight=n1, out=qkv, block_n=bn[wqkv.shape[0]], **kw)  # noqa: B023
                gemv(qkv[:, :q_out], wo, residual=h, out=h, block_n=bn[hid], **kw)  # noqa: B023
                gemv(h, wgu, prologue="rmsnorm", norm_weight=n2, out=gu, block_n=bn[2 * inter], **kw)  # noqa: B023
                gemv(gu, wd, residual=h, out=h, prologue="silu_mul", block_n=bn[hid], **kw)  # noqa: B023
            return gemv(h, head, prologue="rmsnorm", norm_weight=norm_f, out=logits, block_n=bn[c.vocab], **kw)  # noqa: B023

        def run(variant, cfg):
            pdl, prefetch = variant != "fused", variant == "pdl_prefetch"
            try:
                us, got = timed(lambda x: fused_step(x, cfg, pdl, prefetch), h0)  # noqa: B023
            except Exception as e:
                log.info("chain m=%d %s %s: %s", m, variant, cfg, str(e)[:300])  # noqa: B023
                return None
            row = {"m": m, "variant": variant, "config": cfg, **rates(us), "speedup_vs_torch": t_torch / us,  # noqa: B023
                   "max_abs_diff_rel": (got - ref).abs().max().item() / scale}  # noqa: B023
            chain.append(row)
            log.info("chain %s", row)
            save(out, "engine.json", {**results, "chain": chain})
            return row

        sweep = ((256, 512), (4, 8), (2, 4)) if m < 16 else ((256,), (4, 8), (2,))
        cfgs = [dict(block_k=bk, num_warps=nw, min_programs=p * sms) for bk, nw, p in itertools.product(*sweep)]
        first = "pdl_prefetch"
        tried = [r for r in (run(first, cfg) for cfg in cfgs) if r is not None]
        if not tried:  # no PDL on this card or Triton: the fused chain alone
            first = "fused"
            tried = [r for r in (run(first, cfg) for cfg in cfgs) if r is not None]
        if tried:
            best = min(tried, key=lambda r: r["us"])["config"]
            for variant in ("fused", "pdl", "pdl_prefetch"):
                if variant != first:
                    run(variant, best)
    results["chain"] = chain
    results["chain_bytes"] = nbytes


def mla_attention_speed(results: dict, out: Path) -> None:
    """The decode-attention kernel on the MLA latent caches over tilings (engine/attention.SplitConfig).

    One shared KV head, so the cache is read ceil(heads / block_g) times; TB/s counts it once (the floor's
    view). V is a view of the same cache, as in the engine. Correctness against the masked reference.
    """
    if MLA_SWEEP == "splits":  # the engine's tiling over split counts instead
        mla_split_sweep(results, out)
        return
    import itertools

    from triton.testing import do_bench

    from phase_energy.engines.native.attention import (
        SplitConfig,
        decode_attention_reference,
        default_config,
        launch_split_kernel,
    )

    rows: list[dict] = []  # config as a dict (JSON)
    tilings = [SplitConfig(*x) for x in itertools.product((16, 32), (16, 32, 64), (64, 128), (4, 8), (1, 2, 3))]
    # the one-load path (V from the key tile: each latent byte read once), block_dk unused there
    tilings += [SplitConfig(g, n, 64, w, st, one_load=True)
                for g, n, w, st in itertools.product((16, 32), (16, 32, 64), (4, 8), (1, 2))]
    if MLA_SWEEP == "one_load":  # the default and the one-load tilings only (a shorter sweep)
        tilings = [x for x in tilings if x.one_load]
    for arch in MLA_ARCHS:
        c = get_preset(arch)
        g, r, rd = c.n_heads, c.kv_lora_rank, c.qk_rope_head_dim
        for batch in (32, 128, 1):
            s_max, length = 2048 + 257, 2048 + 128
            default = default_config(batch, 1, g, r + rd, r, s_max)
            configs = [default, *(x for x in tilings if x != default)]
            cache = torch.randn(batch, 1, s_max, r + rd, device="cuda", dtype=torch.bfloat16)
            q = torch.randn(batch, 1, g, r + rd, device="cuda", dtype=torch.bfloat16)
            n = torch.tensor(length, device="cuda")
            scale = (c.qk_nope_head_dim + rd) ** -0.5
            ref = decode_attention_reference(q, cache, cache[..., :r], n, scale).float()
            nbytes = batch * length * (r + rd) * 2
            best = None
            winners = [SplitConfig(**x["config"]) for x in rows if x.get("best") and x["arch"] == arch]
            for cfg in configs if batch != 1 else dict.fromkeys([default, *winners]):  # batch 1: 32's and 128's best
                row: dict = {"arch": arch, "batch": batch, "heads": g, "latent": r + rd, "config": vars(cfg),
                             "default": cfg == default}
                try:
                    o, lse = launch_split_kernel(q, cache, cache[..., :r], n, scale, 0, cfg)
                    row["max_abs_diff"] = ((o * torch.softmax(lse, -1)[..., None]).sum(3) - ref).abs().max().item()
                    t = do_bench(lambda: launch_split_kernel(q, cache, cache[..., :r], n, scale, 0, cfg),  # noqa: B023
                                 warmup=5, rep=30) * 1e-3
                    row.update(us=t * 1e6, cache_mb=nbytes / 1e6, tbps=nbytes / t / 1e12)
                    if row["max_abs_diff"] < 2e-2 and (best is None or t * 1e6 < best["us"]):
                        best = row
                except Exception as e:  # a tiling the compiler rejects (registers, shared memory)
                    row["error"] = f"{type(e).__name__}: {e}"[:200]
                rows.append(row)
            # the default is timed first at each batch; timed again last, so that a warm-up effect on the first
            # timing shows (2026-12-02, card GPU-9a0794a0: MiniCPM3's default took 92 us first at batch 32, its
            # variants 53-65 us)
            first = next((x for x in rows if x["default"] and x["arch"] == arch and x["batch"] == batch), {})
            if "us" in first:
                first["us_timed_last"] = do_bench(
                    lambda: launch_split_kernel(q, cache, cache[..., :r], n, scale, 0, default),  # noqa: B023
                    warmup=5, rep=30) * 1e3
            if best is not None:
                best["best"] = True
                log.info("mla attention %s b%d: default %s, best %s", arch, batch,
                         next((x for x in rows if x["default"] and x["arch"] == arch and x["batch"] == batch), {}),
                         best)
            save(out, "engine.json", {**results, "mla_attention": rows})
    results["mla_attention"] = rows


def mla_split_sweep(results: dict, out: Path) -> None:
    """How many splits over the keys the MLA decode attention should take: the engine's tiling, the kernel and
    the merge of its splits timed apart and together, over split counts, at the engine comparison's shapes.

    Each split writes an fp32 partial output per query head (``heads x latent`` values per sequence and
    split), which the merge reads again: at TransMLA's 32 x 8192 the planner's 15 splits write 31 MB per
    layer. Fewer splits move fewer partials but launch fewer programs. The merge is compiled as the engine
    compiles it (softmax of the log-sum-exps, the weighted sum), so it is one fused kernel here too: compiled
    afresh for each shape (torch's limit on recompiles of one function would otherwise leave the later shapes
    eager). A split count is asked for as the planner takes it (rounded to whole key blocks), each count once.
    """
    from phase_energy.engines.native.attention import (
        _plan,
        decode_attention_reference,
        default_config,
        launch_split_kernel,
    )

    dev = "cuda" if torch.cuda.is_available() else "cpu"  # the CPU: the tests, with Triton's interpreter
    dtype = torch.bfloat16 if dev == "cuda" else torch.float16  # the interpreter computes no bf16 dot
    if dev == "cuda":
        from triton.testing import do_bench
    else:
        def do_bench(fn, warmup: int, rep: int) -> float:  # ms, as triton's
            fn()
            t0 = time.perf_counter()
            fn()
            return (time.perf_counter() - t0) * 1e3

    def merge(o: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
        return (o * torch.softmax(lse, dim=-1)[..., None]).sum(dim=3).to(dtype)

    rows: list[dict] = []
    for arch in MLA_ARCHS:
        c = get_preset(arch)
        g, r, rd = c.n_heads, c.kv_lora_rank, c.qk_rope_head_dim
        scale = (c.qk_nope_head_dim + rd) ** -0.5
        for batch, context in MLA_SPLIT_SHAPES:
            s_max, length = context + 257, context + 128
            cfg = default_config(batch, 1, g, r + rd, r, s_max)
            planned = _plan(batch, 1, g, s_max, 0, cfg)[0]
            cache = torch.randn(batch, 1, s_max, r + rd, device=dev, dtype=dtype)
            q = torch.randn(batch, 1, g, r + rd, device=dev, dtype=dtype)
            n = torch.tensor(length, device=dev)
            ref = decode_attention_reference(q, cache, cache[..., :r], n, scale).float()
            nbytes = batch * length * (r + rd) * 2
            # each count of splits the kernel launches, once, with what to ask for it (0: the planner's own)
            counts = {_plan(batch, 1, g, s_max, k, cfg)[0]: k for k in MLA_SPLIT_COUNTS} | {planned: 0}
            for n_splits, splits in sorted(counts.items()):
                row: dict = {"arch": arch, "batch": batch, "context": context, "config": vars(cfg),
                             "splits_asked": splits or n_splits, "planned": splits == 0}
                if dev == "cuda":  # the engine's merge is compiled, afresh for this shape
                    torch._dynamo.reset()
                    merge_c = torch.compile(merge, dynamic=False)
                else:  # the CPU (the tests): eager, only its result is checked there
                    merge_c = merge
                try:
                    o, lse = launch_split_kernel(q, cache, cache[..., :r], n, scale, splits, cfg)
                    row["splits"] = o.shape[3]
                    row["partials_mb"] = (o.numel() + lse.numel()) * 4 / 1e6
                    row["max_abs_diff"] = (merge_c(o, lse).float() - ref).abs().max().item()
                    kernel = do_bench(lambda: launch_split_kernel(q, cache, cache[..., :r], n, scale,  # noqa: B023
                                                                  splits, cfg), warmup=5, rep=30)  # noqa: B023
                    merged = do_bench(lambda: merge_c(o, lse), warmup=5, rep=30)  # noqa: B023
                    both = do_bench(lambda: merge_c(*launch_split_kernel(  # noqa: B023
                        q, cache, cache[..., :r], n, scale, splits, cfg)), warmup=5, rep=30)  # noqa: B023
                    row.update(kernel_us=kernel * 1e3, merge_us=merged * 1e3, both_us=both * 1e3,
                               cache_tbps=nbytes / (kernel * 1e-3) / 1e12)
                except Exception as e:  # a split count the kernel or the compiler rejects
                    row["error"] = f"{type(e).__name__}: {e}"[:200]
                rows.append(row)
                log.info("mla splits %s b%d x %d: %s", arch, batch, context,
                         {k: row.get(k) for k in ("splits", "kernel_us", "merge_us", "both_us", "error")})
            save(out, "engine.json", {**results, "mla_splits": rows})
    results["mla_splits"] = rows


MLA_ARCHS: tuple[str, ...] = ("minicpm3-4b", "qwen3-4b-transmla")  # --mla-archs
MLA_SPLIT_SHAPES = ((32, 8192), (32, 2048), (128, 2048))  # --mla-sweep splits: (batch, context)
MLA_SPLIT_COUNTS = (2, 4, 8, 16, 32)  # and the planner's own
MLA_SWEEP = "all"  # --mla-sweep
RECURRENT_SWEEP = "all"  # --recurrent-sweep


def profiled_kernels(prof, steps: int) -> tuple[list[dict], dict]:
    """The kernels a torch.profiler run recorded, per step and per class (bench/kernel_classes.py)."""
    return kernel_table([(e.key, e.count, _device_us(e)) for e in prof.key_averages()], steps)


def _device_us(event) -> float:
    """Device time of a profiler event (the attribute was renamed across torch versions)."""
    return getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)


def profile_decode(points: list[tuple[str, int]], context: int, results: dict, out: Path) -> None:
    """Kernel time per decode step by kernel (torch.profiler over graph replays) against the step time."""
    from torch.profiler import ProfilerActivity, profile

    rows = results.setdefault("profile", [])
    for arch, batch in points:
        row: dict = {"arch": arch, "batch": batch, "context": context}
        try:
            w = EngineWorkload(arch, batch, context, max_output=64, seed=0)
            _, t_step = w.warmup(1)
            steps = 32
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                w.decode(context, steps)
                w.synchronize()
            if sum(_device_us(e) for e in prof.key_averages()) < 0.1 * t_step * 1e6 * steps:
                row["graph_kernels_not_traced"] = True  # profile the same compiled step launched without the graph
                graph, w.graph = w.graph, None
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    w.decode(context, steps)
                    w.synchronize()
                w.graph = graph
            kernels, by_class = profiled_kernels(prof, steps)
            busy = sum(k["us_per_step"] for k in kernels)
            row.update(step_us=t_step * 1e6, kernel_us_per_step=busy, kernels_per_step=sum(
                k["calls_per_step"] for k in kernels), by_class=by_class, top=kernels[:25])
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {e}"
            log.error("profile %s b%d: %s\n%s", arch, batch, e, traceback.format_exc())
        torch.cuda.empty_cache()
        rows.append(row)
        log.info("profile %s b%d step %.0f us, kernels %.0f us, %s", arch, batch, row.get("step_us", 0),
                 row.get("kernel_us_per_step", 0), {k: round(v["us_per_step"]) for k, v in
                                                    row.get("by_class", {}).items()})
        save(out, "engine.json", results)


VLLM_PROFILE_CONFIG = "config/h200-engines.yaml"  # the engine comparison's vLLM settings


def profile_vllm_decode(points: list[tuple[str, int]], context: int, results: dict, out: Path,
                        contexts: dict[int, int] | None = None) -> None:
    """vLLM's decode step by kernel, as ``profile`` does for the native engine: one preset's engine (started as
    the engine comparison starts it, all the points' batches captured, sized for the longest context), per
    point a decode trial's requests filled, warm steps, ``steps`` timed steps, then ``steps`` steps under
    torch.profiler (vLLM runs in this process, VLLM_ENABLE_V1_MULTIPROCESSING=0). The kernel sum against the
    step shows the GPU's idle time between steps (the host scheduling the next). ``contexts`` gives a point
    (by its index in ``points``) a context of its own instead of ``context`` (``--points arch:batch:context``):
    one engine start, which takes minutes, serves points at different contexts."""
    from torch.profiler import ProfilerActivity, profile

    from phase_energy.config import load_config
    from phase_energy.grid import GridPoint
    from phase_energy.measure.job import job_settings, vllm_engine, vllm_workload

    archs = sorted({arch for arch, _ in points})
    if len(archs) != 1:  # a started vLLM engine does not give its memory back to a second one in one process
        raise ValueError(f"vllm_profile: one preset per run, {archs} given (--points arch:batch,arch:batch)")
    cfg = load_config(VLLM_PROFILE_CONFIG)
    gps = [GridPoint(archs[0], b, (contexts or {}).get(i, context), "default", engine="vllm")
           for i, (_, b) in enumerate(points)]
    engine = vllm_engine(cfg, gps)
    rows = results.setdefault("vllm_profile", [])
    for p in gps:
        row: dict = {"arch": p.arch, "batch": p.batch, "context": p.context, "engine": engine.info()}
        # the CPU where no GPU is (the tests): the flow runs, no kernel is found
        activities = [ProfilerActivity.CUDA if torch.cuda.is_available() else ProfilerActivity.CPU]
        try:
            w = vllm_workload(cfg, engine, p, job_settings(cfg, p))
            try:
                w.fill_cache(p.batch)
                pos = w.next_position()
                steps = max(4, min(32, (w.max_position - pos - 4) // 2))
                w.decode(pos, 4)  # the decode graph's first replays
                pos += 4
                w.synchronize()
                t0 = time.perf_counter()
                w.decode(pos, steps)
                w.synchronize()
                t_step = (time.perf_counter() - t0) / steps
                with profile(activities=activities) as prof:
                    w.decode(pos + steps, steps)
                    w.synchronize()
            finally:  # the next point's requests start on an engine with none left open
                w.end_decode()
            # the CPU's events (no GPU) are no kernels
            kernels, by_class = profiled_kernels(prof, steps) if torch.cuda.is_available() else ([], {})
            # copies overlap kernels: the GPU's busy time (one stream) is the kernels' without them
            busy = sum(k["us_per_step"] for k in kernels if kernel_class(k["name"]) != "copy")
            if busy < 0.1 * t_step * 1e6:  # CUDA graph replays not traced: the kernels are not all there
                row["graph_kernels_not_traced"] = True
            row.update(step_us=t_step * 1e6, kernel_us_per_step=busy, gpu_idle_us_per_step=t_step * 1e6 - busy,
                       # the point's decode steps: 4 warm, the timed and the profiled (steps each)
                       profiled_steps=steps, irregular_steps=w.irregular_steps(), decoded_tokens=w.decoded_tokens(),
                       kernels_per_step=sum(k["calls_per_step"] for k in kernels), by_class=by_class,
                       top=kernels[:25])
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {e}"
            log.error("vllm profile %s b%d x %d: %s\n%s", p.arch, p.batch, p.context, e, traceback.format_exc())
        rows.append(row)
        log.info("vllm profile %s b%d x %d step %.0f us, kernels %.0f us, %s", p.arch, p.batch, p.context,
                 row.get("step_us", 0), row.get("kernel_us_per_step", 0),
                 {k: round(v["us_per_step"]) for k, v in row.get("by_class", {}).items()})
        save(out, "engine.json", results)


def engine_speed(gpu: GPU, ceilings: dict, points: list[tuple[str, int]], context: int,
                 results: dict, out: Path) -> None:
    """Decode step time vs the bandwidth floor, power from the counter, prefill TFLOP/s."""
    rows = results.setdefault("engine", [])
    for arch, batch in points:
        row: dict = {"arch": arch, "paradigm": get_preset(arch).paradigm, "batch": batch, "context": context}
        try:
            t0 = time.monotonic()
            w = EngineWorkload(arch, batch, context, max_output=256, seed=0)
            t_prefill, t_step = w.warmup(1)
            row["setup_s"] = time.monotonic() - t0
            # greedy tokens after the warm-up's prefill and 16 decode steps (fixed seed): two engine variants
            # (e.g. --inductor settings) that compute the same step give the same tokens
            row["tokens_after_warmup"] = w.tokens[:8, 0].tolist()
            cost = CostModel(get_preset(arch))
            # decode: enough steps for >= 2 s, the same 256 positions rewound
            steps = 256
            reps = max(1, int(2.0 / max(t_step * steps, 1e-4)))
            w.synchronize()
            e0, t1 = gpu.energy_mj(), time.perf_counter()
            for _ in range(reps):
                w.decode(context, steps)
            w.synchronize()
            dt, de = time.perf_counter() - t1, (gpu.energy_mj() - e0) / 1000.0
            n = reps * steps
            step_s = dt / n
            mid = context + steps // 2
            floor_s = cost.decode_bytes(batch, mid) / ceilings["bandwidth_bps"]
            row.update(step_ms=step_s * 1e3, floor_ms=floor_s * 1e3, fraction_of_floor=floor_s / step_s,
                       tokens_per_s=batch / step_s, power_w=de / dt, j_per_token=de / (n * batch),
                       decode_window_s=dt)
            # prefill: repeat for >= 1 s
            reps = max(1, int(1.0 / max(t_prefill, 1e-4)))
            w.synchronize()
            e0, t1 = gpu.energy_mj(), time.perf_counter()
            for _ in range(reps):
                w.prefill()
            w.synchronize()
            dt, de = time.perf_counter() - t1, (gpu.energy_mj() - e0) / 1000.0
            flops = cost.prefill_flops(batch, context) * reps
            row.update(compiled=w.compiled, compile_error=w.compile_error, prefill_s=dt / reps,
                       prefill_tflops=flops / dt / 1e12,
                       prefill_fraction_of_matmul=flops / dt / ceilings["matmul_flops"],
                       prefill_power_w=de / dt, graph=w.graph is not None)
        except Exception as e:  # record and go on: one failing point must not lose the others
            row["error"] = f"{type(e).__name__}: {e}"
            log.error("%s b%d: %s\n%s", arch, batch, e, traceback.format_exc())
        torch.cuda.empty_cache()
        rows.append(row)
        log.info("engine %s", row)
        save(out, "engine.json", results)


def real_trace(out: Path, results: dict) -> None:
    """A whole measurement job at the default lever through the real telemetry; counter vs trapezoid."""
    from phase_energy.measure.backend import nvml_backend
    from phase_energy.measure.job import measure_with_lever
    from phase_energy.measure.trace import write_trace

    cfg = validate_config({"output_lengths": [512], "backend": "nvml",
                           "measurement": {"min_counter_ticks": 10, "prefill_trials": 3, "decode_trials": 2,
                                           "decode_windows": 2, "idle_s": 2.0, "pause_s": 0.5}})
    s = Settings.from_config(cfg["measurement"], max_output=512)
    gpu = GPU(0)
    t0 = time.monotonic()
    w = EngineWorkload("qwen3-4b", 32, 2048, 512, seed=0)
    samples, windows, applied, t_first = measure_with_lever(nvml_backend(gpu, torch.cuda.synchronize), "default",
                                                            False, w, s)
    meta = {"format_version": 1, "arch": "qwen3-4b", "paradigm": "gqa", "batch": 32, "context": 2048,
            "max_output": 512, "rep": 0, "lever_requested": "default",
            "lever_enforced": {"power_limit_w": applied.power_limit_w, "locked_sm_clock_mhz": None},
            "backend": "nvml", "engine": "native", "gpu": gpu.describe(), "versions": {"torch": torch.__version__},
            "git_commit": None, "config_hash": "bench", "started_at": str(t0), "finished_at": str(time.monotonic()),
            "seed": 0, "time_to_first_window_s": time.monotonic() - T_START if t_first != t_first else t_first,
            "engine_info": w.info()}
    write_trace(out / "trace", samples, windows, meta, {"status": "ok"})
    long = windows[windows["duration_s"] >= 1.0]
    mism = ((long["energy_trapz_j"] - long["energy_j"]) / long["energy_j"]).abs()
    results["trace"] = {
        "windows": len(windows), "windows_ge_1s": len(long), "max_counter_trapz_mismatch": float(mism.max()),
        "median_counter_trapz_mismatch": float(mism.median()), "samples": len(samples),
        "sampler_gaps": int(samples["gap"].sum()), "flags": sorted(set(",".join(windows["flags"]).split(",")) - {""}),
        "process_start_to_first_window_s": t_first,
        "decode_power_w": float(windows[windows.phase == "decode"]["power_mean_w"].median()),
        "prefill_power_w": float(windows[windows.phase == "prefill"]["power_mean_w"].median()),
    }


def sampler_overhead(out: Path, results: dict) -> None:
    """A/B in one run: decode throughput with the 10 ms sampler running and without, alternated."""
    gpu = GPU(0)
    w = EngineWorkload("qwen3-4b", 32, 2048, 256, seed=0)
    w.warmup(1)
    rates = {"on": [], "off": []}
    for i in range(8):
        mode = "on" if i % 2 == 0 else "off"
        sampler = Sampler(gpu, 0.01).start() if mode == "on" else None
        w.synchronize()
        t0 = time.perf_counter()
        for _ in range(2):
            w.decode(2048, 128)
        w.synchronize()
        rates[mode].append(2 * 128 * 32 / (time.perf_counter() - t0))
        if sampler:
            sampler.stop()
    on, off = sum(rates["on"]) / 4, sum(rates["off"]) / 4
    results["sampler_overhead"] = {"tokens_per_s_on": on, "tokens_per_s_off": off, "overhead": 1 - on / off,
                                   "runs": rates}


def parse_points(text: str) -> tuple[list[tuple[str, int]], dict[int, int]]:
    """``--points``: arch:batch or arch:batch:context, comma-separated -> the (arch, batch) points and, by
    index, the contexts given with them."""
    points: list[tuple[str, int]] = []
    contexts: dict[int, int] = {}
    for i, item in enumerate(text.split(",")):
        parts = item.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not all(x.isdecimal() and int(x) > 0 for x in parts[1:]):
            raise ValueError(f"--points: {item!r} is not arch:batch or arch:batch:context with positive whole "
                             "numbers (e.g. qwen3-4b:32 or qwen3-4b:32:8192)")
        points.append((parts[0], int(parts[1])))
        if len(parts) == 3:
            contexts[i] = int(parts[2])
    return points, contexts


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--archs", default=",".join(PRESETS))
    p.add_argument("--batches", default="1,32,128")
    p.add_argument("--points", default="", help="arch:batch,... (instead of archs x batches); vllm_profile also "
                   "takes arch:batch:context, a point's own context instead of --context")
    p.add_argument("--context", type=int, default=2048)
    p.add_argument("--steps", default="attn,fla,recurrent,engine,trace,overhead")
    p.add_argument("--mla-archs", default="minicpm3-4b,qwen3-4b-transmla", help="the mla_attn step's presets")
    p.add_argument("--mla-sweep", choices=("all", "one_load", "splits"), default="all",
                   help="the mla_attn step's tilings: all, or the default and the one-load tilings; or, with "
                        "splits, the engine's tiling over split counts, its kernel and merge timed")
    p.add_argument("--recurrent-sweep", choices=("all", "split"), default="all",
                   help="the recurrent step's tilings: all value widths, or the engine's tiling against the "
                        "state's rows split over programs (Mamba2 and Nemotron-H at batch 32 and 128)")
    p.add_argument("--inductor", default="", help="torch._inductor.config settings, key=value,... (e.g. "
                   "coordinate_descent_tuning=1)")
    a = p.parse_args()
    global MLA_ARCHS, MLA_SWEEP, RECURRENT_SWEEP
    MLA_ARCHS, MLA_SWEEP, RECURRENT_SWEEP = tuple(a.mla_archs.split(",")), a.mla_sweep, a.recurrent_sweep
    steps = a.steps.split(",")
    if set(steps) - set(STEPS):
        p.error(f"unknown step(s) {', '.join(sorted(set(steps) - set(STEPS)))}; accepted: {', '.join(STEPS)}")
    contexts: dict[int, int] = {}  # a point's own context (vllm_profile)
    if a.points:
        try:
            points, contexts = parse_points(a.points)
        except ValueError as e:
            p.error(str(e))
        if contexts and steps != ["vllm_profile"]:
            p.error(f"--points {a.points}: a point's own context (arch:batch:context) is read by the "
                    f"vllm_profile step only, not by {', '.join(s for s in steps if s != 'vllm_profile')}; give "
                    "those steps --context")
    else:
        points = [(arch, int(b)) for arch in a.archs.split(",") for b in a.batches.split(",")]
    import torch._inductor.config as inductor_config

    for kv in filter(None, a.inductor.split(",")):
        key, value = kv.split("=")
        obj = inductor_config
        *parents, leaf = key.split(".")
        for part in parents:
            obj = getattr(obj, part)
        setattr(obj, leaf, type(getattr(obj, leaf))(int(value)) if value.isdigit() else value)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(out / "log.txt")])
    gpu = GPU(0)
    results: dict = {"gpu": gpu.describe(), "torch": torch.__version__, "command": " ".join(sys.argv),
                     "inductor": a.inductor}
    results["ceilings"] = measure_bandwidth_and_matmul()
    log.info("ceilings %s", results["ceilings"])
    save(out, "engine.json", results)
    table = (("attn", lambda: check_attention_kernel(results)),
              ("fla", lambda: check_fla_against_torch(results)),
              ("recurrent", lambda: check_recurrent_kernel(results)),
              ("recurrent_speed", lambda: recurrent_speed(results, out)),
              ("gemv", lambda: gemv_speed(results, out)),
              ("mla_attn", lambda: mla_attention_speed(results, out)),
              ("chain", lambda: chain_speed(results, out)),
              ("profile", lambda: profile_decode(points, a.context, results, out)),
              ("vllm_profile", lambda: profile_vllm_decode(points, a.context, results, out, contexts)),
              ("trace", lambda: real_trace(out, results)),
              ("overhead", lambda: sampler_overhead(out, results)),
              ("engine", lambda: engine_speed(gpu, results["ceilings"], points, a.context, results, out)))
    assert tuple(name for name, _ in table) == STEPS
    for step, fn in table:
        if step not in steps:
            continue
        t0 = time.monotonic()
        try:
            fn()
        except Exception as e:
            results[f"{step}_error"] = f"{type(e).__name__}: {e}"
            log.error("%s failed: %s\n%s", step, e, traceback.format_exc())
        results[f"{step}_s"] = time.monotonic() - t0
        save(out, "engine.json", results)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
