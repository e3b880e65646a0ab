"""Kernels of a profiled decode step by class, for both engines (``bench/gpu_run.py``'s ``profile`` and
``vllm_profile`` steps): a kernel's class is that of the first pattern its name holds, in lower case.

The native engine's decode attention is ``_split_kernel`` and its state update ``_step_kernel``; vLLM's are
FlashAttention (its MLA backend too) or Triton attention kernels (``kernel_unified_attention``,
``_fwd_kernel_stage1``), ``_selective_scan_update_kernel`` (Mamba) and ``_causal_conv1d_update_kernel`` (the
short convolution). The order matters: Inductor's fused kernels first (their names list the ops they fuse,
``..._decode_attention_splits...`` among them), copies, vLLM's cache writes, the state updates, convolutions
and norms before attention (``fused_recurrent_gated_delta_rule_fwd_kernel``, ``layer_norm_fwd_kernel`` are
not attention), attention before gemm (FlashAttention 3's kernels are CUTLASS kernels).
"""

from __future__ import annotations

KERNEL_CLASSES = (("fused (inductor)", ("triton_poi_", "triton_per_", "triton_red_", "triton_tem_")),
                  ("copy", ("memcpy", "memset")),
                  ("cache write", ("concat_and_cache", "reshape_and_cache")),
                  ("recurrent", ("_step_kernel", "selective_scan_update", "delta_rule", "fused_recurrent")),
                  ("convolution", ("conv_update", "causal_conv1d")),
                  ("norm", ("layer_norm", "rms_norm", "l2norm")),
                  ("attention", ("_split_kernel", "flash", "mla", "attn", "attention", "_fwd_kernel_stage",
                                 "_fwd_grouped_kernel", "reduce_segments")),
                  ("gemm", ("gemm", "gemv", "cutlass", "nvjet", "sm90_", "cublas", "splitk")))


def kernel_class(name: str) -> str:
    """The class of a kernel by its name (KERNEL_CLASSES), ``other`` when none matches."""
    low = name.lower()
    return next((c for c, keys in KERNEL_CLASSES if any(x in low for x in keys)), "other")


def kernel_table(events: list[tuple[str, int, float]], steps: int) -> tuple[list[dict], dict]:
    """Per-step kernels, longest first, and their sums per class, from (name, calls, device us) over ``steps``."""
    kernels = sorted(({"name": name[:160], "calls_per_step": calls / steps, "us_per_step": us / steps}
                      for name, calls, us in events if us > 0), key=lambda r: -r["us_per_step"])
    by_class: dict = {}
    for k in kernels:
        agg = by_class.setdefault(kernel_class(k["name"]), {"us_per_step": 0.0, "calls_per_step": 0.0})
        agg["us_per_step"] += k["us_per_step"]
        agg["calls_per_step"] += k["calls_per_step"]
    return kernels, by_class
